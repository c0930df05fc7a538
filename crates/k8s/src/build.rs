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
//! - Generated defaults (`--dashboard-host`, `--metrics-export-port`,
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
use rayservice_api::{HeadInfo, RayCluster, RayClusterSpec, RayClusterStatus, WorkerGroupSpec};
use rayservice_ray::node::{parse_cpu_millis, parse_cpu_quantity, parse_memory_quantity};

/// `ray.io/cluster`: the name of the RayCluster a pod or service belongs to.
pub const LABEL_CLUSTER: &str = "ray.io/cluster";
/// `ray.io/node-type`: `head` or `worker`.
pub const LABEL_NODE_TYPE: &str = "ray.io/node-type";
/// `ray.io/group`: the worker group (`headgroup` for the head).
pub const LABEL_GROUP: &str = "ray.io/group";
/// `ray.io/identifier`: `CLUSTER-head` or `CLUSTER-worker`.
pub const LABEL_IDENTIFIER: &str = "ray.io/identifier";
/// `ray.io/is-ray-node`: `yes` on every Ray pod.
pub const LABEL_IS_RAY_NODE: &str = "ray.io/is-ray-node";
/// `ray.io/originated-from-cr-name`: the RayService a RayCluster (and its pods) was made for.
pub const LABEL_ORIGIN_NAME: &str = "ray.io/originated-from-cr-name";
/// `ray.io/originated-from-crd`: `RayService` on a RayService's clusters and their pods.
pub const LABEL_ORIGIN_CRD: &str = "ray.io/originated-from-crd";
/// `ray.io/serve`: `true` on a pod whose Serve proxy answers `/-/healthz`.
pub const LABEL_SERVE: &str = "ray.io/serve";
/// The group label value of the head pod (as in KubeRay).
pub const HEAD_GROUP: &str = "headgroup";
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
    #[error("container {container}: invalid {what} limit {value:?}: {message}")]
    Quantity {
        /// The container.
        container: String,
        /// `cpu` or `memory`.
        what: &'static str,
        /// The quantity as written.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The worker group does not exist in the spec.
    #[error("no worker group {0:?}")]
    NoSuchGroup(String),
}

/// Which kind of Ray node a pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// The head node (GCS, dashboard, Serve controller).
    Head,
    /// A worker node.
    Worker,
}

impl NodeType {
    /// The `ray.io/node-type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Head => "head",
            NodeType::Worker => "worker",
        }
    }
}

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

/// The labels KubeRay puts on a Ray pod.
pub fn node_labels(cluster: &str, node: NodeType, group: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_NODE_TYPE.to_string(), node.as_str().to_string()),
        (LABEL_GROUP.to_string(), group.to_string()),
        (
            LABEL_IDENTIFIER.to_string(),
            format!("{cluster}-{}", node.as_str()),
        ),
        (LABEL_IS_RAY_NODE.to_string(), "yes".to_string()),
        ("app.kubernetes.io/name".to_string(), "kuberay".to_string()),
        (
            "app.kubernetes.io/created-by".to_string(),
            "rayservice-operator".to_string(),
        ),
    ])
}

/// The `ray start` arguments (after `ray`) of the Ray container, one element per argument.
pub fn ray_start_args(
    node: NodeType,
    cluster: &str,
    namespace: &str,
    params: &BTreeMap<String, String>,
    container: &Container,
) -> Result<Vec<String>, BuildError> {
    let container_name = container.name.clone();
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |what: &str| limits.and_then(|l| l.get(what)).map(|q| q.0.clone());
    let quantity_error =
        |what: &'static str, value: &str, e: &dyn std::fmt::Display| BuildError::Quantity {
            container: container_name.clone(),
            what,
            value: value.to_string(),
            message: e.to_string(),
        };

    let mut defaults: Vec<(&str, String)> = Vec::new();
    if node == NodeType::Worker {
        defaults.push(("address", head_address(cluster, namespace)));
    }
    if node == NodeType::Head {
        defaults.push(("dashboard-host", "0.0.0.0".to_string()));
    }
    defaults.push(("metrics-export-port", "8080".to_string()));
    defaults.push(("dashboard-agent-listen-port", "52365".to_string()));
    if let Some(cpu) = limit("cpu") {
        let n = parse_cpu_quantity(&cpu).map_err(|e| quantity_error("cpu", &cpu, &e))?;
        defaults.push(("num-cpus", n.to_string()));
    }
    if let Some(mem) = limit("memory") {
        let n = parse_memory_quantity(&mem).map_err(|e| quantity_error("memory", &mem, &e))?;
        defaults.push(("memory", n.to_string()));
    }

    let mut args = vec!["start".to_string()];
    if node == NodeType::Head {
        args.push("--head".to_string());
    }
    args.push("--block".to_string());
    for (key, value) in defaults {
        if !params.contains_key(key) {
            args.push(format!("--{key}={value}"));
        }
    }
    for (key, value) in params {
        match value.as_str() {
            "true" => args.push(format!("--{key}")),
            "false" => {}
            _ => args.push(format!("--{key}={value}")),
        }
    }
    Ok(args)
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

