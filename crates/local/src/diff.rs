//! `rayservice diff`: what an apply would do, computed by the same core decision as the apply,
//! on the same observed state, without carrying anything out.

use std::collections::BTreeSet;

use rayservice_api::ServeConfig;
use rayservice_core::{Action, CreateCause, Decision};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What applying one RayService would do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiffReport {
    /// `RayService` or `RayCluster`.
    #[serde(default = "rayservice_kind")]
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `create`, `none`, `in-place`, `upgrade`, `not-rolled-out`, or a combination.
    pub kinds: Vec<String>,
    /// One line per thing that changes, for a person.
    pub lines: Vec<String>,
}

fn rayservice_kind() -> String {
    "RayService".to_string()
}

/// Compares the decision for the current spec with the decision for the new one, both on the
/// same observation, and explains the difference.
pub fn explain(
    name: &str,
    current: Option<&ServeConfig>,
    desired: &ServeConfig,
    baseline: &Decision,
    proposed: &Decision,
    incremental: Option<rayservice_core::incremental::Options>,
) -> DiffReport {
    let mut kinds = Vec::new();
    let mut lines = Vec::new();
    let Some(old_config) = current else {
        let apps: Vec<&str> = desired
            .applications
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        return DiffReport {
            kind: rayservice_kind(),
            name: name.to_string(),
            kinds: vec!["create".into()],
            lines: vec![format!(
                "new RayService: a cluster is started and {} application(s) deployed ({})",
                apps.len(),
                apps.join(", ")
            )],
        };
    };
    let new_actions: Vec<&Action> = proposed
        .actions
        .iter()
        .filter(|a| !baseline.actions.contains(a))
        .collect();
    // The decision says why it starts a cluster; the explanation is read from it.
    let created = new_actions.iter().find_map(|a| match a {
        Action::CreateCluster { cause, memory, .. } => Some((cause, memory)),
        _ => None,
    });
    if let Some((cause, memory)) = created {
        kinds.push("upgrade".to_string());
        let why = match cause {
            CreateCause::SpecChanged { fields } if !fields.is_empty() => {
                format!("{} changed", fields.join(", "))
            }
            CreateCause::Unhealthy { why } => format!("the serving cluster is unhealthy ({why})"),
            _ => "the cluster spec changed".to_string(),
        };
        match incremental.filter(|_| memory.target_capacity.is_some()) {
            Some(options) => {
                kinds.push("incremental-upgrade".to_string());
                let (steps, seconds) = rayservice_core::incremental::plan(&options);
                lines.push(format!(
                    "incremental upgrade: a new cluster is started because {why}; Serve capacity and traffic move step by step ({}% of requests every {} s at most, capacity {}% at a time; at least {seconds} s once it runs):",
                    options.step, options.interval_seconds, options.max_surge
                ));
                lines.extend(steps.into_iter().map(|s| format!("  {s}")));
            }
            None => lines.push(format!(
                "zero-downtime upgrade: a new cluster is started because {why}; traffic moves when every application runs on it"
            )),
        }
    }
    if new_actions
        .iter()
        .any(|a| matches!(a, Action::UpdateClusterInPlace { .. }))
    {
        kinds.push("in-place".to_string());
        lines
            .push("worker groups appended at the end are added to the running cluster".to_string());
    }
    for action in &new_actions {
        if let Action::Event(event) = action {
            match event.reason.as_str() {
                "NotRolledOut" | "UpgradeSkipped" => {
                    kinds.push("not-rolled-out".to_string());
                    lines.push(format!("not rolled out: {}", event.message));
                }
                _ => {}
            }
        }
    }
    let serve_changes = serve_config_changes(old_config, desired);
    if !serve_changes.is_empty() {
        if !kinds.iter().any(|k| k == "upgrade") {
            kinds.push("in-place".to_string());
            lines.push(
                "in-place update of the Serve applications on the running cluster:".to_string(),
            );
        } else {
            lines.push("the new cluster gets the new Serve applications:".to_string());
        }
        lines.extend(serve_changes.into_iter().map(|c| format!("  {c}")));
    }
    if kinds.is_empty() {
        kinds.push("none".to_string());
        lines.push("no changes".to_string());
    }
    kinds.dedup();
    DiffReport {
        kind: rayservice_kind(),
        name: name.to_string(),
        kinds,
        lines,
    }
}

