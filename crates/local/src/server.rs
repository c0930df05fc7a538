//! The local control plane server: the control API on loopback, the front endpoints, and the
//! reconcile loops. One per state directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rayservice_api::{RayCluster, RayClusterSpec, RayService, RayServiceStatus, ServeConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{ClusterLayout, Clusters};
use crate::controller::{Controller, now, route_prefixes};
use crate::settings::Settings;
use crate::store::{ServiceRecord, Store};
use crate::views::{EventView, PodView, ServiceView};

/// How a client finds a running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlInfo {
    /// Port of the control API on 127.0.0.1.
    pub port: u16,
    /// Bearer token the API requires.
    pub token: String,
    /// The server's process id.
    pub pid: u32,
}

/// What `apply` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// RayService objects, already parsed and validated by the client.
    pub objects: Vec<Value>,
    /// Folder of the YAML file: relative `working_dir`s start there.
    pub base_dir: PathBuf,
    /// The file name, for error messages.
    pub file: String,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyResult {
    /// The RayService name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
}

/// An error answer of the control API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another server owns the state directory.
    #[error(
        "another rayservice server already runs for {home} (pid {pid}); stop it first, or set RAYSERVICE_HOME to another directory"
    )]
    AlreadyRunning {
        /// The state directory.
        home: String,
        /// Its pid, if known.
        pid: String,
    },
    /// A front port is taken.
    #[error(
        "cannot listen on {addr} for {what}: {message}; fix: stop the program using it (`ss -ltnp 'sport = :{port}'` shows it) or choose another port with {env}"
    )]
    Port {
        /// Address.
        addr: SocketAddr,
        /// Which endpoint.
        what: String,
        /// Port alone.
        port: u16,
        /// The variable that moves it.
        env: String,
        /// Why.
        message: String,
    },
    /// Anything else at start-up.
    #[error("{0}")]
    Setup(String),
}

/// Limits of both front endpoints: the upstream timeout from the settings, and
/// a connection cap that fits the process's limit on open files, raised to its
/// hard limit first.
fn front_endpoint_config(settings: &Settings) -> rayservice_proxy::EndpointConfig {
    let mut config = rayservice_proxy::EndpointConfig::default();
    config.upstream_timeout = settings.upstream_timeout;
    let fd_limit = match rayservice_proxy::raise_fd_limit() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "front endpoints: keeping the current limit on open files");
            match &error {
                rayservice_proxy::ProxyError::FdLimit {
                    soft: Some(soft), ..
                } => *soft,
                _ => 1024,
            }
        }
    };
    let config = config.fit_fd_limit(fd_limit, 2);
    tracing::info!(
        fd_limit,
        max_connections = config.max_connections,
        upstream_timeout = ?config.upstream_timeout,
        "front endpoint limits"
    );
    config
}

