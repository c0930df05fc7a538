//! The status a RayService reports: active and pending clusters, application and deployment
//! statuses with their times, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use rayservice_api::resources::desired_resources;
use rayservice_api::serve_api::{ServeAppStatus, ServeDeploymentStatus};
use rayservice_api::{
    AppStatus, DeploymentStatus, FieldError, RayClusterSpec, RayClusterStatus, RayServiceStatus,
    ServeConfig, ServiceClusterStatus, WorkerGroupSpec,
};

use crate::model::{
    Action, Decision, Desired, Event, EventKind, Observed, ObservedCluster, ServeObservation,
};

/// Condition type: the service answers requests with every application running.
pub const READY: &str = "Ready";
/// Condition type: a pending cluster is being prepared to take over.
pub const UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";

/// Which observed clusters serve and which is being prepared.
pub struct Roles<'a> {
    /// Serves traffic.
    pub active: Option<&'a ObservedCluster>,
    /// Being prepared.
    pub pending: Option<&'a ObservedCluster>,
}

/// RFC 3339 at second precision, as Kubernetes writes times.
pub fn timestamp(time: Timestamp) -> String {
    Timestamp::from_second(time.as_second())
        .unwrap_or(time)
        .to_string()
}

/// What a platform counts of a RayCluster's nodes (pods in Kubernetes, processes locally).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// The head runs and is ready (Kubernetes: its pod is Ready; locally: its dashboard answered).
    pub head_ready: bool,
    /// Workers that run.
    pub workers_running: i32,
    /// Workers that are ready.
    pub workers_ready: i32,
    /// Why nodes cannot be started, if they cannot.
    pub failure: Option<String>,
}

/// Status of a RayCluster, the one rule of both platforms: `state` is `suspended` for a
/// suspended cluster and `ready` when the head and at least the desired number of workers are
/// ready; desired workers and resources come from the spec ([`rayservice_api::resources`]).
/// The head's addresses, `endpoints`, `observedGeneration` and times are the platform's.
pub fn raycluster_status(spec: &RayClusterSpec, counts: &NodeCounts) -> RayClusterStatus {
    let suspended = spec.suspend == Some(true);
    let desired: i32 = if suspended {
        0
    } else {
        spec.worker_group_specs
            .iter()
            .map(WorkerGroupSpec::desired_replicas)
            .sum()
    };
    let state = if suspended {
        Some("suspended".to_string())
    } else if counts.head_ready && counts.workers_ready >= desired {
        Some("ready".to_string())
    } else {
        None
    };
    let resources = desired_resources(spec);
    RayClusterStatus {
        state,
        desired_cpu: Some(resources.cpu()),
        desired_memory: Some(resources.memory()),
        desired_gpu: Some(resources.gpu()),
        desired_tpu: Some(resources.tpu()),
        desired_worker_replicas: desired,
        available_worker_replicas: counts.workers_running,
        ready_worker_replicas: counts.workers_ready,
        reason: counts.failure.clone(),
        ..Default::default()
    }
}

/// Status of a RayCluster from what its nodes do, as observed by a platform whose workers are
/// ready once they run and the head is ready.
pub fn cluster_status(cluster: &ObservedCluster) -> RayClusterStatus {
    let nodes = &cluster.nodes;
    raycluster_status(
        &cluster.spec,
        &NodeCounts {
            head_ready: nodes.head_ready,
            workers_running: nodes.workers_running,
            workers_ready: if nodes.head_ready {
                nodes.workers_running
            } else {
                0
            },
            failure: nodes.failure.clone(),
        },
    )
}