/// Which applications and deployments differ between two serve configs, and how.
pub fn serve_config_changes(old: &ServeConfig, new: &ServeConfig) -> Vec<String> {
    let mut changes = Vec::new();
    let old_apps: Vec<&str> = old.applications.iter().map(|a| a.name.as_str()).collect();
    let new_apps: Vec<&str> = new.applications.iter().map(|a| a.name.as_str()).collect();
    for app in &new.applications {
        let Some(before) = old.applications.iter().find(|a| a.name == app.name) else {
            changes.push(format!("application {} is added", app.name));
            continue;
        };
        let (before_json, after_json) = (to_json(before), to_json(app));
        if before_json == after_json {
            continue;
        }
        let app_keys = changed_keys(&before_json, &after_json, &["deployments"]);
        if !app_keys.is_empty() {
            changes.push(format!(
                "application {}: {} change",
                app.name,
                app_keys.join(", ")
            ));
        }
        for deployment in &app.deployments {
            match before
                .deployments
                .iter()
                .find(|d| d.name == deployment.name)
            {
                None => changes.push(format!(
                    "application {}: deployment {} is configured",
                    app.name, deployment.name
                )),
                Some(old_deployment) => {
                    let keys = changed_keys(&to_json(old_deployment), &to_json(deployment), &[]);
                    if !keys.is_empty() {
                        changes.push(format!(
                            "application {}: deployment {}: {} change",
                            app.name,
                            deployment.name,
                            keys.join(", ")
                        ));
                    }
                }
            }
        }
        for old_deployment in &before.deployments {
            if !app
                .deployments
                .iter()
                .any(|d| d.name == old_deployment.name)
            {
                changes.push(format!(
                    "application {}: deployment {} returns to its defaults",
                    app.name, old_deployment.name
                ));
            }
        }
    }
    for name in old_apps.iter().filter(|n| !new_apps.contains(n)) {
        changes.push(format!("application {name} is removed"));
    }
    let top = changed_keys(&to_json_top(old), &to_json_top(new), &["applications"]);
    if !top.is_empty() {
        changes.push(format!("{} change", top.join(", ")));
    }
    changes
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn to_json_top(config: &ServeConfig) -> Value {
    config.to_json()
}

fn changed_keys(before: &Value, after: &Value, skip: &[&str]) -> Vec<String> {
    let empty = serde_json::Map::new();
    let a = before.as_object().unwrap_or(&empty);
    let b = after.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !skip.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServeConfig {
        ServeConfig::parse(text, "x").expect("valid")
    }

    const BASE: &str = "applications:\n- name: fruit_app\n  import_path: fruit.deployment_graph\n  route_prefix: /fruit\n  deployments:\n  - name: MangoStand\n    user_config: {price: 3}\n  - name: PearStand\n    user_config: {price: 1}\n- name: math_app\n  import_path: conditional_dag.serve_dag\n  route_prefix: /calc\n";

    #[test]
    fn names_changed_deployments_and_keys() {
        let changes = serve_config_changes(
            &config(BASE),
            &config(&BASE.replace("price: 3", "price: 4")),
        );
        assert_eq!(
            changes,
            vec!["application fruit_app: deployment MangoStand: user_config change"]
        );
    }

    #[test]
    fn names_added_removed_and_renamed_apps() {
        let renamed = BASE.replace("math_app", "calc_app");
        let changes = serve_config_changes(&config(BASE), &config(&renamed));
        assert_eq!(
            changes,
            vec![
                "application calc_app is added",
                "application math_app is removed"
            ]
        );
    }

    #[test]
    fn same_config_has_no_changes() {
        assert!(serve_config_changes(&config(BASE), &config(BASE)).is_empty());
    }

    #[test]
    fn app_level_and_top_level_keys() {
        let moved = BASE.replace("route_prefix: /calc", "route_prefix: /math")
            + "proxy_location: HeadOnly\n";
        let changes = serve_config_changes(&config(BASE), &config(&moved));
        assert_eq!(
            changes,
            vec![
                "application math_app: route_prefix change",
                "proxy_location change"
            ]
        );
    }
}
