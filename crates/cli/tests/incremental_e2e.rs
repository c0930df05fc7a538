//! End to end, with real Ray, under a bounded load of 16 clients: a `NewCluster` upgrade, then
//! a `NewClusterWithIncrementalUpgrade` one (traffic and Serve capacity step by step, worker
//! nodes following capacity), then a rollback mid-upgrade; and an old cluster that waits for a
//! long request in flight before it stops. Prints the resources each upgrade held (the figures
//! of the issue's benchmark).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Env, Load, alive, eventually, repo, write_yaml};
use serde_json::Value;

const READY_TIMEOUT: &str = "8m";

/// (status, body) of a request, or why it failed.
type Answer = Result<(u16, String), String>;

/// A greeter whose two replicas need one CPU each, on two one-CPU workers (the head runs no
/// replica): Serve's target_capacity decides how many workers are needed.
fn greeter(version: &str, greeting: &str, strategy: &str, delay: u32) -> String {
    let dir = repo().join("crates/cli/tests/fixtures/greeter");
    format!(
        r#"apiVersion: ray.io/v1
kind: RayService
metadata:
  name: canary
spec:
{strategy}  rayClusterDeletionDelaySeconds: {delay}
  serveConfigV2: |
    applications:
      - name: hello_app
        import_path: greet.app
        route_prefix: /hello
        runtime_env:
          working_dir: {dir}
        deployments:
          - name: Greeter
            num_replicas: 2
            max_ongoing_requests: 100
            ray_actor_options:
              num_cpus: 1
            user_config:
              greeting: {greeting}
  rayClusterConfig:
    rayVersion: "{version}"
    headGroupSpec:
      rayStartParams:
        num-cpus: "0"
      template:
        spec:
          containers:
            - name: ray-head
              resources:
                limits:
                  cpu: "1"
                  memory: 1Gi
    workerGroupSpecs:
      - groupName: workers
        replicas: 2
        minReplicas: 0
        maxReplicas: 2
        rayStartParams: {{}}
        template:
          spec:
            containers:
              - name: ray-worker
                resources:
                  limits:
                    cpu: "1"
                    memory: 1Gi
"#,
        dir = dir.display()
    )
}

const INCREMENTAL: &str = "  upgradeStrategy:\n    type: NewClusterWithIncrementalUpgrade\n    clusterUpgradeOptions:\n      maxSurgePercent: 50\n      stepSizePercent: 25\n      intervalSeconds: 5\n";

/// Worker node processes alive now, read from the state database and `/proc`: each holds one
/// CPU in this file.
fn live_workers(home: &std::path::Path) -> usize {
    let Ok(db) = rusqlite::Connection::open(home.join("state.db")) else {
        return 0;
    };
    let Ok(mut statement) =
        db.prepare("SELECT pid FROM nodes WHERE node_type = 'worker' AND pid IS NOT NULL")
    else {
        return 0;
    };
    let pids: Vec<i32> = statement
        .query_map([], |row| row.get::<_, i32>(0))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default();
    pids.into_iter().filter(|pid| alive(*pid)).count()
}

/// Samples the live worker CPUs every 100 ms: the peak and the CPU-seconds held.
struct Meter {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, f64)>,
    started: Instant,
}

impl Meter {
    fn start(env: &Env) -> Meter {
        let stop = Arc::new(AtomicBool::new(false));
        let home = env.home.path().to_path_buf();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut cpu_seconds) = (0usize, 0.0f64);
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let workers = live_workers(&home);
                let now = Instant::now();
                cpu_seconds += workers as f64 * (now - last).as_secs_f64();
                last = now;
                peak = peak.max(workers);
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, cpu_seconds)
        });
        Meter {
            stop,
            handle,
            started: Instant::now(),
        }
    }

    /// (peak worker CPUs, worker CPU-seconds, seconds).
    fn finish(self) -> (usize, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, cpu_seconds) = self.handle.join().expect("meter");
        (peak, cpu_seconds, self.started.elapsed().as_secs_f64())
    }
}

fn service(env: &Env) -> Value {
    env.json(&["get", "rayservice", "canary"])
}

