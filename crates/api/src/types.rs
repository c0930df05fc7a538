//! The RayService and RayCluster custom resources, shaped as KubeRay's `ray.io/v1`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, EnvVarSource, PodTemplateSpec, ResourceRequirements, SecurityContext,
    Service, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IngressTLS, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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
    #[schemars(extend("minimum" = 0))]
    pub ray_cluster_deletion_delay_seconds: Option<i32>,
    /// How cluster changes are rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// A custom Serve service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_service: Option<Service>,
    /// Keep the head node out of the Serve service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_head_pod_from_serve_svc: Option<bool>,
    /// Stop the cluster while keeping the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Which controller manages this RayService: absent or [`MANAGED_BY_KUBERAY`] is us;
    /// KubeRay also allows [`MANAGED_BY_MULTIKUEUE`]. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = crate::crd::managed_by_rules()))]
    pub managed_by: Option<String>,
}

/// How a cluster change is rolled out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// `NewCluster` (default), `None`, or `NewClusterWithIncrementalUpgrade`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<UpgradeType>,
    /// Options of the `NewClusterWithIncrementalUpgrade` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_upgrade_options: Option<ClusterUpgradeOptions>,
}

/// How an incremental upgrade moves traffic (KubeRay's `ClusterUpgradeOptions`; KubeRay
/// requires `stepSizePercent`, `intervalSeconds` and `gatewayClassName`, we check them).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpgradeOptions {
    /// Capacity, in percent of serve requests, the new cluster scales to each interval (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 100))]
    pub max_surge_percent: Option<i32>,
    /// Percent of traffic moved to the new cluster each interval (at most `maxSurgePercent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size_percent: Option<i32>,
    /// Seconds between two traffic steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i32>,
    /// The Gateway API class installed by the cluster admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_class_name: Option<String>,
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
    /// Options of Ray's autoscaler container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_options: Option<AutoscalerOptions>,
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
    /// Which controller manages this cluster: absent or [`MANAGED_BY_KUBERAY`] is us; KubeRay
    /// also allows [`MANAGED_BY_MULTIKUEUE`]. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = crate::crd::managed_by_rules()))]
    pub managed_by: Option<String>,
    /// How the cluster's pods are replaced when its spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<RayClusterUpgradeStrategy>,
    /// Authentication of Ray's APIs (Ray >= 2.52 token authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_options: Option<AuthOptions>,
    /// The history server's collector sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_server_options: Option<HistoryServerOptions>,
    /// Network isolation of the cluster's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicyConfig>,
    /// mTLS between the cluster's pods (cert-manager on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<TlsOptions>,
}

/// Which controller KubeRay's `managedBy` names: the KubeRay operator (and us).
pub const MANAGED_BY_KUBERAY: &str = "ray.io/kuberay-operator";
/// Which controller KubeRay's `managedBy` names: Kueue's MultiKueue.
pub const MANAGED_BY_MULTIKUEUE: &str = "kueue.x-k8s.io/multikueue";

/// How a RayCluster's pods are replaced when its spec changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RayClusterUpgradeStrategy {
    /// `Recreate` or `None`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<RayClusterUpgradeType>,
}

/// The RayCluster upgrade strategies KubeRay knows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RayClusterUpgradeType {
    /// Delete every pod, then create the new ones.
    Recreate,
    /// Create no new pod.
    None,
}

/// Authentication of a Ray cluster's APIs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthOptions {
    /// Delegate token checks to the Kubernetes API server (`RAY_ENABLE_K8S_TOKEN_AUTH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_k8s_token_auth: Option<bool>,
    /// A Secret with key `auth_token` holding the token; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `disabled` or `token` (KubeRay's default when `authOptions` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
}

/// Authentication modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication.
    Disabled,
    /// Token authentication.
    Token,
}

