//! End to end, with real Ray: the guide's steps 7 and 8 (in-place update, autoscaler-owned
//! fields, zero-downtime upgrade) under continuous load, and a control plane killed mid-upgrade.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Load, alive, eventually, repo, write_yaml};
use serde_json::Value;

const READY_TIMEOUT: &str = "8m";

/// The example with an absolute working_dir and a short deletion delay, so it can live anywhere.
fn example_text() -> String {
    let text =
        std::fs::read_to_string(repo().join("examples/rayservice-local.yaml")).expect("example");
    let dag = repo().join("examples/test_dag");
    text.replace(
        "working_dir: ./test_dag",
        &format!("working_dir: {}", dag.display()),
    )
    .replace(
        "spec:\n  # A Ray Serve",
        "spec:\n  rayClusterDeletionDelaySeconds: 15\n  # A Ray Serve",
    )
}

fn with_price_4(text: &str) -> String {
    assert!(text.contains("price: 3"));
    text.replace("price: 3", "price: 4")
}

fn with_two_workers(text: &str) -> String {
    let from = "groupName: small-group\n        replicas: 1";
    assert!(text.contains(from), "example layout changed");
    text.replace(from, "groupName: small-group\n        replicas: 2")
}

fn with_ray_version(text: &str, version: &str) -> String {
    assert!(text.contains("rayVersion: \"2.60.0\""));
    text.replace(
        "rayVersion: \"2.60.0\"",
        &format!("rayVersion: \"{version}\""),
    )
}

