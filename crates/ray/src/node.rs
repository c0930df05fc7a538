//! The `ray start` command line of one Ray node, built the way KubeRay builds it for a pod,
//! adapted so that several clusters can run side by side on one machine.
//!
//! Building is pure: [`NodeLaunch::command`] turns a description of the node into an argument
//! vector and environment ([`NodeCommand`]); nothing is started here. Every argument is its own
//! `argv` element, never a shell string.
//!
//! # Which keys we own
//!
//! Users configure nodes through `rayStartParams` (`key: value`; `"true"` is a bare flag,
//! `"false"` drops the flag, as in KubeRay). A user value wins over our defaults
//! (`num-cpus`, `memory`, `labels`, `disable-usage-stats`), except for the keys in
//! [`OWNED_PARAMS`]: every port, the temp dir, the flags that decide what kind of node this is,
//! and the addresses it listens on (`node-ip-address`, `dashboard-host`: always `127.0.0.1`).
//! Those must be ours for clusters on one machine not to clash and for Ray to stay private to
//! this machine, so a user value for them is dropped and reported in
//! [`NodeCommand::overridden`] ([`why_owned`] says why, for the user).
//!
//! # Ray private to this machine
//!
//! Measured with Ray 2.60 (`notes/ray-facts.md`): Ray binds every listener (GCS, raylet, object
//! manager, agents, metrics, client server, core workers) to loopback only when the node's IP
//! is exactly `127.0.0.1`. `ray start` replaces a `--node-ip-address=127.0.0.1` with the
//! machine's LAN address unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, and with that setting a
//! worker refuses to join any head. So every node gets `--node-ip-address=127.0.0.1` and that
//! environment variable, the head runs plain `ray start`, and a worker runs `ray start` through
//! [`LOOPBACK_WORKER_SHIM`], which lets it join and keeps its address on loopback. On top of
//! that, when [`NodeLaunch::auth_token_file`] is set, Ray's token authentication
//! (`RAY_AUTH_MODE=token`, Ray >= 2.52) protects every gRPC and HTTP entry point, including
//! the one listener Ray cannot bind to loopback (each Serve replica's gRPC server, `[::]:0`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Command;

use rayservice_api::resources::RayResources;
use thiserror::Error;

use crate::install::RayRuntime;
use crate::start::{Platform, StartFlags};
pub use crate::start::{VALUE_BOOLEAN_PARAMS, normalize_param_key};
use rayservice_api::NodeType;

/// Longest `--temp-dir` (in bytes) that Ray 2.60 can run with.
///
/// Ray puts AF_UNIX sockets at `<temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/<name>`
/// and a socket path may not exceed 107 bytes. The longest socket name is `dash_MetricsHead`;
/// with a 7-digit pid that leaves 39 bytes. Measured: 38 bytes works, 44 bytes leaves the
/// dashboard down (its modules cannot bind), 48 bytes makes `ray start` exit.
pub const MAX_TEMP_DIR_BYTES: usize = 38;

/// `rayStartParams` keys (normalised: no leading `--`, `-` instead of `_`, lower case) that the
/// node builder always sets itself; user values for them are dropped.
pub const OWNED_PARAMS: &[&str] = &[
    "head",
    "address",
    "block",
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
    "min-worker-port",
    "max-worker-port",
    "worker-port-list",
    "redis-shard-ports",
    "temp-dir",
    "include-dashboard",
    "node-ip-address",
    "dashboard-host",
];

/// Why local mode sets an [`OWNED_PARAMS`] key itself, in words for an event; `None` for a
/// key local mode does not own.
pub fn why_owned(key: &str) -> Option<&'static str> {
    let key = normalize_param_key(key);
    if !OWNED_PARAMS.contains(&key.as_str()) {
        return None;
    }
    Some(match key.as_str() {
        "node-ip-address" | "dashboard-host" => {
            "local Ray listens on 127.0.0.1 only, so that it is not reachable from the network (use the front endpoints to reach it)"
        }
        "temp-dir" => "each local Ray node gets its own temp dir",
        "head" | "address" | "block" | "include-dashboard" => {
            "local mode decides how each node is started and joins its head"
        }
        _ => "local mode chooses every port itself so that clusters on one machine do not clash",
    })
}

