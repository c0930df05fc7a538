//! The cluster spec hash that decides between "same cluster" and "new cluster".

use rayservice_api::RayClusterSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation that carries [`cluster_hash`] on a RayCluster (KubeRay's name).
pub use rayservice_api::labels::HASH_ANNOTATION;

/// Worker group fields owned by the autoscaler: changing them never rolls out a new cluster.
pub const AUTOSCALER_OWNED_FIELDS: &[&str] =
    &["replicas", "minReplicas", "maxReplicas", "scaleStrategy"];

/// Hash of a cluster spec without the autoscaler-owned fields and `suspend`.
pub fn cluster_hash(spec: &RayClusterSpec) -> String {
    hash_value(&comparable(spec, None))
}

/// The same hash, computed over the first `groups` worker groups only: equal to the running
/// cluster's hash when the new spec only appends worker groups.
pub fn cluster_hash_of_first_groups(spec: &RayClusterSpec, groups: usize) -> String {
    hash_value(&comparable(spec, Some(groups)))
}

/// Hash of a serve config document (its JSON form).
pub fn serve_config_hash(config: &Value) -> String {
    hash_value(config)
}

fn comparable(spec: &RayClusterSpec, groups: Option<usize>) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("suspend");
        if let Some(Value::Array(worker_groups)) = object.get_mut("workerGroupSpecs") {
            if let Some(keep) = groups {
                worker_groups.truncate(keep);
            }
            for group in worker_groups.iter_mut().filter_map(Value::as_object_mut) {
                for field in AUTOSCALER_OWNED_FIELDS {
                    group.remove(*field);
                }
            }
            if worker_groups.is_empty() {
                object.remove("workerGroupSpecs");
            }
        }
    }
    value
}

fn hash_value(value: &Value) -> String {
    let text = serde_json::to_string(&canonical(value)).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..12])
}

/// The same value with every object's keys sorted, so that key order never changes a hash.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Names of the top-level fields (and worker group fields) that differ between two specs,
/// ignoring the autoscaler-owned ones: the fields that force a new cluster.
pub fn fields_forcing_upgrade(running: &RayClusterSpec, desired: &RayClusterSpec) -> Vec<String> {
    let (before, after) = (comparable(running, None), comparable(desired, None));
    let mut fields = Vec::new();
    diff_paths(&before, &after, "", &mut fields);
    fields
}

/// Autoscaler-owned fields that differ between two specs.
pub fn autoscaler_fields_changed(
    running: &RayClusterSpec,
    desired: &RayClusterSpec,
) -> Vec<String> {
    let mut fields = Vec::new();
    for (index, group) in desired.worker_group_specs.iter().enumerate() {
        let Some(old) = running
            .worker_group_specs
            .iter()
            .find(|g| g.group_name == group.group_name)
        else {
            continue;
        };
        let at = format!("workerGroupSpecs[{index}]");
        if old.replicas != group.replicas {
            fields.push(format!("{at}.replicas"));
        }
        if old.min_replicas != group.min_replicas {
            fields.push(format!("{at}.minReplicas"));
        }
        if old.max_replicas != group.max_replicas {
            fields.push(format!("{at}.maxReplicas"));
        }
        if old.scale_strategy != group.scale_strategy {
            fields.push(format!("{at}.scaleStrategy.workersToDelete"));
        }
    }
    fields
}

/// Collects the paths where two JSON values differ, down to a readable depth.
fn diff_paths(before: &Value, after: &Value, at: &str, out: &mut Vec<String>) {
    if before == after {
        return;
    }
    let depth = at.matches(['.', '[']).count();
    match (before, after) {
        (Value::Object(a), Value::Object(b)) if depth < 6 => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                diff_paths(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() && depth < 6 => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                diff_paths(x, y, &format!("{at}[{index}]"), out);
            }
        }
        _ => out.push(if at.is_empty() {
            "rayClusterConfig".into()
        } else {
            at.to_string()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayservice_api::{ScaleStrategy, WorkerGroupSpec};

    fn spec() -> RayClusterSpec {
        RayClusterSpec {
            ray_version: Some("2.60.0".into()),
            worker_group_specs: vec![WorkerGroupSpec {
                group_name: "small".into(),
                replicas: Some(1),
                min_replicas: Some(1),
                max_replicas: Some(5),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn autoscaler_fields_do_not_change_the_hash() {
        let base = spec();
        let mut scaled = spec();
        scaled.worker_group_specs[0].replicas = Some(2);
        scaled.worker_group_specs[0].min_replicas = Some(0);
        scaled.worker_group_specs[0].max_replicas = Some(9);
        scaled.worker_group_specs[0].scale_strategy = Some(ScaleStrategy {
            workers_to_delete: vec!["w".into()],
        });
        scaled.suspend = Some(true);
        assert_eq!(cluster_hash(&base), cluster_hash(&scaled));
        assert_eq!(
            autoscaler_fields_changed(&base, &scaled),
            vec![
                "workerGroupSpecs[0].replicas",
                "workerGroupSpecs[0].minReplicas",
                "workerGroupSpecs[0].maxReplicas",
                "workerGroupSpecs[0].scaleStrategy.workersToDelete"
            ]
        );
        assert!(fields_forcing_upgrade(&base, &scaled).is_empty());
    }

    #[test]
    fn other_fields_change_the_hash() {
        let base = spec();
        let mut upgraded = spec();
        upgraded.ray_version = Some("2.100.0".into());
        assert_ne!(cluster_hash(&base), cluster_hash(&upgraded));
        assert_eq!(fields_forcing_upgrade(&base, &upgraded), vec!["rayVersion"]);
        let mut params = spec();
        params.worker_group_specs[0]
            .ray_start_params
            .insert("num-cpus".into(), "2".into());
        assert_eq!(
            fields_forcing_upgrade(&base, &params),
            vec!["workerGroupSpecs[0].rayStartParams.num-cpus"]
        );
    }

    #[test]
    fn appended_groups_keep_the_prefix_hash() {
        let base = spec();
        let mut appended = spec();
        appended.worker_group_specs.push(WorkerGroupSpec {
            group_name: "gpu".into(),
            ..Default::default()
        });
        assert_ne!(cluster_hash(&base), cluster_hash(&appended));
        assert_eq!(
            cluster_hash(&base),
            cluster_hash_of_first_groups(&appended, 1)
        );
        let mut inserted = spec();
        inserted.worker_group_specs.insert(
            0,
            WorkerGroupSpec {
                group_name: "gpu".into(),
                ..Default::default()
            },
        );
        assert_ne!(
            cluster_hash(&base),
            cluster_hash_of_first_groups(&inserted, 1)
        );
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(cluster_hash(&spec()), cluster_hash(&spec()));
        assert_eq!(cluster_hash(&spec()).len(), 24);
    }
}
