//! The reconcile decision: what the desired spec and the observed clusters require
//! (`docs/contract.md`). Read this file to learn what happens when
//! `rayVersion`, `replicas` or `serveConfigV2` change, and when a cluster is unhealthy.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use rayservice_api::labels::{
    ANNOTATION_DRAIN_TIMEOUT, ANNOTATION_MAX_ERROR_PERCENT, ANNOTATION_MAX_P99_RATIO,
};
use rayservice_api::serve_api::ServeAppStatus;
use rayservice_api::serve_api::ServeDeploymentStatus;
use rayservice_api::{FieldError, RayClusterSpec, RayServiceStatus, ServeConfig, UpgradeType};

use crate::contract::{ClusterMemory, RolledBack};
use crate::hash::{
    autoscaler_fields_changed, cluster_hash, cluster_hash_of_first_groups, fields_forcing_upgrade,
    serve_config_hash,
};
use crate::incremental::{self, Capacity, Options, Split};
use crate::model::{
    Action, CreateCause, Decision, Desired, Event, EventKind, GatewayObservation, Observed,
    ObservedCluster, ServeObservation, TrafficSplit,
};
use crate::naming::{self, cluster_name};
use crate::status::{self, Roles};

/// Default `serviceUnhealthySecondThreshold`.
pub const DEFAULT_SERVICE_UNHEALTHY_SECONDS: i64 = 900;
/// Default `deploymentUnhealthySecondThreshold`.
pub const DEFAULT_DEPLOYMENT_UNHEALTHY_SECONDS: i64 = 300;
/// Default `rayClusterDeletionDelaySeconds`.
pub const DEFAULT_DELETION_DELAY_SECONDS: i64 = 60;

/// How soon to look again while something is changing.
const BUSY_REQUEUE: Duration = Duration::from_millis(250);
/// How soon to look again when all is steady (health checks).
const STEADY_REQUEUE: Duration = Duration::from_secs(2);
/// How soon to look again when no head can be asked and the platform wakes the controller
/// when one comes up.
const WATCH_ONLY_REQUEUE: Duration = Duration::from_secs(60);

/// Default of the `rayservice.dev/drain-timeout-seconds` annotation.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i64 = 600;
/// How soon to look again while a cluster drains.
const DRAIN_POLL: Duration = Duration::from_millis(500);
/// Condition reason and event reason: the new cluster failed more than allowed while it took
/// part of the traffic; the upgrade was undone.
pub const ROLLED_BACK_AUTOMATICALLY: &str = "RolledBackAutomatically";
/// Default of the `rayservice.dev/max-error-percent` annotation.
pub const DEFAULT_MAX_ERROR_PERCENT: u64 = 5;
/// Requests the new cluster must have answered before its error ratio counts.
const GATE_MIN_REQUESTS: u64 = 20;
/// Condition type and event reason: traffic returns to the active cluster.
pub const ROLLBACK_IN_PROGRESS: &str = "RollbackInProgress";

/// Event reason: the spec sets fields that are accepted but not acted on yet.
pub const FIELDS_NOT_ACTED_ON: &str = "FieldsNotActedOn";

/// Decides what to do for one RayService. Pure: the same input gives the same answer.
pub fn reconcile(desired: &Desired<'_>, observed: &Observed) -> Decision {
    let (cluster_spec, serve_config) = match checked(desired, &observed.traffic_split) {
        Ok(parts) => parts,
        Err(error) => return status::invalid(desired, observed, &error),
    };
    if let Some(decision) = crate::suspend::decide(desired, observed) {
        return decision;
    }
    Reconcile::new(desired, observed, cluster_spec, serve_config).run()
}

fn checked<'a>(
    desired: &Desired<'a>,
    split: &TrafficSplit,
) -> Result<(&'a RayClusterSpec, ServeConfig), FieldError> {
    let spec = desired.spec;
    let cluster = spec.ray_cluster_config.as_ref().ok_or_else(|| {
        FieldError::new(
            "spec.rayClusterConfig",
            "is missing",
            "add rayClusterConfig",
        )
    })?;
    rayservice_api::validate::cluster_spec(cluster)
        .map_err(|e| e.within("spec.rayClusterConfig"))?;
    let config = ServeConfig::parse(
        spec.serve_config_v2.as_deref().unwrap_or_default(),
        "spec.serveConfigV2",
    )?;
    // Traffic moves through a Gateway: KubeRay's requirements for incremental upgrades apply.
    if matches!(split, TrafficSplit::Gateway(_)) && Options::of(spec).is_some() {
        rayservice_api::validate::upgrade_through_gateway(spec)?;
    }
    Ok((cluster, config))
}

struct Reconcile<'a> {
    desired: &'a Desired<'a>,
    observed: &'a Observed,
    now: Timestamp,
    cluster_spec: &'a RayClusterSpec,
    serve_config: ServeConfig,
    config_json: serde_json::Value,
    config_hash: String,
    desired_hash: String,
    spec_changed: bool,
    actions: Vec<Action>,
    requeue: Duration,
    /// The soonest scheduled thing (a deletion, a drain check, a traffic step), from now.
    next_due: Option<Duration>,
    /// Why a spec change is not rolled out: (condition reason, message).
    skipped_upgrade: Option<(&'static str, String)>,
    /// Options of an incremental upgrade the platform can carry out.
    incremental: Option<Options>,
}

impl<'a> Reconcile<'a> {
    fn new(
        desired: &'a Desired<'a>,
        observed: &'a Observed,
        cluster_spec: &'a RayClusterSpec,
        serve_config: ServeConfig,
    ) -> Self {
        let config_json = serve_config.to_json();
        Reconcile {
            desired,
            observed,
            now: observed.now,
            cluster_spec,
            config_hash: serve_config_hash(&config_json),
            config_json,
            serve_config,
            desired_hash: cluster_hash(cluster_spec),
            spec_changed: observed.status.observed_generation != Some(desired.generation),
            actions: Vec::new(),
            requeue: STEADY_REQUEUE,
            next_due: None,
            skipped_upgrade: None,
            incremental: Options::of(desired.spec).filter(|_| observed.traffic_split.splits()),
        }
    }