/// Options of Ray's autoscaler container (KubeRay's `AutoscalerOptions`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerOptions {
    /// Resources of the autoscaler container (KubeRay: 500m CPU, 512Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Image of the autoscaler container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull policy of that image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Security context of the autoscaler container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Seconds before an idle worker is removed (Ray's default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i32>,
    /// `Default`, `Aggressive` or `Conservative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscaling_mode: Option<UpscalingMode>,
    /// Autoscaler `v1` or `v2` (Ray >= 2.47 defaults to v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<AutoscalerVersion>,
    /// Environment of the autoscaler container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment sources of the autoscaler container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Volume mounts of the autoscaler container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Command of the autoscaler container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the autoscaler container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// How fast the autoscaler adds workers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpscalingMode {
    /// No rate limit.
    Default,
    /// Same as Default.
    Aggressive,
    /// At most as many pending workers as the cluster has nodes.
    Conservative,
}

/// Versions of Ray's autoscaler.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalerVersion {
    /// Autoscaler v1.
    V1,
    /// Autoscaler v2.
    V2,
}

/// The history server's options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryServerOptions {
    /// The collector sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_options: Option<CollectorOptions>,
}

/// The history server's collector sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorOptions {
    /// Its image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull policy of that image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Its resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Its environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Network isolation of a cluster's pods (intra-cluster traffic is always allowed).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyConfig {
    /// `DenyAll` (default), `DenyAllIngress` or `DenyAllEgress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "DenyAll"))]
    pub mode: Option<NetworkPolicyMode>,
    /// Rules added to the head pod's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<NetworkPolicyRules>,
    /// Rules added to every worker's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<NetworkPolicyRules>,
    /// Per worker group rules, replacing `worker` for that group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["groupName"]))]
    pub worker_groups: Vec<WorkerGroupNetworkPolicyRules>,
}

/// Network isolation modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NetworkPolicyMode {
    /// Deny ingress and egress.
    DenyAll,
    /// Deny ingress.
    DenyAllIngress,
    /// Deny egress.
    DenyAllEgress,
}

/// Custom ingress and egress rules of a NetworkPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyRules {
    /// Ingress rules added to the base policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_rules: Vec<NetworkPolicyIngressRule>,
    /// Egress rules added to the base policy (DNS is not added for you).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<NetworkPolicyEgressRule>,
}

/// [`NetworkPolicyRules`] of one worker group (KubeRay inlines the rules beside `groupName`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerGroupNetworkPolicyRules {
    /// The worker group's `groupName`.
    pub group_name: String,
    /// Ingress rules added to the base policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_rules: Vec<NetworkPolicyIngressRule>,
    /// Egress rules added to the base policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<NetworkPolicyEgressRule>,
}

/// mTLS between a cluster's pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsOptions {
    /// Turn mTLS on (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
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
    /// `redis` (KubeRay's default) or `rocksdb` (embedded, on a volume of the head). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "gcsFaultToleranceOptions.backend is immutable"}]))]
    pub backend: Option<GcsFaultToleranceBackend>,
    /// The volume of the `rocksdb` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<GcsEmbeddedStorage>,
}

/// Where GCS fault tolerance keeps its data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GcsFaultToleranceBackend {
    /// An external Redis.
    Redis,
    /// An embedded RocksDB on a persistent volume.
    Rocksdb,
}

/// The persistent volume of the embedded RocksDB store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsEmbeddedStorage {
    /// An existing claim to use as is (excludes the other fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Size of the claim the operator creates (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of that claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes of that claim (default `[ReadWriteOnce]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Mount this subdirectory of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// `DeleteWithCluster` (default) or `Retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<GcsStorageDeletionPolicy>,
}

/// What happens to the operator's GCS claim when the cluster goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GcsStorageDeletionPolicy {
    /// Deleted with the cluster.
    DeleteWithCluster,
    /// Kept.
    Retain,
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
    pub head_service: Option<Service>,
    /// Create an ingress for the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ingress: Option<bool>,
    /// Host, path and TLS of that ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_options: Option<IngressOptions>,
    /// Ray resources of the head (override `rayStartParams`' `resources`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, String>,
    /// Ray node labels of the head (override `rayStartParams`' `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The head's ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressOptions {
    /// Host routed to the dashboard (any host when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path routed to the dashboard (`/` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Exact`, `Prefix` (when absent) or `ImplementationSpecific`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<IngressPathType>,
    /// TLS termination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTLS>,
}