/// Runs the server until SIGINT/SIGTERM or a shutdown request.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    settings.ensure_home().map_err(|e| {
        ServerError::Setup(format!("cannot create {}: {e}", settings.home.display()))
    })?;
    let _lock = lock(&settings)?;
    let store = Store::open(&settings.database()).map_err(|e| ServerError::Setup(e.to_string()))?;
    let endpoint_config = front_endpoint_config(&settings);
    let bind = |addr: SocketAddr, kind, what: &str, env: &str| {
        let what = what.to_string();
        let env = env.to_string();
        let config = endpoint_config.clone();
        async move {
            rayservice_proxy::FrontEndpoint::bind_with(addr, kind, config)
                .await
                .map_err(|e| ServerError::Port {
                    addr,
                    what,
                    port: addr.port(),
                    env,
                    message: e.to_string(),
                })
        }
    };
    let serve_front = bind(
        settings.serve_addr,
        rayservice_proxy::EndpointKind::Serve,
        "the Serve endpoint",
        "RAYSERVICE_SERVE_PORT",
    )
    .await?;
    let dashboard_front = bind(
        settings.dashboard_addr,
        rayservice_proxy::EndpointKind::Dashboard,
        "the dashboard endpoint",
        "RAYSERVICE_DASHBOARD_PORT",
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.control_port))
        .await
        .map_err(|e| {
            ServerError::Setup(format!(
                "cannot listen on 127.0.0.1:{} for the control API: {e}",
                settings.control_port
            ))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| ServerError::Setup(e.to_string()))?
        .port();

    let controller = Controller::new(
        settings.clone(),
        store,
        Clusters::new(settings.clone()),
        serve_front,
        dashboard_front,
    )
    .map_err(|e| ServerError::Setup(e.to_string()))?;
    adopt_running_clusters(&controller);
    {
        let controller = controller.clone();
        tokio::spawn(async move {
            if let Err(error) = controller.remove_orphans().await {
                tracing::warn!(%error, "could not remove orphaned clusters");
            }
        });
    }
    controller.refresh_routes();
    for name in controller.service_names() {
        controller.wake(&name);
    }

    let token = new_token();
    let info = ControlInfo {
        port,
        token: token.clone(),
        pid: std::process::id(),
    };
    write_private(
        &settings.control_file(),
        &serde_json::to_vec(&info).unwrap_or_default(),
    )
    .map_err(|e| {
        ServerError::Setup(format!(
            "cannot write {}: {e}",
            settings.control_file().display()
        ))
    })?;
    tracing::info!(port, serve = %settings.serve_addr, dashboard = %settings.dashboard_addr, "rayservice server ready");

    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        controller: controller.clone(),
        token: Arc::new(token),
        shutdown: Arc::new(shutdown_tx),
    };
    let app = router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { if let Some(t) = terminate.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            _ = shutdown_rx.wait_for(|stop| *stop) => {}
        }
    });
    let result = server.await.map_err(|e| ServerError::Setup(e.to_string()));
    let _ = std::fs::remove_file(settings.control_file());
    result
}

fn lock(settings: &Settings) -> Result<nix::fcntl::Flock<std::fs::File>, ServerError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(settings.lock_file())
        .map_err(|e| {
            ServerError::Setup(format!(
                "cannot open {}: {e}",
                settings.lock_file().display()
            ))
        })?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err(_) => {
            let pid = std::fs::read(settings.control_file())
                .ok()
                .and_then(|b| serde_json::from_slice::<ControlInfo>(&b).ok())
                .map(|i| i.pid.to_string())
                .unwrap_or_else(|| "unknown".into());
            Err(ServerError::AlreadyRunning {
                home: settings.home.display().to_string(),
                pid,
            })
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Writes a file readable by the user only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Re-attaches to node processes that an earlier server started (after a crash or restart).
fn adopt_running_clusters(controller: &Arc<Controller>) {
    let Ok(clusters) = controller.with_store(|s| s.clusters(None)) else {
        return;
    };
    for cluster in clusters {
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(cluster.layout.clone()) else {
            continue;
        };
        let nodes = controller
            .with_store(|s| s.nodes(Some(&cluster.name)))
            .unwrap_or_default();
        let spec: RayClusterSpec = cluster.spec.clone();
        if nodes.iter().any(|n| n.node_type == "head") {
            controller
                .clusters
                .adopt(controller.clone(), nodes, &layout);
            controller
                .clusters
                .start_missing_workers(controller.clone(), &cluster.name, &spec);
        } else {
            controller
                .clusters
                .start(controller.clone(), &cluster.name, &spec, &layout);
        }
    }
}

#[derive(Clone)]
struct AppState {
    controller: Arc<Controller>,
    token: Arc<String>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/apply", post(apply))
        .route("/v1/diff", post(diff))
        .route("/v1/rayservices", get(list_services))
        .route(
            "/v1/rayservices/{name}",
            get(get_service).delete(delete_service),
        )
        .route("/v1/rayclusters", get(list_clusters))
        .route("/v1/pods", get(list_pods))
        .route("/v1/services", get(list_endpoints))
        .route("/v1/events/{name}", get(list_events))
        .route("/v1/shutdown", post(shutdown))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let expected = format!("Bearer {}", state.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given.len() == expected.len() && constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: use the rayservice CLI with the same RAYSERVICE_HOME",
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ApiError {
            error: message.to_string(),
        }),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}))
}

async fn shutdown(State(state): State<AppState>, Json(body): Json<Value>) -> Json<Value> {
    if body["stopClusters"].as_bool().unwrap_or(false) {
        for name in state.controller.service_names() {
            let _ = state.controller.delete_service(&name).await;
        }
    }
    let _ = state.shutdown.send(true);
    Json(json!({"stopping": true}))
}

