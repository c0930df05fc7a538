//! The operator's RBAC (`deploy/manifests/operator.yaml`: the ClusterRole, and the Role for its
//! leader-election Lease) is enough, and no more than asked for: leader election and the
//! RayCluster controller run against a real API server (etcd + kube-apiserver +
//! kube-controller-manager from `scripts/k8s-control-plane.sh`, with the Gateway API's CRDs)
//! authenticated only with a token of the `rayservice-operator` service account.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::config::AuthInfo;
use rayservice_api::{RayCluster, RayClusterSpec, RayService};
use rayservice_k8s::operate::{LeaderElector, OperateError};
use serde_json::json;

mod common;
mod standin;

use common::{AbortOnDrop, ControlPlane, eventually, node_type, repo_root};

const OPERATOR_NS: &str = "rayservice-system";
const OPERATOR_SA: &str = "rayservice-operator";
const TEST_NS: &str = "rbac-test";
const WAIT: Duration = Duration::from_secs(60);

impl ControlPlane {
    /// `kubectl auth can-i` as the operator's service account: exits 0 with "yes" or 1 with "no".
    fn operator_can(&self, verb: &str, resource: &str, namespace: &str) -> anyhow::Result<bool> {
        let user = format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}");
        // "pods/status" would mean the pod named "status": subresources go in a flag.
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, format!("--subresource={s}")),
            None => (resource, "--subresource=".to_string()),
        };
        let (_, stdout, stderr) = self.kubectl_raw(&[
            "auth",
            "can-i",
            "--as",
            &user,
            "-n",
            namespace,
            &subresource,
            verb,
            resource,
        ])?;
        match stdout.trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => bail!("kubectl auth can-i {verb} {resource}: {other:?} {stderr}"),
        }
    }
}

