//! End to end, with real Ray: nodes are restarted like pods, a head that comes back empty gets
//! its applications again, and a cluster whose dashboard stays unreachable is replaced while
//! traffic keeps flowing.

mod common;

use std::time::Duration;

use common::{Env, eventually, repo, write_yaml};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

fn service_yaml() -> String {
    let greeter = repo().join("crates/cli/tests/fixtures/greeter");
    format!(
        r#"apiVersion: ray.io/v1
kind: RayService
metadata:
  name: sturdy
spec:
  deploymentUnhealthySecondThreshold: 10
  rayClusterDeletionDelaySeconds: 5
  serveConfigV2: |
    applications:
      - name: hello_app
        import_path: greet.app
        route_prefix: /hello
        runtime_env:
          working_dir: {}
        deployments:
          - name: Greeter
            user_config:
              greeting: Hi
  rayClusterConfig:
    headGroupSpec:
      rayStartParams: {{}}
      template:
        spec:
          containers:
            - name: ray-head
              resources:
                limits: {{cpu: "1", memory: 1Gi}}
    workerGroupSpecs:
      - groupName: workers
        replicas: 1
        template:
          spec:
            containers:
              - name: ray-worker
                resources:
                  limits: {{cpu: "1", memory: 1Gi}}
"#,
        greeter.display()
    )
}

fn pod(env: &Env, node_type: &str) -> Value {
    env.json(&["get", "pods"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["nodeType"] == node_type)
        .cloned()
        .unwrap_or(Value::Null)
}

fn answers(env: &Env) -> bool {
    env.post("/hello/", "Ada") == Ok((200, "Hi, Ada!".into()))
}

fn events(env: &Env) -> String {
    env.ok(&["describe", "rayservice", "sturdy"])
}

/// The dashboard process started by the head node `head_pid`.
fn dashboard_of(head_pid: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (parent == head_pid && String::from_utf8_lossy(&cmdline).contains("dashboard.py"))
                .then_some(pid)
        })
}

#[test]
fn nodes_restart_like_pods_and_an_unreachable_cluster_is_replaced() {
    let env = Env::new();
    let file = write_yaml(env.home.path(), "sturdy.yaml", &service_yaml());
    env.ok(&[
        "apply",
        "-f",
        file.to_str().expect("utf-8"),
        "--wait",
        "--timeout",
        "8m",
    ]);
    assert!(answers(&env));

    // A worker node that dies is started again.
    let worker = pod(&env, "worker");
    let worker_pid = worker["pid"].as_i64().expect("worker pid") as i32;
    killpg(Pid::from_raw(worker_pid), Signal::SIGKILL).expect("kill the worker");
    eventually(Duration::from_secs(120), "the worker to run again", || {
        let worker = pod(&env, "worker");
        (worker["restarts"].as_i64() >= Some(1)
            && worker["phase"] == "Running"
            && worker["pid"] != worker_pid)
            .then_some(())
    });
    assert!(events(&env).contains("NodeRestarted"));
    eventually(
        Duration::from_secs(120),
        "serving after the worker restart",
        || answers(&env).then_some(()),
    );

    // A head that dies comes back without applications; they are submitted again.
    let head_pid = pod(&env, "head")["pid"].as_i64().expect("head pid") as i32;
    killpg(Pid::from_raw(head_pid), Signal::SIGKILL).expect("kill the head");
    eventually(
        Duration::from_secs(180),
        "the apps to be submitted to the restarted head",
        || {
            events(&env)
                .contains("ServeConfigResubmitted")
                .then_some(())
        },
    );
    eventually(
        Duration::from_secs(240),
        "serving after the head restart",
        || answers(&env).then_some(()),
    );
    let first_cluster = env.json(&["get", "rayservice", "sturdy"])["status"]["activeServiceStatus"]
        ["rayClusterName"]
        .as_str()
        .expect("active")
        .to_string();

    // The dashboard hangs for longer than deploymentUnhealthySecondThreshold (10 s): a new cluster
    // is prepared, traffic moves when it is ready, the old one is removed.
    let head_pid = eventually(Duration::from_secs(60), "the head pid", || {
        pod(&env, "head")["pid"].as_i64()
    }) as i32;
    let dashboard = eventually(
        Duration::from_secs(60),
        "the head's dashboard process",
        || dashboard_of(head_pid),
    );
    kill(Pid::from_raw(dashboard), Signal::SIGSTOP).expect("stop the dashboard");
    eventually(
        Duration::from_secs(120),
        "the cluster to be found unhealthy",
        || events(&env).contains("ClusterUnhealthy").then_some(()),
    );
    let mut answered_meanwhile = 0;
    eventually(
        Duration::from_secs(480),
        "traffic to move to a new cluster",
        || {
            if answers(&env) {
                answered_meanwhile += 1;
            }
            let object = env.json(&["get", "rayservice", "sturdy"]);
            let active = object["status"]["activeServiceStatus"]["rayClusterName"]
                .as_str()?
                .to_string();
            (active != first_cluster).then_some(())
        },
    );
    assert!(
        answered_meanwhile > 0,
        "the old cluster's Serve proxy kept answering while its dashboard hung"
    );
    eventually(
        Duration::from_secs(120),
        "the old cluster to be removed",
        || (!env.ok(&["get", "raycluster"]).contains(&first_cluster)).then_some(()),
    );
    assert!(answers(&env));
    let _ = kill(Pid::from_raw(dashboard), Signal::SIGKILL);
}

