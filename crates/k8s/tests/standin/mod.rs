//! Stand-ins for what these machines cannot run under Kubernetes: there is no kubelet and
//! no container image, so no Ray pod ever starts. The test plays both parts, small and
//! openly:
//!
//! - [`Kubelet`] watches the Ray pods the operator creates and marks each one Running and Ready
//!   with its own loopback address (`127.A.B.N`) as pod IP, the way a kubelet reports a pod.
//! - For every head pod it starts a [`StandInRay`] on that address: the dashboard's Serve
//!   REST API on port 8265 (`PUT`/`GET /api/serve/applications/`, `/api/gcs_healthz`) and the
//!   Serve proxy's `/-/healthz` and `/-/routes` on port 8000. It records every PUT and
//!   reports the submitted applications DEPLOYING, then RUNNING (or keeps them DEPLOYING while
//!   the test holds them). A PUT that changes only `target_capacity` (incremental upgrades)
//!   leaves the applications RUNNING with their deployments UPSCALING or DOWNSCALING for a
//!   moment, then HEALTHY, and the GET reports the `target_capacity`, as Serve does. So the
//!   operator talks to `podIP:8265` exactly as in a cluster.
//! - [`GatewayController`] plays the controller of a GatewayClass: it marks every Gateway of a
//!   namespace `Accepted` and `Programmed` and every HTTPRoute `Accepted` with `ResolvedRefs`
//!   for each Gateway it names (the status a Gateway implementation writes); no traffic flows.
//!
//! The API server, etcd and kube-controller-manager are real (see `common`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::common::AbortOnDrop;

/// How long submitted applications report DEPLOYING before RUNNING.
const DEPLOY_TIME: Duration = Duration::from_millis(300);
/// How long deployments report UPSCALING or DOWNSCALING after a new `target_capacity`.
const RESCALE_TIME: Duration = Duration::from_millis(100);

/// What one stand-in Ray head has been told and reports.
#[derive(Debug, Default)]
pub struct RayState {
    /// Every PUT body, in order.
    pub puts: Vec<Value>,
    /// When the last config arrived.
    pub put_at: Option<Instant>,
    /// While true, applications stay DEPLOYING.
    pub hold: bool,
}

impl RayState {
    /// The Serve config last submitted, without its `target_capacity`, and that capacity.
    fn split(config: &Value) -> (Value, Value) {
        let mut apps = config.clone();
        let capacity = apps
            .as_object_mut()
            .and_then(|fields| fields.remove("target_capacity"))
            .unwrap_or(Value::Null);
        (apps, capacity)
    }

    /// `target_capacity` of the last config, `null` when none was given.
    pub fn target_capacity(&self) -> Value {
        self.puts
            .last()
            .map(|config| Self::split(config).1)
            .unwrap_or(Value::Null)
    }

    /// (application status, deployment status) now.
    fn statuses(&self) -> (&'static str, &'static str) {
        let settled = self.put_at.is_some_and(|t| t.elapsed() >= DEPLOY_TIME);
        let rescaled = self.put_at.is_some_and(|t| t.elapsed() >= RESCALE_TIME);
        let [.., before, last] = self.puts.as_slice() else {
            return if settled && !self.hold {
                ("RUNNING", "HEALTHY")
            } else {
                ("DEPLOYING", "UPDATING")
            };
        };
        let ((apps_before, capacity_before), (apps, capacity)) =
            (Self::split(before), Self::split(last));
        if apps_before == apps {
            // Only the capacity changed: the applications keep running while Serve scales.
            let number = |v: &Value| v.as_i64().unwrap_or(100);
            return match (rescaled, number(&capacity) >= number(&capacity_before)) {
                (true, _) => ("RUNNING", "HEALTHY"),
                (false, true) => ("RUNNING", "UPSCALING"),
                (false, false) => ("RUNNING", "DOWNSCALING"),
            };
        }
        if settled && !self.hold {
            ("RUNNING", "HEALTHY")
        } else {
            ("DEPLOYING", "UPDATING")
        }
    }

    fn applications(&self) -> BTreeMap<String, Value> {
        let Some(config) = self.puts.last() else {
            return BTreeMap::new();
        };
        let (app_status, deployment_status) = self.statuses();
        config["applications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|app| {
                let name = app["name"].as_str()?.to_string();
                let deployments: BTreeMap<String, Value> = app["deployments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["name"].as_str())
                    .map(|d| {
                        (
                            d.to_string(),
                            json!({"name": d, "status": deployment_status, "message": ""}),
                        )
                    })
                    .collect();
                let app_json = json!({
                    "name": name,
                    "route_prefix": app["route_prefix"],
                    "status": app_status,
                    "message": "",
                    "deployments": deployments,
                });
                Some((name, app_json))
            })
            .collect()
    }

