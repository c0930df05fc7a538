//! Reading manifest files: YAML (one or several documents) into typed objects.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{FieldError, ManifestError};
use crate::serve_config::one_line;
use crate::types::{API_VERSION_V1, API_VERSION_V1ALPHA1, RayCluster, RayService};
use crate::validate;

/// One document of a manifest file.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A RayService, converted to `ray.io/v1` and validated.
    RayService(Box<RayService>),
    /// A RayCluster, converted to `ray.io/v1` and validated.
    RayCluster(Box<RayCluster>),
    /// Any other Kubernetes object (ConfigMap, Service, ...): not ours to run.
    Other {
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
        /// Its `metadata.name`.
        name: String,
    },
}

/// Parses every document of `text`; `file` names the source in errors.
pub fn parse_manifests(text: &str, file: &str) -> Result<Vec<Manifest>, ManifestError> {
    // Read as kubectl reads it (sigs.k8s.io/yaml: YAML 1.1 scalars, then JSON).
    let documents: Vec<Value> =
        crate::yaml::documents(text).map_err(|err| ManifestError::Syntax {
            file: file.to_string(),
            line: err.line,
            message: one_line(&err.message),
        })?;
    let mut manifests = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        manifests.push(parse_document(document, file, index + 1)?);
    }
    if !manifests
        .iter()
        .any(|m| !matches!(m, Manifest::Other { .. }))
    {
        return Err(ManifestError::Empty {
            file: file.to_string(),
        });
    }
    Ok(manifests)
}

fn parse_document(document: Value, file: &str, index: usize) -> Result<Manifest, ManifestError> {
    let field_error = |object: &str, error: FieldError| ManifestError::Field {
        file: file.to_string(),
        object: object.to_string(),
        error,
    };
    let Value::Object(map) = &document else {
        return Err(field_error(
            &format!("document {index}"),
            FieldError::new(
                "",
                "is not a mapping",
                "each document needs apiVersion, kind, metadata and spec",
            ),
        ));
    };
    let text_of = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let api_version = text_of("apiVersion");
    let kind = text_of("kind");
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let object = if name.is_empty() {
        format!("document {index}")
    } else {
        format!("{kind}/{name}")
    };
    if api_version.is_empty() {
        return Err(field_error(
            &object,
            FieldError::new("apiVersion", "is missing", "add `apiVersion: ray.io/v1`"),
        ));
    }
    if kind.is_empty() {
        return Err(field_error(
            &object,
            FieldError::new("kind", "is missing", "add `kind: RayService`"),
        ));
    }
    let group = api_version
        .split_once('/')
        .map(|(group, _)| group)
        .unwrap_or("");
    if group != crate::types::GROUP {
        return Ok(Manifest::Other {
            api_version,
            kind,
            name,
        });
    }
    if api_version != API_VERSION_V1 && api_version != API_VERSION_V1ALPHA1 {
        return Err(field_error(
            &object,
            FieldError::new(
                "apiVersion",
                &format!("`{api_version}` is not a known version of ray.io"),
                "use `ray.io/v1` (or the older `ray.io/v1alpha1`)",
            ),
        ));
    }
    match kind.as_str() {
        "RayService" => {
            let mut service: RayService =
                typed(document, &api_version).map_err(|e| field_error(&object, e))?;
            validate::normalize_metadata(&mut service.metadata);
            validate::rayservice(&service, &api_version).map_err(|e| field_error(&object, e))?;
            Ok(Manifest::RayService(Box::new(service)))
        }
        "RayCluster" => {
            let mut cluster: RayCluster =
                typed(document, &api_version).map_err(|e| field_error(&object, e))?;
            validate::normalize_metadata(&mut cluster.metadata);
            validate::raycluster(&cluster).map_err(|e| field_error(&object, e))?;
            Ok(Manifest::RayCluster(Box::new(cluster)))
        }
        other => Err(field_error(
            &object,
            FieldError::new(
                "kind",
                &format!("`{other}` is not supported"),
                "use `kind: RayService` (or `RayCluster`); RayJob is not supported",
            ),
        )),
    }
}