#[test]
fn an_application_unhealthy_beyond_its_threshold_gets_a_new_cluster() {
    let env = Env::new();
    let flag = env.home.path().join("sick-gcs-port");
    let yaml = format!(
        r#"apiVersion: ray.io/v1
kind: RayService
metadata:
  name: flaky
spec:
  serviceUnhealthySecondThreshold: 10
  rayClusterDeletionDelaySeconds: 5
  serveConfigV2: |
    applications:
      - name: flaky_app
        import_path: flaky.app
        route_prefix: /flaky
        runtime_env:
          working_dir: {}
        deployments:
          - name: Flaky
            user_config:
              flag: {}
  rayClusterConfig:
    headGroupSpec:
      template:
        spec:
          containers:
            - name: ray-head
              resources:
                limits: {{cpu: "1", memory: 1Gi}}
"#,
        repo().join("crates/cli/tests/fixtures/flaky").display(),
        flag.display()
    );
    let file = write_yaml(env.home.path(), "flaky.yaml", &yaml);
    env.ok(&[
        "apply",
        "-f",
        file.to_str().expect("utf-8"),
        "--wait",
        "--timeout",
        "8m",
    ]);
    let object = env.json(&["get", "rayservice", "flaky"]);
    let first = object["status"]["activeServiceStatus"]["rayClusterName"]
        .as_str()
        .expect("active")
        .to_string();
    let clusters = env.json(&["get", "raycluster"]);
    let gcs_port = clusters["items"][0]["status"]["endpoints"]["gcs-server"]
        .as_str()
        .expect("gcs port")
        .to_string();

    // The app turns unhealthy on this cluster only.
    std::fs::write(&flag, &gcs_port).expect("write flag");
    eventually(
        Duration::from_secs(120),
        "the app to be seen unhealthy",
        || {
            let object = env.json(&["get", "rayservice", "flaky"]);
            let status = object["status"]["activeServiceStatus"]["applicationStatuses"]["flaky_app"]["status"].clone();
            (status == "UNHEALTHY" || status == "DEPLOY_FAILED").then_some(())
        },
    );
    eventually(
        Duration::from_secs(120),
        "a new cluster for the unhealthy app",
        || {
            events_of(&env, "flaky")
                .contains("ClusterUnhealthy")
                .then_some(())
        },
    );
    eventually(
        Duration::from_secs(480),
        "traffic on a healthy new cluster",
        || {
            let object = env.json(&["get", "rayservice", "flaky"]);
            let active = object["status"]["activeServiceStatus"]["rayClusterName"]
                .as_str()?
                .to_string();
            (active != first && object["status"]["activeServiceStatus"]["applicationStatuses"]["flaky_app"]["status"] == "RUNNING")
            .then_some(())
        },
    );
    assert_eq!(env.post("/flaky/", "").map(|(_, b)| b), Ok("ok".into()));
    eventually(
        Duration::from_secs(120),
        "the unhealthy cluster to be removed",
        || (!env.ok(&["get", "raycluster"]).contains(&first)).then_some(()),
    );
}

fn events_of(env: &Env, name: &str) -> String {
    env.ok(&["describe", "rayservice", name])
}
