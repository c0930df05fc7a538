//! Limits of a [`crate::FrontEndpoint`] and the process's file-descriptor limit.

use std::time::Duration;

use crate::error::ProxyError;

/// Default [`EndpointConfig::request_head_timeout`].
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`EndpointConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`EndpointConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default [`EndpointConfig::upstream_timeout`].
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections over the cap that may be answered 503 at the same time; beyond
/// that they are closed without an answer.
pub(crate) const REJECT_CONCURRENCY: usize = 64;

/// File descriptors left to the rest of the process (state database, Ray
/// node pipes and logs, the control API) by [`EndpointConfig::fit_fd_limit`].
const FD_RESERVE: u64 = 256;

/// The lowest connection cap [`EndpointConfig::fit_fd_limit`] sets.
const MIN_FITTED_CONNECTIONS: usize = 8;

/// Limits of one [`crate::FrontEndpoint`]. Start from
/// [`EndpointConfig::default`] and change the fields that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// A new client connection that has not delivered a complete request
    /// head within this time is closed (default 10 s). Protects against
    /// sockets that are opened and never used.
    pub request_head_timeout: Duration,
    /// A client connection with no request in flight for this long is closed
    /// (default 60 s): the keep-alive idle timeout, which also bounds how long
    /// the head of a later request on the same connection may take. A request
    /// whose response is still streaming is in flight.
    pub idle_timeout: Duration,
    /// Client connections served at once (default 4096). Further connections
    /// get `503 Service Unavailable` and are closed.
    pub max_connections: usize,
    /// How long the proxy waits for the upstream's response head (default
    /// 300 s); after that the client gets `504 Gateway Timeout`. A response
    /// that has started may stream for as long as it likes.
    pub upstream_timeout: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }
}

impl EndpointConfig {
    /// Lowers [`EndpointConfig::max_connections`] so that `endpoints`
    /// endpoints with this configuration stay within `fd_limit` open files:
    /// each proxied connection holds two descriptors (client and upstream),
    /// each endpoint may hold a few more while it answers 503, and a reserve
    /// is left to the rest of the process.
    pub fn fit_fd_limit(mut self, fd_limit: u64, endpoints: usize) -> Self {
        let endpoints = u64::try_from(endpoints.max(1)).unwrap_or(u64::MAX);
        let per_endpoint = fd_limit.saturating_sub(FD_RESERVE) / endpoints;
        let reject = u64::try_from(REJECT_CONCURRENCY).unwrap_or(u64::MAX);
        let fitted = per_endpoint.saturating_sub(reject) / 2;
        let fitted = usize::try_from(fitted).unwrap_or(usize::MAX);
        self.max_connections = self.max_connections.min(fitted.max(MIN_FITTED_CONNECTIONS));
        self
    }
}

/// Raises the process's soft limit on open files (`RLIMIT_NOFILE`) to its
/// hard limit and returns the soft limit now in force.
///
/// On failure the error carries the limits read before the attempt, if any.
pub fn raise_fd_limit() -> Result<u64, ProxyError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| ProxyError::FdLimit {
        soft: None,
        hard: None,
        source: e.into(),
    })?;
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        Err(e) => Err(ProxyError::FdLimit {
            soft: Some(soft),
            hard: Some(hard),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_fd_limit_leaves_room() {
        let c = EndpointConfig::default().fit_fd_limit(1024, 2);
        // (1024 - 256) / 2 = 384 per endpoint; (384 - 64) / 2 = 160 connections.
        assert_eq!(c.max_connections, 160);
        let c = EndpointConfig::default().fit_fd_limit(1 << 20, 2);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        let c = EndpointConfig::default().fit_fd_limit(10, 0);
        assert_eq!(c.max_connections, MIN_FITTED_CONNECTIONS);
        let c = EndpointConfig::default().fit_fd_limit(u64::MAX, usize::MAX);
        assert!(c.max_connections >= MIN_FITTED_CONNECTIONS);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn raising_the_fd_limit_reaches_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let soft = raise_fd_limit().expect("raise the fd limit");
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, now);
        assert_eq!(now, hard);
    }
}
