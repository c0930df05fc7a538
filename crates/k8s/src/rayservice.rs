//! The RayService controller: the Kubernetes platform of the shared decision core
//! (`rayservice_core::reconcile`, the same call local mode makes).
//!
//! Each reconcile observes the RayService (read fresh from the API server), the RayClusters it
//! owns, their pods, and Ray itself (each head's dashboard and each pod's Serve proxy), asks the
//! core what to do, carries the actions out and writes the status. What the core asks to keep
//! about a cluster ([`rayservice_core::ClusterMemory`]) lives on the RayCluster as an annotation
//! (and the spec hash also under KubeRay's own annotation), so a restarted operator picks up
//! where the last one stopped.
//!
//! Event driven (watches on RayServices, their RayClusters, Services and Pods); Ray has no push
//! API, so while a cluster's dashboard can be asked the core's own poll interval applies.
//!
//! Traffic between two clusters (`NewClusterWithIncrementalUpgrade`) is split through the
//! Gateway API when the API server serves it (discovery, asked again every 10 s): the core is
//! told [`TrafficSplit::Gateway`] with the state of the RayService's Gateway and HTTPRoute, and
//! they are written as it decides ([`Action::SplitTraffic`], objects in [`crate::gateway`]).
//! Without the Gateway API the core is told [`TrafficSplit::None`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rayservice_api::{RayCluster, RayClusterSpec, RayService, RayServiceStatus};
use rayservice_core::contract::{self, DashboardAnswer, ProxyFacts};
use rayservice_core::incremental::Options;
use rayservice_core::naming::{gateway_name, http_route_name, serve_service_name};
use rayservice_core::{
    Action, ClusterMemory, Desired, EventKind, GatewayObservation, NodesObservation, Observed,
    ObservedCluster, TrafficSplit, WeightedCluster,
};
use rayservice_ray::dashboard::DashboardClient;

use crate::build::{
    self, LABEL_CLUSTER, LABEL_NODE_TYPE, LABEL_ORIGIN_CRD, LABEL_ORIGIN_NAME, LABEL_SERVE,
};
use crate::events::Events;
use crate::gateway;
use crate::operate::Metrics;
use crate::raycluster::FIELD_MANAGER;
use rayservice_core::random_suffix;

pub use rayservice_api::labels::{ANNOTATION_MEMORY, RAYSERVICE_FINALIZER as FINALIZER};
/// Default dashboard port (also Ray's Serve REST API).
pub const DASHBOARD_PORT: u16 = 8265;
/// Default Serve HTTP port.
pub const SERVE_PORT: u16 = 8000;

/// Requeue after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// How long the answer to "does the API server serve the Gateway API?" is kept.
const GATEWAY_API_RECHECK: Duration = Duration::from_secs(10);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be (de)serialized.
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
    /// The RayService was not read from the API server (no name, namespace or uid).
    #[error("RayService without {0}")]
    Incomplete(&'static str),
    /// The HTTP client for Ray's dashboards could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] rayservice_ray::dashboard::DashboardError),
    /// An object of a cluster could not be built.
    #[error("building: {0}")]
    Build(#[from] crate::build::BuildError),
}

/// What the controller shares between reconciles.
pub struct Context {
    client: Client,
    http: reqwest::Client,
    events: Events,
    metrics: Metrics,
    /// Every RayService the controller watches (for the managed-objects gauge).
    watched: std::sync::OnceLock<kube::runtime::reflector::Store<RayService>>,
    /// The newest resourceVersion of each RayService (by uid) this controller wrote or read
    /// straight from the API server. A watched object at that version is current; any other may
    /// be older than the controller's own last write, and is read again.
    fresh: Mutex<HashMap<String, String>>,
    /// Whether the API server serves the Gateway API, and when that was asked.
    gateway_api: Mutex<Option<(Instant, bool)>>,
}

impl Context {
    /// A context over a client.
    pub fn new(client: Client, metrics: Metrics) -> Result<Self, Error> {
        let http = rayservice_ray::dashboard::http_client()?;
        Ok(Context {
            events: Events::new(client.clone(), "rayservice-operator"),
            client,
            http,
            metrics,
            watched: std::sync::OnceLock::new(),
            fresh: Mutex::default(),
            gateway_api: Mutex::default(),
        })
    }

    /// Whether the API server serves `gateway.networking.k8s.io/v1` Gateways and HTTPRoutes
    /// (discovery; the answer is kept [`GATEWAY_API_RECHECK`], so an API installed later is
    /// picked up).
    pub async fn gateway_api(&self) -> Result<bool, Error> {
        let cached = *self
            .gateway_api
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, served)) = cached
            && at.elapsed() < GATEWAY_API_RECHECK
        {
            return Ok(served);
        }
        let group_version = format!("{}/{}", gateway::GROUP, gateway::VERSION);
        let served = match self.client.list_api_group_resources(&group_version).await {
            Ok(list) => ["gateways", "httproutes"]
                .iter()
                .all(|wanted| list.resources.iter().any(|r| r.name == *wanted)),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => return Err(e.into()),
        };
        if cached.is_none_or(|(_, before)| before != served) {
            tracing::info!(served, "Gateway API ({group_version}) discovered");
        }
        *self
            .gateway_api
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), served));
        Ok(served)
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.fresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers the version of a RayService just written or read from the API server.
    fn saw(&self, service: &RayService) {
        if let (Some(uid), Some(version)) = (service.uid(), service.resource_version()) {
            self.fresh().insert(uid, version);
        }
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn annotation<'a>(obj: &'a impl ResourceExt, key: &str) -> Option<&'a str> {
    obj.annotations().get(key).map(String::as_str)
}

