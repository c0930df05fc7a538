//! The operator's ClusterRole (`deploy/manifests/operator.yaml`) is enough, and no more than
//! asked for: the RayCluster controller runs against a real API server (etcd + kube-apiserver +
//! kube-controller-manager from `scripts/k8s-control-plane.sh`) authenticated only with a token
//! of the `rayservice-operator` service account.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::config::AuthInfo;
use kube::{Client, ResourceExt};
use rayservice_api::{RayCluster, RayClusterSpec};
use serde_json::json;

const OPERATOR_NS: &str = "rayservice-system";
const OPERATOR_SA: &str = "rayservice-operator";
const TEST_NS: &str = "rbac-test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    repo_root().join("scripts/k8s-control-plane.sh")
}

fn run_script(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .with_context(|| format!("running k8s-control-plane.sh {args:?}"))?;
    if !out.status.success() {
        bail!(
            "k8s-control-plane.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Stops the control plane when dropped, also when the test fails.
struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start() -> anyhow::Result<Self> {
        let bin = PathBuf::from(run_script(&["install"])?);
        let dir = tempfile::Builder::new()
            .prefix("rayservice-k8s-rbac-")
            .tempdir()?;
        let mut cp = ControlPlane {
            dir,
            bin,
            kubeconfig: PathBuf::new(),
        };
        let dir = cp.dir.path().to_str().context("tempdir path")?.to_string();
        cp.kubeconfig = PathBuf::from(run_script(&["start", &dir, "--with-controller-manager"])?);
        Ok(cp)
    }

    /// Runs kubectl as the admin; returns (success, stdout, stderr).
    fn kubectl_raw(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        ))
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.kubectl_raw(args)?;
        ensure!(ok, "kubectl {args:?}: {stderr}");
        Ok(stdout)
    }

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

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.path().to_str() {
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", dir])
                .status();
        }
    }
}

/// Aborts the controller task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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

fn node_type(p: &Pod) -> &str {
    p.labels()
        .get("ray.io/node-type")
        .map(String::as_str)
        .unwrap_or("")
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