    fn cluster(&self, name: Option<&String>) -> Option<ObservedCluster> {
        let name = name?;
        self.observed
            .clusters
            .iter()
            .find(|cluster| &cluster.name == name)
            .cloned()
    }

    fn event(&mut self, kind: EventKind, reason: &str, message: String) {
        self.actions.push(Action::Event(Event {
            kind,
            reason: reason.to_string(),
            message,
        }));
    }

    /// A field accepted but not acted on yet is never silent: each new generation that sets
    /// one gets a Warning event naming it.
    fn name_fields_not_acted_on(&mut self) {
        let mut fields = rayservice_api::validate::unimplemented_service_fields(self.desired.spec);
        if self.observed.traffic_split.splits() {
            fields.retain(|f| !f.starts_with("upgradeStrategy."));
        }
        if self.incremental.is_some() && self.observed.traffic_split == TrafficSplit::Itself {
            self.note_no_gateway_needed();
        }
        if !fields.is_empty() {
            let fields: Vec<String> = fields.iter().map(|f| format!("spec.{f}")).collect();
            self.event(
                EventKind::Warning,
                FIELDS_NOT_ACTED_ON,
                format!(
                    "{} accepted but not acted on yet; the rest of the spec is carried out",
                    fields.join(", ")
                ),
            );
        }
    }

    /// Something is due in `wait`: look again by then.
    fn due_in(&mut self, wait: Duration) {
        self.next_due = Some(self.next_due.map_or(wait, |d| d.min(wait)));
    }

    fn busy(&mut self) {
        self.requeue = self.requeue.min(BUSY_REQUEUE);
    }

    fn run(mut self) -> Decision {
        if self.spec_changed {
            self.name_fields_not_acted_on();
        }
        let previous = &self.observed.status;
        let mut active = self.cluster(previous.active_service_status.ray_cluster_name.as_ref());
        let mut pending = self.cluster(previous.pending_service_status.ray_cluster_name.as_ref());

        // An incremental upgrade under way moves traffic step by step, forward or back.
        let stepping = match (&self.incremental, &active, &pending) {
            (Some(options), Some(a), Some(p)) if p.memory.target_capacity.is_some() => {
                Some((*options, a.clone(), p.clone()))
            }
            _ => None,
        };
        // A pending cluster built from an older spec is replaced (spec changed again mid-upgrade).
        if stepping.is_none()
            && let Some(stale) = pending.take_if(|p| p.memory.spec_hash != self.desired_hash)
        {
            self.event(
                EventKind::Normal,
                "PendingClusterReplaced",
                format!("cluster {} was started from an older spec; it is replaced by one from the current spec", stale.name),
            );
            self.actions.push(Action::DeleteCluster {
                cluster: stale.name.clone(),
            });
        }
        self.sweep_unreferenced(active.as_ref(), &mut pending);

        let mut step: Option<Stepped> = None;
        if let Some((options, running, candidate)) = stepping {
            let outcome = self.step(options, running, candidate);
            active = Some(outcome.active.clone());
            pending = outcome.pending.clone();
            step = Some(outcome);
        } else {
            // While the cluster traffic left is kept (the deletion delay), the new one is
            // watched: failing more than allowed, traffic goes back.
            if pending.is_none()
                && let Some(current) = active.clone()
                && let Some(previous) = self.retiring_predecessor(&current)
                && let Some(why) = self.misbehaves(&previous, &current)
            {
                active = Some(self.switch_back(previous, &current, why));
            }
            if active.is_none() && pending.is_none() {
                pending = Some(self.create_cluster(CreateCause::FirstCluster));
            } else if let (Some(running), None) = (&active, &pending) {
                pending = self.maybe_start_new_cluster(running);
            }

            // A cluster sized for part of the capacity that is not part of an incremental
            // upgrade (the strategy changed, or nothing else serves) runs at full capacity.
            let upgrading = self.incremental.is_some() && active.is_some();
            if let Some(p) = pending.as_mut()
                && p.memory.target_capacity.is_some()
                && !upgrading
            {
                p.memory.target_capacity = None;
                self.actions.push(Action::Remember {
                    cluster: p.name.clone(),
                    memory: p.memory.clone(),
                });
            }

            // Serve config goes to the pending cluster while there is one, else to the active one
            // (which keeps its own config when this spec was rolled back on it).
            if let Some(target) = pending.as_ref().or(active.as_ref()) {
                let rolled_back = target
                    .memory
                    .rolled_back
                    .as_ref()
                    .is_some_and(|r| r.spec_hash == self.desired_hash);
                let config = if rolled_back {
                    self.observed_config_of(target)
                } else {
                    self.config_json.clone()
                };
                self.submit_if_needed(target, config);
            }

            let first = active.is_none();
            let stepping_next = upgrading
                && pending
                    .as_ref()
                    .is_some_and(|p| p.memory.target_capacity.is_some());
            if !stepping_next
                && let Some(candidate) = pending.take_if(|p| self.ready_to_take_traffic(p, first))
            {
                let mut candidate = candidate;
                if let Some(old) = &active {
                    self.retire(old, &candidate.name, "traffic moved");
                    // Its behaviour is watched against the old cluster's from now on.
                    if let Some(counts) = old.traffic.clone() {
                        candidate.memory.gate_baseline = Some(counts);
                        self.actions.push(Action::Remember {
                            cluster: candidate.name.clone(),
                            memory: candidate.memory.clone(),
                        });
                    }
                } else {
                    self.event(
                        EventKind::Normal,
                        "Ready",
                        format!("cluster {} serves traffic", candidate.name),
                    );
                }
                self.actions.push(Action::RouteTraffic {
                    cluster: Some(candidate.name.clone()),
                });
                active = Some(candidate);
            }
        }
        if pending.is_some() || active.is_none() {
            self.busy();
        }

        let roles = Roles {
            active: active.as_ref(),
            pending: pending.as_ref(),
        };
        let mut status = status::build(
            self.desired,
            self.observed,
            &roles,
            &self.serve_config,
            &self.config_hash,
            self.skipped_upgrade
                .as_ref()
                .map(|(reason, why)| (*reason, why.as_str())),
        );
        if let Some(step) = &step {
            step.write(
                &mut status,
                &self.observed.status,
                self.desired.generation,
                self.now,
            );
            status::stamp(&mut status, &self.observed.status, self.now);
        }
        if let Some(split) = self.split_through_gateway(&status) {
            self.actions.push(split);
        }
        if !status::is_ready(&status) || status::settling(&status) {
            self.busy();
        }
        for event in status::deployment_transitions(&self.observed.status, &status) {
            self.actions.push(Action::Event(event));
        }
        let requeue_after = self.requeue_after();
        Decision {
            actions: self.actions,
            status,
            requeue_after,
        }
    }

