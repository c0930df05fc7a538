//! The contract driven end to end with no HTTP: a fake Serve API per cluster, observed through
//! [`contract::ask`] and [`contract::see`], decided by [`reconcile`], submissions through
//! [`contract::submit`], memory kept as a platform keeps it. Every event reason either platform
//! records for a RayService comes out of these scenarios.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::executor::block_on;
use k8s_openapi::jiff::Timestamp;
use rayservice_api::serve_api::{
    ObservedApp, ObservedDeployment, ServeApi, ServeAppStatus, ServeDeploymentStatus, SubmitError,
};
use rayservice_api::{RayServiceSpec, UpgradeStrategy, UpgradeType, WorkerGroupSpec};

use crate::contract::{self, ClusterMemory, DashboardAnswer, ProxyFacts};
use crate::model::*;
use crate::reconcile;
use crate::status;
use crate::tests::spec;

/// What a fake dashboard does when asked.
#[derive(Debug, Clone, PartialEq)]
enum Mood {
    /// Answers; submitted apps deploy and then run.
    Fine,
    /// Connection refused on every call.
    Down,
    /// Refuses every PUT with HTTP 400.
    Refuses,
    /// Fails every PUT with HTTP 500 (the GET answers).
    PutFails,
}

/// One cluster's Serve, in memory.
struct FakeServe {
    mood: Mutex<Mood>,
    apps: Mutex<Vec<ObservedApp>>,
    puts: Mutex<Vec<serde_json::Value>>,
}

impl FakeServe {
    fn new() -> Self {
        FakeServe {
            mood: Mutex::new(Mood::Fine),
            apps: Mutex::new(Vec::new()),
            puts: Mutex::new(Vec::new()),
        }
    }

    fn mood(&self) -> Mood {
        self.mood.lock().expect("mood").clone()
    }

    fn set_mood(&self, mood: Mood) {
        *self.mood.lock().expect("mood") = mood;
    }

    /// Every submitted app moves one step: DEPLOYING -> RUNNING with a healthy deployment.
    fn settle(&self) {
        for app in self.apps.lock().expect("apps").iter_mut() {
            app.status = ServeAppStatus::Running;
            for deployment in &mut app.deployments {
                deployment.status = ServeDeploymentStatus::Healthy;
            }
        }
    }

    fn set_deployments(&self, status: ServeDeploymentStatus) {
        for app in self.apps.lock().expect("apps").iter_mut() {
            for deployment in &mut app.deployments {
                deployment.status = status.clone();
            }
        }
    }

    /// The head restarted without GCS fault tolerance: Serve forgot everything.
    fn forget(&self) {
        self.apps.lock().expect("apps").clear();
    }
}

impl ServeApi for FakeServe {
    async fn applications(&self) -> Result<Vec<ObservedApp>, String> {
        match self.mood() {
            Mood::Down => Err("connection refused".into()),
            _ => Ok(self.apps.lock().expect("apps").clone()),
        }
    }

    async fn submit(&self, config: &serde_json::Value) -> Result<(), SubmitError> {
        match self.mood() {
            Mood::Down => Err(SubmitError::Failed("connection refused".into())),
            Mood::Refuses => Err(SubmitError::Rejected(
                "1 validation error for ServeDeploySchema: duplicate route_prefix".into(),
            )),
            Mood::PutFails => Err(SubmitError::Failed(
                "answered HTTP 500: Traceback (most recent call last):\n  File \"x.py\"\nValueError: boom"
                    .into(),
            )),
            Mood::Fine => {
                self.puts.lock().expect("puts").push(config.clone());
                let apps = config["applications"].as_array().cloned().unwrap_or_default();
                *self.apps.lock().expect("apps") = apps
                    .iter()
                    .map(|app| ObservedApp {
                        name: app["name"].as_str().unwrap_or_default().to_string(),
                        status: ServeAppStatus::Deploying,
                        message: String::new(),
                        deployments: vec![ObservedDeployment {
                            name: "MangoStand".into(),
                            status: ServeDeploymentStatus::Updating,
                            message: String::new(),
                        }],
                    })
                    .collect();
                Ok(())
            }
        }
    }
}

/// A platform's cluster: its memory as persisted, its head, its Serve.
struct FakeCluster {
    name: String,
    spec: rayservice_api::RayClusterSpec,
    created_at: Timestamp,
    memory: ClusterMemory,
    head_up: bool,
    serve: FakeServe,
    /// Requests in flight on it, as a front endpoint counts them.
    in_flight: u64,
    /// Requests sent to it and failed, as a front endpoint counts them.
    traffic: TrafficCounts,
}

/// How a fake platform splits traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Splitter {
    /// It cannot (Kubernetes without the Gateway API).
    None,
    /// Its own endpoint splits and counts requests (local mode).
    Itself,
    /// Through a Gateway it writes (Kubernetes with the Gateway API).
    Gateway,
}

/// The Gateway and its HTTPRoute as written.
#[derive(Debug, Clone)]
struct FakeGateway {
    class: String,
    backends: Vec<WeightedCluster>,
}

/// A condition `type_` that holds, as a Gateway controller writes it.
fn holds(type_: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: type_.into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ),
    }
}

/// A platform that does only what a platform may: gather facts, carry out, persist.
struct Platform {
    spec: RayServiceSpec,
    generation: i64,
    status: rayservice_api::RayServiceStatus,
    clusters: Vec<FakeCluster>,
    now: i64,
    created: u32,
    routed_to: Option<String>,
    reasons: BTreeSet<String>,
    events: Vec<Event>,
    watch_driven: bool,
    last_requeue: Duration,
    /// How the platform splits traffic by weight.
    splitter: Splitter,
    /// The Gateway and HTTPRoute as last written ([`Action::SplitTraffic`]).
    gateway: Option<FakeGateway>,
    /// A Gateway controller programs what is written (else the objects stay unaccepted).
    gateway_controller: bool,
    annotations: std::collections::BTreeMap<String, String>,
}

impl Platform {
    fn new() -> Self {
        Platform {
            spec: spec(),
            generation: 1,
            status: Default::default(),
            clusters: Vec::new(),
            now: 1_800_000_000,
            created: 0,
            routed_to: None,
            reasons: BTreeSet::new(),
            events: Vec::new(),
            watch_driven: false,
            last_requeue: Duration::ZERO,
            splitter: Splitter::None,
            gateway: None,
            gateway_controller: true,
            annotations: Default::default(),
        }
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_second(self.now).expect("time")
    }

