//! `serveConfigV2`: Ray Serve's multi-application config, typed where we act on it and passed
//! through untouched everywhere else.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FieldError;

/// A parsed `serveConfigV2` document.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ServeConfig {
    /// The applications, in the order written.
    #[serde(default)]
    pub applications: Vec<ServeApplication>,
    /// Every other top-level key (`proxy_location`, `http_options`, ...), kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One Serve application.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ServeApplication {
    /// Unique name; Ray's default is `default`.
    #[serde(default = "default_app_name")]
    pub name: String,
    /// `module.attribute` of the bound application.
    #[serde(default)]
    pub import_path: String,
    /// HTTP route prefix; Ray's default is `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_prefix: Option<String>,
    /// Runtime environment (`working_dir`, `pip`, `env_vars`, ...), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_env: Option<Map<String, Value>>,
    /// Per-deployment overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<ServeDeployment>,
    /// Every other key (`args`, `host`, `port`, ...), kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Overrides for one deployment of an application.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ServeDeployment {
    /// Deployment name, as the application defines it.
    #[serde(default)]
    pub name: String,
    /// Every other key (`num_replicas`, `user_config`, `ray_actor_options`, ...), kept as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn default_app_name() -> String {
    "default".to_string()
}

impl ServeApplication {
    /// The route prefix Ray will use (`/` when none is given); `None` when the app has no route.
    pub fn effective_route_prefix(&self) -> Option<&str> {
        match &self.route_prefix {
            Some(prefix) => Some(prefix.as_str()),
            None if self.other.get("route_prefix").is_some() => None,
            None => Some("/"),
        }
    }

    /// The `working_dir` of its runtime env, when it is a string.
    pub fn working_dir(&self) -> Option<&str> {
        self.runtime_env.as_ref()?.get("working_dir")?.as_str()
    }
}

