//! Per-service request/error counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one service (shared between route-table generations).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServiceStats {
        ServiceStats {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one service at one point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Requests routed to this service (including the failed ones).
    pub requests: u64,
    /// Requests the proxy answered itself with 502 (upstream unreachable or
    /// failed before sending a response head), 503 (no ready cluster), 504
    /// (no response head within the upstream timeout) or 400 (the client's
    /// request body was malformed or cut short).
    pub errors: u64,
}

/// Snapshot of a [`crate::FrontEndpoint`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Per service currently in the route table, by RayService name. Counters
    /// persist across [`crate::FrontEndpoint::set_routes`] calls as long as the
    /// service stays in the table.
    pub services: BTreeMap<String, ServiceStats>,
    /// Requests that matched no service (answered 404) or were rejected before
    /// routing (405 for CONNECT, 421 for a Host the endpoint does not answer to).
    pub unmatched: u64,
}