/// Where a pod's ports are reached from the operator: `IP` or `[IP]` for IPv6.
fn pod_host(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    if ip.is_empty() {
        return None;
    }
    Some(if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    })
}

/// The dashboard port of a cluster: `rayStartParams.dashboard-port`, else 8265.
fn dashboard_port(spec: &RayClusterSpec) -> u16 {
    spec.head_group_spec
        .ray_start_params
        .get("dashboard-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DASHBOARD_PORT)
}

/// The Serve port of a pod: its container port named `serve`, else 8000.
fn serve_port(pod: &Pod) -> u16 {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("serve")))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(SERVE_PORT)
}

/// Why a pod cannot run, in the kubelet's and scheduler's words.
fn pod_failure(pod: &Pod) -> Option<String> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!(
            "pod {name} failed: {}",
            status.message.as_deref().unwrap_or("no message")
        ));
    }
    let stuck = [
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "InvalidImageName",
        "CreateContainerError",
    ];
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = waiting.reason.as_deref()
            && stuck.contains(&reason)
        {
            return Some(format!(
                "pod {name}: {reason}: {}",
                waiting.message.as_deref().unwrap_or("")
            ));
        }
    }
    status.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable"))
        .then(|| {
            format!(
                "pod {name} cannot be scheduled: {}",
                c.message.as_deref().unwrap_or("")
            )
        })
    })
}

/// One RayService's cluster as read from the API server, with its pods.
struct ClusterView {
    object: RayCluster,
    pods: Vec<Pod>,
}

impl ClusterView {
    fn head(&self) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| build::label(p, LABEL_NODE_TYPE) == Some("head") && !build::is_terminating(p))
    }
}

/// What the core keeps about a cluster, from its annotations. A cluster created by KubeRay's
/// own format (or one whose memory annotation was edited away) still has its spec hash.
fn memory_of(cluster: &RayCluster) -> ClusterMemory {
    annotation(cluster, ANNOTATION_MEMORY)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| {
            ClusterMemory::new(
                annotation(cluster, rayservice_core::HASH_ANNOTATION).unwrap_or_default(),
            )
        })
}

/// One reconcile of one RayService.
struct Pass<'a> {
    ctx: &'a Context,
    service: RayService,
    name: String,
    namespace: String,
    clusters: Api<RayCluster>,
    views: Vec<ClusterView>,
    /// The API server serves the Gateway API.
    gateway_api: bool,
    /// The RayService's Gateway and HTTPRoute as read in this pass.
    gateway: Option<DynamicObject>,
    route: Option<DynamicObject>,
}