/// Deserializes into `T`, refusing fields that `T` does not have.
fn typed<T: DeserializeOwned>(document: Value, api_version: &str) -> Result<T, FieldError> {
    let mut unknown: Vec<String> = Vec::new();
    let result: Result<T, serde_path_to_error::Error<serde_json::Error>> = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
        let ignored = serde_ignored::Deserializer::new(document, &mut record);
        serde_path_to_error::deserialize(ignored)
    };
    let value = result.map_err(|err| {
        let path = err.path().to_string();
        FieldError::new(
            if path == "." { "" } else { &path },
            &one_line(&err.into_inner().to_string()),
            "correct the value's type as the RayService API defines it",
        )
    })?;
    let unknown: Vec<String> = unknown
        .into_iter()
        .filter(|path| path != "apiVersion" && path != "kind")
        .collect();
    if let Some(path) = unknown.first() {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let hint = suggestion(leaf)
            .map(|known| format!("did you mean `{known}`?"))
            .unwrap_or_else(|| {
                format!("remove it, or check the spelling against the {api_version} RayService API")
            });
        return Err(FieldError::new(path, "unknown field", &hint));
    }
    Ok(value)
}

/// Renders a path as `spec.workerGroupSpecs[0].replicas`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Fields of our own types that are often mistyped.
const KNOWN_FIELDS: &[&str] = &[
    "serveConfigV2",
    "serveConfig",
    "rayClusterConfig",
    "serviceUnhealthySecondThreshold",
    "deploymentUnhealthySecondThreshold",
    "rayClusterDeletionDelaySeconds",
    "upgradeStrategy",
    "serveService",
    "excludeHeadPodFromServeSvc",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "rayStartParams",
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "scaleStrategy",
    "workersToDelete",
    "template",
    "containers",
    "resources",
    "limits",
    "requests",
    "gcsFaultToleranceOptions",
    "managedBy",
    "suspend",
    "authOptions",
    "tlsOptions",
    "networkPolicy",
    "historyServerOptions",
    "clusterUpgradeOptions",
    "headService",
    "ingressOptions",
    "numOfHosts",
    "idleTimeoutSeconds",
];

/// The known field closest to `leaf` (ignoring case and separators), within two edits.
fn suggestion(leaf: &str) -> Option<&'static str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase()
    };
    let wanted = squash(leaf);
    KNOWN_FIELDS
        .iter()
        .copied()
        .map(|known: &'static str| (edit_distance(&squash(known), &wanted), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kuberay-samples")
    }

    #[test]
    fn every_kuberay_sample_parses_unchanged() {
        let dir = samples_dir();
        let entries =
            std::fs::read_dir(&dir).expect("../shared/kuberay-samples is beside the repository");
        let mut seen = 0;
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path).expect("readable sample");
            let manifests = parse_manifests(&text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            let services: Vec<_> = manifests
                .iter()
                .filter(|m| matches!(m, Manifest::RayService(_)))
                .collect();
            assert_eq!(services.len(), 1, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 4, "expected the four KubeRay samples, found {seen}");
    }

    const GOOD: &str = r#"
apiVersion: ray.io/v1
kind: RayService
metadata:
  name: demo
spec:
  serveConfigV2: |
    applications:
      - name: a
        import_path: m.app
        route_prefix: /a
  rayClusterConfig:
    rayVersion: "2.60.0"
    headGroupSpec:
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-head
            image: rayproject/ray:2.60.0
            resources:
              limits: {cpu: 2, memory: 2Gi}
    workerGroupSpecs:
    - groupName: small
      replicas: 1
      rayStartParams: {}
      template:
        spec:
          containers:
          - name: ray-worker
            image: rayproject/ray:2.60.0