    fn edit(&mut self, change: impl FnOnce(&mut RayServiceSpec)) {
        change(&mut self.spec);
        self.generation += 1;
    }

    fn cluster(&self, name: &str) -> &FakeCluster {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .expect("cluster exists")
    }

    fn cluster_mut(&mut self, name: &str) -> &mut FakeCluster {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .expect("cluster exists")
    }

    fn active(&self) -> Option<String> {
        self.status.active_service_status.ray_cluster_name.clone()
    }

    fn pending(&self) -> Option<String> {
        self.status.pending_service_status.ray_cluster_name.clone()
    }

    fn record(&mut self, event: Event) {
        self.reasons.insert(event.reason.clone());
        self.events.push(event);
    }

    /// One reconcile, as both platforms run it.
    fn step(&mut self) {
        let now = self.time();
        let active = self.active();
        let mut observed_clusters = Vec::new();
        for cluster in &mut self.clusters {
            let answer = block_on(contract::ask(cluster.head_up.then_some(&cluster.serve)));
            let proxies = match &answer {
                DashboardAnswer::Answered(_) => ProxyFacts {
                    serve_endpoints: 1,
                    routes: None,
                },
                _ => ProxyFacts::default(),
            };
            // Workers follow the capacity the cluster is sized for, at once.
            let workers: i32 = cluster
                .spec
                .worker_group_specs
                .iter()
                .map(|g| {
                    crate::incremental::workers_at_capacity(
                        g.desired_replicas(),
                        cluster.memory.target_capacity,
                    )
                })
                .sum();
            let nodes = NodesObservation {
                head_up: cluster.head_up,
                workers_desired: workers,
                workers_running: workers,
                ..Default::default()
            };
            let serving = active.as_deref() == Some(cluster.name.as_str());
            let seen = contract::see(nodes, answer, proxies, serving, &cluster.memory, now);
            cluster.memory = seen.memory;
            observed_clusters.push(ObservedCluster {
                name: cluster.name.clone(),
                spec: cluster.spec.clone(),
                created_at: cluster.created_at,
                memory: cluster.memory.clone(),
                nodes: seen.nodes,
                serve: seen.serve,
                in_flight: (self.splitter == Splitter::Itself).then_some(cluster.in_flight),
                traffic: (self.splitter == Splitter::Itself).then(|| cluster.traffic.clone()),
            });
        }
        let observed = Observed {
            now,
            status: self.status.clone(),
            clusters: observed_clusters,
            fresh_suffix: format!("f{:04}", self.created),
            watch_driven: self.watch_driven,
            traffic_split: self.traffic_split(),
        };
        let spec = self.spec.clone();
        let annotations = self.annotations.clone();
        let desired =
            Desired::new("svc", self.generation, &spec).with_annotations(Some(&annotations));
        let decision = reconcile(&desired, &observed);
        for action in decision.actions {
            self.carry_out(action);
        }
        self.status = decision.status;
        self.last_requeue = decision.requeue_after;
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::CreateCluster {
                name, spec, memory, ..
            } => {
                self.created += 1;
                assert!(
                    self.clusters.iter().all(|c| c.name != name),
                    "duplicate {name}"
                );
                self.clusters.push(FakeCluster {
                    name,
                    spec: *spec,
                    created_at: self.time(),
                    memory,
                    head_up: false,
                    serve: FakeServe::new(),
                    in_flight: 0,
                    traffic: TrafficCounts::default(),
                });
            }
            Action::UpdateClusterInPlace { name, spec, memory } => {
                let cluster = self.cluster_mut(&name);
                cluster.spec = *spec;
                cluster.memory = memory;
            }
            Action::SubmitServeConfig {
                cluster,
                config,
                config_hash,
                remember_config,
            } => {
                let target = self.cluster(&cluster);
                let outcome = block_on(contract::submit(
                    &target.serve,
                    &cluster,
                    &config,
                    &config_hash,
                    remember_config.then_some(&config),
                    &target.memory,
                ));
                self.cluster_mut(&cluster).memory = outcome.memory;
                for event in outcome.events {
                    self.record(event);
                }
            }
            Action::RouteTraffic { cluster } => self.routed_to = cluster,
            Action::SplitTraffic {
                gateway_class_name,
                backends,
            } => {
                assert_eq!(self.splitter, Splitter::Gateway, "asked of a Gateway only");
                self.gateway = Some(FakeGateway {
                    class: gateway_class_name,
                    backends,
                });
            }
            Action::Remember { cluster, memory } => self.cluster_mut(&cluster).memory = memory,
            Action::DeleteCluster { cluster } => {
                assert_ne!(self.routed_to.as_deref(), Some(cluster.as_str()));
                self.clusters.retain(|c| c.name != cluster);
            }
            Action::Event(event) => self.record(event),
        }
    }

    /// What the platform tells the core about splitting, with the Gateway as last written.
    fn traffic_split(&self) -> TrafficSplit {
        match self.splitter {
            Splitter::None => TrafficSplit::None,
            Splitter::Itself => TrafficSplit::Itself,
            Splitter::Gateway => {
                let programmed = self.gateway_controller;
                let gateway = self.gateway.as_ref();
                TrafficSplit::Gateway(GatewayObservation {
                    gateway: gateway.map(|_| {
                        if programmed {
                            vec![holds("Accepted"), holds("Programmed")]
                        } else {
                            Vec::new()
                        }
                    }),
                    route: gateway.filter(|g| !g.backends.is_empty()).map(|_| {
                        if programmed {
                            vec![vec![holds("Accepted"), holds("ResolvedRefs")]]
                        } else {
                            Vec::new()
                        }
                    }),
                })
            }
        }
    }

    /// Runs reconciles, bringing heads up and letting Ray settle, until nothing is pending.
    fn converge(&mut self) {
        for _ in 0..12 {
            self.step();
            for cluster in &mut self.clusters {
                cluster.head_up = true;
                cluster.serve.settle();
            }
            self.now += 1;
        }
        self.step();
    }

    /// A first cluster serving every app, with its events forgotten.
    fn serving() -> Platform {
        let mut platform = Platform::new();
        platform.converge();
        assert!(platform.active().is_some() && platform.pending().is_none());
        assert!(status::is_ready(&platform.status));
        platform.events.clear();
        platform
    }

    fn saw(&self, reason: &str) -> bool {
        self.events.iter().any(|e| e.reason == reason)
    }
}

