//! What the control API returns besides RayService and RayCluster objects: the local stand-ins
//! for pods (Ray node processes), services (front endpoints) and events.

use serde::{Deserialize, Serialize};

/// A Ray node process, shown like a pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// `CLUSTER-head-xxxxx` or `CLUSTER-worker-GROUP-xxxxx`.
    pub name: String,
    /// The RayCluster.
    pub cluster: String,
    /// The RayService owning the cluster.
    pub service: String,
    /// `head` or `worker`.
    pub node_type: String,
    /// Worker group (`headgroup` for the head).
    pub group: String,
    /// `Running`, `Starting`, `Restarting` or `Exited`.
    pub phase: String,
    /// Containers ready, `1/1` or `0/1`.
    pub ready: String,
    /// Restarts so far.
    pub restarts: i32,
    /// Process id.
    pub pid: Option<i32>,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Node output.
    pub log_path: String,
    /// Labels as KubeRay sets them (`ray.io/cluster`, `ray.io/node-type`, `ray.io/is-ray-node`, ...).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A local endpoint, shown like a Kubernetes service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// `S-serve-svc`, `S-head-svc`, or `CLUSTER-head-svc`.
    pub name: String,
    /// `ClusterIP` (a local address).
    pub service_type: String,
    /// Address it listens on.
    pub cluster_ip: String,
    /// `PORT/TCP` entries; for a front endpoint, the local port it listens on.
    pub ports: Vec<String>,
    /// The cluster traffic goes to, if any.
    pub target_cluster: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// An event, as `kubectl describe` lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub event_type: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How often.
    pub count: i64,
    /// First time, RFC 3339.
    pub first_timestamp: String,
    /// Last time, RFC 3339.
    pub last_timestamp: String,
    /// Who reported it.
    pub source: String,
}
