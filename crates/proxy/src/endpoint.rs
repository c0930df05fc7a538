//! [`FrontEndpoint`]: the listening side of the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::config::{EndpointConfig, REJECT_CONCURRENCY};
use crate::error::ProxyError;
use crate::forward::{ConnCtx, OnCluster, ProxyBody, Shared, text_response, wait_true};
use crate::routes::{CompiledRoutes, EndpointKind, RouteTable};
use crate::stats::{ClusterStats, CounterMaps, EndpointStats};

/// Default bound on how long [`FrontEndpoint::shutdown`] waits for in-flight requests.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Idle upstream connections are closed after this long. Kept below Ray
/// Serve's 5 s keep-alive timeout so the proxy never reuses a connection the
/// upstream is about to close.
const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(4);

/// Upper bound on establishing a TCP connection to an upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After an idle connection was asked to close, how long a request head that
/// is still arriving may take before the connection is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Upper bound on answering one connection over the cap with 503.
const REJECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A local stand-in for the Kubernetes Service `NAME-serve-svc` or
/// `NAME-head-svc`: an HTTP reverse proxy listening on one address whose
/// upstreams can be swapped atomically with [`FrontEndpoint::set_routes`].
///
/// Requests already forwarded finish on the upstream they started on; every
/// request routed after `set_routes` returns uses the new table. Dropping the
/// endpoint without [`FrontEndpoint::shutdown`] closes the listener and aborts
/// all connections immediately.
pub struct FrontEndpoint {
    kind: EndpointKind,
    config: EndpointConfig,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Counters by service and by cluster, also serializes `set_routes` calls.
    counters: Mutex<CounterMaps>,
    shutdown_tx: Option<oneshot::Sender<Duration>>,
    accept_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FrontEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontEndpoint")
            .field("kind", &self.kind)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FrontEndpoint {
    /// Binds `addr` and starts serving with an empty route table (every
    /// request gets 404 until [`FrontEndpoint::set_routes`] is called), with
    /// the limits of [`EndpointConfig::default`].
    ///
    /// Must be called within a Tokio runtime. Returns
    /// [`ProxyError::AddrInUse`] when another socket listens on `addr`.
    pub async fn bind(addr: SocketAddr, kind: EndpointKind) -> Result<Self, ProxyError> {
        Self::bind_with(addr, kind, EndpointConfig::default()).await
    }

    /// [`FrontEndpoint::bind`] with the given limits.
    pub async fn bind_with(
        addr: SocketAddr,
        kind: EndpointKind,
        config: EndpointConfig,
    ) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ProxyError::from_bind(addr, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ProxyError::LocalAddr { addr, source })?;

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);

        let mut counters = CounterMaps::default();
        let routes = CompiledRoutes::compile(kind, RouteTable::default(), &mut counters);
        let (tunnels_stop_tx, tunnels_stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            routes: ArcSwap::from_pointee(routes),
            unmatched: AtomicU64::new(0),
            client,
            upstream_timeout: config.upstream_timeout,
            tunnels_stop,
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            config.clone(),
            shutdown_rx,
            tunnels_stop_tx,
        ));
        info!(%local_addr, ?kind, max_connections = config.max_connections, "front endpoint listening");
        Ok(Self {
            kind,
            config,
            local_addr,
            shared,
            counters: Mutex::new(counters),
            shutdown_tx: Some(shutdown_tx),
            accept_task: Some(accept_task),
        })
    }

    /// The address actually bound (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Which Kubernetes Service this endpoint stands in for.
    pub fn kind(&self) -> EndpointKind {
        self.kind
    }

    /// The limits this endpoint runs with.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Atomically replaces the route table. Requests routed after this call
    /// returns use `table`; requests already in flight are unaffected.
    pub fn set_routes(&self, table: RouteTable) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let compiled = CompiledRoutes::compile(self.kind, table, &mut counters);
        debug!(addr = %self.local_addr, services = %compiled.listing, "routes updated");
        self.shared.routes.store(Arc::new(compiled));
    }

    /// The route table currently in force.
    pub fn routes(&self) -> RouteTable {
        self.shared.routes.load().source.clone()
    }

    /// Snapshot of one cluster's counters (`None` when it never served through this endpoint,
    /// or left the table with nothing in flight).
    pub fn cluster_stats(&self, cluster: &str) -> Option<ClusterStats> {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .backends
            .get(cluster)
            .map(|c| c.snapshot())
    }

    /// Snapshot of the per-service request and error counters.
    pub fn stats(&self) -> EndpointStats {
        let routes = self.shared.routes.load();
        let clusters = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .backends
            .iter()
            .map(|(name, c)| (name.clone(), c.snapshot()))
            .collect();
        EndpointStats {
            services: routes
                .services
                .iter()
                .map(|s| (s.name.to_string(), s.counters.snapshot()))
                .collect(),
            clusters,
            unmatched: self.shared.unmatched.load(Ordering::Relaxed),
        }
    }

    /// Graceful shutdown with [`DEFAULT_SHUTDOWN_GRACE`]: see
    /// [`FrontEndpoint::shutdown_with_timeout`].
    pub async fn shutdown(self) {
        self.shutdown_with_timeout(DEFAULT_SHUTDOWN_GRACE).await;
    }

    /// Stops accepting connections at once, lets in-flight requests finish
    /// (idle keep-alive connections are closed), and aborts whatever is still
    /// running after `grace`. Upgraded (WebSocket) connections are closed once
    /// the plain HTTP requests have drained or the grace period has elapsed.
    pub async fn shutdown_with_timeout(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(grace);
        }
        if let Some(task) = self.accept_task.take()
            && let Err(e) = task.await
        {
            warn!(addr = %self.local_addr, error = %e, "accept loop ended abnormally");
        }
        info!(addr = %self.local_addr, "front endpoint stopped");
    }
}

