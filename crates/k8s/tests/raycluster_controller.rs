//! The RayCluster controller against a real API server (etcd + kube-apiserver +
//! kube-controller-manager from `scripts/k8s-control-plane.sh`; no kubelet, so the test plays
//! the kubelet by patching pod status).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rayservice_api::{RayCluster, RayClusterSpec};
use serde_json::json;

mod common;

use common::{AbortOnDrop, ControlPlane, eventually, node_type};

fn worker_group(replicas: i32, workers_to_delete: &[String]) -> serde_json::Value {
    json!({
        "replicas": replicas,
        "minReplicas": 1,
        "maxReplicas": 5,
        "groupName": "small-group",
        "rayStartParams": {},
        "scaleStrategy": {"workersToDelete": workers_to_delete},
        "template": {"spec": {"containers": [{
            "name": "ray-worker",
            "image": "rayproject/ray:2.52.0",
            "resources": {
                "limits": {"cpu": "1", "memory": "2Gi"},
                "requests": {"cpu": "500m", "memory": "2Gi"}
            }
        }]}}
    })
}

/// The rayClusterConfig of /work/shared/kuberay-samples/ray-service.sample.yaml.
fn sample_spec() -> anyhow::Result<RayClusterSpec> {
    Ok(serde_json::from_value(json!({
        "rayVersion": "2.52.0",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [{
                "name": "ray-head",
                "image": "rayproject/ray:2.52.0",
                "resources": {
                    "limits": {"cpu": "2", "memory": "5Gi"},
                    "requests": {"cpu": "2", "memory": "2Gi"}
                }
            }]}}
        },
        "workerGroupSpecs": [worker_group(1, &[])]
    }))?)
}

async fn ray_pods(pods: &Api<Pod>, cluster: &str) -> anyhow::Result<Vec<Pod>> {
    let lp =
        ListParams::default().labels(&format!("ray.io/cluster={cluster},ray.io/is-ray-node=yes"));
    Ok(pods.list(&lp).await?.items)
}

fn worker_names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| node_type(p) == "worker")
        .map(|p| p.name_any())
        .collect()
}