fn clusters(env: &Env) -> Vec<Value> {
    env.json(&["get", "raycluster"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn condition(object: &Value, type_: &str) -> Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null)
}

fn pids(env: &Env) -> Vec<i32> {
    let mut pids = env.node_pids();
    pids.sort();
    pids
}

#[test]
fn in_place_update_replicas_and_upgrade_without_a_failed_request() {
    let env = Env::new();
    let base = example_text();
    let file = write_yaml(env.home.path(), "service.yaml", &base);
    let file = file.to_str().expect("utf-8");
    env.ok(&["apply", "-f", file, "--wait", "--timeout", READY_TIMEOUT]);
    let first_cluster = clusters(&env)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let first_pids = pids(&env);

    let load = Load::start(env.serve_port, 24, "/fruit/", r#"["MANGO", 2]"#);
    eventually(Duration::from_secs(30), "the load to get answers", || {
        (load.answered() > 50).then_some(())
    });

    // Guide step 7: in-place update of MangoStand's price.
    std::fs::write(file, with_price_4(&base)).expect("write");
    let diff = env.ok(&["diff", "-f", file]);
    assert!(
        diff.contains("in-place") && diff.contains("MangoStand: user_config change"),
        "{diff}"
    );
    assert!(!diff.contains("upgrade"), "{diff}");
    let applied_at = Instant::now();
    let out = env.ok(&["apply", "-f", file]);
    assert!(
        out.contains("rayservice.ray.io/rayservice-sample configured"),
        "{out}"
    );
    eventually(Duration::from_secs(60), "the new price to answer", || {
        (env.post("/fruit/", r#"["MANGO", 2]"#) == Ok((200, "8".into()))).then_some(())
    });
    eprintln!(
        "in-place update: new answer {:.2}s after apply",
        applied_at.elapsed().as_secs_f64()
    );
    eventually(Duration::from_secs(60), "MangoStand HEALTHY again", || {
        let object = env.json(&["get", "rayservice", "rayservice-sample"]);
        let mango = &object["status"]["activeServiceStatus"]["applicationStatuses"]["fruit_app"]["serveDeploymentStatuses"]
            ["MangoStand"];
        (mango["status"] == "HEALTHY" && object["status"]["observedGeneration"] == 2).then_some(())
    });
    assert_eq!(clusters(&env).len(), 1);
    assert_eq!(
        clusters(&env)[0]["metadata"]["name"],
        first_cluster.as_str(),
        "the same cluster keeps serving"
    );
    assert_eq!(pids(&env), first_pids, "no new Ray node process");
    let events = env.ok(&["describe", "rayservice", "rayservice-sample"]);
    assert!(events.contains("ServeConfigSubmitted"), "{events}");

    // Guide steps 8.1-8.3: worker replicas 1 -> 2 changes the RayService, not the cluster.
    let two_workers = with_two_workers(&with_price_4(&base));
    std::fs::write(file, &two_workers).expect("write");
    let diff = env.ok(&["diff", "-f", file]);
    assert!(
        diff.contains("not-rolled-out") && diff.contains("workerGroupSpecs[0].replicas"),
        "{diff}"
    );
    let out = env.ok(&["apply", "-f", file]);
    assert!(out.contains("configured"), "{out}");
    let described = eventually(Duration::from_secs(30), "the explanation event", || {
        let text = env.ok(&["describe", "rayservice", "rayservice-sample"]);
        text.contains("NotRolledOut").then_some(text)
    });
    assert!(
        described.contains("Replicas:  2"),
        "the RayService has 2 replicas: {described}"
    );
    let now_clusters = clusters(&env);
    assert_eq!(now_clusters.len(), 1, "no new cluster");
    assert_eq!(
        now_clusters[0]["spec"]["workerGroupSpecs"][0]["replicas"], 1,
        "the RayCluster keeps 1 replica"
    );
    assert_eq!(pids(&env), first_pids);

    // Guide steps 8.4-8.7: rayVersion changes: a pending cluster with 2 workers, then the switch.
    let upgraded = with_ray_version(&two_workers, "2.100.0");
    std::fs::write(file, &upgraded).expect("write");
    let diff = env.ok(&["diff", "-f", file]);
    assert!(
        diff.contains("upgrade") && diff.contains("rayVersion"),
        "{diff}"
    );
    let applied_at = Instant::now();
    env.ok(&["apply", "-f", file]);
    let pending = eventually(Duration::from_secs(60), "a pending cluster", || {
        let object = env.json(&["get", "rayservice", "rayservice-sample"]);
        let pending = object["status"]["pendingServiceStatus"]["rayClusterName"]
            .as_str()?
            .to_string();
        (condition(&object, "UpgradeInProgress")["status"] == "True").then_some(pending)
    });
    assert_ne!(pending, first_cluster);
    let listed = env.ok(&["get", "raycluster"]);
    assert!(
        listed.contains(&first_cluster) && listed.contains(&pending),
        "both clusters listed: {listed}"
    );
    let pending_spec = clusters(&env)
        .into_iter()
        .find(|c| c["metadata"]["name"] == pending.as_str())
        .expect("pending");
    assert_eq!(
        pending_spec["spec"]["workerGroupSpecs"][0]["replicas"], 2,
        "the new cluster has the 2 workers of step 8.1"
    );
    eventually(
        Duration::from_secs(480),
        "traffic to move to the new cluster",
        || {
            let object = env.json(&["get", "rayservice", "rayservice-sample"]);
            (object["status"]["activeServiceStatus"]["rayClusterName"] == pending.as_str())
                .then_some(())
        },
    );
    eprintln!(
        "upgrade: traffic switched {:.1}s after apply",
        applied_at.elapsed().as_secs_f64()
    );
    let table = env.ok(&["get", "raycluster"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&pending))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        &row.split_whitespace().collect::<Vec<_>>()[1..4],
        &["2", "2", "ready"],
        "{table}"
    );

    // The old cluster stops after rayClusterDeletionDelaySeconds (15 s here).
    eventually(
        Duration::from_secs(120),
        "the old cluster to be removed",
        || (!env.ok(&["get", "raycluster"]).contains(&first_cluster)).then_some(()),
    );
    for pid in &first_pids {
        assert!(!alive(*pid), "old node {pid} still runs");
    }
    let (sent, failures, answers) = load.finish();
    eprintln!(
        "load: {sent} requests, answers {answers:?}, failures {}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(answers.keys().all(|a| a == "6" || a == "8"), "{answers:?}");
    assert!(answers.get("8").copied().unwrap_or(0) > 100, "{answers:?}");
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#).map(|(_, b)| b),
        Ok("8".into())
    );

    // upgradeStrategy None: the change is recorded, not rolled out, and the status says so.
    let none = with_ray_version(&two_workers, "2.101.0").replace(
        "spec:\n  rayClusterDeletionDelaySeconds",
        "spec:\n  upgradeStrategy:\n    type: None\n  rayClusterDeletionDelaySeconds",
    );
    std::fs::write(file, &none).expect("write");
    env.ok(&["apply", "-f", file]);
    let object = eventually(
        Duration::from_secs(30),
        "the skipped upgrade in the status",
        || {
            let object = env.json(&["get", "rayservice", "rayservice-sample"]);
            (condition(&object, "UpgradeInProgress")["reason"] == "UpgradeSkipped")
                .then_some(object)
        },
    );
    assert!(
        condition(&object, "UpgradeInProgress")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rayVersion")
    );
    assert_eq!(
        clusters(&env).len(),
        1,
        "no new cluster with upgradeStrategy None"
    );
}

#[test]
fn control_plane_killed_during_an_upgrade_resumes_it() {
    let env = Env::new();
    let base = example_text();
    let file = write_yaml(env.home.path(), "service.yaml", &base);
    let file = file.to_str().expect("utf-8");
    env.ok(&["apply", "-f", file, "--wait", "--timeout", READY_TIMEOUT]);
    let first_cluster = clusters(&env)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();

    std::fs::write(file, with_ray_version(&base, "2.100.0")).expect("write");
    env.ok(&["apply", "-f", file]);
    let kill_server = |env: &Env| {
        let server = env.server_pid().expect("server runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        eventually(Duration::from_secs(10), "the server to die", || {
            (!alive(server)).then_some(())
        });
    };
    // Killed right after the pending cluster was created ...
    let pending = eventually(Duration::from_secs(60), "a pending cluster", || {
        let object = env.json(&["get", "rayservice", "rayservice-sample"]);
        object["status"]["pendingServiceStatus"]["rayClusterName"]
            .as_str()
            .map(str::to_string)
    });
    kill_server(&env);
    assert_eq!(
        clusters(&env).len(),
        2,
        "restarted: one active and one pending, nothing more"
    );
    // ... and again while its applications deploy.
    eventually(
        Duration::from_secs(240),
        "the pending cluster's apps to be deploying",
        || {
            let object = env.json(&["get", "rayservice", "rayservice-sample"]);
            object["status"]["pendingServiceStatus"]["applicationStatuses"]
                .as_object()
                .filter(|a| !a.is_empty())
                .map(|_| ())
        },
    );
    kill_server(&env);
    let names: Vec<String> = clusters(&env)
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names.len(), 2, "never a second pending cluster: {names:?}");
    assert!(
        names.contains(&pending) && names.contains(&first_cluster),
        "{names:?}"
    );

    eventually(Duration::from_secs(480), "the upgrade to finish", || {
        let object = env.json(&["get", "rayservice", "rayservice-sample"]);
        (object["status"]["activeServiceStatus"]["rayClusterName"] == pending.as_str())
            .then_some(())
    });
    assert_eq!(
        env.post("/fruit/", r#"["MANGO", 2]"#).map(|(_, b)| b),
        Ok("6".into())
    );
    eventually(
        Duration::from_secs(120),
        "the old cluster to be removed",
        || (clusters(&env).len() == 1).then_some(()),
    );
    let describe = env.ok(&["describe", "rayservice", "rayservice-sample"]);
    for reason in ["ClusterCreated", "TrafficSwitched", "ClusterDeleted"] {
        assert!(
            describe.contains(reason),
            "event {reason} kept across restarts:\n{describe}"
        );
    }
}

/// The greeter service (head-only cluster), with a short deletion delay and the given changes.
fn greeter_text(ray_version: &str, import_path: &str, greeting: &str) -> String {
    let text = std::fs::read_to_string(repo().join("crates/cli/tests/fixtures/greeter.yaml"))
        .expect("fixture");
    let dir = repo().join("crates/cli/tests/fixtures/greeter");
    text.replace(
        "working_dir: ./greeter",
        &format!("working_dir: {}", dir.display()),
    )
    .replace(
        "spec:\n  serveConfigV2",
        "spec:\n  rayClusterDeletionDelaySeconds: 5\n  serveConfigV2",
    )
    .replace(
        "rayVersion: \"2.60.0\"",
        &format!("rayVersion: \"{ray_version}\""),
    )
    .replace(
        "import_path: greet.app",
        &format!("import_path: {import_path}"),
    )
    .replace("greeting: Bonjour", &format!("greeting: {greeting}"))
}

#[test]
fn a_bad_new_cluster_never_takes_traffic_and_a_newer_spec_replaces_it() {
    let env = Env::new();
    let file = write_yaml(
        env.home.path(),
        "greeter.yaml",
        &greeter_text("2.60.0", "greet.app", "Bonjour"),
    );
    let file = file.to_str().expect("utf-8");
    env.ok(&["apply", "-f", file, "--wait", "--timeout", READY_TIMEOUT]);
    let greet = |env: &Env| env.post("/hello/", "Ada").map(|(_, body)| body);
    assert_eq!(greet(&env), Ok("Bonjour, Ada!".into()));
    let active = |env: &Env| {
        env.json(&["get", "rayservice", "greeter"])["status"]["activeServiceStatus"]["rayClusterName"].as_str().map(str::to_string)
    };
    let first = active(&env).expect("active");

    // An upgrade whose applications fail on the new cluster: traffic stays, the status says why.
    std::fs::write(
        file,
        greeter_text("2.100.0", "greet.no_such_app", "Bonjour"),
    )
    .expect("write");
    env.ok(&["apply", "-f", file]);
    let object = eventually(
        Duration::from_secs(300),
        "the pending cluster's app to fail",
        || {
            let object = env.json(&["get", "rayservice", "greeter"]);
            (object["status"]["pendingServiceStatus"]["applicationStatuses"]["hello_app"]["status"]
                == "DEPLOY_FAILED")
                .then_some(object)
        },
    );
    let pending = object["status"]["pendingServiceStatus"]["rayClusterName"]
        .as_str()
        .expect("pending")
        .to_string();
    let message =
        object["status"]["pendingServiceStatus"]["applicationStatuses"]["hello_app"]["message"]
            .to_string();
    assert!(message.contains("no_such_app"), "{message}");
    assert_eq!(condition(&object, "UpgradeInProgress")["status"], "True");
    let why = condition(&object, "UpgradeInProgress")["message"].to_string();
    assert!(
        why.contains("DEPLOY_FAILED") && why.contains("no_such_app"),
        "the status says why: {why}"
    );
    assert_eq!(
        condition(&object, "Ready")["status"],
        "True",
        "the old cluster still serves"
    );
    assert_eq!(active(&env).as_deref(), Some(first.as_str()));
    assert_eq!(greet(&env), Ok("Bonjour, Ada!".into()));

    // A serve config fix during the upgrade goes to the pending cluster only, which then takes over.
    std::fs::write(file, greeter_text("2.100.0", "greet.app", "Salut")).expect("write");
    env.ok(&["apply", "-f", file]);
    eventually(
        Duration::from_secs(300),
        "the fixed pending cluster to take over",
        || (active(&env).as_deref() == Some(pending.as_str())).then_some(()),
    );
    assert_eq!(
        greet(&env),
        Ok("Salut, Ada!".into()),
        "the fix reached the new cluster"
    );
    let events = env.ok(&["describe", "rayservice", "greeter"]);
    assert!(
        !events.contains("PendingClusterReplaced"),
        "a serve config change does not replace the pending cluster"
    );

    // A cluster spec that changes again during an upgrade replaces the pending cluster.
    std::fs::write(file, greeter_text("2.200.0", "greet.no_such_app", "Salut")).expect("write");
    env.ok(&["apply", "-f", file]);
    let doomed = eventually(Duration::from_secs(120), "a new pending cluster", || {
        let object = env.json(&["get", "rayservice", "greeter"]);
        object["status"]["pendingServiceStatus"]["rayClusterName"]
            .as_str()
            .map(str::to_string)
    });
    std::fs::write(file, greeter_text("2.300.0", "greet.app", "Hej")).expect("write");
    env.ok(&["apply", "-f", file]);
    eventually(Duration::from_secs(300), "the newest spec to serve", || {
        (greet(&env) == Ok("Hej, Ada!".into())).then_some(())
    });
    let names: Vec<String> = clusters(&env)
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        !names.contains(&doomed),
        "the replaced pending cluster is gone: {names:?}"
    );
    assert!(
        env.ok(&["describe", "rayservice", "greeter"])
            .contains("PendingClusterReplaced")
    );
}
