//! The local RayService controller: observe the clusters, ask the core, carry out its actions.
//! It decides nothing itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rayservice_api::{RayService, RayServiceSpec, RayServiceStatus, ServeConfig};
use rayservice_core::contract::{self, DashboardAnswer, ProxyFacts};
use rayservice_core::{
    Action, ClusterMemory, Desired, EventKind, NodesObservation, Observed, ObservedCluster,
    TrafficCounts, TrafficSplit,
};
use rayservice_proxy::{Backend, FrontEndpoint, RouteTable, ServiceRoute};
use rayservice_ray::auth::AuthToken;
use rayservice_ray::dashboard::DashboardClient;
use serde_json::Value;
use tokio::sync::Notify;

use crate::cluster::{ClusterLayout, Clusters, NodeHost};
use crate::settings::Settings;
use crate::store::{ClusterRecord, EventRecord, NodeRecord, ServiceRecord, Store, StoreError};

/// Shared state of the local control plane.
pub struct Controller {
    /// Settings in force.
    pub settings: Settings,
    /// The database; every access is short.
    pub store: Mutex<Store>,
    /// Node processes.
    pub clusters: Clusters,
    /// Front endpoint for Serve.
    pub serve_front: FrontEndpoint,
    /// Front endpoint for the dashboard.
    pub dashboard_front: FrontEndpoint,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    service_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    http: reqwest::Client,
}

/// Now, from the system clock.
pub fn now() -> Timestamp {
    Timestamp::now()
}

impl Controller {
    /// A controller over an opened store and bound endpoints.
    pub fn new(
        settings: Settings,
        store: Store,
        clusters: Clusters,
        serve_front: FrontEndpoint,
        dashboard_front: FrontEndpoint,
    ) -> Result<Arc<Self>, rayservice_ray::dashboard::DashboardError> {
        let http = rayservice_ray::dashboard::http_client()?;
        Ok(Arc::new(Controller {
            settings,
            store: Mutex::new(store),
            clusters,
            serve_front,
            dashboard_front,
            wakers: Mutex::new(HashMap::new()),
            service_locks: Mutex::new(HashMap::new()),
            http,
        }))
    }

