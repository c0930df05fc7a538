//! RayClusters applied on their own (KubeRay's `ray-cluster.*.yaml` samples): local mode runs
//! them as it runs a RayService's clusters, with no Serve config and no owner. Like KubeRay's
//! RayCluster controller: the head and the workers a group wants are started, nodes that exit
//! are started again, a larger `replicas` starts more workers, and `delete` stops everything.
//! A stored cluster with an empty `service` is one of these.

use std::sync::Arc;

use rayservice_api::{RayCluster, RayClusterSpec};
use rayservice_core::{ClusterMemory, EventKind, cluster_hash};

use crate::cluster::ClusterLayout;
use crate::controller::{Controller, ControllerError, now};
use crate::store::ClusterRecord;

pub use crate::store::NO_OWNER;

/// The parts of a RayCluster that local mode cannot run as Kubernetes would; each becomes a
/// Warning event, never a failure to start what can start.
fn kubernetes_only_parts(spec: &RayClusterSpec) -> Vec<String> {
    let mut parts = Vec::new();
    let desired = rayservice_api::resources::desired_resources(spec);
    if desired.gpus > 0 {
        parts.push(format!(
            "{} GPU(s) are announced to Ray as asked, but local mode does not check that this machine has them",
            desired.gpus
        ));
    }
    if desired.tpus > 0 {
        parts.push(format!(
            "{} TPU(s) are announced to Ray as asked; this machine has none",
            desired.tpus
        ));
    }
    let templates = std::iter::once(&spec.head_group_spec.template)
        .chain(spec.worker_group_specs.iter().map(|g| &g.template));
    let mut sidecars = false;
    let mut volumes = false;
    for template in templates {
        if let Some(pod) = &template.spec {
            sidecars |= pod.containers.len() > 1 || pod.init_containers.is_some();
            volumes |= pod.volumes.as_ref().is_some_and(|v| !v.is_empty());
        }
    }
    if sidecars {
        parts.push(
            "sidecar and init containers are not run locally (only the Ray container)".into(),
        );
    }
    if volumes {
        parts.push("volumes are not mounted locally".into());
    }
    let fields = rayservice_api::validate::unimplemented_fields(spec);
    if !fields.is_empty() {
        let fields: Vec<String> = fields.iter().map(|f| format!("spec.{f}")).collect();
        parts.push(format!(
            "{} accepted but not acted on yet",
            fields.join(", ")
        ));
    }
    if spec.head_group_spec.enable_ingress == Some(true) {
        parts.push("no ingress is made locally; the dashboard is on the front endpoint".into());
    }
    parts
}

impl Controller {
    /// Brings a RayCluster applied on its own to its stored spec: creates it, or starts the
    /// workers a larger spec wants.
    pub async fn reconcile_raycluster(self: &Arc<Self>, name: &str) -> Result<(), ControllerError> {
        let objects = self.with_store(|s| s.rayclusters())?;
        let Some((_, object)) = objects.into_iter().find(|(n, _)| n == name) else {
            return Ok(());
        };
        let cluster: RayCluster =
            serde_json::from_value(object).map_err(|e| ControllerError::Decode(e.to_string()))?;
        let spec = cluster.spec;
        match self.cluster_record(name)? {
            None => {
                let layout = self.clusters.plan()?;
                let record = ClusterRecord {
                    name: name.to_string(),
                    service: NO_OWNER.to_string(),
                    spec: spec.clone(),
                    created_at: now().as_second(),
                    memory: ClusterMemory {
                        spec_hash: cluster_hash(&spec),
                        ..ClusterMemory::default()
                    },
                    layout: serde_json::to_value(&layout)
                        .map_err(|e| ControllerError::Decode(e.to_string()))?,
                };
                self.with_store(|s| s.put_cluster(&record))?;
                for part in kubernetes_only_parts(&spec) {
                    self.note_raycluster(name, EventKind::Warning, "NotRunLocally", &part);
                }
                self.note_raycluster(
                    name,
                    EventKind::Normal,
                    "CreatedHeadPod",
                    &format!("starting the head and {} worker(s)", desired_workers(&spec)),
                );
                self.clusters.start(self.clone(), name, &spec, &layout);
            }
            Some(mut record) if record.spec != spec => {
                record.spec = spec.clone();
                record.memory.spec_hash = cluster_hash(&spec);
                self.with_store(|s| s.put_cluster(&record))?;
                self.clusters
                    .start_missing_workers(self.clone(), name, &spec);
                // Fewer replicas: the workers named in workersToDelete go first (KubeRay
                // honours them; the autoscaler names idle ones), then any.
                let named: Vec<String> = spec
                    .worker_group_specs
                    .iter()
                    .filter_map(|g| g.scale_strategy.as_ref())
                    .flat_map(|s| s.workers_to_delete.iter().cloned())
                    .collect();
                let stopped = self
                    .clusters
                    .stop_idle_surplus(self.clone(), name, &spec, None, |_| false, &named)
                    .await;
                for node in stopped {
                    self.note_raycluster(
                        name,
                        EventKind::Normal,
                        "DeletedWorkerPod",
                        &format!("deleted worker {node}: the group has fewer replicas"),
                    );
                }
            }
            Some(_) => {}
        }
        self.refresh_routes();
        Ok(())
    }

    /// Stops a RayCluster applied on its own and forgets it; `false` when there is none.
    pub async fn delete_raycluster(self: &Arc<Self>, name: &str) -> Result<bool, ControllerError> {
        let known = self
            .with_store(|s| s.rayclusters())?
            .iter()
            .any(|(n, _)| n == name);
        if !known {
            return Ok(false);
        }
        self.stop_cluster(name).await?;
        self.with_store(|s| s.remove_cluster(name))?;
        self.with_store(|s| s.remove_raycluster(name))?;
        self.refresh_routes();
        Ok(true)
    }

    /// Whether the head of a cluster counts as ready: its dashboard answered a RayService's
    /// reconcile, or, for a RayCluster applied on its own (which has no reconcile loop), the
    /// dashboard port accepts connections.
    pub fn head_ready(&self, record: &ClusterRecord) -> bool {
        if self.clusters.head_was_ready(&record.name) {
            return true;
        }
        if record.service != NO_OWNER {
            return false;
        }
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(record.layout.clone()) else {
            return false;
        };
        let running = self
            .clusters
            .observe_nodes(&record.name, &record.spec, None)
            .head_running;
        let answers = running
            && std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], layout.dashboard_port)),
                std::time::Duration::from_millis(200),
            )
            .is_ok();
        if answers {
            self.clusters.mark_head_ready(&record.name);
        }
        answers
    }

    fn note_raycluster(&self, name: &str, kind: EventKind, reason: &str, message: &str) {
        if let Err(err) = self.record_event("RayCluster", name, kind, reason, message) {
            tracing::warn!(cluster = name, reason, %err, "cannot record event");
        }
    }
}

fn desired_workers(spec: &RayClusterSpec) -> i32 {
    spec.worker_group_specs
        .iter()
        .map(rayservice_api::WorkerGroupSpec::desired_replicas)
        .sum()
}