/// Python run as `python -c LOOPBACK_WORKER_SHIM start ...` to start a worker node with every
/// listener on loopback.
///
/// With `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (needed so that Ray keeps `127.0.0.1` as the node
/// address instead of the machine's LAN address) `ray start --address=...` refuses to start a
/// worker ("Multi-node Ray clusters are not supported on Windows and OSX"). The shim allows
/// the worker in this one process and answers `127.0.0.1` wherever `ray start` asks for this
/// node's address (for `--node-ip-address` and the head's `127.0.0.1` address, which it would
/// otherwise turn into the LAN address), then runs Ray's own `ray start`. The processes it
/// starts get `--node-ip-address=127.0.0.1` and the environment setting, as on the head.
pub const LOOPBACK_WORKER_SHIM: &str = "\
import sys
import ray._private.ray_constants as ray_constants
import ray._private.services as services
ray_constants.ENABLE_RAY_CLUSTER = True
services.get_node_ip_address = lambda address=None: '127.0.0.1'
from ray.scripts.scripts import main
sys.argv[0] = 'ray'
sys.exit(main())
";

/// The address every local Ray node uses and listens on.
pub const NODE_IP: &str = "127.0.0.1";

/// `ray start` options in which a local node differs from the same node in Kubernetes, on
/// purpose: the [`OWNED_PARAMS`] (every port, the temp dir, the head address, whether the
/// dashboard runs, and the addresses: `node-ip-address` and `dashboard-host` are `127.0.0.1`
/// locally, while a pod listens on every interface), `disable-usage-stats` (always locally)
/// and `labels` (set locally only when asked). Every other option is the same on both
/// platforms for the same YAML.
pub fn is_local_only_param(key: &str) -> bool {
    OWNED_PARAMS.contains(&key) || ["disable-usage-stats", "labels"].contains(&key)
}

/// Why a node's command line could not be built.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The temp dir is relative.
    #[error("Ray temp dir {path} must be an absolute path")]
    TempDirNotAbsolute {
        /// The temp dir given.
        path: PathBuf,
    },
    /// The temp dir is so long that Ray's Unix socket paths would not fit.
    #[error(
        "Ray temp dir {path} is {len} bytes long; at most {max} bytes fit Ray's Unix socket paths (108-byte limit)"
    )]
    TempDirTooLong {
        /// The temp dir given.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest that works.
        max: usize,
    },
    /// A `rayStartParams` key is empty or has characters no `ray start` option has.
    #[error("rayStartParams key {key:?} is not a valid `ray start` option name")]
    InvalidParamKey {
        /// The key as given.
        key: String,
    },
    /// A `rayStartParams` value cannot be passed as an argument.
    #[error("rayStartParams value for {key:?} cannot be used: {reason}")]
    InvalidParamValue {
        /// The key.
        key: String,
        /// What is wrong with the value.
        reason: &'static str,
    },
    /// The worker port range is empty.
    #[error("min worker port {min} is above max worker port {max}")]
    WorkerPortRange {
        /// The lowest worker port.
        min: u16,
        /// The highest worker port.
        max: u16,
    },
    /// A node label cannot be written in `--labels=k=v,...` form.
    #[error("node label {key:?}={value:?} cannot contain ',' or '=' or be empty")]
    InvalidLabel {
        /// The label key.
        key: String,
        /// The label value.
        value: String,
    },
    /// A resource quantity of the node's Ray container cannot be read.
    #[error(transparent)]
    Resources(#[from] rayservice_api::resources::ResourceError),
    /// No free port (or block of ports) was found.
    #[error("no free block of {len} port(s) in {first}..={last} on this machine")]
    NoFreePorts {
        /// How many consecutive ports were wanted.
        len: u16,
        /// Lowest port searched.
        first: u16,
        /// Highest port searched.
        last: u16,
    },
}

/// Ports only a head node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadPorts {
    /// GCS server port (`--port`); workers join at `<host>:<gcs>`.
    pub gcs: u16,
    /// Dashboard HTTP port (`--dashboard-port`), which also serves the Serve REST API.
    pub dashboard: u16,
    /// Ray client server port (`--ray-client-server-port`).
    pub client_server: u16,
    /// Autoscaler (monitor) Prometheus port, set through env `AUTOSCALER_METRIC_PORT`
    /// (Ray's fixed default 44217 clashes between clusters).
    pub autoscaler_metrics: u16,
    /// Dashboard Prometheus port, set through env `DASHBOARD_METRIC_PORT`
    /// (Ray's fixed default 44227 clashes between clusters).
    pub dashboard_metrics: u16,
}

/// Ports every node (head or worker) binds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodePorts {
    /// Raylet's node manager port (`--node-manager-port`).
    pub node_manager: u16,
    /// Object manager port (`--object-manager-port`).
    pub object_manager: u16,
    /// Dashboard agent HTTP port (`--dashboard-agent-listen-port`, Ray's default 52365).
    pub dashboard_agent_listen: u16,
    /// Dashboard agent gRPC port (`--dashboard-agent-grpc-port`), also the metrics agent.
    pub dashboard_agent_grpc: u16,
    /// Runtime env agent port (`--runtime-env-agent-port`).
    pub runtime_env_agent: u16,
    /// Prometheus metrics export port (`--metrics-export-port`).
    pub metrics_export: u16,
    /// Lowest port of this node's worker processes (`--min-worker-port`).
    pub min_worker: u16,
    /// Highest port of this node's worker processes (`--max-worker-port`).
    pub max_worker: u16,
}

