//! What the core is told (desired and observed state) and what it answers (actions, status).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
pub use rayservice_api::serve_api::{ObservedApp, ObservedDeployment};
use rayservice_api::{RayClusterSpec, RayServiceSpec, RayServiceStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::ClusterMemory;

/// The RayService as the user wants it.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.generation`: bumped on every spec change.
    pub generation: i64,
    /// The spec.
    pub spec: &'a RayServiceSpec,
    /// `metadata.annotations` (`rayservice.dev/drain-timeout-seconds`, ...).
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Desired<'a> {
    /// The RayService `name` at `generation` with `spec`.
    pub fn new(name: &'a str, generation: i64, spec: &'a RayServiceSpec) -> Desired<'a> {
        Desired {
            name,
            generation,
            spec,
            annotations: None,
        }
    }

    /// The same, with the object's annotations.
    pub fn with_annotations(mut self, annotations: Option<&'a BTreeMap<String, String>>) -> Self {
        self.annotations = annotations;
        self
    }

    /// The value of annotation `key`, if set.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations?.get(key).map(String::as_str)
    }
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
    /// The platform wakes the controller when a head comes up (Kubernetes watches pods); with
    /// no head to ask, it need not look again soon. Local mode polls.
    pub watch_driven: bool,
    /// How the platform can split one service's requests between two clusters by weight:
    /// whether `NewClusterWithIncrementalUpgrade` is carried out, and what it requires.
    pub traffic_split: TrafficSplit,
}

/// How a platform splits one service's requests between two clusters by weight.
#[derive(Debug, Clone, PartialEq)]
pub enum TrafficSplit {
    /// Not at all: `NewClusterWithIncrementalUpgrade` is a `NewCluster` upgrade, and a
    /// `FieldsNotActedOn` Warning says so (Kubernetes without the Gateway API).
    None,
    /// By itself (local mode's Serve endpoint): no Gateway and no autoscaler are needed, and
    /// an `IncrementalUpgradeWithoutGateway` event says so when the spec leaves them out.
    Itself,
    /// Through a Gateway and an HTTPRoute that the platform writes as the core says
    /// ([`Action::SplitTraffic`]; Kubernetes with the Gateway API installed). KubeRay's
    /// requirements apply (`gatewayClassName`, `enableInTreeAutoscaling`, the step options),
    /// and Serve capacities change only while both objects are ready.
    Gateway(GatewayObservation),
}

impl TrafficSplit {
    /// Whether the platform can split at all.
    pub fn splits(&self) -> bool {
        !matches!(self, TrafficSplit::None)
    }
}

/// The Gateway API objects of one RayService, as observed: the status conditions their
/// controller wrote. `None` when the object does not exist (yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayObservation {
    /// The conditions of the Gateway (`<name>-gateway`).
    pub gateway: Option<Vec<Condition>>,
    /// The HTTPRoute (`<name>-httproute`): the conditions of each of its `status.parents`
    /// entries that names that Gateway. `None` when there is no HTTPRoute.
    pub route: Option<Vec<Vec<Condition>>>,
}

/// One cluster's share of the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    /// The cluster.
    pub cluster: String,
    /// Percent of the requests it gets.
    pub weight: i32,
}

/// One cluster owned by a RayService, as observed.
#[derive(Debug, Clone)]
pub struct ObservedCluster {
    /// `S-raycluster-xxxxx`.
    pub name: String,
    /// The spec it was created from (with the worker counts it runs).
    pub spec: RayClusterSpec,
    /// When it was created.
    pub created_at: Timestamp,
    /// What the platform keeps about it (spec hash, serve config accepted, deletion time).
    pub memory: ClusterMemory,
    /// Its nodes.
    pub nodes: NodesObservation,
    /// Its dashboard and Serve.
    pub serve: ServeObservation,
    /// Requests in flight on it, when the platform's front knows them exactly (local mode);
    /// `None` when it cannot tell.
    pub in_flight: Option<u64>,
    /// Requests the platform's front sent it so far and how many failed, when it counts them
    /// (local mode); `None` when it cannot tell.
    pub traffic: Option<TrafficCounts>,
}

/// Requests sent to a cluster and how many failed (5xx, or no answer), counted since the
/// platform's front started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    /// Requests forwarded.
    pub requests: u64,
    /// Of those, failed.
    pub failures: u64,
    /// Time to the response head: (upper bound in microseconds, requests) per bucket, in
    /// increasing order; the same buckets on every look.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<(u64, u64)>,
}