    /// Schedules the deletion of a cluster traffic has left (after the deletion delay, once
    /// no request is in flight on it), with an event.
    fn retire(&mut self, old: &ObservedCluster, successor: &str, what: &str) {
        let delay = self.deletion_delay();
        // Look again when it is due.
        let due = Duration::from_secs(u64::try_from(delay).unwrap_or(0));
        self.due_in(due);
        let at = Timestamp::from_second(self.now.as_second() + delay).unwrap_or(self.now);
        self.actions.push(Action::Remember {
            cluster: old.name.clone(),
            memory: ClusterMemory {
                delete_at: Some(at),
                ..old.memory.clone()
            },
        });
        let drain = if old.in_flight.is_some() {
            ", once no request is in flight on it"
        } else {
            ""
        };
        self.event(
            EventKind::Normal,
            "TrafficSwitched",
            format!(
                "{what} from {} to {successor}; {} stops in {delay}s{drain}",
                old.name, old.name
            ),
        );
    }

    /// One reconcile of an incremental upgrade: rollback or not, one capacity change or one
    /// traffic move when due, the Serve configs that carry the capacities, and the end.
    fn step(
        &mut self,
        options: Options,
        mut active: ObservedCluster,
        mut pending: ObservedCluster,
    ) -> Stepped {
        let mut split = Split::from_status(&self.observed.status);
        let was_rolling_back = status::condition_true(&self.observed.status, ROLLBACK_IN_PROGRESS);
        let rolling_back = pending.memory.spec_hash != self.desired_hash;
        if rolling_back && !was_rolling_back {
            let why = if active.memory.spec_hash == self.desired_hash {
                "the spec returned to the active cluster's"
            } else {
                "the spec changed again mid-upgrade; the new one starts once traffic is back"
            };
            self.event(
                EventKind::Normal,
                ROLLBACK_IN_PROGRESS,
                format!(
                    "{why}: traffic returns to {} step by step, {} is removed",
                    active.name, pending.name
                ),
            );
        }

        // Serve capacity: one change at a time, once the cluster gaining traffic holds what its
        // capacity allows, and (forward) once the active cluster shed what it was asked to.
        // Through a Gateway, only once the Gateway and the HTTPRoute are ready (as KubeRay).
        let settled = |c: &ObservedCluster| c.nodes.workers_running <= c.nodes.workers_desired;
        let mut held_by_gateway = None;
        if let Some(change) = incremental::capacity_step(&split, &options, rolling_back) {
            let growing_pending = matches!(change, Capacity::Pending(_)) && !rolling_back;
            let ready_for_it = !growing_pending
                || (self.capacity_applied(&self.observed_config_of(&active), &active)
                    && settled(&active));
            let gateway_wait = self.gateway_wait();
            if ready_for_it && gateway_wait.is_some() {
                held_by_gateway = gateway_wait;
            } else if ready_for_it {
                let (cluster, capacity) = match change {
                    Capacity::Active(c) => {
                        split.active_capacity = c;
                        (&mut active, c)
                    }
                    Capacity::Pending(c) => {
                        split.pending_capacity = c;
                        (&mut pending, c)
                    }
                };
                cluster.memory.target_capacity = Some(capacity);
                let name = cluster.name.clone();
                self.actions.push(Action::Remember {
                    cluster: name.clone(),
                    memory: cluster.memory.clone(),
                });
                self.event(
                    EventKind::Normal,
                    "TargetCapacityChanged",
                    format!("Serve target_capacity of {name} set to {capacity}%"),
                );
            }
        }

        // The Serve configs carrying those capacities: the new spec's on the pending cluster
        // (its own kept one during a rollback), the active cluster's own.
        let pending_config = if rolling_back {
            self.observed_config_of(&pending)
        } else {
            self.config_json.clone()
        };
        let active_config = self.observed_config_of(&active);
        self.submit_if_needed(&pending, pending_config.clone());
        if active.memory.target_capacity.is_some() {
            // Never asked for a capacity, the active cluster keeps what it runs.
            self.submit_if_needed(&active, active_config);
        }

        // Traffic: one move when due.
        let pending_ready = !rolling_back
            && self.capacity_applied(&pending_config, &pending)
            && self.ready_to_take_traffic(&pending, false)
            && deployments_settled(&pending);
        if let Some(next) =
            incremental::traffic_step(&split, &options, rolling_back, pending_ready, self.now)
        {
            self.event(
                EventKind::Normal,
                "TrafficMigrated",
                format!(
                    "{}% of requests to {}, {}% to {}",
                    next.pending_traffic, pending.name, next.active_traffic, active.name
                ),
            );
            split = next;
        }
        if let Some(at) = split.next_move_at(&options, rolling_back) {
            let wait = at.as_second() - self.now.as_second();
            if wait > 0 {
                self.due_in(Duration::from_secs(wait as u64));
            }
        }

        // The new cluster's behaviour gates every step: once it takes traffic, its error ratio is
        // compared with the old cluster's over the same window.
        if !rolling_back && split.pending_traffic > 0 {
            if pending.memory.gate_baseline.is_none()
                && let Some(counts) = active.traffic.clone()
            {
                pending.memory.gate_baseline = Some(counts);
                self.actions.push(Action::Remember {
                    cluster: pending.name.clone(),
                    memory: pending.memory.clone(),
                });
            }
            if let Some(why) = self.misbehaves(&active, &pending) {
                return self.roll_back_automatically(options, active, pending, why);
            }
        }

        // The end: promotion, or the rollback complete.
        if !rolling_back && split.upgraded() {
            self.retire(
                &active,
                &pending.name,
                "incremental upgrade complete: traffic moved",
            );
            self.actions.push(Action::RouteTraffic {
                cluster: Some(pending.name.clone()),
            });
            return Stepped {
                active: pending,
                pending: None,
                split,
                rolling_back: false,
                options,
                promoted: true,
                held_by_gateway: None,
            };
        }
        if rolling_back && split.rolled_back(pending.nodes.head_ready) {
            self.retire(
                &pending,
                &active.name,
                "rollback complete: traffic moved back",
            );
            return Stepped {
                active,
                pending: None,
                split,
                rolling_back: false,
                options,
                promoted: false,
                held_by_gateway: None,
            };
        }
        Stepped {
            active,
            pending: Some(pending),
            split,
            rolling_back,
            options,
            promoted: false,
            held_by_gateway,
        }
    }