impl NodePorts {
    /// Every port the node binds, its worker range included.
    pub fn all(&self) -> Vec<u16> {
        let mut ports = vec![
            self.node_manager,
            self.object_manager,
            self.dashboard_agent_listen,
            self.dashboard_agent_grpc,
            self.runtime_env_agent,
            self.metrics_export,
        ];
        ports.extend(self.min_worker..=self.max_worker);
        ports
    }
}

/// Whether the node is the head or joins one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// The head node, with its own extra ports.
    Head(HeadPorts),
    /// A worker node joining the head's GCS.
    Worker {
        /// The head's GCS address, `host:port` (e.g. `127.0.0.1:6379`).
        head_gcs_address: String,
    },
}

/// Everything needed to build one node's `ray start` command.
#[derive(Debug, Clone)]
pub struct NodeLaunch {
    /// Head or worker.
    pub kind: NodeKind,
    /// The `ray` executable of the Ray installation (runs a head).
    pub ray_executable: PathBuf,
    /// The Python of the same installation (runs a worker, see [`LOOPBACK_WORKER_SHIM`]).
    pub python: PathBuf,
    /// This node's own Ray temp dir: absolute, at most [`MAX_TEMP_DIR_BYTES`] bytes.
    pub temp_dir: PathBuf,
    /// This node's ports.
    pub ports: NodePorts,
    /// The user's `rayStartParams`, keys without the leading `--`.
    pub ray_start_params: BTreeMap<String, String>,
    /// What the node's Ray container announces (CPUs, memory, GPUs, accelerators); the
    /// user's params win.
    pub resources: RayResources,
    /// Node labels, passed as `--labels=k=v,...` unless the user sets `labels`.
    pub labels: BTreeMap<String, String>,
    /// Extra environment for the node; wins over [`NodeLaunch::default_env`].
    pub extra_env: Vec<(String, String)>,
    /// File holding the cluster's token (mode 0600): when set, the node runs with Ray's token
    /// authentication (`RAY_AUTH_MODE=token`, `RAY_AUTH_TOKEN_PATH`), and a `RAY_AUTH_TOKEN`
    /// the server may have inherited is blanked so that it cannot win over the file.
    pub auth_token_file: Option<PathBuf>,
}

/// A node's command line, ready for [`std::process::Command`] or tokio's equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCommand {
    /// The program (the `ray` executable) followed by its arguments.
    pub argv: Vec<OsString>,
    /// Environment variables to set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// User `rayStartParams` keys that were dropped because this builder owns them.
    pub overridden: Vec<String>,
}

impl NodeCommand {
    /// The program to run.
    pub fn program(&self) -> &OsStr {
        self.argv
            .first()
            .map(OsString::as_os_str)
            .unwrap_or_default()
    }

    /// The arguments after the program.
    pub fn args(&self) -> &[OsString] {
        self.argv.get(1..).unwrap_or_default()
    }

    /// The `ray` arguments from `start` on (after the program, and after the shim of a worker).
    pub fn start_args(&self) -> &[OsString] {
        let start = self
            .argv
            .iter()
            .position(|a| a == "start")
            .unwrap_or(self.argv.len());
        self.argv.get(start..).unwrap_or_default()
    }

