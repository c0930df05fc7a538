//! Validation of RayService and RayCluster objects beyond their types.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::FieldError;
use crate::serve_config::ServeConfig;
use crate::types::{
    API_VERSION_V1ALPHA1, AuthMode, ClusterUpgradeOptions, MANAGED_BY_KUBERAY, RayCluster,
    RayClusterSpec, RayService, RayServiceSpec, UpgradeType, annotations,
};
use crate::{DEFAULT_NAMESPACE, MAX_RAYSERVICE_NAME_LEN};

/// Fills what Kubernetes would fill: the default namespace.
pub fn normalize_metadata(metadata: &mut ObjectMeta) {
    if metadata.namespace.as_deref().unwrap_or_default().is_empty() {
        metadata.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
}

/// Checks a RayService as read from a file of version `api_version`.
pub fn rayservice(service: &RayService, api_version: &str) -> Result<(), FieldError> {
    let name = service.metadata.name.as_deref().unwrap_or_default();
    dns1035_label(name, MAX_RAYSERVICE_NAME_LEN).map_err(|e| e.within("metadata.name"))?;
    let spec = &service.spec;
    match (&spec.serve_config, &spec.serve_config_v2) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "spec.serveConfig",
                "serveConfig and serveConfigV2 are both set",
                "keep only serveConfigV2 (the multi-application config)",
            ));
        }
        (Some(_), None) => {
            let why = if api_version == API_VERSION_V1ALPHA1 {
                "the single-application serveConfig is not supported"
            } else {
                "serveConfig does not exist in ray.io/v1"
            };
            return Err(FieldError::new(
                "spec.serveConfig",
                why,
                "move the application into serveConfigV2 (`applications: [{name, import_path, route_prefix, deployments}]`)",
            ));
        }
        _ => {}
    }
    if let Some(text) = &spec.serve_config_v2 {
        ServeConfig::parse(text, "spec.serveConfigV2")?;
    }
    let cluster = spec.ray_cluster_config.as_ref().ok_or_else(|| {
        FieldError::new(
            "spec.rayClusterConfig",
            "is missing",
            "add rayClusterConfig with a headGroupSpec (the Ray cluster to run)",
        )
    })?;
    cluster_spec(cluster).map_err(|e| e.within("spec.rayClusterConfig"))?;
    if let Some(options) = spec
        .upgrade_strategy
        .as_ref()
        .and_then(|s| s.cluster_upgrade_options.as_ref())
    {
        cluster_upgrade_options(options).map_err(|e| e.within("spec.upgradeStrategy"))?;
    }
    for (field, value) in [
        (
            "spec.serviceUnhealthySecondThreshold",
            spec.service_unhealthy_second_threshold,
        ),
        (
            "spec.deploymentUnhealthySecondThreshold",
            spec.deployment_unhealthy_second_threshold,
        ),
        (
            "spec.rayClusterDeletionDelaySeconds",
            spec.ray_cluster_deletion_delay_seconds,
        ),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(FieldError::new(
                field,
                "is negative",
                "use a number of seconds, 0 or more",
            ));
        }
    }
    Ok(())
}

/// KubeRay's requirements for `NewClusterWithIncrementalUpgrade` where traffic moves through a
/// Gateway (the operator with the Gateway API installed): Ray's autoscaler on, and
/// `clusterUpgradeOptions` complete, `gatewayClassName` included. Checked in KubeRay's order;
/// field paths start at the object (`spec.upgradeStrategy...`). Local mode needs neither the
/// Gateway nor the autoscaler, so [`rayservice`] does not ask for them.
pub fn upgrade_through_gateway(spec: &RayServiceSpec) -> Result<(), FieldError> {
    let autoscaling = spec
        .ray_cluster_config
        .as_ref()
        .is_some_and(|c| c.enable_in_tree_autoscaling == Some(true));
    if !autoscaling {
        return Err(FieldError::new(
            "spec.rayClusterConfig.enableInTreeAutoscaling",
            "must be true: NewClusterWithIncrementalUpgrade requires Ray's autoscaler",
            "set `enableInTreeAutoscaling: true` in rayClusterConfig",
        ));
    }
    let options = spec
        .upgrade_strategy
        .as_ref()
        .and_then(|s| s.cluster_upgrade_options.as_ref())
        .ok_or_else(|| {
            FieldError::new(
                "spec.upgradeStrategy.clusterUpgradeOptions",
                "is missing: NewClusterWithIncrementalUpgrade requires it",
                "give stepSizePercent, intervalSeconds and gatewayClassName, e.g. `clusterUpgradeOptions: {gatewayClassName: istio, stepSizePercent: 10, intervalSeconds: 30}`",
            )
        })?;
    cluster_upgrade_options(options).map_err(|e| e.within("spec.upgradeStrategy"))?;
    if options
        .gateway_class_name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(FieldError::new(
            "spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName",
            "is missing: on Kubernetes the traffic moves through a Gateway of this class",
            "name the GatewayClass that your Gateway controller serves, e.g. `gatewayClassName: istio`",
        ));
    }
    Ok(())
}