    /// Runs `f` with the store.
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    /// Wakes the reconcile loop of `service`, starting one if none runs.
    pub fn wake(self: &Arc<Self>, service: &str) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = wakers.get(service) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        wakers.insert(service.to_string(), notify.clone());
        let controller = self.clone();
        let name = service.to_string();
        tokio::spawn(async move { controller.run_service(name, notify).await });
    }

    /// Wakes every service whose cluster is `cluster` (a node process changed).
    pub fn wake_cluster_owner(self: &Arc<Self>, cluster: &str) {
        let owner = self.with_store(|s| {
            Ok(s.clusters(None)?
                .into_iter()
                .find(|c| c.name == cluster)
                .map(|c| c.service))
        });
        match owner {
            Ok(Some(service)) if service != crate::store::NO_OWNER => self.wake(&service),
            // A RayCluster applied on its own has no reconcile loop: its routes may change.
            Ok(Some(_)) => self.refresh_routes(),
            _ => {}
        }
    }

    async fn run_service(self: Arc<Self>, name: String, notify: Arc<Notify>) {
        loop {
            let requeue = match self.reconcile(&name).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(service = %name, %error, "reconcile failed");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(requeue) => {}
            }
        }
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        self.refresh_routes();
    }

    /// The lock that keeps a reconcile and a delete of the same RayService from interleaving.
    fn service_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.service_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// One reconcile of one RayService; `None` once it is gone.
    async fn reconcile(self: &Arc<Self>, name: &str) -> Result<Option<Duration>, ControllerError> {
        let lock = self.service_lock(name);
        let _serialized = lock.lock().await;
        let Some(record) = self.with_store(|s| s.service(name))? else {
            return Ok(None);
        };
        if record.deleting {
            self.delete_everything_of(name).await?;
            return Ok(None);
        }
        let object: RayService =
            serde_json::from_value(record.object.clone()).map_err(ControllerError::decode)?;
        let spec: RayServiceSpec = serde_json::from_value(record.resolved_spec.clone())
            .map_err(ControllerError::decode)?;
        // A RayService not reconciled yet has no status (null).
        let status: RayServiceStatus = if record.status.is_null() {
            RayServiceStatus::default()
        } else {
            serde_json::from_value(record.status.clone()).map_err(ControllerError::decode)?
        };
        let generation = object.metadata.generation.unwrap_or(1);

        let observed = self
            .observe_service(name, status, rayservice_core::random_suffix())
            .await?;
        let desired = Desired::new(name, generation, &spec)
            .with_annotations(object.metadata.annotations.as_ref());
        let decision = rayservice_core::reconcile(&desired, &observed);
        let mut status = decision.status;
        for cluster in &observed.clusters {
            let stored = self.cluster_record(&cluster.name)?;
            if stored.is_some_and(|record| record.memory != cluster.memory) {
                self.remember(&cluster.name, cluster.memory.clone())?;
            }
        }

        for action in decision.actions {
            self.carry_out(name, action).await?;
        }
        self.size_workers_to_capacity(name).await?;
        self.fill_cluster_details(&mut status);
        let status_json = serde_json::to_value(&status).map_err(ControllerError::decode)?;
        if status_json != record.status {
            // A delete may have been asked while this reconcile ran: write the status only.
            self.with_store(|s| s.put_service_status(name, &status_json))?;
        }
        self.refresh_routes();
        Ok(Some(decision.requeue_after))
    }

    /// Everything observed about one RayService's clusters, now. Nothing is written: the
    /// memory each cluster should keep after this look is in the answer.
    pub async fn observe_service(
        &self,
        name: &str,
        status: RayServiceStatus,
        fresh_suffix: String,
    ) -> Result<Observed, ControllerError> {
        let cluster_records = self.with_store(|s| s.clusters(Some(name)))?;
        let active = status.active_service_status.ray_cluster_name.clone();
        let now = now();
        let clusters = futures::future::join_all(cluster_records.iter().map(|cluster| {
            let serving = active.as_deref() == Some(cluster.name.as_str());
            self.observe(cluster, serving, now)
        }))
        .await;
        Ok(Observed {
            now,
            status,
            clusters,
            fresh_suffix,
            watch_driven: false,
            // The Serve front endpoint splits one service's requests between two clusters.
            traffic_split: TrafficSplit::Itself,
        })
    }

    /// What one cluster looks like right now, through the core's contract.
    async fn observe(
        &self,
        record: &ClusterRecord,
        serving: bool,
        now: Timestamp,
    ) -> ObservedCluster {
        let layout: Option<ClusterLayout> = serde_json::from_value(record.layout.clone()).ok();
        let nodes =
            self.clusters
                .observe_nodes(&record.name, &record.spec, record.memory.target_capacity);
        let dashboard = layout
            .as_ref()
            .filter(|_| nodes.head_running)
            .map(|layout| self.dashboard(&record.name, layout));
        let answer = contract::ask(dashboard.as_ref()).await;
        let proxies = match (&answer, &dashboard, &layout) {
            (DashboardAnswer::Answered(_), Some(dashboard), Some(layout)) => {
                let serve_up = dashboard.serve_healthz(layout.serve_port).await;
                let routes = if serve_up {
                    dashboard
                        .serve_routes(layout.serve_port)
                        .await
                        .ok()
                        .map(|r| r.into_keys().collect())
                } else {
                    None
                };
                ProxyFacts {
                    serve_endpoints: i32::from(serve_up),
                    routes,
                }
            }
            _ => ProxyFacts::default(),
        };
        let facts = NodesObservation {
            head_up: nodes.head_running,
            head_ready: false,
            workers_desired: nodes.workers_desired,
            workers_running: nodes.workers_running,
            failure: nodes.failure,
        };
        let seen = contract::see(facts, answer, proxies, serving, &record.memory, now);
        let counts = self
            .serve_front
            .cluster_stats(&record.name)
            .unwrap_or_default();
        if seen.nodes.head_ready {
            self.clusters.mark_head_ready(&record.name);
        }
        ObservedCluster {
            name: record.name.clone(),
            spec: record.spec.clone(),
            created_at: Timestamp::from_second(record.created_at).unwrap_or(now),
            memory: seen.memory,
            nodes: seen.nodes,
            serve: seen.serve,
            // The front endpoint counts every request it forwarded to the cluster until its
            // response has been sent, and those that failed.
            in_flight: Some(counts.in_flight),
            traffic: Some(TrafficCounts {
                requests: counts.requests,
                failures: counts.failures,
                latency: counts
                    .latency
                    .iter()
                    .enumerate()
                    .map(|(i, count)| {
                        let bound = rayservice_proxy::latency_bucket_bound(i).as_micros();
                        (u64::try_from(bound).unwrap_or(u64::MAX), *count)
                    })
                    .collect(),
            }),
        }
    }

    /// During an incremental upgrade a cluster runs the share of its workers its Serve
    /// capacity needs: missing workers start once its head runs, surplus ones stop once no
    /// Serve replica runs on them (what the Ray autoscaler does for KubeRay).
    async fn size_workers_to_capacity(
        self: &Arc<Self>,
        service: &str,
    ) -> Result<(), ControllerError> {
        let records = self.with_store(|s| s.clusters(Some(service)))?;
        for record in records {
            let capacity = record.memory.target_capacity;
            let nodes = self
                .clusters
                .observe_nodes(&record.name, &record.spec, capacity);
            if capacity.is_none() || !nodes.head_running || record.memory.delete_at.is_some() {
                continue;
            }
            self.clusters
                .start_missing_workers(self.clone(), &record.name, &record.spec);
            if nodes.workers_running <= nodes.workers_desired {
                continue;
            }
            let Ok(layout) = serde_json::from_value::<ClusterLayout>(record.layout.clone()) else {
                continue;
            };
            // Without the replicas' processes nothing is known to be idle: nothing stops.
            let Ok(details) = self
                .dashboard(&record.name, &layout)
                .get_serve_applications()
                .await
            else {
                continue;
            };
            let replicas: Vec<i32> = details
                .applications
                .values()
                .flat_map(|app| app.deployments.values())
                .flat_map(|d| d.replicas.iter())
                .filter_map(|r| r.pid.and_then(|pid| i32::try_from(pid).ok()))
                .collect();
            let stopped = self
                .clusters
                .stop_idle_surplus(
                    self.clone(),
                    &record.name,
                    &record.spec,
                    capacity,
                    |leader| {
                        replicas
                            .iter()
                            .any(|pid| crate::process::descends_from(*pid, leader))
                    },
                    &[],
                )
                .await;
            for node in stopped {
                self.record_event(
                    "RayCluster",
                    &record.name,
                    EventKind::Normal,
                    "WorkerStopped",
                    &format!(
                        "worker {node} stopped: Serve target_capacity {}% needs fewer workers and no replica ran on it",
                        capacity.unwrap_or(100)
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// A client for a cluster's dashboard that sends the cluster's token. A token that
    /// cannot be read (the cluster's first node has not made it yet) is left out; the
    /// dashboard then refuses, which reads as "not ready".
    fn dashboard(&self, cluster: &str, layout: &ClusterLayout) -> DashboardClient {
        DashboardClient::with_client(self.http.clone(), layout.dashboard_port)
            .with_token(self.cluster_token(cluster))
    }

    fn cluster_token(&self, cluster: &str) -> Option<AuthToken> {
        match AuthToken::read(&self.settings.cluster_token_file(cluster)) {
            Ok(token) => Some(token),
            Err(error) => {
                tracing::debug!(cluster, %error, "no Ray token for the cluster yet");
                None
            }
        }
    }

    /// Keeps the memory the core handed back for a cluster.
    fn remember(&self, cluster: &str, memory: ClusterMemory) -> Result<(), StoreError> {
        if let Some(mut record) = self.cluster_record(cluster)? {
            record.memory = memory;
            self.with_store(|s| s.put_cluster(&record))?;
        }
        Ok(())
    }

    async fn carry_out(
        self: &Arc<Self>,
        service: &str,
        action: Action,
    ) -> Result<(), ControllerError> {
        match action {
            Action::CreateCluster {
                name,
                spec: cluster_spec,
                memory,
                ..
            } => {
                let layout = self.clusters.plan()?;
                let record = ClusterRecord {
                    name: name.clone(),
                    service: service.to_string(),
                    spec: (*cluster_spec).clone(),
                    created_at: now().as_second(),
                    memory,
                    layout: serde_json::to_value(&layout).map_err(ControllerError::decode)?,
                };
                self.with_store(|s| s.put_cluster(&record))?;
                self.clusters
                    .start(self.clone(), &name, &cluster_spec, &layout);
            }
            Action::UpdateClusterInPlace {
                name,
                spec: cluster_spec,
                memory,
            } => {
                let Some(mut record) = self.cluster_record(&name)? else {
                    return Ok(());
                };
                record.spec = (*cluster_spec).clone();
                record.memory = memory;
                self.with_store(|s| s.put_cluster(&record))?;
                self.clusters
                    .start_missing_workers(self.clone(), &name, &cluster_spec);
            }
            Action::SubmitServeConfig {
                cluster,
                config,
                config_hash,
                remember_config,
            } => {
                self.submit(service, &cluster, config, config_hash, remember_config)
                    .await?;
            }
            Action::RouteTraffic { cluster } => {
                tracing::info!(service, cluster = ?cluster, "traffic switched");
            }
            // Asked only of a platform that splits through a Gateway; the Serve endpoint
            // reads the shares from the status itself.
            Action::SplitTraffic { .. } => {}
            Action::Remember { cluster, memory } => self.remember(&cluster, memory)?,
            Action::DeleteCluster { cluster } => {
                self.stop_cluster(&cluster).await?;
                self.with_store(|s| s.remove_cluster(&cluster))?;
            }
            Action::Event(event) => self.record_event(
                "RayService",
                service,
                event.kind,
                &event.reason,
                &event.message,
            )?,
        }
        Ok(())
    }

    /// Stops and forgets clusters whose RayService no longer exists (a crash during a delete).
    pub async fn remove_orphans(&self) -> Result<(), ControllerError> {
        let services: Vec<String> = self
            .with_store(|s| s.services())?
            .into_iter()
            .map(|s| s.name)
            .collect();
        for cluster in self.with_store(|s| s.clusters(None))? {
            if !services.contains(&cluster.service) {
                tracing::info!(cluster = %cluster.name, service = %cluster.service, "stopping a cluster whose RayService is gone");
                self.stop_cluster(&cluster.name).await?;
                self.with_store(|s| s.remove_cluster(&cluster.name))?;
            }
        }
        Ok(())
    }

    /// Stops a cluster's processes and removes its temp dir.
    pub(crate) async fn stop_cluster(&self, name: &str) -> Result<(), StoreError> {
        let temp_dir = self
            .cluster_record(name)?
            .and_then(|r| serde_json::from_value::<ClusterLayout>(r.layout).ok())
            .map(|l| l.temp_dir);
        self.clusters.stop(name, temp_dir.as_deref()).await;
        Ok(())
    }

    pub(crate) fn cluster_record(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.with_store(|s| Ok(s.clusters(None)?.into_iter().find(|c| c.name == name)))
    }

    /// Records an event for an object.
    pub fn record_event(
        &self,
        kind: &str,
        object: &str,
        event_kind: EventKind,
        reason: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let at = now().as_second();
        tracing::info!(object, reason, message, "event");
        self.with_store(|s| {
            s.add_event(&EventRecord {
                object_kind: kind.to_string(),
                object_name: object.to_string(),
                event_type: event_kind.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                count: 1,
                first_seen: at,
                last_seen: at,
            })
        })
    }

    /// PUTs a serve config, adapted to this machine, to a cluster's dashboard; the core says
    /// what the answer means.
    async fn submit(
        &self,
        service: &str,
        cluster: &str,
        config: Value,
        config_hash: String,
        remember_config: bool,
    ) -> Result<(), ControllerError> {
        let Some(record) = self.cluster_record(cluster)? else {
            return Ok(());
        };
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(record.layout.clone()) else {
            return Ok(());
        };
        let keep = remember_config.then(|| config.clone());
        let (local_config, notes) = localize_serve_config(config, layout.serve_port);
        for note in notes {
            self.record_event(
                "RayService",
                service,
                EventKind::Normal,
                "LocalServeOptions",
                &note,
            )?;
        }
        let dashboard = self.dashboard(cluster, &layout);
        let outcome = contract::submit(
            &dashboard,
            cluster,
            &local_config,
            &config_hash,
            keep.as_ref(),
            &record.memory,
        )
        .await;
        if outcome.memory != record.memory {
            self.remember(cluster, outcome.memory)?;
        }
        for event in outcome.events {
            self.record_event(
                "RayService",
                service,
                event.kind,
                &event.reason,
                &event.message,
            )?;
        }
        Ok(())
    }

    /// Puts cluster-level details the core does not know (ports, head pod and its address,
    /// always loopback here) into the status.
    fn fill_cluster_details(&self, status: &mut RayServiceStatus) {
        for cluster_status in [
            &mut status.active_service_status,
            &mut status.pending_service_status,
        ] {
            let Some(name) = cluster_status.ray_cluster_name.clone() else {
                continue;
            };
            let Some(ray_status) = cluster_status.ray_cluster_status.as_mut() else {
                continue;
            };
            if let Ok(Some(record)) = self.cluster_record(&name)
                && let Ok(layout) = serde_json::from_value::<ClusterLayout>(record.layout)
            {
                ray_status.endpoints = layout.endpoints();
            }
            ray_status.head = Some(local_head_info(self.clusters.head_pod_name(&name)));
        }
    }

    /// Recomputes both front endpoints' routes from every RayService's active cluster.
    pub fn refresh_routes(&self) {
        let Ok(services) = self.with_store(|s| s.services()) else {
            return;
        };
        let Ok(clusters) = self.with_store(|s| s.clusters(None)) else {
            return;
        };
        let standalone: Vec<String> = clusters
            .iter()
            .filter(|c| c.service == crate::store::NO_OWNER)
            .map(|c| c.name.clone())
            .collect();
        let layouts: BTreeMap<String, ClusterLayout> = clusters
            .into_iter()
            .filter_map(|c| {
                serde_json::from_value::<ClusterLayout>(c.layout)
                    .ok()
                    .map(|l| (c.name, l))
            })
            .collect();
        let mut serve_routes = Vec::new();
        let mut dashboard_routes = Vec::new();
        for service in services {
            let active = service.status["activeServiceStatus"]["rayClusterName"]
                .as_str()
                .map(str::to_string);
            let layout = active.as_ref().and_then(|name| layouts.get(name));
            let prefixes = route_prefixes(&service);
            let dashboard_upstream =
                layout.map(|l| std::net::SocketAddr::from(([127, 0, 0, 1], l.dashboard_port)));
            // The clusters taking requests and their shares, as the core wrote them in the
            // status (during an incremental upgrade the pending cluster takes its share).
            let status: RayServiceStatus =
                serde_json::from_value(service.status.clone()).unwrap_or_default();
            let backends: Vec<Backend> = rayservice_core::incremental::backends(&status)
                .into_iter()
                .filter(|b| b.weight > 0)
                .filter_map(|b| {
                    let layout = layouts.get(&b.cluster)?;
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], layout.serve_port));
                    let weight = u32::try_from(b.weight).unwrap_or(0);
                    Some(Backend::new(b.cluster, addr, weight))
                })
                .collect();
            serve_routes.push(
                ServiceRoute::new(service.name.clone(), None, prefixes).with_backends(backends),
            );
            // The dashboard front listens on loopback only and stands in for the user's
            // `kubectl port-forward`: it adds the cluster's token, so a browser or `ray job`
            // on this machine works without knowing it.
            let token = active
                .as_deref()
                .filter(|_| layout.is_some())
                .and_then(|name| self.cluster_token(name));
            dashboard_routes.push(
                ServiceRoute::new(
                    service.name.clone(),
                    dashboard_upstream,
                    Vec::<String>::new(),
                )
                .with_bearer_token(token.map(|t| t.secret().to_string())),
            );
        }
        // RayClusters applied on their own: their dashboard by `Host: NAME-head-svc` (and by
        // default when nothing else is ready).
        for (name, layout) in &layouts {
            if standalone.contains(name) {
                let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], layout.dashboard_port));
                let token = self.cluster_token(name);
                dashboard_routes.push(
                    ServiceRoute::new(name.clone(), Some(upstream), Vec::<String>::new())
                        .with_bearer_token(token.map(|t| t.secret().to_string())),
                );
            }
        }
        self.serve_front.set_routes(RouteTable::new(serve_routes));
        self.dashboard_front
            .set_routes(RouteTable::new(dashboard_routes));
    }

    /// Stops every cluster of a RayService and removes it.
    async fn delete_everything_of(&self, name: &str) -> Result<(), ControllerError> {
        let clusters = self.with_store(|s| s.clusters(Some(name)))?;
        for cluster in clusters {
            self.stop_cluster(&cluster.name).await?;
            self.with_store(|s| s.remove_cluster(&cluster.name))?;
        }
        self.with_store(|s| s.remove_service(name))?;
        self.refresh_routes();
        Ok(())
    }

    /// Marks a RayService for deletion and waits until everything it started has stopped.
    pub async fn delete_service(self: &Arc<Self>, name: &str) -> Result<bool, ControllerError> {
        let lock = self.service_lock(name);
        let _serialized = lock.lock().await;
        let Some(mut record) = self.with_store(|s| s.service(name))? else {
            return Ok(false);
        };
        record.deleting = true;
        self.with_store(|s| s.put_service(&record))?;
        // The reconcile loop may be mid-flight; delete here too, then let the loop notice.
        self.delete_everything_of(name).await?;
        self.wake(name);
        Ok(true)
    }

    /// Every RayService name, for starting their loops after a restart.
    pub fn service_names(&self) -> Vec<String> {
        self.with_store(|s| s.services())
            .map(|v| v.into_iter().map(|s| s.name).collect())
            .unwrap_or_default()
    }
}