async fn play_kubelet(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.2",
        "podIPs": [{"ip": "127.0.0.2"}],
        "conditions": [{"type": "Ready", "status": "True"}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raycluster_controller_against_real_apiserver() -> anyhow::Result<()> {
    let cp = ControlPlane::start()?;
    let client = Client::try_from(cp.admin_config().await?)?;
    cp.install_crds(&client).await?;

    let metrics = rayservice_k8s::operate::Metrics::new();
    let _controller = AbortOnDrop(tokio::spawn(rayservice_k8s::run(
        client.clone(),
        metrics.clone(),
    )));

    let rc_api: Api<RayCluster> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let name = "sample";
    let mut rc = RayCluster::new(name, sample_spec()?);
    rc.metadata.namespace = Some("default".to_string());
    rc_api.create(&PostParams::default(), &rc).await?;

    // One head and one worker.
    let initial = eventually("1 head + 1 worker", Duration::from_secs(30), || async {
        let ps = ray_pods(&pods, name).await?;
        let heads = ps.iter().filter(|p| node_type(p) == "head").count();
        let workers = ps.iter().filter(|p| node_type(p) == "worker").count();
        Ok((heads == 1 && workers == 1).then_some(ps))
    })
    .await?;
    for p in &initial {
        let labels = p.labels();
        assert_eq!(labels["ray.io/cluster"], name);
        assert_eq!(labels["ray.io/is-ray-node"], "yes");
        let owner = &p.owner_references()[0];
        assert_eq!(owner.kind, "RayCluster");
        assert_eq!(owner.controller, Some(true));
        let c = &p.spec.as_ref().context("pod spec")?.containers[0];
        // argv, no shell anywhere.
        assert_eq!(c.command.as_deref(), Some(&["ray".to_string()][..]));
        let args = c.args.clone().context("args")?;
        assert_eq!(args[0], "start");
        for a in &args {
            assert!(a.starts_with("--") || a == "start", "unexpected arg {a:?}");
        }
        for forbidden in ["sh", "bash", "-c", "/bin/sh", "/bin/bash"] {
            assert!(!args.iter().any(|a| a == forbidden));
        }
        if node_type(p) == "head" {
            assert!(p.name_any().starts_with("sample-head-"));
            assert!(args.contains(&"--head".to_string()));
            assert!(args.contains(&"--num-cpus=2".to_string()));
            assert!(args.contains(&"--memory=5368709120".to_string()));
        } else {
            assert!(p.name_any().starts_with("sample-worker-small-group-"));
            assert!(
                args.contains(
                    &"--address=sample-head-svc.default.svc.cluster.local:6379".to_string()
                )
            );
            assert!(args.contains(&"--num-cpus=1".to_string()));
        }
    }

    // The head service.
    let svc = eventually("head service", Duration::from_secs(30), || async {
        Ok(svcs.get_opt("sample-head-svc").await?)
    })
    .await?;
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .context("selector")?;
    assert_eq!(sel.len(), 2);
    assert_eq!(sel["ray.io/cluster"], name);
    assert_eq!(sel["ray.io/node-type"], "head");
    let port_names: BTreeSet<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert!(port_names.contains("gcs-server") && port_names.contains("dashboard"));

    // Scale up to 2.
    let merge = |replicas: i32, del: Vec<String>| json!({"spec": {"workerGroupSpecs": [worker_group(replicas, &del)]}});
    rc_api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&merge(2, vec![])),
        )
        .await?;
    let two = eventually("2 workers", Duration::from_secs(30), || async {
        let w = worker_names(&ray_pods(&pods, name).await?);
        Ok((w.len() == 2).then_some(w))
    })
    .await?;

    // Scale down to 1 naming the worker to delete.
    let mut it = two.iter();
    let victim = it.next().context("victim")?.clone();
    let survivor = it.next().context("survivor")?.clone();
    rc_api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&merge(1, vec![victim.clone()])),
        )
        .await?;
    let want = BTreeSet::from([survivor.clone()]);
    eventually(
        "exactly the named worker deleted",
        Duration::from_secs(30),
        || async {
            let w = worker_names(&ray_pods(&pods, name).await?);
            Ok((w == want).then_some(()))
        },
    )
    .await?;

    // A deleted head pod is replaced by a new one.
    let old_head = ray_pods(&pods, name)
        .await?
        .into_iter()
        .find(|p| node_type(p) == "head")
        .context("head pod")?
        .name_any();
    pods.delete(&old_head, &Default::default()).await?;
    let head = eventually("a new head pod", Duration::from_secs(30), || async {
        let heads: Vec<String> = ray_pods(&pods, name)
            .await?
            .into_iter()
            .filter(|p| node_type(p) == "head")
            .map(|p| p.name_any())
            .collect();
        Ok((heads.len() == 1 && heads[0] != old_head).then(|| heads[0].clone()))
    })
    .await?;

    // Play the kubelet: the head and the surviving worker are running and ready.
    play_kubelet(&pods, &head).await?;
    play_kubelet(&pods, &survivor).await?;
    let status = eventually("status ready", Duration::from_secs(30), || async {
        let st = rc_api.get_status(name).await?.status;
        Ok(st.filter(|s| s.state.as_deref() == Some("ready")))
    })
    .await?;
    assert_eq!(status.desired_worker_replicas, 1);
    assert_eq!(status.available_worker_replicas, 1);
    assert_eq!(status.ready_worker_replicas, 1);
    let head_info = status.head.context("status.head")?;
    assert_eq!(head_info.pod_ip.as_deref(), Some("127.0.0.2"));
    assert_eq!(head_info.pod_name.as_deref(), Some(head.as_str()));
    assert!(
        head_info
            .service_ip
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    assert!(status.observed_generation.is_some());
    assert_eq!(
        status.endpoints.get("dashboard").map(String::as_str),
        Some("8265")
    );

    // Delete the RayCluster: garbage collection removes pods and the service.
    rc_api.delete(name, &Default::default()).await?;
    eventually(
        "pods and service collected",
        Duration::from_secs(90),
        || async {
            let left = ray_pods(&pods, name).await?.len();
            let svc = svcs.get_opt("sample-head-svc").await?;
            Ok((left == 0 && svc.is_none()).then_some(()))
        },
    )
    .await?;

    // Every reconcile was counted.
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"rayservice_operator_reconciles_total{controller="raycluster",result="ok"}"#
        ),
        "{text}"
    );
    Ok(())
}
