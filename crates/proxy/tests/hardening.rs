//! The front endpoint under hostile or unlucky clients and upstreams: silent
//! and idle connections, too many connections, hung upstreams, foreign Host
//! names (DNS rebinding) and broken request bodies.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use rayservice_proxy::{EndpointConfig, EndpointKind, FrontEndpoint, RouteTable, ServiceRoute};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Short limits, so that the tests see them act.
const SHORT: Duration = Duration::from_millis(200);

/// Long enough for a 200 ms timeout on a loaded machine, and shorter than the
/// 30 s that hyper applies by itself to HTTP/1 request heads.
const CLOSE_DEADLINE: Duration = Duration::from_secs(15);

async fn front_with(
    config: EndpointConfig,
    kind: EndpointKind,
    up: &TestUpstream,
) -> FrontEndpoint {
    let ep = FrontEndpoint::bind_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), kind, config)
        .await
        .expect("bind front endpoint");
    ep.set_routes(RouteTable::new(vec![ServiceRoute::new(
        "fruit",
        Some(up.addr),
        ["/"],
    )]));
    ep
}

fn short_timeouts() -> EndpointConfig {
    let mut c = EndpointConfig::default();
    c.request_head_timeout = SHORT;
    c.idle_timeout = SHORT;
    c
}

async fn connect(ep: &FrontEndpoint) -> TcpStream {
    within("connect", TcpStream::connect(ep.local_addr()))
        .await
        .expect("connect to front endpoint")
}

