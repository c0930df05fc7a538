//! A RayCluster applied on its own, locally, with KubeRay's own first sample unchanged
//! (`tests/kuberay-v1.7.0/ray-cluster.sample.yaml`): its head and worker run as processes, the
//! listings show it, a Ray job submitted through the dashboard front endpoint (by
//! `Host: NAME-head-svc`) runs on it and answers, and `delete -f` stops it.

use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::{Env, alive, eventually, repo, send, write_yaml};

/// A request to the dashboard front endpoint for this cluster, by its head service name.
fn request(
    method: reqwest::Method,
    port: u16,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String), String> {
    let body = body.map(|b| b.to_string());
    send(
        method,
        port,
        path,
        body.as_deref(),
        Some("raycluster-kuberay-head-svc"),
    )
}

#[test]
fn kuberays_ray_cluster_sample_runs_locally_and_takes_a_job() {
    let env = Env::new();
    let sample = repo().join("tests/kuberay-v1.7.0/ray-cluster.sample.yaml");
    let sample = sample.to_str().expect("utf-8");

    let diff = env.ok(&["diff", "-f", sample]);
    assert!(
        diff.contains("raycluster.ray.io/raycluster-kuberay: create"),
        "{diff}"
    );
    let applied = env.ok(&["apply", "-f", sample]);
    assert!(
        applied.contains("raycluster.ray.io/raycluster-kuberay created"),
        "{applied}"
    );

    // Head and worker run, and the listing says ready, as `kubectl get raycluster` would.
    eventually(
        Duration::from_secs(240),
        "the RayCluster to be ready",
        || {
            let clusters = env.json(&["get", "raycluster"]);
            let cluster = clusters["items"]
                .as_array()?
                .iter()
                .find(|c| c["metadata"]["name"] == "raycluster-kuberay")?
                .clone();
            (cluster["status"]["state"] == "ready"
                && cluster["status"]["availableWorkerReplicas"] == 1)
                .then_some(())
        },
    );
    let table = env.ok(&["get", "raycluster"]);
    assert!(table.contains("raycluster-kuberay"), "{table}");
    let pods = env.ok(&["get", "pods", "-l", "ray.io/cluster=raycluster-kuberay"]);
    assert!(
        pods.contains("raycluster-kuberay-head-")
            && pods.contains("raycluster-kuberay-worker-workergroup-"),
        "{pods}"
    );
    // `logs` shows a node's output as `kubectl logs` would.
    let head = env.json(&["get", "pods"])["items"]
        .as_array()
        .and_then(|pods| {
            pods.iter()
                .find(|p| p["nodeType"] == "head" || p["node_type"] == "head")
                .and_then(|p| p["name"].as_str().map(str::to_string))
        })
        .expect("head pod");
    let all = env.ok(&["logs", &head]);
    assert!(all.contains("Local node IP"), "{all}");
    let last = env.ok(&["logs", &head, "--tail", "2"]);
    assert!(last.lines().count() <= 2 && all.ends_with(&last), "{last}");
    let described = env.ok(&["describe", "raycluster", "raycluster-kuberay"]);
    assert!(described.contains("raycluster-kuberay"), "{described}");

    // A job through the dashboard front endpoint, as `ray job submit --address
    // http://raycluster-kuberay-head-svc:8265` would send it.
    // The job waits (bounded) for the worker to have joined: a worker process that runs may
    // not have registered with the GCS yet.
    let entrypoint = "python -c \"import ray, time; ray.init(); \
        [time.sleep(0.5) for _ in range(120) if ray.cluster_resources().get('CPU', 0) < 2]; \
        print('cpus', int(ray.cluster_resources()['CPU']))\"";
    let (status, body) = request(
        reqwest::Method::POST,
        env.dashboard_port,
        "/api/jobs/",
        Some(json!({"entrypoint": entrypoint})),
    )
    .expect("submit");
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["submission_id"]
        .as_str()
        .expect("submission id")
        .to_string();
    eventually(Duration::from_secs(180), "the job to succeed", || {
        let (_, body) = request(
            reqwest::Method::GET,
            env.dashboard_port,
            &format!("/api/jobs/{id}"),
            None,
        )
        .ok()?;
        let job: Value = serde_json::from_str(&body).ok()?;
        assert_ne!(job["status"], "FAILED", "{body}");
        (job["status"] == "SUCCEEDED").then_some(())
    });
    let (_, logs) = request(
        reqwest::Method::GET,
        env.dashboard_port,
        &format!("/api/jobs/{id}/logs"),
        None,
    )
    .expect("logs");
    // Head and worker announce one CPU each (their cpu limits).
    assert!(logs.contains("cpus 2"), "{logs}");

    // Scaling: 3 replicas start two more workers; back to 2 with one named in
    // workersToDelete stops that one (event DeletedWorkerPod), as KubeRay deletes the pod.
    let text = std::fs::read_to_string(sample).expect("sample");
    assert!(text.contains("  - replicas: 1\n"), "sample layout changed");
    let scaled = write_yaml(
        env.home.path(),
        "scaled.yaml",
        &text.replace("  - replicas: 1\n", "  - replicas: 3\n"),
    );
    let scaled = scaled.to_str().expect("utf-8");
    env.ok(&["apply", "-f", scaled]);
    let workers = |env: &Env| -> Vec<String> {
        env.json(&["get", "pods"])["items"]
            .as_array()
            .map(|pods| {
                pods.iter()
                    .filter(|p| p["phase"] == "Running")
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .filter(|name| name.contains("-worker-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let three = eventually(Duration::from_secs(180), "three workers", || {
        let names = workers(&env);
        (names.len() == 3).then_some(names)
    });
    let victim = three[1].clone();
    std::fs::write(
        scaled,
        text.replace(
            "  - replicas: 1\n",
            &format!("  - replicas: 2\n    scaleStrategy:\n      workersToDelete: [{victim}]\n"),
        ),
    )
    .expect("write");
    env.ok(&["apply", "-f", scaled]);
    let two = eventually(Duration::from_secs(60), "the named worker to go", || {
        let names = workers(&env);
        (names.len() == 2).then_some(names)
    });
    assert!(!two.contains(&victim), "{victim} was named: {two:?}");
    let described = env.ok(&["describe", "raycluster", "raycluster-kuberay"]);
    assert!(described.contains("DeletedWorkerPod"), "{described}");

    // delete -f stops every process of it.
    let pids = env.node_pids();
    assert!(!pids.is_empty());
    let deleted = env.ok(&["delete", "-f", sample]);
    assert!(
        deleted.contains("raycluster.ray.io \"raycluster-kuberay\" deleted"),
        "{deleted}"
    );
    eventually(Duration::from_secs(60), "its processes to stop", || {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    });
    let clusters = env.json(&["get", "raycluster"]);
    assert_eq!(
        clusters["items"].as_array().map(Vec::len),
        Some(0),
        "{clusters}"
    );
}
