//! Shared fixture of the operator tests: a real control plane (etcd, kube-apiserver,
//! kube-controller-manager from `scripts/k8s-control-plane.sh`) stopped when dropped, and
//! polling with deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::Api;

/// How long the fixture waits for the API server to settle.
const WAIT: Duration = Duration::from_secs(60);

/// The Gateway API whose standard CRDs the operator tests install: the version KubeRay v1.7.0
/// is built with.
pub const GATEWAY_API_MODULE: &str = "sigs.k8s.io/gateway-api@v1.4.1";

/// The directory with the Gateway API's standard CRDs: `GATEWAY_API_CRDS`, or
/// `config/crd/standard` of the Go module [`GATEWAY_API_MODULE`], which `go mod download`
/// fetches into the Go module cache once (as `crates/api/tests/crd_schema.rs` does for
/// KubeRay's CRDs). Fails, saying why, when neither works.
pub fn gateway_api_crds_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GATEWAY_API_CRDS") {
        return Ok(PathBuf::from(dir));
    }
    let output = Command::new("go")
        .args(["mod", "download", "-json", GATEWAY_API_MODULE])
        .env("GOFLAGS", "-mod=mod")
        // Outside any module, so that no go.mod around the checkout is involved.
        .current_dir(std::env::temp_dir())
        .output()
        .with_context(|| {
            format!("running `go mod download -json {GATEWAY_API_MODULE}` (install Go, or set GATEWAY_API_CRDS to a directory with the Gateway API's standard CRDs)")
        })?;
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "`go mod download -json {GATEWAY_API_MODULE}` gave no JSON; status {}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if let Some(error) = answer.get("Error").and_then(serde_json::Value::as_str) {
        bail!("`go mod download {GATEWAY_API_MODULE}` failed: {error}");
    }
    let dir = answer
        .get("Dir")
        .and_then(serde_json::Value::as_str)
        .with_context(|| {
            format!("`go mod download -json {GATEWAY_API_MODULE}` named no Dir: {answer}")
        })?;
    Ok(Path::new(dir).join("config/crd/standard"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn script() -> PathBuf {
    repo_root().join("scripts/k8s-control-plane.sh")
}

pub fn run_script(args: &[&str]) -> anyhow::Result<String> {
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

/// Waits until every CRD named is Established.
async fn established(client: &kube::Client, names: &[&str]) -> anyhow::Result<()> {
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in names {
        // Polling: `kubectl wait` fails before the status exists.
        eventually(&format!("CRD {crd} established"), WAIT, || async {
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
        })
        .await?;
    }
    Ok(())
}

/// Stops the control plane when dropped, also when the test fails.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    pub fn start() -> anyhow::Result<Self> {
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
    pub fn kubectl_raw(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
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

    /// The admin's client configuration.
    pub async fn admin_config(&self) -> anyhow::Result<kube::Config> {
        Ok(kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)?,
            &Default::default(),
        )
        .await?)
    }

    /// Installs our CRDs (server-side apply) and waits until both are Established and the
    /// `default` namespace has its service account (pods can be created).
    pub async fn install_crds(&self, client: &kube::Client) -> anyhow::Result<()> {
        let crds = repo_root().join("deploy/crds/ray.io_crds.yaml");
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            crds.to_str().context("crd path")?,
        ])?;
        established(client, &["rayclusters.ray.io", "rayservices.ray.io"]).await?;
        let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        eventually("serviceaccount/default", WAIT, || async {
            Ok(sa_api.get_opt("default").await?.map(|_| ()))
        })
        .await
    }

    /// Installs the Gateway API's standard CRDs ([`GATEWAY_API_MODULE`]) and waits until the
    /// Gateway and HTTPRoute CRDs are Established.
    pub async fn install_gateway_api(&self, client: &kube::Client) -> anyhow::Result<()> {
        let dir = gateway_api_crds_dir()?;
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            dir.to_str().context("Gateway API CRD path")?,
        ])?;
        established(
            client,
            &[
                "gateways.gateway.networking.k8s.io",
                "httproutes.gateway.networking.k8s.io",
            ],
        )
        .await
    }

    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.kubectl_raw(args)?;
        ensure!(ok, "kubectl {args:?}: {stderr}");
        Ok(stdout)
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
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Both controllers, in this process; dropping it stops them (an operator crash).
pub struct Operator {
    pub tasks: Vec<AbortOnDrop>,
    pub metrics: rayservice_k8s::operate::Metrics,
}

