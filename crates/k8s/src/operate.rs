//! What running the operator in a cluster needs besides its controllers:
//!
//! - [`Metrics`]: Prometheus metrics (reconciles, their duration, leadership, managed objects);
//! - [`serve_probes`]: `/metrics`, `/healthz` and `/readyz` over HTTP;
//! - [`LeaderElector`]: leader election on a `coordination.k8s.io/v1` Lease, so that only one
//!   replica of the operator runs its controllers at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Why the operator's runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Another identity took the lease over.
    #[error("lost the lease {lease}: it is now held by {holder:?}")]
    LeaseTaken {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The new holder (empty when nobody holds it).
        holder: String,
    },
    /// The lease could not be renewed in time: another replica may take it over.
    #[error("lost the lease {lease}: not renewed for {seconds:.1}s (last error: {last_error})")]
    RenewFailed {
        /// `namespace/name` of the Lease.
        lease: String,
        /// Seconds since the last renewal.
        seconds: f64,
        /// Why the last renewal failed.
        last_error: String,
    },
    /// The probe server failed.
    #[error("probe server: {0}")]
    Io(#[from] std::io::Error),
}

type Labels = [(&'static str, &'static str); 1];
type ResultLabels = [(&'static str, &'static str); 2];

/// The operator's Prometheus metrics; clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<Labels, Histogram>,
    leader: Gauge,
    managed: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    /// Fresh metrics: every counter at zero, not the leader.
    pub fn new() -> Self {
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations =
            Family::<Labels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let leader = Gauge::default();
        let managed = Family::<Labels, Gauge>::default();
        let mut registry = Registry::with_prefix("rayservice_operator");
        registry.register(
            "reconciles",
            "Reconciles by controller and result (ok or error)",
            reconciles.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconciles by controller",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader lease and runs the controllers",
            leader.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects managed by the operator, by kind",
            managed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            durations,
            leader,
            managed,
        }
    }

    /// Records one reconcile of `controller` (e.g. `raycluster`): its result and duration.
    pub fn reconciled(&self, controller: &'static str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&[("controller", controller), ("result", result)])
            .inc();
        self.durations
            .get_or_create(&[("controller", controller)])
            .observe(seconds);
    }

    /// Whether this replica is the leader.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// How many objects of `kind` (e.g. `RayService`) the operator manages.
    pub fn set_managed(&self, kind: &'static str, count: i64) {
        self.managed.get_or_create(&[("kind", kind)]).set(count);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone)]
struct ProbeState {
    metrics: Metrics,
    ready: watch::Receiver<bool>,
}

async fn metrics_handler(State(state): State<ProbeState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn readyz_handler(State(state): State<ProbeState>) -> (StatusCode, &'static str) {
    if *state.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `GET /metrics` (OpenMetrics text), `GET /healthz` (200 while the process runs) and
/// `GET /readyz` (200 while `ready` is true, 503 otherwise) on `listener` until dropped.
pub async fn serve_probes(
    listener: TcpListener,
    metrics: Metrics,
    ready: watch::Receiver<bool>,
) -> Result<(), OperateError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_handler))
        .with_state(ProbeState { metrics, ready });
    axum::serve(listener, app).await?;
    Ok(())
}

/// The namespace of the pod this process runs in, from its service account, if any.
pub fn in_cluster_namespace() -> Option<String> {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
}

/// A leader-election identity unique to this process: the host name (the pod name in a
/// cluster) and a random suffix.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rayservice-operator".to_string());
    format!("{host}_{}", rayservice_core::random_suffix())
}

/// Leader election on one `coordination.k8s.io/v1` Lease.
///
/// A candidate takes the lease when nobody holds it, or when the holder's record has not
/// changed for the lease duration, measured on the candidate's own clock from when it first saw
/// that record (so clock skew between nodes does not matter). Every write is a replace guarded
/// by the resourceVersion just read, so of two candidates racing for the same record only one
/// wins. Needs `get`, `create` and `update` on leases in the namespace.
pub struct LeaderElector {
    leases: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
    /// When this identity last wrote the lease successfully.
    renewed_at: Mutex<Option<Instant>>,
}

