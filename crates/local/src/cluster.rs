//! Local Ray clusters: a head process and worker processes per worker group, each in its own
//! process group, with ports and a temp dir of their own so that clusters run side by side.
//! Nodes are supervised like pods: one that exits is started again.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayservice_api::RayClusterSpec;
use rayservice_core::incremental::workers_at_capacity;
use rayservice_core::{EventKind, random_suffix};
use rayservice_ray::auth::AuthToken;
use rayservice_ray::install::RayRuntime;
use rayservice_ray::node::{HeadPorts, NodeKind, NodeLaunch, NodePorts, PortAllocator};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::process;
use crate::settings::Settings;
use crate::store::{ClusterRecord, NodeRecord};

/// What running nodes need from whoever owns the clusters (the controller): where records
/// and logs live, and whom to tell when a node changes. Supervision knows nothing else.
pub trait NodeHost: Send + Sync + 'static {
    /// The node processes.
    fn clusters(&self) -> &Clusters;
    /// Where the nodes' logs go (one folder per cluster below it).
    fn logs_dir(&self) -> PathBuf;
    /// The stored record of a cluster, if it still exists.
    fn cluster_record(&self, cluster: &str) -> Result<Option<ClusterRecord>, String>;
    /// The stored nodes of a cluster.
    fn cluster_nodes(&self, cluster: &str) -> Vec<NodeRecord>;
    /// Stores a node's record.
    fn save_node(&self, node: &NodeRecord) -> Result<(), String>;
    /// Records an event about a cluster's node.
    fn node_event(&self, cluster: &str, kind: EventKind, reason: &str, message: &str);
    /// A node of `cluster` started, stopped or failed: its owner should look again.
    fn node_changed(self: Arc<Self>, cluster: &str);
    /// A node was stopped for good (its group shrank): forget its record.
    fn forget_node(&self, cluster: &str, node: &str);
}

/// Why a cluster could not be planned or a node started.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// No free port was found.
    #[error("no free ports on this machine: {0}")]
    NoPort(String),
    /// The temp dir could not be made.
    #[error("cannot create Ray temp dir {path}: {source}")]
    TempDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Ports and directories of one cluster, chosen when it is created and stored with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterLayout {
    /// GCS port of the head.
    pub gcs_port: u16,
    /// Dashboard port (also Serve's REST API).
    pub dashboard_port: u16,
    /// Ray client server port.
    pub client_port: u16,
    /// Port of the cluster's own Serve proxy (on the head).
    pub serve_port: u16,
    /// Autoscaler metrics port of the head (Ray fixes it otherwise).
    pub autoscaler_metrics_port: u16,
    /// Dashboard metrics port of the head (Ray fixes it otherwise).
    pub dashboard_metrics_port: u16,
    /// Base of the nodes' Ray temp dirs (short: Unix socket paths live under it).
    pub temp_dir: PathBuf,
}

impl ClusterLayout {
    /// Named ports, as a RayCluster's `status.endpoints` lists them.
    pub fn endpoints(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("client".to_string(), self.client_port.to_string()),
            ("dashboard".to_string(), self.dashboard_port.to_string()),
            ("gcs-server".to_string(), self.gcs_port.to_string()),
            ("serve".to_string(), self.serve_port.to_string()),
        ])
    }

    /// Every cluster-level port.
    pub fn ports(&self) -> Vec<u16> {
        vec![
            self.gcs_port,
            self.dashboard_port,
            self.client_port,
            self.serve_port,
            self.autoscaler_metrics_port,
            self.dashboard_metrics_port,
        ]
    }

    /// The head's ports in the form the command builder takes.
    pub fn head_ports(&self) -> HeadPorts {
        HeadPorts {
            gcs: self.gcs_port,
            dashboard: self.dashboard_port,
            client_server: self.client_port,
            autoscaler_metrics: self.autoscaler_metrics_port,
            dashboard_metrics: self.dashboard_metrics_port,
        }
    }
}

/// How long a node that is stopped for good gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Worker processes per node: Serve replicas, the controller and proxy each take one port.
const WORKER_PORTS_PER_NODE: u16 = 100;