#[test]
fn first_apply_goes_through_the_contract() {
    let mut platform = Platform::new();
    platform.step();
    let name = platform.pending().expect("a pending cluster");
    assert!(platform.saw("ClusterCreated"));
    // Head not up: nothing asked, nothing submitted.
    platform.step();
    assert!(
        platform
            .cluster(&name)
            .serve
            .puts
            .lock()
            .expect("puts")
            .is_empty()
    );
    platform.cluster_mut(&name).head_up = true;
    platform.step();
    assert_eq!(
        platform
            .cluster(&name)
            .serve
            .puts
            .lock()
            .expect("puts")
            .len(),
        1
    );
    assert!(platform.saw("ServeConfigSubmitted"));
    assert!(platform.cluster(&name).memory.dashboard_answered);
    assert!(
        platform
            .cluster(&name)
            .memory
            .submitted_config_hash
            .is_some()
    );
    platform.cluster(&name).serve.settle();
    platform.step();
    assert_eq!(platform.active().as_deref(), Some(name.as_str()));
    assert!(platform.saw("Ready"));
    assert!(status::is_ready(&platform.status));
}

#[test]
fn a_failed_submit_is_retried_and_shortened() {
    let mut platform = Platform::new();
    platform.step();
    let name = platform.pending().expect("pending");
    platform.cluster_mut(&name).head_up = true;
    platform.cluster(&name).serve.set_mood(Mood::PutFails);
    platform.step();
    let failed = platform
        .events
        .iter()
        .find(|e| e.reason == contract::SERVE_CONFIG_SUBMIT_FAILED)
        .expect("submit failed event");
    assert_eq!(failed.kind, EventKind::Warning);
    assert!(
        failed.message.contains("ValueError: boom"),
        "{}",
        failed.message
    );
    assert!(!failed.message.contains("x.py"), "{}", failed.message);
    assert!(
        platform
            .cluster(&name)
            .memory
            .submitted_config_hash
            .is_none()
    );
    platform.cluster(&name).serve.set_mood(Mood::Fine);
    platform.step();
    assert!(platform.saw(contract::SERVE_CONFIG_SUBMITTED));
}

#[test]
fn a_refused_config_is_remembered_and_not_sent_again() {
    let mut platform = Platform::new();
    platform.step();
    let name = platform.pending().expect("pending");
    platform.cluster_mut(&name).head_up = true;
    platform.cluster(&name).serve.set_mood(Mood::Refuses);
    platform.step();
    assert!(platform.saw(contract::SERVE_CONFIG_REJECTED));
    let rejected = platform.cluster(&name).memory.rejected_config.clone();
    assert!(rejected.is_some_and(|r| r.message.contains("duplicate route_prefix")));
    let rejections = platform.events.len();
    platform.step();
    platform.step();
    assert_eq!(
        platform.events.len(),
        rejections,
        "refused config sent again"
    );
    let ready = platform
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .expect("Ready");
    assert_eq!(ready.reason, "ServeConfigRejected");
}

#[test]
fn the_unreachable_rule_is_the_same_for_every_platform() {
    let mut platform = Platform::new();
    platform.edit(|s| s.deployment_unhealthy_second_threshold = Some(5));
    platform.step();
    let name = platform.pending().expect("pending");
    // A head that is up but whose dashboard never answered yet is starting, not unreachable,
    // however long it takes.
    platform.cluster_mut(&name).head_up = true;
    platform.cluster(&name).serve.set_mood(Mood::Down);
    for _ in 0..10 {
        platform.step();
        platform.now += 1;
    }
    assert!(platform.cluster(&name).memory.unreachable_since.is_none());
    assert!(!platform.saw("ClusterUnhealthy"));
    platform.cluster(&name).serve.set_mood(Mood::Fine);
    platform.converge();
    assert_eq!(platform.active().as_deref(), Some(name.as_str()));
    // A head that is gone is restarting: nothing is unreachable, and the new head must answer
    // again before it counts as ready (it lost its applications).
    platform.cluster_mut(&name).head_up = false;
    platform.step();
    assert!(platform.cluster(&name).memory.unreachable_since.is_none());
    assert!(!platform.cluster(&name).memory.dashboard_answered);
    platform.cluster_mut(&name).head_up = true;
    platform.step();
    assert!(platform.cluster(&name).memory.dashboard_answered);
    // Once it answered, a silent dashboard on a running head counts.
    platform.cluster(&name).serve.set_mood(Mood::Down);
    platform.step();
    let since = platform.cluster(&name).memory.unreachable_since;
    assert_eq!(since, Some(platform.time()));
    platform.now += 3;
    platform.step();
    assert_eq!(
        platform.cluster(&name).memory.unreachable_since,
        since,
        "the streak goes on"
    );
    assert!(!platform.saw("ClusterUnhealthy"));
    platform.now += 3;
    platform.step();
    let unhealthy = platform
        .events
        .iter()
        .find(|e| e.reason == "ClusterUnhealthy")
        .expect("replaced past the threshold");
    assert!(
        unhealthy.message.contains("connection refused"),
        "{}",
        unhealthy.message
    );
    assert!(platform.pending().is_some());
    // The dashboard answers again: the streak ends.
    platform.cluster(&name).serve.set_mood(Mood::Fine);
    platform.step();
    assert!(platform.cluster(&name).memory.unreachable_since.is_none());
}

#[test]
fn an_upgrade_switches_traffic_and_deletes_the_old_cluster_when_due() {
    let mut platform = Platform::serving();
    let old = platform.active().expect("active");
    platform.edit(|s| {
        s.ray_cluster_deletion_delay_seconds = Some(30);
        if let Some(cluster) = s.ray_cluster_config.as_mut() {
            cluster.ray_version = Some("2.100.0".into());
        }
    });
    platform.converge();
    let new = platform.active().expect("active");
    assert_ne!(new, old);
    assert!(platform.saw("ClusterCreated") && platform.saw("TrafficSwitched"));
    let due = platform.cluster(&old).memory.delete_at.expect("scheduled");
    // Traffic moved during the 12 simulated seconds of `converge`; deletion is 30 s after.
    assert!(
        (18..=30).contains(&(due.as_second() - platform.now)),
        "{due}"
    );
    assert!(platform.last_requeue <= Duration::from_secs(30));
    platform.now = due.as_second();
    platform.step();
    assert!(platform.saw("ClusterDeleted"));
    assert!(platform.clusters.iter().all(|c| c.name != old));
}