impl LeaderElector {
    /// An elector for the Lease `namespace/name`, as `identity`; a 15 s lease renewed every 5 s.
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        Self {
            leases: Api::namespaced(client, &namespace),
            namespace,
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renewed_at: Mutex::new(None),
        }
    }

    /// Other timings (tests use short ones). The lease duration is written in whole seconds
    /// (at least 1); `renew_every` should be well under it.
    pub fn with_timing(mut self, lease_duration: Duration, renew_every: Duration) -> Self {
        self.lease_duration = lease_duration;
        self.renew_every = renew_every;
        self
    }

    /// This elector's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// How often a candidate looks at the lease again, and a holder retries a failed renewal.
    fn retry_every(&self) -> Duration {
        self.renew_every.min(Duration::from_secs(2))
    }

    /// How long a holder keeps going without a successful renewal: less than the lease
    /// duration, so it stops before a candidate may take over.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration
            .saturating_sub(self.renew_every)
            .max(self.renew_every)
    }

    fn mark_renewed(&self, at: Instant) {
        if let Ok(mut renewed) = self.renewed_at.lock() {
            *renewed = Some(at);
        }
    }

    fn last_renewed(&self) -> Option<Instant> {
        self.renewed_at.lock().ok().and_then(|r| *r)
    }

    fn spec(&self, now: Timestamp, transitions: i32, acquire_time: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: acquire_time.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Waits until this identity holds the lease. Transient API errors are logged and retried;
    /// a 401 or 403 (missing RBAC) is returned.
    pub async fn acquire(&self) -> Result<(), OperateError> {
        // The holder's record as last seen (resourceVersion), and when it was first seen.
        let mut observed: Option<(String, Instant)> = None;
        loop {
            match self.try_acquire(&mut observed).await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease(), identity = %self.identity, "acquired the lease");
                    return Ok(());
                }
                Ok(false) => {}
                Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => {
                    return Err(kube::Error::Api(e).into());
                }
                Err(error) => {
                    tracing::warn!(lease = %self.lease(), %error, "leader election: trying again");
                }
            }
            tokio::time::sleep(self.retry_every()).await;
        }
    }

    /// One attempt: `Ok(true)` when this identity now holds the lease.
    async fn try_acquire(
        &self,
        observed: &mut Option<(String, Instant)>,
    ) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let now = Timestamp::now();
        let Some(lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, 0, None)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.mark_renewed(started);
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let ours = holder == self.identity;
        if !holder.is_empty() && !ours {
            let version = lease.resource_version().unwrap_or_default();
            let seen_at = match observed {
                Some((seen, at)) if *seen == version => *at,
                _ => {
                    *observed = Some((version, started));
                    started
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.lease_duration);
            if seen_at.elapsed() < duration {
                return Ok(false);
            }
            tracing::info!(lease = %self.lease(), holder, "the lease expired; taking it over");
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire_time = if ours { spec.acquire_time } else { None };
        let mut taken = lease;
        taken.spec = Some(self.spec(now, transitions, acquire_time));
        // `taken` carries the resourceVersion read above: a concurrent write makes this a 409.
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &taken)
            .await
        {
            Ok(_) => {
                self.mark_renewed(started);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renews the lease once; fails if another identity holds it.
    async fn renew(&self) -> Result<(), OperateError> {
        let started = Instant::now();
        let mut lease = self.leases.get(&self.name).await?;
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            return Err(OperateError::LeaseTaken {
                lease: self.lease(),
                holder,
            });
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(spec);
        self.leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        self.mark_renewed(started);
        Ok(())
    }

    /// Keeps renewing the lease; returns why it was lost: another identity holds it, or no
    /// renewal succeeded for the renew deadline (the lease duration minus `renew_every`). Call
    /// after [`acquire`](Self::acquire) and stop leading when it returns.
    ///
    /// Each renewal may only take the time left before the renew deadline: one stuck on a
    /// half-open connection counts as failed when the deadline passes, so this replica stops
    /// leading before another one may take the lease over.
    pub async fn hold(&self) -> OperateError {
        let timing = HoldTiming {
            renew_every: self.renew_every,
            retry_every: self.retry_every(),
            renew_deadline: self.renew_deadline(),
        };
        let error = hold_lease(
            &self.lease(),
            timing,
            || self.last_renewed(),
            || self.renew(),
        )
        .await;
        if matches!(error, OperateError::RenewFailed { .. }) {
            // Say who took it over, when someone did: one read, bounded, never a write.
            let bound = self.renew_every.max(Duration::from_secs(1));
            if let Ok(Ok(Some(lease))) =
                tokio::time::timeout(bound, self.leases.get_opt(&self.name)).await
                && let Some(holder) = lease
                    .spec
                    .and_then(|spec| spec.holder_identity)
                    .filter(|holder| *holder != self.identity)
            {
                return OperateError::LeaseTaken {
                    lease: self.lease(),
                    holder,
                };
            }
        }
        error
    }

    /// Gives the lease up, if this identity holds it, so that a successor takes over at once.
    pub async fn release(&self) -> Result<(), OperateError> {
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.lease(), identity = %self.identity, "released the lease");
        Ok(())
    }
}

/// When a lease holder renews, retries, and gives up.
#[derive(Debug, Clone, Copy)]
struct HoldTiming {
    /// Pause after a successful renewal.
    renew_every: Duration,
    /// Pause after a failed renewal.
    retry_every: Duration,
    /// The holder gives up when no renewal succeeded for this long.
    renew_deadline: Duration,
}

/// The loop of [`LeaderElector::hold`]: `renew` writes the lease once (and moves
/// `last_renewed` on success). Every attempt is bounded by the time left before the renew
/// deadline; once the deadline has passed without a successful renewal this returns
/// [`OperateError::RenewFailed`], whatever the attempt in progress is still waiting for.
async fn hold_lease<R, F>(
    lease: &str,
    timing: HoldTiming,
    last_renewed: impl Fn() -> Option<Instant>,
    mut renew: R,
) -> OperateError
where
    R: FnMut() -> F,
    F: Future<Output = Result<(), OperateError>>,
{
    let since_renewed = || {
        last_renewed()
            .map(|at| at.elapsed())
            .unwrap_or(Duration::MAX)
    };
    let mut wait = timing.renew_every;
    loop {
        tokio::time::sleep(wait).await;
        let left = timing.renew_deadline.saturating_sub(since_renewed());
        let error = if left.is_zero() {
            "the renew deadline passed before the next renewal".to_string()
        } else {
            match tokio::time::timeout(left, renew()).await {
                Ok(Ok(())) => {
                    wait = timing.renew_every;
                    continue;
                }
                Ok(Err(taken @ OperateError::LeaseTaken { .. })) => return taken,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!(
                    "the renewal did not finish within the {:.1}s left before the renew deadline",
                    left.as_secs_f64()
                ),
            }
        };
        let since = since_renewed();
        if since >= timing.renew_deadline {
            return OperateError::RenewFailed {
                lease: lease.to_string(),
                seconds: since.as_secs_f64(),
                last_error: error,
            };
        }
        tracing::warn!(lease, %error, "renewing the lease failed; trying again");
        wait = timing.retry_every;
    }
}

/// Reconciles of one controller that may run at once. Each reconcile makes a few API calls;
/// unbounded, a burst of a thousand RayServices overloaded the API server (504s from etcd).
pub const CONTROLLER_CONCURRENCY: u16 = 8;
/// Triggers for one object within this window make one reconcile: creating a cluster sets off
/// a burst of pod and status events that all ask for the same look.
pub const CONTROLLER_DEBOUNCE: Duration = Duration::from_millis(100);

/// The run configuration shared by the operator's controllers.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .concurrency(CONTROLLER_CONCURRENCY)
        .debounce(CONTROLLER_DEBOUNCE)
}

