//! The reconcile decision: what the desired spec and the observed clusters require
//! (`docs/contract.md`). Read this file to learn what happens when
//! `rayVersion`, `replicas` or `serveConfigV2` change, and when a cluster is unhealthy.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rayservice_api::serve_api::ServeAppStatus;
use rayservice_api::{FieldError, RayClusterSpec, ServeConfig, UpgradeType};

use crate::contract::ClusterMemory;
use crate::hash::{
    autoscaler_fields_changed, cluster_hash, cluster_hash_of_first_groups, fields_forcing_upgrade,
    serve_config_hash,
};
use crate::model::{
    Action, CreateCause, Decision, Desired, Event, EventKind, Observed, ObservedCluster,
    ServeObservation,
};
use crate::naming::cluster_name;
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

/// Event reason: the spec sets fields that are accepted but not acted on yet.
pub const FIELDS_NOT_ACTED_ON: &str = "FieldsNotActedOn";

/// Decides what to do for one RayService. Pure: the same input gives the same answer.
pub fn reconcile(desired: &Desired<'_>, observed: &Observed) -> Decision {
    let (cluster_spec, serve_config) = match checked(desired) {
        Ok(parts) => parts,
        Err(error) => return status::invalid(desired, observed, &error),
    };
    if let Some(decision) = crate::suspend::decide(desired, observed) {
        return decision;
    }
    Reconcile::new(desired, observed, cluster_spec, serve_config).run()
}

fn checked<'a>(desired: &Desired<'a>) -> Result<(&'a RayClusterSpec, ServeConfig), FieldError> {
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
    next_deletion: Option<Duration>,
    skipped_upgrade: Option<String>,
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
            next_deletion: None,
            skipped_upgrade: None,
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
        let fields = rayservice_api::validate::unimplemented_service_fields(self.desired.spec);
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

        // A pending cluster built from an older spec is replaced (spec changed again mid-upgrade).
        if let Some(stale) = pending.take_if(|p| p.memory.spec_hash != self.desired_hash) {
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

        if active.is_none() && pending.is_none() {
            pending = Some(self.create_cluster(CreateCause::FirstCluster));
        } else if let (Some(running), None) = (&active, &pending) {
            pending = self.maybe_start_new_cluster(running);
        }

        // Serve config goes to the pending cluster while there is one, else to the active one.
        if let Some(target) = pending.as_ref().or(active.as_ref()) {
            self.submit_if_needed(target);
        }

        let first = active.is_none();
        if let Some(candidate) = pending.take_if(|p| self.ready_to_take_traffic(p, first)) {
            if let Some(old) = &active {
                let delay = self.deletion_delay();
                let at = Timestamp::from_second(self.now.as_second() + delay).unwrap_or(self.now);
                self.actions.push(Action::Remember {
                    cluster: old.name.clone(),
                    memory: ClusterMemory {
                        delete_at: Some(at),
                        ..old.memory.clone()
                    },
                });
                self.event(
                    EventKind::Normal,
                    "TrafficSwitched",
                    format!(
                        "traffic moved from {} to {}; {} stops in {delay}s",
                        old.name, candidate.name, old.name
                    ),
                );
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
        if pending.is_some() || active.is_none() {
            self.busy();
        }

        let roles = Roles {
            active: active.as_ref(),
            pending: pending.as_ref(),
        };
        let status = status::build(
            self.desired,
            self.observed,
            &roles,
            &self.serve_config,
            &self.config_hash,
            self.skipped_upgrade.as_deref(),
        );
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

    /// When to look again: soon while something changes, every few seconds for health checks
    /// while a head can be asked, otherwise (a watch-driven platform with no head up) only on
    /// the platform's wake-up; never later than the next scheduled deletion.
    fn requeue_after(&self) -> Duration {
        let nothing_to_ask = !self.observed.clusters.iter().any(|c| c.nodes.head_up);
        let requeue = if nothing_to_ask && self.observed.watch_driven {
            self.requeue.max(WATCH_ONLY_REQUEUE)
        } else {
            self.requeue
        };
        self.next_deletion.map_or(requeue, |due| requeue.min(due))
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
                Some(at) if at <= self.now => {
                    self.actions.push(Action::DeleteCluster {
                        cluster: cluster.name.clone(),
                    });
                    self.event(
                        EventKind::Normal,
                        "ClusterDeleted",
                        format!("old cluster {} stopped", cluster.name),
                    );
                }
                Some(at) => {
                    let wait =
                        Duration::from_secs((at.as_second() - self.now.as_second()).max(1) as u64);
                    self.next_deletion = Some(self.next_deletion.map_or(wait, |d| d.min(wait)));
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

    fn create_cluster(&mut self, cause: CreateCause) -> ObservedCluster {
        let name = cluster_name(self.desired.name, &self.observed.fresh_suffix);
        self.event(
            EventKind::Normal,
            "ClusterCreated",
            format!("{cause}: {name}"),
        );
        let memory = ClusterMemory::new(self.desired_hash.clone());
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
            let changed = fields_forcing_upgrade(&running.spec, self.cluster_spec);
            let fields = changed.join(", ");
            if self.upgrade_type() == UpgradeType::None {
                self.skipped_upgrade = Some(format!(
                    "upgradeStrategy.type is None: {fields} changed but cluster {} keeps running the old spec",
                    running.name
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

    /// Submits the serve config when the cluster has not accepted this version yet, or when its
    /// head came back with no applications (a restart without GCS fault tolerance).
    fn submit_if_needed(&mut self, cluster: &ObservedCluster) {
        let ServeObservation::Reachable { applications, .. } = &cluster.serve else {
            return;
        };
        if !cluster.nodes.head_ready {
            return;
        }
        let memory = &cluster.memory;
        let accepted = memory.submitted_config_hash.as_deref() == Some(self.config_hash.as_str());
        let refused = memory
            .rejected_config
            .as_ref()
            .is_some_and(|rejected| rejected.hash == self.config_hash);
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
                config: self.config_json.clone(),
                config_hash: self.config_hash.clone(),
            });
            self.busy();
        }
    }

    /// May this pending cluster take traffic? Every application must be RUNNING. For the very
    /// first cluster (nothing serves yet, so nothing can get worse) one RUNNING app is enough: the
    /// others keep deploying, or stay failed, in plain sight in the status.
    fn ready_to_take_traffic(&self, cluster: &ObservedCluster, first: bool) -> bool {
        if !cluster.nodes.head_ready
            || cluster.memory.submitted_config_hash.as_deref() != Some(self.config_hash.as_str())
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