async fn apply(State(state): State<AppState>, Json(request): Json<ApplyRequest>) -> Response {
    match apply_objects(&state.controller, &request) {
        Ok(results) => {
            for result in &results {
                state.controller.wake(&result.name);
            }
            Json(results).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

async fn diff(State(state): State<AppState>, Json(request): Json<ApplyRequest>) -> Response {
    match diff_objects(&state.controller, &request).await {
        Ok(reports) => Json(reports).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// Runs the core on the current state twice, with the stored spec and with the new one, and
/// explains the difference. Nothing is carried out.
async fn diff_objects(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<crate::diff::DiffReport>, String> {
    let file = &request.file;
    let mut reports = Vec::new();
    for object in &request.objects {
        let service: RayService =
            serde_json::from_value(object.clone()).map_err(|e| format!("{file}: {e}"))?;
        let name = service.metadata.name.clone().unwrap_or_default();
        let at = |e: String| format!("{file}: RayService/{name}: {e}");
        rayservice_api::validate::rayservice(&service, rayservice_api::API_VERSION_V1)
            .map_err(|e| at(e.to_string()))?;
        let resolved = crate::resolve::resolve_spec(
            &service.spec,
            &request.base_dir,
            &controller.settings.packages_dir(),
        )
        .map_err(|e| at(e.to_string()))?;
        let parse = |spec: &rayservice_api::RayServiceSpec| -> Result<ServeConfig, String> {
            ServeConfig::parse(
                spec.serve_config_v2.as_deref().unwrap_or_default(),
                "spec.serveConfigV2",
            )
            .map_err(|e| at(e.to_string()))
        };
        let desired = parse(&resolved)?;
        let record = controller
            .with_store(|s| s.service(&name))
            .map_err(|e| e.to_string())?
            .filter(|r| !r.deleting);
        let Some(record) = record else {
            reports.push(crate::diff::explain(
                &name,
                None,
                &desired,
                &empty_decision(),
                &empty_decision(),
            ));
            continue;
        };
        let current_spec: rayservice_api::RayServiceSpec =
            serde_json::from_value(record.resolved_spec.clone()).map_err(|e| e.to_string())?;
        let current = parse(&current_spec)?;
        let status: RayServiceStatus =
            serde_json::from_value(record.status.clone()).unwrap_or_default();
        let generation = record.object["metadata"]["generation"]
            .as_i64()
            .unwrap_or(1);
        let changed =
            serde_json::to_value(&resolved).map_err(|e| e.to_string())? != record.resolved_spec;
        let observed = controller
            .observe_service(&name, status, "xxxxx".into())
            .await
            .map_err(|e| e.to_string())?;
        let baseline = rayservice_core::reconcile(
            &rayservice_core::Desired {
                name: &name,
                generation,
                spec: &current_spec,
            },
            &observed,
        );
        let proposed_generation = if changed { generation + 1 } else { generation };
        let proposed = rayservice_core::reconcile(
            &rayservice_core::Desired {
                name: &name,
                generation: proposed_generation,
                spec: &resolved,
            },
            &observed,
        );
        // The core explains a spec change when the generation moves; the baseline never does.
        reports.push(crate::diff::explain(
            &name,
            Some(&current),
            &desired,
            &baseline,
            &proposed,
        ));
    }
    Ok(reports)
}

fn empty_decision() -> rayservice_core::Decision {
    rayservice_core::Decision {
        actions: Vec::new(),
        status: Default::default(),
        requeue_after: std::time::Duration::ZERO,
    }
}

/// Validates, resolves and stores the objects of one apply; all or nothing.
fn apply_objects(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<ApplyResult>, String> {
    let file = &request.file;
    let mut prepared = Vec::new();
    for object in &request.objects {
        let service: RayService =
            serde_json::from_value(object.clone()).map_err(|e| format!("{file}: {e}"))?;
        let name = service.metadata.name.clone().unwrap_or_default();
        rayservice_api::validate::rayservice(&service, rayservice_api::API_VERSION_V1)
            .map_err(|e| format!("{file}: RayService/{name}: {e}"))?;
        let resolved = crate::resolve::resolve_spec(
            &service.spec,
            &request.base_dir,
            &controller.settings.packages_dir(),
        )
        .map_err(|e| format!("{file}: RayService/{name}: {e}"))?;
        prepared.push((name, service, resolved));
    }
    let existing = controller
        .with_store(|s| s.services())
        .map_err(|e| e.to_string())?;
    check_route_clashes(&prepared, &existing, file)?;

    let mut results = Vec::new();
    for (name, service, resolved) in prepared {
        let resolved_json = serde_json::to_value(&resolved).map_err(|e| e.to_string())?;
        let spec_json = serde_json::to_value(&service.spec).map_err(|e| e.to_string())?;
        let current = existing.iter().find(|r| r.name == name && !r.deleting);
        let (outcome, record) = match current {
            Some(record)
                if record.object["spec"] == spec_json && record.resolved_spec == resolved_json =>
            {
                results.push(ApplyResult {
                    name,
                    outcome: "unchanged".into(),
                });
                continue;
            }
            Some(record) => {
                let mut object = record.object.clone();
                let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                object["spec"] = spec_json;
                object["metadata"]["generation"] = json!(generation);
                merge_labels(&mut object, &service.metadata);
                (
                    "configured",
                    ServiceRecord {
                        object,
                        resolved_spec: resolved_json,
                        ..record.clone()
                    },
                )
            }
            None => {
                let metadata = ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(rayservice_api::DEFAULT_NAMESPACE.into()),
                    uid: Some(uuid_like()),
                    generation: Some(1),
                    creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(now().as_second())
                            .unwrap_or_else(|_| now()),
                    )),
                    labels: service.metadata.labels.clone(),
                    annotations: service.metadata.annotations.clone(),
                    ..Default::default()
                };
                let object = RayService {
                    metadata,
                    spec: service.spec.clone(),
                    status: None,
                };
                let object = serde_json::to_value(&object).map_err(|e| e.to_string())?;
                let status =
                    serde_json::to_value(RayServiceStatus::default()).map_err(|e| e.to_string())?;
                (
                    "created",
                    ServiceRecord {
                        name: name.clone(),
                        object,
                        resolved_spec: resolved_json,
                        status,
                        deleting: false,
                    },
                )
            }
        };
        controller
            .with_store(|s| s.put_service(&record))
            .map_err(|e| e.to_string())?;
        results.push(ApplyResult {
            name,
            outcome: outcome.into(),
        });
    }
    Ok(results)
}

fn merge_labels(object: &mut Value, metadata: &ObjectMeta) {
    object["metadata"]["labels"] = serde_json::to_value(&metadata.labels).unwrap_or(Value::Null);
    object["metadata"]["annotations"] =
        serde_json::to_value(&metadata.annotations).unwrap_or(Value::Null);
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.retain(|_, v| !v.is_null());
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Two RayServices cannot own the same route prefix on the shared Serve endpoint.
fn check_route_clashes(
    prepared: &[(String, RayService, rayservice_api::RayServiceSpec)],
    existing: &[ServiceRecord],
    file: &str,
) -> Result<(), String> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let incoming: Vec<&String> = prepared.iter().map(|(n, _, _)| n).collect();
    for record in existing
        .iter()
        .filter(|r| !r.deleting && !incoming.contains(&&r.name))
    {
        for prefix in route_prefixes(record) {
            owners.insert(prefix, record.name.clone());
        }
    }
    for (name, _, resolved) in prepared {
        let record = ServiceRecord {
            name: name.clone(),
            object: Value::Null,
            resolved_spec: serde_json::to_value(resolved).unwrap_or(Value::Null),
            status: Value::Null,
            deleting: false,
        };
        for prefix in route_prefixes(&record) {
            if let Some(owner) = owners.get(&prefix).filter(|o| *o != name) {
                return Err(format!(
                    "{file}: RayService/{name}: spec.serveConfigV2: route_prefix `{prefix}` is already served by RayService {owner} on the shared Serve endpoint; fix: choose another route_prefix (requests with `Host: {name}-serve-svc` still reach {name} only)"
                ));
            }
            owners.insert(prefix, name.clone());
        }
    }
    Ok(())
}

async fn list_services(State(state): State<AppState>) -> Response {
    match state.controller.with_store(|s| s.services()) {
        Ok(records) => Json(
            records
                .into_iter()
                .filter(|r| !r.deleting)
                .map(service_object)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn service_object(record: ServiceRecord) -> Value {
    let mut object = record.object;
    object["apiVersion"] = json!(rayservice_api::API_VERSION_V1);
    object["kind"] = json!("RayService");
    object["status"] = record.status;
    reorder(
        object,
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )
}

fn reorder(object: Value, first: &[&str]) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = serde_json::Map::new();
    for key in first {
        if let Some(v) = map.remove(*key) {
            out.insert((*key).to_string(), v);
        }
    }
    out.extend(map);
    Value::Object(out)
}

async fn get_service(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    match state.controller.with_store(|s| s.service(&name)) {
        Ok(Some(record)) if !record.deleting => Json(service_object(record)).into_response(),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            &format!("rayservices.ray.io \"{name}\" not found"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn delete_service(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    match state.controller.delete_service(&name).await {
        Ok(true) => Json(json!({"deleted": name})).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("rayservices.ray.io \"{name}\" not found"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn list_clusters(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let Ok(records) = controller.with_store(|s| s.clusters(None)) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "state database unavailable",
        );
    };
    let services: BTreeMap<String, Value> = controller
        .with_store(|s| s.services())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.name.clone(), r.object["metadata"]["uid"].clone()))
        .collect();
    let mut clusters = Vec::new();
    for record in records {
        let spec: RayClusterSpec = record.spec.clone();
        let layout: Option<ClusterLayout> = serde_json::from_value(record.layout.clone()).ok();
        let nodes = controller.clusters.observe_nodes(&record.name, &spec);
        let head_ready = nodes.head_running && controller.clusters.head_was_ready(&record.name);
        let observed = rayservice_core::ObservedCluster {
            name: record.name.clone(),
            spec: spec.clone(),
            created_at: now(),
            memory: record.memory.clone(),
            nodes: rayservice_core::NodesObservation {
                head_up: nodes.head_running,
                head_ready,
                workers_desired: nodes.workers_desired,
                workers_running: nodes.workers_running,
                failure: nodes.failure,
            },
            serve: rayservice_core::ServeObservation::Unknown,
        };
        let mut status = rayservice_core::status::cluster_status(&observed);
        if let Some(layout) = &layout {
            status.endpoints = layout.endpoints();
        }
        status.head = Some(crate::controller::local_head_info(
            controller.clusters.head_pod_name(&record.name),
        ));
        let cpus: f64 = std::iter::once(&spec.head_group_spec.template)
            .chain(spec.worker_group_specs.iter().flat_map(|g| {
                std::iter::repeat_n(&g.template, g.desired_replicas().max(0) as usize)
            }))
            .filter_map(|t| {
                t.spec
                    .as_ref()?
                    .containers
                    .first()?
                    .resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("cpu")
                    .map(|q| q.0.clone())
            })
            .filter_map(|cpu| rayservice_ray::node::parse_cpu_quantity(&cpu).ok())
            .map(f64::from)
            .sum();
        status.desired_cpu = Some(format!("{cpus}"));
        let metadata = ObjectMeta {
            name: Some(record.name.clone()),
            namespace: Some(rayservice_api::DEFAULT_NAMESPACE.into()),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(record.created_at)
                    .unwrap_or_else(|_| now()),
            )),
            labels: Some(BTreeMap::from([
                (
                    "ray.io/originated-from-cr-name".to_string(),
                    record.service.clone(),
                ),
                (
                    "ray.io/originated-from-crd".to_string(),
                    "RayService".to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                rayservice_core::HASH_ANNOTATION.to_string(),
                record.memory.spec_hash.clone(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: rayservice_api::API_VERSION_V1.into(),
                kind: "RayService".into(),
                name: record.service.clone(),
                uid: services
                    .get(&record.service)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        };
        let cluster = RayCluster {
            metadata,
            spec,
            status: Some(status),
        };
        let mut value = serde_json::to_value(&cluster).unwrap_or(Value::Null);
        value["apiVersion"] = json!(rayservice_api::API_VERSION_V1);
        value["kind"] = json!("RayCluster");
        clusters.push(reorder(
            value,
            &["apiVersion", "kind", "metadata", "spec", "status"],
        ));
    }
    Json(clusters).into_response()
}

async fn list_pods(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let Ok(nodes) = controller.with_store(|s| s.nodes(None)) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "state database unavailable",
        );
    };
    let owners: BTreeMap<String, String> = controller
        .with_store(|s| s.clusters(None))
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.service))
        .collect();
    let pods: Vec<PodView> = nodes
        .into_iter()
        .map(|node| {
            let (running, pid) = controller.clusters.node_state(&node.cluster, &node.name);
            let ready = running
                && (node.node_type != "head" || controller.clusters.head_was_ready(&node.cluster));
            let service = owners.get(&node.cluster).cloned().unwrap_or_default();
            let labels = BTreeMap::from([
                ("ray.io/cluster".to_string(), node.cluster.clone()),
                ("ray.io/node-type".to_string(), node.node_type.clone()),
                ("ray.io/group".to_string(), node.group.clone()),
                (
                    "ray.io/identifier".to_string(),
                    format!("{}-{}", node.cluster, node.node_type),
                ),
                ("ray.io/is-ray-node".to_string(), "yes".to_string()),
                (
                    "ray.io/originated-from-cr-name".to_string(),
                    service.clone(),
                ),
                (
                    "ray.io/originated-from-crd".to_string(),
                    "RayService".to_string(),
                ),
            ]);
            PodView {
                phase: if running {
                    "Running"
                } else if node.restarts > 0 {
                    "CrashLoopBackOff"
                } else {
                    "Pending"
                }
                .into(),
                ready: if ready { "1/1" } else { "0/1" }.into(),
                restarts: node.restarts,
                pid: pid.or(node.pid),
                started_at: crate::controller::rfc3339(node.started_at),
                log_path: node.log_path,
                name: node.name,
                cluster: node.cluster,
                service,
                node_type: node.node_type,
                group: node.group,
                labels,
            }
        })
        .collect();
    Json(pods).into_response()
}

async fn list_endpoints(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let settings = &controller.settings;
    let services = controller.with_store(|s| s.services()).unwrap_or_default();
    let clusters = controller
        .with_store(|s| s.clusters(None))
        .unwrap_or_default();
    let mut views = Vec::new();
    for service in services.iter().filter(|s| !s.deleting) {
        let created = service.object["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let active = service.status["activeServiceStatus"]["rayClusterName"]
            .as_str()
            .map(str::to_string);
        views.push(ServiceView {
            name: format!("{}-head-svc", service.name),
            service_type: "ClusterIP".into(),
            cluster_ip: settings.dashboard_addr.ip().to_string(),
            ports: vec![format!("{}/TCP", settings.dashboard_addr.port())],
            target_cluster: active.clone(),
            created_at: created.clone(),
        });
        views.push(ServiceView {
            name: format!("{}-serve-svc", service.name),
            service_type: "ClusterIP".into(),
            cluster_ip: settings.serve_addr.ip().to_string(),
            ports: vec![format!("{}/TCP", settings.serve_addr.port())],
            target_cluster: active,
            created_at: created,
        });
    }
    for cluster in clusters {
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(cluster.layout.clone()) else {
            continue;
        };
        views.push(ServiceView {
            name: format!("{}-head-svc", cluster.name),
            service_type: "ClusterIP".into(),
            cluster_ip: "127.0.0.1".into(),
            ports: vec![
                format!("{}/TCP", layout.client_port),
                format!("{}/TCP", layout.dashboard_port),
                format!("{}/TCP", layout.gcs_port),
                format!("{}/TCP", layout.serve_port),
            ],
            target_cluster: Some(cluster.name.clone()),
            created_at: crate::controller::rfc3339(cluster.created_at),
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Json(views).into_response()
}

async fn list_events(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    let controller = &state.controller;
    let mut records = controller
        .with_store(|s| s.events(&name, 50))
        .unwrap_or_default();
    let clusters = controller
        .with_store(|s| s.clusters(Some(&name)))
        .unwrap_or_default();
    for cluster in clusters {
        records.extend(
            controller
                .with_store(|s| s.events(&cluster.name, 20))
                .unwrap_or_default(),
        );
    }
    records.sort_by_key(|r| r.last_seen);
    let views: Vec<EventView> = records
        .into_iter()
        .map(|r| EventView {
            event_type: r.event_type,
            reason: r.reason,
            message: r.message,
            count: r.count,
            first_timestamp: crate::controller::rfc3339(r.first_seen),
            last_timestamp: crate::controller::rfc3339(r.last_seen),
            source: if r.object_kind == "RayCluster" {
                "raycluster-controller".into()
            } else {
                "rayservice-controller".into()
            },
        })
        .collect();
    Json(views).into_response()
}
