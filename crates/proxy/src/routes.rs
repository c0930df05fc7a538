//! Route tables: the public description ([`RouteTable`]) and its compiled,
//! lookup-friendly form used on the request path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::HeaderValue;
use hyper::http::uri::Authority;

use crate::stats::{BackendCounters, CounterMaps, Counters};

/// Which Kubernetes Service a [`crate::FrontEndpoint`] stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// `NAME-serve-svc`: the Ray Serve HTTP proxy (port 8000 in a Ray cluster).
    Serve,
    /// `NAME-head-svc`: the Ray dashboard (port 8265 in a Ray cluster).
    Dashboard,
}

impl EndpointKind {
    /// Suffix that KubeRay appends to the RayService name to form the Service name.
    pub fn service_suffix(self) -> &'static str {
        match self {
            Self::Serve => "-serve-svc",
            Self::Dashboard => "-head-svc",
        }
    }

    /// Kubernetes Service name for the RayService `service` (e.g. `fruit-serve-svc`).
    pub fn service_host(self, service: &str) -> String {
        format!("{service}{}", self.service_suffix())
    }
}

/// Where one RayService's traffic goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRoute {
    /// RayService name (`metadata.name`).
    pub service: String,
    /// The Ray clusters serving this RayService now, each with its share of the requests
    /// (one during normal operation, two while an incremental upgrade moves traffic);
    /// empty while no cluster is ready yet.
    pub backends: Vec<Backend>,
    /// Serve route prefixes of the service's applications (e.g. `"/fruit"`, `"/"`).
    /// Only used by [`EndpointKind::Serve`] endpoints.
    pub route_prefixes: Vec<String>,
}

/// One Ray cluster behind a service, and the share of requests it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The cluster's name: its requests are counted under it in [`crate::EndpointStats`],
    /// including those still in flight after it left the table.
    pub cluster: String,
    /// Address of the cluster's endpoint (Serve HTTP port or dashboard port, depending on the
    /// endpoint kind).
    pub addr: SocketAddr,
    /// Relative share of new requests (a percentage in practice); 0 gets none.
    pub weight: u32,
    /// Token sent upstream as `Authorization: Bearer <token>` on every request, replacing any
    /// the client sent: the front endpoint then stands in for a client that holds the
    /// cluster's token (Ray's token authentication). `None`: headers pass unchanged.
    pub bearer_token: Option<BearerToken>,
}

impl Backend {
    /// The cluster `cluster` at `addr`, with weight `weight` and no token.
    pub fn new(cluster: impl Into<String>, addr: SocketAddr, weight: u32) -> Self {
        Self {
            cluster: cluster.into(),
            addr,
            weight,
            bearer_token: None,
        }
    }

    /// The same backend, adding `token` (if any) to every upstream request.
    pub fn with_bearer_token(mut self, token: Option<impl Into<Arc<str>>>) -> Self {
        self.bearer_token = token.map(BearerToken::new);
        self
    }
}

/// A token a front endpoint adds to upstream requests; its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl ServiceRoute {
    /// A service served by one upstream (counted under the service's own name), or by none.
    pub fn new(
        service: impl Into<String>,
        upstream: Option<SocketAddr>,
        route_prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let service = service.into();
        Self {
            backends: upstream
                .map(|addr| Backend::new(service.clone(), addr, 100))
                .into_iter()
                .collect(),
            service,
            route_prefixes: route_prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// The same route, served by `backends` instead.
    pub fn with_backends(mut self, backends: Vec<Backend>) -> Self {
        self.backends = backends;
        self
    }

    /// The same route, adding `token` (if any) to every upstream request of every backend.
    pub fn with_bearer_token(mut self, token: Option<impl Into<Arc<str>>>) -> Self {
        let token = token.map(|t| BearerToken::new(t.into()));
        for backend in &mut self.backends {
            backend.bearer_token = token.clone();
        }
        self
    }
}

/// The complete routing state of one front endpoint, swapped atomically by
/// [`crate::FrontEndpoint::set_routes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Services in creation order (earlier services win ties).
    pub services: Vec<ServiceRoute>,
}

impl RouteTable {
    /// Builds a table from services given in creation order.
    pub fn new(services: Vec<ServiceRoute>) -> Self {
        Self { services }
    }
}

