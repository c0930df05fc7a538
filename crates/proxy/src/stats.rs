//! Per-service request/error counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters by service and by cluster, kept across route-table generations.
#[derive(Debug, Default)]
pub(crate) struct CounterMaps {
    pub(crate) services: HashMap<String, Arc<Counters>>,
    pub(crate) backends: HashMap<String, Arc<BackendCounters>>,
}

/// Buckets of the per-cluster latency histogram.
pub const LATENCY_BUCKETS: usize = 40;

/// Upper bound of latency bucket `i`: 250 µs × 1.5^i (the last bucket takes everything above
/// the one before it; 250 µs to about 4 hours).
pub fn latency_bucket_bound(i: usize) -> std::time::Duration {
    let micros = 250.0 * 1.5f64.powi(i32::try_from(i).unwrap_or(i32::MAX));
    std::time::Duration::from_micros(micros.min(u64::MAX as f64) as u64)
}

fn latency_bucket(elapsed: std::time::Duration) -> usize {
    (0..LATENCY_BUCKETS)
        .find(|i| elapsed <= latency_bucket_bound(*i))
        .unwrap_or(LATENCY_BUCKETS - 1)
}

/// Live counters of one cluster behind a service.
#[derive(Debug)]
pub(crate) struct BackendCounters {
    /// Time to the response head (or to the failure), by [`latency_bucket_bound`].
    pub(crate) latency: [AtomicU64; LATENCY_BUCKETS],
    /// Requests sent to it whose response has not finished (body included).
    pub(crate) in_flight: AtomicU64,
    pub(crate) requests: AtomicU64,
    /// Answers with a 5xx status, from the cluster or from the proxy on its behalf (502, 504).
    pub(crate) failures: AtomicU64,
}

impl Default for BackendCounters {
    fn default() -> Self {
        Self {
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl BackendCounters {
    pub(crate) fn snapshot(&self) -> ClusterStats {
        ClusterStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

/// Keeps one request counted as in flight on a cluster until dropped (when its response body
/// has been sent, or its upgraded connection closed).
#[derive(Debug)]
pub(crate) struct InFlightOn {
    counters: Arc<BackendCounters>,
    started: std::time::Instant,
}

impl InFlightOn {
    pub(crate) fn start(counters: &Arc<BackendCounters>) -> Self {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            counters: counters.clone(),
            started: std::time::Instant::now(),
        }
    }

    /// Counts the request as failed (5xx).
    pub(crate) fn failed(&self) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time to the response head (or to the failure).
    pub(crate) fn answered(&self) {
        let bucket = latency_bucket(self.started.elapsed());
        self.counters.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlightOn {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

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

/// Counters of one cluster at one point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Requests forwarded to it whose response has not finished yet.
    pub in_flight: u64,
    /// Requests forwarded to it.
    pub requests: u64,
    /// Of those, answered with a 5xx status (by the cluster, or by the proxy when the cluster
    /// could not be reached or did not answer in time).
    pub failures: u64,
    /// Time to the response head (or to the failure): requests per bucket, bucket `i` up to
    /// [`latency_bucket_bound`]`(i)`.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Default for ClusterStats {
    fn default() -> Self {
        Self {
            in_flight: 0,
            requests: 0,
            failures: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

/// Snapshot of a [`crate::FrontEndpoint`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Per service currently in the route table, by RayService name. Counters
    /// persist across [`crate::FrontEndpoint::set_routes`] calls as long as the
    /// service stays in the table.
    pub services: BTreeMap<String, ServiceStats>,
    /// Per Ray cluster behind a service, by cluster name: every cluster in the route table, and
    /// any that left it while requests were still in flight on it.
    pub clusters: BTreeMap<String, ClusterStats>,
    /// Requests that matched no service (answered 404) or were rejected before
    /// routing (405 for CONNECT, 421 for a Host the endpoint does not answer to).
    pub unmatched: u64,
}