async fn raw_get(s: &mut TcpStream, path: &str, host: &str) -> RawResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    read_raw_response(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(short_timeouts(), EndpointKind::Serve, &a).await;
    // Never sends a byte.
    let mut silent = connect(&ep).await;
    wait_closed_within(CLOSE_DEADLINE, &mut silent).await;
    // Sends part of a request head and stops (slowloris).
    let mut partial = connect(&ep).await;
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: loc")
        .await
        .expect("write");
    wait_closed_within(CLOSE_DEADLINE, &mut partial).await;
    // The endpoint still serves.
    let got = get(&client(), ep.local_addr(), "/", None).await;
    assert_eq!(got.status, StatusCode::OK);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_by_default() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(EndpointConfig::default(), EndpointKind::Dashboard, &a).await;
    assert_eq!(ep.config().request_head_timeout, Duration::from_secs(10));
    let mut silent = connect(&ep).await;
    wait_closed(&mut silent).await;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connection_is_closed() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(short_timeouts(), EndpointKind::Serve, &a).await;
    let mut s = connect(&ep).await;
    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame,
    // then no stream at all.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write");
    wait_closed_within(CLOSE_DEADLINE, &mut s).await;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let a = TestUpstream::start("A").await;
    let mut config = EndpointConfig::default();
    config.idle_timeout = SHORT;
    let ep = front_with(config, EndpointKind::Serve, &a).await;
    let mut s = connect(&ep).await;
    let host = ep.local_addr().to_string();
    for _ in 0..2 {
        let got = raw_get(&mut s, "/", &host).await;
        assert_eq!(got.status(), 200, "{}", got.head);
        assert_eq!(got.body, "A");
    }
    wait_closed_within(CLOSE_DEADLINE, &mut s).await;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_outlive_the_idle_timeout() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(short_timeouts(), EndpointKind::Serve, &a).await;
    let f = ep.local_addr();
    // One request waits for its response head, one for the rest of its body.
    let slow = tokio::spawn(async move { get(&client(), f, "/slow", None).await });
    a.wait_started().await;
    let req = Request::get(format!("http://{f}/stream"))
        .body(empty())
        .expect("request");
    let streaming = within("response head", client().request(req))
        .await
        .expect("response");
    a.wait_started().await;
    let mut body = streaming.into_body();
    assert_eq!(read_at_least(&mut body, 5).await, b"first");
    // A connection opened after both requests started is closed by the idle
    // timer: both have now been silent for longer than the idle timeout.
    let mut idle = connect(&ep).await;
    wait_closed_within(CLOSE_DEADLINE, &mut idle).await;
    a.release();
    let got = within("slow response", slow).await.expect("join");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "A slow");
    let rest = within("rest of the stream", body.collect())
        .await
        .expect("stream not cut")
        .to_bytes();
    assert_eq!(&rest[..], b"rest");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_over_the_cap_gets_503() {
    let a = TestUpstream::start("A").await;
    let mut config = EndpointConfig::default();
    config.max_connections = 2;
    let ep = front_with(config, EndpointKind::Serve, &a).await;
    let host = ep.local_addr().to_string();
    // Two keep-alive connections, each proven accepted by an answer.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&ep).await;
        assert_eq!(raw_get(&mut s, "/", &host).await.status(), 200);
        held.push(s);
    }
    let mut third = connect(&ep).await;
    let got = raw_get(&mut third, "/", &host).await;
    assert_eq!(got.status(), 503, "{}", got.head);
    assert!(got.body.contains("too many connections"), "{}", got.body);
    assert!(got.body.contains("at most 2"), "{}", got.body);
    assert!(got.head.contains("retry-after: 1"), "{}", got.head);
    wait_closed(&mut third).await;
    // The held connections still work, and a freed slot is used again.
    assert_eq!(raw_get(&mut held[0], "/", &host).await.status(), 200);
    drop(held.pop());
    within("a freed connection slot", async {
        loop {
            let mut s = connect(&ep).await;
            if raw_get(&mut s, "/", &host).await.status() == 200 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_gives_504() {
    let a = TestUpstream::start("A").await;
    let mut config = EndpointConfig::default();
    config.upstream_timeout = SHORT;
    let ep = front_with(config, EndpointKind::Serve, &a).await;
    let got = get(&client(), ep.local_addr(), "/slow", None).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.body);
    assert!(got.body.contains("service fruit"), "{}", got.body);
    assert!(got.body.contains("within 200 ms"), "{}", got.body);
    assert_eq!(ep.stats().services["fruit"].errors, 1);
    a.release();
    // A prompt upstream is unaffected.
    let got = get(&client(), ep.local_addr(), "/", None).await;
    assert_eq!(got.status, StatusCode::OK);
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_upstream_timeout_is_generous() {
    let config = EndpointConfig::default();
    assert_eq!(config.upstream_timeout, Duration::from_secs(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_gets_421() {
    let a = TestUpstream::start("A").await;
    for kind in [EndpointKind::Serve, EndpointKind::Dashboard] {
        let ep = front_with(EndpointConfig::default(), kind, &a).await;
        let port = ep.local_addr().port();
        let cl = client();
        for host in [
            "evil.example".to_owned(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
            format!("fruit-serve-svc.evil.example:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
        ] {
            let got = get(&cl, ep.local_addr(), "/", Some(&host)).await;
            assert_eq!(
                got.status,
                StatusCode::MISDIRECTED_REQUEST,
                "{kind:?} {host}"
            );
            assert!(got.body.contains("DNS rebinding"), "{}", got.body);
            assert!(got.body.contains(&host), "{}", got.body);
        }
        let svc = kind.service_host("fruit");
        for host in [
            format!("localhost:{port}"),
            format!("app.localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            svc.clone(),
            format!("{svc}.default.svc.cluster.local:{port}"),
        ] {
            let got = get(&cl, ep.local_addr(), "/", Some(&host)).await;
            assert_eq!(got.status, StatusCode::OK, "{kind:?} {host}: {}", got.body);
            assert_eq!(got.body, "A");
        }
        // An unknown service name is accepted and answered 404, not 421.
        let got = get(&cl, ep.local_addr(), "/", Some(&kind.service_host("x"))).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
        // A Host header that is not text.
        let mut s = connect(&ep).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: \xffevil\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_raw_response(&mut s).await.status(), 421);
        assert_eq!(ep.stats().services["fruit"].requests, 6);
        ep.shutdown().await;
    }
    assert_eq!(a.hits(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_body_gives_400() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(EndpointConfig::default(), EndpointKind::Serve, &a).await;
    let mut s = connect(&ep).await;
    s.write_all(
        b"POST /collect HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await
    .expect("write");
    let got = read_raw_response(&mut s).await;
    assert_eq!(got.status(), 400, "{}\n{}", got.head, got.body);
    assert!(got.body.contains("request body"), "{}", got.body);
    assert_eq!(ep.stats().services["fruit"].errors, 1);
    // A well-formed chunked body passes.
    let req = Request::post(format!("http://{}/collect", ep.local_addr()))
        .body(full("hello"))
        .expect("request");
    let got = send(&client(), req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body, "5");
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_request_body_gives_400() {
    let a = TestUpstream::start("A").await;
    let ep = front_with(EndpointConfig::default(), EndpointKind::Serve, &a).await;
    let mut s = connect(&ep).await;
    s.write_all(
        b"POST /collect HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    )
    .await
    .expect("write");
    // The client stops sending: the body ends early.
    s.shutdown().await.expect("half-close");
    let got = read_raw_response(&mut s).await;
    assert_eq!(got.status(), 400, "{}\n{}", got.head, got.body);
    ep.shutdown().await;
}