/// The head of a local cluster: every node listens on loopback.
pub fn local_head_info(pod_name: Option<String>) -> rayservice_api::HeadInfo {
    rayservice_api::HeadInfo {
        pod_ip: Some("127.0.0.1".into()),
        service_ip: Some("127.0.0.1".into()),
        pod_name,
        service_name: None,
    }
}

/// Route prefixes of a stored RayService's applications.
pub fn route_prefixes(service: &ServiceRecord) -> Vec<String> {
    service.resolved_spec["serveConfigV2"]
        .as_str()
        .and_then(|text| ServeConfig::parse(text, "spec.serveConfigV2").ok())
        .map(|config| config.route_prefixes())
        .unwrap_or_default()
}

/// Adapts a serve config to several Ray nodes on one machine: the Serve proxy runs on the head
/// only, on this cluster's own port, on loopback. Returns notes for what was overridden.
pub fn localize_serve_config(mut config: Value, serve_port: u16) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    let Some(object) = config.as_object_mut() else {
        return (config, notes);
    };
    match object.get("proxy_location").and_then(Value::as_str) {
        None | Some("HeadOnly") | Some("Disabled") => {}
        Some(other) => notes.push(format!(
            "proxy_location {other} runs as HeadOnly locally: all nodes share one machine, so one Serve proxy serves them all"
        )),
    }
    if object.get("proxy_location").and_then(Value::as_str) != Some("Disabled") {
        object.insert("proxy_location".into(), Value::String("HeadOnly".into()));
    }
    let http = object
        .entry("http_options")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(http) = http.as_object_mut() {
        if let Some(port) = http
            .get("port")
            .and_then(Value::as_u64)
            .filter(|p| *p != u64::from(serve_port))
        {
            notes.push(format!(
                "http_options.port {port} is served through the local Serve endpoint; the cluster's own proxy listens on 127.0.0.1:{serve_port}"
            ));
        }
        http.insert("host".into(), Value::String("127.0.0.1".into()));
        http.insert("port".into(), Value::from(serve_port));
    }
    (config, notes)
}

