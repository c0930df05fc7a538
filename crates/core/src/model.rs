//! What the core is told (desired and observed state) and what it answers (actions, status).

use k8s_openapi::jiff::Timestamp;
use rayservice_api::{RayClusterSpec, RayServiceSpec, RayServiceStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The RayService as the user wants it.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.generation`: bumped on every spec change.
    pub generation: i64,
    /// The spec.
    pub spec: &'a RayServiceSpec,
}

/// Everything the platform observed about one RayService, at `now`.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The clock.
    pub now: Timestamp,
    /// The status as last written (carries the active and pending cluster names and times).
    pub status: RayServiceStatus,
    /// Every cluster owned by this RayService.
    pub clusters: Vec<ObservedCluster>,
    /// A fresh random 5-character suffix, used if a new cluster must be named.
    pub fresh_suffix: String,
}

/// One cluster owned by a RayService, as observed.
#[derive(Debug, Clone)]
pub struct ObservedCluster {
    /// `S-raycluster-xxxxx`.
    pub name: String,
    /// The spec it was created from (with the worker counts it runs).
    pub spec: RayClusterSpec,
    /// [`crate::hash::cluster_hash`] of the RayService spec it was created from.
    pub spec_hash: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it is due for deletion, once traffic has left it.
    pub delete_at: Option<Timestamp>,
    /// Its nodes.
    pub nodes: NodesObservation,
    /// Its dashboard and Serve.
    pub serve: ServeObservation,
    /// Hash of the serve config it last accepted.
    pub submitted_config_hash: Option<String>,
    /// Hash and Ray's message of a serve config it refused (HTTP 400).
    pub rejected_config: Option<(String, String)>,
}

/// The Ray nodes of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodesObservation {
    /// The head process runs and its dashboard answered at least once.
    pub head_ready: bool,
    /// Worker nodes wanted.
    pub workers_desired: i32,
    /// Worker node processes running.
    pub workers_running: i32,
    /// A node failed to start; why.
    pub failure: Option<String>,
}

/// What the dashboard said.
#[derive(Debug, Clone, PartialEq)]
pub enum ServeObservation {
    /// Not asked yet (the head is not ready).
    Unknown,
    /// The dashboard did not answer; since when.
    Unreachable {
        /// First failed attempt of this streak.
        since: Timestamp,
        /// The error.
        error: String,
    },
    /// The dashboard answered.
    Reachable {
        /// Applications Ray knows, in its words.
        applications: Vec<ObservedApp>,
        /// Nodes whose Serve proxy answers `/-/healthz`.
        serve_endpoints: i32,
        /// Route prefixes the Serve proxy routes now (`/-/routes`); `None` when not asked.
        routes: Option<Vec<String>>,
    },
}

/// A Serve application as Ray reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedApp {
    /// Application name.
    pub name: String,
    /// NOT_STARTED, DEPLOYING, DEPLOY_FAILED, RUNNING, UNHEALTHY, DELETING.
    pub status: String,
    /// Ray's message.
    pub message: String,
    /// Deployments: name, status, message.
    pub deployments: Vec<(String, String, String)>,
}

/// Something the platform must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a new cluster from `spec`, recording `spec_hash` on it.
    CreateCluster {
        /// Its name.
        name: String,
        /// What to run.
        spec: Box<RayClusterSpec>,
        /// Hash to record.
        spec_hash: String,
    },
    /// Add worker groups appended to the spec to a running cluster.
    UpdateClusterInPlace {
        /// The cluster.
        name: String,
        /// The new spec (same as before plus appended groups).
        spec: Box<RayClusterSpec>,
        /// Hash to record.
        spec_hash: String,
    },
    /// PUT the serve config to the cluster's dashboard.
    SubmitServeConfig {
        /// The cluster.
        cluster: String,
        /// The `serveConfigV2` document as JSON.
        config: Value,
        /// Its hash.
        config_hash: String,
    },
    /// Point the Serve and dashboard endpoints at this cluster (`None`: at nothing).
    RouteTraffic {
        /// The cluster that serves from now on.
        cluster: Option<String>,
    },
    /// Mark a cluster for deletion at a time.
    ScheduleDeletion {
        /// The cluster.
        cluster: String,
        /// When.
        at: Timestamp,
    },
    /// Stop and remove a cluster now.
    DeleteCluster {
        /// The cluster.
        cluster: String,
    },
    /// Record an event.
    Event(Event),
}

/// An event, as `kubectl describe` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Normal or Warning.
    pub kind: EventKind,
    /// CamelCase reason.
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
}

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Expected progress.
    Normal,
    /// Something the user should look at.
    Warning,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        })
    }
}

/// The core's answer for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// The status to write.
    pub status: RayServiceStatus,
    /// Reconcile again after this long even if nothing happens (Ray has no push API).
    pub requeue_after: std::time::Duration,
}