/// A resolved upstream: socket address plus the pre-rendered URI authority.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// The cluster's name, for logs and answers.
    pub(crate) cluster: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) authority: Authority,
    /// `Bearer <token>` to send upstream, marked sensitive.
    pub(crate) authorization: Option<HeaderValue>,
    /// Its share of new requests.
    weight: u64,
    /// Its counters, shared with every table that names the cluster.
    pub(crate) counters: Arc<BackendCounters>,
}

/// One service of a compiled table.
#[derive(Debug)]
pub(crate) struct CompiledService {
    pub(crate) name: Arc<str>,
    /// Backends with a weight above 0 (or the first one, when all have 0).
    upstreams: Vec<Upstream>,
    /// Sum of the weights of `upstreams`.
    total_weight: u64,
    /// Requests picked so far: the weighted choice is a deterministic interleaving, so every
    /// window of `total_weight` requests splits exactly by weight.
    picks: AtomicU64,
    pub(crate) counters: Arc<Counters>,
}

/// A prime that spreads consecutive requests over the weight slots (coprime with any total
/// weight below it, so every slot is visited once per cycle).
const SPREAD: u64 = 7919;

impl CompiledService {
    /// Whether any cluster serves this service.
    pub(crate) fn has_upstream(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The upstream for the next request, by weight; `None` when no cluster serves.
    pub(crate) fn pick(&self) -> Option<&Upstream> {
        match self.upstreams.as_slice() {
            [] => None,
            [only] => Some(only),
            upstreams => {
                let n = self.picks.fetch_add(1, Ordering::Relaxed);
                let total = self.total_weight.max(1);
                let mut slot = if total.is_multiple_of(SPREAD) {
                    n % total
                } else {
                    n.wrapping_mul(SPREAD) % total
                };
                for upstream in upstreams {
                    if slot < upstream.weight {
                        return Some(upstream);
                    }
                    slot -= upstream.weight;
                }
                upstreams.last()
            }
        }
    }
}

/// Result of routing one request.
pub(crate) enum RouteMatch<'a> {
    /// The request belongs to this service.
    Service(&'a CompiledService),
    /// The Host header names `NAME-serve-svc` / `NAME-head-svc` for an unknown NAME.
    UnknownService(String),
    /// Nothing matches.
    NoMatch,
}

/// Lookup-friendly form of a [`RouteTable`].
#[derive(Debug)]
pub(crate) struct CompiledRoutes {
    pub(crate) kind: EndpointKind,
    pub(crate) services: Vec<CompiledService>,
    /// (normalized prefix, index into `services`), longest prefix first,
    /// creation order among equal lengths.
    prefixes: Vec<(String, usize)>,
    /// Index of the first service with an upstream (dashboard default).
    first_ready: Option<usize>,
    /// Human-readable list of services (and prefixes), for 404 bodies.
    pub(crate) listing: String,
    /// The table this was compiled from.
    pub(crate) source: RouteTable,
}

/// The `Authorization` value for a token; `None` (and a warning) if it cannot be a header.
fn bearer_header(token: &BearerToken) -> Option<HeaderValue> {
    match HeaderValue::from_str(&format!("Bearer {}", token.0)) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(value)
        }
        Err(_) => {
            tracing::warn!("upstream token cannot be sent as a header; not sent");
            None
        }
    }
}

/// DNS tails accepted after `NAME-serve-svc`, longest first.
const DNS_TAILS: [&str; 3] = [".default.svc.cluster.local", ".default.svc", ".default"];

/// Normalizes a Serve route prefix: leading `/`, no trailing `/` (except the root).
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Segment-wise prefix match: `/fruit` matches `/fruit`, `/fruit/`, `/fruit/x`, not `/fruitx`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// ASCII case-insensitive `ends_with`.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The host name of a Host value without its port, trailing dot and
/// Kubernetes DNS tail: `NAME-serve-svc.default.svc:8000` -> `NAME-serve-svc`.
/// `None` for IPv6 literals.
fn service_label(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None; // IPv6 literal
    }
    let mut name = host.rsplit_once(':').map_or(host, |(h, _port)| h);
    name = name.strip_suffix('.').unwrap_or(name);
    for tail in DNS_TAILS {
        if ends_with_ignore_case(name, tail) {
            // `tail` is ASCII, so this index is a char boundary.
            name = &name[..name.len() - tail.len()];
            break;
        }
    }
    Some(name)
}

