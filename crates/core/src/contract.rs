//! The contract with Ray that both platforms follow, written once: what a platform must
//! remember about each cluster ([`ClusterMemory`]), how raw facts (is the head up, did the
//! dashboard answer, which Serve proxies answer) become the observation the decision reads
//! (one rule for "unreachable"), and what the answer to a Serve config submission means
//! (events, what is remembered). See `docs/contract.md`.
//!
//! The platforms only gather the facts, call these functions, carry out the decision's actions
//! and persist the memory they are handed back.

use k8s_openapi::jiff::Timestamp;
use rayservice_api::serve_api::{ObservedApp, ServeApi, SubmitError};
use serde::{Deserialize, Serialize};

use crate::model::{Event, EventKind, NodesObservation, ServeObservation};

/// Event reason: Ray accepted a Serve config.
pub const SERVE_CONFIG_SUBMITTED: &str = "ServeConfigSubmitted";
/// Event reason: Ray refused a Serve config (HTTP 400); it is not sent again unchanged.
pub const SERVE_CONFIG_REJECTED: &str = "ServeConfigRejected";
/// Event reason: a Serve config could not be delivered; it is sent again.
pub const SERVE_CONFIG_SUBMIT_FAILED: &str = "ServeConfigSubmitFailed";

/// Longest message kept from Ray in an event or a status (Ray answers with tracebacks).
pub const MAX_MESSAGE_CHARS: usize = 400;

/// What a platform keeps about one cluster between reconciles and across restarts of the
/// controller. Local mode stores it in one column of the cluster's row; the operator in
/// annotations of the RayCluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMemory {
    /// [`crate::hash::cluster_hash`] of the spec the cluster was created from (or updated to).
    pub spec_hash: String,
    /// Hash of the Serve config the cluster accepted last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_config_hash: Option<String>,
    /// A Serve config the cluster refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_config: Option<RejectedConfig>,
    /// When the cluster is due for deletion, once traffic has left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<Timestamp>,
    /// Since when its dashboard has not answered (after having answered once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
    /// Its dashboard answered at least once: from then on, silence means unreachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dashboard_answered: bool,
    /// Serve's `target_capacity` this cluster is sized for during an incremental upgrade
    /// (percent); its worker groups run that share of their replicas. `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_capacity: Option<i32>,
    /// The Serve config it accepted last, kept when the decision asked (incremental upgrades
    /// send it again with another `target_capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_config: Option<serde_json::Value>,
    /// Since when it waits for its requests in flight to finish before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<Timestamp>,
    /// Of a cluster taking part of the traffic in an incremental upgrade: the other cluster's
    /// counts when its traffic started, so that both are compared over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_baseline: Option<crate::model::TrafficCounts>,
    /// Of a serving cluster: an upgrade to this spec was rolled back automatically, and why; it
    /// is not tried again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
}

/// An upgrade rolled back automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The spec hash of the upgrade.
    pub spec_hash: String,
    /// Why, with the figures.
    pub message: String,
}

impl ClusterMemory {
    /// The memory of a cluster just created from a spec with this hash.
    pub fn new(spec_hash: impl Into<String>) -> Self {
        ClusterMemory {
            spec_hash: spec_hash.into(),
            ..Default::default()
        }
    }
}

/// A Serve config a cluster refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedConfig {
    /// Hash of the refused config.
    pub hash: String,
    /// Ray's reason, shortened.
    pub message: String,
}

/// What the platform learnt of one cluster's Serve by asking.
#[derive(Debug, Clone, PartialEq)]
pub enum DashboardAnswer {
    /// The head is not up, so nothing was asked.
    NotAsked,
    /// The dashboard listed these applications.
    Answered(Vec<ObservedApp>),
    /// The dashboard did not answer; why.
    Failed(String),
}

/// The Serve proxies of a cluster, as the platform probed them (only after the dashboard
/// answered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyFacts {
    /// Nodes whose Serve proxy answers `/-/healthz`.
    pub serve_endpoints: i32,
    /// Route prefixes the head's proxy routes now (`/-/routes`); `None` when not asked.
    pub routes: Option<Vec<String>>,
}

/// Asks a cluster's dashboard for its applications, if its head is up.
pub async fn ask(api: Option<&impl ServeApi>) -> DashboardAnswer {
    match api {
        None => DashboardAnswer::NotAsked,
        Some(api) => match api.applications().await {
            Ok(applications) => DashboardAnswer::Answered(applications),
            Err(error) => DashboardAnswer::Failed(summarize(&error)),
        },
    }
}

/// One cluster seen through the contract: what the decision reads, and the memory to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The cluster's nodes, with `head_ready` decided here.
    pub nodes: NodesObservation,
    /// Its Serve.
    pub serve: ServeObservation,
    /// The memory after this look; the platform persists it when it differs from before.
    pub memory: ClusterMemory,
}

