//! The one rule for `ray start`'s flags, followed by both platforms (see `docs/contract.md`).
//!
//! A node's flags are a map from option name to value, built in layers, each winning over
//! the one before:
//! 1. the platform's defaults (Kubernetes: `dashboard-host=0.0.0.0`, `metrics-export-port=8080`,
//!    ...; local: `dashboard-host=127.0.0.1`, ...);
//! 2. what the Ray container's resources say ([`RayResources`]: `num-cpus`, `memory`,
//!    `num-gpus`, a custom accelerator merged into `resources`), as KubeRay v1.7 does;
//! 3. the user's `rayStartParams`, keys normalised (`--num_cpus` is `num-cpus`);
//! 4. the platform's owned keys (local: every port, the temp dir; both: `block`), whose user
//!    values are dropped and reported.
//!
//! Rendering follows KubeRay: options in name order, `"true"` a bare flag, `"false"` dropped,
//! except for options that take a boolean word ([`VALUE_BOOLEAN_PARAMS`]). Every option is one
//! `argv` element; a value quoted for a shell (`'"{\"TPU\": 4}"'`, as KubeRay's samples write
//! it for bash) is unquoted once, so Ray gets what bash would have given it.

use std::collections::BTreeMap;

use rayservice_api::NodeType;
use rayservice_api::resources::RayResources;
use serde_json::Value;

use crate::node::NodeError;

/// Options of `ray start` whose value is a word like `true`/`false`/`auto` rather than a
/// presence flag: they are always written `--key=value`.
pub const VALUE_BOOLEAN_PARAMS: &[&str] = &[
    "include-dashboard",
    "include-log-monitor",
    "log-color",
    "log-style",
];

/// `rayStartParams` key in the form `ray start` spells it: no leading dashes, `-` for `_`,
/// lower case.
pub fn normalize_param_key(key: &str) -> String {
    key.trim()
        .trim_start_matches('-')
        .replace('_', "-")
        .to_ascii_lowercase()
}

/// What a platform adds to the rule: its defaults and the keys it owns.
#[derive(Debug, Clone, Default)]
pub struct Platform {
    /// Values used unless the container's resources or the user say otherwise.
    pub defaults: Vec<(String, String)>,
    /// Values that always win; a user value for these keys is dropped and reported.
    pub owned: Vec<(String, String)>,
    /// Keys dropped from the user's params even when [`Platform::owned`] gives them no value.
    pub owned_keys: Vec<String>,
}

/// The flags of one node's `ray start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFlags {
    role: NodeType,
    params: BTreeMap<String, String>,
    /// User `rayStartParams` keys (as written) that were dropped because the platform owns them.
    pub overridden: Vec<String>,
}

impl StartFlags {
    /// Applies the rule to a node of `role` with the user's `params` and the resources of its
    /// Ray container.
    pub fn build(
        role: NodeType,
        params: &BTreeMap<String, String>,
        resources: &RayResources,
        platform: &Platform,
    ) -> Result<StartFlags, NodeError> {
        let mut merged: BTreeMap<String, String> = platform.defaults.iter().cloned().collect();
        if let Some(n) = resources.num_cpus {
            merged.insert("num-cpus".into(), n.to_string());
        }
        if let Some(n) = resources.memory_bytes {
            merged.insert("memory".into(), n.to_string());
        }
        if let Some(n) = resources.num_gpus {
            merged.insert("num-gpus".into(), n.to_string());
        }

        let owned = |key: &str| {
            key == "head"
                || platform.owned.iter().any(|(k, _)| k == key)
                || platform.owned_keys.iter().any(|k| k == key)
        };
        let mut overridden = Vec::new();
        for (raw_key, value) in params {
            let key = normalize_param_key(raw_key);
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(NodeError::InvalidParamKey {
                    key: raw_key.clone(),
                });
            }
            if value.contains('\0') {
                return Err(NodeError::InvalidParamValue {
                    key: raw_key.clone(),
                    reason: "it contains a NUL byte",
                });
            }
            if owned(&key) {
                overridden.push(raw_key.clone());
                continue;
            }
            merged.insert(key, value.trim().to_string());
        }
        if let Some((name, amount)) = &resources.accelerator {
            add_accelerator(&mut merged, name, *amount);
        }
        for (key, value) in &platform.owned {
            merged.insert(key.clone(), value.clone());
        }
        Ok(StartFlags {
            role,
            params: merged,
            overridden,
        })
    }

    /// The value of an option, if it is set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Every option and its value, by name.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// The arguments after the `ray` program: `start`, `--head` for a head, then the options.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["start".to_string()];
        if self.role == NodeType::Head {
            args.push("--head".to_string());
        }
        for (key, value) in &self.params {
            let lower = value.to_ascii_lowercase();
            if VALUE_BOOLEAN_PARAMS.contains(&key.as_str()) {
                args.push(format!("--{key}={}", argv_value(value)));
            } else if lower == "true" {
                args.push(format!("--{key}"));
            } else if lower == "false" {
                // KubeRay drops a flag set to "false".
            } else {
                args.push(format!("--{key}={}", argv_value(value)));
            }
        }
        args
    }
}