    fn running(&self) -> bool {
        self.statuses().0 == "RUNNING"
    }
}

type Shared = Arc<Mutex<RayState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, RayState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stand-in Ray of one head pod: its dashboard and its Serve proxy.
pub struct StandInRay {
    pub state: Shared,
    _servers: Vec<AbortOnDrop>,
}

async fn put_applications(State(state): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    let mut s = lock(&state);
    s.puts.push(body);
    s.put_at = Some(Instant::now());
    StatusCode::OK
}

async fn get_applications(State(state): State<Shared>) -> Json<Value> {
    let s = lock(&state);
    Json(json!({
        "controller_info": {"actor_id": "stand-in-serve-controller", "node_id": "stand-in"},
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "proxies": {},
        "applications": s.applications(),
        "target_capacity": s.target_capacity(),
    }))
}

async fn routes(State(state): State<Shared>) -> Json<BTreeMap<String, String>> {
    let s = lock(&state);
    if !s.running() {
        return Json(BTreeMap::new());
    }
    Json(
        s.applications()
            .into_iter()
            .filter_map(|(name, app)| Some((app["route_prefix"].as_str()?.to_string(), name)))
            .collect(),
    )
}

async fn serve(addr: SocketAddr, router: Router) -> anyhow::Result<AbortOnDrop> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the stand-in Ray on {addr}"))?;
    Ok(AbortOnDrop(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })))
}

impl StandInRay {
    /// Serves the stand-in dashboard on `ip:8265` and Serve proxy on `ip:8000`.
    pub async fn start(ip: IpAddr, hold: bool) -> anyhow::Result<Self> {
        let state: Shared = Arc::new(Mutex::new(RayState {
            hold,
            ..Default::default()
        }));
        let dashboard = Router::new()
            .route(
                "/api/serve/applications/",
                get(get_applications).put(put_applications),
            )
            .route("/api/gcs_healthz", get(|| async { "success" }))
            .with_state(state.clone());
        let proxy = Router::new()
            .route("/-/healthz", get(|| async { "success" }))
            .route("/-/routes", get(routes))
            .with_state(state.clone());
        let servers = vec![
            serve(SocketAddr::new(ip, 8265), dashboard).await?,
            serve(SocketAddr::new(ip, 8000), proxy).await?,
        ];
        Ok(StandInRay {
            state,
            _servers: servers,
        })
    }
}

/// Plays the kubelet for the Ray pods of one namespace.
pub struct Kubelet {
    /// Stand-in Ray by cluster name (`ray.io/cluster`).
    pub rays: Arc<Mutex<BTreeMap<String, StandInRay>>>,
    /// What each head's stand-in Ray was told, kept after the head is gone.
    told: Arc<Mutex<BTreeMap<String, Shared>>>,
    /// Hold the applications of heads started from now on in DEPLOYING.
    pub hold_new: Arc<AtomicBool>,
    _task: AbortOnDrop,
}

impl Kubelet {
    /// Starts watching; pod IPs are `127.{net[0]}.{net[1]}.N`.
    pub fn start(client: Client, namespace: &str, net: [u8; 2]) -> Self {
        let rays: Arc<Mutex<BTreeMap<String, StandInRay>>> = Arc::default();
        let told: Arc<Mutex<BTreeMap<String, Shared>>> = Arc::default();
        let hold_new = Arc::new(AtomicBool::new(false));
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(play(
            pods,
            net,
            rays.clone(),
            told.clone(),
            hold_new.clone(),
        ));
        Kubelet {
            rays,
            told,
            hold_new,
            _task: AbortOnDrop(task),
        }
    }

    /// Every PUT the stand-in Ray of `cluster` received (also once its head is gone).
    pub fn puts(&self, cluster: &str) -> Vec<Value> {
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .map(|state| lock(state).puts.clone())
            .unwrap_or_default()
    }

    /// Stops the stand-in Ray of `cluster`: its dashboard and proxy stop answering, while the
    /// pod stays Running (a hung head).
    pub fn stop_ray(&self, cluster: &str) {
        self.rays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster);
    }

    /// Lets the applications of `cluster` become RUNNING.
    pub fn release(&self, cluster: &str) {
        if let Some(ray) = self
            .rays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
        {
            lock(&ray.state).hold = false;
        }
    }
}

