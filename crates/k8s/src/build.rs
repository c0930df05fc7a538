//! The desired Kubernetes objects of a RayCluster, computed without any client: the head and
//! worker Pods, the head Service, which workers to create or delete, and the cluster status
//! derived from the pods. Everything here is pure so that it can be tested exhaustively.
//!
//! Choices that differ from, or pin down, KubeRay's behaviour:
//! - The Ray container is the first container of the pod template (KubeRay's index 0).
//! - The `ray start` command line is built as an argv (`command: ["ray"]`, `args: [...]`), never
//!   as a shell string, so user values from `rayStartParams` are never interpreted by a shell.
//!   The generated command and args are used only when the container names neither a `command`
//!   nor `args`; a container that sets either keeps its own (the user then owns `ray start`).
//! - Options are written in name order, as KubeRay writes them. Generated defaults
//!   (`--dashboard-host`, `--metrics-export-port`,
//!   `--dashboard-agent-listen-port`, `--num-cpus`, `--memory`, the workers' `--address`) are left
//!   out when `rayStartParams` sets the same key; the user's value wins.
//! - The environment variables `RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS=5` and
//!   `RAY_SERVE_KV_TIMEOUT_S=5` are appended unless the container already sets them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Pod, PodSpec, PodTemplateSpec, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rayservice_api::resources::{RayResources, ResourceError};
use rayservice_api::{HeadInfo, RayCluster, RayClusterSpec, RayClusterStatus, WorkerGroupSpec};
use rayservice_core::status::{NodeCounts, raycluster_status};
use rayservice_ray::start::{Platform, StartFlags};

pub use rayservice_api::labels::{
    HEAD_GROUP, LABEL_CLUSTER, LABEL_GROUP, LABEL_IDENTIFIER, LABEL_IS_RAY_NODE, LABEL_NODE_TYPE,
    LABEL_ORIGIN_CRD, LABEL_ORIGIN_NAME, LABEL_SERVE,
};
/// Ports of a head node, by KubeRay's names.
pub const HEAD_PORTS: [(&str, i32); 6] = [
    ("gcs-server", 6379),
    ("dashboard", 8265),
    ("client", 10001),
    ("serve", 8000),
    ("metrics", 8080),
    ("dashboard-agent", 52365),
];
/// Environment appended to every Ray container.
pub const RAY_ENV: [(&str, &str); 2] = [
    ("RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS", "5"),
    ("RAY_SERVE_KV_TIMEOUT_S", "5"),
];

/// Why the desired objects cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    /// The RayCluster has no name.
    #[error("the RayCluster has no metadata.name")]
    MissingName,
    /// The RayCluster has no uid (it was not read from the API server).
    #[error("RayCluster {0} has no metadata.uid")]
    MissingUid(String),
    /// The pod template has no container.
    #[error("the pod template of {0} has no container")]
    NoContainer(String),
    /// A resource quantity cannot be parsed.
    #[error("container {container}: invalid {what} quantity {value:?}: {message}")]
    Quantity {
        /// The container.
        container: String,
        /// `cpu`, `memory`, or a device.
        what: &'static str,
        /// The quantity as written.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The `rayStartParams` cannot be turned into a `ray start` command line.
    #[error("container {container}: {message}")]
    StartParams {
        /// The container.
        container: String,
        /// What is wrong.
        message: String,
    },
    /// The worker group does not exist in the spec.
    #[error("no worker group {0:?}")]
    NoSuchGroup(String),
}

impl From<ResourceError> for BuildError {
    fn from(err: ResourceError) -> BuildError {
        let (what, value) = match &err.source {
            rayservice_api::quantity::QuantityError::Invalid { what, value, .. }
            | rayservice_api::quantity::QuantityError::TooLarge { what, value } => {
                (*what, value.clone())
            }
        };
        BuildError::Quantity {
            container: err.container.clone(),
            what,
            value,
            message: err.source.to_string(),
        }
    }
}

pub use rayservice_api::NodeType;

/// Name of the head service: `CLUSTER-head-svc`.
pub fn head_service_name(cluster: &str) -> String {
    format!("{cluster}-head-svc")
}

