//! Against a real kube-apiserver (built by scripts/k8s-control-plane.sh): our generated CRDs
//! install, and every KubeRay sample is accepted unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ControlPlane, eventually, repo};

fn samples() -> Vec<PathBuf> {
    let dir = repo().join("../shared/kuberay-samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("../shared/kuberay-samples")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn generated_crds_install_and_accept_every_kuberay_sample() {
    let plane = ControlPlane::start();
    let crds = repo().join("deploy/crds/ray.io_crds.yaml");
    // Server-side apply: the CRDs are too large for the last-applied annotation of client-side apply.
    plane.ok(&["apply", "--server-side", "-f", path(&crds)]);
    for crd in ["rayservices.ray.io", "rayclusters.ray.io"] {
        eventually(Duration::from_secs(60), "the CRD to be established", || {
            let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
            let output = plane.kubectl(&["get", "crd", crd, "-o", jsonpath]);
            (String::from_utf8_lossy(&output.stdout) == "True").then_some(())
        });
    }

    let files = samples();
    assert!(files.len() >= 4, "{files:?}");
    for (index, file) in files.iter().enumerate() {
        let namespace = format!("sample-{index}");
        plane.ok(&["create", "namespace", &namespace]);
        // Pods (the HA sample has one) need the namespace's default service account first.
        eventually(
            Duration::from_secs(60),
            "the default service account",
            || {
                plane
                    .kubectl(&["get", "serviceaccount", "default", "-n", &namespace])
                    .status
                    .success()
                    .then_some(())
            },
        );
        let out = plane.ok(&["apply", "-n", &namespace, "-f", path(file)]);
        assert!(
            out.contains("rayservice.ray.io/"),
            "{}: {out}",
            file.display()
        );
    }

    // Stored as v1, readable as v1alpha1, fields kept (nothing pruned).
    let listed = plane.ok(&["get", "rayservices.v1.ray.io", "-A", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), files.len());
    for item in items {
        assert_eq!(item["apiVersion"], "ray.io/v1");
        let text = item["spec"]["serveConfigV2"]
            .as_str()
            .expect("serveConfigV2 kept");
        assert!(text.contains("fruit_app"), "{text}");
        let head =
            &item["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0];
        assert!(head["resources"]["limits"]["memory"].is_string(), "{head}");
        assert!(item["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"].is_number());
    }
    let ha = items
        .iter()
        .find(|i| i["metadata"]["name"] == "rayservice-ha")
        .expect("the HA sample");
    assert_eq!(
        ha["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]
            ["key"],
        "password"
    );
    let alpha = plane.ok(&["get", "rayservices.v1alpha1.ray.io", "-A", "-o", "name"]);
    assert_eq!(alpha.lines().count(), files.len(), "{alpha}");
    let v1alpha1_sample = items
        .iter()
        .find(|i| i["spec"]["serviceUnhealthySecondThreshold"] == 900)
        .expect("the v1alpha1 sample, converted");
    assert_eq!(
        v1alpha1_sample["spec"]["rayClusterConfig"]["rayVersion"],
        "2.6.3"
    );

    // The printer columns of `kubectl get`.
    let table = plane.ok(&["get", "rayservice", "-A"]);
    assert!(
        table.contains("SERVICE STATUS") && table.contains("NUM SERVE ENDPOINTS"),
        "{table}"
    );

    // A RayService that breaks the schema is refused by the API server itself.
    let bad = "apiVersion: ray.io/v1\nkind: RayService\nmetadata: {name: bad}\nspec:\n  rayClusterConfig:\n    workerGroupSpecs:\n    - groupName: g\n      replicas: many\n";
    let file = plane.dir.path().join("bad.yaml");
    std::fs::write(&file, bad).expect("write");
    let refused = plane.kubectl(&["apply", "-f", path(&file)]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("replicas"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    eventually(
        Duration::from_secs(5),
        "the apiserver to stay ready",
        || {
            Command::new("bash")
                .arg(repo().join("scripts/k8s-control-plane.sh"))
                .arg("status")
                .arg(plane.dir.path())
                .status()
                .ok()
                .filter(|s| s.success())
        },
    );
}