/// Why a reconcile step failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document does not decode.
    #[error("stored object does not decode: {0}")]
    Decode(String),
    /// A cluster could not be planned or started.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl ControllerError {
    fn decode(error: serde_json::Error) -> Self {
        ControllerError::Decode(error.to_string())
    }
}

/// RFC 3339 at second precision from Unix seconds.
pub fn rfc3339(seconds: i64) -> String {
    Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl NodeHost for Controller {
    fn clusters(&self) -> &Clusters {
        &self.clusters
    }

    fn logs_dir(&self) -> std::path::PathBuf {
        self.settings.logs_dir()
    }

    fn cluster_record(&self, cluster: &str) -> Result<Option<ClusterRecord>, String> {
        Controller::cluster_record(self, cluster).map_err(|e| e.to_string())
    }

    fn cluster_nodes(&self, cluster: &str) -> Vec<NodeRecord> {
        self.with_store(|s| s.nodes(Some(cluster)))
            .unwrap_or_default()
    }

    fn save_node(&self, node: &NodeRecord) -> Result<(), String> {
        self.with_store(|s| s.put_node(node))
            .map_err(|e| e.to_string())
    }

    fn node_event(&self, cluster: &str, kind: EventKind, reason: &str, message: &str) {
        if let Err(err) = self.record_event("RayCluster", cluster, kind, reason, message) {
            tracing::warn!(cluster, reason, %err, "cannot record event");
        }
    }

    fn node_changed(self: Arc<Self>, cluster: &str) {
        self.wake_cluster_owner(cluster);
    }

    fn forget_node(&self, cluster: &str, node: &str) {
        if let Err(err) = self.with_store(|s| s.remove_node(cluster, node)) {
            tracing::warn!(cluster, node, %err, "cannot forget a stopped node");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serve_config_is_adapted_to_one_machine() {
        let (config, notes) = localize_serve_config(
            json!({"applications": [], "http_options": {"port": 9000}}),
            41234,
        );
        assert_eq!(config["proxy_location"], "HeadOnly");
        assert_eq!(
            config["http_options"],
            json!({"port": 41234, "host": "127.0.0.1"})
        );
        assert_eq!(notes.len(), 1);
        let (config, notes) = localize_serve_config(
            json!({"applications": [], "proxy_location": "EveryNode"}),
            1,
        );
        assert_eq!(config["proxy_location"], "HeadOnly");
        assert!(notes[0].contains("EveryNode"));
        let (config, notes) = localize_serve_config(json!({"applications": []}), 1);
        assert!(notes.is_empty());
        assert_eq!(config["applications"], json!([]));
    }
}
