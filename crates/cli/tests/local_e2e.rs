//! End to end, with real Ray: the user's guide run locally.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use common::{Env, alive, eventually, get, listening, post, repo};
use serde_json::Value;

const READY_TIMEOUT: &str = "8m";

fn fixture(name: &str) -> String {
    repo()
        .join("crates/cli/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn example() -> String {
    repo()
        .join("examples/rayservice-local.yaml")
        .display()
        .to_string()
}

fn cluster_endpoint_ports(env: &Env, service: &str) -> Vec<u16> {
    let clusters = env.json(&["get", "raycluster"]);
    clusters["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["metadata"]["labels"]["ray.io/originated-from-cr-name"] == service)
        .flat_map(|c| {
            c["status"]["endpoints"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_values()
        })
        .filter_map(|v| v.as_str().and_then(|p| p.parse().ok()))
        .collect()
}

fn pods_of(env: &Env, service: &str) -> Vec<Value> {
    let pods = env.json(&["get", "pods"]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["service"] == service)
        .cloned()
        .collect()
}

/// Parent of every process, from `/proc/PID/stat`.
fn parents() -> BTreeMap<i32, i32> {
    let mut parents = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            parents.insert(pid, ppid);
        }
    }
    parents
}

/// The node processes and all their descendants (raylet, GCS, agents, Serve workers, ...).
fn with_descendants(roots: &[i32]) -> BTreeSet<i32> {
    let parents = parents();
    let mut all: BTreeSet<i32> = roots.iter().copied().collect();
    loop {
        let before = all.len();
        for (pid, ppid) in &parents {
            if all.contains(ppid) {
                all.insert(*pid);
            }
        }
        if all.len() == before {
            return all;
        }
    }
}

/// One TCP socket in LISTEN state: who owns it and where it listens.
#[derive(Debug)]
struct Listener {
    pid: i32,
    comm: String,
    addr: IpAddr,
    port: u16,
}

/// The address in `/proc/net/tcp{,6}` form: 32-bit words in host byte order, as hex.
fn proc_net_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| {
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Every TCP listener owned by one of `pids`.
fn listeners_of(pids: &BTreeSet<i32>) -> Vec<Listener> {
    let mut listening: BTreeMap<u64, (IpAddr, u16)> = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            if let (Some(addr), Ok(port), Ok(inode)) = (
                proc_net_addr(addr),
                u16::from_str_radix(port, 16),
                fields[9].parse::<u64>(),
            ) {
                listening.insert(inode, (addr, port));
            }
        }
    }
    let mut found = Vec::new();
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some((addr, port)) = inode.and_then(|i| listening.get(&i)) {
                found.push(Listener {
                    pid: *pid,
                    comm: comm.clone(),
                    addr: *addr,
                    port: *port,
                });
            }
        }
    }
    found
}