/// Brings one RayService in line with its spec. The object handed in by the watch may be a
/// little stale, so it is read again: the status names the active and pending clusters, and a
/// stale one could start a second pending cluster.
pub async fn reconcile(service: Arc<RayService>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&service, &ctx).await;
    ctx.metrics.reconciled(
        "rayservice",
        result.is_ok(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(watched) = ctx.watched.get() {
        let count = i64::try_from(watched.len()).unwrap_or(i64::MAX);
        ctx.metrics.set_managed("RayService", count);
    }
    result
}

async fn reconcile_inner(service: &RayService, ctx: &Context) -> Result<Requeue, Error> {
    let name = service
        .metadata
        .name
        .clone()
        .ok_or(Error::Incomplete("name"))?;
    let namespace = service
        .metadata
        .namespace
        .clone()
        .ok_or(Error::Incomplete("namespace"))?;
    let services: Api<RayService> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = service.uid().is_some_and(|uid| {
        let known = ctx.fresh().get(&uid).cloned();
        known.is_none() || known == service.resource_version()
    });
    let service = if current {
        service.clone()
    } else {
        let Some(fresh) = services.get_opt(&name).await? else {
            return Ok(Requeue::await_change());
        };
        ctx.saw(&fresh);
        fresh
    };
    if service.metadata.deletion_timestamp.is_some() {
        return clean_up(ctx, &services, &service).await;
    }
    if !service.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = service.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers}});
        let patched = services
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.saw(&patched);
    }
    let mut pass = Pass {
        ctx,
        clusters: Api::namespaced(ctx.client.clone(), &namespace),
        name,
        namespace,
        service,
        views: Vec::new(),
        gateway_api: false,
        gateway: None,
        route: None,
    };
    pass.load().await?;
    pass.run().await
}

