//! End-to-end tests of the front endpoint over real loopback sockets.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::header;
use hyper::{Request, StatusCode};
use rayservice_proxy::{
    Backend, EndpointKind, FrontEndpoint, ProxyError, RouteTable, ServiceRoute, ServiceStats,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

async fn front(kind: EndpointKind, services: Vec<ServiceRoute>) -> FrontEndpoint {
    let ep = FrontEndpoint::bind(any_port(), kind)
        .await
        .expect("bind front endpoint");
    ep.set_routes(RouteTable::new(services));
    ep
}

fn one(service: &str, up: &TestUpstream) -> RouteTable {
    RouteTable::new(vec![ServiceRoute::new(service, Some(up.addr), ["/"])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix() {
    let a = TestUpstream::start("A").await;
    let b = TestUpstream::start("B").await;
    let c = TestUpstream::start("C").await;
    let ep = front(
        EndpointKind::Serve,
        vec![
            ServiceRoute::new("fruit", Some(a.addr), ["/fruit"]),
            ServiceRoute::new("math", Some(b.addr), ["/math", "/"]),
            ServiceRoute::new("apple", Some(c.addr), ["/fruit/apple/"]),
        ],
    )
    .await;
    let f = ep.local_addr();
    let cl = client();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("/fruit", None, "A"),
        ("/fruit/", None, "A"),
        ("/fruit/pear?x=1", None, "A"),
        ("/fruitx", None, "B"),
        ("/math/add", None, "B"),
        ("/", None, "B"),
        ("/fruit/apple", None, "C"),
        ("/fruit/apple/red", None, "C"),
        ("/fruit/applepie", None, "A"),
        // Host wins over prefixes, in every Kubernetes form, port and case ignored.
        ("/math", Some("fruit-serve-svc"), "A"),
        ("/math", Some("fruit-serve-svc:8000"), "A"),
        ("/math", Some("FRUIT-Serve-Svc.default"), "A"),
        ("/math", Some("fruit-serve-svc.default.svc"), "A"),
        (
            "/math",
            Some("fruit-serve-svc.default.svc.cluster.local:80"),
            "A",
        ),
        ("/fruit", Some("math-serve-svc"), "B"),
        ("/fruit", Some("apple-serve-svc"), "C"),
        // Other hosts fall back to prefix routing.
        ("/fruit", Some("localhost:8000"), "A"),
        ("/fruit", Some("fruit-head-svc"), "A"),
    ];
    for (path, host, want) in cases {
        let got = get(&cl, f, path, *host).await;
        assert_eq!(got.status, StatusCode::OK, "{path} {host:?}: {}", got.body);
        assert_eq!(got.body, *want, "{path} with host {host:?}");
    }
    let stats = ep.stats();
    assert_eq!(
        stats.services.get("fruit"),
        Some(&ServiceStats {
            requests: 11,
            errors: 0
        })
    );
    assert_eq!(stats.services.get("apple").map(|s| s.requests), Some(3));
    assert_eq!(stats.unmatched, 0);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_names_services_and_prefixes() {
    let a = TestUpstream::start("A").await;
    let ep = front(
        EndpointKind::Serve,
        vec![
            ServiceRoute::new("fruit", Some(a.addr), ["/fruit", "/veg"]),
            ServiceRoute::new("pending", None, ["/later"]),
        ],
    )
    .await;
    let cl = client();
    let got = get(&cl, ep.local_addr(), "/other", None).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.body.contains("/other"), "{}", got.body);
    assert!(
        got.body
            .contains("fruit-serve-svc (prefixes: /fruit, /veg)"),
        "{}",
        got.body
    );
    assert!(got.body.contains("pending-serve-svc"), "{}", got.body);
    assert!(got.header("content-type").starts_with("text/plain"));

    let got = get(&cl, ep.local_addr(), "/fruit", Some("nope-serve-svc")).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.body.contains("\"nope\""), "{}", got.body);

    // An empty table is a 404 too.
    ep.set_routes(RouteTable::default());
    let got = get(&cl, ep.local_addr(), "/", None).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.body.contains("none"), "{}", got.body);
    assert_eq!(ep.stats().unmatched, 3);
    assert!(ep.stats().services.is_empty());
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_cluster_is_503() {
    let ep = front(
        EndpointKind::Serve,
        vec![ServiceRoute::new("fruit", None, ["/"])],
    )
    .await;
    let got = get(&client(), ep.local_addr(), "/x", None).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        got.body.trim_end(),
        "service fruit has no ready Ray cluster yet"
    );
    assert_eq!(
        ep.stats().services.get("fruit"),
        Some(&ServiceStats {
            requests: 1,
            errors: 1
        })
    );
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let refused = dead_addr().await;
    let (resetting, _task) = resetting_upstream().await;
    let ep = front(
        EndpointKind::Serve,
        vec![
            ServiceRoute::new("down", Some(refused), ["/down"]),
            ServiceRoute::new("flaky", Some(resetting), ["/flaky"]),
        ],
    )
    .await;
    let cl = client();
    let got = get(&cl, ep.local_addr(), "/down", None).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.body.contains("service down"), "{}", got.body);
    assert!(got.body.contains(&refused.to_string()), "{}", got.body);

    let req = Request::post(format!("http://{}/flaky", ep.local_addr()))
        .body(full("payload"))
        .expect("request");
    let got = send(&cl, req).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.body.contains("service flaky"), "{}", got.body);

    let stats = ep.stats();
    assert_eq!(
        stats.services["down"],
        ServiceStats {
            requests: 1,
            errors: 1
        }
    );
    assert_eq!(
        stats.services["flaky"],
        ServiceStats {
            requests: 1,
            errors: 1
        }
    );
    // The front connection survives upstream failures.
    let got = get(&cl, ep.local_addr(), "/down", None).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_request_unchanged_except_hop_by_hop() {
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Serve, one("fruit", &a).services).await;
    let f = ep.local_addr();
    let req = Request::delete(format!("http://{f}/fruit/x?q=1&r=two"))
        .header(
            header::HOST,
            "fruit-serve-svc.default.svc.cluster.local:8000",
        )
        .header("x-custom", "kept")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header(header::CONNECTION, "keep-alive, x-hop")
        .header("x-forwarded-for", "10.1.2.3")
        .body(empty())
        .expect("request");
    let got = send(&client(), req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.header("x-seen-method"), "DELETE");
    assert_eq!(got.header("x-seen-uri"), "/fruit/x?q=1&r=two");
    assert_eq!(
        got.header("x-seen-host"),
        "fruit-serve-svc.default.svc.cluster.local:8000"
    );
    assert_eq!(got.header("x-seen-custom"), "kept");
    assert_eq!(got.header("x-seen-hop"), "-");
    assert_eq!(got.header("x-seen-keep-alive"), "-");
    assert_eq!(got.header("x-seen-xff"), "10.1.2.3, 127.0.0.1");
    assert_eq!(got.header("x-seen-proto"), "http");
    // Hop-by-hop headers of the upstream response are not passed back.
    assert_eq!(got.header("x-upstream-hop"), "<missing>");
    assert_eq!(got.header("x-upstream"), "A");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_routes_to_first_ready_or_by_head_svc_host() {
    let a = TestUpstream::start("A").await;
    let b = TestUpstream::start("B").await;
    let ep = front(
        EndpointKind::Dashboard,
        vec![
            ServiceRoute::new("old", None, Vec::<String>::new()),
            ServiceRoute::new("first", Some(a.addr), Vec::<String>::new()),
            ServiceRoute::new("second", Some(b.addr), Vec::<String>::new()),
        ],
    )
    .await;
    let cl = client();
    let f = ep.local_addr();
    assert_eq!(get(&cl, f, "/api/jobs/", None).await.body, "A");
    assert_eq!(
        get(&cl, f, "/", Some("second-head-svc:8265")).await.body,
        "B"
    );
    assert_eq!(get(&cl, f, "/", Some("second-serve-svc")).await.body, "A");
    let got = get(&cl, f, "/", Some("old-head-svc.default")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.body.contains("service old"), "{}", got.body);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_a_token_sends_it_upstream_in_place_of_the_clients() {
    let a = TestUpstream::start("A").await;
    let b = TestUpstream::start("B").await;
    let ep = front(
        EndpointKind::Dashboard,
        vec![
            ServiceRoute::new("private", Some(a.addr), Vec::<String>::new())
                .with_bearer_token(Some("s3cret")),
            ServiceRoute::new("open", Some(b.addr), Vec::<String>::new()),
        ],
    )
    .await;
    let cl = client();
    let f = ep.local_addr();
    let got = get(&cl, f, "/api/jobs/", None).await;
    assert_eq!(got.header("x-seen-authorization"), "Bearer s3cret");
    let req = Request::get(format!("http://{f}/api/jobs/"))
        .header(header::HOST, "private-head-svc")
        .header(header::AUTHORIZATION, "Bearer guessed")
        .body(empty())
        .expect("request");
    let got = send(&cl, req).await;
    assert_eq!(got.header("x-seen-authorization"), "Bearer s3cret");
    // A route without a token passes the client's header on unchanged.
    let req = Request::get(format!("http://{f}/"))
        .header(header::HOST, "open-head-svc")
        .header(header::AUTHORIZATION, "Bearer mine")
        .body(empty())
        .expect("request");
    let got = send(&cl, req).await;
    assert_eq!(got.body, "B");
    assert_eq!(got.header("x-seen-authorization"), "Bearer mine");
    assert!(!format!("{:?}", ep.routes()).contains("s3cret"));
    ep.shutdown().await;
}

/// Byte at absolute offset `i` of the streamed test payload.
fn pattern(offset: usize, len: usize) -> Bytes {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_streams_both_ways() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 20;
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Serve, one("echo", &a).services).await;
    let (mut tx, body) = Channel::<Bytes>::new(1);
    let req = Request::post(format!("http://{}/echo", ep.local_addr()))
        .body(body.map_err(|e| match e {}).boxed())
        .expect("request");
    let cl = client();
    let pending = tokio::spawn(async move { cl.request(req).await });
    within("first chunk sent", tx.send_data(pattern(0, CHUNK)))
        .await
        .expect("send chunk");
    // The response head arrives while the request body is still being sent.
    let resp = within("response head", pending)
        .await
        .expect("join")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // Strict ping-pong: chunk i+1 is only sent after chunk i came back, so
    // nothing on the path can be buffering the whole body.
    for i in 0..CHUNKS {
        if i > 0 {
            within("chunk sent", tx.send_data(pattern(i * CHUNK, CHUNK)))
                .await
                .expect("send chunk");
        }
        let got = read_at_least(&mut body, CHUNK).await;
        assert_eq!(got.len(), CHUNK, "chunk {i} came back whole");
        assert!(got == pattern(i * CHUNK, CHUNK), "chunk {i} content");
    }
    drop(tx);
    let rest = within("end of body", body.collect())
        .await
        .expect("body")
        .to_bytes();
    assert!(rest.is_empty());
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_response_streams_first_chunk_early() {
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Serve, one("s", &a).services).await;
    let req = Request::get(format!("http://{}/stream", ep.local_addr()))
        .body(empty())
        .expect("request");
    let resp = within("response head", client().request(req))
        .await
        .expect("response");
    let mut body = resp.into_body();
    let first = read_at_least(&mut body, 5).await;
    assert_eq!(first, b"first");
    // Only now may the upstream finish.
    a.release();
    let rest = within("rest", body.collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&rest[..], b"rest");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_keeps_in_flight_on_old_upstream() {
    let a = TestUpstream::start("A").await;
    let b = TestUpstream::start("B").await;
    let ep = front(EndpointKind::Serve, one("svc", &a).services).await;
    let f = ep.local_addr();
    let cl = client();
    let slow = {
        let cl = cl.clone();
        tokio::spawn(async move { get(&cl, f, "/slow", None).await })
    };
    a.wait_started().await;
    ep.set_routes(one("svc", &b));
    // New requests (also on the same pooled client) go to B at once.
    let got = get(&cl, f, "/", None).await;
    assert_eq!(got.body, "B");
    assert!(!slow.is_finished());
    a.release();
    let got = within("slow request", slow).await.expect("join");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "A slow");
    assert_eq!(ep.stats().services["svc"].requests, 2);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_concurrent_load_lose_nothing() {
    const CLIENTS: u64 = 20;
    const PER_CLIENT: u64 = 60;
    const SWAPS: u64 = 10;
    let a = Arc::new(TestUpstream::start("A").await);
    let b = Arc::new(TestUpstream::start("B").await);
    let ep = Arc::new(front(EndpointKind::Serve, one("svc", &a).services).await);
    let f = ep.local_addr();
    let (progress_tx, mut progress_rx) = watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let failures = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let cl = client();
        let progress = progress_tx.clone();
        let failures = failures.clone();
        clients.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                let ok = if (c + i) % 2 == 0 {
                    let got = get(&cl, f, "/", None).await;
                    got.status == StatusCode::OK && (got.body == "A" || got.body == "B")
                } else {
                    let payload = format!("client {c} request {i} ").repeat(50);
                    let req = Request::post(format!("http://{f}/echo"))
                        .body(full(payload.clone()))
                        .expect("request");
                    let got = send(&cl, req).await;
                    got.status == StatusCode::OK && got.body == payload
                };
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                progress.send_modify(|n| *n += 1);
            }
        }));
    }
    let total = CLIENTS * PER_CLIENT;
    for s in 1..=SWAPS {
        let target = s * total / (SWAPS + 1);
        within("load progress", progress_rx.wait_for(|n| *n >= target))
            .await
            .expect("progress");
        let to = if s % 2 == 1 { &b } else { &a };
        ep.set_routes(one("svc", to));
    }
    for c in clients {
        within("client", c).await.expect("client task");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(*progress_rx.borrow(), total);
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "A {} B {}",
        a.hits(),
        b.hits()
    );
    assert_eq!(a.hits() + b.hits(), total);
    assert_eq!(
        ep.stats().services["svc"],
        ServiceStats {
            requests: total,
            errors: 0
        }
    );
    match Arc::try_unwrap(ep) {
        Ok(ep) => ep.shutdown().await,
        Err(_) => panic!("endpoint still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_on_taken_port_is_addr_in_use() {
    let ep = FrontEndpoint::bind(any_port(), EndpointKind::Serve)
        .await
        .expect("bind");
    let taken = ep.local_addr();
    let err = FrontEndpoint::bind(taken, EndpointKind::Dashboard)
        .await
        .expect_err("second bind must fail");
    assert!(
        matches!(err, ProxyError::AddrInUse { addr } if addr == taken),
        "{err:?}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    // Also when the port is held by an unrelated socket.
    let std_listener = std::net::TcpListener::bind(any_port()).expect("std bind");
    let other = std_listener.local_addr().expect("addr");
    let err = FrontEndpoint::bind(other, EndpointKind::Serve)
        .await
        .expect_err("bind must fail");
    assert!(matches!(err, ProxyError::AddrInUse { .. }), "{err:?}");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Serve, one("svc", &a).services).await;
    let f = ep.local_addr();
    let cl = client();
    let slow = {
        let cl = cl.clone();
        tokio::spawn(async move { get(&cl, f, "/slow", None).await })
    };
    a.wait_started().await;
    let shutdown = tokio::spawn(ep.shutdown());
    // The listener closes promptly: wait until new connections are refused.
    within("listener to close", async {
        while TcpStream::connect(f).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!shutdown.is_finished());
    a.release();
    let got = within("slow request", slow).await.expect("join");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "A slow");
    within("shutdown", shutdown).await.expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded() {
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Serve, one("svc", &a).services).await;
    let f = ep.local_addr();
    let slow = tokio::spawn(async move {
        let req = Request::get(format!("http://{f}/slow"))
            .body(empty())
            .expect("request");
        client().request(req).await
    });
    a.wait_started().await;
    within(
        "bounded shutdown",
        ep.shutdown_with_timeout(std::time::Duration::from_millis(50)),
    )
    .await;
    // The aborted request fails instead of hanging.
    let res = within("aborted request", slow).await.expect("join");
    assert!(res.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_tunnelled() {
    let a = TestUpstream::start("A").await;
    let ep = front(EndpointKind::Dashboard, one("svc", &a).services).await;
    let mut s = TcpStream::connect(ep.local_addr()).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: svc-head-svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    within("101 response", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.expect("read head");
            head.push(byte[0]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"hello"[..], b"over the tunnel"] {
        s.write_all(msg).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        within("echo", s.read_exact(&mut buf)).await.expect("read");
        assert_eq!(buf, msg);
    }
    drop(s);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_by_weight_and_a_cluster_counts_its_requests_in_flight_after_it_left() {
    let old = TestUpstream::start("OLD").await;
    let new = TestUpstream::start("NEW").await;
    let split = |old_weight: u32, new_weight: u32| {
        RouteTable::new(vec![ServiceRoute::new("svc", None, ["/"]).with_backends(
            vec![
                Backend::new("svc-raycluster-old", old.addr, old_weight),
                Backend::new("svc-raycluster-new", new.addr, new_weight),
            ],
        )])
    };
    let ep = front(EndpointKind::Serve, vec![]).await;
    ep.set_routes(split(75, 25));
    let f = ep.local_addr();
    let cl = client();
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers.push(get(&cl, f, "/", None).await.body);
    }
    assert_eq!(answers.iter().filter(|a| *a == "NEW").count(), 25);
    assert_eq!(answers.iter().filter(|a| *a == "OLD").count(), 75);
    // Each answered request is in the cluster's latency histogram.
    let new_stats = ep.stats().clusters["svc-raycluster-new"];
    assert_eq!(new_stats.latency.iter().sum::<u64>(), 25);

    // A streaming request on the old cluster stays in flight after all traffic moved.
    ep.set_routes(split(100, 0));
    let url = format!("http://{f}/stream");
    let request = Request::get(url.as_str()).body(empty()).expect("request");
    let response = within("stream head", cl.request(request))
        .await
        .expect("stream answers");
    old.wait_started().await;
    ep.set_routes(RouteTable::new(vec![
        ServiceRoute::new("svc", None, ["/"]).with_backends(vec![Backend::new(
            "svc-raycluster-new",
            new.addr,
            100,
        )]),
    ]));
    let stats = ep.stats();
    assert_eq!(stats.clusters["svc-raycluster-old"].in_flight, 1);
    assert_eq!(stats.clusters["svc-raycluster-old"].requests, 76);
    assert_eq!(stats.clusters["svc-raycluster-new"].in_flight, 0);
    assert_eq!(get(&cl, f, "/", None).await.body, "NEW");
    old.release();
    let body = within("stream body", response.into_body().collect())
        .await
        .expect("stream body")
        .to_bytes();
    assert_eq!(&body[..], b"firstrest");
    let idle = within("in-flight count to drop", async {
        loop {
            let stats = ep.stats();
            match stats.clusters.get("svc-raycluster-old") {
                Some(c) if c.in_flight > 0 => tokio::task::yield_now().await,
                other => return other.copied(),
            }
        }
    })
    .await;
    assert_eq!(idle.map(|c| c.in_flight), Some(0));
    assert_eq!(idle.map(|c| c.failures), Some(0));
    // Once idle and out of the table, the cluster is forgotten at the next swap.
    ep.set_routes(ep.routes());
    assert!(!ep.stats().clusters.contains_key("svc-raycluster-old"));
}