/// The GCS address workers join: `CLUSTER-head-svc.NAMESPACE.svc.cluster.local:6379`.
pub fn head_address(cluster: &str, namespace: &str) -> String {
    format!(
        "{}.{namespace}.svc.cluster.local:6379",
        head_service_name(cluster)
    )
}

/// Name of the head pod: `CLUSTER-head-SUFFIX`.
pub fn head_pod_name(cluster: &str, suffix: &str) -> String {
    format!("{cluster}-head-{suffix}")
}

/// Name of a worker pod: `CLUSTER-worker-GROUP-SUFFIX`.
pub fn worker_pod_name(cluster: &str, group: &str, suffix: &str) -> String {
    format!("{cluster}-worker-{group}-{suffix}")
}

/// The namespace of a RayCluster (`default` when unset).
pub fn namespace_of(rc: &RayCluster) -> String {
    rc.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| rayservice_api::DEFAULT_NAMESPACE.to_string())
}

fn name_of(rc: &RayCluster) -> Result<String, BuildError> {
    rc.metadata.name.clone().ok_or(BuildError::MissingName)
}

/// The owner reference every object of the cluster carries (controller, blocking deletion).
pub fn owner_reference(rc: &RayCluster) -> Result<OwnerReference, BuildError> {
    let name = name_of(rc)?;
    let uid = rc
        .metadata
        .uid
        .clone()
        .ok_or_else(|| BuildError::MissingUid(name.clone()))?;
    Ok(OwnerReference {
        api_version: rayservice_api::API_VERSION_V1.to_string(),
        kind: "RayCluster".to_string(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Labels of a Ray pod: the node labels both platforms give ([`rayservice_api::labels`]) and
/// the `app.kubernetes.io` ones of a Kubernetes object.
pub fn node_labels(cluster: &str, node: NodeType, group: &str) -> BTreeMap<String, String> {
    let mut labels = rayservice_api::labels::node_labels(cluster, node, group);
    labels.extend([
        ("app.kubernetes.io/name".to_string(), "kuberay".to_string()),
        (
            "app.kubernetes.io/created-by".to_string(),
            "rayservice-operator".to_string(),
        ),
    ]);
    labels
}

/// The `ray start` arguments (after `ray`) of the Ray container, one element per argument,
/// by the rule both platforms share ([`rayservice_ray::start`]), with KubeRay's defaults.
pub fn ray_start_args(
    node: NodeType,
    cluster: &str,
    namespace: &str,
    params: &BTreeMap<String, String>,
    container: &Container,
) -> Result<Vec<String>, BuildError> {
    let resources = RayResources::of_container(container).map_err(BuildError::from)?;
    let flags = StartFlags::build(
        node,
        params,
        &resources,
        &kubernetes_platform(node, cluster, namespace),
    )
    .map_err(|e| BuildError::StartParams {
        container: container.name.clone(),
        message: e.to_string(),
    })?;
    Ok(flags.args())
}

/// What KubeRay adds to every node's `ray start`: the head's dashboard on every interface,
/// the workers' head address, the metrics and dashboard agent ports; `--block` always.
pub fn kubernetes_platform(node: NodeType, cluster: &str, namespace: &str) -> Platform {
    let mut defaults = Vec::new();
    match node {
        NodeType::Head => defaults.push(("dashboard-host".to_string(), "0.0.0.0".to_string())),
        NodeType::Worker => {
            defaults.push(("address".to_string(), head_address(cluster, namespace)))
        }
    }
    defaults.push(("metrics-export-port".to_string(), "8080".to_string()));
    defaults.push((
        "dashboard-agent-listen-port".to_string(),
        "52365".to_string(),
    ));
    Platform {
        defaults,
        owned: vec![("block".to_string(), "true".to_string())],
        owned_keys: Vec::new(),
    }
}

fn ray_container(
    node: NodeType,
    cluster: &str,
    namespace: &str,
    params: &BTreeMap<String, String>,
    container: &Container,
) -> Result<Container, BuildError> {
    let mut c = container.clone();
    if c.command.is_none() && c.args.is_none() {
        c.command = Some(vec!["ray".to_string()]);
        c.args = Some(ray_start_args(node, cluster, namespace, params, container)?);
    }
    let env = c.env.get_or_insert_with(Vec::new);
    for (name, value) in RAY_ENV {
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                value_from: None,
            });
        }
    }
    if node == NodeType::Head {
        let ports = c.ports.get_or_insert_with(Vec::new);
        for (name, port) in HEAD_PORTS {
            let named = ports
                .iter()
                .any(|p| p.name.as_deref() == Some(name) || p.container_port == port);
            if !named {
                ports.push(ContainerPort {
                    name: Some(name.to_string()),
                    container_port: port,
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                });
            }
        }
    }
    Ok(c)
}

fn build_pod(
    rc: &RayCluster,
    node: NodeType,
    group: &str,
    pod_name: String,
    params: &BTreeMap<String, String>,
    template: &PodTemplateSpec,
) -> Result<Pod, BuildError> {
    let cluster = name_of(rc)?;
    let namespace = namespace_of(rc);
    let owner = owner_reference(rc)?;
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    // A RayService's clusters carry where they came from; their pods do too (as in KubeRay),
    // so the RayService controller hears of its pods.
    for key in [LABEL_ORIGIN_NAME, LABEL_ORIGIN_CRD] {
        if let Some(value) = rc.metadata.labels.as_ref().and_then(|l| l.get(key)) {
            labels.insert(key.to_string(), value.clone());
        }
    }
    labels.extend(node_labels(&cluster, node, group));
    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    let first = spec
        .containers
        .first()
        .ok_or_else(|| BuildError::NoContainer(pod_name.clone()))?;
    let ray = ray_container(node, &cluster, &namespace, params, first)?;
    spec.containers[0] = ray;
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: tmeta.annotations.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The head pod `CLUSTER-head-SUFFIX`.
pub fn head_pod(rc: &RayCluster, suffix: &str) -> Result<Pod, BuildError> {
    let cluster = name_of(rc)?;
    let head = &rc.spec.head_group_spec;
    build_pod(
        rc,
        NodeType::Head,
        HEAD_GROUP,
        head_pod_name(&cluster, suffix),
        &head.ray_start_params,
        &head.template,
    )
}

/// A worker pod `CLUSTER-worker-GROUP-SUFFIX` of the named group.
pub fn worker_pod(rc: &RayCluster, group: &str, suffix: &str) -> Result<Pod, BuildError> {
    let cluster = name_of(rc)?;
    let spec: &WorkerGroupSpec = rc
        .spec
        .worker_group_specs
        .iter()
        .find(|g| g.group_name == group)
        .ok_or_else(|| BuildError::NoSuchGroup(group.to_string()))?;
    build_pod(
        rc,
        NodeType::Worker,
        group,
        worker_pod_name(&cluster, group, suffix),
        &spec.ray_start_params,
        &spec.template,
    )
}

/// The head service `CLUSTER-head-svc`, selecting the head pod.
pub fn head_service(rc: &RayCluster) -> Result<Service, BuildError> {
    let cluster = name_of(rc)?;
    let owner = owner_reference(rc)?;
    let selector = BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.clone()),
        (
            LABEL_NODE_TYPE.to_string(),
            NodeType::Head.as_str().to_string(),
        ),
    ]);
    let labels = BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.clone()),
        (
            LABEL_NODE_TYPE.to_string(),
            NodeType::Head.as_str().to_string(),
        ),
        (LABEL_IDENTIFIER.to_string(), format!("{cluster}-head")),
    ]);
    let ports = HEAD_PORTS
        .iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.to_string()),
            port: *port,
            target_port: Some(IntOrString::Int(*port)),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        })
        .collect();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(head_service_name(&cluster)),
            namespace: Some(namespace_of(rc)),
            labels: Some(labels),
            annotations: rc.spec.head_service_annotations.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(
                rc.spec
                    .head_group_spec
                    .service_type
                    .clone()
                    .unwrap_or_else(|| "ClusterIP".to_string()),
            ),
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    })
}