impl Pass<'_> {
    fn uid(&self) -> &str {
        self.service.metadata.uid.as_deref().unwrap_or_default()
    }

    /// Reads the RayClusters this RayService owns and their pods.
    async fn load(&mut self) -> Result<(), Error> {
        let uid = self.uid().to_string();
        let selector = format!(
            "{LABEL_ORIGIN_NAME}={},{LABEL_ORIGIN_CRD}=RayService",
            self.name
        );
        let owned: Vec<RayCluster> = self
            .clusters
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .collect();
        let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let mut pods: Vec<Pod> = if owned.is_empty() {
            Vec::new()
        } else {
            // From the API server's watch cache: at least as new as the event that woke this
            // reconcile; a pod missing for a moment only delays what follows.
            pods_api
                .list(&ListParams::default().labels(&selector).match_any())
                .await?
                .items
        };
        self.views = owned
            .into_iter()
            .map(|object| {
                let cluster = object.name_any();
                let (mine, rest): (Vec<Pod>, Vec<Pod>) = pods
                    .drain(..)
                    .partition(|p| build::label(p, LABEL_CLUSTER) == Some(cluster.as_str()));
                pods = rest;
                ClusterView { object, pods: mine }
            })
            .collect();
        Ok(())
    }

    fn view(&self, cluster: &str) -> Option<&ClusterView> {
        self.views.iter().find(|v| v.object.name_any() == cluster)
    }

    async fn run(mut self) -> Result<Requeue, Error> {
        let previous: RayServiceStatus = self.service.status.clone().unwrap_or_default();
        let active_name = previous.active_service_status.ray_cluster_name.clone();
        let observed_clusters = futures::future::join_all(self.views.iter().map(|view| {
            self.observe(
                view,
                active_name.as_deref() == Some(&view.object.name_any()),
            )
        }))
        .await;
        let traffic_split = self.observe_gateway().await?;
        let observed = Observed {
            now: now(),
            status: previous.clone(),
            clusters: observed_clusters,
            fresh_suffix: random_suffix(),
            watch_driven: true,
            traffic_split,
        };
        let changed: Vec<&ObservedCluster> = self
            .views
            .iter()
            .zip(&observed.clusters)
            .filter(|(view, cluster)| memory_of(&view.object) != cluster.memory)
            .map(|(_, cluster)| cluster)
            .collect();
        for cluster in changed {
            self.remember(&cluster.name, &cluster.memory).await?;
        }
        let spec = self.service.spec.clone();
        let generation = self.service.metadata.generation.unwrap_or(1);
        let desired = Desired::new(&self.name, generation, &spec)
            .with_annotations(self.service.metadata.annotations.as_ref());
        let decision = rayservice_core::reconcile(&desired, &observed);
        let mut status = decision.status;
        let requeue_after = decision.requeue_after;
        for action in decision.actions {
            self.carry_out(action).await?;
        }
        self.fill_cluster_details(&mut status);
        if status != previous {
            self.write_status(&status).await?;
        }
        if let Some(active) = status.active_service_status.ray_cluster_name.as_deref() {
            self.point_services_at(active).await?;
        }

        Ok(Requeue::requeue(requeue_after))
    }

    fn gateways(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.namespace,
            &gateway::gateway_resource(),
        )
    }

    fn routes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.namespace,
            &gateway::http_route_resource(),
        )
    }

    /// How traffic can be split here: through the Gateway API when the API server serves it
    /// (with the RayService's Gateway and HTTPRoute as they are, read while the spec asks for
    /// incremental upgrades), else not at all.
    async fn observe_gateway(&mut self) -> Result<TrafficSplit, Error> {
        self.gateway_api = self.ctx.gateway_api().await?;
        if !self.gateway_api {
            return Ok(TrafficSplit::None);
        }
        if Options::of(&self.service.spec).is_none() {
            return Ok(TrafficSplit::Gateway(GatewayObservation::default()));
        }
        let gateway = self.gateways().get_opt(&gateway_name(&self.name)).await?;
        let route = self.routes().get_opt(&http_route_name(&self.name)).await?;
        let observation = GatewayObservation {
            gateway: gateway.as_ref().map(gateway::gateway_conditions),
            route: route
                .as_ref()
                .map(|r| gateway::route_conditions(r, &gateway_name(&self.name), &self.namespace)),
        };
        self.gateway = gateway;
        self.route = route;
        Ok(TrafficSplit::Gateway(observation))
    }

    /// Writes the Gateway, each backend cluster's Serve service and the HTTPRoute with the
    /// weights the core decided; an object already as wanted is left alone.
    async fn split_traffic(
        &mut self,
        class: &str,
        backends: &[WeightedCluster],
    ) -> Result<(), Error> {
        let owner = self
            .service
            .controller_owner_ref(&())
            .ok_or(Error::Incomplete("uid"))?;
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let wanted = gateway::gateway(&self.name, &self.namespace, &owner, class);
        if self.gateway.as_ref().map(gateway::gateway_essentials)
            != Some(gateway::gateway_essentials(&wanted))
        {
            tracing::info!(service = %self.name, class, "writing the Gateway");
            let written = self
                .gateways()
                .patch(&wanted.name_any(), &apply, &Patch::Apply(&wanted))
                .await?;
            self.gateway = Some(written);
        }
        let mut refs = Vec::new();
        for backend in backends {
            let Some(view) = self.view(&backend.cluster) else {
                continue;
            };
            let svc = gateway::cluster_serve_service(&self.name, &view.object)?;
            let port = gateway::serve_port(&view.object.spec);
            self.ensure_service(&svc).await?;
            refs.push(gateway::Backend {
                service: svc.name_any(),
                port: i64::from(port),
                weight: i64::from(backend.weight),
            });
        }
        if refs.is_empty() {
            return Ok(());
        }
        let wanted = gateway::http_route(&self.name, &self.namespace, &owner, &refs);
        if self.route.as_ref().map(gateway::route_essentials)
            != Some(gateway::route_essentials(&wanted))
        {
            tracing::info!(service = %self.name, backends = ?refs, "writing the HTTPRoute");
            let written = self
                .routes()
                .patch(&wanted.name_any(), &apply, &Patch::Apply(&wanted))
                .await?;
            self.route = Some(written);
        }
        Ok(())
    }

    /// Creates or corrects a Service whose selector or ports differ from `svc`'s.
    async fn ensure_service(&self, svc: &Service) -> Result<(), Error> {
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let essentials = |s: &Service| {
            let spec = s.spec.clone().unwrap_or_default();
            let ports: Vec<(Option<String>, i32)> = spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.name, p.port))
                .collect();
            (spec.selector, ports)
        };
        let current = services.get_opt(&svc.name_any()).await?;
        if current.as_ref().map(essentials) != Some(essentials(svc)) {
            tracing::info!(service = %self.name, svc = %svc.name_any(), "writing a cluster's Serve service");
            services
                .patch(
                    &svc.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(svc),
                )
                .await?;
        }
        Ok(())
    }

    /// What one cluster looks like right now: its pods, its dashboard, its Serve proxies,
    /// seen through the core's contract.
    async fn observe(&self, view: &ClusterView, serving: bool) -> ObservedCluster {
        let object = &view.object;
        let spec = object.spec.clone();
        let head = view.head();
        let head_host = head.filter(|p| build::pod_ready(p)).and_then(pod_host);
        let workers = view.pods.iter().filter(|p| {
            build::label(p, LABEL_NODE_TYPE) == Some("worker") && !build::is_terminating(p)
        });
        let facts = NodesObservation {
            head_up: head_host.is_some(),
            head_ready: false,
            workers_desired: spec
                .worker_group_specs
                .iter()
                .map(rayservice_api::WorkerGroupSpec::desired_replicas)
                .sum(),
            workers_running: workers.filter(|p| build::pod_running(p)).count() as i32,
            failure: view.pods.iter().find_map(pod_failure),
        };
        let dashboard = head_host
            .as_ref()
            .map(|host| DashboardClient::at(self.ctx.http.clone(), host, dashboard_port(&spec)));
        let answer = contract::ask(dashboard.as_ref()).await;
        let proxies = match (&answer, &dashboard) {
            (DashboardAnswer::Answered(_), Some(dashboard)) => {
                self.probe_proxies(view, dashboard).await
            }
            _ => ProxyFacts::default(),
        };
        let seen = contract::see(facts, answer, proxies, serving, &memory_of(object), now());
        ObservedCluster {
            name: object.name_any(),
            spec,
            created_at: object
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(now, |t| t.0),
            memory: seen.memory,
            nodes: seen.nodes,
            serve: seen.serve,
            // Requests in flight on a cluster are not counted here (they pass through the
            // Service, not through us): it stops after the deletion delay, as in KubeRay.
            in_flight: None,
            traffic: None,
        }
    }

    /// Asks every running pod's Serve proxy for its health (keeping each pod's `ray.io/serve`
    /// label in step) and the head's proxy for its routes.
    async fn probe_proxies(&self, view: &ClusterView, dashboard: &DashboardClient) -> ProxyFacts {
        let live: Vec<&Pod> = view
            .pods
            .iter()
            .filter(|p| build::pod_running(p) && !build::is_terminating(p))
            .collect();
        let health = futures::future::join_all(live.iter().map(|pod| async move {
            let Some(host) = pod_host(pod) else {
                return false;
            };
            DashboardClient::at(self.ctx.http.clone(), host, DASHBOARD_PORT)
                .serve_healthz(serve_port(pod))
                .await
        }))
        .await;
        for (pod, up) in live.iter().zip(&health) {
            self.label_serving(pod, *up).await;
        }
        let head_serves = live
            .iter()
            .zip(&health)
            .any(|(p, up)| *up && build::label(p, LABEL_NODE_TYPE) == Some("head"));
        let routes = match view.head() {
            Some(head) if head_serves => dashboard
                .serve_routes(serve_port(head))
                .await
                .ok()
                .map(|r| r.into_keys().collect()),
            _ => None,
        };
        ProxyFacts {
            serve_endpoints: health.iter().filter(|up| **up).count() as i32,
            routes,
        }
    }

    /// Sets `ray.io/serve` on a pod when it changed. A failure is logged: the label only
    /// steers the serve Service, and the next reconcile tries again.
    async fn label_serving(&self, pod: &Pod, up: bool) {
        let value = if up { "true" } else { "false" };
        if build::label(pod, LABEL_SERVE) == Some(value) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = serde_json::json!({"metadata": {"labels": {LABEL_SERVE: value}}});
        if let Err(error) = pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(pod = %pod.name_any(), %error, "could not label the pod");
        }
    }

    async fn carry_out(&mut self, action: Action) -> Result<(), Error> {
        match action {
            Action::CreateCluster {
                name, spec, memory, ..
            } => self.create_cluster(&name, *spec, &memory).await,
            Action::UpdateClusterInPlace { name, spec, memory } => {
                let patch = serde_json::json!({
                    "metadata": {"annotations": {
                        rayservice_core::HASH_ANNOTATION: memory.spec_hash,
                        ANNOTATION_MEMORY: serde_json::to_string(&memory)?,
                    }},
                    "spec": serde_json::to_value(&*spec)?,
                });
                self.clusters
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(())
            }
            Action::SubmitServeConfig {
                cluster,
                config,
                config_hash,
                remember_config,
            } => {
                let keep = remember_config.then_some(&config);
                self.submit(&cluster, &config, &config_hash, keep).await
            }
            Action::RouteTraffic { cluster } => {
                tracing::info!(service = %self.name, cluster = ?cluster, "traffic switched");
                match cluster {
                    Some(cluster) => self.point_services_at(&cluster).await?,
                    // At nothing (suspend): no Gateway either, as KubeRay.
                    None if self.gateway_api => {
                        delete_gateway_objects(&self.ctx.client, &self.namespace, &self.name)
                            .await?
                    }
                    None => {}
                }
                Ok(())
            }
            Action::SplitTraffic {
                gateway_class_name,
                backends,
            } => self.split_traffic(&gateway_class_name, &backends).await,
            Action::Remember { cluster, memory } => self.remember(&cluster, &memory).await,
            Action::DeleteCluster { cluster } => {
                match self
                    .clusters
                    .delete(&cluster, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                if self.gateway_api {
                    // Its own Serve service goes with it (also by its owner reference).
                    let svc_api: Api<Service> =
                        Api::namespaced(self.ctx.client.clone(), &self.namespace);
                    delete_if_there(&svc_api, &serve_service_name(&cluster)).await?;
                }
                Ok(())
            }
            Action::Event(event) => {
                self.publish(event.kind, &event.reason, &event.message)
                    .await;
                Ok(())
            }
        }
    }

    async fn create_cluster(
        &mut self,
        name: &str,
        spec: RayClusterSpec,
        memory: &ClusterMemory,
    ) -> Result<(), Error> {
        let owner = self
            .service
            .controller_owner_ref(&())
            .ok_or(Error::Incomplete("uid"))?;
        let mut cluster = RayCluster::new(name, spec);
        cluster.metadata = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_ORIGIN_NAME.to_string(), self.name.clone()),
                (LABEL_ORIGIN_CRD.to_string(), "RayService".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (
                    rayservice_core::HASH_ANNOTATION.to_string(),
                    memory.spec_hash.clone(),
                ),
                (
                    ANNOTATION_MEMORY.to_string(),
                    serde_json::to_string(memory)?,
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        };
        tracing::info!(service = %self.name, cluster = name, "creating RayCluster");
        match self.clusters.create(&PostParams::default(), &cluster).await {
            Ok(created) => {
                self.views.push(ClusterView {
                    object: created,
                    pods: Vec::new(),
                });
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the memory the core handed back for a cluster, in its annotation (and in this
    /// pass's copy of the cluster, which later actions read).
    async fn remember(&mut self, cluster: &str, memory: &ClusterMemory) -> Result<(), Error> {
        let text = serde_json::to_string(memory)?;
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_MEMORY: &text}}});
        match self
            .clusters
            .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if let Some(view) = self
            .views
            .iter_mut()
            .find(|v| v.object.name_any() == cluster)
        {
            view.object
                .annotations_mut()
                .insert(ANNOTATION_MEMORY.to_string(), text);
        }
        Ok(())
    }

    /// PUTs the serve config to a cluster's head; the core says what the answer means.
    async fn submit(
        &mut self,
        cluster: &str,
        config: &serde_json::Value,
        config_hash: &str,
        keep: Option<&serde_json::Value>,
    ) -> Result<(), Error> {
        let Some(view) = self.view(cluster) else {
            return Ok(());
        };
        let Some(host) = view.head().and_then(pod_host) else {
            return Ok(());
        };
        let dashboard = DashboardClient::at(
            self.ctx.http.clone(),
            host,
            dashboard_port(&view.object.spec),
        );
        let memory = memory_of(&view.object);
        let outcome =
            contract::submit(&dashboard, cluster, config, config_hash, keep, &memory).await;
        if outcome.memory != memory {
            self.remember(cluster, &outcome.memory).await?;
        }
        for event in outcome.events {
            self.publish(event.kind, &event.reason, &event.message)
                .await;
        }
        Ok(())
    }

    /// Records an event on the RayService; a failure to record is logged, never fatal.
    async fn publish(&self, kind: EventKind, reason: &str, message: &str) {
        tracing::info!(service = %self.name, reason, message, "event");
        self.ctx
            .events
            .publish(&self.service, kind, reason, message)
            .await;
    }

    /// Adds what only the platform knows to the clusters' status: head pod IP and name,
    /// service IP and endpoints, as the RayCluster controller recorded them.
    fn fill_cluster_details(&self, status: &mut RayServiceStatus) {
        for cluster_status in [
            &mut status.active_service_status,
            &mut status.pending_service_status,
        ] {
            let Some(view) = cluster_status
                .ray_cluster_name
                .as_deref()
                .and_then(|name| self.view(name))
            else {
                continue;
            };
            let (Some(ray_status), Some(actual)) = (
                cluster_status.ray_cluster_status.as_mut(),
                view.object.status.as_ref(),
            ) else {
                continue;
            };
            ray_status.head = actual.head.clone();
            ray_status.endpoints = actual.endpoints.clone();
            ray_status.state = actual.state.clone();
            ray_status.observed_generation = actual.observed_generation;
        }
    }

    async fn write_status(&self, status: &RayServiceStatus) -> Result<(), Error> {
        let services: Api<RayService> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = serde_json::json!({
            "apiVersion": rayservice_api::API_VERSION_V1,
            "kind": "RayService",
            "status": serde_json::to_value(status)?,
        });
        let written = services
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.ctx.saw(&written);
        Ok(())
    }

    /// `S-head-svc` and `S-serve-svc` select the pods of `cluster`. Their names and cluster
    /// IPs stay across upgrades; only the selector moves.
    async fn point_services_at(&self, cluster: &str) -> Result<(), Error> {
        let services: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let Some(view) = self.view(cluster) else {
            return Ok(());
        };
        let wanted = [self.head_service(view)?, self.serve_service(cluster)?];
        for svc in wanted {
            let name = svc.name_any();
            let current = services.get_opt(&name).await?;
            let same = current.as_ref().is_some_and(|c| {
                c.spec.as_ref().and_then(|s| s.selector.as_ref())
                    == svc.spec.as_ref().and_then(|s| s.selector.as_ref())
                    && c.spec.as_ref().and_then(|s| s.ports.as_ref()).map(Vec::len)
                        == svc
                            .spec
                            .as_ref()
                            .and_then(|s| s.ports.as_ref())
                            .map(Vec::len)
            });
            if !same {
                tracing::info!(service = %self.name, svc = %name, cluster, "pointing the service at the cluster");
                services
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&svc),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    fn service_meta(&self, name: String) -> Result<ObjectMeta, Error> {
        let owner = self
            .service
            .controller_owner_ref(&())
            .ok_or(Error::Incomplete("uid"))?;
        Ok(ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_ORIGIN_NAME.to_string(), self.name.clone()),
                (LABEL_ORIGIN_CRD.to_string(), "RayService".to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        })
    }

    /// `S-head-svc`: the cluster's head service, under the RayService's stable name.
    fn head_service(&self, view: &ClusterView) -> Result<Service, Error> {
        let per_cluster =
            build::head_service(&view.object).map_err(|_| Error::Incomplete("uid"))?;
        Ok(Service {
            metadata: ObjectMeta {
                annotations: per_cluster.metadata.annotations,
                ..self.service_meta(format!("{}-head-svc", self.name))?
            },
            spec: per_cluster.spec,
            status: None,
        })
    }

    /// `S-serve-svc`: port 8000 of every pod of the cluster whose Serve proxy is healthy.
    fn serve_service(&self, cluster: &str) -> Result<Service, Error> {
        Ok(Service {
            metadata: self.service_meta(format!("{}-serve-svc", self.name))?,
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([
                    (LABEL_CLUSTER.to_string(), cluster.to_string()),
                    (LABEL_SERVE.to_string(), "true".to_string()),
                ])),
                ports: Some(vec![ServicePort {
                    name: Some("serve".to_string()),
                    port: i32::from(SERVE_PORT),
                    target_port: Some(IntOrString::String("serve".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        })
    }
}

/// Deleting a RayService: remove its clusters and services, then let it go.
async fn clean_up(
    ctx: &Context,
    services: &Api<RayService>,
    service: &RayService,
) -> Result<Requeue, Error> {
    if !service.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }
    let name = service.name_any();
    let namespace = service.namespace().unwrap_or_default();
    let uid = service.uid().unwrap_or_default();
    let clusters: Api<RayCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{LABEL_ORIGIN_NAME}={name},{LABEL_ORIGIN_CRD}=RayService");
    let owned: Vec<RayCluster> = clusters
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    for cluster in &owned {
        if cluster.metadata.deletion_timestamp.is_none() {
            tracing::info!(service = %name, cluster = %cluster.name_any(), "deleting RayCluster of a deleted RayService");
            match clusters
                .delete(&cluster.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let per_cluster = owned.iter().map(|c| serve_service_name(&c.name_any()));
    for svc in [format!("{name}-head-svc"), format!("{name}-serve-svc")]
        .into_iter()
        .chain(per_cluster)
    {
        delete_if_there(&svc_api, &svc).await?;
    }
    if ctx.gateway_api().await? {
        delete_gateway_objects(&ctx.client, &namespace, &name).await?;
    }
    if !owned.is_empty() {
        // Called again when the clusters are gone (they are watched).
        return Ok(Requeue::requeue(Duration::from_secs(5)));
    }
    let remaining: Vec<String> = service
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    // The resourceVersion makes the API server refuse the patch if the object changed since
    // it was read (another finalizer added or removed meanwhile).
    let patch = serde_json::json!({"metadata": {
        "finalizers": remaining,
        "resourceVersion": service.resource_version(),
    }});
    services
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.fresh().remove(&uid);
    Ok(Requeue::await_change())
}

/// Deletes an object; one that is not there is fine.
async fn delete_if_there<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the HTTPRoute and the Gateway of RayService `service`.
async fn delete_gateway_objects(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<(), Error> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &gateway::http_route_resource());
    delete_if_there(&routes, &http_route_name(service)).await?;
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &gateway::gateway_resource());
    delete_if_there(&gateways, &gateway_name(service)).await
}

/// What to do after a failed reconcile: log, and try again in 5 s.
pub fn error_policy(service: Arc<RayService>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(service = %service.name_any(), %error, "reconcile failed");
    Requeue::requeue(ERROR_REQUEUE)
}

/// The RayService a pod of one of its clusters belongs to.
fn owner_of_pod(pod: Pod) -> Option<ObjectRef<RayService>> {
    let labels = pod.metadata.labels.as_ref()?;
    (labels.get(LABEL_ORIGIN_CRD).map(String::as_str) == Some("RayService")).then_some(())?;
    let name = labels.get(LABEL_ORIGIN_NAME)?;
    let namespace = pod.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Runs the RayService controller over all namespaces until the stream ends.
pub async fn run(client: Client, metrics: Metrics) -> Result<(), Error> {
    let origin = format!("{LABEL_ORIGIN_CRD}=RayService");
    let services: Api<RayService> = Api::all(client.clone());
    let clusters: Api<RayCluster> = Api::all(client.clone());
    let svcs: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client, metrics)?);
    let controller = Controller::new(services, watcher::Config::default())
        .with_config(crate::operate::controller_config());
    let _ = ctx.watched.set(controller.store());
    controller
        .owns(clusters, watcher::Config::default().labels(&origin))
        .owns(svcs, watcher::Config::default().labels(&origin))
        .watches(
            pods,
            watcher::Config::default().labels(&origin),
            owner_of_pod,
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(service = %obj.name, "reconciled"),
                Err(e) => crate::operate::log_controller_error("rayservice", &e),
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    #[test]
    fn a_pod_that_cannot_pull_its_image_says_so() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "ray-head".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ImagePullBackOff".into()),
                            message: Some("rayproject/ray:9.9.9 not found".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let failure = pod_failure(&pod).unwrap_or_default();
        assert!(failure.contains("ImagePullBackOff"), "{failure}");
        assert!(failure.contains("9.9.9"), "{failure}");
    }

    #[test]
    fn ipv6_pod_addresses_are_bracketed() {
        let mut pod = Pod {
            status: Some(PodStatus {
                pod_ip: Some("fd00::5".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_host(&pod).as_deref(), Some("[fd00::5]"));
        pod.status = Some(PodStatus {
            pod_ip: Some("10.0.0.7".into()),
            ..Default::default()
        });
        assert_eq!(pod_host(&pod).as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn dashboard_port_follows_ray_start_params() {
        let mut spec = RayClusterSpec::default();
        assert_eq!(dashboard_port(&spec), 8265);
        spec.head_group_spec
            .ray_start_params
            .insert("dashboard-port".into(), "9265".into());
        assert_eq!(dashboard_port(&spec), 9265);
    }
}