/// KubeRay's rules for `clusterUpgradeOptions`. `gatewayClassName` is not required here: local
/// mode splits traffic in its own Serve endpoint and needs no Gateway (an event says so);
/// [`upgrade_through_gateway`] requires it.
fn cluster_upgrade_options(options: &ClusterUpgradeOptions) -> Result<(), FieldError> {
    let at = |field: &str| format!("clusterUpgradeOptions.{field}");
    let surge = options.max_surge_percent.unwrap_or(100);
    if !(0..=100).contains(&surge) {
        return Err(FieldError::new(
            &at("maxSurgePercent"),
            &format!("{surge} is not a percentage"),
            "use a number from 0 to 100 (default 100)",
        ));
    }
    match options.step_size_percent {
        None => {
            return Err(FieldError::new(
                &at("stepSizePercent"),
                "is missing",
                "give the percent of traffic moved each interval, e.g. `stepSizePercent: 10`",
            ));
        }
        Some(step) if !(0..=100).contains(&step) => {
            return Err(FieldError::new(
                &at("stepSizePercent"),
                &format!("{step} is not a percentage"),
                "use a number from 0 to 100",
            ));
        }
        Some(step) if step > surge => {
            return Err(FieldError::new(
                &at("stepSizePercent"),
                &format!("{step} is above maxSurgePercent {surge}"),
                "make stepSizePercent <= maxSurgePercent",
            ));
        }
        Some(_) => {}
    }
    if options.interval_seconds.is_none_or(|s| s <= 0) {
        return Err(FieldError::new(
            &at("intervalSeconds"),
            "is missing or not positive",
            "give the seconds between two traffic steps, e.g. `intervalSeconds: 30`",
        ));
    }
    Ok(())
}

/// Checks a standalone RayCluster.
pub fn raycluster(cluster: &RayCluster) -> Result<(), FieldError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    dns1035_label(name, 63).map_err(|e| e.within("metadata.name"))?;
    cluster_spec(&cluster.spec).map_err(|e| e.within("spec"))
}

/// Checks a cluster spec; field paths are relative to it.
pub fn cluster_spec(spec: &RayClusterSpec) -> Result<(), FieldError> {
    has_a_container(&spec.head_group_spec.template).map_err(|e| e.within("headGroupSpec"))?;
    let mut groups = BTreeSet::new();
    for (index, group) in spec.worker_group_specs.iter().enumerate() {
        let at = format!("workerGroupSpecs[{index}]");
        if group.group_name.is_empty() {
            return Err(FieldError::new(
                &format!("{at}.groupName"),
                "is missing",
                "name the worker group, e.g. `small-group`",
            ));
        }
        dns1035_label(&group.group_name, 63)
            .or_else(|_| lowercase_name(&group.group_name))
            .map_err(|e| e.within(&format!("{at}.groupName")))?;
        if !groups.insert(group.group_name.as_str()) {
            return Err(FieldError::new(
                &format!("{at}.groupName"),
                &format!("group `{}` is defined twice", group.group_name),
                "give every worker group its own name",
            ));
        }
        for (field, value) in [
            ("replicas", group.replicas),
            ("minReplicas", group.min_replicas),
            ("maxReplicas", group.max_replicas),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(FieldError::new(
                    &format!("{at}.{field}"),
                    "is negative",
                    "use 0 or more",
                ));
            }
        }
        if let (Some(min), Some(max)) = (group.min_replicas, group.max_replicas)
            && min > max
        {
            return Err(FieldError::new(
                &format!("{at}.minReplicas"),
                &format!("minReplicas {min} is above maxReplicas {max}"),
                "make minReplicas <= maxReplicas",
            ));
        }
        has_a_container(&group.template).map_err(|e| e.within(&at))?;
    }
    Ok(())
}