#[test]
fn spec_edits_give_the_reasons_a_user_reads() {
    // Replicas: owned by the autoscaler, not rolled out.
    let mut platform = Platform::serving();
    platform.edit(|s| {
        if let Some(cluster) = s.ray_cluster_config.as_mut() {
            cluster.worker_group_specs[0].replicas = Some(2);
        }
    });
    platform.step();
    assert!(platform.saw("NotRolledOut"));

    // An appended worker group joins the running cluster.
    platform.edit(|s| {
        if let Some(cluster) = s.ray_cluster_config.as_mut() {
            let mut group: WorkerGroupSpec = cluster.worker_group_specs[0].clone();
            group.group_name = "extra".into();
            cluster.worker_group_specs.push(group);
        }
    });
    platform.step();
    assert!(platform.saw("WorkerGroupsAdded"));
    assert_eq!(platform.clusters.len(), 1);

    // upgradeStrategy None: recorded, skipped.
    platform.edit(|s| {
        s.upgrade_strategy = Some(UpgradeStrategy {
            type_: Some(UpgradeType::None),
            ..Default::default()
        });
        if let Some(cluster) = s.ray_cluster_config.as_mut() {
            cluster.ray_version = Some("2.100.0".into());
        }
    });
    platform.step();
    assert!(platform.saw("UpgradeSkipped"));
    assert_eq!(platform.clusters.len(), 1);

    // A cluster change, then another before the first is ready: the pending one is replaced.
    platform.edit(|s| {
        s.upgrade_strategy = None;
    });
    platform.step();
    let first_pending = platform.pending().expect("pending");
    platform.edit(|s| {
        if let Some(cluster) = s.ray_cluster_config.as_mut() {
            cluster.ray_version = Some("2.101.0".into());
        }
    });
    platform.step();
    assert!(platform.saw("PendingClusterReplaced"));
    assert_ne!(platform.pending(), Some(first_pending));

    // Not valid: nothing happens, and the user is told.
    platform.edit(|s| s.serve_config_v2 = Some("applications: [".into()));
    let clusters = platform.clusters.len();
    platform.step();
    assert!(platform.saw("ValidationFailed"));
    assert_eq!(platform.clusters.len(), clusters);
}

#[test]
fn in_place_updates_and_head_restarts_are_narrated() {
    let mut platform = Platform::serving();
    let name = platform.active().expect("active");
    platform
        .cluster(&name)
        .serve
        .set_deployments(ServeDeploymentStatus::Updating);
    platform.step();
    assert!(platform.saw("DeploymentStatusChanged"));
    platform.cluster(&name).serve.settle();
    platform.step();

    // The head came back with no applications: submitted again.
    let puts = platform
        .cluster(&name)
        .serve
        .puts
        .lock()
        .expect("puts")
        .len();
    platform.cluster(&name).serve.forget();
    platform.step();
    assert!(platform.saw("ServeConfigResubmitted"));
    assert_eq!(
        platform
            .cluster(&name)
            .serve
            .puts
            .lock()
            .expect("puts")
            .len(),
        puts + 1
    );
}

#[test]
fn a_watch_driven_platform_is_not_polled_while_no_head_is_up() {
    let mut platform = Platform::new();
    platform.watch_driven = true;
    platform.step();
    assert_eq!(platform.last_requeue, Duration::from_secs(60));
    let name = platform.pending().expect("pending");
    platform.cluster_mut(&name).head_up = true;
    platform.step();
    assert!(platform.last_requeue <= Duration::from_secs(1));
    // Local mode polls whatever happens.
    let mut local = Platform::new();
    local.step();
    assert!(local.last_requeue <= Duration::from_secs(1));
}

#[test]
fn every_event_reason_comes_out_of_the_contract() {
    let mut seen = BTreeSet::new();
    let scenarios: [fn() -> Platform; 9] = [
        || {
            let mut p = incremental(50, 25, 1);
            p.edit(|s| {
                s.serve_config_v2 = s
                    .serve_config_v2
                    .clone()
                    .map(|c| c.replace("price: 3", "price: 3, greeting: Broken"));
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    c.ray_version = Some("2.100.0".into());
                }
            });
            p.run_until(|p| p.saw("RolledBackAutomatically"));
            p
        },
        || {
            let mut p = incremental(50, 25, 1);
            p.upgrade_to("2.100.0");
            p.run_until(|p| p.status.pending_service_status.traffic_routed_percent == Some(50));
            p.upgrade_to("2.60.0");
            p.converge();
            p
        },
        || {
            let mut p = Platform::serving();
            p.splitter = Splitter::Itself;
            let old = p.active().expect("active");
            p.upgrade_to("2.100.0");
            p.cluster_mut(&old).in_flight = 2;
            p.converge();
            p.now += 120;
            p.converge();
            p
        },
        || {
            let mut p = Platform::serving();
            p.edit(|s| {
                s.ray_cluster_deletion_delay_seconds = Some(0);
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    c.ray_version = Some("2.100.0".into());
                }
            });
            p.converge();
            p
        },
        || {
            let mut p = Platform::new();
            p.step();
            let name = p.pending().expect("pending");
            p.cluster_mut(&name).head_up = true;
            p.cluster(&name).serve.set_mood(Mood::PutFails);
            p.step();
            p.cluster(&name).serve.set_mood(Mood::Refuses);
            p.step();
            p
        },
        || {
            let mut p = Platform::serving();
            p.edit(|s| s.deployment_unhealthy_second_threshold = Some(1));
            let name = p.active().expect("active");
            p.cluster(&name)
                .serve
                .set_deployments(ServeDeploymentStatus::Updating);
            p.step();
            p.cluster(&name).serve.forget();
            p.step();
            p.cluster(&name).serve.set_mood(Mood::Down);
            p.step();
            p.now += 5;
            p.step();
            p
        },
        || {
            let mut p = Platform::serving();
            p.edit(|s| {
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    c.worker_group_specs[0].replicas = Some(3);
                }
            });
            p.step();
            p.edit(|s| {
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    let mut extra = c.worker_group_specs[0].clone();
                    extra.group_name = "extra".into();
                    c.worker_group_specs.push(extra);
                }
            });
            p.step();
            p.edit(|s| {
                s.upgrade_strategy = Some(UpgradeStrategy {
                    type_: Some(UpgradeType::None),
                    ..Default::default()
                });
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    c.ray_version = Some("2.100.0".into());
                }
            });
            p.step();
            p.edit(|s| s.upgrade_strategy = None);
            p.step();
            p.edit(|s| {
                if let Some(c) = s.ray_cluster_config.as_mut() {
                    c.ray_version = Some("2.102.0".into());
                }
            });
            p.step();
            p.edit(|s| s.serve_config_v2 = Some("applications: [".into()));
            p.step();
            p
        },
        || {
            let mut p = Platform::serving();
            p.edit(|s| s.suspend = Some(true));
            p.converge();
            p.edit(|s| s.suspend = Some(false));
            p.converge();
            p
        },
        || {
            let mut p = Platform::serving();
            p.edit(|s| s.exclude_head_pod_from_serve_svc = Some(true));
            p.step();
            let named = p
                .events
                .iter()
                .filter(|e| e.reason == "FieldsNotActedOn")
                .count();
            assert_eq!(named, 1, "named once per generation");
            p.step();
            let again = p
                .events
                .iter()
                .filter(|e| e.reason == "FieldsNotActedOn")
                .count();
            assert_eq!(again, 1, "not again for the same generation");
            p
        },
    ];
    for scenario in scenarios {
        let mut platform = Platform::new();
        platform.converge();
        seen.extend(platform.reasons);
        seen.extend(scenario().reasons);
    }
    let expected: BTreeSet<String> = [
        "ClusterCreated",
        "ClusterDeleted",
        "ClusterUnhealthy",
        "DeploymentStatusChanged",
        "Draining",
        "FieldsNotActedOn",
        "IncrementalUpgradeWithoutGateway",
        "NotRolledOut",
        "PendingClusterReplaced",
        "RayServiceResumed",
        "Ready",
        "RollbackInProgress",
        "RolledBackAutomatically",
        "ServeConfigRejected",
        "ServeConfigResubmitted",
        "ServeConfigSubmitFailed",
        "ServeConfigSubmitted",
        "SuspendRequested",
        "Suspended",
        "TargetCapacityChanged",
        "TrafficMigrated",
        "TrafficSwitched",
        "UpgradeSkipped",
        "ValidationFailed",
        "WorkerGroupsAdded",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(seen, expected);
}