impl ServeConfig {
    /// Parses the YAML text of `serveConfigV2`; `field` names where it came from in errors.
    pub fn parse(text: &str, field: &str) -> Result<ServeConfig, FieldError> {
        // KubeRay reads serveConfigV2 with sigs.k8s.io/yaml (YAML 1.1 scalars) before sending
        // its JSON to Ray: `yes` is true and `0777` is 511 there too.
        let value: Value = crate::yaml::document(text).map_err(|err| FieldError {
            field: field.to_string(),
            message: format!("is not valid YAML: {}", one_line(&err.to_string())),
            fix: "serveConfigV2 is a YAML document in a string: write it as a block scalar (`serveConfigV2: |`) and check its indentation".into(),
        })?;
        let value = match value {
            Value::Null => Value::Object(Map::new()),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(FieldError {
                    field: field.to_string(),
                    message: format!(
                        "must be a mapping with `applications`, found {}",
                        kind_of(&other)
                    ),
                    fix: "start it with `applications:` followed by a list of applications".into(),
                });
            }
        };
        let config: ServeConfig = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            FieldError {
                field: if path == "." { field.to_string() } else { format!("{field}: {path}") },
                message: err.into_inner().to_string(),
                fix: "see Ray Serve's config file format (applications: [{name, import_path, route_prefix, runtime_env, deployments}])".into(),
            }
        })?;
        config.validate(field)?;
        Ok(config)
    }

    /// Checks what Ray would refuse later, so the user hears it at apply time.
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let mut names = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        for (index, app) in self.applications.iter().enumerate() {
            let at = format!("{field}: applications[{index}]");
            if app.name.is_empty() {
                return Err(FieldError::new(
                    &format!("{at}.name"),
                    "is empty",
                    "give every application a unique name",
                ));
            }
            if !names.insert(app.name.as_str()) {
                return Err(FieldError::new(
                    &format!("{at}.name"),
                    &format!("application name `{}` is used twice", app.name),
                    "give every application a unique name",
                ));
            }
            if app.import_path.trim().is_empty() {
                return Err(FieldError::new(
                    &format!("{at}.import_path"),
                    &format!("application `{}` has no import_path", app.name),
                    "set import_path to `module.attribute` of the bound application, e.g. `fruit.deployment_graph`",
                ));
            }
            if !app.import_path.contains(['.', ':']) {
                return Err(FieldError::new(
                    &format!("{at}.import_path"),
                    &format!(
                        "`{}` is not of the form `module.attribute`",
                        app.import_path
                    ),
                    "name the module and the application variable, e.g. `fruit.deployment_graph`",
                ));
            }
            if let Some(prefix) = &app.route_prefix
                && (!prefix.starts_with('/') || (prefix.len() > 1 && prefix.ends_with('/')))
            {
                return Err(FieldError::new(
                    &format!("{at}.route_prefix"),
                    &format!("`{prefix}` must start with `/` and must not end with `/`"),
                    "write it like `/fruit`",
                ));
            }
            if let Some(prefix) = app.effective_route_prefix()
                && !prefixes.insert(prefix)
            {
                return Err(FieldError::new(
                    &format!("{at}.route_prefix"),
                    &format!(
                        "route prefix `{prefix}` of application `{}` is used by another application",
                        app.name
                    ),
                    "give every application its own route_prefix",
                ));
            }
            let mut deployment_names = BTreeSet::new();
            for (d_index, deployment) in app.deployments.iter().enumerate() {
                let d_at = format!("{at}.deployments[{d_index}].name");
                if deployment.name.is_empty() {
                    return Err(FieldError::new(
                        &d_at,
                        "is empty",
                        "name the deployment as the application defines it",
                    ));
                }
                if !deployment_names.insert(deployment.name.as_str()) {
                    return Err(FieldError::new(
                        &d_at,
                        &format!(
                            "deployment `{}` is listed twice in application `{}`",
                            deployment.name, app.name
                        ),
                        "list each deployment once",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The document as the JSON body of Ray's `PUT /api/serve/applications/`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Route prefixes of every application that has one.
    pub fn route_prefixes(&self) -> Vec<String> {
        self.applications
            .iter()
            .filter_map(|app| app.effective_route_prefix().map(str::to_string))
            .collect()
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Folds a multi-line message (parser errors carry a source snippet) into its first line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
applications:
  - name: fruit_app
    import_path: fruit.deployment_graph
    route_prefix: /fruit
    runtime_env:
      working_dir: "https://example.invalid/test_dag.zip"
    deployments:
      - name: MangoStand
        num_replicas: 1
        user_config:
          price: 3
        ray_actor_options:
          num_cpus: 0.1
  - name: math_app
    import_path: conditional_dag.serve_dag
    route_prefix: /calc
proxy_location: HeadOnly
http_options:
  port: 9000
"#;

    #[test]
    fn parses_and_keeps_unknown_keys() {
        let config = ServeConfig::parse(SAMPLE, "spec.serveConfigV2").expect("valid");
        assert_eq!(config.applications.len(), 2);
        assert_eq!(config.applications[0].deployments[0].name, "MangoStand");
        let json = config.to_json();
        assert_eq!(
            json["applications"][0]["deployments"][0]["user_config"]["price"],
            3
        );
        assert_eq!(
            json["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"],
            0.1
        );
        assert_eq!(json["proxy_location"], "HeadOnly");
        assert_eq!(json["http_options"]["port"], 9000);
        assert_eq!(json["applications"][1]["route_prefix"], "/calc");
        assert_eq!(config.route_prefixes(), vec!["/fruit", "/calc"]);
    }

    #[test]
    fn refuses_invalid_yaml() {
        let err =
            ServeConfig::parse("applications: [\n  - name: x\n", "spec.serveConfigV2").unwrap_err();
        assert_eq!(err.field, "spec.serveConfigV2");
        assert!(err.message.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn refuses_a_list_at_top_level() {
        let err = ServeConfig::parse("- a\n- b\n", "f").unwrap_err();
        assert!(err.message.contains("found a list"), "{err}");
    }

    #[test]
    fn refuses_duplicate_names_and_prefixes() {
        let twice = "applications:\n- {name: a, import_path: m.a, route_prefix: /a}\n- {name: a, import_path: m.b, route_prefix: /b}\n";
        let err = ServeConfig::parse(twice, "f").unwrap_err();
        assert_eq!(err.field, "f: applications[1].name");
        let clash = "applications:\n- {name: a, import_path: m.a, route_prefix: /x}\n- {name: b, import_path: m.b, route_prefix: /x}\n";
        let err = ServeConfig::parse(clash, "f").unwrap_err();
        assert_eq!(err.field, "f: applications[1].route_prefix");
        assert!(err.message.contains("/x"));
        let defaults =
            "applications:\n- {name: a, import_path: m.a}\n- {name: b, import_path: m.b}\n";
        assert!(
            ServeConfig::parse(defaults, "f").is_err(),
            "two apps on the default `/` prefix"
        );
    }

    #[test]
    fn refuses_bad_import_path_and_prefix() {
        let err = ServeConfig::parse("applications:\n- {name: a}\n", "f").unwrap_err();
        assert_eq!(err.field, "f: applications[0].import_path");
        let err = ServeConfig::parse(
            "applications:\n- {name: a, import_path: m.a, route_prefix: fruit}\n",
            "f",
        )
        .unwrap_err();
        assert_eq!(err.field, "f: applications[0].route_prefix");
    }

    #[test]
    fn refuses_wrong_types_with_a_path() {
        let err = ServeConfig::parse(
            "applications:\n- name: a\n  import_path: m.a\n  deployments: 3\n",
            "f",
        )
        .unwrap_err();
        assert!(err.field.contains("applications[0].deployments"), "{err}");
    }

    #[test]
    fn duplicate_deployments_are_refused() {
        let text = "applications:\n- name: a\n  import_path: m.a\n  deployments:\n  - name: D\n  - name: D\n";
        let err = ServeConfig::parse(text, "f").unwrap_err();
        assert_eq!(err.field, "f: applications[0].deployments[1].name");
    }

    #[test]
    fn empty_document_has_no_apps() {
        assert!(
            ServeConfig::parse("", "f")
                .expect("empty is fine")
                .applications
                .is_empty()
        );
    }
}