/// Fields of a RayService spec that are accepted (KubeRay v1.7 has them) but that neither local
/// mode nor the operator acts on yet, as paths relative to `spec` (`rayClusterConfig.authOptions`).
/// Only fields given a value that would change something are named. The platforms report them
/// (an event and a status message), so that no accepted field is silently ignored; remove an
/// entry here when its behaviour is implemented on both platforms.
pub fn unimplemented_service_fields(spec: &RayServiceSpec) -> Vec<String> {
    let mut fields = Vec::new();
    let mut note = |set: bool, field: &str| {
        if set {
            fields.push(field.to_string());
        }
    };
    note(not_ours(spec.managed_by.as_deref()), "managedBy");
    if let Some(strategy) = &spec.upgrade_strategy {
        note(
            strategy.type_ == Some(UpgradeType::NewClusterWithIncrementalUpgrade),
            "upgradeStrategy.type",
        );
        note(
            strategy.cluster_upgrade_options.is_some(),
            "upgradeStrategy.clusterUpgradeOptions",
        );
    }
    note(spec.serve_service.is_some(), "serveService");
    note(
        spec.exclude_head_pod_from_serve_svc == Some(true),
        "excludeHeadPodFromServeSvc",
    );
    if let Some(cluster) = &spec.ray_cluster_config {
        fields.extend(
            unimplemented_fields(cluster)
                .into_iter()
                .map(|field| format!("rayClusterConfig.{field}")),
        );
    }
    fields
}

/// Fields of a RayCluster spec that are accepted but not acted on yet, relative to the cluster
/// spec (`headGroupSpec.ingressOptions`, `workerGroupSpecs[0].priority`); see
/// [`unimplemented_service_fields`]. `suspend` is not listed: the operator acts on it.
pub fn unimplemented_fields(spec: &RayClusterSpec) -> Vec<String> {
    let mut fields = Vec::new();
    let mut note = |set: bool, field: String| {
        if set {
            fields.push(field);
        }
    };
    note(
        spec.enable_in_tree_autoscaling == Some(true),
        "enableInTreeAutoscaling".into(),
    );
    note(
        spec.autoscaler_options.is_some(),
        "autoscalerOptions".into(),
    );
    note(
        spec.gcs_fault_tolerance_options.is_some(),
        "gcsFaultToleranceOptions".into(),
    );
    note(
        spec.auth_options
            .as_ref()
            .is_some_and(|auth| auth.mode != Some(AuthMode::Disabled)),
        "authOptions".into(),
    );
    note(
        spec.tls_options
            .as_ref()
            .is_some_and(|tls| tls.enabled == Some(true)),
        "tlsOptions".into(),
    );
    note(spec.network_policy.is_some(), "networkPolicy".into());
    note(
        spec.history_server_options.is_some(),
        "historyServerOptions".into(),
    );
    note(spec.upgrade_strategy.is_some(), "upgradeStrategy".into());
    note(not_ours(spec.managed_by.as_deref()), "managedBy".into());
    let head = &spec.head_group_spec;
    note(
        head.head_service.is_some(),
        "headGroupSpec.headService".into(),
    );
    note(
        head.enable_ingress == Some(true),
        "headGroupSpec.enableIngress".into(),
    );
    note(
        head.ingress_options.is_some(),
        "headGroupSpec.ingressOptions".into(),
    );
    note(!head.resources.is_empty(), "headGroupSpec.resources".into());
    note(!head.labels.is_empty(), "headGroupSpec.labels".into());
    for (index, group) in spec.worker_group_specs.iter().enumerate() {
        let at = format!("workerGroupSpecs[{index}]");
        note(
            group.priority.is_some_and(|p| p != 0),
            format!("{at}.priority"),
        );
        note(!group.resources.is_empty(), format!("{at}.resources"));
        note(!group.labels.is_empty(), format!("{at}.labels"));
        note(
            group.idle_timeout_seconds.is_some(),
            format!("{at}.idleTimeoutSeconds"),
        );
    }
    fields
}