    /// Why the new cluster of an incremental upgrade must be rolled back, if it must: more than
    /// `rayservice.dev/max-error-percent` of its requests failed (at least 20 counted), and more
    /// than of the old cluster's over the same window.
    fn misbehaves(&self, active: &ObservedCluster, pending: &ObservedCluster) -> Option<String> {
        let new = pending.traffic.as_ref()?;
        let base = pending.memory.gate_baseline.as_ref()?;
        let old = active.traffic.as_ref()?;
        let old_requests = old.requests.saturating_sub(base.requests);
        let old_failures = old.failures.saturating_sub(base.failures);
        let limit = self
            .desired
            .annotation(ANNOTATION_MAX_ERROR_PERCENT)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_ERROR_PERCENT);
        let percent = |failures: u64, requests: u64| {
            if requests == 0 {
                0.0
            } else {
                failures as f64 * 100.0 / requests as f64
            }
        };
        let new_percent = percent(new.failures, new.requests);
        let old_percent = percent(old_failures, old_requests);
        if new.requests >= GATE_MIN_REQUESTS
            && new_percent > limit as f64
            && new_percent > old_percent
        {
            return Some(format!(
                "{} failed {} of {} requests ({new_percent:.1}%, above {ANNOTATION_MAX_ERROR_PERCENT} {limit}%) while {} failed {old_failures} of {old_requests} ({old_percent:.1}%) over the same time",
                pending.name, new.failures, new.requests, active.name
            ));
        }
        // Latency, when asked: the new cluster's p99 against the old one's over the same window.
        let ratio = self
            .desired
            .annotation(ANNOTATION_MAX_P99_RATIO)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r > 0.0)?;
        let (new_p99, new_counted) = new.p99_since(None)?;
        let (old_p99, old_counted) = old.p99_since(Some(base))?;
        (new_counted >= GATE_MIN_REQUESTS
            && old_counted >= GATE_MIN_REQUESTS
            && new_p99 as f64 > ratio * old_p99 as f64)
            .then(|| {
                format!(
                    "{}'s p99 latency reached {:.1} ms over {new_counted} requests, above {ANNOTATION_MAX_P99_RATIO} {ratio} times {}'s {:.1} ms over {old_counted} requests in the same time",
                    pending.name,
                    new_p99 as f64 / 1000.0,
                    active.name,
                    old_p99 as f64 / 1000.0
                )
            })
    }

    /// The cluster traffic left last, while it is still kept (its deletion is not due).
    fn retiring_predecessor(&self, current: &ObservedCluster) -> Option<ObservedCluster> {
        self.observed
            .clusters
            .iter()
            .filter(|c| c.name != current.name && c.created_at <= current.created_at)
            .filter(|c| c.memory.delete_at.is_some_and(|at| at > self.now))
            .max_by_key(|c| c.created_at)
            .cloned()
    }

    /// Traffic goes back to the cluster it left: the new one failed more than allowed during
    /// the deletion delay. The new cluster stops (drained), the spec is remembered as rolled
    /// back. Returns the serving cluster.
    fn switch_back(
        &mut self,
        mut previous: ObservedCluster,
        current: &ObservedCluster,
        why: String,
    ) -> ObservedCluster {
        self.event(
            EventKind::Warning,
            ROLLED_BACK_AUTOMATICALLY,
            format!("{why}: traffic is back on {}, {} is removed; this spec is not tried again until it changes", previous.name, current.name),
        );
        self.actions.push(Action::RouteTraffic {
            cluster: Some(previous.name.clone()),
        });
        previous.memory.delete_at = None;
        previous.memory.draining_since = None;
        previous.memory.rolled_back = Some(RolledBack {
            spec_hash: current.memory.spec_hash.clone(),
            message: format!("rolled back automatically: {why}"),
        });
        self.actions.push(Action::Remember {
            cluster: previous.name.clone(),
            memory: previous.memory.clone(),
        });
        self.actions.push(Action::Remember {
            cluster: current.name.clone(),
            memory: ClusterMemory {
                delete_at: Some(self.now),
                ..current.memory.clone()
            },
        });
        self.due_in(Duration::ZERO);
        self.skipped_upgrade = previous
            .memory
            .rolled_back
            .as_ref()
            .map(|r| (ROLLED_BACK_AUTOMATICALLY, r.message.clone()));
        previous
    }

    /// Undoes an incremental upgrade at once: all traffic back to the active cluster at full
    /// capacity, the new cluster retired, the spec remembered as rolled back.
    fn roll_back_automatically(
        &mut self,
        options: Options,
        mut active: ObservedCluster,
        pending: ObservedCluster,
        why: String,
    ) -> Stepped {
        self.event(
            EventKind::Warning,
            ROLLED_BACK_AUTOMATICALLY,
            format!("{why}: all traffic is back on {}, {} is removed; this spec is not tried again until it changes", active.name, pending.name),
        );
        self.actions.push(Action::RouteTraffic {
            cluster: Some(active.name.clone()),
        });
        active.memory.target_capacity = Some(100);
        active.memory.rolled_back = Some(RolledBack {
            spec_hash: self.desired_hash.clone(),
            message: format!("rolled back automatically: {why}"),
        });
        self.actions.push(Action::Remember {
            cluster: active.name.clone(),
            memory: active.memory.clone(),
        });
        self.retire(
            &pending,
            &active.name,
            "upgrade rolled back automatically: traffic moved",
        );
        self.skipped_upgrade = active
            .memory
            .rolled_back
            .as_ref()
            .map(|r| (ROLLED_BACK_AUTOMATICALLY, r.message.clone()));
        let now = Some(self.now);
        Stepped {
            active,
            pending: None,
            split: Split {
                active_capacity: 100,
                active_traffic: 100,
                pending_capacity: 0,
                pending_traffic: 0,
                active_migrated: now,
                pending_migrated: now,
            },
            rolling_back: false,
            options,
            promoted: false,
            held_by_gateway: None,
        }
    }

    /// The Serve config a cluster runs (kept when it was submitted), or the current one.
    fn observed_config_of(&self, cluster: &ObservedCluster) -> serde_json::Value {
        match &cluster.memory.submitted_config {
            Some(config) => without_capacity(config),
            None => self.config_json.clone(),
        }
    }

    /// Whether the cluster accepted `config` at the capacity its memory holds (a cluster never
    /// asked for a capacity runs at full capacity).
    fn capacity_applied(&self, config: &serde_json::Value, cluster: &ObservedCluster) -> bool {
        if cluster.memory.target_capacity.is_none() {
            return true;
        }
        let (_, hash) = with_capacity(config, cluster.memory.target_capacity);
        cluster.memory.submitted_config_hash.as_deref() == Some(hash.as_str())
    }

    /// Through a Gateway, while the spec asks for incremental upgrades (as KubeRay): the Gateway
    /// of the spec's class, and the HTTPRoute's weights as the status says.
    fn split_through_gateway(&self, status: &RayServiceStatus) -> Option<Action> {
        if !matches!(self.observed.traffic_split, TrafficSplit::Gateway(_)) {
            return None;
        }
        self.incremental?;
        let gateway_class_name = self
            .desired
            .spec
            .upgrade_strategy
            .as_ref()?
            .cluster_upgrade_options
            .as_ref()?
            .gateway_class_name
            .clone()?;
        Some(Action::SplitTraffic {
            gateway_class_name,
            backends: incremental::backends(status),
        })
    }

    /// Why the Gateway cannot carry a new split yet, when traffic moves through one: KubeRay
    /// changes Serve capacities only once the Gateway is `Accepted` and `Programmed` and the
    /// HTTPRoute is `Accepted` with `ResolvedRefs` by that Gateway.
    fn gateway_wait(&self) -> Option<String> {
        let TrafficSplit::Gateway(observed) = &self.observed.traffic_split else {
            return None;
        };
        gateway_not_ready(self.desired.name, observed)
    }

    /// Locally no Gateway is needed: say so once per generation when the spec has none.
    fn note_no_gateway_needed(&mut self) {
        let spec = self.desired.spec;
        let gateway = spec
            .upgrade_strategy
            .as_ref()
            .and_then(|s| s.cluster_upgrade_options.as_ref())
            .and_then(|o| o.gateway_class_name.as_deref())
            .is_some_and(|g| !g.is_empty());
        let autoscaling = spec
            .ray_cluster_config
            .as_ref()
            .is_some_and(|c| c.enable_in_tree_autoscaling == Some(true));
        let mut missing = Vec::new();
        if !gateway {
            missing.push("clusterUpgradeOptions.gatewayClassName");
        }
        if !autoscaling {
            missing.push("rayClusterConfig.enableInTreeAutoscaling");
        }
        if !missing.is_empty() {
            self.event(
                EventKind::Normal,
                "IncrementalUpgradeWithoutGateway",
                format!(
                    "{} not set: not needed here, where the Serve endpoint splits traffic itself and worker nodes follow target_capacity (KubeRay on Kubernetes requires them)",
                    missing.join(" and ")
                ),
            );
        }
    }

    /// When to look again: soon while something changes, every few seconds for health checks
    /// while a head can be asked, otherwise (a watch-driven platform with no head up) only on
    /// the platform's wake-up; never later than the next thing due ([`Self::due_in`]).
    fn requeue_after(&self) -> Duration {
        let nothing_to_ask = !self.observed.clusters.iter().any(|c| c.nodes.head_up);
        let requeue = if nothing_to_ask && self.observed.watch_driven {
            self.requeue.max(WATCH_ONLY_REQUEUE)
        } else {
            self.requeue
        };
        self.next_due.map_or(requeue, |due| requeue.min(due))
    }

    /// Clusters that are neither active nor pending: retiring ones stop when due; a leftover of an
    /// interrupted create is adopted as pending when it matches the spec, else removed.
    fn sweep_unreferenced(
        &mut self,
        active: Option<&ObservedCluster>,
        pending: &mut Option<ObservedCluster>,
    ) {
        let referenced = |cluster: &ObservedCluster| {
            active.is_some_and(|a| a.name == cluster.name)
                || pending.as_ref().is_some_and(|p| p.name == cluster.name)
        };
        let mut unreferenced: Vec<&'a ObservedCluster> = self
            .observed
            .clusters
            .iter()
            .filter(|c| !referenced(c))
            .collect();
        unreferenced.retain(|cluster| {
            !self.actions.contains(&Action::DeleteCluster {
                cluster: cluster.name.clone(),
            })
        });
        unreferenced.sort_by_key(|cluster| std::cmp::Reverse(cluster.created_at));
        for cluster in unreferenced {
            match cluster.memory.delete_at {
                Some(at) if at <= self.now => self.stop_when_drained(cluster, at),
                Some(at) => {
                    let wait =
                        Duration::from_secs((at.as_second() - self.now.as_second()).max(1) as u64);
                    self.due_in(wait);
                }
                None if pending.is_none() && cluster.memory.spec_hash == self.desired_hash => {
                    *pending = Some(cluster.clone());
                }
                None => self.actions.push(Action::DeleteCluster {
                    cluster: cluster.name.clone(),
                }),
            }
        }
    }

    /// A cluster due for deletion stops once no request is in flight on it, or at the drain
    /// deadline with whatever is left.
    fn stop_when_drained(&mut self, cluster: &ObservedCluster, due: Timestamp) {
        let in_flight = cluster.in_flight.unwrap_or(0);
        let timeout = self.drain_timeout();
        let deadline = Timestamp::from_second(due.as_second() + timeout).unwrap_or(due);
        if in_flight > 0 && self.now < deadline {
            if cluster.memory.draining_since.is_none() {
                self.actions.push(Action::Remember {
                    cluster: cluster.name.clone(),
                    memory: ClusterMemory {
                        draining_since: Some(self.now),
                        ..cluster.memory.clone()
                    },
                });
                self.event(
                    EventKind::Normal,
                    "Draining",
                    format!(
                        "Draining: {in_flight} request(s) in flight on {}; it stops when they finish, at the latest at {} ({} {timeout}s)",
                        cluster.name,
                        status::timestamp(deadline),
                        ANNOTATION_DRAIN_TIMEOUT
                    ),
                );
            }
            self.due_in(DRAIN_POLL);
            return;
        }
        self.actions.push(Action::DeleteCluster {
            cluster: cluster.name.clone(),
        });
        let how = if in_flight > 0 {
            format!(" at its drain deadline with {in_flight} request(s) still in flight")
        } else if cluster.memory.draining_since.is_some() {
            " once its last request in flight finished".to_string()
        } else {
            String::new()
        };
        self.event(
            EventKind::Normal,
            "ClusterDeleted",
            format!("old cluster {} stopped{how}", cluster.name),
        );
    }

    fn drain_timeout(&self) -> i64 {
        self.desired
            .annotation(ANNOTATION_DRAIN_TIMEOUT)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECONDS)
    }

    fn create_cluster(&mut self, cause: CreateCause) -> ObservedCluster {
        let name = cluster_name(self.desired.name, &self.observed.fresh_suffix);
        self.event(
            EventKind::Normal,
            "ClusterCreated",
            format!("{cause}: {name}"),
        );
        let mut memory = ClusterMemory::new(self.desired_hash.clone());
        if self.incremental.is_some() && matches!(cause, CreateCause::SpecChanged { .. }) {
            // Starts at no capacity: workers and Serve replicas come step by step.
            memory.target_capacity = Some(0);
        }
        self.actions.push(Action::CreateCluster {
            name: name.clone(),
            spec: Box::new(self.cluster_spec.clone()),
            memory: memory.clone(),
            cause,
        });
        self.busy();
        // The new cluster is not observed yet; it has no serve state until the next reconcile.
        ObservedCluster {
            name,
            spec: self.cluster_spec.clone(),
            created_at: self.now,
            memory,
            nodes: Default::default(),
            serve: ServeObservation::Unknown,
            in_flight: None,
            traffic: None,
        }
    }

    /// With only an active cluster: is a new one needed (spec change or bad health)?
    fn maybe_start_new_cluster(&mut self, running: &ObservedCluster) -> Option<ObservedCluster> {
        if running.memory.spec_hash != self.desired_hash {
            let groups = running.spec.worker_group_specs.len();
            let only_appended = self.cluster_spec.worker_group_specs.len() > groups
                && cluster_hash_of_first_groups(self.cluster_spec, groups)
                    == running.memory.spec_hash;
            if only_appended {
                self.event(
                    EventKind::Normal,
                    "WorkerGroupsAdded",
                    format!(
                        "worker groups appended to the spec are added to the running cluster {}",
                        running.name
                    ),
                );
                self.actions.push(Action::UpdateClusterInPlace {
                    name: running.name.clone(),
                    spec: Box::new(self.cluster_spec.clone()),
                    memory: ClusterMemory {
                        spec_hash: self.desired_hash.clone(),
                        ..running.memory.clone()
                    },
                });
                return None;
            }
            if let Some(rolled_back) = running
                .memory
                .rolled_back
                .as_ref()
                .filter(|r| r.spec_hash == self.desired_hash)
            {
                // Tried and rolled back automatically: not again until the spec changes.
                self.skipped_upgrade =
                    Some((ROLLED_BACK_AUTOMATICALLY, rolled_back.message.clone()));
                return None;
            }
            let changed = fields_forcing_upgrade(&running.spec, self.cluster_spec);
            let fields = changed.join(", ");
            if self.upgrade_type() == UpgradeType::None {
                self.skipped_upgrade = Some((
                    "UpgradeSkipped",
                    format!(
                        "upgradeStrategy.type is None: {fields} changed but cluster {} keeps running the old spec",
                        running.name
                    ),
                ));
                if self.spec_changed {
                    self.event(
                        EventKind::Warning,
                        "UpgradeSkipped",
                        format!("upgradeStrategy.type is None: the change of {fields} is recorded but not rolled out"),
                    );
                }
                return None;
            }
            return Some(self.create_cluster(CreateCause::SpecChanged { fields: changed }));
        }
        if self.spec_changed {
            let owned = autoscaler_fields_changed(&running.spec, self.cluster_spec);
            if !owned.is_empty() {
                self.event(
                    EventKind::Normal,
                    "NotRolledOut",
                    format!(
                        "{} changed: the autoscaler owns these fields, so cluster {} keeps its workers; the next new cluster uses the new values",
                        owned.join(", "),
                        running.name
                    ),
                );
            }
        }
        if let Some(why) = self.unhealthy(running) {
            self.event(
                EventKind::Warning,
                "ClusterUnhealthy",
                format!("cluster {}: {why}", running.name),
            );
            return Some(self.create_cluster(CreateCause::Unhealthy { why }));
        }
        None
    }

    fn upgrade_type(&self) -> UpgradeType {
        self.desired
            .spec
            .upgrade_strategy
            .as_ref()
            .and_then(|s| s.type_)
            .unwrap_or(UpgradeType::NewCluster)
    }

    fn deletion_delay(&self) -> i64 {
        self.desired
            .spec
            .ray_cluster_deletion_delay_seconds
            .map_or(DEFAULT_DELETION_DELAY_SECONDS, i64::from)
    }

    /// Why the active cluster must be replaced, if it must.
    fn unhealthy(&self, cluster: &ObservedCluster) -> Option<String> {
        let spec = self.desired.spec;
        let dashboard_limit = spec
            .deployment_unhealthy_second_threshold
            .map_or(DEFAULT_DEPLOYMENT_UNHEALTHY_SECONDS, i64::from);
        let service_limit = spec
            .service_unhealthy_second_threshold
            .map_or(DEFAULT_SERVICE_UNHEALTHY_SECONDS, i64::from);
        match &cluster.serve {
            ServeObservation::Unreachable { since, error } => {
                let for_seconds = self.now.as_second() - since.as_second();
                (for_seconds > dashboard_limit).then(|| {
                    format!("dashboard unreachable for {for_seconds}s (deploymentUnhealthySecondThreshold {dashboard_limit}s): {error}")
                })
            }
            ServeObservation::Reachable { applications, .. } => {
                let previous = &self
                    .observed
                    .status
                    .active_service_status
                    .application_statuses;
                applications.iter().find_map(|app| {
                    if !app.status.is_failing() {
                        return None;
                    }
                    let since = previous
                        .get(&app.name)
                        .filter(|p| p.status == app.status.as_str())
                        .and_then(|p| p.last_update_time.as_deref())
                        .and_then(|t| t.parse::<Timestamp>().ok())?;
                    let for_seconds = self.now.as_second() - since.as_second();
                    (for_seconds > service_limit).then(|| {
                        format!(
                            "application {} has been {} for {for_seconds}s (serviceUnhealthySecondThreshold {service_limit}s): {}",
                            app.name, app.status, app.message
                        )
                    })
                })
            }
            ServeObservation::Unknown => None,
        }
    }

    /// Submits `config` (at the capacity the cluster's memory holds) when the cluster has not
    /// accepted it yet, or when its head came back with no applications (a restart without
    /// GCS fault tolerance).
    fn submit_if_needed(&mut self, cluster: &ObservedCluster, config: serde_json::Value) {
        let ServeObservation::Reachable { applications, .. } = &cluster.serve else {
            return;
        };
        if !cluster.nodes.head_ready {
            return;
        }
        let (config, config_hash) = with_capacity(&config, cluster.memory.target_capacity);
        let memory = &cluster.memory;
        let accepted = memory.submitted_config_hash.as_deref() == Some(config_hash.as_str());
        let refused = memory
            .rejected_config
            .as_ref()
            .is_some_and(|rejected| rejected.hash == config_hash);
        let lost =
            accepted && applications.is_empty() && !self.serve_config.applications.is_empty();
        if (!accepted && !refused) || lost {
            if lost {
                self.event(
                    EventKind::Warning,
                    "ServeConfigResubmitted",
                    format!("cluster {} reports no applications (its head restarted): submitting them again", cluster.name),
                );
            }
            self.actions.push(Action::SubmitServeConfig {
                cluster: cluster.name.clone(),
                config,
                config_hash,
                remember_config: self.observed.traffic_split.splits(),
            });
            self.busy();
        }
    }

    /// May this pending cluster take traffic? Every application must be RUNNING. For the very
    /// first cluster (nothing serves yet, so nothing can get worse) one RUNNING app is enough: the
    /// others keep deploying, or stay failed, in plain sight in the status.
    fn ready_to_take_traffic(&self, cluster: &ObservedCluster, first: bool) -> bool {
        let (_, expected) = with_capacity(&self.config_json, cluster.memory.target_capacity);
        if !cluster.nodes.head_ready
            || cluster.memory.submitted_config_hash.as_deref() != Some(expected.as_str())
        {
            return false;
        }
        let ServeObservation::Reachable {
            applications,
            serve_endpoints,
            routes,
        } = &cluster.serve
        else {
            return false;
        };
        let wanted = &self.serve_config.applications;
        if wanted.is_empty() {
            return true;
        }
        if *serve_endpoints == 0 {
            return false;
        }
        // Serve reports an app RUNNING slightly before its proxy routes to it: wait for the route.
        let routed =
            |app: &rayservice_api::ServeApplication| match (routes, app.effective_route_prefix()) {
                (Some(routes), Some(prefix)) => routes.iter().any(|r| r == prefix),
                _ => true,
            };
        let running = |name: &str| {
            applications
                .iter()
                .any(|a| a.name == name && a.status == ServeAppStatus::Running)
        };
        let ready = |app: &rayservice_api::ServeApplication| running(&app.name) && routed(app);
        if first {
            wanted.iter().any(ready)
        } else {
            wanted.iter().all(ready)
        }
    }
}

