//! The `rayservice operator` process against a real kube-apiserver: probes, leader election
//! between two replicas, and a clean SIGTERM that hands the lease over at once.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{ControlPlane, eventually, free_port, get, repo};

const LEASE: &str = "rayservice-operator";

/// One operator process, killed when dropped if it still runs.
struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    fn start(plane: &ControlPlane, hostname: &str) -> Operator {
        let port = free_port();
        let log = std::fs::File::create(plane.dir.path().join(format!("{hostname}.log")))
            .expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_rayservice"))
            .args(["operator", "--probe-addr", &format!("127.0.0.1:{port}")])
            .args(["--leader-election-namespace", "default"])
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("HOSTNAME", hostname)
            .env("RAYSERVICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rayservice operator");
        Operator { child, port }
    }

    fn status(&self, path: &str) -> Option<u16> {
        get(self.port, path).ok().map(|(status, _)| status)
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        eventually(Duration::from_secs(30), "the operator to exit", || {
            self.child.try_wait().expect("wait")
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn holder(plane: &ControlPlane) -> Option<String> {
    let output = plane.kubectl(&[
        "get",
        "lease",
        LEASE,
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn log_of(plane: &ControlPlane, hostname: &str) -> String {
    std::fs::read_to_string(plane.dir.path().join(format!("{hostname}.log"))).unwrap_or_default()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn operator_leads_stands_by_and_hands_over_on_sigterm() {
    let plane = ControlPlane::start();
    let crds = repo().join("deploy/crds/ray.io_crds.yaml");
    plane.ok(&["apply", "--server-side", "-f", path(&crds)]);

    // The first replica takes the lease and becomes ready.
    let mut first = Operator::start(&plane, "replica-one");
    eventually(Duration::from_secs(60), "replica-one ready", || {
        (first.status("/readyz") == Some(200)).then_some(())
    });
    let held = holder(&plane).unwrap_or_default();
    assert!(held.starts_with("replica-one_"), "holder {held:?}");
    let (_, metrics) = get(first.port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("rayservice_operator_leader 1"),
        "{metrics}"
    );

    // A second replica is alive but stands by while the first leads.
    let mut second = Operator::start(&plane, "replica-two");
    eventually(Duration::from_secs(30), "replica-two alive", || {
        (second.status("/healthz") == Some(200)).then_some(())
    });
    assert_eq!(second.status("/readyz"), Some(503));
    assert!(
        log_of(&plane, "replica-two").contains("waiting for leadership"),
        "{}",
        log_of(&plane, "replica-two")
    );

    // SIGTERM: the first releases the lease and exits 0; the second takes over well before the
    // 15 s lease would have expired.
    let status = first.terminate();
    assert!(
        status.success(),
        "{status}: {}",
        log_of(&plane, "replica-one")
    );
    eventually(Duration::from_secs(10), "replica-two to lead", || {
        (second.status("/readyz") == Some(200)).then_some(())
    });
    let held = holder(&plane).unwrap_or_default();
    assert!(held.starts_with("replica-two_"), "holder {held:?}");

    // The last replica leaves the lease free.
    let status = second.terminate();
    assert!(
        status.success(),
        "{status}: {}",
        log_of(&plane, "replica-two")
    );
    assert_eq!(holder(&plane).as_deref(), Some(""));
}
