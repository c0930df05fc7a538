//! The RayService controller against a real API server (etcd, kube-apiserver and
//! kube-controller-manager from `scripts/k8s-control-plane.sh`), following the user's guide
//! with `kubectl`. Ray pods cannot run here (no kubelet, no images): `standin` plays the
//! kubelet and serves a stand-in Ray dashboard and Serve proxy on each head pod's IP.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use rayservice_api::{RayCluster, RayService};
use serde_json::Value;

mod common;
mod standin;

use common::{AbortOnDrop, ControlPlane, Operator, eventually, node_type, repo_root};
use standin::Kubelet;

const WAIT: Duration = Duration::from_secs(60);

fn guide_sample() -> anyhow::Result<String> {
    let path = repo_root().join("../shared/kuberay-samples/ray_v1alpha1_rayservice.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Replaces exactly one occurrence of `from`.
fn edit(yaml: &str, from: &str, to: &str) -> anyhow::Result<String> {
    ensure!(
        yaml.matches(from).count() == 1,
        "{from:?} is not unique in the sample"
    );
    Ok(yaml.replacen(from, to, 1))
}

/// The control plane with the CRDs installed, and an admin client.
async fn control_plane() -> anyhow::Result<(ControlPlane, Client)> {
    let cp = ControlPlane::start()?;
    let client = Client::try_from(cp.admin_config().await?)?;
    cp.install_crds(&client).await?;
    Ok((cp, client))
}

struct Kubectl<'a> {
    cp: &'a ControlPlane,
    dir: tempfile::TempDir,
}

impl Kubectl<'_> {
    /// `kubectl apply -f` of a file holding `yaml`.
    fn apply(&self, file: &str, yaml: &str) -> anyhow::Result<String> {
        let path: PathBuf = self.dir.path().join(file);
        std::fs::write(&path, yaml)?;
        self.cp
            .kubectl(&["apply", "-f", path.to_str().context("path")?])
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cp.kubectl(args)
    }
}