/// `config` with Serve's `target_capacity` set (when given), and the hash of what is sent.
fn with_capacity(config: &serde_json::Value, capacity: Option<i32>) -> (serde_json::Value, String) {
    let mut config = config.clone();
    if let (Some(capacity), Some(fields)) = (capacity, config.as_object_mut()) {
        fields.insert("target_capacity".into(), capacity.into());
    }
    let hash = serve_config_hash(&config);
    (config, hash)
}

/// `config` without `target_capacity`.
fn without_capacity(config: &serde_json::Value) -> serde_json::Value {
    let mut config = config.clone();
    if let Some(fields) = config.as_object_mut() {
        fields.remove("target_capacity");
    }
    config
}

/// Why the Gateway API objects of RayService `service` cannot carry traffic yet; `None` once
/// they can.
fn gateway_not_ready(service: &str, observed: &GatewayObservation) -> Option<String> {
    let holds = |conditions: &[Condition], type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let gateway = naming::gateway_name(service);
    let route = naming::http_route_name(service);
    match &observed.gateway {
        None => return Some(format!("Gateway {gateway} does not exist yet")),
        Some(conditions) if !(holds(conditions, "Accepted") && holds(conditions, "Programmed")) => {
            return Some(format!(
                "Gateway {gateway} is not Accepted and Programmed by its controller yet"
            ));
        }
        Some(_) => {}
    }
    let accepted = observed.route.as_ref().is_some_and(|parents| {
        parents
            .iter()
            .any(|c| holds(c, "Accepted") && holds(c, "ResolvedRefs"))
    });
    (!accepted).then(|| {
        format!("HTTPRoute {route} is not Accepted with ResolvedRefs by Gateway {gateway} yet")
    })
}