fn condition_true(object: &Value, type_: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

fn active(object: &Value) -> String {
    object["status"]["activeServiceStatus"]["rayClusterName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Names of the clusters in the state database.
fn clusters_named(env: &Env) -> Vec<String> {
    let Ok(db) = rusqlite::Connection::open(env.home.path().join("state.db")) else {
        return Vec::new();
    };
    let Ok(mut statement) = db.prepare("SELECT name FROM clusters") else {
        return Vec::new();
    };
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// Pids of one cluster's node processes.
fn cluster_pids(env: &Env, cluster: &str) -> Vec<i32> {
    let Ok(db) = rusqlite::Connection::open(env.home.path().join("state.db")) else {
        return Vec::new();
    };
    let Ok(mut statement) =
        db.prepare("SELECT pid FROM nodes WHERE cluster = ?1 AND pid IS NOT NULL")
    else {
        return Vec::new();
    };
    statement
        .query_map([cluster], |row| row.get::<_, i32>(0))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// A serving greeter ("Bonjour", NewCluster upgrades, deletion delay `delay`) and its file.
fn serving(delay: u32) -> (Env, String) {
    let env = Env::new();
    let file = write_yaml(
        env.home.path(),
        "canary.yaml",
        &greeter("2.60.0", "Bonjour", "", delay),
    );
    let file = file.to_str().expect("utf-8").to_string();
    env.ok(&["apply", "-f", &file, "--wait", "--timeout", READY_TIMEOUT]);
    (env, file)
}

#[test]
fn new_cluster_then_incremental_upgrade_then_rollback_under_load() {
    let (env, file) = serving(0);
    let file = file.as_str();
    let load = Load::start(env.serve_port, 16, "/hello", "world");
    eventually(Duration::from_secs(60), "the load to get answers", || {
        (load.answered() > 20).then_some(())
    });

    // 1. NewCluster: a second full cluster until the switch.
    let first = active(&service(&env));
    std::fs::write(file, greeter("2.100.0", "Hallo", "", 0)).expect("write");
    let meter = Meter::start(&env);
    env.ok(&["apply", "-f", file]);
    eventually(Duration::from_secs(480), "the NewCluster upgrade", || {
        let object = service(&env);
        (active(&object) != first
            && object["status"]["pendingServiceStatus"]["rayClusterName"].is_null()
            && cluster_pids(&env, &first).iter().all(|p| !alive(*p)))
        .then_some(())
    });
    let (new_cluster_peak, new_cluster_cpu_s, new_cluster_secs) = meter.finish();

    // 2. NewClusterWithIncrementalUpgrade: traffic and capacity step by step.
    let second = active(&service(&env));
    std::fs::write(file, greeter("2.101.0", "Hola", INCREMENTAL, 0)).expect("write");
    let diff = env.ok(&["diff", "-f", file]);
    assert!(
        diff.contains("incremental upgrade")
            && diff.contains("new cluster target_capacity 50%")
            && diff.contains("traffic 25% new / 75% old"),
        "the step plan: {diff}"
    );
    let meter = Meter::start(&env);
    let answers_before = load.answers();
    env.ok(&["apply", "-f", file]);
    let mut shares: Vec<(i64, String)> = Vec::new();
    let mut promoted_at = None;
    let third = eventually(Duration::from_secs(600), "the incremental upgrade", || {
        let object = service(&env);
        let pending = &object["status"]["pendingServiceStatus"];
        if let Some(share) = pending["trafficRoutedPercent"].as_i64() {
            let at = pending["lastTrafficMigratedTime"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if shares.last().is_none_or(|(s, a)| *s != share || *a != at) {
                shares.push((share, at));
            }
        }
        let now_active = active(&object);
        (now_active != second).then_some(now_active)
    });
    let promoted = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the old cluster's processes to stop",
        || {
            cluster_pids(&env, &second)
                .iter()
                .all(|p| !alive(*p))
                .then(|| promoted_at = Some(promoted.elapsed()))
        },
    );
    let (incremental_peak, incremental_cpu_s, incremental_secs) = meter.finish();
    let during: Vec<String> = load
        .answers()
        .into_iter()
        .filter(|(answer, count)| answers_before.get(answer) != Some(count))
        .map(|(answer, _)| answer)
        .collect();
    eprintln!("incremental upgrade: shares {shares:?}, answers during {during:?}");
    assert!(
        during.iter().any(|a| a.starts_with("Hallo"))
            && during.iter().any(|a| a.starts_with("Hola")),
        "answers from both clusters during the upgrade: {during:?}"
    );
    assert!(
        shares.windows(2).all(|w| w[0].0 <= w[1].0),
        "the new cluster's share never decreases: {shares:?}"
    );
    let times: Vec<i64> = shares
        .iter()
        .filter_map(|(_, at)| at.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] == w[0] || w[1] - w[0] >= 5),
        "steps at least intervalSeconds apart: {shares:?}"
    );
    assert!(
        incremental_peak <= 3,
        "at most 1.5x one cluster's 2 worker CPUs, saw {incremental_peak}"
    );
    let stopped_in = promoted_at.expect("stopped").as_secs_f64();
    eprintln!("old cluster's processes gone {stopped_in:.2}s after the promotion was seen");
    assert!(
        stopped_in <= 2.5,
        "with delay 0 and nothing in flight the old cluster stops at once ({stopped_in:.1}s)"
    );
    let finals: Vec<String> = (0..10)
        .map(|_| {
            env.post("/hello", "world")
                .map(|(_, b)| b)
                .unwrap_or_default()
        })
        .collect();
    assert!(finals.iter().all(|a| a == "Hola, world!"), "{finals:?}");
    let described = env.ok(&["describe", "rayservice", "canary"]);
    for reason in [
        "TargetCapacityChanged",
        "TrafficMigrated",
        "IncrementalUpgradeWithoutGateway",
    ] {
        assert!(described.contains(reason), "{reason}: {described}");
    }

    // 3. A rollback: the spec returns to the active cluster's at 50 % traffic.
    let incremental_spec = greeter("2.101.0", "Hola", INCREMENTAL, 0);
    std::fs::write(file, greeter("2.102.0", "Ciao", INCREMENTAL, 0)).expect("write");
    env.ok(&["apply", "-f", file]);
    let fourth = eventually(
        Duration::from_secs(480),
        "50 % of traffic on the new cluster",
        || {
            let object = service(&env);
            let pending = &object["status"]["pendingServiceStatus"];
            (pending["trafficRoutedPercent"].as_i64() == Some(50)).then(|| {
                pending["rayClusterName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        },
    );
    std::fs::write(file, &incremental_spec).expect("write");
    env.ok(&["apply", "-f", file]);
    let mut rollback_seen = false;
    eventually(Duration::from_secs(300), "the rollback", || {
        let object = service(&env);
        rollback_seen |= condition_true(&object, "RollbackInProgress");
        (object["status"]["pendingServiceStatus"]["rayClusterName"].is_null()
            && cluster_pids(&env, &fourth).iter().all(|p| !alive(*p)))
        .then_some(())
    });
    assert!(rollback_seen, "RollbackInProgress seen");
    let object = service(&env);
    assert_eq!(active(&object), third);
    assert_eq!(
        object["status"]["activeServiceStatus"]["trafficRoutedPercent"],
        100
    );
    assert_eq!(load.failures(), 0, "no failed request so far");

    // 4. A release that fails half of its requests: rolled back automatically at its first
    //    traffic step, and not tried again.
    let sent_before = load.sent();
    std::fs::write(file, greeter("2.103.0", "Broken", INCREMENTAL, 0)).expect("write");
    env.ok(&["apply", "-f", file]);
    let object = eventually(Duration::from_secs(480), "the automatic rollback", || {
        let object = service(&env);
        let upgrade = object["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "UpgradeInProgress").cloned())?;
        (upgrade["reason"] == "RolledBackAutomatically").then_some(object)
    });
    let upgrade = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "UpgradeInProgress").cloned())
        .expect("condition");
    assert_eq!(upgrade["status"], "False");
    assert!(
        upgrade["message"]
            .as_str()
            .unwrap_or_default()
            .contains("failed"),
        "the figures: {upgrade}"
    );
    assert_eq!(
        active(&object),
        third,
        "traffic back on the serving cluster"
    );
    let described = env.ok(&["describe", "rayservice", "canary"]);
    assert!(described.contains("RolledBackAutomatically"), "{described}");
    let bad = clusters_named(&env)
        .into_iter()
        .find(|c| *c != third)
        .unwrap_or_default();
    eventually(
        Duration::from_secs(60),
        "the bad release's cluster to stop",
        || {
            cluster_pids(&env, &bad)
                .iter()
                .all(|p| !alive(*p))
                .then_some(())
        },
    );
    let object = service(&env);
    assert!(
        object["status"]["pendingServiceStatus"]["rayClusterName"].is_null()
            && active(&object) == third,
        "the same spec is not tried again: {object}"
    );
    let failed_by_broken = load.failures();

    // 5. A release whose answers take 2 s, with max-p99-ratio 3: rolled back as well.
    let slow = greeter("2.104.0", "Slow", INCREMENTAL, 0).replace(
        "metadata:\n  name: canary\n",
        "metadata:\n  name: canary\n  annotations:\n    rayservice.dev/max-p99-ratio: \"3\"\n",
    );
    std::fs::write(file, slow).expect("write");
    env.ok(&["apply", "-f", file]);
    eventually(
        Duration::from_secs(480),
        "the rollback of the slow release",
        || {
            assert_eq!(
                active(&service(&env)),
                third,
                "the slow release must not be promoted"
            );
            let described = env.ok(&["describe", "rayservice", "canary"]);
            described.contains("p99 latency reached").then_some(())
        },
    );
    assert_eq!(
        active(&service(&env)),
        third,
        "traffic back on the serving cluster"
    );
    assert_eq!(
        load.failures(),
        failed_by_broken,
        "a slow release fails nothing"
    );

    let (sent, failures, answers) = load.finish();
    let during = sent - sent_before;
    eprintln!(
        "load: {sent} requests, answers {answers:?}, failures {} (all during the bad release's step, of {during} requests then)",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .all(|f| f == "HTTP 500 Internal Server Error"),
        "only the bad release's own errors: {:?}",
        failures.first()
    );
    assert!(
        failures.len() * 100 <= during * 13,
        "no more failures than half of the first step's 25 % share: {} of {during}",
        failures.len()
    );
    let finals: Vec<String> = (0..10)
        .map(|_| {
            env.post("/hello", "world")
                .map(|(_, b)| b)
                .unwrap_or_default()
        })
        .collect();
    assert!(finals.iter().all(|a| a == "Hola, world!"), "{finals:?}");
    eprintln!(
        "BENCH upgrade resources (one cluster = 2 worker CPUs): NewCluster peak {new_cluster_peak} CPUs, {new_cluster_cpu_s:.0} CPU-s, {new_cluster_secs:.0} s to fully upgraded; incremental peak {incremental_peak} CPUs, {incremental_cpu_s:.0} CPU-s, {incremental_secs:.0} s"
    );
}

#[test]
fn an_old_cluster_waits_for_a_long_request_in_flight() {
    let (env, file) = serving(5);
    let file = file.as_str();
    let first = active(&service(&env));
    std::fs::write(file, greeter("2.100.0", "Hallo", "", 5)).expect("write");
    env.ok(&["apply", "-f", file]);
    // Long requests, one a second from when the new cluster's app deploys until the switch:
    // the last ones sent to the old cluster start just before it.
    eventually(
        Duration::from_secs(480),
        "the new cluster's app to deploy",
        || {
            let object = service(&env);
            object["status"]["pendingServiceStatus"]["applicationStatuses"]["hello_app"]["status"]
                .as_str()
                .map(|_| ())
        },
    );
    let port = env.serve_port;
    let mut long = Vec::new();
    let switched = eventually(Duration::from_secs(120), "the switch", || {
        if long.len() < 90 {
            long.push(std::thread::spawn(move || {
                let answer = common::post(port, "/hello", "sleep:20", None);
                (answer, Instant::now())
            }));
        }
        std::thread::sleep(Duration::from_millis(1000));
        (active(&service(&env)) != first).then(Instant::now)
    });
    let answers: Vec<(Answer, Instant)> = long
        .into_iter()
        .map(|h| h.join().expect("long request"))
        .collect();
    assert!(
        answers
            .iter()
            .all(|(a, _)| a.as_ref().is_ok_and(|(code, _)| *code == 200)),
        "every long request answered: {answers:?}"
    );
    let on_old: Vec<&Instant> = answers
        .iter()
        .filter(|(a, _)| {
            a.as_ref()
                .is_ok_and(|(_, body)| body == "Bonjour, sleep:20!")
        })
        .map(|(_, done)| done)
        .collect();
    assert!(
        !on_old.is_empty(),
        "some long requests ran on the old cluster: {answers:?}"
    );
    let last_on_old = on_old.into_iter().max().copied().expect("one");
    assert!(
        last_on_old > switched + Duration::from_secs(10),
        "a request on the old cluster outlived the switch by more than the 5 s deletion delay"
    );
    let described = env.ok(&["describe", "rayservice", "canary"]);
    assert!(
        described.contains("Draining: ") && described.contains("request(s) in flight on"),
        "{described}"
    );
    eventually(
        Duration::from_secs(30),
        "the old cluster to stop once drained",
        || {
            cluster_pids(&env, &first)
                .iter()
                .all(|p| !alive(*p))
                .then_some(())
        },
    );
}