/// What bash would make of `value` as one word: quotes removed when the value is exactly one
/// shell word; anything else (several words, unbalanced quotes) is passed as written.
fn argv_value(value: &str) -> String {
    if !value.contains(['\'', '"', '\\']) {
        return value.to_string();
    }
    match shlex::split(value) {
        Some(words) if words.len() == 1 => words.into_iter().next().unwrap_or_default(),
        _ => value.to_string(),
    }
}

/// KubeRay adds the first custom accelerator of the limits to `--resources` unless the user's
/// `resources` already names one; a `resources` value that is not a JSON object is left alone.
fn add_accelerator(params: &mut BTreeMap<String, String>, name: &str, amount: f64) {
    let mut map = match params.get("resources") {
        None => BTreeMap::new(),
        Some(text) => {
            let unquoted = argv_value(text);
            match serde_json::from_str::<BTreeMap<String, Value>>(
                unquoted.trim_matches(['\'', '"', '`', ' ']),
            ) {
                Ok(map) => map,
                Err(_) => return,
            }
        }
    };
    let known = rayservice_api::resources::CUSTOM_ACCELERATORS
        .iter()
        .any(|(_, ray)| map.contains_key(*ray));
    if known {
        return;
    }
    let number = if amount.fract() == 0.0 && (0.0..9.0e15).contains(&amount) {
        // A whole amount is written as Go's json.Marshal writes it: `4`, not `4.0`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Value::from(amount as u64)
    } else {
        serde_json::Number::from_f64(amount).map_or(Value::Null, Value::Number)
    };
    map.insert(name.to_string(), number);
    // Keys in name order and single-quoted for a shell, as KubeRay writes it.
    let json = serde_json::to_string(&map).unwrap_or_default();
    params.insert("resources".into(), format!("'{json}'"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_win_in_order() {
        let platform = Platform {
            defaults: pairs(&[("dashboard-host", "0.0.0.0"), ("num-cpus", "9")]),
            owned: pairs(&[("block", "true"), ("port", "20000")]),
            owned_keys: vec!["temp-dir".into()],
        };
        let resources = RayResources {
            num_cpus: Some(2),
            memory_bytes: Some(1024),
            ..Default::default()
        };
        let flags = StartFlags::build(
            NodeType::Head,
            &params(&[
                ("--num_cpus", "1"),
                ("port", "6379"),
                ("temp_dir", "/tmp/x"),
                ("head", "true"),
                ("no-monitor", "true"),
                ("include-dashboard", "false"),
                ("ray-debugger-external", "false"),
            ]),
            &resources,
            &platform,
        )
        .unwrap();
        assert_eq!(
            flags.args(),
            [
                "start",
                "--head",
                "--block",
                "--dashboard-host=0.0.0.0",
                "--include-dashboard=false",
                "--memory=1024",
                "--no-monitor",
                "--num-cpus=1",
                "--port=20000",
            ]
        );
        let mut overridden = flags.overridden.clone();
        overridden.sort();
        assert_eq!(overridden, ["head", "port", "temp_dir"]);
    }

    #[test]
    fn shell_quoting_is_undone_once_and_accelerators_merge() {
        let resources = RayResources {
            accelerator: Some(("TPU".into(), 4.0)),
            ..Default::default()
        };
        let flags = StartFlags::build(
            NodeType::Worker,
            // As KubeRay's samples write it for bash: `resources: '"{\"custom\": 1}"'`.
            &params(&[("resources", r#""{\"custom\": 1}""#), ("label", "'a b'")]),
            &resources,
            &Platform::default(),
        )
        .unwrap();
        assert_eq!(
            flags.args(),
            [
                "start",
                "--label=a b",
                r#"--resources={"TPU":4,"custom":1}"#
            ]
        );
        // The user's own TPU count wins; several shell words stay as written.
        let flags = StartFlags::build(
            NodeType::Worker,
            &params(&[("resources", r#"{"TPU": 8}"#), ("x", "'a' b")]),
            &resources,
            &Platform::default(),
        )
        .unwrap();
        assert_eq!(
            flags.args(),
            ["start", r#"--resources={"TPU": 8}"#, "--x='a' b"]
        );
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        for bad in ["", "--", "a b", "x;y"] {
            let err = StartFlags::build(
                NodeType::Head,
                &params(&[(bad, "1")]),
                &RayResources::default(),
                &Platform::default(),
            )
            .unwrap_err();
            assert!(matches!(err, NodeError::InvalidParamKey { .. }), "{bad:?}");
        }
        let err = StartFlags::build(
            NodeType::Head,
            &params(&[("x", "a\0b")]),
            &RayResources::default(),
            &Platform::default(),
        )
        .unwrap_err();
        assert!(matches!(err, NodeError::InvalidParamValue { .. }));
    }
}