#[test]
fn suspend_deletes_every_cluster_atomically_and_resume_starts_again() {
    let mut platform = Platform::serving();
    let first = platform.active().expect("active");
    platform.edit(|s| s.suspend = Some(true));
    platform.step();
    // Suspending is committed before anything is deleted.
    let condition = |p: &Platform, type_: &str| {
        p.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        condition(&platform, "Suspending"),
        Some(("True".into(), "SuspendRequested".into()))
    );
    assert_eq!(
        platform.status.service_status.as_deref(),
        Some("NotRunning")
    );
    assert!(
        platform
            .status
            .active_service_status
            .ray_cluster_name
            .is_none()
    );
    assert!(
        !platform.clusters.is_empty(),
        "nothing deleted before the commit"
    );
    // Flipping suspend back meanwhile does not stop the deletion.
    platform.edit(|s| s.suspend = Some(false));
    platform.converge();
    assert!(
        platform.clusters.iter().all(|c| c.name != first),
        "the suspended cluster was deleted"
    );
    assert_eq!(
        condition(&platform, "Suspended"),
        Some(("False".into(), "RayServiceResumed".into()))
    );
    // Resumed: a new cluster serves again.
    let again = platform.active().expect("serving again after resume");
    assert_ne!(again, first);

    platform.edit(|s| s.suspend = Some(true));
    platform.converge();
    assert!(platform.clusters.is_empty());
    assert_eq!(
        condition(&platform, "Suspended"),
        Some(("True".into(), "SuspendComplete".into()))
    );
    assert_eq!(
        condition(&platform, "Ready"),
        Some(("False".into(), "SuspendComplete".into()))
    );
    let events = platform.events.len();
    platform.step();
    platform.step();
    assert_eq!(
        platform.events.len(),
        events,
        "a suspended RayService is left alone"
    );
}

/// A serving platform that splits traffic itself, its spec asking for incremental upgrades
/// with `maxSurgePercent` / `stepSizePercent` / `intervalSeconds`, two workers per cluster.
fn incremental(surge: i32, step: i32, interval: i32) -> Platform {
    incremental_on(Splitter::Itself, surge, step, interval)
}

/// The same on a platform splitting through a Gateway, the spec meeting KubeRay's
/// requirements (`gatewayClassName: istio`, `enableInTreeAutoscaling: true`).
fn through_gateway(surge: i32, step: i32, interval: i32) -> Platform {
    incremental_on(Splitter::Gateway, surge, step, interval)
}

fn incremental_on(splitter: Splitter, surge: i32, step: i32, interval: i32) -> Platform {
    let mut platform = Platform::new();
    platform.splitter = splitter;
    let gateway = splitter == Splitter::Gateway;
    platform.edit(|s| {
        s.upgrade_strategy = Some(UpgradeStrategy {
            type_: Some(UpgradeType::NewClusterWithIncrementalUpgrade),
            cluster_upgrade_options: Some(rayservice_api::ClusterUpgradeOptions {
                max_surge_percent: Some(surge),
                step_size_percent: Some(step),
                interval_seconds: Some(interval),
                gateway_class_name: gateway.then(|| "istio".to_string()),
            }),
        });
        if gateway && let Some(c) = s.ray_cluster_config.as_mut() {
            c.enable_in_tree_autoscaling = Some(true);
        }
        s.ray_cluster_deletion_delay_seconds = Some(0);
        if let Some(c) = s.ray_cluster_config.as_mut() {
            c.worker_group_specs[0].replicas = Some(2);
        }
    });
    platform.converge();
    assert!(status::is_ready(&platform.status));
    platform.events.clear();
    platform
}

/// What one look at the platform shows during an upgrade.
#[derive(Debug, Clone, Copy)]
struct Look {
    second: i64,
    pending_traffic: i32,
    active_capacity: i32,
    pending_capacity: i32,
    workers: i32,
    rolling_back: bool,
}