/// What one pod of a template asks for: each container's request (else its limit), summed;
/// `(milli-CPUs, bytes)`. A quantity that does not parse counts as zero (pod creation reports it).
fn template_resources(template: &PodTemplateSpec) -> (u64, u64) {
    let containers = template.spec.as_ref().map(|s| s.containers.as_slice());
    let mut cpu = 0;
    let mut memory = 0;
    for container in containers.unwrap_or_default() {
        let resources = container.resources.as_ref();
        let amount = |name: &str| {
            let requests = resources.and_then(|r| r.requests.as_ref());
            let limits = resources.and_then(|r| r.limits.as_ref());
            requests
                .and_then(|r| r.get(name))
                .or_else(|| limits.and_then(|l| l.get(name)))
                .map(|q| q.0.clone())
        };
        cpu += amount("cpu")
            .and_then(|q| parse_cpu_millis(&q).ok())
            .unwrap_or(0);
        memory += amount("memory")
            .and_then(|q| parse_memory_quantity(&q).ok())
            .unwrap_or(0);
    }
    (cpu, memory)
}

fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

fn memory_quantity(bytes: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// `desiredCPU` and `desiredMemory` of a cluster: what its head and its desired workers ask
/// for, as Kubernetes quantities (`"3"`, `"6Gi"`).
pub fn desired_resources(spec: &RayClusterSpec) -> (String, String) {
    let (mut cpu, mut memory) = if spec.suspend == Some(true) {
        (0, 0)
    } else {
        template_resources(&spec.head_group_spec.template)
    };
    if spec.suspend != Some(true) {
        for group in &spec.worker_group_specs {
            let (c, m) = template_resources(&group.template);
            let replicas = u64::try_from(group.desired_replicas()).unwrap_or(0);
            cpu += c * replicas;
            memory += m * replicas;
        }
    }
    (cpu_quantity(cpu), memory_quantity(memory))
}

/// The status of the cluster as seen from its pods (head and workers). `head.serviceIP`,
/// `observedGeneration` and `lastUpdateTime` are left to the caller.
/// `state` is `suspended` for a suspended cluster, `ready` when the head and at least the
/// desired number of workers are running and ready, and unset otherwise.
pub fn cluster_status(spec: &RayClusterSpec, pods: &[Pod]) -> RayClusterStatus {
    let live: Vec<&Pod> = pods.iter().filter(|p| !is_terminating(p)).collect();
    let desired: i32 = if spec.suspend == Some(true) {
        0
    } else {
        spec.worker_group_specs
            .iter()
            .map(WorkerGroupSpec::desired_replicas)
            .sum()
    };
    let workers: Vec<&&Pod> = live
        .iter()
        .filter(|p| label(p, LABEL_NODE_TYPE) == Some("worker"))
        .collect();
    let available = workers.iter().filter(|p| pod_running(p)).count() as i32;
    let ready = workers.iter().filter(|p| pod_ready(p)).count() as i32;
    let head = live
        .iter()
        .find(|p| label(p, LABEL_NODE_TYPE) == Some("head"));
    let head_ready = head.is_some_and(|p| pod_ready(p));
    let state = if spec.suspend == Some(true) {
        Some("suspended".to_string())
    } else if head_ready && ready >= desired {
        Some("ready".to_string())
    } else {
        None
    };
    let (desired_cpu, desired_memory) = desired_resources(spec);
    RayClusterStatus {
        state,
        desired_cpu: Some(desired_cpu),
        desired_memory: Some(desired_memory),
        desired_worker_replicas: desired,
        available_worker_replicas: available,
        ready_worker_replicas: ready,
        head: head.map(|p| HeadInfo {
            pod_ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            service_ip: None,
            pod_name: p.metadata.name.clone(),
            service_name: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
