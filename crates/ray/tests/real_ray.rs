//! Runs a real two-node Ray cluster (head + worker) from the node commands this crate builds,
//! deploys the example apps through the dashboard client, and checks their answers.
//!
//! Skipped (with a message) unless `RAYSERVICE_PYTHON` names a Python with `ray[serve]`.
//! Every process it starts carries a marker environment variable; on the way out (also on
//! panic) the nodes get SIGTERM, and anything still carrying the marker gets SIGKILL.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rayservice_ray::auth::AuthToken;
use rayservice_ray::dashboard::{ApplicationStatus, DashboardClient, DashboardError};
use rayservice_ray::install::{PYTHON_ENV, RAY_VERSION, verify_python};
use rayservice_ray::node::{NodeKind, NodeLaunch, PortAllocator};
use rayservice_ray::package::{PackageLayout, PackageOptions, build_package, package_dir};
use serde_json::{Value, json};

const MARKER: &str = "RAYSERVICE_RAY_IT";

/// Stops the nodes and every process carrying the marker.
struct Cluster {
    marker: String,
    nodes: Vec<std::process::Child>,
    dir: PathBuf,
}

/// Processes whose environment carries the marker with this value.
fn marked_pids(marker: &str) -> Vec<i32> {
    let needle = format!("{MARKER}={marker}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

impl Cluster {
    fn marked_pids(&self) -> Vec<i32> {
        marked_pids(&self.marker)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = killpg(Pid::from_raw(node.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.marked_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = self.marked_pids();
        if !left.is_empty() {
            eprintln!("SIGKILL to {} leftover Ray processes", left.len());
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spawn(launch: &NodeLaunch, log: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let node = launch.command().expect("node command");
    eprintln!("starting: {}", node.display());
    let out = fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    node.to_command()
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn ray start")
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => {
                eprintln!("{what}: after {:.1}s", start.elapsed().as_secs_f64());
                return value;
            }
            Err(why) => assert!(
                start.elapsed() < timeout,
                "{what}: not after {timeout:?}; last: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn serve_config(serve_port: u16, fruit_dir: &str, math_dir: &str, mango_price: u32) -> Value {
    let small = json!({"num_cpus": 0.1});
    json!({
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": serve_port},
        "applications": [
            {
                "name": "fruit_app", "import_path": "fruit.deployment_graph", "route_prefix": "/fruit",
                "runtime_env": {"working_dir": fruit_dir},
                "deployments": [
                    {"name": "MangoStand", "num_replicas": 2, "max_replicas_per_node": 1, "user_config": {"price": mango_price}, "ray_actor_options": small},
                    {"name": "OrangeStand", "num_replicas": 1, "user_config": {"price": 2}, "ray_actor_options": small},
                    {"name": "PearStand", "num_replicas": 1, "user_config": {"price": 1}, "ray_actor_options": small},
                    {"name": "FruitMarket", "num_replicas": 1, "ray_actor_options": small},
                    {"name": "DAGDriver", "num_replicas": 1}
                ]
            },
            {
                "name": "math_app", "import_path": "conditional_dag.serve_dag", "route_prefix": "/calc",
                "runtime_env": {"working_dir": math_dir},
                "deployments": [
                    {"name": "Adder", "user_config": {"increment": 3}, "ray_actor_options": small},
                    {"name": "Multiplier", "user_config": {"factor": 5}, "ray_actor_options": small},
                    {"name": "Router"}
                ]
            }
        ]
    })
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    let response = http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn two_node_cluster_serves_the_examples() {
    let Some(python) = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty()) else {
        eprintln!("skipping the real Ray test: {PYTHON_ENV} is not set");
        return;
    };
    let runtime =
        verify_python(Path::new(&python), RAY_VERSION).expect("RAYSERVICE_PYTHON has ray[serve]");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/test_dag");

    let marker = format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let dir = PathBuf::from(format!("/tmp/rt-it-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let mut cluster = Cluster {
        marker: marker.clone(),
        nodes: Vec::new(),
        dir: dir.clone(),
    };

    let mut ports = PortAllocator::new();
    let head_ports = ports.head_ports().expect("head ports");
    let serve_port = ports.port().expect("serve port");
    let token_file = dir.join("secret").join(rayservice_ray::auth::TOKEN_FILE);
    let token = AuthToken::read_or_create(&token_file).expect("token");
    let mut launch = |kind, temp: &str, cpus| NodeLaunch {
        kind,
        ray_executable: runtime.ray.clone(),
        python: runtime.python.clone(),
        auth_token_file: Some(token_file.clone()),
        temp_dir: dir.join(temp),
        ports: ports.node_ports(50).expect("node ports"),
        ray_start_params: BTreeMap::new(),
        resources: rayservice_api::resources::RayResources {
            num_cpus: Some(cpus),
            memory_bytes: Some(2 << 30),
            ..Default::default()
        },
        labels: BTreeMap::new(),
        extra_env: vec![(MARKER.to_string(), marker.clone())],
    };
    let head = launch(NodeKind::Head(head_ports.clone()), "h", 2);
    let gcs = format!("127.0.0.1:{}", head_ports.gcs);
    let worker = launch(
        NodeKind::Worker {
            head_gcs_address: gcs,
        },
        "w",
        1,
    );

    let started = Instant::now();
    cluster.nodes.push(spawn(&head, &dir.join("head.log")));
    let dashboard = DashboardClient::new(head_ports.dashboard)
        .expect("client")
        .with_token(Some(token.clone()));
    wait_for(
        "dashboard answers gcs_healthz",
        Duration::from_secs(60),
        || async {
            if dashboard.gcs_healthz().await {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    eprintln!(
        "head start to dashboard: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cluster.nodes.push(spawn(&worker, &dir.join("worker.log")));

    let before = dashboard
        .get_serve_applications()
        .await
        .expect("GET before Serve runs");
    assert!(!before.serve_started() && before.applications.is_empty());
    // Token authentication is on: without the token the dashboard refuses.
    let anonymous = DashboardClient::new(head_ports.dashboard)
        .expect("client")
        .get_serve_applications()
        .await;
    assert!(
        matches!(anonymous, Err(DashboardError::Status { status: 401, .. })),
        "{anonymous:?}"
    );

    let uri = package_dir(&examples, &dir.join("packages"), &PackageOptions::default())
        .expect("package examples");
    assert!(uri.starts_with("file:///tmp/rt-it-"));
    let submitted = Instant::now();
    dashboard
        .put_serve_applications(&serve_config(serve_port, &uri, &uri, 3))
        .await
        .expect("PUT accepted");
    let details = wait_for("both apps RUNNING", Duration::from_secs(240), || async {
        let details = dashboard
            .get_serve_applications()
            .await
            .map_err(|e| e.to_string())?;
        for app in details.applications.values() {
            assert_ne!(
                app.status,
                ApplicationStatus::DeployFailed,
                "{}",
                app.message
            );
        }
        let running = details.applications.len() == 2
            && details
                .applications
                .values()
                .all(|a| a.status == ApplicationStatus::Running);
        if running {
            Ok(details)
        } else {
            Err(format!(
                "{:?}",
                details
                    .applications
                    .values()
                    .map(|a| a.status.to_string())
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
    eprintln!("PUT to RUNNING: {:.1}s", submitted.elapsed().as_secs_f64());
    assert!(details.serve_started());
    assert_eq!(details.proxy_location.as_deref(), Some("HeadOnly"));
    assert_eq!(details.applications["fruit_app"].deployments.len(), 5);
    assert_eq!(details.applications["math_app"].deployments.len(), 5);
    assert_eq!(
        details.applications["fruit_app"].deployments["MangoStand"]
            .replicas
            .len(),
        2
    );

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let fruit = format!("http://127.0.0.1:{serve_port}/fruit");
    let calc = format!("http://127.0.0.1:{serve_port}/calc");
    assert!(dashboard.serve_healthz(serve_port).await);
    let routes = dashboard.serve_routes(serve_port).await.expect("routes");
    assert_eq!(routes.get("/fruit").map(String::as_str), Some("fruit_app"));
    assert_eq!(post(&http, &fruit, json!(["MANGO", 2])).await, Ok(json!(6)));
    assert_eq!(
        post(&http, &fruit, json!(["PEAR", 12])).await,
        Ok(json!(12))
    );
    assert_eq!(post(&http, &fruit, json!(["KIWI", 1])).await, Ok(json!(-1)));
    assert_eq!(
        post(&http, &calc, json!(["MUL", 3])).await,
        Ok(json!("15 pizzas please!"))
    );
    assert_eq!(
        post(&http, &calc, json!(["ADD", 3])).await,
        Ok(json!("6 pizzas please!"))
    );

    // Ray refuses a config with two apps on one route.
    let mut duplicate = serve_config(serve_port, &uri, &uri, 3);
    duplicate["applications"][1]["route_prefix"] = json!("/fruit");
    match dashboard.put_serve_applications(&duplicate).await {
        Err(DashboardError::Rejected {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("duplicate"), "{message}"),
        other => panic!("expected a rejection, got {other:?}"),
    }

    // A new price through user_config, and the math app moved to an uploaded (gcs://) package.
    let flat = build_package(&examples, PackageLayout::Flat, &PackageOptions::default())
        .expect("flat package");
    let gcs_uri = flat.gcs_uri();
    if !dashboard
        .package_exists(&gcs_uri)
        .await
        .expect("package lookup")
    {
        dashboard
            .upload_package(&gcs_uri, flat.zip.clone())
            .await
            .expect("upload");
    }
    assert!(
        dashboard
            .package_exists(&gcs_uri)
            .await
            .expect("package lookup")
    );
    let old_math_replicas: Vec<String> = dashboard
        .get_serve_applications()
        .await
        .expect("GET")
        .applications["math_app"]
        .deployments
        .values()
        .flat_map(|d| d.replicas.iter().map(|r| r.replica_id.clone()))
        .collect();
    let changed = Instant::now();
    dashboard
        .put_serve_applications(&serve_config(serve_port, &uri, &gcs_uri, 4))
        .await
        .expect("PUT accepted");
    wait_for(
        "new mango price answered",
        Duration::from_secs(60),
        || async {
            match post(&http, &fruit, json!(["MANGO", 2])).await {
                Ok(v) if v == json!(8) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "user_config change visible: {:.1}s",
        changed.elapsed().as_secs_f64()
    );
    wait_for(
        "math app RUNNING from gcs://",
        Duration::from_secs(180),
        || async {
            let details = dashboard
                .get_serve_applications()
                .await
                .map_err(|e| e.to_string())?;
            let math = &details.applications["math_app"];
            assert_ne!(
                math.status,
                ApplicationStatus::DeployFailed,
                "{}",
                math.message
            );
            // A new working_dir means new replicas.
            let replaced = math
                .deployments
                .values()
                .flat_map(|d| &d.replicas)
                .all(|r| r.state == "RUNNING" && !old_math_replicas.contains(&r.replica_id));
            if math.status == ApplicationStatus::Running && replaced {
                Ok(())
            } else {
                Err(math.status.to_string())
            }
        },
    )
    .await;
    assert_eq!(
        post(&http, &calc, json!(["MUL", 3])).await,
        Ok(json!("15 pizzas please!"))
    );

    let marked = cluster.marked_pids().len();
    eprintln!("{marked} processes carry the marker before shutdown");
    assert!(
        marked > 10,
        "Ray's worker processes should inherit the node's environment"
    );
    let stopping = Instant::now();
    drop(cluster);
    eprintln!(
        "cluster stopped in {:.1}s",
        stopping.elapsed().as_secs_f64()
    );
    assert!(marked_pids(&marker).is_empty());
    assert!(!dir.exists());
}