impl Platform {
    /// A second of traffic: 100 requests split by the routed shares; a cluster whose Serve
    /// config greets "Broken" fails half of its requests.
    fn serve_a_second(&mut self) {
        let (active, pending) = (self.active(), self.pending());
        let shares = [
            (
                active,
                self.status
                    .active_service_status
                    .traffic_routed_percent
                    .unwrap_or(100),
            ),
            (
                pending,
                self.status
                    .pending_service_status
                    .traffic_routed_percent
                    .unwrap_or(0),
            ),
        ];
        for (name, share) in shares {
            let Some(cluster) = name.and_then(|n| self.clusters.iter_mut().find(|c| c.name == n))
            else {
                continue;
            };
            let requests = u64::try_from(share).unwrap_or(0);
            let broken = cluster
                .serve
                .puts
                .lock()
                .expect("puts")
                .last()
                .is_some_and(|p| p.to_string().contains("Broken"));
            cluster.traffic.requests += requests;
            if broken {
                cluster.traffic.failures += requests / 2;
            }
            // Latency buckets (µs): 10 ms, or 1 s for a config greeting "Slow".
            let slow = cluster
                .serve
                .puts
                .lock()
                .expect("puts")
                .last()
                .is_some_and(|p| p.to_string().contains("Slow"));
            if cluster.traffic.latency.is_empty() {
                cluster.traffic.latency = vec![(10_000, 0), (1_000_000, 0)];
            }
            cluster.traffic.latency[usize::from(slow)].1 += requests;
        }
    }

    fn upgrade_to(&mut self, version: &str) {
        self.edit(|s| {
            if let Some(c) = s.ray_cluster_config.as_mut() {
                c.ray_version = Some(version.into());
            }
        });
    }

    /// Reconciles once a second (heads up, Serve settling) until `done`, recording each look.
    fn run_until(&mut self, mut done: impl FnMut(&mut Platform) -> bool) -> Vec<Look> {
        let mut looks = Vec::new();
        for _ in 0..600 {
            self.serve_a_second();
            self.step();
            for cluster in &mut self.clusters {
                cluster.head_up = true;
                cluster.serve.settle();
            }
            let (active, pending) = (
                &self.status.active_service_status,
                &self.status.pending_service_status,
            );
            let workers = self
                .clusters
                .iter()
                .map(|c| crate::incremental::workers_at_capacity(2, c.memory.target_capacity))
                .sum();
            looks.push(Look {
                second: self.now,
                pending_traffic: pending.traffic_routed_percent.unwrap_or(0),
                active_capacity: active.target_capacity.unwrap_or(100),
                pending_capacity: pending.target_capacity.unwrap_or(0),
                workers,
                rolling_back: status::condition_true(&self.status, "RollbackInProgress"),
            });
            if done(self) {
                return looks;
            }
            self.now += 1;
        }
        panic!("did not converge: {:?}", self.status);
    }
}

#[test]
fn an_incremental_upgrade_moves_traffic_and_capacity_step_by_step() {
    let mut platform = incremental(50, 25, 5);
    let old = platform.active().expect("active");
    platform.upgrade_to("2.100.0");
    let looks = platform.run_until(|p| p.pending().is_none() && p.active() != Some(old.clone()));
    let new = platform.active().expect("active");
    let looks = &looks[..looks.len() - 1]; // the last look is after the promotion
    // The pending share never decreases, moves are at least intervalSeconds apart, and the
    // Ray nodes never hold more than 150 % of one cluster's workers.
    assert!(
        looks
            .windows(2)
            .all(|w| w[0].pending_traffic <= w[1].pending_traffic)
    );
    let moves: Vec<i64> = looks
        .windows(2)
        .filter(|w| w[1].pending_traffic != w[0].pending_traffic)
        .map(|w| w[1].second)
        .collect();
    assert_eq!(moves.len(), 4, "25 % at a time: {looks:?}");
    assert!(moves.windows(2).all(|m| m[1] - m[0] >= 5), "{moves:?}");
    assert!(
        looks
            .iter()
            .all(|l| l.active_capacity + l.pending_capacity <= 150)
    );
    assert!(looks.iter().all(|l| l.workers <= 3), "{looks:?}");
    // Serve got the capacities in its config.
    let puts = platform
        .cluster(&new)
        .serve
        .puts
        .lock()
        .expect("puts")
        .clone();
    let capacities: Vec<i64> = puts
        .iter()
        .filter_map(|p| p["target_capacity"].as_i64())
        .collect();
    assert_eq!(capacities, [50, 100]);
    // The old cluster went down to 0 before it was removed, the new one serves everything.
    assert_eq!(
        platform.status.active_service_status.traffic_routed_percent,
        Some(100)
    );
    for reason in [
        "TargetCapacityChanged",
        "TrafficMigrated",
        "TrafficSwitched",
    ] {
        assert!(platform.saw(reason), "{reason}");
    }
    assert!(
        platform.saw("IncrementalUpgradeWithoutGateway"),
        "no Gateway needed here, and said so"
    );
    platform.converge();
    assert!(platform.clusters.iter().all(|c| c.name == new));
    assert!(status::is_ready(&platform.status));
}

#[test]
fn reverting_the_spec_mid_upgrade_rolls_traffic_back() {
    let mut platform = incremental(50, 25, 5);
    let old = platform.active().expect("active");
    platform.upgrade_to("2.100.0");
    platform.run_until(|p| p.status.pending_service_status.traffic_routed_percent == Some(50));
    let pending = platform.pending().expect("pending");
    platform.upgrade_to(
        &crate::tests::spec()
            .ray_cluster_config
            .and_then(|c| c.ray_version)
            .expect("version"),
    );
    let looks = platform.run_until(|p| p.pending().is_none());
    assert!(
        looks.iter().any(|l| l.rolling_back),
        "RollbackInProgress seen"
    );
    assert!(
        looks
            .windows(2)
            .all(|w| w[0].pending_traffic >= w[1].pending_traffic)
    );
    assert_eq!(platform.active(), Some(old.clone()));
    assert_eq!(
        platform.status.active_service_status.traffic_routed_percent,
        Some(100)
    );
    assert!(platform.saw("RollbackInProgress"));
    platform.converge();
    assert!(platform.clusters.iter().all(|c| c.name != pending));
    assert!(!status::condition_true(
        &platform.status,
        "RollbackInProgress"
    ));
}

#[test]
fn a_third_spec_mid_upgrade_rolls_back_then_upgrades_afresh() {
    let mut platform = incremental(50, 25, 5);
    platform.upgrade_to("2.100.0");
    platform.run_until(|p| p.status.pending_service_status.traffic_routed_percent == Some(25));
    let second = platform.pending().expect("pending");
    platform.upgrade_to("2.101.0");
    platform.run_until(|p| p.pending().is_some_and(|p| p != second));
    let third = platform.pending().expect("pending");
    platform.run_until(|p| p.active() == Some(third.clone()) && p.pending().is_none());
    platform.converge();
    assert!(platform.clusters.iter().all(|c| c.name == third));
}