impl TrafficCounts {
    /// The 99th percentile of the latency of the requests counted since `baseline` (upper bound
    /// of its bucket, microseconds), with how many were counted; `None` without buckets.
    pub fn p99_since(&self, baseline: Option<&TrafficCounts>) -> Option<(u64, u64)> {
        let counts: Vec<(u64, u64)> = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, (bound, count))| {
                let before = baseline
                    .and_then(|b| b.latency.get(i))
                    .map_or(0, |(_, c)| *c);
                (*bound, count.saturating_sub(before))
            })
            .collect();
        let total: u64 = counts.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        let wanted = (total * 99).div_ceil(100);
        let mut seen = 0;
        counts.iter().find_map(|(bound, count)| {
            seen += count;
            (seen >= wanted).then_some((*bound, total))
        })
    }
}

/// The Ray nodes of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodesObservation {
    /// The head runs (a live process locally, a ready pod with an IP on Kubernetes).
    pub head_up: bool,
    /// The head is up and its dashboard answered at least once ([`crate::contract::see`]).
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

/// Something the platform must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a new cluster from `spec`, keeping `memory` about it.
    CreateCluster {
        /// Its name.
        name: String,
        /// What to run.
        spec: Box<RayClusterSpec>,
        /// What to keep about it from the start (its spec hash).
        memory: ClusterMemory,
        /// Why it is created.
        cause: CreateCause,
    },
    /// Add worker groups appended to the spec to a running cluster.
    UpdateClusterInPlace {
        /// The cluster.
        name: String,
        /// The new spec (same as before plus appended groups).
        spec: Box<RayClusterSpec>,
        /// Its memory afterwards (the new spec hash).
        memory: ClusterMemory,
    },
    /// PUT the serve config to the cluster's dashboard.
    SubmitServeConfig {
        /// The cluster.
        cluster: String,
        /// The `serveConfigV2` document as JSON.
        config: Value,
        /// Its hash.
        config_hash: String,
        /// Keep the config itself in the cluster's memory once accepted (incremental upgrades
        /// send it again with another `target_capacity`).
        remember_config: bool,
    },
    /// Point the Serve and dashboard endpoints at this cluster (`None`: at nothing).
    RouteTraffic {
        /// The cluster that serves from now on.
        cluster: Option<String>,
    },
    /// Split the requests between clusters by weight through the platform's Gateway
    /// ([`TrafficSplit::Gateway`]): the Gateway of class `gateway_class_name` and an HTTPRoute
    /// to each cluster's own Serve service with its weight. With no backend (no cluster serves
    /// yet) only the Gateway is written.
    SplitTraffic {
        /// `clusterUpgradeOptions.gatewayClassName`.
        gateway_class_name: String,
        /// The active cluster first, then the pending one.
        backends: Vec<WeightedCluster>,
    },
    /// Keep this memory about a cluster from now on (e.g. when it is due for deletion).
    Remember {
        /// The cluster.
        cluster: String,
        /// Its whole memory.
        memory: ClusterMemory,
    },
    /// Stop and remove a cluster now.
    DeleteCluster {
        /// The cluster.
        cluster: String,
    },
    /// Record an event.
    Event(Event),
}

/// Why a new cluster is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateCause {
    /// Nothing runs yet.
    FirstCluster,
    /// The cluster spec changed in fields that need a new cluster (zero-downtime upgrade).
    SpecChanged {
        /// The fields, e.g. `rayVersion`.
        fields: Vec<String>,
    },
    /// The serving cluster stayed unhealthy beyond its threshold.
    Unhealthy {
        /// Why, for a person.
        why: String,
    },
}

impl std::fmt::Display for CreateCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateCause::FirstCluster => f.write_str("Creating the first Ray cluster"),
            CreateCause::SpecChanged { fields } if fields.is_empty() => {
                f.write_str("rayClusterConfig changed: starting a new cluster")
            }
            CreateCause::SpecChanged { fields } => write!(
                f,
                "rayClusterConfig changed ({}): starting a new cluster",
                fields.join(", ")
            ),
            CreateCause::Unhealthy { .. } => f.write_str("Replacing an unhealthy cluster"),
        }
    }
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
