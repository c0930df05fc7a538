//! `spec.suspend` of a RayService with real Ray, locally: suspending stops every process of the
//! RayService and says so in its conditions; resuming brings it back, serving.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::{Env, alive, eventually, repo, write_yaml};

/// greeter.yaml (a head-only cluster), with its working_dir made absolute so that the copy
/// can live anywhere, and `suspend` set as asked.
fn greeter(suspend: bool) -> String {
    let fixtures = repo().join("crates/cli/tests/fixtures");
    let text = std::fs::read_to_string(fixtures.join("greeter.yaml")).expect("greeter.yaml");
    let text = text.replace(
        "working_dir: ./greeter",
        &format!("working_dir: {}", fixtures.join("greeter").display()),
    );
    text.replacen("spec:\n", &format!("spec:\n  suspend: {suspend}\n"), 1)
}

fn condition(service: &Value, type_: &str) -> (String, String) {
    service["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

#[test]
fn suspend_stops_everything_and_resume_serves_again() {
    let env = Env::new();
    let file = write_yaml(env.home.path(), "greeter.yaml", &greeter(false));
    let file = file.to_str().expect("utf-8");
    env.ok(&["apply", "-f", file, "--wait", "--timeout", "8m"]);
    assert_eq!(
        env.post("/hello/", "Ada").map(|(_, b)| b),
        Ok("Bonjour, Ada!".into())
    );
    let pids = env.node_pids();
    assert!(!pids.is_empty());

    write_yaml(env.home.path(), "greeter.yaml", &greeter(true));
    let out = env.ok(&["apply", "-f", file]);
    assert!(
        out.contains("rayservice.ray.io/greeter configured"),
        "{out}"
    );
    eventually(
        Duration::from_secs(120),
        "the RayService to be suspended",
        || {
            let service = env.json(&["get", "rayservice", "greeter"]);
            (condition(&service, "Suspended") == ("True".into(), "SuspendComplete".into()))
                .then_some(())
        },
    );
    eventually(
        Duration::from_secs(60),
        "every node process to stop",
        || pids.iter().all(|pid| !alive(*pid)).then_some(()),
    );
    let service = env.json(&["get", "rayservice", "greeter"]);
    assert_eq!(
        service["status"]["serviceStatus"], "NotRunning",
        "{service}"
    );
    assert_eq!(
        condition(&service, "Ready"),
        ("False".into(), "SuspendComplete".into())
    );
    let clusters = env.json(&["get", "raycluster"]);
    assert_eq!(
        clusters["items"].as_array().map(Vec::len),
        Some(0),
        "{clusters}"
    );
    let (status, _) = env.post("/hello/", "Ada").expect("answer");
    assert_ne!(status, 200, "a suspended RayService serves nothing");
    let events = env.ok(&["describe", "rayservice", "greeter"]);
    assert!(events.contains("SuspendRequested"), "{events}");

    write_yaml(env.home.path(), "greeter.yaml", &greeter(false));
    env.ok(&["apply", "-f", file, "--wait", "--timeout", "8m"]);
    eventually(
        Duration::from_secs(240),
        "serving again after resume",
        || (env.post("/hello/", "Ada").map(|(_, b)| b) == Ok("Bonjour, Ada!".into())).then_some(()),
    );
    let service = env.json(&["get", "rayservice", "greeter"]);
    assert_eq!(
        condition(&service, "Suspended"),
        ("False".into(), "RayServiceResumed".into())
    );
}