/// How an ingress path matches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IngressPathType {
    /// The exact path.
    Exact,
    /// The path and everything under it.
    Prefix,
    /// As the ingress controller decides.
    ImplementationSpecific,
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
    #[schemars(extend("default" = 0))]
    pub replicas: Option<i32>,
    /// Fewest workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub min_replicas: Option<i32>,
    /// Most workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 2147483647))]
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
    #[schemars(extend("default" = 1))]
    pub num_of_hosts: Option<i32>,
    /// Preference of the autoscaler (v2, Ray >= 2.56) for this group; higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub priority: Option<i32>,
    /// Ray resources of the group's workers (override `rayStartParams`' `resources`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, String>,
    /// Ray node labels of the group's workers (override `rayStartParams`' `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
    /// Fewest workers: the sum of `minReplicas * numOfHosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_worker_replicas: Option<i32>,
    /// Most workers: the sum of `maxReplicas * numOfHosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_worker_replicas: Option<i32>,
    /// CPUs the whole cluster asks for.
    #[serde(
        default,
        rename = "desiredCPU",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Quantity>")]
    pub desired_cpu: Option<String>,
    /// Memory the whole cluster asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Quantity>")]
    pub desired_memory: Option<String>,
    /// GPUs the whole cluster asks for.
    #[serde(
        default,
        rename = "desiredGPU",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Quantity>")]
    pub desired_gpu: Option<String>,
    /// TPUs the whole cluster asks for.
    #[serde(
        default,
        rename = "desiredTPU",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<Quantity>")]
    pub desired_tpu: Option<String>,
    /// When the cluster last entered each state (`ready`, `suspended`, ...), RFC 3339.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state_transition_times: BTreeMap<String, String>,
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
    /// Name of the head service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
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
    /// Serve's `target_capacity` percent on this cluster (incremental upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_capacity: Option<i32>,
    /// Percent of traffic routed to this cluster (incremental upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routed_percent: Option<i32>,
    /// When `trafficRoutedPercent` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_traffic_migrated_time: Option<String>,
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

/// Annotations KubeRay reads on RayServices and RayClusters.
pub mod annotations {
    /// On a RayService: how long (a Go duration such as `30m`, or integer seconds) it may stay
    /// initializing before it fails for good with reason [`super::conditions::INITIALIZING_TIMEOUT`].
    pub const INITIALIZING_TIMEOUT: &str = "ray.io/initializing-timeout";
    /// On a RayCluster: `true` turns GCS fault tolerance on (older form of
    /// `gcsFaultToleranceOptions`).
    pub const FT_ENABLED: &str = "ray.io/ft-enabled";
    /// On a RayCluster: Redis namespace of GCS fault tolerance (older form).
    pub const EXTERNAL_STORAGE_NAMESPACE: &str = "ray.io/external-storage-namespace";
    /// On a RayCluster: seconds before the Redis cleanup finalizer is given up.
    pub const GCS_FT_DELETION_TIMEOUT: &str = "ray.io/gcs-ft-deletion-timeout";
    /// On a RayCluster: KubeRay's hash of the spec without the autoscaler-owned fields.
    pub const HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE: &str =
        "ray.io/hash-without-replicas-and-workers-to-delete";
    /// On a RayCluster: the operator version that created it.
    pub const KUBERAY_VERSION: &str = "ray.io/kuberay-version";
    /// On a RayCluster: `true` keeps the containers' command; the `ray start` command is only
    /// put in `KUBERAY_GEN_RAY_START_CMD`.
    pub const OVERWRITE_CONTAINER_CMD: &str = "ray.io/overwrite-container-cmd";
    /// On a RayCluster: `true` when it serves directly (KubeRay then makes its serve service).
    pub const ENABLE_SERVE_SERVICE: &str = "ray.io/enable-serve-service";
    /// On a RayCluster: `true` keeps a provisioned head pod from being restarted.
    pub const DISABLE_PROVISIONED_HEAD_RESTART: &str = "ray.io/disable-provisioned-head-restart";
}

