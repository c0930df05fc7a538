//! The operator's ClusterRole (`deploy/manifests/operator.yaml`) is enough, and no more than
//! asked for: the RayCluster controller runs against a real API server (etcd + kube-apiserver +
//! kube-controller-manager from `scripts/k8s-control-plane.sh`) authenticated only with a token
//! of the `rayservice-operator` service account.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::config::AuthInfo;
use rayservice_api::{RayCluster, RayClusterSpec};
use serde_json::json;

mod common;

use common::{AbortOnDrop, ControlPlane, eventually, node_type, repo_root};

const OPERATOR_NS: &str = "rayservice-system";
const OPERATOR_SA: &str = "rayservice-operator";
const TEST_NS: &str = "rbac-test";

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
    let admin_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let admin = Client::try_from(admin_config.clone())?;

    // CRDs, server-side, then wait for Established (polling: `kubectl wait` fails before the
    // status exists).
    let crds = repo_root().join("deploy/crds/ray.io_crds.yaml");
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        crds.to_str().context("crd path")?,
    ])?;
    let crd_api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in ["rayclusters.ray.io", "rayservices.ray.io"] {
        eventually(
            &format!("CRD {crd} established"),
            Duration::from_secs(60),
            || async {
                let Some(crd) = crd_api.get_opt(crd).await? else {
                    return Ok(None);
                };
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }

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
        ("patch", "rayclusters.ray.io/status"),
        ("update", "rayservices.ray.io/finalizers"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
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
        ("patch", "pods/status"),
        ("create", "pods/exec"),
        ("create", "deployments.apps"),
        ("list", "nodes"),
        ("delete", "leases.coordination.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ] {
        ensure!(
            !cp.operator_can(verb, resource, TEST_NS)?,
            "the operator can {verb} {resource}, more than it needs"
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

    // The controller with the operator's client; the RayCluster is created by the admin.
    let _controller = AbortOnDrop(tokio::spawn(rayservice_k8s::raycluster::run(
        operator.clone(),
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
    Ok(())
}
