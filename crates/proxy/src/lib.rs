//! Local stand-in for the Kubernetes Services that KubeRay creates for a
//! RayService: `NAME-serve-svc` (Ray Serve HTTP) and `NAME-head-svc` (Ray
//! dashboard).
//!
//! A [`FrontEndpoint`] listens on one local address and reverse-proxies every
//! request to the Ray cluster currently serving the matching RayService.
//! Bodies are streamed in both directions, upstream connections are pooled
//! (keep-alive) and the route table is swapped atomically with
//! [`FrontEndpoint::set_routes`], which is how a zero-downtime upgrade moves
//! traffic from the old cluster to the new one: requests already in flight
//! finish on the old upstream, new ones go to the new upstream at once.
//!
//! Routing (see [`RouteTable`]):
//! - a Host of `NAME-serve-svc` / `NAME-head-svc` (optionally followed by
//!   `.default`, `.default.svc` or `.default.svc.cluster.local`, any port,
//!   case-insensitive) selects that RayService;
//! - otherwise a Serve endpoint picks the service owning the longest matching
//!   route prefix, and a Dashboard endpoint the first service with a cluster.
//!
//! Errors are plain-text responses: 404 (nothing matches), 503 (the service
//! has no ready cluster yet, or the connection cap is reached), 502 (the
//! upstream failed), 504 (the upstream sent no response head within
//! [`EndpointConfig::upstream_timeout`]), 400 (the client's request body is
//! malformed or cut short) and 421 (a Host the endpoint does not answer to:
//! only loopback names, IP literals and `*-svc` names are served, which
//! defeats DNS rebinding).
//! HTTP/1.1 upgrades (WebSocket) are tunnelled through.
//!
//! Connections are bounded by [`EndpointConfig`]: a first request head must
//! arrive within `request_head_timeout`, a connection without a request in
//! flight is closed after `idle_timeout`, and at most `max_connections` are
//! served at once. [`raise_fd_limit`] lifts the process's soft limit on open
//! files to its hard limit.

mod config;
mod endpoint;
mod error;
mod forward;
mod routes;
mod stats;

pub use config::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_HEAD_TIMEOUT,
    DEFAULT_UPSTREAM_TIMEOUT, EndpointConfig, raise_fd_limit,
};
pub use endpoint::{DEFAULT_SHUTDOWN_GRACE, FrontEndpoint};
pub use error::ProxyError;
pub use routes::{Backend, BearerToken, EndpointKind, RouteTable, ServiceRoute};
pub use stats::{ClusterStats, EndpointStats, LATENCY_BUCKETS, ServiceStats, latency_bucket_bound};