/// What the nodes of a cluster are doing.
#[derive(Debug, Clone, Default)]
pub struct NodesState {
    /// The head process runs.
    pub head_running: bool,
    /// Workers wanted by the spec.
    pub workers_desired: i32,
    /// Worker processes running.
    pub workers_running: i32,
    /// Why a node is not running, when one failed.
    pub failure: Option<String>,
}

#[derive(Debug, Default)]
struct NodeRuntime {
    node_type: String,
    group: String,
    running: bool,
    pid: Option<i32>,
    failure: Option<String>,
    /// Being stopped for good (its group shrinks): not started again when it exits.
    retiring: bool,
}

#[derive(Debug, Default)]
struct ClusterRuntime {
    stopping: bool,
    head_ready: bool,
    nodes: BTreeMap<String, NodeRuntime>,
}

/// Every local cluster's node processes.
pub struct Clusters {
    /// Settings in force (where each cluster's private files live).
    pub settings: Settings,
    runtime: tokio::sync::OnceCell<RayRuntime>,
    state: Mutex<HashMap<String, ClusterRuntime>>,
    ports: Mutex<PortAllocator>,
}

impl Clusters {
    /// No clusters yet; Ray is found (or installed) on first use.
    pub fn new(settings: Settings) -> Clusters {
        Clusters {
            settings,
            runtime: tokio::sync::OnceCell::new(),
            state: Mutex::new(HashMap::new()),
            ports: Mutex::new(PortAllocator::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClusterRuntime>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Ray installation, found or installed once.
    pub async fn ray(&self) -> Result<RayRuntime, String> {
        let settings = self.settings.clone();
        self.runtime
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || crate::ray_runtime(&settings, &mut |_| {}))
                    .await
                    .map_err(|e| e.to_string())?
            })
            .await
            .cloned()
    }