/// The `status.endpoints` of a cluster: each named port of the head service, `name -> port`
/// (as KubeRay records them for a ClusterIP service).
pub fn service_endpoints(svc: &Service) -> BTreeMap<String, String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| Some((p.name.clone()?, p.port.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A pod's label value.
pub fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// What the controller must do to the worker pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerDiff {
    /// Worker pods to create: `(group, count)`, in the spec's group order.
    pub to_create: Vec<(String, usize)>,
    /// Names of worker pods to delete.
    pub to_delete: Vec<String>,
}

/// Compares the worker pods with the spec. Per group the wanted count is
/// [`WorkerGroupSpec::desired_replicas`] (0 for a suspended cluster). Pods named in
/// `scaleStrategy.workersToDelete` go first, then excess pods newest-first (by creation time,
/// then name); missing ones are created. Pods of a group that is no longer in the spec are
/// deleted. Pods already terminating are ignored (neither counted nor deleted again).
pub fn worker_diff(spec: &RayClusterSpec, existing_worker_pods: &[Pod]) -> WorkerDiff {
    let suspended = spec.suspend == Some(true);
    let mut by_group: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in existing_worker_pods {
        if is_terminating(pod) || label(pod, LABEL_NODE_TYPE) == Some("head") {
            continue;
        }
        by_group
            .entry(label(pod, LABEL_GROUP).unwrap_or(""))
            .or_default()
            .push(pod);
    }
    let mut diff = WorkerDiff::default();
    let known: BTreeSet<&str> = spec
        .worker_group_specs
        .iter()
        .map(|g| g.group_name.as_str())
        .collect();
    for group in &spec.worker_group_specs {
        let desired = if suspended {
            0
        } else {
            usize::try_from(group.desired_replicas()).unwrap_or(0)
        };
        let mut pods: Vec<&Pod> = by_group
            .get(group.group_name.as_str())
            .cloned()
            .unwrap_or_default();
        let doomed: BTreeSet<&str> = group
            .scale_strategy
            .as_ref()
            .map(|s| s.workers_to_delete.iter().map(String::as_str).collect())
            .unwrap_or_default();
        pods.retain(|p| {
            let name = p.metadata.name.as_deref().unwrap_or("");
            if doomed.contains(name) {
                diff.to_delete.push(name.to_string());
                false
            } else {
                true
            }
        });
        if pods.len() > desired {
            // Newest first: sort descending by (creation time, name).
            pods.sort_by(|a, b| {
                let key = |p: &Pod| {
                    (
                        p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                        p.metadata.name.clone(),
                    )
                };
                key(b).cmp(&key(a))
            });
            let excess = pods.len() - desired;
            diff.to_delete.extend(
                pods.iter()
                    .take(excess)
                    .filter_map(|p| p.metadata.name.clone()),
            );
        } else if pods.len() < desired {
            diff.to_create
                .push((group.group_name.clone(), desired - pods.len()));
        }
    }
    for (group, pods) in &by_group {
        if !known.contains(group) {
            diff.to_delete
                .extend(pods.iter().filter_map(|p| p.metadata.name.clone()));
        }
    }
    diff
}

/// Whether the pod's phase is `Running`.
pub fn pod_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Whether the pod is running and its `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_running(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of the cluster as seen from its pods (head and workers), by the core's rule
/// ([`rayservice_core::status::raycluster_status`]). `head.serviceIP`, `observedGeneration`
/// and `lastUpdateTime` are left to the caller.
pub fn cluster_status(spec: &RayClusterSpec, pods: &[Pod]) -> RayClusterStatus {
    let live: Vec<&Pod> = pods.iter().filter(|p| !is_terminating(p)).collect();
    let workers: Vec<&&Pod> = live
        .iter()
        .filter(|p| label(p, LABEL_NODE_TYPE) == Some(NodeType::Worker.as_str()))
        .collect();
    let head = live
        .iter()
        .find(|p| label(p, LABEL_NODE_TYPE) == Some(NodeType::Head.as_str()));
    let counts = NodeCounts {
        head_ready: head.is_some_and(|p| pod_ready(p)),
        workers_running: workers.iter().filter(|p| pod_running(p)).count() as i32,
        workers_ready: workers.iter().filter(|p| pod_ready(p)).count() as i32,
        failure: None,
    };
    let mut status = raycluster_status(spec, &counts);
    status.head = head.map(|p| HeadInfo {
        pod_ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
        service_ip: None,
        pod_name: p.metadata.name.clone(),
        service_name: None,
    });
    status
}

#[cfg(test)]
mod tests;