#[test]
fn without_traffic_splitting_an_incremental_upgrade_is_a_new_cluster_one_and_says_so() {
    let mut platform = incremental(50, 25, 5);
    platform.splitter = Splitter::None;
    platform.upgrade_to("2.100.0");
    platform.converge();
    assert!(platform.saw("FieldsNotActedOn"));
    assert!(!platform.saw("IncrementalUpgradeWithoutGateway"));
    assert!(platform.saw("TrafficSwitched"));
    assert_eq!(
        platform.status.active_service_status.traffic_routed_percent,
        None
    );
}

#[test]
fn an_old_cluster_stops_once_its_requests_in_flight_finish_or_at_the_drain_deadline() {
    for (finishes, stopped_after) in [(true, 20), (false, 35)] {
        let mut platform = Platform::serving();
        platform.splitter = Splitter::Itself;
        platform
            .annotations
            .insert("rayservice.dev/drain-timeout-seconds".into(), "30".into());
        let old = platform.active().expect("active");
        platform.edit(|s| {
            s.ray_cluster_deletion_delay_seconds = Some(5);
            if let Some(c) = s.ray_cluster_config.as_mut() {
                c.ray_version = Some("2.100.0".into());
            }
        });
        // A long request started on the old cluster just before the switch.
        platform.cluster_mut(&old).in_flight = 1;
        platform.run_until(|p| p.active() != Some(old.clone()));
        let switched = platform.now;
        let looks = platform.run_until(|p| {
            if finishes && p.now - switched >= 20 {
                p.clusters.iter_mut().for_each(|c| c.in_flight = 0);
            }
            p.clusters.iter().all(|c| c.name != old)
        });
        let stopped = looks.last().map(|l| l.second).unwrap_or_default() - switched;
        assert!(
            (stopped_after..stopped_after + 2).contains(&stopped),
            "finishes={finishes}: stopped {stopped}s after the switch"
        );
        assert!(platform.saw("Draining"));
        let deleted = platform
            .events
            .iter()
            .rfind(|e| e.reason == "ClusterDeleted")
            .expect("deleted");
        if !finishes {
            assert!(
                deleted.message.contains("1 request(s) still in flight"),
                "{}",
                deleted.message
            );
        }
    }
}

#[test]
fn a_new_cluster_failing_its_requests_is_rolled_back_automatically_and_not_retried() {
    let mut platform = incremental(50, 25, 5);
    let old = platform.active().expect("active");
    platform.edit(|s| {
        s.serve_config_v2 = Some(
            format!(
                "{}\n  user_config: {{greeting: Broken}}\n",
                s.serve_config_v2.clone().unwrap_or_default().trim_end()
            )
            .replace("applications:", "applications:"),
        );
        if let Some(c) = s.ray_cluster_config.as_mut() {
            c.ray_version = Some("2.100.0".into());
        }
    });
    let looks = platform.run_until(|p| p.pending().is_none());
    assert!(
        looks.iter().all(|l| l.pending_traffic <= 25),
        "stopped at the first step: {looks:?}"
    );
    assert_eq!(platform.active(), Some(old.clone()));
    assert!(platform.saw("RolledBackAutomatically"));
    let condition = platform
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "UpgradeInProgress")
        .expect("condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "RolledBackAutomatically")
    );
    assert!(
        condition.message.contains("failed"),
        "{}",
        condition.message
    );
    // Not retried until the spec changes; the old cluster keeps its own config.
    platform.converge();
    assert_eq!(platform.clusters.len(), 1);
    let puts = platform
        .cluster(&old)
        .serve
        .puts
        .lock()
        .expect("puts")
        .clone();
    assert!(puts.iter().all(|p| !p.to_string().contains("Broken")));
    platform.upgrade_to("2.101.0");
    platform.converge();
    assert!(platform.clusters.len() == 2 || platform.active() != Some(old));
}

#[test]
fn a_new_cluster_failing_during_the_deletion_delay_gives_traffic_back() {
    let mut platform = Platform::serving();
    platform.splitter = Splitter::Itself;
    let old = platform.active().expect("active");
    platform.edit(|s| {
        s.ray_cluster_deletion_delay_seconds = Some(60);
        s.serve_config_v2 = s
            .serve_config_v2
            .clone()
            .map(|c| c.replace("price: 3", "price: 3, greeting: Broken"));
        if let Some(c) = s.ray_cluster_config.as_mut() {
            c.ray_version = Some("2.100.0".into());
        }
    });
    platform.run_until(|p| p.active() != Some(old.clone()));
    let new = platform.active().expect("active");
    platform.run_until(|p| p.saw("RolledBackAutomatically"));
    assert_eq!(platform.active(), Some(old.clone()), "traffic is back");
    assert_eq!(platform.routed_to, Some(old.clone()));
    platform.converge();
    assert!(
        platform.clusters.iter().all(|c| c.name != new),
        "the bad cluster is gone"
    );
    assert_eq!(platform.clusters.len(), 1, "and not started again");
    let condition = platform
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "UpgradeInProgress")
        .expect("condition");
    assert_eq!(condition.reason, "RolledBackAutomatically");
}

#[test]
fn a_slow_new_cluster_is_rolled_back_when_a_p99_ratio_is_asked() {
    for (ratio, rolled_back) in [(None, false), (Some("3"), true)] {
        let mut platform = incremental(50, 25, 5);
        if let Some(ratio) = ratio {
            platform
                .annotations
                .insert("rayservice.dev/max-p99-ratio".into(), ratio.into());
        }
        let old = platform.active().expect("active");
        platform.edit(|s| {
            s.serve_config_v2 = s
                .serve_config_v2
                .clone()
                .map(|c| c.replace("price: 3", "price: 3, greeting: Slow"));
            if let Some(c) = s.ray_cluster_config.as_mut() {
                c.ray_version = Some("2.100.0".into());
            }
        });
        platform.run_until(|p| p.pending().is_none());
        assert_eq!(
            platform.saw("RolledBackAutomatically"),
            rolled_back,
            "{ratio:?}"
        );
        assert_eq!(
            platform.active() == Some(old.clone()),
            rolled_back,
            "{ratio:?}"
        );
        if rolled_back {
            let event = platform
                .events
                .iter()
                .find(|e| e.reason == "RolledBackAutomatically")
                .expect("event");
            assert!(
                event.message.contains("p99 latency reached 1000.0 ms"),
                "{}",
                event.message
            );
        }
    }
}