/// Turns raw facts about a cluster into the observation the decision reads.
///
/// The one rule for "unreachable": a head that is not up is starting or restarting (a pod
/// being recreated, a process being started again): its cluster is `Unknown` and must answer
/// again before it counts as ready (a restarted head has lost its applications). A head that is
/// up but whose dashboard does not answer is still starting (`Unknown`) until the dashboard
/// first answered; after that, or while the cluster serves traffic, silence is `Unreachable`
/// since the first silent look, which the health thresholds measure. A head counts as ready
/// when it is up and its dashboard has answered since it last started.
pub fn see(
    mut nodes: NodesObservation,
    answer: DashboardAnswer,
    proxies: ProxyFacts,
    serving: bool,
    memory: &ClusterMemory,
    now: Timestamp,
) -> Seen {
    let mut memory = memory.clone();
    let serve = match answer {
        DashboardAnswer::Answered(applications) => {
            memory.dashboard_answered = true;
            memory.unreachable_since = None;
            ServeObservation::Reachable {
                applications,
                serve_endpoints: proxies.serve_endpoints,
                routes: proxies.routes,
            }
        }
        _ if !nodes.head_up => {
            memory.dashboard_answered = false;
            memory.unreachable_since = None;
            ServeObservation::Unknown
        }
        DashboardAnswer::Failed(error) if memory.dashboard_answered || serving => {
            let since = *memory.unreachable_since.get_or_insert(now);
            ServeObservation::Unreachable { since, error }
        }
        _ => ServeObservation::Unknown,
    };
    nodes.head_ready = nodes.head_up && memory.dashboard_answered;
    Seen {
        nodes,
        serve,
        memory,
    }
}

/// What came of submitting a Serve config to a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// Events to record on the RayService.
    pub events: Vec<Event>,
    /// The cluster's memory afterwards; the platform persists it when it differs.
    pub memory: ClusterMemory,
}

/// Submits `config` (with hash `config_hash`, as the decision asked) to a cluster and says
/// what the answer means. `config` may be the platform's adaptation of the decision's config
/// (local mode pins the proxy to loopback); the hash remembered is always the decision's.
/// `keep`: the decision's config, when it asked to keep it (`remember_config`).
pub async fn submit(
    api: &impl ServeApi,
    cluster: &str,
    config: &serde_json::Value,
    config_hash: &str,
    keep: Option<&serde_json::Value>,
    memory: &ClusterMemory,
) -> Submitted {
    let answer = api.submit(config).await;
    submitted(cluster, config_hash, keep, memory, answer)
}

/// The meaning of a submission's answer: [`submit`] without the call.
pub fn submitted(
    cluster: &str,
    config_hash: &str,
    keep: Option<&serde_json::Value>,
    memory: &ClusterMemory,
    answer: Result<(), SubmitError>,
) -> Submitted {
    let mut memory = memory.clone();
    let event = match answer {
        Ok(()) => {
            memory.submitted_config_hash = Some(config_hash.to_string());
            memory.submitted_config = keep.cloned();
            memory.rejected_config = None;
            Event {
                kind: EventKind::Normal,
                reason: SERVE_CONFIG_SUBMITTED.into(),
                message: format!("serve applications submitted to {cluster}"),
            }
        }
        Err(SubmitError::Rejected(message)) => {
            let message = summarize(&message);
            memory.rejected_config = Some(RejectedConfig {
                hash: config_hash.to_string(),
                message: message.clone(),
            });
            Event {
                kind: EventKind::Warning,
                reason: SERVE_CONFIG_REJECTED.into(),
                message: format!("Ray refused the serve config on {cluster}: {message}"),
            }
        }
        Err(SubmitError::Failed(error)) => Event {
            kind: EventKind::Warning,
            reason: SERVE_CONFIG_SUBMIT_FAILED.into(),
            message: format!(
                "could not submit to {cluster}: {}; retrying",
                summarize(&error)
            ),
        },
    };
    Submitted {
        events: vec![event],
        memory,
    }
}

/// A long message from Ray cut to what a person needs: the exception line of a Python
/// traceback, and at most [`MAX_MESSAGE_CHARS`] characters.
pub fn summarize(message: &str) -> String {
    let text = match message.find("Traceback (most recent call last)") {
        Some(at) => {
            let head = message[..at].trim_end_matches([' ', ':']);
            let tail = message[at..]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            // Tracebacks folded onto one line: keep their last "Error:" part.
            let tail = tail
                .rfind("Error:")
                .map(|i| {
                    let start = tail[..i].rfind(' ').map_or(0, |s| s + 1);
                    &tail[start..]
                })
                .unwrap_or(tail);
            format!("{head}: {tail}")
        }
        None => message.to_string(),
    };
    truncate(&text, MAX_MESSAGE_CHARS)
}

/// At most `max` characters of `text`, with `…` where it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    } else {
        text.to_string()
    }
}