/// KubeRay annotations on a RayService or RayCluster that are accepted but not acted on yet,
/// such as `ray.io/initializing-timeout`.
pub fn unimplemented_annotations(metadata: &ObjectMeta) -> Vec<String> {
    let given = metadata.annotations.as_ref();
    [annotations::INITIALIZING_TIMEOUT]
        .into_iter()
        .filter(|key| given.is_some_and(|all| all.contains_key(*key)))
        .map(|key| format!("metadata.annotations[{key}]"))
        .collect()
}

/// `managedBy` names another controller than KubeRay (and us).
fn not_ours(managed_by: Option<&str>) -> bool {
    managed_by.is_some_and(|value| value != MANAGED_BY_KUBERAY)
}

fn has_a_container(template: &PodTemplateSpec) -> Result<(), FieldError> {
    let count = template
        .spec
        .as_ref()
        .map_or(0, |spec| spec.containers.len());
    if count == 0 {
        return Err(FieldError::new(
            "template.spec.containers",
            "is empty",
            "add the Ray container (name, image, resources.limits for cpu and memory)",
        ));
    }
    Ok(())
}

/// A DNS-1035 label: lowercase letters, digits and `-`, starting with a letter, ending with a letter or digit.
pub fn dns1035_label(name: &str, max_len: usize) -> Result<(), FieldError> {
    let fix =
        "use lowercase letters, digits and '-', start with a letter and end with a letter or digit";
    if name.is_empty() {
        return Err(FieldError::new("", "is missing", "give the object a name"));
    }
    if name.len() > max_len {
        return Err(FieldError::new(
            "",
            &format!(
                "`{name}` is {} characters long, more than {max_len}",
                name.len()
            ),
            &format!("use at most {max_len} characters, so that generated names stay legal"),
        ));
    }
    let bytes = name.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let starts = bytes.first().is_some_and(u8::is_ascii_lowercase);
    let ends = bytes
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(valid_chars && starts && ends) {
        return Err(FieldError::new(
            "",
            &format!("`{name}` is not a DNS-1035 label"),
            fix,
        ));
    }
    Ok(())
}

