//! Throughput/latency of requests sent straight to an upstream versus through
//! a `FrontEndpoint` in front of it, measured in the same run.
//!
//! ```text
//! cargo run --release --example proxy_bench -p rayservice-proxy -- \
//!     [--upstream http://127.0.0.1:PORT/path] [--requests N] [--concurrency C] [--rounds R]
//! ```
//!
//! Without `--upstream` a tiny built-in hyper upstream answering `hello` is started.

use std::convert::Infallible;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rayservice_proxy::{EndpointKind, FrontEndpoint, RouteTable, ServiceRoute};
use tokio::net::TcpListener;

type BoxError = Box<dyn Error + Send + Sync>;
type BenchClient = Client<HttpConnector, Empty<Bytes>>;

struct Args {
    upstream: Option<String>,
    front: Option<String>,
    requests: usize,
    concurrency: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        upstream: None,
        front: None,
        requests: 20_000,
        concurrency: 16,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => args.upstream = Some(value()?),
            "--front" => args.front = Some(value()?),
            "--requests" => args.requests = value()?.parse()?,
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "usage: proxy_bench [--upstream http://HOST:PORT/path] [--front http://HOST:PORT/path (an already running front endpoint)] [--requests N] [--concurrency C] [--rounds R]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.requests == 0 || args.concurrency == 0 || args.rounds == 0 {
        return Err("--requests, --concurrency and --rounds must be > 0".into());
    }
    Ok(args)
}

/// Starts the built-in upstream: HTTP/1.1 keep-alive, answers `hello` to everything.
async fn builtin_upstream() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

struct RunResult {
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
}

impl RunResult {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

async fn run(client: &BenchClient, uri: &Uri, n: usize, c: usize) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for _ in 0..c {
        let client = client.clone();
        let uri = uri.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / c + 1);
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t0 = Instant::now();
                let ok = match Request::get(uri.clone()).body(Empty::new()) {
                    Ok(req) => match client.request(req).await {
                        Ok(resp) => {
                            let status_ok = resp.status().is_success();
                            resp.into_body().collect().await.is_ok() && status_ok
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if ok {
                    lat.push(t0.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((lat, e)) => {
                latencies.extend(lat);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    RunResult {
        elapsed,
        latencies,
        errors,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn line(label: &str, r: &RunResult) {
    println!(
        "  {label:<8} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {}",
        r.rps(),
        ms(r.pct(0.50)),
        ms(r.pct(0.99)),
        r.errors
    );
}

fn compare(direct: &RunResult, proxied: &RunResult) {
    println!(
        "  ratio    throughput proxied/direct {:.2}   added latency p50 {:+.3} ms, p99 {:+.3} ms",
        proxied.rps() / direct.rps(),
        ms(proxied.pct(0.50)) - ms(direct.pct(0.50)),
        ms(proxied.pct(0.99)) - ms(direct.pct(0.99)),
    );
}

async fn bench(args: Args) -> Result<(), BoxError> {
    let (upstream_addr, path, label) = match &args.upstream {
        Some(url) => {
            let uri: Uri = url.parse()?;
            let authority = uri
                .authority()
                .ok_or("--upstream must be an absolute http:// URL")?;
            let port = authority.port_u16().unwrap_or(80);
            let addr = tokio::net::lookup_host((authority.host(), port))
                .await?
                .next()
                .ok_or("--upstream host does not resolve")?;
            let path = uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned());
            (addr, path, url.clone())
        }
        None => {
            let addr = builtin_upstream().await?;
            (
                addr,
                "/".to_owned(),
                format!("built-in hyper upstream {addr}"),
            )
        }
    };
    let front = FrontEndpoint::bind(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        EndpointKind::Serve,
    )
    .await?;
    front.set_routes(RouteTable::new(vec![ServiceRoute::new(
        "bench",
        Some(upstream_addr),
        ["/"],
    )]));
    let direct_uri: Uri = format!("http://{upstream_addr}{path}").parse()?;
    let proxied_uri: Uri = match &args.front {
        Some(url) => url.parse()?,
        None => format!("http://{}{path}", front.local_addr()).parse()?,
    };

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: BenchClient = Client::builder(TokioExecutor::new()).build(connector);

    println!("upstream: {label}");
    println!(
        "front:    {} ({} requests, concurrency {}, {} rounds, {} cores)",
        proxied_uri,
        args.requests,
        args.concurrency,
        args.rounds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Warm up connection pools on both paths.
    let warm = (args.concurrency * 50).min(args.requests);
    run(&client, &direct_uri, warm, args.concurrency).await;
    run(&client, &proxied_uri, warm, args.concurrency).await;

    let seq_n = args.requests.min(5_000);
    println!("sequential (concurrency 1, {seq_n} requests): pure per-request overhead");
    let d = run(&client, &direct_uri, seq_n, 1).await;
    let p = run(&client, &proxied_uri, seq_n, 1).await;
    line("direct", &d);
    line("proxied", &p);
    compare(&d, &p);

    for round in 1..=args.rounds {
        println!("round {round} (concurrency {}):", args.concurrency);
        let d = run(&client, &direct_uri, args.requests, args.concurrency).await;
        let p = run(&client, &proxied_uri, args.requests, args.concurrency).await;
        line("direct", &d);
        line("proxied", &p);
        compare(&d, &p);
    }
    let stats = front.stats();
    println!("front stats: {:?}", stats.services);
    front.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match parse_args() {
        Ok(args) => bench(args).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("proxy_bench: {e}");
        std::process::exit(2);
    }
}