/// Logs an error of a controller's stream. A reconcile's own failure was logged by the error
/// policy already, and an object deleted before its queued reconcile ran is routine; both go to
/// debug. Anything else (a watch that fails, say) is a warning.
pub fn log_controller_error<E, W>(controller: &str, error: &kube::runtime::controller::Error<E, W>)
where
    E: std::error::Error + 'static,
    W: std::error::Error + 'static,
{
    use kube::runtime::controller::Error;
    match error {
        Error::ObjectNotFound(_) | Error::ReconcilerFailed(..) => {
            tracing::debug!(controller, %error, "controller")
        }
        _ => tracing::warn!(controller, %error, "controller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound on any awaited condition in these tests; the timings under test are far shorter.
    const TEST_DEADLINE: Duration = Duration::from_secs(30);

    fn timing() -> HoldTiming {
        HoldTiming {
            renew_every: Duration::from_millis(20),
            retry_every: Duration::from_millis(10),
            renew_deadline: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn a_renewal_that_never_finishes_loses_the_lease_at_the_deadline() {
        let renewed = Instant::now();
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let hold = hold_lease(
            "ns/lease",
            timing(),
            || Some(renewed),
            || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::future::pending::<Result<(), OperateError>>()
            },
        );
        let lost = tokio::time::timeout(TEST_DEADLINE, hold)
            .await
            .expect("hold must give up at the renew deadline");
        match lost {
            OperateError::RenewFailed {
                lease,
                seconds,
                last_error,
            } => {
                assert_eq!(lease, "ns/lease");
                assert!(seconds >= 0.3, "{seconds}");
                assert!(last_error.contains("did not finish"), "{last_error}");
            }
            other => panic!("unexpected {other}"),
        }
        // The stuck attempt was the only one: it was cut at the deadline, not retried.
        assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn failing_renewals_are_retried_until_the_deadline() {
        let renewed = Instant::now();
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let lost = tokio::time::timeout(
            TEST_DEADLINE,
            hold_lease(
                "ns/lease",
                timing(),
                || Some(renewed),
                || {
                    attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::future::ready(Err(OperateError::RenewFailed {
                        lease: "ns/lease".into(),
                        seconds: 0.0,
                        last_error: "refused".into(),
                    }))
                },
            ),
        )
        .await
        .expect("hold must give up");
        assert!(
            matches!(&lost, OperateError::RenewFailed { seconds, .. } if *seconds >= 0.3),
            "{lost}"
        );
        assert!(attempts.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn a_renewal_in_time_keeps_the_lease_and_taken_is_returned_at_once() {
        let renewed = Mutex::new(Instant::now());
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let generous = HoldTiming {
            renew_deadline: Duration::from_secs(10),
            ..timing()
        };
        let lost = tokio::time::timeout(
            TEST_DEADLINE,
            hold_lease(
                "ns/lease",
                generous,
                || renewed.lock().ok().map(|at| *at),
                || {
                    let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let result = if n < 40 {
                        if let Ok(mut at) = renewed.lock() {
                            *at = Instant::now();
                        }
                        Ok(())
                    } else {
                        Err(OperateError::LeaseTaken {
                            lease: "ns/lease".into(),
                            holder: "other".into(),
                        })
                    };
                    std::future::ready(result)
                },
            ),
        )
        .await
        .expect("hold must return when the lease is taken");
        // Every renewal succeeded: the holder kept going until the lease was taken.
        assert!(matches!(lost, OperateError::LeaseTaken { .. }), "{lost}");
        assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 41);
    }

    #[test]
    fn metrics_are_named_as_documented() {
        let metrics = Metrics::new();
        metrics.reconciled("raycluster", true, 0.02);
        metrics.reconciled("raycluster", false, 0.5);
        metrics.set_leader(true);
        metrics.set_managed("RayCluster", 3);
        let text = metrics.encode();
        for line in [
            "rayservice_operator_reconciles_total{controller=\"raycluster\",result=\"ok\"} 1",
            "rayservice_operator_reconciles_total{controller=\"raycluster\",result=\"error\"} 1",
            "rayservice_operator_reconcile_duration_seconds_count{controller=\"raycluster\"} 2",
            "rayservice_operator_leader 1",
            "rayservice_operator_managed_objects{kind=\"RayCluster\"} 3",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        metrics.set_leader(false);
        assert!(metrics.encode().contains("rayservice_operator_leader 0"));
    }

    #[test]
    fn identities_differ() {
        assert_ne!(default_identity(), default_identity());
    }
}