/// Worker group names may start with a digit (they are only part of pod names).
fn lowercase_name(name: &str) -> Result<(), FieldError> {
    let ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "",
            &format!("`{name}` is not a valid name"),
            "use lowercase letters, digits and '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(dns1035_label("rayservice-sample", 47).is_ok());
        assert!(dns1035_label("a", 47).is_ok());
        for bad in ["", "Ray", "1abc", "abc-", "a_b", "a.b"] {
            assert!(dns1035_label(bad, 47).is_err(), "{bad}");
        }
        let long = "a".repeat(48);
        let err = dns1035_label(&long, 47).unwrap_err();
        assert!(err.message.contains("48 characters"), "{err}");
        assert!(dns1035_label(&"a".repeat(47), 47).is_ok());
    }

    fn service(yaml_spec: &str) -> RayService {
        let text = format!(
            "apiVersion: ray.io/v1\nkind: RayService\nmetadata: {{name: s}}\nspec:\n{yaml_spec}"
        );
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        serde_json::from_value(value).expect("typed")
    }

    const CLUSTER: &str = "  rayClusterConfig:\n    headGroupSpec:\n      template:\n        spec:\n          containers: [{name: h, image: i}]\n";

    #[test]
    fn missing_cluster_config() {
        let err = rayservice(&service("  serveConfigV2: ''\n"), "ray.io/v1").unwrap_err();
        assert_eq!(err.field, "spec.rayClusterConfig");
    }

    #[test]
    fn both_serve_configs() {
        let spec = format!(
            "  serveConfig: {{importPath: a.b}}\n  serveConfigV2: 'applications: []'\n{CLUSTER}"
        );
        let err = rayservice(&service(&spec), "ray.io/v1alpha1").unwrap_err();
        assert!(err.message.contains("both"), "{err}");
    }

    #[test]
    fn bad_serve_config_names_the_field() {
        let spec = format!("  serveConfigV2: 'applications: [{{name: a'\n{CLUSTER}");
        let err = rayservice(&service(&spec), "ray.io/v1").unwrap_err();
        assert_eq!(err.field, "spec.serveConfigV2");
    }

    #[test]
    fn worker_groups() {
        let spec = format!(
            "{CLUSTER}    workerGroupSpecs:\n    - {{groupName: g, template: {{spec: {{containers: [{{name: w}}]}}}}}}\n    - {{groupName: g, template: {{spec: {{containers: [{{name: w}}]}}}}}}\n"
        );
        let err = rayservice(&service(&spec), "ray.io/v1").unwrap_err();
        assert_eq!(
            err.field,
            "spec.rayClusterConfig.workerGroupSpecs[1].groupName"
        );
        let spec = format!(
            "{CLUSTER}    workerGroupSpecs:\n    - {{groupName: g, minReplicas: 3, maxReplicas: 1, template: {{spec: {{containers: [{{name: w}}]}}}}}}\n"
        );
        let err = rayservice(&service(&spec), "ray.io/v1").unwrap_err();
        assert_eq!(
            err.field,
            "spec.rayClusterConfig.workerGroupSpecs[0].minReplicas"
        );
        let spec = format!("{CLUSTER}    workerGroupSpecs:\n    - {{groupName: g}}\n");
        let err = rayservice(&service(&spec), "ray.io/v1").unwrap_err();
        assert_eq!(
            err.field,
            "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers"
        );
    }

    #[test]
    fn accepted_but_unimplemented_fields_are_named() {
        assert!(unimplemented_service_fields(&service(CLUSTER).spec).is_empty());
        let spec = format!(
            "  suspend: true\n  managedBy: kueue.x-k8s.io/multikueue\n  upgradeStrategy:\n    type: NewClusterWithIncrementalUpgrade\n    clusterUpgradeOptions: {{stepSizePercent: 10, intervalSeconds: 30, gatewayClassName: istio}}\n{CLUSTER}    enableInTreeAutoscaling: true\n    autoscalerOptions: {{version: v2, upscalingMode: Conservative, idleTimeoutSeconds: 60}}\n    authOptions: {{mode: token}}\n    tlsOptions: {{enabled: true}}\n    gcsFaultToleranceOptions: {{backend: rocksdb, storage: {{size: 1Gi}}}}\n    networkPolicy: {{mode: DenyAllIngress}}\n    historyServerOptions: {{collectorOptions: {{image: c}}}}\n    workerGroupSpecs:\n    - {{groupName: g, priority: 2, idleTimeoutSeconds: 5, labels: {{zone: a}}, template: {{spec: {{containers: [{{name: w}}]}}}}}}\n"
        );
        let fields = unimplemented_service_fields(&service(&spec).spec);
        assert!(
            !fields.contains(&"suspend".to_string()),
            "suspend is acted on"
        );
        for wanted in [
            "managedBy",
            "upgradeStrategy.type",
            "upgradeStrategy.clusterUpgradeOptions",
            "rayClusterConfig.enableInTreeAutoscaling",
            "rayClusterConfig.autoscalerOptions",
            "rayClusterConfig.authOptions",
            "rayClusterConfig.tlsOptions",
            "rayClusterConfig.gcsFaultToleranceOptions",
            "rayClusterConfig.networkPolicy",
            "rayClusterConfig.historyServerOptions",
            "rayClusterConfig.workerGroupSpecs[0].priority",
            "rayClusterConfig.workerGroupSpecs[0].idleTimeoutSeconds",
            "rayClusterConfig.workerGroupSpecs[0].labels",
        ] {
            assert!(
                fields.iter().any(|f| f == wanted),
                "{wanted} not in {fields:?}"
            );
        }
        // Values that change nothing are not named.
        let spec = format!(
            "  suspend: false\n  managedBy: ray.io/kuberay-operator\n{CLUSTER}    authOptions: {{mode: disabled}}\n    tlsOptions: {{enabled: false}}\n    workerGroupSpecs:\n    - {{groupName: g, priority: 0, numOfHosts: 1, template: {{spec: {{containers: [{{name: w}}]}}}}}}\n"
        );
        let fields = unimplemented_service_fields(&service(&spec).spec);
        assert!(fields.is_empty(), "{fields:?}");
    }

    #[test]
    fn cluster_upgrade_options_follow_kuberay() {
        let with = |options: &str| {
            let spec = format!(
                "  upgradeStrategy:\n    type: NewClusterWithIncrementalUpgrade\n    clusterUpgradeOptions: {options}\n{CLUSTER}"
            );
            rayservice(&service(&spec), "ray.io/v1")
        };
        assert!(
            with("{stepSizePercent: 10, intervalSeconds: 30, gatewayClassName: istio}").is_ok()
        );
        // No Gateway is needed where the platform splits traffic itself.
        assert!(with("{stepSizePercent: 10, intervalSeconds: 30}").is_ok());
        for (options, field) in [
            (
                "{intervalSeconds: 30, gatewayClassName: istio}",
                "stepSizePercent",
            ),
            (
                "{maxSurgePercent: 20, stepSizePercent: 30, intervalSeconds: 30, gatewayClassName: istio}",
                "stepSizePercent",
            ),
            (
                "{maxSurgePercent: 120, stepSizePercent: 30, intervalSeconds: 30, gatewayClassName: istio}",
                "maxSurgePercent",
            ),
            (
                "{stepSizePercent: 10, intervalSeconds: 0, gatewayClassName: istio}",
                "intervalSeconds",
            ),
        ] {
            let err = with(options).expect_err(options);
            assert_eq!(
                err.field,
                format!("spec.upgradeStrategy.clusterUpgradeOptions.{field}"),
                "{options}"
            );
        }
    }

    #[test]
    fn through_a_gateway_kuberay_requires_the_autoscaler_and_a_gateway_class() {
        let with = |options: &str, autoscaling: bool| {
            let spec = format!(
                "  upgradeStrategy:\n    type: NewClusterWithIncrementalUpgrade\n{options}{CLUSTER}{}",
                if autoscaling {
                    "    enableInTreeAutoscaling: true\n"
                } else {
                    ""
                }
            );
            upgrade_through_gateway(&service(&spec).spec)
        };
        let complete = "    clusterUpgradeOptions: {stepSizePercent: 10, intervalSeconds: 30, gatewayClassName: istio}\n";
        assert!(with(complete, true).is_ok());
        for (options, autoscaling, field) in [
            (
                complete,
                false,
                "spec.rayClusterConfig.enableInTreeAutoscaling",
            ),
            ("", true, "spec.upgradeStrategy.clusterUpgradeOptions"),
            (
                "    clusterUpgradeOptions: {stepSizePercent: 10, intervalSeconds: 30}\n",
                true,
                "spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName",
            ),
            (
                "    clusterUpgradeOptions: {stepSizePercent: 10, intervalSeconds: 30, gatewayClassName: ''}\n",
                true,
                "spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName",
            ),
            (
                "    clusterUpgradeOptions: {intervalSeconds: 30, gatewayClassName: istio}\n",
                true,
                "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent",
            ),
        ] {
            let err = with(options, autoscaling).expect_err(options);
            assert_eq!(err.field, field, "{options}");
        }
        // The file check of local mode asks for neither.
        let local = format!(
            "  upgradeStrategy:\n    type: NewClusterWithIncrementalUpgrade\n    clusterUpgradeOptions: {{stepSizePercent: 10, intervalSeconds: 30}}\n{CLUSTER}"
        );
        assert!(rayservice(&service(&local), "ray.io/v1").is_ok());
    }

    #[test]
    fn unimplemented_annotations_are_named() {
        let mut meta = ObjectMeta::default();
        assert!(unimplemented_annotations(&meta).is_empty());
        meta.annotations = Some(
            [(
                annotations::INITIALIZING_TIMEOUT.to_string(),
                "30m".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            unimplemented_annotations(&meta),
            vec!["metadata.annotations[ray.io/initializing-timeout]"]
        );
    }

    #[test]
    fn no_head_container() {
        let spec = "  rayClusterConfig:\n    headGroupSpec: {}\n";
        let err = rayservice(&service(spec), "ray.io/v1").unwrap_err();
        assert_eq!(
            err.field,
            "spec.rayClusterConfig.headGroupSpec.template.spec.containers"
        );
    }
}