async fn clusters_of(api: &Api<RayCluster>, service: &str) -> anyhow::Result<Vec<RayCluster>> {
    let list = api
        .list(&ListParams::default().labels(&format!("ray.io/originated-from-cr-name={service}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect())
}

fn condition(service: &RayService, kind: &str) -> Option<(String, String, String)> {
    service
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn selector_cluster(svc: &Service) -> Option<String> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get("ray.io/cluster")
        .cloned()
}

/// The serve config of a RayService YAML, as the JSON the dashboard must receive.
fn expected_applications(yaml: &str) -> anyhow::Result<Value> {
    let doc: Value = serde_saphyr::from_str(yaml)?;
    let config = doc["spec"]["serveConfigV2"]
        .as_str()
        .context("serveConfigV2")?;
    Ok(serde_saphyr::from_str(config)?)
}

/// Every RayCluster name seen while the test runs, and the most that existed at once.
#[derive(Default)]
struct ClusterCensus {
    names: BTreeSet<String>,
    most_at_once: usize,
}

fn census(api: Api<RayCluster>) -> (Arc<Mutex<ClusterCensus>>, AbortOnDrop) {
    let seen: Arc<Mutex<ClusterCensus>> = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                let mut census = record.lock().unwrap_or_else(|p| p.into_inner());
                let live: Vec<String> = list
                    .items
                    .iter()
                    .filter(|c| c.metadata.deletion_timestamp.is_none())
                    .map(|c| c.name_any())
                    .collect();
                census.most_at_once = census.most_at_once.max(live.len());
                census.names.extend(live);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, AbortOnDrop(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_on_kubernetes_create_update_upgrade_restart_delete() -> anyhow::Result<()> {
    let (cp, client) = control_plane().await?;
    let kubelet = Kubelet::start(client.clone(), "default", [41, 0]);
    let mut operator = Operator::start(&client);
    let kubectl = Kubectl {
        cp: &cp,
        dir: tempfile::tempdir()?,
    };
    let rc_api: Api<RayCluster> = Api::namespaced(client.clone(), "default");
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let (seen, _census) = census(rc_api.clone());

    // Step 3: kubectl apply the guide's sample, unchanged.
    let sample = guide_sample()?;
    kubectl.apply("ray_v1alpha1_rayservice.yaml", &sample)?;

    // Step 4.2: one RayCluster rayservice-sample-raycluster-xxxxx.
    let first = eventually("the first RayCluster", WAIT, || async {
        let clusters = clusters_of(&rc_api, "rayservice-sample").await?;
        Ok((clusters.len() == 1).then(|| clusters[0].name_any()))
    })
    .await?;
    let suffix = first
        .strip_prefix("rayservice-sample-raycluster-")
        .context("cluster name")?;
    assert_eq!(suffix.len(), 5, "{first}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );

    // Step 4.3: one head and one worker, labelled as Ray nodes.
    eventually("1 head + 1 worker pod", WAIT, || async {
        let ray_pods = pods
            .list(&ListParams::default().labels("ray.io/is-ray-node=yes"))
            .await?
            .items;
        let heads = ray_pods.iter().filter(|p| node_type(p) == "head").count();
        let workers = ray_pods.iter().filter(|p| node_type(p) == "worker").count();
        Ok((heads == 1 && workers == 1).then_some(()))
    })
    .await?;

    // Step 5: Ready, with the applications running.
    eventually("RayService Ready", WAIT, || async {
        let service = rs_api.get("rayservice-sample").await?;
        let ready = condition(&service, "Ready").is_some_and(|(status, ..)| status == "True");
        Ok(ready.then_some(()))
    })
    .await?;
    let service = rs_api.get("rayservice-sample").await?;
    let status = service.status.clone().context("status")?;
    assert_eq!(status.service_status.as_deref(), Some("Running"));
    assert_eq!(
        status.active_service_status.ray_cluster_name.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(status.num_serve_endpoints, 1, "the head's proxy answers");
    let metrics = operator.metrics.encode();
    assert!(
        metrics.contains(r#"rayservice_operator_managed_objects{kind="RayService"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"rayservice_operator_reconciles_total{controller="rayservice",result="ok"}"#
        ),
        "{metrics}"
    );
    let cluster_status = rc_api
        .get(&first)
        .await?
        .status
        .context("RayCluster status")?;
    assert_eq!(cluster_status.state.as_deref(), Some("ready"));
    // The guide's requests: head 2 CPU / 2Gi, one worker 500m / 2Gi.
    assert_eq!(cluster_status.desired_cpu.as_deref(), Some("2500m"));
    assert_eq!(cluster_status.desired_memory.as_deref(), Some("4Gi"));

    // Step 4.4: the RayService's services point at the cluster.
    let serve_svc = svcs.get("rayservice-sample-serve-svc").await?;
    let head_svc = svcs.get("rayservice-sample-head-svc").await?;
    assert_eq!(
        selector_cluster(&serve_svc).as_deref(),
        Some(first.as_str())
    );
    assert_eq!(selector_cluster(&head_svc).as_deref(), Some(first.as_str()));
    let serve_ip = serve_svc.spec.as_ref().and_then(|s| s.cluster_ip.clone());
    assert!(serve_ip.is_some());
    let listed = kubectl.run(&["get", "services"])?;
    for name in [
        "rayservice-sample-head-svc",
        "rayservice-sample-serve-svc",
        &format!("{first}-head-svc"),
    ] {
        assert!(listed.contains(name), "{name} missing in:\n{listed}");
    }
    let head_pod = pods
        .list(
            &ListParams::default().labels(&format!("ray.io/cluster={first},ray.io/node-type=head")),
        )
        .await?
        .items;
    assert_eq!(head_pod.len(), 1);
    eventually("ray.io/serve=true on the head pod", WAIT, || async {
        let p = pods.get(&head_pod[0].name_any()).await?;
        Ok((p.labels().get("ray.io/serve").map(String::as_str) == Some("true")).then_some(()))
    })
    .await?;

    // Step 5.1: kubectl describe shows the applications and deployments.
    let described = kubectl.run(&["describe", "rayservices", "rayservice-sample"])?;
    for needle in ["fruit_app", "math_app", "RUNNING", "MangoStand", "HEALTHY"] {
        assert!(
            described.contains(needle),
            "{needle} missing in:\n{described}"
        );
    }
    let listed = kubectl.run(&["get", "rayservice"])?;
    eprintln!("kubectl get rayservice:\n{listed}");
    assert!(listed.contains("Running"), "{listed}");

    // The stand-in Ray received exactly the guide's applications, once.
    let puts = kubelet.puts(&first);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0], expected_applications(&sample)?);

    // Step 7: price 3 -> 4 is applied in place: one new PUT to the same cluster.
    let priced = edit(&sample, "price: 3", "price: 4")?;
    kubectl.apply("ray_v1alpha1_rayservice.yaml", &priced)?;
    eventually("the new price submitted", WAIT, || async {
        Ok((kubelet.puts(&first).len() == 2).then_some(()))
    })
    .await?;
    assert_eq!(kubelet.puts(&first)[1], expected_applications(&priced)?);
    eventually("Ready again after the update", WAIT, || async {
        let service = rs_api.get("rayservice-sample").await?;
        let status = service.status.clone().unwrap_or_default();
        let done = status.observed_generation == service.metadata.generation
            && condition(&service, "Ready").is_some_and(|(s, ..)| s == "True");
        Ok(done.then_some(()))
    })
    .await?;
    assert_eq!(clusters_of(&rc_api, "rayservice-sample").await?.len(), 1);

    // Step 8.1-8.3: worker replicas 1 -> 2: nothing rolls out, and the event says why.
    let with_delay = edit(
        &priced,
        "name: rayservice-sample\nspec:\n",
        "name: rayservice-sample\nspec:\n  rayClusterDeletionDelaySeconds: 5\n",
    )?;
    let scaled = edit(
        &with_delay,
        "      - replicas: 1\n",
        "      - replicas: 2\n",
    )?;
    kubectl.apply("ray_v1alpha1_rayservice.yaml", &scaled)?;
    eventually("the replicas change observed", WAIT, || async {
        let service = rs_api.get("rayservice-sample").await?;
        let status = service.status.clone().unwrap_or_default();
        Ok((status.observed_generation == service.metadata.generation).then_some(()))
    })
    .await?;
    let clusters = clusters_of(&rc_api, "rayservice-sample").await?;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0].name_any(), first);
    assert_eq!(clusters[0].spec.worker_group_specs[0].replicas, Some(1));
    let raycluster_listing = kubectl.run(&["get", "raycluster"])?;
    assert!(raycluster_listing.contains(&first), "{raycluster_listing}");
    let described = eventually("the NotRolledOut event", WAIT, || async {
        let text = kubectl.run(&["describe", "rayservices", "rayservice-sample"])?;
        Ok(text.contains("NotRolledOut").then_some(text))
    })
    .await?;
    assert!(described.contains("replicas"), "{described}");

    // Step 8.4-8.6: rayVersion changes: a pending cluster with 2 workers; traffic stays until
    // its applications run. The new cluster's stand-in holds them DEPLOYING for now.
    kubelet.hold_new.store(true, Ordering::SeqCst);
    let upgraded = edit(&scaled, "rayVersion: '2.6.3'", "rayVersion: '2.100.0'")?;
    kubectl.apply("ray_v1alpha1_rayservice.yaml", &upgraded)?;
    let second = eventually("the pending RayCluster", WAIT, || async {
        let service = rs_api.get("rayservice-sample").await?;
        let pending = service
            .status
            .unwrap_or_default()
            .pending_service_status
            .ray_cluster_name;
        Ok(pending.filter(|p| *p != first))
    })
    .await?;
    let pending_cluster = rc_api.get(&second).await?;
    assert_eq!(pending_cluster.spec.worker_group_specs[0].replicas, Some(2));
    eventually("the pending cluster's 3 pods and its PUT", WAIT, || async {
        let count = pods
            .list(&ListParams::default().labels(&format!("ray.io/cluster={second}")))
            .await?
            .items
            .len();
        Ok((count == 3 && kubelet.puts(&second).len() == 1).then_some(()))
    })
    .await?;
    let service = rs_api.get("rayservice-sample").await?;
    let (upgrading, ..) = condition(&service, "UpgradeInProgress").context("UpgradeInProgress")?;
    assert_eq!(upgrading, "True");
    assert_eq!(
        selector_cluster(&svcs.get("rayservice-sample-serve-svc").await?).as_deref(),
        Some(first.as_str()),
        "traffic must stay while the new cluster's apps deploy"
    );

    // The operator dies mid-upgrade and a new one takes over.
    drop(operator);
    operator = Operator::start(&client);
    // Let the new operator reconcile the held upgrade a while: it must not start another
    // pending cluster, and traffic must stay.
    eventually("the new operator sees the held upgrade", WAIT, || async {
        let service = rs_api.get("rayservice-sample").await?;
        let text = condition(&service, "UpgradeInProgress")
            .map(|(_, _, message)| message)
            .unwrap_or_default();
        Ok(text.contains("DEPLOYING").then_some(()))
    })
    .await?;
    assert_eq!(clusters_of(&rc_api, "rayservice-sample").await?.len(), 2);
    assert_eq!(
        selector_cluster(&svcs.get("rayservice-sample-serve-svc").await?).as_deref(),
        Some(first.as_str())
    );

    // The new cluster's apps run: traffic switches, the old cluster goes after the delay.
    kubelet.release(&second);
    eventually("services switched to the new cluster", WAIT, || async {
        let serve = selector_cluster(&svcs.get("rayservice-sample-serve-svc").await?);
        let head = selector_cluster(&svcs.get("rayservice-sample-head-svc").await?);
        Ok(
            (serve.as_deref() == Some(second.as_str()) && head.as_deref() == Some(second.as_str()))
                .then_some(()),
        )
    })
    .await?;
    let switched = svcs.get("rayservice-sample-serve-svc").await?;
    assert_eq!(
        switched.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        serve_ip,
        "the serve service keeps its ClusterIP"
    );
    eventually(
        "the old RayCluster deleted after the delay",
        WAIT,
        || async {
            let names: Vec<String> = clusters_of(&rc_api, "rayservice-sample")
                .await?
                .iter()
                .map(|c| c.name_any())
                .collect();
            Ok((names == vec![second.clone()]).then_some(()))
        },
    )
    .await?;
    let service = rs_api.get("rayservice-sample").await?;
    let status = service.status.clone().context("status")?;
    assert_eq!(
        status.active_service_status.ray_cluster_name.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(status.pending_service_status.ray_cluster_name, None);
    assert_eq!(kubelet.puts(&second).len(), 1, "one PUT to the new cluster");
    let described = kubectl.run(&["describe", "rayservices", "rayservice-sample"])?;
    eprintln!("kubectl describe after the upgrade:\n{described}");
    for reason in [
        "ClusterCreated",
        "ServeConfigSubmitted",
        "TrafficSwitched",
        "ClusterDeleted",
    ] {
        assert!(
            described.contains(reason),
            "{reason} missing in:\n{described}"
        );
    }
    {
        let census = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(
            census.names,
            BTreeSet::from([first.clone(), second.clone()]),
            "one pending cluster, never two"
        );
        assert!(census.most_at_once <= 2);
    }
    assert!(operator.running());

    // Step 9: kubectl delete -f removes everything the RayService created.
    kubectl.run(&[
        "delete",
        "-f",
        kubectl
            .dir
            .path()
            .join("ray_v1alpha1_rayservice.yaml")
            .to_str()
            .context("path")?,
    ])?;
    eventually("everything gone", WAIT, || async {
        let services = rs_api.list(&ListParams::default()).await?.items.len();
        let clusters = rc_api.list(&ListParams::default()).await?.items.len();
        let ray_pods = pods
            .list(&ListParams::default().labels("ray.io/is-ray-node=yes"))
            .await?
            .items
            .len();
        let ours = svcs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.name_any().starts_with("rayservice-sample"))
            .count();
        Ok((services + clusters + ray_pods + ours == 0).then_some(()))
    })
    .await?;
    drop(operator);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rayservice_is_reported_and_a_hung_cluster_is_replaced() -> anyhow::Result<()> {
    let (cp, client) = control_plane().await?;
    let kubelet = Kubelet::start(client.clone(), "default", [42, 0]);
    let operator = Operator::start(&client);
    let kubectl = Kubectl {
        cp: &cp,
        dir: tempfile::tempdir()?,
    };
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    let rc_api: Api<RayCluster> = Api::namespaced(client.clone(), "default");

    // The API server takes it (serveConfigV2 is a string), but two apps claim /fruit.
    let sample = guide_sample()?;
    let broken = edit(&sample, "name: rayservice-sample", "name: broken")?;
    let broken = edit(&broken, "route_prefix: /calc", "route_prefix: /fruit")?;
    kubectl.apply("broken.yaml", &broken)?;
    let good = edit(&sample, "name: rayservice-sample", "name: good")?;
    kubectl.apply("good.yaml", &good)?;

    let (_, reason, message) = eventually("Ready=False ValidationFailed", WAIT, || async {
        let service = rs_api.get("broken").await?;
        Ok(condition(&service, "Ready")
            .filter(|(status, reason, _)| status == "False" && reason == "ValidationFailed"))
    })
    .await?;
    assert_eq!(reason, "ValidationFailed");
    assert!(message.contains("serveConfigV2"), "{message}");
    assert!(message.contains("/fruit"), "{message}");
    eventually("the ValidationFailed event", WAIT, || async {
        let text = kubectl.run(&["describe", "rayservices", "broken"])?;
        Ok(text.contains("ValidationFailed").then_some(()))
    })
    .await?;

    eventually("the good RayService Ready", WAIT, || async {
        let service = rs_api.get("good").await?;
        Ok(condition(&service, "Ready")
            .filter(|(status, ..)| status == "True")
            .map(|_| ()))
    })
    .await?;
    assert!(
        clusters_of(&rc_api, "broken").await?.is_empty(),
        "nothing is created for it"
    );
    assert!(operator.running(), "the operator keeps running");

    // The good one's head hangs (its dashboard stops answering) beyond
    // deploymentUnhealthySecondThreshold: a new cluster takes over, the old one goes.
    let impatient = edit(
        &good,
        "deploymentUnhealthySecondThreshold: 300",
        "deploymentUnhealthySecondThreshold: 2",
    )?;
    let impatient = edit(
        &impatient,
        "name: good\nspec:\n",
        "name: good\nspec:\n  rayClusterDeletionDelaySeconds: 1\n",
    )?;
    kubectl.apply("good.yaml", &impatient)?;
    let hung = clusters_of(&rc_api, "good").await?;
    ensure!(hung.len() == 1, "one cluster before the hang");
    let hung = hung[0].name_any();
    eventually("the threshold change observed", WAIT, || async {
        let service = rs_api.get("good").await?;
        let status = service.status.clone().unwrap_or_default();
        Ok((status.observed_generation == service.metadata.generation).then_some(()))
    })
    .await?;
    kubelet.stop_ray(&hung);
    let replacement = eventually("a healthy replacement serves", WAIT, || async {
        let service = rs_api.get("good").await?;
        let status = service.status.clone().unwrap_or_default();
        let active = status.active_service_status.ray_cluster_name;
        let ready = condition(&service, "Ready").is_some_and(|(s, ..)| s == "True");
        Ok(active.filter(|a| *a != hung && ready))
    })
    .await?;
    eventually("the hung cluster deleted", WAIT, || async {
        let names: Vec<String> = clusters_of(&rc_api, "good")
            .await?
            .iter()
            .map(|c| c.name_any())
            .collect();
        Ok((names == vec![replacement.clone()]).then_some(()))
    })
    .await?;
    let described = kubectl.run(&["describe", "rayservices", "good"])?;
    assert!(described.contains("ClusterUnhealthy"), "{described}");
    assert!(
        described.contains("deploymentUnhealthySecondThreshold"),
        "{described}"
    );

    // Fixing the file brings it up.
    let fixed = edit(&sample, "name: rayservice-sample", "name: broken")?;
    kubectl.apply("broken.yaml", &fixed)?;
    eventually("the fixed RayService Ready", WAIT, || async {
        let service = rs_api.get("broken").await?;
        Ok(condition(&service, "Ready")
            .filter(|(status, ..)| status == "True")
            .map(|_| ()))
    })
    .await?;
    Ok(())
}