/// Extracts `NAME` from a Host value like `NAME-serve-svc[.default[.svc[.cluster.local]]][:port]`.
pub(crate) fn service_from_host(host: &str, kind: EndpointKind) -> Option<&str> {
    let name = service_label(host)?;
    let suffix = kind.service_suffix();
    if name.len() > suffix.len() && ends_with_ignore_case(name, suffix) {
        Some(&name[..name.len() - suffix.len()])
    } else {
        None
    }
}

/// Whether a front endpoint answers to this Host (or HTTP/2 `:authority`)
/// value: the defence against DNS rebinding, where a web page makes the
/// browser send requests to 127.0.0.1 under the page's own host name.
///
/// Allowed, with any port and case, a trailing dot ignored:
/// - loopback names: `localhost` and `*.localhost` (RFC 6761);
/// - IP literals: `127.0.0.1`, `[::1]`, any other IPv4 or bracketed IPv6 address;
/// - Kubernetes Service names of one label ending in `-svc` (`NAME-serve-svc`,
///   `NAME-head-svc`), alone or followed by `.default`, `.default.svc` or
///   `.default.svc.cluster.local`; none of these resolve in public DNS.
pub(crate) fn host_allowed(host: &str) -> bool {
    if host.is_empty() || host.contains('@') {
        return false;
    }
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(after, true);
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && !port_ok(port, false)
    {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    if name.eq_ignore_ascii_case("localhost") || ends_with_ignore_case(name, ".localhost") {
        return name.len() == "localhost".len() || name.len() > ".localhost".len();
    }
    let Some(label) = service_label(host) else {
        return false;
    };
    label.len() > "-svc".len()
        && ends_with_ignore_case(label, "-svc")
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A port after the host: digits only. `bracketed`: `after` is what follows
/// `]` of an IPv6 literal, so it is empty or starts with `:`.
fn port_ok(after: &str, bracketed: bool) -> bool {
    let port = if bracketed {
        if after.is_empty() {
            return true;
        }
        match after.strip_prefix(':') {
            Some(port) => port,
            None => return false,
        }
    } else {
        after
    };
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

impl CompiledRoutes {
    /// Compiles `table`, reusing (or creating) per-service counters from `counters`.
    /// Counters of services that are no longer in the table are dropped from the map.
    pub(crate) fn compile(
        kind: EndpointKind,
        table: RouteTable,
        counters: &mut CounterMaps,
    ) -> Self {
        let mut services = Vec::with_capacity(table.services.len());
        let mut prefixes = Vec::new();
        let mut listing = String::new();
        for (idx, route) in table.services.iter().enumerate() {
            let counter = counters
                .services
                .entry(route.service.clone())
                .or_default()
                .clone();
            let mut upstreams: Vec<Upstream> = route
                .backends
                .iter()
                .map(|backend| Upstream {
                    cluster: Arc::from(backend.cluster.as_str()),
                    addr: backend.addr,
                    authority: authority_for(backend.addr),
                    authorization: backend.bearer_token.as_ref().and_then(bearer_header),
                    weight: u64::from(backend.weight),
                    counters: counters
                        .backends
                        .entry(backend.cluster.clone())
                        .or_default()
                        .clone(),
                })
                .collect();
            if upstreams.iter().any(|u| u.weight > 0) {
                upstreams.retain(|u| u.weight > 0);
            } else {
                upstreams.truncate(1);
            }
            let total_weight = upstreams.iter().map(|u| u.weight).sum();
            let mut normalized: Vec<String> = Vec::with_capacity(route.route_prefixes.len());
            for p in &route.route_prefixes {
                let p = normalize_prefix(p);
                if !normalized.contains(&p) {
                    normalized.push(p);
                }
            }
            if !listing.is_empty() {
                listing.push_str(", ");
            }
            let _ = write!(listing, "{}", kind.service_host(&route.service));
            if kind == EndpointKind::Serve {
                let _ = write!(listing, " (prefixes: {})", join_or_none(&normalized));
            }
            if upstreams.is_empty() {
                listing.push_str(" [no ready cluster]");
            }
            prefixes.extend(normalized.into_iter().map(|p| (p, idx)));
            services.push(CompiledService {
                name: Arc::from(route.service.as_str()),
                upstreams,
                total_weight,
                picks: AtomicU64::new(0),
                counters: counter,
            });
        }
        // Stable: equal lengths keep creation order, so the oldest service wins ties.
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        counters
            .services
            .retain(|name, _| table.services.iter().any(|s| &s.service == name));
        // A cluster that left the table is counted until its last request finished.
        counters.backends.retain(|name, c| {
            c.in_flight.load(Ordering::Relaxed) > 0
                || table
                    .services
                    .iter()
                    .any(|s| s.backends.iter().any(|b| &b.cluster == name))
        });
        let first_ready = services.iter().position(CompiledService::has_upstream);
        if listing.is_empty() {
            listing.push_str("none");
        }
        Self {
            kind,
            services,
            prefixes,
            first_ready,
            listing,
            source: table,
        }
    }

    /// Routes a request given its host (if any) and path.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> RouteMatch<'_> {
        if let Some(name) = host.and_then(|h| service_from_host(h, self.kind)) {
            return match self
                .services
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
            {
                Some(svc) => RouteMatch::Service(svc),
                None => RouteMatch::UnknownService(name.to_owned()),
            };
        }
        let idx = match self.kind {
            EndpointKind::Serve => self
                .prefixes
                .iter()
                .find(|(p, _)| prefix_matches(p, path))
                .map(|(_, idx)| *idx),
            // No ready service: report the oldest one as "not ready" (503).
            EndpointKind::Dashboard => self.first_ready.or(if self.services.is_empty() {
                None
            } else {
                Some(0)
            }),
        };
        match idx.and_then(|i| self.services.get(i)) {
            Some(svc) => RouteMatch::Service(svc),
            None => RouteMatch::NoMatch,
        }
    }
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn authority_for(addr: SocketAddr) -> Authority {
    // A SocketAddr always renders as a valid authority (`1.2.3.4:5` or `[::1]:5`).
    match Authority::try_from(addr.to_string()) {
        Ok(a) => a,
        Err(_) => Authority::from_static("127.0.0.1"),
    }
}

/// Increments a relaxed counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: EndpointKind, services: Vec<ServiceRoute>) -> CompiledRoutes {
        CompiledRoutes::compile(kind, RouteTable::new(services), &mut CounterMaps::default())
    }

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
    }

    fn routed(r: RouteMatch<'_>) -> Option<&str> {
        match r {
            RouteMatch::Service(s) => Some(&s.name),
            RouteMatch::UnknownService(_) | RouteMatch::NoMatch => None,
        }
    }

    #[test]
    fn host_forms() {
        let k = EndpointKind::Serve;
        assert_eq!(service_from_host("fruit-serve-svc", k), Some("fruit"));
        assert_eq!(service_from_host("fruit-serve-svc:8000", k), Some("fruit"));
        assert_eq!(
            service_from_host("Fruit-Serve-SVC.default", k),
            Some("Fruit")
        );
        assert_eq!(
            service_from_host("fruit-serve-svc.default.svc", k),
            Some("fruit")
        );
        assert_eq!(
            service_from_host("fruit-serve-svc.default.svc.cluster.local:80", k),
            Some("fruit")
        );
        assert_eq!(
            service_from_host("fruit-serve-svc.default.svc.cluster.local.", k),
            Some("fruit")
        );
        assert_eq!(service_from_host("fruit-serve-svc.other", k), None);
        assert_eq!(service_from_host("-serve-svc", k), None);
        assert_eq!(service_from_host("fruit-head-svc", k), None);
        assert_eq!(
            service_from_host("fruit-head-svc", EndpointKind::Dashboard),
            Some("fruit")
        );
        assert_eq!(service_from_host("localhost:8000", k), None);
        assert_eq!(service_from_host("[::1]:8000", k), None);
        assert_eq!(service_from_host("127.0.0.1", k), None);
    }

    #[test]
    fn allowed_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:8000",
            "localhost.",
            "app.localhost:8265",
            "127.0.0.1",
            "127.0.0.1:8000",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:8000",
            "[fe80::1]:1",
            "fruit-serve-svc",
            "fruit-serve-svc:8000",
            "Fruit-Head-Svc.default",
            "fruit-serve-svc.default.svc.cluster.local:80",
            "fruit-serve-svc.default.svc.cluster.local.",
            "x-svc",
            "localhost:",
        ] {
            assert!(host_allowed(host), "{host} must be allowed");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            ".localhost",
            "fruit-serve-svc.evil.example",
            "fruit-serve-svc.other",
            "evil.com-svc",
            "-svc",
            "127.0.0.1.nip.io",
            "user@localhost",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:80:80",
            "[evil.example]",
            "localhost:80:80",
            "localhost:http",
            "localhost:123456",
            "fruit_serve-svc",
            "ex\u{e4}mple-svc",
        ] {
            assert!(!host_allowed(host), "{host} must be refused");
        }
    }

    #[test]
    fn prefixes() {
        assert!(prefix_matches("/fruit", "/fruit"));
        assert!(prefix_matches("/fruit", "/fruit/"));
        assert!(prefix_matches("/fruit", "/fruit/x"));
        assert!(!prefix_matches("/fruit", "/fruitx"));
        assert!(!prefix_matches("/fruit", "/"));
        assert!(prefix_matches("/", "/anything"));
        assert_eq!(normalize_prefix("fruit/"), "/fruit");
        assert_eq!(normalize_prefix(""), "/");
        assert_eq!(normalize_prefix("/"), "/");
    }

    #[test]
    fn longest_prefix_then_creation_order() {
        let t = table(
            EndpointKind::Serve,
            vec![
                ServiceRoute::new("a", addr(1), ["/", "/fruit"]),
                ServiceRoute::new("b", addr(2), ["/fruit/apple", "/fruit"]),
            ],
        );
        assert_eq!(routed(t.route(None, "/fruit/apple/1")), Some("b"));
        assert_eq!(routed(t.route(None, "/fruit/pear")), Some("a"));
        assert_eq!(routed(t.route(None, "/x")), Some("a"));
        assert_eq!(routed(t.route(Some("B-serve-svc"), "/x")), Some("b"));
        assert!(matches!(
            t.route(Some("c-serve-svc"), "/"),
            RouteMatch::UnknownService(name) if name == "c"
        ));
    }

    #[test]
    fn dashboard_default() {
        let t = table(
            EndpointKind::Dashboard,
            vec![
                ServiceRoute::new("a", None, ["/"]),
                ServiceRoute::new("b", addr(2), Vec::<String>::new()),
            ],
        );
        assert_eq!(routed(t.route(None, "/api")), Some("b"));
        assert_eq!(routed(t.route(Some("a-head-svc:8265"), "/api")), Some("a"));
        let empty = table(EndpointKind::Dashboard, vec![]);
        assert!(matches!(empty.route(None, "/"), RouteMatch::NoMatch));
        let none_ready = table(
            EndpointKind::Dashboard,
            vec![ServiceRoute::new("a", None, ["/"])],
        );
        assert_eq!(routed(none_ready.route(None, "/")), Some("a"));
    }

    #[test]
    fn counters_survive_swaps_and_are_pruned() {
        let mut counters = CounterMaps::default();
        let t1 = CompiledRoutes::compile(
            EndpointKind::Serve,
            RouteTable::new(vec![
                ServiceRoute::new("a", addr(1), ["/"]),
                ServiceRoute::new("b", addr(2), ["/b"]),
            ]),
            &mut counters,
        );
        bump(&t1.services[0].counters.requests);
        let t2 = CompiledRoutes::compile(
            EndpointKind::Serve,
            RouteTable::new(vec![ServiceRoute::new("a", addr(3), ["/"])]),
            &mut counters,
        );
        assert_eq!(t2.services[0].counters.requests.load(Ordering::Relaxed), 1);
        assert_eq!(counters.services.len(), 1);
        assert!(t2.listing.contains("a-serve-svc (prefixes: /)"));
    }

    #[test]
    fn weighted_split_is_exact_per_cycle_and_interleaved() {
        let a = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 1));
        let b = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 2));
        let t = table(
            EndpointKind::Serve,
            vec![
                ServiceRoute::new("s", None, ["/"])
                    .with_backends(vec![Backend::new("old", a, 75), Backend::new("new", b, 25)]),
            ],
        );
        let RouteMatch::Service(svc) = t.route(None, "/") else {
            panic!("routed")
        };
        let picks: Vec<&str> = (0..100)
            .map(|_| svc.pick().map(|u| &*u.cluster).unwrap_or(""))
            .collect();
        assert_eq!(picks.iter().filter(|c| **c == "new").count(), 25);
        // Interleaved: no run of 25 "new" in a row.
        assert!(picks.windows(4).all(|w| w.contains(&"old")));
        let zero = table(
            EndpointKind::Serve,
            vec![
                ServiceRoute::new("s", None, ["/"])
                    .with_backends(vec![Backend::new("old", a, 100), Backend::new("new", b, 0)]),
            ],
        );
        let RouteMatch::Service(svc) = zero.route(None, "/") else {
            panic!("routed")
        };
        assert!((0..50).all(|_| svc.pick().is_some_and(|u| &*u.cluster == "old")));
    }
}
