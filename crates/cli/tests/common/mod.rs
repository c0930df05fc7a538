//! A test fixture: one isolated local control plane (own state dir, own ports) driven through
//! the real `rayservice` binary, stopped with everything it started when the test ends.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One isolated local control plane.
pub struct Env {
    /// State directory.
    pub home: tempfile::TempDir,
    /// Serve front port.
    pub serve_port: u16,
    /// Dashboard front port.
    pub dashboard_port: u16,
    extra_env: Vec<(String, String)>,
    remove_env: Vec<String>,
}

/// A port free right now on 127.0.0.1.
/// A port free right now, from 10000-19999: below the kernel's ephemeral range (32768 and up,
/// where Ray's many outgoing connections could take a port between this check and its use)
/// and below the 20000-31999 that Ray nodes and control planes take.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 100) as u16 * 100;
    for _ in 0..10_000 {
        let port = 10_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-19999")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The Python with Ray the tests use (the README's test command sets it).
pub fn ray_python() -> String {
    match std::env::var("RAYSERVICE_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "set RAYSERVICE_PYTHON to a Python with ray[serve]==2.60.0 (scripts/test.sh installs one and sets it)"
        ),
    }
}

impl Env {
    /// A fresh environment using the shared Ray installation.
    pub fn new() -> Env {
        let env = Env::bare();
        let python = ray_python();
        env.with("RAYSERVICE_PYTHON", &python)
    }

    /// A fresh environment with no Ray configured.
    pub fn bare() -> Env {
        Env {
            home: tempfile::Builder::new()
                .prefix("rsvc-test-")
                .tempdir()
                .expect("tempdir"),
            serve_port: free_port(),
            dashboard_port: free_port(),
            extra_env: Vec::new(),
            remove_env: vec!["RAYSERVICE_PYTHON".into(), "RAYSERVICE_HOME".into()],
        }
    }

    /// Adds an environment variable for every command.
    pub fn with(mut self, key: &str, value: &str) -> Env {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Uses `port` for the Serve front endpoint.
    pub fn with_serve_port(mut self, port: u16) -> Env {
        self.serve_port = port;
        self
    }

    /// A `rayservice` command in this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rayservice"));
        for key in &self.remove_env {
            command.env_remove(key);
        }
        command
            .args(args)
            .env("RAYSERVICE_HOME", self.home.path())
            .env("RAYSERVICE_SERVE_PORT", self.serve_port.to_string())
            .env("RAYSERVICE_DASHBOARD_PORT", self.dashboard_port.to_string())
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir(repo());
        command
    }