"#;

    fn one_service(text: &str) -> RayService {
        match parse_manifests(text, "f.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0)
        {
            Manifest::RayService(service) => *service,
            other => panic!("not a RayService: {other:?}"),
        }
    }

    fn error_of(text: &str) -> ManifestError {
        parse_manifests(text, "f.yaml").expect_err("must be refused")
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let service = one_service(GOOD);
        assert_eq!(service.metadata.name.as_deref(), Some("demo"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("default"));
        let cluster = service.spec.ray_cluster_config.expect("cluster");
        assert_eq!(cluster.worker_group_specs[0].desired_replicas(), 1);
    }

    #[test]
    fn yaml_syntax_error_names_file_and_line() {
        let err = error_of("apiVersion: ray.io/v1\nkind: [RayService\nmetadata: {}\n");
        let text = err.to_string();
        assert!(text.starts_with("f.yaml: not valid YAML"), "{text}");
        assert!(
            matches!(err, ManifestError::Syntax { line: Some(_), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_api_version_and_kind_are_refused() {
        let err = error_of(&GOOD.replace("ray.io/v1\n", "ray.io/v2\n")).to_string();
        assert!(
            err.contains("apiVersion") && err.contains("ray.io/v2"),
            "{err}"
        );
        let err = error_of(&GOOD.replace("kind: RayService", "kind: RayJob")).to_string();
        assert!(err.contains("kind") && err.contains("RayJob"), "{err}");
    }

    #[test]
    fn unknown_field_is_named_with_a_suggestion() {
        let err = error_of(&GOOD.replace("serveConfigV2:", "serveConfigv2:")).to_string();
        assert!(err.contains("spec.serveConfigv2: unknown field"), "{err}");
        assert!(err.contains("did you mean `serveConfigV2`"), "{err}");
        let err =
            error_of(&GOOD.replace("groupName: small", "groupName: small\n      replicaz: 3"))
                .to_string();
        assert!(err.contains("workerGroupSpecs[0].replicaz"), "{err}");
        let err = error_of(&GOOD.replace(
            "image: rayproject/ray:2.60.0\n            resources",
            "imagee: x\n            resources",
        ))
        .to_string();
        assert!(err.contains("containers[0].imagee: unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = error_of(&GOOD.replace("replicas: 1", "replicas: lots")).to_string();
        assert!(
            err.contains("spec.rayClusterConfig.workerGroupSpecs[0].replicas"),
            "{err}"
        );
    }

    #[test]
    fn yaml_11_scalars_read_as_kubectl_reads_them() {
        let text = GOOD
            .replace(
                "    rayVersion: \"2.60.0\"\n",
                "    rayVersion: \"2.60.0\"\n    enableInTreeAutoscaling: yes\n",
            )
            .replace(
                "            image: rayproject/ray:2.60.0\n            resources:",
                "            image: rayproject/ray:2.60.0\n            tty: on\n            resources:",
            )
            .replace(
                "      template:\n        spec:\n          containers:\n          - name: ray-head",
                "      template:\n        spec:\n          volumes:\n          - name: cfg\n            configMap: {name: c, defaultMode: 0777, optional: NO}\n          containers:\n          - name: ray-head",
            );
        let service = one_service(&text);
        let cluster = service.spec.ray_cluster_config.expect("cluster");
        assert_eq!(cluster.enable_in_tree_autoscaling, Some(true));
        let pod = cluster.head_group_spec.template.spec.expect("pod");
        assert_eq!(pod.containers[0].tty, Some(true));
        let volume = pod.volumes.expect("volumes").remove(0);
        let config_map = volume.config_map.expect("configMap");
        assert_eq!(config_map.default_mode, Some(0o777));
        assert_eq!(config_map.optional, Some(false));
    }

    #[test]
    fn quoted_octal_is_a_string_and_its_error_names_the_field() {
        let text = GOOD.replace(
            "      template:\n        spec:\n          containers:\n          - name: ray-head",
            "      template:\n        spec:\n          volumes:\n          - name: cfg\n            configMap: {name: c, defaultMode: \"0777\"}\n          containers:\n          - name: ray-head",
        );
        let err = error_of(&text).to_string();
        assert!(err.starts_with("f.yaml: RayService/demo: "), "{err}");
        assert!(
            err.contains("headGroupSpec.template.spec.volumes[0].configMap.defaultMode"),
            "{err}"
        );
    }

    #[test]
    fn v1alpha1_is_accepted() {
        let service = one_service(&GOOD.replace("ray.io/v1\n", "ray.io/v1alpha1\n"));
        assert!(service.spec.serve_config_v2.is_some());
    }

    #[test]
    fn other_kinds_are_kept_aside_but_a_file_of_only_them_is_refused() {
        let text = format!(
            "{GOOD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{}}\n"
        );
        let manifests = parse_manifests(&text, "f.yaml").expect("valid");
        assert!(matches!(&manifests[1], Manifest::Other { kind, .. } if kind == "ConfigMap"));
        let err = error_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
        assert!(matches!(err, ManifestError::Empty { .. }));
    }
}