    /// A [`Command`] with the program, arguments and environment set (nothing else).
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(self.program());
        command.args(self.args());
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// The command as one line for logs, each argument quoted when it needs to be.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|arg| {
                let text = arg.to_string_lossy();
                if !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+".contains(c))
                {
                    text.into_owned()
                } else {
                    format!("'{}'", text.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl NodeLaunch {
    /// A node of a group whose `rayStartParams` are `params` and whose pods look like
    /// `template`: the resources come from the template's Ray container.
    pub fn for_group(
        kind: NodeKind,
        runtime: &RayRuntime,
        temp_dir: PathBuf,
        ports: NodePorts,
        params: &BTreeMap<String, String>,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Result<NodeLaunch, NodeError> {
        Ok(NodeLaunch {
            kind,
            ray_executable: runtime.ray.clone(),
            python: runtime.python.clone(),
            temp_dir,
            ports,
            ray_start_params: params.clone(),
            resources: RayResources::of_template(template)?,
            labels: BTreeMap::new(),
            extra_env: Vec::new(),
            auth_token_file: None,
        })
    }

    /// The environment every node gets unless [`NodeLaunch::extra_env`] says otherwise:
    /// the Ray installation's `bin` first on `PATH`, no usage stats, no 30 s drain on SIGTERM
    /// (so stopping a node takes seconds), Serve's proxy without `SO_REUSEPORT` (a port clash
    /// with another cluster then fails loudly instead of silently sharing traffic), node
    /// addresses kept on `127.0.0.1` (see the module docs), token authentication when
    /// [`NodeLaunch::auth_token_file`] is set, and for
    /// the head the two metrics ports Ray otherwise fixes at 44217/44227.
    pub fn default_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        // `python` in a job's entrypoint is Ray's Python, as in a Ray image: the folder of
        // the `ray` executable comes first on PATH.
        if let Some(bin) = self.ray_executable.parent().filter(|p| p.is_absolute()) {
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            let mut path = bin.as_os_str().to_os_string();
            if !inherited.is_empty() {
                path.push(":");
                path.push(inherited);
            }
            env.push(("PATH".to_string(), path.to_string_lossy().into_owned()));
        }
        env.extend([
            ("RAY_USAGE_STATS_ENABLED".to_string(), "0".to_string()),
            (
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER".to_string(),
                "0".to_string(),
            ),
            (
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S".to_string(),
                "0".to_string(),
            ),
            (
                "SERVE_SOCKET_REUSE_PORT_ENABLED".to_string(),
                "0".to_string(),
            ),
        ]);
        match &self.auth_token_file {
            Some(file) => env.extend([
                ("RAY_AUTH_MODE".to_string(), "token".to_string()),
                (
                    "RAY_AUTH_TOKEN_PATH".to_string(),
                    file.to_string_lossy().into_owned(),
                ),
                // Ray reads RAY_AUTH_TOKEN first when it is not empty.
                ("RAY_AUTH_TOKEN".to_string(), String::new()),
            ]),
            // Ray 2.59+ turns token mode on by itself when ~/.ray/auth_token exists; nobody
            // would then know which token the cluster wants.
            None => env.push(("RAY_AUTH_MODE".to_string(), "disabled".to_string())),
        }
        if let NodeKind::Head(head) = &self.kind {
            env.push((
                "AUTOSCALER_METRIC_PORT".to_string(),
                head.autoscaler_metrics.to_string(),
            ));
            env.push((
                "DASHBOARD_METRIC_PORT".to_string(),
                head.dashboard_metrics.to_string(),
            ));
        }
        env
    }

    /// Builds the node's command line.
    pub fn command(&self) -> Result<NodeCommand, NodeError> {
        self.check_temp_dir()?;
        if self.ports.min_worker > self.ports.max_worker {
            return Err(NodeError::WorkerPortRange {
                min: self.ports.min_worker,
                max: self.ports.max_worker,
            });
        }

        let mut platform = Platform {
            owned_keys: OWNED_PARAMS.iter().map(|k| k.to_string()).collect(),
            ..Platform::default()
        };
        let role = match &self.kind {
            NodeKind::Head(head) => {
                platform.owned.extend([
                    ("port".to_string(), head.gcs.to_string()),
                    ("dashboard-port".to_string(), head.dashboard.to_string()),
                    (
                        "ray-client-server-port".to_string(),
                        head.client_server.to_string(),
                    ),
                ]);
                platform
                    .owned
                    .push(("dashboard-host".into(), NODE_IP.into()));
                NodeType::Head
            }
            NodeKind::Worker { head_gcs_address } => {
                if head_gcs_address.is_empty() || head_gcs_address.contains(char::is_whitespace) {
                    return Err(NodeError::InvalidParamValue {
                        key: "address".to_string(),
                        reason: "the head's GCS address must be host:port",
                    });
                }
                platform
                    .owned
                    .push(("address".to_string(), head_gcs_address.clone()));
                NodeType::Worker
            }
        };
        let p = &self.ports;
        for (flag, port) in [
            ("node-manager-port", p.node_manager),
            ("object-manager-port", p.object_manager),
            ("dashboard-agent-listen-port", p.dashboard_agent_listen),
            ("dashboard-agent-grpc-port", p.dashboard_agent_grpc),
            ("runtime-env-agent-port", p.runtime_env_agent),
            ("metrics-export-port", p.metrics_export),
            ("min-worker-port", p.min_worker),
            ("max-worker-port", p.max_worker),
        ] {
            platform.owned.push((flag.to_string(), port.to_string()));
        }
        platform.owned.push(("block".into(), "true".into()));
        platform
            .owned
            .push(("node-ip-address".into(), NODE_IP.into()));
        let temp_dir = self.temp_dir.to_str().ok_or(NodeError::InvalidParamValue {
            key: "temp-dir".to_string(),
            reason: "the temp dir is not UTF-8",
        })?;
        platform
            .owned
            .push(("temp-dir".into(), temp_dir.to_string()));
        platform
            .defaults
            .push(("disable-usage-stats".into(), "true".into()));
        if !self.labels.is_empty() {
            platform
                .defaults
                .push(("labels".into(), labels_arg(&self.labels)?));
        }

        let flags = StartFlags::build(role, &self.ray_start_params, &self.resources, &platform)?;
        let mut argv: Vec<OsString> = match role {
            NodeType::Head => vec![self.ray_executable.clone().into_os_string()],
            NodeType::Worker => vec![
                self.python.clone().into_os_string(),
                "-c".into(),
                LOOPBACK_WORKER_SHIM.into(),
            ],
        };
        argv.extend(flags.args().into_iter().map(OsString::from));
        let overridden = flags.overridden;

        let mut env: BTreeMap<String, String> = self.default_env().into_iter().collect();
        for (key, value) in &self.extra_env {
            env.insert(key.clone(), value.clone());
        }
        Ok(NodeCommand {
            argv,
            env: env.into_iter().collect(),
            overridden,
        })
    }

    fn check_temp_dir(&self) -> Result<(), NodeError> {
        if !self.temp_dir.is_absolute() {
            return Err(NodeError::TempDirNotAbsolute {
                path: self.temp_dir.clone(),
            });
        }
        let len = self.temp_dir.as_os_str().len();
        if len > MAX_TEMP_DIR_BYTES {
            return Err(NodeError::TempDirTooLong {
                path: self.temp_dir.clone(),
                len,
                max: MAX_TEMP_DIR_BYTES,
            });
        }
        Ok(())
    }
}

fn labels_arg(labels: &BTreeMap<String, String>) -> Result<String, NodeError> {
    let mut parts = Vec::with_capacity(labels.len());
    for (key, value) in labels {
        let bad =
            |s: &str| s.is_empty() || s.contains([',', '=']) || s.contains(char::is_whitespace);
        if bad(key) || value.contains([',', '=']) || value.contains(char::is_whitespace) {
            return Err(NodeError::InvalidLabel {
                key: key.clone(),
                value: value.clone(),
            });
        }
        parts.push(format!("{key}={value}"));
    }
    Ok(parts.join(","))
}

/// Hands out ports that are free on this machine right now and not handed out before by the
/// same allocator, so the nodes of several clusters get distinct ports.
///
/// Ports come from a range below Linux's ephemeral range (32768+) by default, so they do not
/// collide with the random ports the OS gives Ray's worker processes and Serve replicas.
/// A port free now may be taken before Ray binds it; callers retry a node that fails to start.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    taken: BTreeSet<u16>,
    seed: u64,
}

impl Default for PortAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl PortAllocator {
    /// Default range for allocated ports.
    pub const DEFAULT_RANGE: RangeInclusive<u16> = 20000..=32000;

    /// An allocator over [`PortAllocator::DEFAULT_RANGE`].
    pub fn new() -> Self {
        Self::with_range(Self::DEFAULT_RANGE)
    }

    /// An allocator over the given range.
    pub fn with_range(range: RangeInclusive<u16>) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        PortAllocator {
            range,
            taken: BTreeSet::new(),
            seed,
        }
    }

    /// Marks ports as in use (e.g. the stored ports of clusters that are not running now).
    pub fn reserve(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.taken.extend(ports);
    }

    /// One free port.
    pub fn port(&mut self) -> Result<u16, NodeError> {
        self.block(1)
    }

    /// The first of `len` consecutive free ports.
    pub fn block(&mut self, len: u16) -> Result<u16, NodeError> {
        let (first, last) = (*self.range.start(), *self.range.end());
        let no_ports = NodeError::NoFreePorts { len, first, last };
        if len == 0 || last < first || u32::from(last - first) + 1 < u32::from(len) {
            return Err(no_ports);
        }
        let starts = u32::from(last - first) + 2 - u32::from(len);
        // Walk the possible starts from a random offset, in steps of `len`, then one by one.
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = ((self.seed >> 33) % u64::from(starts)) as u32;
        for i in 0..starts {
            let start = first + ((offset + i) % starts) as u16;
            let end = start + (len - 1);
            if (start..=end).any(|p| self.taken.contains(&p)) {
                continue;
            }
            if (start..=end).all(port_is_free) {
                self.taken.extend(start..=end);
                return Ok(start);
            }
        }
        Err(no_ports)
    }

    /// Ports for a head node.
    pub fn head_ports(&mut self) -> Result<HeadPorts, NodeError> {
        Ok(HeadPorts {
            gcs: self.port()?,
            dashboard: self.port()?,
            client_server: self.port()?,
            autoscaler_metrics: self.port()?,
            dashboard_metrics: self.port()?,
        })
    }

    /// Ports for any node, with `worker_ports` ports for its worker processes (at least 1).
    pub fn node_ports(&mut self, worker_ports: u16) -> Result<NodePorts, NodeError> {
        let worker_ports = worker_ports.max(1);
        let min_worker = self.block(worker_ports)?;
        Ok(NodePorts {
            node_manager: self.port()?,
            object_manager: self.port()?,
            dashboard_agent_listen: self.port()?,
            dashboard_agent_grpc: self.port()?,
            runtime_env_agent: self.port()?,
            metrics_export: self.port()?,
            min_worker,
            max_worker: min_worker + (worker_ports - 1),
        })
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_ports() -> HeadPorts {
        HeadPorts {
            gcs: 20000,
            dashboard: 20001,
            client_server: 20002,
            autoscaler_metrics: 20010,
            dashboard_metrics: 20011,
        }
    }

    fn node_ports(base: u16) -> NodePorts {
        NodePorts {
            node_manager: base + 7,
            object_manager: base + 8,
            dashboard_agent_listen: base + 3,
            dashboard_agent_grpc: base + 4,
            runtime_env_agent: base + 5,
            metrics_export: base + 6,
            min_worker: base + 100,
            max_worker: base + 199,
        }
    }

    fn launch(kind: NodeKind) -> NodeLaunch {
        NodeLaunch {
            kind,
            ray_executable: PathBuf::from("/opt/ray/bin/ray"),
            python: PathBuf::from("/opt/ray/bin/python"),
            temp_dir: PathBuf::from("/tmp/rs-abc/h"),
            ports: node_ports(20000),
            ray_start_params: BTreeMap::new(),
            resources: RayResources {
                num_cpus: Some(2),
                memory_bytes: Some(2 * 1024 * 1024 * 1024),
                ..Default::default()
            },
            labels: BTreeMap::new(),
            extra_env: Vec::new(),
            auth_token_file: None,
        }
    }

    fn args(command: &NodeCommand) -> Vec<String> {
        command
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn head_command_line() {
        let command = launch(NodeKind::Head(head_ports())).command().unwrap();
        assert_eq!(
            args(&command),
            [
                "/opt/ray/bin/ray",
                "start",
                "--head",
                "--block",
                "--dashboard-agent-grpc-port=20004",
                "--dashboard-agent-listen-port=20003",
                "--dashboard-host=127.0.0.1",
                "--dashboard-port=20001",
                "--disable-usage-stats",
                "--max-worker-port=20199",
                "--memory=2147483648",
                "--metrics-export-port=20006",
                "--min-worker-port=20100",
                "--node-ip-address=127.0.0.1",
                "--node-manager-port=20007",
                "--num-cpus=2",
                "--object-manager-port=20008",
                "--port=20000",
                "--ray-client-server-port=20002",
                "--runtime-env-agent-port=20005",
                "--temp-dir=/tmp/rs-abc/h",
            ]
        );
        assert!(command.overridden.is_empty());
        let env: BTreeMap<_, _> = command.env.iter().cloned().collect();
        assert_eq!(env["AUTOSCALER_METRIC_PORT"], "20010");
        assert_eq!(env["DASHBOARD_METRIC_PORT"], "20011");
        assert_eq!(env["RAY_USAGE_STATS_ENABLED"], "0");
        assert_eq!(env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"], "0");
        assert_eq!(env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"], "0");
        assert_eq!(env["RAY_AUTH_MODE"], "disabled");
        assert!(!env.contains_key("RAY_AUTH_TOKEN_PATH"));
    }

    #[test]
    fn token_authentication_for_every_node() {
        let mut head = launch(NodeKind::Head(head_ports()));
        head.auth_token_file = Some(PathBuf::from("/home/u/.rayservice/c/auth_token"));
        let mut worker = head.clone();
        worker.kind = NodeKind::Worker {
            head_gcs_address: "127.0.0.1:20000".into(),
        };
        for node in [head, worker] {
            let command = node.command().unwrap();
            let env: BTreeMap<_, _> = command.env.iter().cloned().collect();
            assert_eq!(env["RAY_AUTH_MODE"], "token");
            assert_eq!(
                env["RAY_AUTH_TOKEN_PATH"],
                "/home/u/.rayservice/c/auth_token"
            );
            // An inherited RAY_AUTH_TOKEN would win over the file: it is blanked.
            assert_eq!(env["RAY_AUTH_TOKEN"], "");
            // The token itself is never on a command line.
            assert!(!command.display().contains("auth_token"));
        }
    }

    #[test]
    fn worker_command_line() {
        let mut node = launch(NodeKind::Worker {
            head_gcs_address: "127.0.0.1:20000".into(),
        });
        node.ports = node_ports(20010);
        node.temp_dir = PathBuf::from("/tmp/rs-abc/w0");
        node.resources.num_cpus = Some(1);
        node.resources.memory_bytes = None;
        let command = node.command().unwrap();
        let argv = args(&command);
        assert_eq!(
            &argv[..6],
            [
                "/opt/ray/bin/python",
                "-c",
                LOOPBACK_WORKER_SHIM,
                "start",
                "--address=127.0.0.1:20000",
                "--block"
            ]
        );
        assert_eq!(command.start_args().len(), argv.len() - 3);
        assert!(argv.contains(&"--node-ip-address=127.0.0.1".to_string()));
        let env: BTreeMap<_, _> = command.env.iter().cloned().collect();
        assert_eq!(env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"], "0");
        assert!(!argv.contains(&"--head".to_string()));
        assert!(argv.contains(&"--num-cpus=1".to_string()));
        assert!(argv.contains(&"--temp-dir=/tmp/rs-abc/w0".to_string()));
        assert!(argv.contains(&"--min-worker-port=20110".to_string()));
        for head_only in [
            "--head",
            "--port=",
            "--dashboard-port=",
            "--ray-client-server-port=",
            "--dashboard-host=",
            "--memory=",
        ] {
            assert!(
                !argv.iter().any(|a| a.starts_with(head_only)),
                "{head_only} in {argv:?}"
            );
        }
        assert!(
            !command
                .env
                .iter()
                .any(|(k, _)| k == "AUTOSCALER_METRIC_PORT")
        );
    }

    #[test]
    fn user_params_win_except_owned_keys() {
        let mut node = launch(NodeKind::Head(head_ports()));
        node.ray_start_params = BTreeMap::from([
            ("num-cpus".to_string(), "0".to_string()),
            ("dashboard-host".to_string(), "0.0.0.0".to_string()),
            ("node_ip_address".to_string(), "10.1.2.3".to_string()),
            ("port".to_string(), "6379".to_string()),
            ("--temp_dir".to_string(), "/tmp/ray".to_string()),
            (
                "dashboard-agent-listen-port".to_string(),
                "52365".to_string(),
            ),
            ("include-dashboard".to_string(), "false".to_string()),
            ("object-store-memory".to_string(), "100000000".to_string()),
            ("no-monitor".to_string(), "true".to_string()),
            ("ray-debugger-external".to_string(), "false".to_string()),
            ("log-color".to_string(), "true".to_string()),
            ("resources".to_string(), r#"{"TPU": 4}"#.to_string()),
        ]);
        let command = node.command().unwrap();
        let argv = args(&command);
        assert!(argv.contains(&"--num-cpus=0".to_string()));
        assert!(!argv.contains(&"--num-cpus=2".to_string()));
        // KubeRay's idiom for a pod; locally Ray stays on loopback.
        assert!(argv.contains(&"--dashboard-host=127.0.0.1".to_string()));
        assert!(argv.contains(&"--node-ip-address=127.0.0.1".to_string()));
        assert!(
            !argv
                .iter()
                .any(|a| a.contains("0.0.0.0") || a.contains("10.1.2.3"))
        );
        assert!(argv.contains(&"--port=20000".to_string()));
        assert!(
            !argv
                .iter()
                .any(|a| a == "--port=6379" || a.contains("/tmp/ray") || a.contains("52365"))
        );
        assert!(!argv.iter().any(|a| a.starts_with("--include-dashboard")));
        assert!(argv.contains(&"--object-store-memory=100000000".to_string()));
        assert!(argv.contains(&"--no-monitor".to_string()));
        assert!(
            !argv
                .iter()
                .any(|a| a.starts_with("--ray-debugger-external"))
        );
        assert!(argv.contains(&"--log-color=true".to_string()));
        // JSON stays one argument, untouched by any shell.
        assert!(argv.contains(&r#"--resources={"TPU": 4}"#.to_string()));
        let mut overridden = command.overridden.clone();
        overridden.sort();
        assert_eq!(
            overridden,
            [
                "--temp_dir",
                "dashboard-agent-listen-port",
                "dashboard-host",
                "include-dashboard",
                "node_ip_address",
                "port"
            ]
        );
        for key in &overridden {
            assert!(why_owned(key).is_some(), "{key}");
        }
        assert!(why_owned("dashboard-host").unwrap().contains("127.0.0.1"));
        assert!(
            why_owned("--node_ip_address")
                .unwrap()
                .contains("127.0.0.1")
        );
        assert!(why_owned("port").unwrap().contains("port"));
        assert_eq!(why_owned("num-cpus"), None);
    }

    #[test]
    fn labels_and_env_overrides() {
        let mut node = launch(NodeKind::Head(head_ports()));
        node.labels = BTreeMap::from([
            ("group".to_string(), "headgroup".to_string()),
            ("zone".to_string(), "a".to_string()),
        ]);
        node.extra_env = vec![
            ("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S".into(), "10".into()),
            ("FOO".into(), "bar".into()),
        ];
        let command = node.command().unwrap();
        assert!(args(&command).contains(&"--labels=group=headgroup,zone=a".to_string()));
        let env: BTreeMap<_, _> = command.env.iter().cloned().collect();
        assert_eq!(env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"], "10");
        assert_eq!(env["FOO"], "bar");

        node.labels.insert("bad".into(), "a,b".into());
        assert!(matches!(
            node.command(),
            Err(NodeError::InvalidLabel { .. })
        ));
    }

    #[test]
    fn rejects_bad_input() {
        let mut node = launch(NodeKind::Head(head_ports()));
        node.temp_dir = PathBuf::from("/tmp/a-very-long-directory-name-for-ray-sockets");
        let err = node.command().unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::TempDirTooLong {
                    len: 47,
                    max: 38,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/tmp/a-very-long"));

        node.temp_dir = PathBuf::from("tmp/x");
        assert!(matches!(
            node.command(),
            Err(NodeError::TempDirNotAbsolute { .. })
        ));

        node.temp_dir = PathBuf::from("/tmp/x");
        node.ray_start_params = BTreeMap::from([("bad key".to_string(), "1".to_string())]);
        assert!(matches!(
            node.command(),
            Err(NodeError::InvalidParamKey { .. })
        ));

        node.ray_start_params.clear();
        node.ports.min_worker = 30000;
        assert!(matches!(
            node.command(),
            Err(NodeError::WorkerPortRange { .. })
        ));

        let worker = launch(NodeKind::Worker {
            head_gcs_address: String::new(),
        });
        assert!(matches!(
            worker.command(),
            Err(NodeError::InvalidParamValue { .. })
        ));
    }

    #[test]
    fn display_quotes_what_needs_it() {
        let mut node = launch(NodeKind::Head(head_ports()));
        node.ray_start_params =
            BTreeMap::from([("resources".to_string(), r#"{"a": 1}"#.to_string())]);
        let line = node.command().unwrap().display();
        assert!(line.starts_with("/opt/ray/bin/ray start --head --block"));
        assert!(line.contains(r#"'--resources={"a": 1}'"#));
    }

    #[test]
    fn to_command_keeps_arguments_apart() {
        let command = launch(NodeKind::Head(head_ports()))
            .command()
            .unwrap()
            .to_command();
        assert_eq!(command.get_program(), "/opt/ray/bin/ray");
        assert_eq!(command.get_args().next(), Some(OsStr::new("start")));
        assert!(
            command
                .get_envs()
                .any(|(k, v)| k == "RAY_USAGE_STATS_ENABLED" && v == Some(OsStr::new("0")))
        );
    }

    #[test]
    fn allocator_hands_out_distinct_free_ports() {
        let mut ports = PortAllocator::new();
        let head = ports.head_ports().unwrap();
        let node = ports.node_ports(50).unwrap();
        let worker = ports.node_ports(50).unwrap();
        assert_eq!(node.max_worker - node.min_worker, 49);
        let mut all = vec![
            head.gcs,
            head.dashboard,
            head.client_server,
            head.autoscaler_metrics,
            head.dashboard_metrics,
        ];
        for n in [&node, &worker] {
            all.extend([
                n.node_manager,
                n.object_manager,
                n.dashboard_agent_listen,
                n.dashboard_agent_grpc,
                n.runtime_env_agent,
                n.metrics_export,
            ]);
            all.extend(n.min_worker..=n.max_worker);
        }
        let distinct: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(all.iter().all(|p| PortAllocator::DEFAULT_RANGE.contains(p)));
    }

    #[test]
    fn allocator_skips_reserved_and_busy_ports() {
        let busy = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let mut ports = PortAllocator::with_range(busy_port..=busy_port);
        assert!(matches!(ports.port(), Err(NodeError::NoFreePorts { .. })));
        drop(busy);

        let mut ports = PortAllocator::with_range(31000..=31002);
        ports.reserve([31000, 31002]);
        if port_is_free(31001) {
            assert_eq!(ports.port().unwrap(), 31001);
            assert!(ports.port().is_err());
        }
        assert!(PortAllocator::with_range(31000..=31001).block(3).is_err());
    }
}
