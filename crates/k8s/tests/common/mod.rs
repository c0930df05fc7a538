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
        let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in ["rayclusters.ray.io", "rayservices.ray.io"] {
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
        let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        eventually("serviceaccount/default", WAIT, || async {
            Ok(sa_api.get_opt("default").await?.map(|_| ()))
        })
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