/// The status for this reconcile.
pub fn build(
    desired: &Desired<'_>,
    observed: &Observed,
    roles: &Roles<'_>,
    config: &ServeConfig,
    config_hash: &str,
    skipped_upgrade: Option<(&str, &str)>,
) -> RayServiceStatus {
    let now = observed.now;
    let previous = &observed.status;
    let active = roles
        .active
        .map(|c| service_cluster_status(c, previous, now))
        .unwrap_or_default();
    let pending = roles
        .pending
        .map(|c| service_cluster_status(c, previous, now))
        .unwrap_or_default();
    let num_serve_endpoints = match roles.active.map(|c| &c.serve) {
        Some(ServeObservation::Reachable {
            serve_endpoints, ..
        }) => *serve_endpoints,
        _ => 0,
    };

    let (ready, reason, message) = readiness(
        roles,
        config,
        config_hash,
        &active,
        &pending,
        num_serve_endpoints,
    );
    let (upgrading, upgrade_reason, upgrade_message) = match (roles.active, roles.pending) {
        (Some(a), Some(p)) => (
            true,
            "BothActivePendingClustersExist",
            format!(
                "{} serves while {} is prepared; {}",
                a.name,
                p.name,
                starting_message(p, &pending)
            ),
        ),
        (None, _) => (
            false,
            "NoActiveCluster",
            "no cluster serves yet".to_string(),
        ),
        (Some(_), None) => match skipped_upgrade {
            Some((reason, why)) => (false, reason, why.to_string()),
            None => (
                false,
                "NoPendingCluster",
                "no upgrade in progress".to_string(),
            ),
        },
    };
    let conditions = vec![
        condition(
            previous,
            READY,
            ready,
            reason,
            &message,
            desired.generation,
            now,
        ),
        condition(
            previous,
            UPGRADE_IN_PROGRESS,
            upgrading,
            upgrade_reason,
            &upgrade_message,
            desired.generation,
            now,
        ),
    ];
    // Conditions this decision does not own (Suspended, RollbackInProgress, ...) are kept.
    let mut conditions = conditions;
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ != READY && c.type_ != UPGRADE_IN_PROGRESS)
            .cloned(),
    );
    let mut status = RayServiceStatus {
        active_service_status: active,
        pending_service_status: pending,
        conditions,
        service_status: ready.then(|| "Running".to_string()),
        num_serve_endpoints,
        observed_generation: Some(desired.generation),
        last_update_time: previous.last_update_time.clone(),
    };
    if !same_apart_from_times(&status, previous) {
        status.last_update_time = Some(timestamp(now));
    }
    status
}