impl Drop for FrontEndpoint {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            // Dropping the task's JoinSet aborts all connection tasks.
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: EndpointConfig,
    mut shutdown_rx: oneshot::Receiver<Duration>,
    tunnels_stop_tx: watch::Sender<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The idle watch in `serve_connection` closes connections whose request
    // head does not come; hyper's own header timeout stays as a backstop
    // that never fires first.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(config.request_head_timeout.max(config.idle_timeout));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut reject_builder = auto::Builder::new(TokioExecutor::new());
    reject_builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REJECT_TIMEOUT);
    let reject_builder = Arc::new(reject_builder);
    let limits = IdleLimits {
        first: config.request_head_timeout,
        idle: config.idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(
        config.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let reject_slots = Arc::new(Semaphore::new(REJECT_CONCURRENCY));
    let (graceful_tx, graceful_rx) = watch::channel(false);
    let mut conns: JoinSet<()> = JoinSet::new();
    let local = listener.local_addr().ok();

    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(serve_connection(
                            stream,
                            peer,
                            shared.clone(),
                            permit,
                            builder.clone(),
                            limits,
                            graceful_rx.clone(),
                        ));
                    }
                    Err(_) => match reject_slots.clone().try_acquire_owned() {
                        Ok(reject_permit) => {
                            debug!(%peer, cap = config.max_connections, "connection cap reached: answering 503");
                            conns.spawn(reject_connection(
                                stream,
                                reject_builder.clone(),
                                config.max_connections,
                                reject_permit,
                            ));
                        }
                        Err(_) => {
                            debug!(%peer, cap = config.max_connections, "connection cap reached: closing");
                            drop(stream);
                        }
                    },
                },
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off briefly instead of spinning.
                    warn!(addr = ?local, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            grace = &mut shutdown_rx => {
                // An `Err` means the handle was dropped without shutdown: stop now.
                break grace.unwrap_or(Duration::ZERO);
            }
        }
    };
    drop(listener);
    let _ = graceful_tx.send(true);
    let in_flight = conns.len();
    debug!(addr = ?local, in_flight, ?grace, "draining connections");
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(addr = ?local, remaining = conns.len(), ?grace, "grace period elapsed, aborting connections");
        conns.shutdown().await;
    }
    let _ = tunnels_stop_tx.send(true);
}

/// Answers a connection over the cap with 503 and closes it.
async fn reject_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    cap: usize,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |_req| async move {
        let mut resp = text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many connections: this RayService endpoint serves at most {cap} connections at once; try again shortly\n"
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(resp)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REJECT_TIMEOUT, conn).await;
}

/// How long a connection may go without a request in flight.
#[derive(Debug, Clone, Copy)]
struct IdleLimits {
    /// Before its first request.
    first: Duration,
    /// After a request.
    idle: Duration,
}

/// Requests of one connection: how many are in flight, how many came.
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    in_flight: usize,
    requests: u64,
}

/// Counts one request as in flight from its arrival until its response body
/// is finished or dropped.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.requests += 1;
        });
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as in flight, on its connection and (when
/// it was forwarded) on its cluster.
struct TrackedBody {
    inner: ProxyBody,
    _in_flight: InFlight,
    _on_cluster: Option<OnCluster>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves once the connection has had no request in flight for the limit
/// that applies (`limits.first` until a request came, then `limits.idle`).
/// Any request arriving or finishing starts the wait again.
async fn idle_expired(rx: &mut watch::Receiver<Activity>, limits: IdleLimits) {
    loop {
        let requests = rx.wait_for(|a| a.in_flight == 0).await.map(|a| a.requests);
        let Ok(requests) = requests else {
            // The connection owns the sender: this does not happen.
            return std::future::pending().await;
        };
        let limit = if requests == 0 {
            limits.first
        } else {
            limits.idle
        };
        tokio::select! {
            _ = tokio::time::sleep(limit) => return,
            changed = rx.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: IdleLimits,
    mut graceful: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let peer_ip = match HeaderValue::try_from(peer.ip().to_string()) {
        Ok(v) => v,
        Err(_) => HeaderValue::from_static("unknown"),
    };
    let ctx = ConnCtx {
        shared,
        peer_ip,
        permit: Arc::new(permit),
    };
    let activity = Arc::new(watch::Sender::new(Activity::default()));
    let mut activity_rx = activity.subscribe();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        let in_flight = InFlight::start(&activity);
        async move {
            let mut resp = ctx.handle(req).await;
            // The forwarded request's count on its cluster ends with the body too.
            let on_cluster = resp.extensions_mut().remove::<OnCluster>();
            Ok::<_, Infallible>(resp.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
                _on_cluster: on_cluster,
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    let mut idle_closing = false;
    let res = loop {
        let limits = if idle_closing {
            IdleLimits {
                first: IDLE_CLOSE_GRACE,
                idle: IDLE_CLOSE_GRACE,
            }
        } else {
            limits
        };
        tokio::select! {
            res = conn.as_mut() => break res,
            _ = wait_true(&mut graceful), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_expired(&mut activity_rx, limits) => {
                if idle_closing {
                    debug!(%peer, "dropping idle connection");
                    break Ok(());
                }
                debug!(%peer, "closing idle connection");
                idle_closing = true;
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = res {
        debug!(%peer, error = %e, "client connection ended with error");
    }
}