/// Every deployment of the cluster is HEALTHY: Serve finished scaling to its capacity.
fn deployments_settled(cluster: &ObservedCluster) -> bool {
    match &cluster.serve {
        ServeObservation::Reachable { applications, .. } => applications.iter().all(|app| {
            app.deployments
                .iter()
                .all(|d| d.status == ServeDeploymentStatus::Healthy)
        }),
        _ => false,
    }
}

/// Where an incremental upgrade stands after this reconcile.
struct Stepped {
    active: ObservedCluster,
    pending: Option<ObservedCluster>,
    split: Split,
    rolling_back: bool,
    options: Options,
    promoted: bool,
    /// Why a capacity change that was due waits for the Gateway.
    held_by_gateway: Option<String>,
}

impl Stepped {
    /// Writes capacities, traffic shares and the rollback condition into the status.
    fn write(
        &self,
        status: &mut RayServiceStatus,
        previous: &RayServiceStatus,
        generation: i64,
        now: Timestamp,
    ) {
        let split = &self.split;
        if self.pending.is_some() {
            split.write(status);
        } else {
            let active = &mut status.active_service_status;
            if self.promoted {
                active.target_capacity = Some(split.pending_capacity);
                active.traffic_routed_percent = Some(split.pending_traffic);
                active.last_traffic_migrated_time = split.pending_migrated.map(status::timestamp);
            } else {
                active.target_capacity = Some(split.active_capacity);
                active.traffic_routed_percent = Some(split.active_traffic);
                active.last_traffic_migrated_time = split.active_migrated.map(status::timestamp);
            }
        }
        status
            .conditions
            .retain(|c| c.type_ != ROLLBACK_IN_PROGRESS);
        if self.rolling_back && self.pending.is_some() {
            status.conditions.push(status::condition(
                previous,
                ROLLBACK_IN_PROGRESS,
                true,
                "DesiredClusterSpecChanged",
                "the spec no longer matches the pending cluster: traffic returns to the active one",
                generation,
                now,
            ));
        }
        if let Some(pending) = &self.pending {
            let next = split
                .next_move_at(&self.options, self.rolling_back)
                .filter(|at| *at > now)
                .map(|at| format!("; next traffic step at {}", status::timestamp(at)))
                .unwrap_or_default();
            let held = self
                .held_by_gateway
                .as_ref()
                .map(|why| format!("; the next capacity step waits: {why}"))
                .unwrap_or_default();
            let message = format!(
                "{}incremental upgrade: {} has {}% of requests at capacity {}%, {} has {}% at capacity {}%{next}{held}",
                if self.rolling_back {
                    "rolling back "
                } else {
                    ""
                },
                self.active.name,
                split.active_traffic,
                split.active_capacity,
                pending.name,
                split.pending_traffic,
                split.pending_capacity,
            );
            if let Some(c) = status
                .conditions
                .iter_mut()
                .find(|c| c.type_ == status::UPGRADE_IN_PROGRESS)
            {
                c.message = message;
            }
        }
    }
}
