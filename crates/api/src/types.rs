//! The RayService and RayCluster custom resources, shaped as KubeRay's `ray.io/v1`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVarSource, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Group of every resource in this crate.
pub const GROUP: &str = "ray.io";
/// The stored API version.
pub const API_VERSION_V1: &str = "ray.io/v1";
/// The older API version, still accepted on input.
pub const API_VERSION_V1ALPHA1: &str = "ray.io/v1alpha1";

/// Desired state of a RayService: one Ray cluster and the Serve applications on it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayService",
    namespaced,
    status = "RayServiceStatus",
    shortname = "rayservice",
    printcolumn = r#"{"name":"Service Status","type":"string","jsonPath":".status.serviceStatus"}"#,
    printcolumn = r#"{"name":"Num Serve Endpoints","type":"integer","jsonPath":".status.numServeEndpoints"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceSpec {
    /// Ray Serve's multi-application config, as a YAML document in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_config_v2: Option<String>,
    /// The old single-application form (v1alpha1 only); refused by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub serve_config: Option<serde_json::Value>,
    /// The Ray cluster that runs the applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_config: Option<RayClusterSpec>,
    /// Seconds an application may stay DEPLOY_FAILED or UNHEALTHY before the cluster is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_unhealthy_second_threshold: Option<i32>,
    /// Seconds the dashboard may stay unreachable before the cluster is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_unhealthy_second_threshold: Option<i32>,
    /// Seconds an old cluster lives after traffic left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_deletion_delay_seconds: Option<i32>,
    /// How cluster changes are rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// A custom Serve service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub serve_service: Option<Service>,
    /// Keep the head node out of the Serve service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_head_pod_from_serve_svc: Option<bool>,
    /// Stop the cluster while keeping the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// How a cluster change is rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// `NewCluster` (default), `None`, or `NewClusterWithIncrementalUpgrade`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<UpgradeType>,
    /// Options of the incremental upgrade; passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub cluster_upgrade_options: Option<serde_json::Value>,
}

/// The upgrade strategies KubeRay knows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeType {
    /// Start a new cluster, move traffic when it is ready, remove the old one.
    NewCluster,
    /// Record cluster changes, never roll them out.
    None,
    /// Incremental traffic shift (treated as NewCluster locally).
    NewClusterWithIncrementalUpgrade,
}

/// A Ray cluster: a head group and worker groups.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ray.io",
    version = "v1",
    kind = "RayCluster",
    namespaced,
    status = "RayClusterStatus",
    printcolumn = r#"{"name":"Desired Workers","type":"integer","jsonPath":".status.desiredWorkerReplicas"}"#,
    printcolumn = r#"{"name":"Available Workers","type":"integer","jsonPath":".status.availableWorkerReplicas"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterSpec {
    /// The Ray version the images carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_version: Option<String>,
    /// Run Ray's autoscaler beside the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_in_tree_autoscaling: Option<bool>,
    /// Autoscaler options; passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub autoscaler_options: Option<serde_json::Value>,
    /// Annotations of the head service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_service_annotations: Option<BTreeMap<String, String>>,
    /// GCS fault tolerance through an external Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs_fault_tolerance_options: Option<GcsFaultToleranceOptions>,
    /// The head node.
    #[serde(default)]
    pub head_group_spec: HeadGroupSpec,
    /// The worker groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_group_specs: Vec<WorkerGroupSpec>,
    /// Stop every node while keeping the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Which controller manages this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// GCS fault tolerance settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsFaultToleranceOptions {
    /// `host:port` of Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_address: Option<String>,
    /// Redis user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<RedisCredential>,
    /// Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<RedisCredential>,
    /// Namespace of this cluster's data in Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_storage_namespace: Option<String>,
}

/// A value given inline or from a secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCredential {
    /// The value itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Which kind of Ray node: the head (GCS, dashboard, Serve controller) or a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// The head node.
    Head,
    /// A worker node.
    Worker,
}

impl NodeType {
    /// The `ray.io/node-type` label value: `head` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Head => "head",
            NodeType::Worker => "worker",
        }
    }
}