/// Whether condition `type_` is True in `status`.
pub fn condition_true(status: &RayServiceStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets `lastUpdateTime` to `now` when `status` differs from `previous` (apart from times).
pub fn stamp(status: &mut RayServiceStatus, previous: &RayServiceStatus, now: Timestamp) {
    if !same_apart_from_times(status, previous) {
        status.last_update_time = Some(timestamp(now));
    } else {
        status.last_update_time = previous.last_update_time.clone();
    }
}

/// Whether the status says Ready.
pub fn is_ready(status: &RayServiceStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Whether an application or deployment of the serving cluster is changing (an in-place update):
/// worth looking again soon.
pub fn settling(status: &RayServiceStatus) -> bool {
    status
        .active_service_status
        .application_statuses
        .values()
        .any(|app| {
            app.status != ServeAppStatus::Running.as_str()
                || app
                    .serve_deployment_statuses
                    .values()
                    .any(|d| d.status != ServeDeploymentStatus::Healthy.as_str())
        })
}

/// Events for deployments of the serving cluster whose status changed after their application
/// had run (in-place updates, failures, recoveries), e.g. `fruit_app/MangoStand: HEALTHY -> UPDATING`.
/// The first deployment of a cluster is not narrated deployment by deployment.
pub fn deployment_transitions(
    previous: &RayServiceStatus,
    current: &RayServiceStatus,
) -> Vec<Event> {
    let (before, after) = (
        &previous.active_service_status,
        &current.active_service_status,
    );
    if before.ray_cluster_name.is_none() || before.ray_cluster_name != after.ray_cluster_name {
        return Vec::new();
    }
    let mut events = Vec::new();
    for (app_name, app) in &after.application_statuses {
        let Some(old_app) = before.application_statuses.get(app_name) else {
            continue;
        };
        if old_app.health_last_update_time.is_none() {
            continue;
        }
        for (name, deployment) in &app.serve_deployment_statuses {
            let Some(old) = old_app.serve_deployment_statuses.get(name) else {
                continue;
            };
            if old.status != deployment.status {
                let kind = if ServeDeploymentStatus::from(deployment.status.clone()).is_failing() {
                    EventKind::Warning
                } else {
                    EventKind::Normal
                };
                let mut message =
                    format!("{app_name}/{name}: {} -> {}", old.status, deployment.status);
                if !deployment.message.is_empty() {
                    message.push_str(&format!(" ({})", deployment.message));
                }
                events.push(Event {
                    kind,
                    reason: "DeploymentStatusChanged".into(),
                    message,
                });
            }
        }
    }
    events
}

/// The answer for a spec the core cannot act on: nothing changes, status and an event say why.
pub fn invalid(desired: &Desired<'_>, observed: &Observed, error: &FieldError) -> Decision {
    let mut status = observed.status.clone();
    let message = error.to_string();
    let ready = condition(
        &observed.status,
        READY,
        false,
        "ValidationFailed",
        &message,
        desired.generation,
        observed.now,
    );
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.insert(0, ready);
    status.observed_generation = Some(desired.generation);
    status.service_status = None;
    let changed = observed.status != status;
    if changed {
        status.last_update_time = Some(timestamp(observed.now));
    }
    let actions = if changed {
        vec![Action::Event(Event {
            kind: EventKind::Warning,
            reason: "ValidationFailed".into(),
            message,
        })]
    } else {
        Vec::new()
    };
    Decision {
        actions,
        status,
        requeue_after: std::time::Duration::from_secs(30),
    }
}

fn readiness(
    roles: &Roles<'_>,
    config: &ServeConfig,
    config_hash: &str,
    active: &ServiceClusterStatus,
    pending: &ServiceClusterStatus,
    endpoints: i32,
) -> (bool, &'static str, String) {
    let rejected = [roles.pending, roles.active]
        .into_iter()
        .flatten()
        .find_map(|c| {
            c.memory
                .rejected_config
                .as_ref()
                .filter(|rejected| rejected.hash == config_hash)
                .map(|rejected| (c, &rejected.message))
        });
    if let Some((cluster, why)) = rejected {
        return (
            false,
            "ServeConfigRejected",
            format!("Ray refused serveConfigV2 on {}: {why}", cluster.name),
        );
    }
    let Some(active_cluster) = roles.active else {
        let why = match roles.pending {
            Some(p) => starting_message(p, pending),
            None => "no Ray cluster yet".to_string(),
        };
        return (false, "Initializing", why);
    };
    if let Some(failed) = failing_apps(active) {
        return (false, "ServeApplicationsFailed", failed);
    }
    // An app that never ran on this cluster is still being deployed; one that ran and is being
    // updated in place (DEPLOYING with a health time) keeps serving and keeps the service Ready.
    let never_ran = active.application_statuses.values().any(|app| {
        app.status != ServeAppStatus::Running.as_str() && app.health_last_update_time.is_none()
    });
    let missing = config
        .applications
        .iter()
        .any(|app| !active.application_statuses.contains_key(&app.name));
    if never_ran || missing {
        return (
            false,
            "WaitForServeDeploymentReady",
            starting_message(active_cluster, active),
        );
    }
    if !config.applications.is_empty() && endpoints == 0 {
        return (
            false,
            "ZeroServeEndpoints",
            format!("no Serve proxy of {} answers", active_cluster.name),
        );
    }
    (
        true,
        "NonZeroServeEndpoints",
        format!("{endpoints} serve endpoint(s) on {}", active_cluster.name),
    )
}

/// What a cluster that does not serve yet is waiting for, for a person.
fn starting_message(cluster: &ObservedCluster, status: &ServiceClusterStatus) -> String {
    if let Some(failure) = &cluster.nodes.failure {
        return format!("cluster {}: {failure}", cluster.name);
    }
    if !cluster.nodes.head_ready {
        return format!(
            "cluster {}: waiting for the head node to start",
            cluster.name
        );
    }
    if let Some(failed) = failing_apps(status) {
        return format!("cluster {}: {failed}", cluster.name);
    }
    let waiting: Vec<String> = status
        .application_statuses
        .iter()
        .filter(|(_, app)| app.status != ServeAppStatus::Running.as_str())
        .map(|(name, app)| {
            let detail = app
                .serve_deployment_statuses
                .values()
                .map(|d| d.message.as_str())
                .find(|m| !m.is_empty())
                .unwrap_or(app.message.as_str());
            if detail.is_empty() {
                format!("{name} {}", app.status)
            } else {
                format!("{name} {}: {detail}", app.status)
            }
        })
        .collect();
    if waiting.is_empty() {
        format!(
            "cluster {}: waiting for the applications to be deployed",
            cluster.name
        )
    } else {
        format!(
            "cluster {}: waiting for {}",
            cluster.name,
            waiting.join("; ")
        )
    }
}

fn failing_apps(status: &ServiceClusterStatus) -> Option<String> {
    let failed: Vec<String> = status
        .application_statuses
        .iter()
        .filter(|(_, app)| ServeAppStatus::from(app.status.clone()).is_failing())
        .map(|(name, app)| format!("{name} is {}: {}", app.status, app.message))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

fn service_cluster_status(
    cluster: &ObservedCluster,
    previous: &RayServiceStatus,
    now: Timestamp,
) -> ServiceClusterStatus {
    let before = [
        &previous.active_service_status,
        &previous.pending_service_status,
    ]
    .into_iter()
    .find(|s| s.ray_cluster_name.as_deref() == Some(cluster.name.as_str()));
    let applications = match &cluster.serve {
        ServeObservation::Reachable { applications, .. } => applications
            .iter()
            .map(|app| {
                let old = before.and_then(|b| b.application_statuses.get(&app.name));
                let deployments = app
                    .deployments
                    .iter()
                    .map(|observed| {
                        let old_d =
                            old.and_then(|o| o.serve_deployment_statuses.get(&observed.name));
                        let (last, health) = times(
                            old_d.map(|d| {
                                (&d.status, &d.last_update_time, &d.health_last_update_time)
                            }),
                            observed.status.as_str(),
                            observed.status == ServeDeploymentStatus::Healthy,
                            now,
                        );
                        let deployment = DeploymentStatus {
                            status: observed.status.to_string(),
                            message: observed.message.clone(),
                            last_update_time: last,
                            health_last_update_time: health,
                        };
                        (observed.name.clone(), deployment)
                    })
                    .collect();
                let (last, health) = times(
                    old.map(|o| (&o.status, &o.last_update_time, &o.health_last_update_time)),
                    app.status.as_str(),
                    app.status == ServeAppStatus::Running,
                    now,
                );
                let status = AppStatus {
                    status: app.status.to_string(),
                    message: app.message.clone(),
                    last_update_time: last,
                    health_last_update_time: health,
                    serve_deployment_statuses: deployments,
                };
                (app.name.clone(), status)
            })
            .collect(),
        // Unreachable or not asked yet: keep what was last seen.
        _ => before
            .map(|b| b.application_statuses.clone())
            .unwrap_or_default(),
    };
    // An incremental upgrade's figures stay with the cluster (KubeRay keeps them after the
    // promotion); the decision sets them while it steps.
    ServiceClusterStatus {
        ray_cluster_name: Some(cluster.name.clone()),
        ray_cluster_status: Some(cluster_status(cluster)),
        application_statuses: applications,
        target_capacity: before.and_then(|b| b.target_capacity),
        traffic_routed_percent: before.and_then(|b| b.traffic_routed_percent),
        last_traffic_migrated_time: before.and_then(|b| b.last_traffic_migrated_time.clone()),
    }
}

/// `lastUpdateTime` moves when the status changes; `healthLastUpdateTime` when it is seen healthy.
fn times(
    old: Option<(&String, &Option<String>, &Option<String>)>,
    status: &str,
    healthy: bool,
    now: Timestamp,
) -> (Option<String>, Option<String>) {
    let now_text = timestamp(now);
    match old {
        Some((old_status, last, health)) if old_status == status => (
            last.clone().or(Some(now_text.clone())),
            if healthy {
                Some(now_text)
            } else {
                health.clone()
            },
        ),
        Some((_, _, health)) => (
            Some(now_text.clone()),
            if healthy {
                Some(now_text)
            } else {
                health.clone()
            },
        ),
        None => (Some(now_text.clone()), healthy.then_some(now_text)),
    }
}

pub(crate) fn condition(
    previous: &RayServiceStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let old = previous.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match old {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation),
        last_transition_time,
    }
}

/// Equal except for `healthLastUpdateTime`s, which move on every healthy observation.
fn same_apart_from_times(a: &RayServiceStatus, b: &RayServiceStatus) -> bool {
    let strip = |s: &RayServiceStatus| {
        let mut s = s.clone();
        s.last_update_time = None;
        for cluster in [&mut s.active_service_status, &mut s.pending_service_status] {
            for app in cluster.application_statuses.values_mut() {
                app.health_last_update_time = None;
                for d in app.serve_deployment_statuses.values_mut() {
                    d.health_last_update_time = None;
                }
            }
        }
        s
    };
    strip(a) == strip(b)
}