fn spec() -> anyhow::Result<RayClusterSpec> {
    let container = |name: &str, cpu: &str| {
        json!({
            "name": name,
            "image": "rayproject/ray:2.52.0",
            "resources": {
                "limits": {"cpu": cpu, "memory": "2Gi"},
                "requests": {"cpu": cpu, "memory": "2Gi"}
            }
        })
    };
    Ok(serde_json::from_value(json!({
        "rayVersion": "2.52.0",
        "headGroupSpec": {
            "rayStartParams": {},
            "template": {"spec": {"containers": [container("ray-head", "1")]}}
        },
        "workerGroupSpecs": [{
            "replicas": 1,
            "minReplicas": 1,
            "maxReplicas": 5,
            "groupName": "small-group",
            "rayStartParams": {},
            "template": {"spec": {"containers": [container("ray-worker", "1")]}}
        }]
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_clusterrole_is_minimal_and_sufficient() -> anyhow::Result<()> {
    let cp = ControlPlane::start()?;
    let admin_config = cp.admin_config().await?;
    let admin = Client::try_from(admin_config.clone())?;
    cp.install_crds(&admin).await?;
    cp.install_gateway_api(&admin).await?;

    // The operator manifest. The Deployment stays Pending (no kubelet, no scheduler).
    let manifest = repo_root().join("deploy/manifests/operator.yaml");
    cp.kubectl(&["apply", "-f", manifest.to_str().context("manifest path")?])?;
    let sa_api: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NS);
    eventually(
        "the operator's service account",
        Duration::from_secs(60),
        || async { Ok(sa_api.get_opt(OPERATOR_SA).await?.map(|_| ())) },
    )
    .await?;
    cp.kubectl(&["create", "namespace", TEST_NS])?;

    // What the ClusterRole grants, and what it does not.
    for (verb, resource) in [
        ("create", "pods"),
        ("delete", "pods"),
        ("watch", "pods"),
        ("patch", "services"),
        ("delete", "services"),
        ("watch", "rayservices.ray.io"),
        ("update", "rayservices.ray.io"),
        ("create", "rayclusters.ray.io"),
        ("delete", "rayclusters.ray.io"),
        ("patch", "rayclusters.ray.io/status"),
        ("patch", "rayservices.ray.io/status"),
        ("update", "rayservices.ray.io/finalizers"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("get", "gateways.gateway.networking.k8s.io"),
        ("create", "gateways.gateway.networking.k8s.io"),
        ("patch", "gateways.gateway.networking.k8s.io"),
        ("delete", "gateways.gateway.networking.k8s.io"),
        ("get", "httproutes.gateway.networking.k8s.io"),
        ("create", "httproutes.gateway.networking.k8s.io"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("delete", "httproutes.gateway.networking.k8s.io"),
    ] {
        ensure!(
            cp.operator_can(verb, resource, TEST_NS)?,
            "the operator cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "configmaps"),
        ("update", "pods"),
        ("update", "services"),
        ("create", "rayservices.ray.io"),
        ("delete", "rayservices.ray.io"),
        ("patch", "pods/status"),
        ("create", "pods/exec"),
        ("create", "deployments.apps"),
        ("list", "nodes"),
        ("get", "leases.coordination.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("list", "gateways.gateway.networking.k8s.io"),
        ("watch", "httproutes.gateway.networking.k8s.io"),
        ("update", "httproutes.gateway.networking.k8s.io"),
        ("patch", "httproutes.gateway.networking.k8s.io/status"),
        ("get", "gatewayclasses.gateway.networking.k8s.io"),
        ("create", "referencegrants.gateway.networking.k8s.io"),
    ] {
        ensure!(
            !cp.operator_can(verb, resource, TEST_NS)?,
            "the operator can {verb} {resource}, more than it needs"
        );
    }
    // Leases: in the operator's own namespace only, and never deleted.
    for verb in ["get", "create", "update"] {
        ensure!(
            cp.operator_can(verb, "leases.coordination.k8s.io", OPERATOR_NS)?,
            "the operator cannot {verb} leases in {OPERATOR_NS}"
        );
    }
    for verb in ["delete", "list", "watch"] {
        ensure!(
            !cp.operator_can(verb, "leases.coordination.k8s.io", OPERATOR_NS)?,
            "the operator can {verb} leases in {OPERATOR_NS}, more than it needs"
        );
    }

    // A client that authenticates with the service account's token only.
    let token = cp
        .kubectl(&[
            "create",
            "token",
            OPERATOR_SA,
            "-n",
            OPERATOR_NS,
            "--duration=1h",
        ])?
        .trim()
        .to_string();
    ensure!(!token.is_empty(), "empty service account token");
    let mut op_config = admin_config;
    op_config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let operator = Client::try_from(op_config)?;

    // The token is really limited: secrets are forbidden, pods are allowed.
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), "default");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => bail!("listing secrets as the operator: expected 403, got {other:?}"),
    }
    let all_pods: Api<Pod> = Api::all(operator.clone());
    all_pods.list(&ListParams::default()).await?;

    // Leader election with the operator's token: acquire, renew once, release.
    let elector = LeaderElector::new(operator.clone(), OPERATOR_NS, "rbac-lease", "rbac-test")
        .with_timing(Duration::from_secs(15), Duration::from_millis(200));
    elector.acquire().await?;
    match tokio::time::timeout(Duration::from_secs(1), elector.hold()).await {
        Err(_) => {} // still holding after several renewals
        Ok(lost) => bail!("the operator lost its lease: {lost}"),
    }
    elector.release().await?;
    // Elsewhere, the lease is forbidden: acquire fails at once instead of retrying.
    let outside = LeaderElector::new(operator.clone(), TEST_NS, "rbac-lease", "rbac-test");
    match tokio::time::timeout(Duration::from_secs(30), outside.acquire()).await? {
        Err(OperateError::Kube(kube::Error::Api(e))) if e.code == 403 => {}
        other => bail!("a lease outside {OPERATOR_NS}: expected 403, got {other:?}"),
    }

    // The controller with the operator's client; the RayCluster is created by the admin.
    let _controller = AbortOnDrop(tokio::spawn(rayservice_k8s::raycluster::run(
        operator.clone(),
        rayservice_k8s::operate::Metrics::new(),
    )));
    let name = "rbac";
    let rc_api: Api<RayCluster> = Api::namespaced(admin.clone(), TEST_NS);
    let mut rc = RayCluster::new(name, spec()?);
    rc.metadata.namespace = Some(TEST_NS.to_string());
    rc_api.create(&PostParams::default(), &rc).await?;

    let pods: Api<Pod> = Api::namespaced(admin.clone(), TEST_NS);
    let svcs: Api<Service> = Api::namespaced(admin.clone(), TEST_NS);
    eventually("1 head + 1 worker pod", Duration::from_secs(30), || async {
        let lp = ListParams::default().labels(&format!("ray.io/cluster={name}"));
        let ps = pods.list(&lp).await?.items;
        let heads = ps.iter().filter(|p| node_type(p) == "head").count();
        let workers = ps.iter().filter(|p| node_type(p) == "worker").count();
        Ok((heads == 1 && workers == 1).then_some(()))
    })
    .await?;
    eventually("head service", Duration::from_secs(30), || async {
        Ok(svcs.get_opt(&format!("{name}-head-svc")).await?)
    })
    .await?;
    let status = eventually("status written", Duration::from_secs(30), || async {
        Ok(rc_api.get_status(name).await?.status)
    })
    .await?;
    assert_eq!(status.desired_worker_replicas, 1);
    assert!(status.observed_generation.is_some());

    // Written by the operator's identity: the field manager of the status.
    let managers: Vec<String> = rc_api
        .get(name)
        .await?
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == rayservice_k8s::FIELD_MANAGER),
        "status managers: {managers:?}"
    );

    // The RayService controller with the operator's token: the guide's sample becomes Ready
    // (RayCluster, services, pod labels, status, events), and deleting it removes everything
    // (finalizer). The test plays the kubelet and Ray (see `standin`).
    let _kubelet = standin::Kubelet::start(admin.clone(), TEST_NS, [43, 0]);
    let _rayservices = AbortOnDrop(tokio::spawn({
        let operator = operator.clone();
        async move {
            let metrics = rayservice_k8s::operate::Metrics::new();
            if let Err(error) = rayservice_k8s::rayservice::run(operator, metrics).await {
                eprintln!("rayservice controller: {error}");
            }
        }
    }));
    let sample = repo_root().join("../shared/kuberay-samples/ray_v1alpha1_rayservice.yaml");
    cp.kubectl(&[
        "apply",
        "-n",
        TEST_NS,
        "-f",
        sample.to_str().context("sample path")?,
    ])?;
    let rs_api: Api<RayService> = Api::namespaced(admin.clone(), TEST_NS);
    eventually("the RayService Ready", Duration::from_secs(60), || async {
        let ready = rs_api
            .get("rayservice-sample")
            .await?
            .status
            .unwrap_or_default()
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(ready.then_some(()))
    })
    .await?;
    for svc in ["rayservice-sample-head-svc", "rayservice-sample-serve-svc"] {
        ensure!(svcs.get_opt(svc).await?.is_some(), "{svc} missing");
    }
    let events = cp.kubectl(&["get", "events", "-n", TEST_NS])?;
    ensure!(events.contains("ClusterCreated"), "events:\n{events}");
    cp.kubectl(&[
        "delete",
        "-n",
        TEST_NS,
        "-f",
        sample.to_str().context("sample path")?,
    ])?;
    eventually(
        "the RayService and its clusters gone",
        Duration::from_secs(60),
        || async {
            let services = rs_api.list(&ListParams::default()).await?.items.len();
            let clusters = rc_api
                .list(
                    &ListParams::default()
                        .labels("ray.io/originated-from-cr-name=rayservice-sample"),
                )
                .await?
                .items
                .len();
            Ok((services + clusters == 0).then_some(()))
        },
    )
    .await?;

    // An incremental upgrade through the Gateway API (found by the operator's discovery): the
    // Gateway, the HTTPRoute and the clusters' Serve services are written, updated and removed
    // with the operator's token.
    let _gateway_controller = standin::GatewayController::start(admin.clone(), TEST_NS);
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    let path = file.path().to_str().context("path")?.to_string();
    let steps = common::Steps {
        step: 50,
        interval: 1,
        surge: 100,
    };
    let apply = |cpu: &str, price: i32| -> anyhow::Result<()> {
        std::fs::write(
            &path,
            common::rayservice_yaml("gw", steps, Some("istio"), cpu, price),
        )?;
        cp.kubectl(&["apply", "-n", TEST_NS, "-f", &path])?;
        Ok(())
    };
    apply("1", 3)?;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        TEST_NS,
        &rayservice_k8s::gateway::http_route_resource(),
    );
    let backends = |route: &DynamicObject| rayservice_k8s::gateway::route_essentials(route).1;
    let first = eventually("the HTTPRoute to the first cluster", WAIT, || async {
        let Some(route) = routes.get_opt("gw-httproute").await? else {
            return Ok(None);
        };
        Ok(backends(&route).first().map(|b| b.service.clone()))
    })
    .await?;
    apply("500m", 4)?;
    eventually(
        "the HTTPRoute to the upgraded cluster alone",
        WAIT,
        || async {
            let Some(route) = routes.get_opt("gw-httproute").await? else {
                return Ok(None);
            };
            let now = backends(&route);
            Ok((now.len() == 1 && now[0].service != first && now[0].weight == 100).then_some(()))
        },
    )
    .await?;
    cp.kubectl(&["delete", "-n", TEST_NS, "-f", &path])?;
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        TEST_NS,
        &rayservice_k8s::gateway::gateway_resource(),
    );
    eventually("the Gateway and the HTTPRoute gone", WAIT, || async {
        let left = gateways.list(&ListParams::default()).await?.items.len()
            + routes.list(&ListParams::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    Ok(())
}

/// The `rules` of the object of `kind` in a YAML stream.
fn rules_of(stream: &str, kind: &str) -> anyhow::Result<serde_json::Value> {
    for doc in stream.split("\n---\n") {
        let doc: serde_json::Value = serde_saphyr::from_str(doc)?;
        if doc["kind"] == kind {
            return Ok(doc["rules"].clone());
        }
    }
    bail!("no {kind}")
}

/// The Helm chart grants exactly what `operator.yaml` grants (proven above against a real API
/// server). Its `rules:` blocks are plain YAML, without template directives.
#[test]
fn helm_chart_rbac_matches_the_manifest() -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/manifests/operator.yaml"))?;
    let templates = repo_root().join("deploy/helm/rayservice-operator/templates");
    for (file, kind) in [
        ("clusterrole.yaml", "ClusterRole"),
        ("leader-election-rbac.yaml", "Role"),
    ] {
        let text = std::fs::read_to_string(templates.join(file))?;
        let (_, rest) = text
            .split_once("\nrules:\n")
            .with_context(|| format!("{file}: no rules"))?;
        let block = rest.split("\n---").next().unwrap_or_default();
        let chart: serde_json::Value = serde_saphyr::from_str(&format!("rules:\n{block}\n"))?;
        ensure!(
            chart["rules"].as_array().is_some_and(|r| !r.is_empty()),
            "{file}: empty rules"
        );
        assert_eq!(
            chart["rules"],
            rules_of(&manifest, kind)?,
            "{file} and operator.yaml grant different {kind} rules"
        );
    }
    Ok(())
}