/// The head node group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadGroupSpec {
    /// Extra `ray start` parameters, `key: value`; `"true"` becomes a bare flag.
    #[serde(default)]
    pub ray_start_params: BTreeMap<String, String>,
    /// The pod template.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// Kubernetes service type of the head service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// A custom head service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub head_service: Option<Service>,
    /// Create an ingress for the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ingress: Option<bool>,
}

/// A group of identical worker nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupSpec {
    /// Name of the group; part of every worker's name.
    #[serde(default)]
    pub group_name: String,
    /// Desired number of workers (owned by the autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Fewest workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// Most workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// Seconds before an idle worker is removed by the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i32>,
    /// Extra `ray start` parameters.
    #[serde(default)]
    pub ray_start_params: BTreeMap<String, String>,
    /// The pod template.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// Workers to remove (owned by the autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_strategy: Option<ScaleStrategy>,
    /// Stop this group's workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Hosts per replica (multi-host workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_of_hosts: Option<i32>,
}

impl WorkerGroupSpec {
    /// The number of workers this group should run: `replicas`, clamped to `[minReplicas, maxReplicas]`.
    pub fn desired_replicas(&self) -> i32 {
        if self.suspend == Some(true) {
            return 0;
        }
        let mut wanted = self.replicas.or(self.min_replicas).unwrap_or(0).max(0);
        if let Some(min) = self.min_replicas {
            wanted = wanted.max(min);
        }
        if let Some(max) = self.max_replicas {
            wanted = wanted.min(max.max(0));
        }
        wanted * self.num_of_hosts.unwrap_or(1).max(1)
    }
}

/// Which workers the autoscaler asked to remove.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStrategy {
    /// Names of the worker pods to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers_to_delete: Vec<String>,
}

/// Observed state of a RayCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterStatus {
    /// `ready`, `suspended`, or empty while starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Workers wanted.
    #[serde(default)]
    pub desired_worker_replicas: i32,
    /// Workers running.
    #[serde(default)]
    pub available_worker_replicas: i32,
    /// Workers ready.
    #[serde(default)]
    pub ready_worker_replicas: i32,
    /// CPUs the whole cluster asks for.
    #[serde(
        default,
        rename = "desiredCPU",
        skip_serializing_if = "Option::is_none"
    )]
    pub desired_cpu: Option<String>,
    /// Memory the whole cluster asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_memory: Option<String>,
    /// Head node addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadInfo>,
    /// Named ports of the head service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// Why the cluster is in its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Conditions such as `HeadPodReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last time the status changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where the head node can be reached.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadInfo {
    /// IP of the head pod (127.0.0.1 locally).
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// IP of the head service.
    #[serde(default, rename = "serviceIP", skip_serializing_if = "Option::is_none")]
    pub service_ip: Option<String>,
    /// Name of the head pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

/// Observed state of a RayService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayServiceStatus {
    /// The cluster that serves traffic.
    #[serde(default)]
    pub active_service_status: ServiceClusterStatus,
    /// The cluster being prepared to take over, if any.
    #[serde(default)]
    pub pending_service_status: ServiceClusterStatus,
    /// `Ready` and `UpgradeInProgress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Legacy summary: `Running` when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_status: Option<String>,
    /// Number of nodes whose Serve proxy answers.
    #[serde(default)]
    pub num_serve_endpoints: i32,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Last time the status changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
}

/// What one cluster of a RayService runs, and how it is doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceClusterStatus {
    /// Name of the RayCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_name: Option<String>,
    /// Status of that RayCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_cluster_status: Option<RayClusterStatus>,
    /// Per application.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub application_statuses: BTreeMap<String, AppStatus>,
}

/// Status of one Serve application.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// NOT_STARTED, DEPLOYING, DEPLOY_FAILED, RUNNING, UNHEALTHY, DELETING.
    #[serde(default)]
    pub status: String,
    /// Ray's message (why it failed, what it waits for).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// When the status was last confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_last_update_time: Option<String>,
    /// Per deployment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub serve_deployment_statuses: BTreeMap<String, DeploymentStatus>,
}

/// Status of one Serve deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// UPDATING, HEALTHY, UNHEALTHY, DEPLOY_FAILED, UPSCALING, DOWNSCALING.
    #[serde(default)]
    pub status: String,
    /// Ray's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// When the status was last confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_last_update_time: Option<String>,
}