async fn play(
    pods: Api<Pod>,
    net: [u8; 2],
    rays: Arc<Mutex<BTreeMap<String, StandInRay>>>,
    told: Arc<Mutex<BTreeMap<String, Shared>>>,
    hold_new: Arc<AtomicBool>,
) {
    let mut next_host: u8 = 2;
    let config = watcher::Config::default().labels("ray.io/is-ray-node=yes");
    let mut events = std::pin::pin!(watcher(pods.clone(), config));
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let (watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
            if let watcher::Event::Delete(pod) = event
                && pod.labels().get("ray.io/node-type").map(String::as_str) == Some("head")
                && let Some(cluster) = pod.labels().get("ray.io/cluster")
            {
                rays.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(cluster);
            }
            continue;
        };
        let has_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some();
        if has_ip || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ip = IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], next_host));
        next_host = next_host.wrapping_add(1).max(2);
        let head = pod.labels().get("ray.io/node-type").map(String::as_str) == Some("head");
        if head && let Some(cluster) = pod.labels().get("ray.io/cluster") {
            match StandInRay::start(ip, hold_new.load(Ordering::SeqCst)).await {
                Ok(ray) => {
                    told.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cluster.clone(), ray.state.clone());
                    rays.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cluster.clone(), ray);
                }
                Err(error) => {
                    eprintln!("stand-in kubelet: {error:#}");
                    continue;
                }
            }
        }
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        if let Err(error) = pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            eprintln!("stand-in kubelet: {error}");
        }
    }
}

/// The controller name the stand-in Gateway controller writes into route statuses.
pub const GATEWAY_CONTROLLER_NAME: &str = "example.com/stand-in-gateway-controller";

/// Plays the controller of the GatewayClass in one namespace: marks every Gateway `Accepted` and
/// `Programmed` and every HTTPRoute `Accepted` with `ResolvedRefs` for each Gateway it names,
/// at their current generation. Stops when dropped.
pub struct GatewayController {
    _task: AbortOnDrop,
}

impl GatewayController {
    pub fn start(client: Client, namespace: &str) -> Self {
        let gateways: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &rayservice_k8s::gateway::gateway_resource(),
        );
        let routes: Api<DynamicObject> = Api::namespaced_with(
            client,
            namespace,
            &rayservice_k8s::gateway::http_route_resource(),
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Err(error) = accept_all(&gateways, &routes).await {
                    eprintln!("stand-in Gateway controller: {error:#}");
                }
            }
        });
        GatewayController {
            _task: AbortOnDrop(task),
        }
    }
}

/// A condition that holds, as a Gateway controller writes it.
fn holds(type_: &str, generation: Option<i64>) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let time = k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default();
    json!({
        "type": type_,
        "status": "True",
        "reason": type_,
        "message": "stand-in Gateway controller",
        "lastTransitionTime": time.to_string(),
        "observedGeneration": generation,
    })
}

/// Whether `conditions` hold every type of `types` at `generation`.
fn all_hold(conditions: &Value, types: &[&str], generation: Option<i64>) -> bool {
    types.iter().all(|type_| {
        conditions.as_array().into_iter().flatten().any(|c| {
            c["type"] == *type_
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() == generation
        })
    })
}

async fn accept_all(
    gateways: &Api<DynamicObject>,
    routes: &Api<DynamicObject>,
) -> anyhow::Result<()> {
    let status = PatchParams::default();
    for gateway in gateways.list(&Default::default()).await?.items {
        let generation = gateway.metadata.generation;
        let conditions = &gateway.data["status"]["conditions"];
        if all_hold(conditions, &["Accepted", "Programmed"], generation) {
            continue;
        }
        let patch = json!({"status": {"conditions": [
            holds("Accepted", generation),
            holds("Programmed", generation),
        ]}});
        gateways
            .patch_status(&gateway.name_any(), &status, &Patch::Merge(&patch))
            .await?;
    }
    for route in routes.list(&Default::default()).await?.items {
        let generation = route.metadata.generation;
        let parents: Vec<Value> = route.data["spec"]["parentRefs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let written = route.data["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let current = written.len() == parents.len()
            && written
                .iter()
                .all(|p| all_hold(&p["conditions"], &["Accepted", "ResolvedRefs"], generation));
        if current {
            continue;
        }
        let entries: Vec<Value> = parents
            .iter()
            .map(|parent| {
                json!({
                    "parentRef": parent,
                    "controllerName": GATEWAY_CONTROLLER_NAME,
                    "conditions": [
                        holds("Accepted", generation),
                        holds("ResolvedRefs", generation),
                    ],
                })
            })
            .collect();
        let patch = json!({"status": {"parents": entries}});
        routes
            .patch_status(&route.name_any(), &status, &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