impl Operator {
    pub fn start(client: &kube::Client) -> Self {
        // RUST_LOG=rayservice_k8s=debug shows what the operator does.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let metrics = rayservice_k8s::operate::Metrics::new();
        let rayclusters = tokio::spawn(rayservice_k8s::raycluster::run(
            client.clone(),
            metrics.clone(),
        ));
        let services = {
            let client = client.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(error) = rayservice_k8s::rayservice::run(client, metrics).await {
                    eprintln!("rayservice controller: {error}");
                }
            })
        };
        Operator {
            tasks: vec![AbortOnDrop(rayclusters), AbortOnDrop(services)],
            metrics,
        }
    }

    pub fn running(&self) -> bool {
        self.tasks.iter().all(|t| !t.0.is_finished())
    }
}

/// KubeRay's step parameters of one upgrade.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub step: i32,
    pub interval: i32,
    pub surge: i32,
}

/// A RayService asking for incremental upgrades, shaped as KubeRay's e2e tests shape theirs
/// (their two applications, one worker group, Ray's autoscaler on, the `istio` GatewayClass).
/// `worker_cpu` and `price` are what an upgrade changes; `class` may be left out.
pub fn rayservice_yaml(
    name: &str,
    steps: Steps,
    class: Option<&str>,
    worker_cpu: &str,
    price: i32,
) -> String {
    let Steps {
        step,
        interval,
        surge,
    } = steps;
    let class = class
        .map(|c| format!("      gatewayClassName: {c}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: ray.io/v1
kind: RayService
metadata:
  name: {name}
spec:
  rayClusterDeletionDelaySeconds: 0
  upgradeStrategy:
    type: NewClusterWithIncrementalUpgrade
    clusterUpgradeOptions:
{class}      stepSizePercent: {step}
      intervalSeconds: {interval}
      maxSurgePercent: {surge}
  serveConfigV2: |
    applications:
      - name: fruit_app
        import_path: fruit.deployment_graph
        route_prefix: /fruit
        deployments:
          - name: MangoStand
            num_replicas: 1
            user_config:
              price: {price}
          - name: FruitMarket
            num_replicas: 1
      - name: math_app
        import_path: conditional_dag.serve_dag
        route_prefix: /calc
        deployments:
          - name: Adder
            num_replicas: 1
          - name: Router
            num_replicas: 1
  rayClusterConfig:
    rayVersion: "2.52.0"
    enableInTreeAutoscaling: true
    headGroupSpec:
      rayStartParams:
        num-cpus: "0"
      template:
        spec:
          containers:
          - name: ray-head
            image: rayproject/ray:2.52.0
            ports:
            - {{name: gcs-server, containerPort: 6379}}
            - {{name: serve, containerPort: 8000}}
            - {{name: dashboard, containerPort: 8265}}
            - {{name: client, containerPort: 10001}}
    workerGroupSpecs:
    - groupName: small-group
      replicas: 1
      minReplicas: 1
      maxReplicas: 2
      template:
        spec:
          containers:
          - name: ray-worker
            image: rayproject/ray:2.52.0
            resources:
              requests: {{cpu: "{worker_cpu}", memory: 2Gi}}
              limits: {{cpu: "2", memory: 2Gi}}
"#
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
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

/// `head` or `worker`, from the pod's labels.
pub fn node_type(p: &Pod) -> &str {
    p.labels()
        .get("ray.io/node-type")
        .map(String::as_str)
        .unwrap_or("")
}
