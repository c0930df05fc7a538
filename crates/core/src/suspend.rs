//! `spec.suspend` of a RayService, as KubeRay v1.7 runs it: a state machine in the status
//! conditions. `suspend: true` first commits `Suspending` (Ready, UpgradeInProgress and
//! RollbackInProgress false, the cluster statuses cleared); once that is written, every cluster
//! of the RayService is deleted, whatever the spec says meanwhile (the deletion is atomic);
//! when none is left, `Suspended`. `suspend: false` on a suspended RayService resumes it:
//! `Suspended` false (`RayServiceResumed`), Ready false (`Initializing`), and the next
//! reconcile creates a cluster as for a new RayService.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rayservice_api::conditions::{
    INITIALIZING, RAYSERVICE_RESUMED, READY, ROLLBACK_IN_PROGRESS, SUSPEND_COMPLETE,
    SUSPEND_IN_PROGRESS, SUSPEND_REQUESTED, SUSPENDED, SUSPENDING, UPGRADE_IN_PROGRESS,
};
use rayservice_api::{RayServiceStatus, ServiceClusterStatus};

use crate::model::{Action, Decision, Desired, Event, EventKind, Observed};
use crate::status::{condition, timestamp};

/// How soon to look again while suspending.
const SUSPEND_REQUEUE: Duration = Duration::from_secs(2);

fn is_true(status: &RayServiceStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The decision while suspend drives the RayService; `None` when it does not (then the usual
/// reconcile runs).
pub(crate) fn decide(desired: &Desired<'_>, observed: &Observed) -> Option<Decision> {
    let previous = &observed.status;
    let wants = desired.spec.suspend == Some(true);
    let suspending = is_true(previous, SUSPENDING);
    let suspended = is_true(previous, SUSPENDED);
    let generation = desired.generation;
    let now = observed.now;
    let mut status = previous.clone();
    let set =
        |status: &mut RayServiceStatus, type_: &str, value: bool, reason: &str, message: &str| {
            let new = condition(previous, type_, value, reason, message, generation, now);
            status.conditions.retain(|c| c.type_ != type_);
            status.conditions.push(new);
        };
    let mut actions = Vec::new();
    let mut event = |kind, reason: &str, message: &str| {
        actions.push(Action::Event(Event {
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
        }));
    };

    if suspended {
        if wants {
            // Stay suspended; nothing to do until the spec changes.
            return Some(finish(
                previous,
                status,
                Vec::new(),
                Duration::from_secs(60),
                now,
            ));
        }
        status.observed_generation = Some(generation);
        set(
            &mut status,
            SUSPENDED,
            false,
            RAYSERVICE_RESUMED,
            "Spec.Suspend is false; RayService has resumed.",
        );
        let message = "RayService is initializing after resuming from suspend.";
        set(&mut status, READY, false, INITIALIZING, message);
        set(
            &mut status,
            UPGRADE_IN_PROGRESS,
            false,
            INITIALIZING,
            message,
        );
        event(
            EventKind::Normal,
            RAYSERVICE_RESUMED,
            "suspend is false: the RayService starts again",
        );
        return Some(finish(previous, status, actions, Duration::ZERO, now));
    }

    if !suspending {
        if !wants {
            return None;
        }
        status.observed_generation = Some(generation);
        set(
            &mut status,
            SUSPENDING,
            true,
            SUSPEND_REQUESTED,
            "Spec.Suspend is true; will delete all resources owned by this RayService.",
        );
        set(
            &mut status,
            READY,
            false,
            SUSPEND_IN_PROGRESS,
            "RayService is suspending.",
        );
        set(
            &mut status,
            UPGRADE_IN_PROGRESS,
            false,
            SUSPEND_IN_PROGRESS,
            "No upgrade in progress.",
        );
        set(
            &mut status,
            ROLLBACK_IN_PROGRESS,
            false,
            SUSPEND_IN_PROGRESS,
            "No rollback in progress.",
        );
        status.active_service_status = ServiceClusterStatus::default();
        status.pending_service_status = ServiceClusterStatus::default();
        status.num_serve_endpoints = 0;
        status.service_status = Some("NotRunning".to_string());
        event(
            EventKind::Normal,
            SUSPEND_REQUESTED,
            "suspend is true: every cluster of this RayService will be deleted",
        );
        // Traffic leaves before anything is deleted.
        actions.push(Action::RouteTraffic { cluster: None });
        return Some(finish(previous, status, actions, SUSPEND_REQUEUE, now));
    }

    // Suspending is committed: delete everything, whatever the spec says now.
    if !observed.clusters.is_empty() {
        for cluster in &observed.clusters {
            actions.push(Action::DeleteCluster {
                cluster: cluster.name.clone(),
            });
        }
        set(
            &mut status,
            SUSPENDING,
            true,
            SUSPEND_IN_PROGRESS,
            "Waiting for all resources owned by this RayService to be deleted.",
        );
        return Some(finish(previous, status, actions, SUSPEND_REQUEUE, now));
    }
    let done = "All owned resources have been deleted.";
    set(&mut status, SUSPENDING, false, SUSPEND_COMPLETE, done);
    set(&mut status, SUSPENDED, true, SUSPEND_COMPLETE, done);
    set(
        &mut status,
        READY,
        false,
        SUSPEND_COMPLETE,
        "RayService is suspended.",
    );
    set(
        &mut status,
        UPGRADE_IN_PROGRESS,
        false,
        SUSPEND_COMPLETE,
        "No upgrade in progress.",
    );
    set(
        &mut status,
        ROLLBACK_IN_PROGRESS,
        false,
        SUSPEND_COMPLETE,
        "No rollback in progress.",
    );
    event(
        EventKind::Normal,
        SUSPENDED,
        "every cluster of this RayService is deleted",
    );
    Some(finish(previous, status, actions, SUSPEND_REQUEUE, now))
}

fn finish(
    previous: &RayServiceStatus,
    mut status: RayServiceStatus,
    actions: Vec<Action>,
    requeue_after: Duration,
    now: Timestamp,
) -> Decision {
    if &status != previous {
        status.last_update_time = Some(timestamp(now));
    }
    Decision {
        actions,
        status,
        requeue_after,
    }
}