fn is_loopback(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// gRPC status of a call without a token to each `127.0.0.1:<port>`, one line each.
fn grpc_without_token(calls: &[(u16, &str)]) -> Vec<String> {
    const PROBE: &str = r#"
import sys, grpc
for arg in sys.argv[1:]:
    port, method = arg.split(" ", 1)
    channel = grpc.insecure_channel("127.0.0.1:" + port)
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(b"", timeout=10)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name, " ".join((error.details() or "").split()))
"#;
    let args: Vec<String> = calls.iter().map(|(p, m)| format!("{p} {m}")).collect();
    let out = std::process::Command::new(common::ray_python())
        .arg("-c")
        .arg(PROBE)
        .args(&args)
        .env_remove("RAY_AUTH_TOKEN")
        .env_remove("RAY_AUTH_TOKEN_PATH")
        .output()
        .expect("run the gRPC probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Checks that a running service's Ray cluster is private to this user: every listener of its
/// processes is on loopback except Serve replicas' gRPC servers, which Ray binds to `[::]:0`
/// itself (notes/ray-facts.md) and which refuse calls without the token; the GCS refuses them
/// too; the dashboard's Jobs API answers 401 without the token; the token file is 0600 and on no
/// command line; and our own status still shows every application RUNNING.
fn ray_stays_private(env: &Env, service: &str) {
    use std::os::unix::fs::PermissionsExt;

    let cluster = env.json(&["get", "raycluster"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["metadata"]["labels"]["ray.io/originated-from-cr-name"] == service)
        .cloned()
        .expect("the service's cluster");
    let name = cluster["metadata"]["name"].as_str().expect("name");
    let endpoint = |what: &str| -> u16 {
        cluster["status"]["endpoints"][what]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {what} endpoint: {cluster}"))
    };
    let (dashboard, gcs) = (endpoint("dashboard"), endpoint("gcs-server"));

    let nodes: Vec<i32> = pods_of(env, service)
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    assert_eq!(nodes.len(), 2, "head and worker");
    let processes = with_descendants(&nodes);
    let listeners = listeners_of(&processes);
    eprintln!("listeners of {name}: {listeners:?}");
    assert!(
        listeners
            .iter()
            .any(|l| l.port == gcs && is_loopback(&l.addr)),
        "the GCS listens on loopback: {listeners:?}"
    );
    assert!(
        listeners.iter().filter(|l| l.comm == "raylet").count() >= 4,
        "both raylets seen: {listeners:?}"
    );
    let (loopback, exceptions): (Vec<&Listener>, Vec<&Listener>) =
        listeners.iter().partition(|l| is_loopback(&l.addr));
    assert!(loopback.len() >= 15, "{listeners:?}");
    for l in &exceptions {
        assert!(
            l.comm.starts_with("ray::ServeRepli") && l.addr.is_unspecified(),
            "pid {} ({}) listens on {}:{}: not loopback, not a documented exception",
            l.pid,
            l.comm,
            l.addr,
            l.port
        );
    }
    let mut calls: Vec<(u16, &str)> = vec![(gcs, "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo")];
    calls.extend(
        exceptions
            .iter()
            .map(|l| (l.port, "/ray.serve.ASGIService/HandleRequest")),
    );
    let answers = grpc_without_token(&calls);
    assert_eq!(answers.len(), calls.len(), "{answers:?}");
    for (answer, call) in answers.iter().zip(&calls) {
        assert!(
            answer.starts_with("UNAUTHENTICATED"),
            "{call:?} without a token: {answer}"
        );
    }

    let (status, body) = get(dashboard, "/api/jobs/").expect("dashboard answers");
    assert_eq!(status, 401, "Jobs API without the token: {body}");
    let (status, _) = get(dashboard, "/api/serve/applications/").expect("dashboard answers");
    assert_eq!(status, 401);

    let token_file = env
        .home
        .path()
        .join("clusters")
        .join(name)
        .join("auth_token");
    let mode = std::fs::metadata(&token_file)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    for pid in &processes {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(token.trim()),
            "the token is on the command line of {pid}"
        );
    }

    let object = env.json(&["get", "rayservice", service]);
    let apps = object["status"]["activeServiceStatus"]["applicationStatuses"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!apps.is_empty(), "{object}");
    for (app, status) in apps {
        assert_eq!(status["status"], "RUNNING", "{app}");
    }
}

#[test]
fn guide_example_and_a_second_service_run_locally() {
    let env = Env::new();

    // Guide step 3: apply; with --wait it returns when Ready.
    let out = env.ok(&[
        "apply",
        "-f",
        &example(),
        "--wait",
        "--timeout",
        READY_TIMEOUT,
    ]);
    assert!(
        out.contains("rayservice.ray.io/rayservice-sample created"),
        "{out}"
    );

    // Guide step 6: requests through the stable Serve endpoint.
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#),
        Ok((200, "6".to_string()))
    );
    assert_eq!(
        env.post("/fruit/", r#"["PEAR", 12]"#),
        Ok((200, "12".to_string()))
    );
    assert_eq!(
        env.post("/fruit/", r#"["KIWI", 1]"#),
        Ok((200, "-1".to_string()))
    );
    let (status, body) = env.post("/calc/", r#"["MUL", 3]"#).expect("calc answers");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<String>(&body).ok().as_deref(),
        Some("15 pizzas please!"),
        "{body}"
    );
    assert_eq!(
        env.post("/calc/", r#"["ADD", 3]"#).map(|(_, b)| b),
        Ok("\"6 pizzas please!\"".to_string())
    );
    // As in the guide, by the service's name.
    assert_eq!(
        post(
            env.serve_port,
            "/fruit/",
            r#"["MANGO", 2]"#,
            Some("rayservice-sample-serve-svc")
        )
        .map(|(_, b)| b),
        Ok("6".into())
    );

    // Guide step 5.2: the dashboard through the stable endpoint.
    let (status, _) = get(env.dashboard_port, "/api/gcs_healthz").expect("dashboard answers");
    assert_eq!(status, 200);
    let (status, apps) =
        get(env.dashboard_port, "/api/serve/applications/").expect("serve api answers");
    assert_eq!(status, 200);
    assert!(apps.contains("fruit_app"), "{apps}");

    // Ray is private: loopback listeners only (or documented exceptions that refuse calls
    // without the token), token authentication on, and still RUNNING through our own client.
    ray_stays_private(&env, "rayservice-sample");
    let (status, jobs) = get(env.dashboard_port, "/api/jobs/").expect("front answers");
    assert_eq!(status, 200, "the front endpoint adds the token: {jobs}");

    // Guide step 4: get.
    let table = env.ok(&["get", "rayservice"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("rayservice-sample"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("Running"), "{table}");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[2], "1", "one serve endpoint: {table}");

    let clusters = env.ok(&["get", "raycluster"]);
    let row = clusters
        .lines()
        .find(|l| l.starts_with("rayservice-sample-raycluster-"))
        .unwrap_or_else(|| panic!("{clusters}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[1..4], &["1", "1", "ready"], "{clusters}");
    let cluster_name = columns[0].to_string();
    assert_eq!(
        cluster_name.len(),
        "rayservice-sample-raycluster-".len() + 5
    );

    let object = env.json(&["get", "rayservice", "rayservice-sample"]);
    assert_eq!(object["apiVersion"], "ray.io/v1");
    assert_eq!(object["kind"], "RayService");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert_eq!(object["metadata"]["generation"], 1);
    assert!(object["metadata"]["creationTimestamp"].is_string());
    let active = &object["status"]["activeServiceStatus"];
    assert_eq!(active["rayClusterName"], cluster_name.as_str());
    let apps = active["applicationStatuses"].as_object().expect("apps");
    assert_eq!(apps.len(), 2);
    for (name, app) in apps {
        assert_eq!(app["status"], "RUNNING", "{name}");
        let deployments = app["serveDeploymentStatuses"]
            .as_object()
            .expect("deployments");
        assert!(!deployments.is_empty());
        for (d_name, deployment) in deployments {
            assert_eq!(deployment["status"], "HEALTHY", "{name}/{d_name}");
            assert!(deployment["healthLastUpdateTime"].is_string());
        }
    }
    assert_eq!(object["status"]["numServeEndpoints"], 1);
    let ready = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("Ready");
    assert_eq!(ready["status"], "True");

    let pods = env.ok(&["get", "pods", "-l", "ray.io/is-ray-node=yes"]);
    let rows: Vec<&str> = pods.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{pods}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with(&format!("{cluster_name}-head-"))
                && r.contains("1/1")
                && r.contains("Running")),
        "{pods}"
    );
    assert!(
        rows.iter().any(
            |r| r.starts_with(&format!("{cluster_name}-worker-small-group-"))
                && r.contains("Running")
        ),
        "{pods}"
    );

    let services = env.ok(&["get", "services"]);
    assert!(
        services.contains("rayservice-sample-serve-svc")
            && services.contains(&format!("{}/TCP", env.serve_port)),
        "{services}"
    );
    assert!(
        services.contains("rayservice-sample-head-svc")
            && services.contains(&format!("{cluster_name}-head-svc")),
        "{services}"
    );

    let describe = env.ok(&["describe", "rayservice", "rayservice-sample"]);
    for expected in [
        "Serve Deployment Statuses",
        "MangoStand",
        "HEALTHY",
        "RUNNING",
        "Health Last Update Time",
        "Events:",
        "ClusterCreated",
    ] {
        assert!(
            describe.contains(expected),
            "describe lacks {expected}:\n{describe}"
        );
    }

    // Applying the same file again changes nothing.
    let out = env.ok(&["apply", "-f", &example()]);
    assert!(
        out.contains("rayservice.ray.io/rayservice-sample unchanged"),
        "{out}"
    );

    // A second RayService, not the guide's: its own cluster, reachable by prefix and by Host.
    let out = env.ok(&[
        "apply",
        "-f",
        &fixture("greeter.yaml"),
        "--wait",
        "--timeout",
        READY_TIMEOUT,
    ]);
    assert!(out.contains("rayservice.ray.io/greeter created"), "{out}");
    assert_eq!(
        env.post("/hello/", "Ada").map(|(_, b)| b),
        Ok("Bonjour, Ada!".into())
    );
    assert_eq!(
        post(env.serve_port, "/hello/", "Lin", Some("greeter-serve-svc")).map(|(_, b)| b),
        Ok("Bonjour, Lin!".into())
    );
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#).map(|(_, b)| b),
        Ok("6".into()),
        "the first service still serves"
    );
    // The guide's Host reaches only its own service.
    let (status, _) = post(
        env.serve_port,
        "/fruit/",
        r#"["MANGO", 2]"#,
        Some("greeter-serve-svc"),
    )
    .expect("answers");
    assert_eq!(status, 404, "greeter has no /fruit route");
    let clusters = env.json(&["get", "raycluster"]);
    assert_eq!(clusters["items"].as_array().map(Vec::len), Some(2));
    // greeter.yaml asks for `dashboard-host: 0.0.0.0`: ignored, with an event that says why.
    let greeter_cluster = clusters["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["metadata"]["labels"]["ray.io/originated-from-cr-name"] == "greeter")
        .and_then(|c| c["metadata"]["name"].as_str())
        .expect("greeter's cluster")
        .to_string();
    let describe = env.ok(&["describe", "raycluster", &greeter_cluster]);
    assert!(
        describe.contains("RayStartParamIgnored")
            && describe.contains("dashboard-host")
            && describe.contains("127.0.0.1 only"),
        "{describe}"
    );
    let greeter_token = env
        .home
        .path()
        .join("clusters")
        .join(&greeter_cluster)
        .join("auth_token");
    assert!(greeter_token.exists());

    // A clash of route prefixes between RayServices is refused at apply, and harms nothing.
    let stderr = env.fails(&["apply", "-f", &fixture("clash.yaml")]);
    assert!(
        stderr.contains("route_prefix `/fruit`") && stderr.contains("rayservice-sample"),
        "{stderr}"
    );
    assert!(
        env.ok(&["get", "rayservice"])
            .lines()
            .all(|l| !l.starts_with("clash"))
    );
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#).map(|(_, b)| b),
        Ok("6".into())
    );

    // kill -9 the control plane: the next command brings it back; the same clusters still serve.
    let server = env.server_pid().expect("server runs");
    let node_pids = env.node_pids();
    assert_eq!(node_pids.len(), 3, "head+worker and a head");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    eventually(Duration::from_secs(10), "the server to die", || {
        (!alive(server)).then_some(())
    });
    let clusters_after = env.ok(&["get", "raycluster"]);
    assert!(clusters_after.contains(&cluster_name), "{clusters_after}");
    assert_ne!(env.server_pid(), Some(server));
    assert_eq!(
        env.json(&["get", "raycluster"])["items"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "nothing duplicated"
    );
    let mut pids_after = env.node_pids();
    pids_after.sort();
    let mut pids_before = node_pids.clone();
    pids_before.sort();
    assert_eq!(
        pids_after, pids_before,
        "the same node processes, none restarted"
    );
    eventually(
        Duration::from_secs(30),
        "serving again through the restarted front endpoint",
        || (env.post("/fruit/", r#"["MANGO", 2]"#) == Ok((200, "6".into()))).then_some(()),
    );
    assert_eq!(
        env.post("/hello/", "Ada").map(|(_, b)| b),
        Ok("Bonjour, Ada!".into())
    );
    let ready = env.ok(&[
        "wait",
        "--for=condition=Ready",
        "rayservice/rayservice-sample",
        "--timeout=60s",
    ]);
    let _ = ready;

    // delete: every process of that RayService stops, its ports are free, get shows nothing.
    let greeter_ports = cluster_endpoint_ports(&env, "greeter");
    let greeter_pids: Vec<i32> = pods_of(&env, "greeter")
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    assert_eq!(greeter_pids.len(), 1);
    let out = env.ok(&["delete", "rayservice", "greeter"]);
    assert!(out.contains("\"greeter\" deleted"), "{out}");
    for pid in &greeter_pids {
        assert!(!alive(*pid), "greeter's node {pid} still runs");
    }
    for port in &greeter_ports {
        assert!(
            !listening(*port),
            "port {port} of greeter's cluster is still in use"
        );
    }
    assert!(!env.ok(&["get", "rayservice"]).contains("greeter"));
    assert!(!greeter_token.exists(), "the cluster's token goes with it");
    assert!(
        env.post("/hello/", "Ada")
            .map(|(s, _)| s != 200)
            .unwrap_or(true)
    );
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#).map(|(_, b)| b),
        Ok("6".into()),
        "the other service is untouched"
    );

    let sample_ports = cluster_endpoint_ports(&env, "rayservice-sample");
    let sample_pids: Vec<i32> = pods_of(&env, "rayservice-sample")
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    let out = env.ok(&["delete", "-f", &example()]);
    assert!(out.contains("\"rayservice-sample\" deleted"), "{out}");
    for pid in &sample_pids {
        assert!(!alive(*pid), "node {pid} still runs");
    }
    for port in &sample_ports {
        assert!(!listening(*port), "port {port} still in use");
    }
    let stderr = String::from_utf8_lossy(&env.run(&["get", "rayservice"]).stderr).into_owned();
    assert!(stderr.contains("No resources found"), "{stderr}");
    assert!(env.node_pids().is_empty());
}

#[test]
fn failures_are_visible_and_the_good_app_still_serves() {
    let env = Env::new();
    let out = env.ok(&["apply", "-f", &fixture("troubled.yaml")]);
    assert!(out.contains("rayservice.ray.io/troubled created"), "{out}");

    // The good app serves although the others do not.
    eventually(Duration::from_secs(480), "good_app to serve", || {
        (env.post("/good/", "Ada") == Ok((200, "Hello, Ada!".into()))).then_some(())
    });

    // The broken import path: DEPLOY_FAILED with Ray's message.
    let status = eventually(Duration::from_secs(240), "broken_app to fail", || {
        let object = env.json(&["get", "rayservice", "troubled"]);
        let apps = object["status"]["activeServiceStatus"]["applicationStatuses"].clone();
        (apps["broken_app"]["status"] == "DEPLOY_FAILED").then_some(object)
    });
    let broken = &status["status"]["activeServiceStatus"]["applicationStatuses"]["broken_app"];
    assert!(
        broken["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_module"),
        "{broken}"
    );

    // The greedy app waits for CPUs the cluster does not have, and the status says so.
    let waiting = eventually(
        Duration::from_secs(240),
        "the status to say greedy_app waits for resources",
        || {
            let object = env.json(&["get", "rayservice", "troubled"]);
            let ready = object["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            let greedy =
                object["status"]["activeServiceStatus"]["applicationStatuses"]["greedy_app"]
                    .to_string();
            (greedy.contains("CPU") && ready["status"] == "False").then_some((ready, greedy))
        },
    );
    assert_eq!(
        waiting.0["reason"], "ServeApplicationsFailed",
        "{:?}",
        waiting.0
    );
    assert!(waiting.1.contains("64"), "{}", waiting.1);

    // wait and describe tell why it is not Ready.
    let stderr = env.fails(&[
        "wait",
        "--for=condition=Ready",
        "rayservice/troubled",
        "--timeout=5s",
    ]);
    assert!(
        stderr.contains("broken_app") && stderr.contains("DEPLOY_FAILED"),
        "{stderr}"
    );
    let describe = env.ok(&["describe", "rayservice", "troubled"]);
    assert!(
        describe.contains("no_such_module") && describe.contains("DEPLOY_FAILED"),
        "{describe}"
    );
    assert_eq!(
        env.post("/good/", "Lin").map(|(_, b)| b),
        Ok("Hello, Lin!".into()),
        "still serving"
    );
}

#[test]
fn the_guides_own_sample_fails_clearly_without_internet() {
    // The unchanged KubeRay sample: its working_dir is a GitHub archive this machine cannot fetch.
    let sample = repo().join("../shared/kuberay-samples/ray_v1alpha1_rayservice.yaml");
    let env = Env::new();
    let stderr = env.fails(&[
        "apply",
        "-f",
        &sample.display().to_string(),
        "--wait",
        "--timeout",
        READY_TIMEOUT,
    ]);
    assert!(stderr.contains("DEPLOY_FAILED"), "{stderr}");
    assert!(
        stderr.contains("github.com")
            || stderr.to_lowercase().contains("download")
            || stderr.contains("working_dir"),
        "Ray's message is shown: {stderr}"
    );
    let object = env.json(&["get", "rayservice", "rayservice-sample"]);
    let pending = &object["status"]["pendingServiceStatus"]["applicationStatuses"];
    assert_eq!(pending["fruit_app"]["status"], "DEPLOY_FAILED", "{object}");
    assert_eq!(pending["math_app"]["status"], "DEPLOY_FAILED", "{object}");
    let ready = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DEPLOY_FAILED"),
        "{ready}"
    );
}
