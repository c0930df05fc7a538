//! Test helpers: scriptable upstreams and a pooled HTTP client.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

/// Deadline for any single awaited condition in the tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, panicking if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    within_for(DEADLINE, what, fut).await
}

/// Awaits `fut`, panicking if it takes longer than `deadline`.
pub async fn within_for<T>(deadline: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A test upstream ("Ray cluster") that identifies itself by `name`.
///
/// Paths:
/// - `/slow`: reports on `started`, waits for [`TestUpstream::release`], answers `NAME slow`;
/// - `/stream`: sends `first`, waits for release, sends `rest`;
/// - `/echo`: streams the request body back;
/// - `/collect`: reads the whole request body, then answers its length;
/// - `/ws`: accepts an `Upgrade` and echoes bytes on the upgraded connection;
/// - anything else: answers `NAME` with `x-seen-*` headers describing the request.
pub struct TestUpstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    started: Mutex<mpsc::UnboundedReceiver<()>>,
    gate: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct UpState {
    name: &'static str,
    hits: Arc<AtomicU64>,
    started: mpsc::UnboundedSender<()>,
    gate: watch::Receiver<bool>,
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicU64::new(0));
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let (gate_tx, gate_rx) = watch::channel(false);
        let state = Arc::new(UpState {
            name,
            hits: hits.clone(),
            started: started_tx,
            gate: gate_rx,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            name,
            addr,
            hits,
            started: Mutex::new(started_rx),
            gate: gate_tx,
            task,
        }
    }

    /// Waits until one `/slow` or `/stream` request has reached this upstream.
    pub async fn wait_started(&self) {
        let mut rx = self.started.lock().await;
        within("upstream request to start", rx.recv())
            .await
            .expect("upstream alive");
    }

    /// Lets every waiting `/slow` and `/stream` request finish.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: Arc<UpState>, mut req: Request<Incoming>) -> Response<TestBody> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let name = state.name;
    match req.uri().path() {
        "/slow" => {
            let _ = state.started.send(());
            let mut gate = state.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
            Response::new(full(format!("{name} slow")))
        }
        "/stream" => {
            let _ = state.started.send(());
            let (mut tx, body) = Channel::<Bytes>::new(4);
            let mut gate = state.gate.clone();
            tokio::spawn(async move {
                if tx.send_data(Bytes::from_static(b"first")).await.is_err() {
                    return;
                }
                let _ = gate.wait_for(|open| *open).await;
                let _ = tx.send_data(Bytes::from_static(b"rest")).await;
            });
            Response::new(body.map_err(|e| match e {}).boxed())
        }
        "/echo" => {
            let body = req.into_body().map_err(Into::into).boxed();
            Response::new(body)
        }
        "/collect" => match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
            Err(e) => {
                let mut resp = Response::new(full(format!("upstream saw a broken body: {e}")));
                *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                resp
            }
        },
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("echo"));
            resp
        }
        _ => {
            let mut resp = Response::new(full(name));
            let h = resp.headers_mut();
            let seen = |n: &str| {
                req.headers()
                    .get(n)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("-"))
            };
            h.insert("x-upstream", HeaderValue::from_static(name));
            h.insert("x-seen-host", seen("host"));
            h.insert("x-seen-xff", seen("x-forwarded-for"));
            h.insert("x-seen-proto", seen("x-forwarded-proto"));
            h.insert("x-seen-hop", seen("x-hop"));
            h.insert("x-seen-keep-alive", seen("keep-alive"));
            h.insert("x-seen-custom", seen("x-custom"));
            h.insert("x-seen-authorization", seen("authorization"));
            h.insert(
                "x-seen-method",
                HeaderValue::from_str(req.method().as_str()).expect("method"),
            );
            h.insert(
                "x-seen-uri",
                HeaderValue::from_str(&req.uri().to_string()).expect("uri"),
            );
            // Hop-by-hop header that the proxy must not pass back to its client.
            h.insert("x-upstream-hop", HeaderValue::from_static("1"));
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("x-upstream-hop"),
            );
            resp
        }
    }
}

/// An upstream that accepts TCP connections and closes them at once.
pub async fn resetting_upstream() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    (addr, task)
}

/// An address on which nothing listens (connection refused).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

pub type TestClient = Client<HttpConnector, TestBody>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A finished response.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<missing>")
    }
}

/// Sends a request and collects the whole response, with a deadline.
pub async fn send(client: &TestClient, req: Request<TestBody>) -> Got {
    within("response", async {
        let resp = client.request(req).await.expect("request to proxy");
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("response body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    })
    .await
}

/// GET `http://front{path}` with an optional Host header.
pub async fn get(client: &TestClient, front: SocketAddr, path: &str, host: Option<&str>) -> Got {
    let mut b = Request::get(format!("http://{front}{path}"));
    if let Some(h) = host {
        b = b.header(header::HOST, h);
    }
    send(client, b.body(empty()).expect("request")).await
}

/// Reads frames until `n` more data bytes have arrived; returns them.
pub async fn read_at_least(body: &mut Incoming, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let frame = within("response data", body.frame())
            .await
            .expect("body ended early")
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

pub fn data_frame(b: Bytes) -> Frame<Bytes> {
    Frame::data(b)
}

/// One HTTP/1.1 response read off a raw socket.
pub struct RawResponse {
    /// Status line and headers, lower-cased.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Reads one response with a `content-length` body from `s`.
pub async fn read_raw_response(s: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;
    within("raw response", async {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.expect("read response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.expect("read response body");
        RawResponse {
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
}

/// Waits until the peer closes `s` (EOF or reset), discarding what it sends.
pub async fn wait_closed(s: &mut tokio::net::TcpStream) {
    wait_closed_within(DEADLINE, s).await
}

/// [`wait_closed`] with another deadline.
pub async fn wait_closed_within(deadline: Duration, s: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    within_for(deadline, "connection to be closed", async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