    /// Runs a command and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("rayservice runs")
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "rayservice {args:?} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log_tail()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "rayservice {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// `get ... -o json` as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }

    /// The last lines of the server log.
    pub fn server_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.home.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The pid of the running server.
    pub fn server_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.home.path().join("control.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["pid"]
            .as_i64()
            .map(|p| p as i32)
    }

    /// Pids of every node process the state database knows.
    pub fn node_pids(&self) -> Vec<i32> {
        let Ok(db) = rusqlite::Connection::open(self.home.path().join("state.db")) else {
            return Vec::new();
        };
        let Ok(mut statement) = db.prepare("SELECT pid FROM nodes WHERE pid IS NOT NULL") else {
            return Vec::new();
        };
        statement
            .query_map([], |row| row.get::<_, i32>(0))
            .map(|rows| rows.flatten().collect())
            .unwrap_or_default()
    }

    /// POSTs to the Serve front endpoint.
    pub fn post(&self, path: &str, body: &str) -> Result<(u16, String), String> {
        post(self.serve_port, path, body, None)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let pids = self.node_pids();
        let _ = self.command(&["down"]).output();
        // Safety net: whatever survived `down` is stopped by process group.
        for pid in pids {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(pid) = self.server_pid() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// One request to 127.0.0.1:`port` with an optional JSON body and Host header; (status, body).
pub fn send(
    method: reqwest::Method,
    port: u16,
    path: &str,
    body: Option<&str>,
    host: Option<&str>,
) -> Result<(u16, String), String> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.request(method, format!("http://127.0.0.1:{port}{path}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().map_err(|e| e.to_string())?))
}

/// A POST with an optional Host header; (status, body).
pub fn post(
    port: u16,
    path: &str,
    body: &str,
    host: Option<&str>,
) -> Result<(u16, String), String> {
    send(reqwest::Method::POST, port, path, Some(body), host)
}

/// A GET; (status, body).
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    send(reqwest::Method::GET, port, path, None, None)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a process runs (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

/// Whether something listens on 127.0.0.1:port.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Writes a file into a fresh temp dir and returns its path.
pub fn write_yaml(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write yaml");
    path
}

/// A real Kubernetes control plane (scripts/k8s-control-plane.sh) in a temp dir, stopped when
/// dropped.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

impl ControlPlane {
    /// Installs (cached) and starts etcd, kube-apiserver and kube-controller-manager.
    pub fn start() -> ControlPlane {
        let script = repo().join("scripts/k8s-control-plane.sh");
        let bin = Command::new("bash")
            .arg(&script)
            .arg("install")
            .output()
            .expect("run the control-plane script");
        assert!(
            bin.status.success(),
            "install failed: {}",
            String::from_utf8_lossy(&bin.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
        let dir = tempfile::Builder::new()
            .prefix("rsvc-k8s-")
            .tempdir()
            .expect("tempdir");
        let started = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .arg("--with-controller-manager")
            .output()
            .expect("start");
        let plane = ControlPlane {
            kubeconfig: PathBuf::from(String::from_utf8_lossy(&started.stdout).trim()),
            kubectl: bin.join("kubectl"),
            dir,
        };
        assert!(
            started.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        plane
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl as the admin; panics on failure; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/k8s-control-plane.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Continuous load: `threads` clients, each with one request in flight at all times.
pub struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    answers: Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
}

impl Load {
    pub fn start(port: u16, threads: usize, path: &'static str, body: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let deadline = Instant::now() + Duration::from_secs(900);
        let handles = (0..threads)
            .map(|_| {
                let (stop, sent, failures, answers) = (
                    stop.clone(),
                    sent.clone(),
                    failures.clone(),
                    answers.clone(),
                );
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("client");
                    // Bounded: stops when told, after 900 s, or after 200k requests in all.
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && sent.load(Ordering::Relaxed) < 200_000
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let result = client
                            .post(format!("http://127.0.0.1:{port}{path}"))
                            .header("content-type", "application/json")
                            .body(body)
                            .send();
                        match result {
                            Ok(response) if response.status().is_success() => {
                                let body = response
                                    .text()
                                    .unwrap_or_else(|e| format!("<body error {e}>"));
                                *answers.lock().expect("lock").entry(body).or_default() += 1;
                            }
                            Ok(response) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("HTTP {}", response.status())),
                            Err(error) => failures.lock().expect("lock").push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            handles,
            sent,
            failures,
            answers,
        }
    }

    /// Stops the load; returns (requests, failures, answers).
    pub fn finish(
        self,
    ) -> (
        usize,
        Vec<String>,
        std::collections::BTreeMap<String, usize>,
    ) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            let _ = handle.join();
        }
        let failures = self.failures.lock().expect("lock").clone();
        let answers = self.answers.lock().expect("lock").clone();
        (self.sent.load(Ordering::Relaxed), failures, answers)
    }

    pub fn answered(&self) -> usize {
        self.answers.lock().expect("lock").values().sum()
    }
}

impl Load {
    /// The answers so far, by body.
    pub fn answers(&self) -> std::collections::BTreeMap<String, usize> {
        self.answers.lock().expect("lock").clone()
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// The failures so far.
    pub fn failures(&self) -> usize {
        self.failures.lock().expect("lock").len()
    }
}
