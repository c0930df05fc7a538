//! The local control plane server: the control API on loopback, the front endpoints, and the
//! reconcile loops. One per state directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::cluster::{ClusterLayout, Clusters};
use crate::controller::Controller;
use crate::http::{AppState, router};
use crate::settings::Settings;
use crate::store::Store;
pub use crate::wire::{ApiError, ApplyRequest, ApplyResult, ControlInfo};

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
        let spec = cluster.spec.clone();
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