/// Condition types and reasons of KubeRay v1.7's RayService and RayCluster status.
pub mod conditions {
    /// RayService: requests can be served (at least one serve endpoint).
    pub const READY: &str = "Ready";
    /// RayService: a zero-downtime upgrade is under way.
    pub const UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";
    /// RayService: an in-progress upgrade is being rolled back.
    pub const ROLLBACK_IN_PROGRESS: &str = "RollbackInProgress";
    /// RayService: its resources are being removed for `suspend` (completes atomically).
    pub const SUSPENDING: &str = "Suspending";
    /// RayService: every resource it owns is gone; it is suspended.
    pub const SUSPENDED: &str = "Suspended";

    /// RayService reason: still initializing.
    pub const INITIALIZING: &str = "Initializing";
    /// RayService reason: initializing took longer than `ray.io/initializing-timeout` (terminal).
    pub const INITIALIZING_TIMEOUT: &str = "InitializingTimeout";
    /// RayService reason: no serve endpoint.
    pub const ZERO_SERVE_ENDPOINTS: &str = "ZeroServeEndpoints";
    /// RayService reason: at least one serve endpoint.
    pub const NON_ZERO_SERVE_ENDPOINTS: &str = "NonZeroServeEndpoints";
    /// RayService reason: an active and a pending cluster both exist.
    pub const BOTH_ACTIVE_PENDING_CLUSTERS_EXIST: &str = "BothActivePendingClustersExist";
    /// RayService reason: no pending cluster.
    pub const NO_PENDING_CLUSTER: &str = "NoPendingCluster";
    /// RayService reason: no active cluster.
    pub const NO_ACTIVE_CLUSTER: &str = "NoActiveCluster";
    /// RayService reason: the spec is invalid.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// RayService reason: the desired cluster spec changed.
    pub const DESIRED_CLUSTER_SPEC_CHANGED: &str = "DesiredClusterSpecChanged";
    /// RayService reason: `suspend` was set.
    pub const SUSPEND_REQUESTED: &str = "SuspendRequested";
    /// RayService reason: resources are being removed.
    pub const SUSPEND_IN_PROGRESS: &str = "SuspendInProgress";
    /// RayService reason: every resource is gone.
    pub const SUSPEND_COMPLETE: &str = "SuspendComplete";
    /// RayService reason: `suspend` was cleared.
    pub const RAYSERVICE_RESUMED: &str = "RayServiceResumed";

    /// RayCluster: every Ray pod was ready once (never changes afterwards).
    pub const RAYCLUSTER_PROVISIONED: &str = "RayClusterProvisioned";
    /// RayCluster: the head pod is ready for requests.
    pub const HEAD_POD_READY: &str = "HeadPodReady";
    /// RayCluster: a pod could not be created or deleted.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// RayCluster: `suspend` is being carried out (atomically).
    pub const RAYCLUSTER_SUSPENDING: &str = "RayClusterSuspending";
    /// RayCluster: every pod is gone.
    pub const RAYCLUSTER_SUSPENDED: &str = "RayClusterSuspended";

    /// RayCluster reason: every pod ran and was ready for the first time.
    pub const ALL_POD_RUNNING_AND_READY_FIRST_TIME: &str = "AllPodRunningAndReadyFirstTime";
    /// RayCluster reason: pods are being provisioned.
    pub const RAYCLUSTER_PODS_PROVISIONING: &str = "RayClusterPodsProvisioning";
    /// RayCluster reason: no head pod.
    pub const HEAD_POD_NOT_FOUND: &str = "HeadPodNotFound";
    /// RayCluster reason: the head pod runs and is ready.
    pub const HEAD_POD_RUNNING_AND_READY: &str = "HeadPodRunningAndReady";
    /// RayCluster reason: unknown.
    pub const UNKNOWN: &str = "Unknown";
}

/// RayCluster `status.state` values.
pub mod cluster_state {
    /// Every pod is running and ready.
    pub const READY: &str = "ready";
    /// Deprecated by KubeRay, still a legal value.
    pub const FAILED: &str = "failed";
    /// Every pod is gone because of `suspend`.
    pub const SUSPENDED: &str = "suspended";
}