/// The shares of the route as last written, as (cluster, weight).
fn route(platform: &Platform) -> Vec<WeightedCluster> {
    platform
        .gateway
        .as_ref()
        .map(|g| g.backends.clone())
        .unwrap_or_default()
}

fn share(cluster: &str, weight: i32) -> WeightedCluster {
    WeightedCluster {
        cluster: cluster.to_string(),
        weight,
    }
}

#[test]
fn through_a_gateway_the_route_carries_the_shares_the_status_holds() {
    let mut platform = through_gateway(50, 25, 5);
    let old = platform.active().expect("active");
    assert_eq!(
        platform.gateway.as_ref().map(|g| g.class.as_str()),
        Some("istio")
    );
    assert_eq!(route(&platform), [share(&old, 100)]);
    platform.upgrade_to("2.100.0");
    let mut shares: Vec<i32> = Vec::new();
    let looks = platform.run_until(|p| {
        let route = route(p);
        assert_eq!(
            route,
            crate::incremental::backends(&p.status),
            "written as decided"
        );
        if let Some(pending) = route.get(1)
            && shares.last() != Some(&pending.weight)
        {
            shares.push(pending.weight);
        }
        p.pending().is_none()
    });
    assert_eq!(shares, [0, 25, 50, 75, 100]);
    let capacities: Vec<(i32, i32)> = looks
        .iter()
        .map(|l| (l.active_capacity, l.pending_capacity))
        .collect();
    assert!(capacities.contains(&(50, 100)), "{capacities:?}");
    let new = platform.active().expect("active");
    assert_ne!(new, old);
    assert_eq!(route(&platform), [share(&new, 100)]);
    // The requirements are met, and nothing is said about local mode's shortcuts; the spec's
    // upgrade strategy is acted on (the autoscaler is not: its field is named).
    assert!(!platform.saw("IncrementalUpgradeWithoutGateway"));
    let named: Vec<&str> = platform
        .events
        .iter()
        .filter(|e| e.reason == "FieldsNotActedOn")
        .map(|e| e.message.as_str())
        .collect();
    assert!(!named.is_empty());
    assert!(
        named
            .iter()
            .all(|m| !m.contains("upgradeStrategy") && m.contains("enableInTreeAutoscaling")),
        "{named:?}"
    );
    platform.converge();
    assert!(platform.clusters.iter().all(|c| c.name == new));
    assert_eq!(route(&platform), [share(&new, 100)]);
}

#[test]
fn through_a_gateway_capacity_changes_wait_for_the_gateway_and_the_route() {
    let mut platform = through_gateway(50, 25, 1);
    let old = platform.active().expect("active");
    platform.gateway_controller = false;
    platform.upgrade_to("2.100.0");
    let mut looks = 0;
    platform.run_until(|_| {
        looks += 1;
        looks == 20
    });
    let pending = &platform.status.pending_service_status;
    assert!(pending.ray_cluster_name.is_some());
    assert_eq!(
        (pending.target_capacity, pending.traffic_routed_percent),
        (Some(0), Some(0)),
        "no capacity and no traffic while the Gateway is not accepted"
    );
    let message = platform
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == status::UPGRADE_IN_PROGRESS)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("waits: Gateway svc-gateway is not Accepted and Programmed"),
        "{message}"
    );
    platform.gateway_controller = true;
    platform.run_until(|p| p.pending().is_none());
    assert_ne!(platform.active(), Some(old));
}

#[test]
fn through_a_gateway_kuberays_requirements_apply() {
    fn incremental_spec(
        class: Option<&'static str>,
        autoscaling: bool,
    ) -> impl FnOnce(&mut RayServiceSpec) {
        move |s: &mut RayServiceSpec| {
            s.upgrade_strategy = Some(UpgradeStrategy {
                type_: Some(UpgradeType::NewClusterWithIncrementalUpgrade),
                cluster_upgrade_options: Some(rayservice_api::ClusterUpgradeOptions {
                    max_surge_percent: Some(50),
                    step_size_percent: Some(25),
                    interval_seconds: Some(5),
                    gateway_class_name: class.map(String::from),
                }),
            });
            if let Some(c) = s.ray_cluster_config.as_mut() {
                c.enable_in_tree_autoscaling = Some(autoscaling);
            }
        }
    }
    for (class, autoscaling, field) in [
        (
            None,
            true,
            "spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName",
        ),
        (
            Some("istio"),
            false,
            "spec.rayClusterConfig.enableInTreeAutoscaling",
        ),
    ] {
        let mut platform = Platform::new();
        platform.splitter = Splitter::Gateway;
        platform.edit(incremental_spec(class, autoscaling));
        platform.step();
        assert!(platform.clusters.is_empty(), "nothing runs an invalid spec");
        assert!(platform.gateway.is_none());
        let ready = platform
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .expect("Ready");
        assert_eq!(ready.reason, "ValidationFailed");
        assert!(ready.message.starts_with(field), "{}", ready.message);
        assert!(platform.saw("ValidationFailed"));
    }
    // The same spec where the platform splits by itself: carried out, and said so.
    let mut local = Platform::new();
    local.splitter = Splitter::Itself;
    local.edit(incremental_spec(None, false));
    local.converge();
    assert!(status::is_ready(&local.status));
    assert!(local.saw("IncrementalUpgradeWithoutGateway"));
}

#[test]
fn through_a_gateway_reverting_the_spec_rolls_the_route_back() {
    let mut platform = through_gateway(50, 25, 5);
    let old = platform.active().expect("active");
    let version = crate::tests::spec()
        .ray_cluster_config
        .and_then(|c| c.ray_version)
        .expect("version");
    platform.upgrade_to("2.100.0");
    platform.run_until(|p| p.status.pending_service_status.traffic_routed_percent == Some(50));
    let pending = platform.pending().expect("pending");
    assert_eq!(route(&platform), [share(&old, 50), share(&pending, 50)]);
    platform.upgrade_to(&version);
    let mut shares: Vec<i32> = Vec::new();
    let looks = platform.run_until(|p| {
        let route = route(p);
        assert_eq!(route, crate::incremental::backends(&p.status));
        shares.push(route[0].weight);
        p.pending().is_none()
    });
    assert!(looks.iter().any(|l| l.rolling_back));
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
    assert_eq!(platform.active(), Some(old.clone()));
    assert_eq!(route(&platform), [share(&old, 100)]);
    platform.converge();
    assert!(platform.clusters.iter().all(|c| c.name != pending));
}