    /// Marks ports of stored clusters and nodes as taken (after a restart).
    pub fn reserve_ports(&self, ports: impl IntoIterator<Item = u16>) {
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ports);
    }

    /// Ports of a new node.
    pub fn allocate_node_ports(&self) -> Result<NodePorts, ClusterError> {
        let mut allocator = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        allocator
            .node_ports(WORKER_PORTS_PER_NODE)
            .map_err(|e| ClusterError::NoPort(e.to_string()))
    }

    /// Chooses ports and a temp dir for a new cluster.
    pub fn plan(&self) -> Result<ClusterLayout, ClusterError> {
        let base = std::env::temp_dir().join(format!("rsvc-{}", nix::unistd::getuid()));
        std::fs::create_dir_all(&base).map_err(|source| ClusterError::TempDir {
            path: base.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700));
        }
        let temp_dir = base.join(format!("{}{}", random_suffix(), random_suffix()));
        let mut allocator = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let no_port = |e: rayservice_ray::node::NodeError| ClusterError::NoPort(e.to_string());
        let head = allocator.head_ports().map_err(no_port)?;
        let serve_port = allocator.port().map_err(no_port)?;
        Ok(ClusterLayout {
            gcs_port: head.gcs,
            dashboard_port: head.dashboard,
            client_port: head.client_server,
            serve_port,
            autoscaler_metrics_port: head.autoscaler_metrics,
            dashboard_metrics_port: head.dashboard_metrics,
            temp_dir,
        })
    }

    /// Starts a new cluster in the background: the head, then the workers once the head's GCS answers.
    pub fn start(
        &self,
        host: Arc<dyn NodeHost>,
        name: &str,
        spec: &RayClusterSpec,
        layout: &ClusterLayout,
    ) {
        self.lock().entry(name.to_string()).or_default();
        let node = NodeRecord::new_node(
            name,
            "head",
            "headgroup",
            format!("{name}-head-{}", random_suffix()),
        );
        supervise(host.clone(), node, None);
        let name = name.to_string();
        let spec = spec.clone();
        let layout = layout.clone();
        tokio::spawn(async move {
            let gcs = SocketAddr::from(([127, 0, 0, 1], layout.gcs_port));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while TcpStream::connect_timeout(&gcs, Duration::from_millis(200)).is_err() {
                if tokio::time::Instant::now() > deadline || host.clusters().is_stopping(&name) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            host.clusters()
                .start_missing_workers(host.clone(), &name, &spec);
        });
    }

    /// Starts the workers a spec wants that are not there yet (new cluster, appended groups, or
    /// a larger Serve capacity during an incremental upgrade: a group runs
    /// [`rayservice_core::incremental::workers_at_capacity`] of its replicas).
    pub fn start_missing_workers(
        &self,
        host: Arc<dyn NodeHost>,
        name: &str,
        spec: &RayClusterSpec,
    ) {
        let capacity = host
            .cluster_record(name)
            .ok()
            .flatten()
            .and_then(|record| record.memory.target_capacity);
        for group in &spec.worker_group_specs {
            let wanted = workers_at_capacity(group.desired_replicas(), capacity);
            let have = self.workers_of(name, &group.group_name).len() as i32;
            for _ in have..wanted {
                let node = NodeRecord::new_node(
                    name,
                    "worker",
                    &group.group_name,
                    format!("{name}-worker-{}-{}", group.group_name, random_suffix()),
                );
                // Counted from now on, before its process starts.
                self.set_node(name, &node.name, "worker", &node.group, false, None, None);
                supervise(host.clone(), node, None);
            }
        }
    }

    /// The workers of a group that are not being retired: (node name, pid when running).
    fn workers_of(&self, name: &str, group: &str) -> Vec<(String, Option<i32>)> {
        self.lock()
            .get(name)
            .map(|cluster| {
                cluster
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.node_type == "worker" && n.group == group && !n.retiring)
                    .map(|(node, n)| (node.clone(), n.pid.filter(|_| n.running)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops workers beyond what `capacity` asks of each group, as the autoscaler of a Ray
    /// cluster would: only workers that are idle, i.e. run no Serve replica (`busy` says
    /// whether a process belongs to a replica running on the worker whose process group
    /// leader has that pid). Workers named in `prefer` (a group's `workersToDelete`) go first,
    /// then workers that never started. Returns the workers stopped.
    pub async fn stop_idle_surplus(
        &self,
        host: Arc<dyn NodeHost>,
        name: &str,
        spec: &RayClusterSpec,
        capacity: Option<i32>,
        busy: impl Fn(i32) -> bool,
        prefer: &[String],
    ) -> Vec<String> {
        let Ok(Some(record)) = host.cluster_record(name) else {
            return Vec::new();
        };
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(record.layout) else {
            return Vec::new();
        };
        let marker = layout.temp_dir.display().to_string();
        let mut chosen: Vec<(String, Option<i32>)> = Vec::new();
        for group in &spec.worker_group_specs {
            let wanted = workers_at_capacity(group.desired_replicas(), capacity);
            let workers = self.workers_of(name, &group.group_name);
            let surplus = workers
                .len()
                .saturating_sub(usize::try_from(wanted).unwrap_or(0));
            // Workers that never started go first, then idle running ones.
            let mut idle: Vec<(String, Option<i32>)> = workers
                .into_iter()
                .filter(|(_, pid)| pid.is_none_or(|pid| !busy(pid)))
                .collect();
            idle.sort_by_key(|(node, pid)| (!prefer.contains(node), pid.is_some()));
            chosen.extend(idle.into_iter().take(surplus));
        }
        {
            let mut state = self.lock();
            if let Some(cluster) = state.get_mut(name) {
                for (node, _) in &chosen {
                    if let Some(n) = cluster.nodes.get_mut(node) {
                        n.retiring = true;
                    }
                }
            }
        }
        for (node, pid) in &chosen {
            // Only a process provably started for this cluster is signalled.
            if let Some(pid) = pid
                && process::is_ours(*pid, None, &marker)
            {
                process::stop_group(*pid, STOP_GRACE).await;
            }
            host.forget_node(name, node);
            if let Some(cluster) = self.lock().get_mut(name) {
                cluster.nodes.remove(node);
            }
        }
        chosen.into_iter().map(|(node, _)| node).collect()
    }

    fn is_retiring(&self, cluster: &str, node: &str) -> bool {
        self.lock()
            .get(cluster)
            .and_then(|c| c.nodes.get(node))
            .is_some_and(|n| n.retiring)
    }

    /// Takes over the nodes of a cluster started by an earlier server process.
    pub fn adopt(&self, host: Arc<dyn NodeHost>, nodes: Vec<NodeRecord>, layout: &ClusterLayout) {
        self.reserve_ports(layout.ports());
        for node in &nodes {
            if let Ok(ports) = serde_json::from_value::<NodePorts>(node.ports.clone()) {
                self.reserve_ports(ports.all());
            }
        }
        for node in nodes {
            let marker = layout.temp_dir.display().to_string();
            let alive = node
                .pid
                .is_some_and(|pid| process::is_ours(pid, node.identity.as_deref(), &marker));
            {
                let mut state = self.lock();
                let cluster = state.entry(node.cluster.clone()).or_default();
                if alive && node.node_type == "head" {
                    cluster.head_ready = true;
                }
            }
            supervise(host.clone(), node, alive.then_some(()));
        }
    }

    fn is_stopping(&self, name: &str) -> bool {
        self.lock().get(name).is_none_or(|c| c.stopping)
    }

    /// What the nodes of a cluster do now.
    /// `capacity`: the Serve capacity the cluster is sized for (incremental upgrades).
    pub fn observe_nodes(
        &self,
        name: &str,
        spec: &RayClusterSpec,
        capacity: Option<i32>,
    ) -> NodesState {
        let state = self.lock();
        let workers_desired = spec
            .worker_group_specs
            .iter()
            .map(|group| workers_at_capacity(group.desired_replicas(), capacity))
            .sum();
        let Some(cluster) = state.get(name) else {
            return NodesState {
                workers_desired,
                failure: Some("no node processes (cluster not started)".into()),
                ..Default::default()
            };
        };
        let head = cluster.nodes.values().find(|n| n.node_type == "head");
        NodesState {
            head_running: head.is_some_and(|h| h.running),
            workers_desired,
            workers_running: cluster
                .nodes
                .values()
                // A worker being stopped still holds its resources until its process is gone.
                .filter(|n| n.node_type == "worker" && n.running)
                .count() as i32,
            failure: cluster
                .nodes
                .values()
                .find_map(|n| (!n.running).then(|| n.failure.clone()).flatten()),
        }
    }

    /// Whether the head's dashboard answered since the head started.
    pub fn head_was_ready(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|c| c.head_ready)
    }

    /// Remembers that the head's dashboard answered.
    pub fn mark_head_ready(&self, name: &str) {
        if let Some(cluster) = self.lock().get_mut(name) {
            cluster.head_ready = true;
        }
    }

    /// Name of the head node of a cluster.
    pub fn head_pod_name(&self, name: &str) -> Option<String> {
        self.lock()
            .get(name)?
            .nodes
            .iter()
            .find(|(_, n)| n.node_type == "head")
            .map(|(k, _)| k.clone())
    }

    /// Whether a node runs now, and its pid.
    pub fn node_state(&self, cluster: &str, node: &str) -> (bool, Option<i32>) {
        self.lock()
            .get(cluster)
            .and_then(|c| c.nodes.get(node))
            .map(|n| (n.running, n.pid))
            .unwrap_or((false, None))
    }

    /// Stops every node of a cluster (all at once) and removes its temp dir.
    pub async fn stop(&self, name: &str, temp_dir: Option<&std::path::Path>) {
        let pids: Vec<(String, i32)> = {
            let mut state = self.lock();
            let cluster = state.entry(name.to_string()).or_default();
            cluster.stopping = true;
            let mut pids: Vec<(String, i32)> = cluster
                .nodes
                .values()
                .filter_map(|n| n.pid.map(|p| (n.node_type.clone(), p)))
                .collect();
            pids.sort_by_key(|(kind, _)| kind == "head");
            pids
        };
        // Only a process provably started for this cluster is signalled (its command line
        // names the cluster's own temp dir); a pid that now names another process is left alone.
        let marker = temp_dir.map(|dir| dir.display().to_string());
        let ours = |pid: i32| {
            marker
                .as_deref()
                .is_some_and(|marker| process::is_ours(pid, None, marker))
        };
        let pids: Vec<(String, i32)> = pids.into_iter().filter(|(_, pid)| ours(*pid)).collect();
        // Every node at once, as Kubernetes deletes a cluster's pods: the cluster is going, and
        // nothing is in flight on it any more (it was drained), so Ray's own slow shutdown
        // (tens of seconds after SIGTERM) is not waited for beyond a short grace.
        futures::future::join_all(
            pids.iter()
                .map(|(_, pid)| process::stop_group(*pid, STOP_GRACE)),
        )
        .await;
        if let Some(dir) = temp_dir {
            let stragglers = process::kill_by_marker(&dir.display().to_string());
            if !stragglers.is_empty() {
                tracing::info!(
                    cluster = name,
                    stragglers = stragglers.len(),
                    "killed Ray processes left outside their node's process group"
                );
                // Gone (their ports free) before the cluster counts as stopped.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while stragglers.iter().any(|pid| process::alive(*pid))
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let _ = std::fs::remove_dir_all(dir);
        }
        if !name.is_empty() && !name.contains('/') && !name.starts_with('.') {
            let _ = std::fs::remove_dir_all(self.settings.cluster_dir(name));
        }
        self.lock().remove(name);
    }

    #[allow(clippy::too_many_arguments)]
    fn set_node(
        &self,
        cluster: &str,
        node: &str,
        node_type: &str,
        group: &str,
        running: bool,
        pid: Option<i32>,
        failure: Option<String>,
    ) {
        let mut state = self.lock();
        let entry = state.entry(cluster.to_string()).or_default();
        if node_type == "head" && !running {
            entry.head_ready = false;
        }
        let retiring = entry.nodes.get(node).is_some_and(|n| n.retiring);
        entry.nodes.insert(
            node.to_string(),
            NodeRuntime {
                node_type: node_type.to_string(),
                group: group.to_string(),
                running,
                pid,
                failure,
                retiring,
            },
        );
    }
}

/// What an event says about a `rayStartParams` key local mode sets itself.
fn ignored_param_message(group: &str, key: &str, value: Option<&String>) -> String {
    let why = rayservice_ray::node::why_owned(key).unwrap_or("local mode sets it itself");
    match value {
        Some(value) => {
            format!("rayStartParams {key}: {value:?} of group {group} is ignored: {why}")
        }
        None => format!("rayStartParams {key} of group {group} is ignored: {why}"),
    }
}

/// Keeps one node running until its cluster stops, like a pod's restart policy `Always`.
/// `adopted` is set when the process already runs (started by an earlier server).
fn supervise(host: Arc<dyn NodeHost>, mut node: NodeRecord, adopted: Option<()>) {
    tokio::spawn(async move {
        let clusters = host.clusters();
        let mut first = adopted.is_none();
        let mut backoff = Duration::from_secs(1);
        if adopted.is_some() {
            clusters.set_node(
                &node.cluster,
                &node.name,
                &node.node_type,
                &node.group,
                true,
                node.pid,
                None,
            );
            if let Some(pid) = node.pid {
                while process::alive(pid) && !clusters.is_stopping(&node.cluster) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if clusters.is_stopping(&node.cluster) {
                return;
            }
            clusters.set_node(
                &node.cluster,
                &node.name,
                &node.node_type,
                &node.group,
                false,
                None,
                Some(format!("{} {} exited", node.node_type, node.name)),
            );
            host.clone().node_changed(&node.cluster);
        }
        loop {
            if clusters.is_stopping(&node.cluster)
                || clusters.is_retiring(&node.cluster, &node.name)
            {
                return;
            }
            if !first {
                node.restarts += 1;
                host.node_event(
                    &node.cluster,
                    EventKind::Warning,
                    "NodeRestarted",
                    &format!(
                        "{} node {} exited; starting it again (restart {})",
                        node.node_type, node.name, node.restarts
                    ),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if clusters.is_stopping(&node.cluster) {
                    return;
                }
            }
            first = false;
            let mut child = match start_node(&host, &mut node).await {
                Ok(child) => child,
                Err(why) => {
                    clusters.set_node(
                        &node.cluster,
                        &node.name,
                        &node.node_type,
                        &node.group,
                        false,
                        None,
                        Some(why.clone()),
                    );
                    host.node_event(&node.cluster, EventKind::Warning, "NodeFailed", &why);
                    host.clone().node_changed(&node.cluster);
                    continue;
                }
            };
            clusters.set_node(
                &node.cluster,
                &node.name,
                &node.node_type,
                &node.group,
                true,
                node.pid,
                None,
            );
            host.clone().node_changed(&node.cluster);
            let status = child.wait().await;
            if clusters.is_stopping(&node.cluster)
                || clusters.is_retiring(&node.cluster, &node.name)
            {
                return;
            }
            let why = format!(
                "{} node {} exited ({}); see {}",
                node.node_type,
                node.name,
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                node.log_path
            );
            clusters.set_node(
                &node.cluster,
                &node.name,
                &node.node_type,
                &node.group,
                false,
                None,
                Some(why),
            );
            host.clone().node_changed(&node.cluster);
        }
    });
}

/// Starts one node process and records it.
async fn start_node(
    host: &Arc<dyn NodeHost>,
    node: &mut NodeRecord,
) -> Result<tokio::process::Child, String> {
    let ray = host.clusters().ray().await?;
    let Some(record) = host.cluster_record(&node.cluster)? else {
        return Err(format!("cluster {} is gone", node.cluster));
    };
    let layout: ClusterLayout = serde_json::from_value(record.layout).map_err(|e| e.to_string())?;
    let spec: RayClusterSpec = record.spec;
    let (params, template) = if node.node_type == "head" {
        (
            spec.head_group_spec.ray_start_params.clone(),
            spec.head_group_spec.template.clone(),
        )
    } else {
        let group = spec
            .worker_group_specs
            .iter()
            .find(|g| g.group_name == node.group)
            .ok_or_else(|| format!("worker group {} is gone", node.group))?;
        (group.ray_start_params.clone(), group.template.clone())
    };
    let log_dir = host.logs_dir().join(&node.cluster);
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let log = log_dir.join(format!("{}.log", node.name));
    let ports = match serde_json::from_value::<NodePorts>(node.ports.clone()) {
        Ok(ports) => ports,
        Err(_) => host
            .clusters()
            .allocate_node_ports()
            .map_err(|e| e.to_string())?,
    };
    let kind = if node.node_type == "head" {
        NodeKind::Head(layout.head_ports())
    } else {
        NodeKind::Worker {
            head_gcs_address: format!("127.0.0.1:{}", layout.gcs_port),
        }
    };
    let node_dir = layout.temp_dir.join(if node.node_type == "head" {
        "h".to_string()
    } else {
        node.name.rsplit('-').next().unwrap_or("w").to_string()
    });
    std::fs::create_dir_all(&node_dir)
        .map_err(|e| format!("cannot create {}: {e}", node_dir.display()))?;
    let mut launch = NodeLaunch::for_group(kind, &ray, node_dir, ports.clone(), &params, &template)
        .map_err(|e| format!("node {}: {e}", node.name))?;
    // Every node of the cluster runs with the cluster's own token; the first one makes it.
    let token_file = host.clusters().settings.cluster_token_file(&node.cluster);
    AuthToken::read_or_create(&token_file)
        .map_err(|e| format!("node {}: Ray token: {e}", node.name))?;
    launch.auth_token_file = Some(token_file);
    let command = launch
        .command()
        .map_err(|e| format!("node {}: {e}", node.name))?;
    if node.restarts == 0 {
        for key in &command.overridden {
            host.node_event(
                &node.cluster,
                EventKind::Warning,
                "RayStartParamIgnored",
                &ignored_param_message(&node.group, key, params.get(key)),
            );
        }
    }
    tracing::info!(node = %node.name, command = %command.display(), "starting Ray node");
    node.ports = serde_json::to_value(&ports).unwrap_or_default();
    let child = process::spawn(&command.argv, &command.env, &log).map_err(|e| e.to_string())?;
    node.pid = child.id().map(|p| p as i32);
    node.identity = node.pid.and_then(process::identity);
    node.started_at = k8s_openapi::jiff::Timestamp::now().as_second();
    node.log_path = log.display().to_string();
    host.save_node(node)?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ignored_param_names_the_key_its_value_and_why() {
        let message =
            ignored_param_message("headgroup", "dashboard-host", Some(&"0.0.0.0".to_string()));
        assert_eq!(
            message,
            "rayStartParams dashboard-host: \"0.0.0.0\" of group headgroup is ignored: local Ray listens on 127.0.0.1 only, so that it is not reachable from the network (use the front endpoints to reach it)"
        );
        let message = ignored_param_message("small-group", "port", None);
        assert!(message.starts_with("rayStartParams port of group small-group is ignored: "));
        assert!(message.contains("port"), "{message}");
    }
}
