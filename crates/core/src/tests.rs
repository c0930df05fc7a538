//! Scenario tests: a tiny simulated platform carries out the core's actions.

use k8s_openapi::jiff::Timestamp;
use rayservice_api::{
    RayClusterSpec, RayServiceSpec, RayServiceStatus, UpgradeStrategy, UpgradeType, WorkerGroupSpec,
};

use rayservice_api::serve_api::{ServeAppStatus, ServeDeploymentStatus};

use crate::hash::{cluster_hash, serve_config_hash};
use crate::model::*;
use crate::reconcile;
use crate::status::is_ready;

const CONFIG: &str = "applications:\n- name: fruit_app\n  import_path: fruit.deployment_graph\n  route_prefix: /fruit\n  deployments:\n  - name: MangoStand\n    user_config: {price: 3}\n- name: math_app\n  import_path: conditional_dag.serve_dag\n  route_prefix: /calc\n";

pub(crate) fn spec() -> RayServiceSpec {
    RayServiceSpec {
        serve_config_v2: Some(CONFIG.into()),
        ray_cluster_config: Some(RayClusterSpec {
            ray_version: Some("2.60.0".into()),
            head_group_spec: serde_json::from_value(serde_json::json!({
                "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head"}]}}
            }))
            .expect("head"),
            worker_group_specs: vec![WorkerGroupSpec {
                group_name: "small-group".into(),
                replicas: Some(1),
                template: serde_json::from_value(
                    serde_json::json!({"spec": {"containers": [{"name": "w"}]}}),
                )
                .expect("tpl"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How a simulated Ray answers a submitted config.
#[derive(Clone, Copy, PartialEq)]
enum RayBehaviour {
    Runs,
    Fails,
}

struct World {
    spec: RayServiceSpec,
    generation: i64,
    status: RayServiceStatus,
    clusters: Vec<ObservedCluster>,
    now: i64,
    suffix: u32,
    events: Vec<Event>,
    routed_to: Option<String>,
    submits: Vec<String>,
    behaviour: RayBehaviour,
}

impl World {
    fn new() -> World {
        World {
            spec: spec(),
            generation: 1,
            status: Default::default(),
            clusters: Vec::new(),
            now: 1_800_000_000,
            suffix: 0,
            events: Vec::new(),
            routed_to: None,
            submits: Vec::new(),
            behaviour: RayBehaviour::Runs,
        }
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_second(self.now).expect("time")
    }

    fn edit(&mut self, change: impl FnOnce(&mut RayServiceSpec)) {
        change(&mut self.spec);
        self.generation += 1;
    }

    fn cluster_mut(&mut self, name: &str) -> &mut ObservedCluster {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .expect("cluster exists")
    }

    /// One reconcile; returns its actions after carrying them out.
    fn step(&mut self) -> Vec<Action> {
        let observed = Observed {
            now: self.time(),
            status: self.status.clone(),
            clusters: self.clusters.clone(),
            fresh_suffix: format!("c{:04}", self.suffix),
            watch_driven: false,
            traffic_split: TrafficSplit::None,
        };
        let desired = Desired::new("svc", self.generation, &self.spec);
        let decision = reconcile(&desired, &observed);
        let again = reconcile(&desired, &observed);
        assert_eq!(decision, again, "the core must be deterministic");
        for action in &decision.actions {
            self.apply(action);
        }
        self.status = decision.status;
        decision.actions
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::CreateCluster {
                name, spec, memory, ..
            } => {
                self.suffix += 1;
                assert!(
                    !self.clusters.iter().any(|c| &c.name == name),
                    "duplicate cluster {name}"
                );
                self.clusters.push(ObservedCluster {
                    name: name.clone(),
                    spec: (**spec).clone(),
                    memory: memory.clone(),
                    created_at: self.time(),
                    nodes: NodesObservation {
                        workers_desired: spec
                            .worker_group_specs
                            .iter()
                            .map(|g| g.desired_replicas())
                            .sum(),
                        ..Default::default()
                    },
                    serve: ServeObservation::Unknown,
                    in_flight: None,
                    traffic: None,
                });
            }
            Action::UpdateClusterInPlace { name, spec, memory } => {
                let cluster = self.cluster_mut(name);
                cluster.spec = (**spec).clone();
                cluster.memory = memory.clone();
            }
            Action::SubmitServeConfig {
                cluster,
                config,
                config_hash,
                ..
            } => {
                self.submits.push(cluster.clone());
                let behaviour = self.behaviour;
                let target = self.cluster_mut(cluster);
                target.memory.submitted_config_hash = Some(config_hash.clone());
                let apps = config["applications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                target.serve = ServeObservation::Reachable {
                    applications: apps
                        .iter()
                        .map(|app| ObservedApp {
                            name: app["name"].as_str().unwrap_or_default().to_string(),
                            status: ServeAppStatus::Deploying,
                            message: String::new(),
                            deployments: Vec::new(),
                        })
                        .collect(),
                    serve_endpoints: 1,
                    routes: None,
                };
                if behaviour == RayBehaviour::Fails {
                    self.ray_settles(cluster, "DEPLOY_FAILED");
                }
            }
            Action::RouteTraffic { cluster } => self.routed_to = cluster.clone(),
            Action::SplitTraffic { .. } => panic!("no Gateway on this platform"),
            Action::Remember { cluster, memory } => {
                self.cluster_mut(cluster).memory = memory.clone()
            }
            Action::DeleteCluster { cluster } => {
                assert_ne!(
                    self.routed_to.as_deref(),
                    Some(cluster.as_str()),
                    "deleting the cluster that serves"
                );
                self.clusters.retain(|c| &c.name != cluster);
            }
            Action::Event(event) => self.events.push(event.clone()),
        }
    }

    /// The head of a cluster comes up and its dashboard answers.
    fn head_up(&mut self, name: &str) {
        let cluster = self.cluster_mut(name);
        cluster.nodes.head_up = true;
        cluster.nodes.head_ready = true;
        cluster.memory.dashboard_answered = true;
        cluster.nodes.workers_running = cluster.nodes.workers_desired;
        if cluster.serve == ServeObservation::Unknown {
            cluster.serve = ServeObservation::Reachable {
                applications: Vec::new(),
                serve_endpoints: 0,
                routes: None,
            };
        }
    }

    /// Every application of a cluster reaches `status`.
    fn ray_settles(&mut self, name: &str, status: &str) {
        if let ServeObservation::Reachable { applications, .. } = &mut self.cluster_mut(name).serve
        {
            for app in applications.iter_mut() {
                app.status = ServeAppStatus::from(status.to_string());
                app.message = if status == "DEPLOY_FAILED" {
                    "ModuleNotFoundError: No module named 'fruit'".into()
                } else {
                    String::new()
                };
                app.deployments = vec![ObservedDeployment {
                    name: "MangoStand".into(),
                    status: if status == "RUNNING" {
                        ServeDeploymentStatus::Healthy
                    } else {
                        ServeDeploymentStatus::Unhealthy
                    },
                    message: String::new(),
                }];
            }
        }
    }

    fn active(&self) -> Option<String> {
        self.status.active_service_status.ray_cluster_name.clone()
    }

    fn pending(&self) -> Option<String> {
        self.status.pending_service_status.ray_cluster_name.clone()
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let c = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition");
        (c.status.clone(), c.reason.clone())
    }

    /// Brings up a first cluster serving every app.
    fn serving() -> World {
        let mut world = World::new();
        world.step();
        let name = world.pending().expect("pending");
        world.head_up(&name);
        world.step();
        world.ray_settles(&name, "RUNNING");
        world.step();
        assert_eq!(world.active(), Some(name));
        world.events.clear();
        world.submits.clear();
        world
    }

    fn event_reasons(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.reason.as_str()).collect()
    }
}

fn creates(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::CreateCluster { .. }))
        .count()
}

#[test]
fn first_apply_creates_deploys_and_becomes_ready() {
    let mut world = World::new();
    let actions = world.step();
    assert_eq!(creates(&actions), 1);
    let name = world.pending().expect("a pending cluster");
    assert_eq!(name, "svc-raycluster-c0000");
    assert_eq!(
        world.condition("Ready"),
        ("False".into(), "Initializing".into())
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SubmitServeConfig { .. })),
        "no submit before the head is up"
    );

    // Nothing new while the head starts.
    assert_eq!(creates(&world.step()), 0);

    world.head_up(&name);
    let actions = world.step();
    assert!(
        matches!(&actions[..], [Action::SubmitServeConfig { cluster, .. }] if *cluster == name)
    );
    assert_eq!(world.routed_to, None, "no traffic while apps deploy");

    // Submitted once only.
    world.step();
    assert_eq!(world.submits.len(), 1);

    world.ray_settles(&name, "RUNNING");
    let actions = world.step();
    assert!(actions.contains(&Action::RouteTraffic {
        cluster: Some(name.clone())
    }));
    assert_eq!(world.active(), Some(name.clone()));
    assert_eq!(world.pending(), None);
    assert_eq!(
        world.condition("Ready"),
        ("True".into(), "NonZeroServeEndpoints".into())
    );
    assert_eq!(
        world.condition("UpgradeInProgress"),
        ("False".into(), "NoPendingCluster".into())
    );
    assert_eq!(world.status.service_status.as_deref(), Some("Running"));
    assert_eq!(world.status.num_serve_endpoints, 1);
    let app = &world.status.active_service_status.application_statuses["fruit_app"];
    assert_eq!(app.status, "RUNNING");
    assert_eq!(
        app.serve_deployment_statuses["MangoStand"].status,
        "HEALTHY"
    );
    assert!(app.health_last_update_time.is_some());
    assert!(is_ready(&world.status));

    // Steady: nothing more to do.
    assert!(world.step().is_empty());
}

#[test]
fn serve_config_change_is_applied_in_place() {
    let mut world = World::serving();
    let active = world.active().expect("active");
    world.edit(|s| s.serve_config_v2 = Some(CONFIG.replace("price: 3", "price: 4")));
    let actions = world.step();
    assert_eq!(creates(&actions), 0);
    assert!(
        matches!(&actions[..], [Action::SubmitServeConfig { cluster, config, .. }]
        if *cluster == active && config["applications"][0]["deployments"][0]["user_config"]["price"] == 4)
    );
    assert_eq!(world.active(), Some(active));
    assert_eq!(
        world.condition("Ready").0,
        "True",
        "traffic keeps flowing during an in-place update"
    );
}

#[test]
fn replicas_change_rolls_out_nothing_and_says_why_once() {
    let mut world = World::serving();
    world.edit(|s| {
        s.ray_cluster_config.as_mut().expect("c").worker_group_specs[0].replicas = Some(2)
    });
    let actions = world.step();
    assert_eq!(creates(&actions), 0);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SubmitServeConfig { .. }))
    );
    assert_eq!(world.event_reasons(), vec!["NotRolledOut"]);
    assert!(
        world.events[0]
            .message
            .contains("workerGroupSpecs[0].replicas")
    );
    world.step();
    assert_eq!(world.events.len(), 1, "explained once per spec change");
}

#[test]
fn cluster_change_is_a_zero_downtime_upgrade() {
    let mut world = World::serving();
    let old = world.active().expect("active");
    world.edit(|s| {
        let c = s.ray_cluster_config.as_mut().expect("c");
        c.worker_group_specs[0].replicas = Some(2);
        c.ray_version = Some("2.100.0".into());
    });
    let actions = world.step();
    assert_eq!(creates(&actions), 1);
    let new = world.pending().expect("pending");
    assert_ne!(new, old);
    assert!(
        world
            .events
            .iter()
            .any(|e| e.reason == "ClusterCreated" && e.message.contains("rayVersion"))
    );
    assert_eq!(
        world.condition("UpgradeInProgress"),
        ("True".into(), "BothActivePendingClustersExist".into())
    );
    assert_eq!(
        world.condition("Ready").0,
        "True",
        "the old cluster keeps serving"
    );
    let pending_cluster = world.clusters.iter().find(|c| c.name == new).expect("new");
    assert_eq!(
        pending_cluster.nodes.workers_desired, 2,
        "the new cluster has the edited replicas"
    );

    world.head_up(&new);
    let actions = world.step();
    assert!(matches!(&actions[..], [Action::SubmitServeConfig { cluster, .. }] if *cluster == new));
    assert_eq!(
        world.routed_to.as_deref(),
        Some(old.as_str()),
        "traffic stays while apps deploy"
    );
    world.step();
    assert!(
        world
            .status
            .pending_service_status
            .application_statuses
            .contains_key("fruit_app")
    );

    world.ray_settles(&new, "RUNNING");
    let actions = world.step();
    assert!(actions.contains(&Action::RouteTraffic {
        cluster: Some(new.clone())
    }));
    assert_eq!(world.active(), Some(new.clone()));
    assert_eq!(world.pending(), None);
    let retiring = world
        .clusters
        .iter()
        .find(|c| c.name == old)
        .expect("old still there");
    assert_eq!(
        retiring.memory.delete_at.map(|t| t.as_second()),
        Some(world.now + 60)
    );

    world.now += 30;
    assert!(
        !world
            .step()
            .iter()
            .any(|a| matches!(a, Action::DeleteCluster { .. }))
    );
    world.now += 31;
    let actions = world.step();
    assert!(actions.contains(&Action::DeleteCluster {
        cluster: old.clone()
    }));
    assert_eq!(world.clusters.len(), 1);
    assert_eq!(world.condition("Ready").0, "True");
}

#[test]
fn a_bad_pending_cluster_never_takes_traffic() {
    let mut world = World::serving();
    let old = world.active().expect("active");
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into()));
    world.step();
    let new = world.pending().expect("pending");
    world.head_up(&new);
    world.behaviour = RayBehaviour::Fails;
    world.step();
    for _ in 0..5 {
        world.now += 1000;
        world.step();
    }
    assert_eq!(world.routed_to.as_deref(), Some(old.as_str()));
    assert_eq!(world.active(), Some(old));
    assert_eq!(world.pending(), Some(new));
    assert_eq!(
        world.status.pending_service_status.application_statuses["fruit_app"].status,
        "DEPLOY_FAILED"
    );
    let upgrading = world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "UpgradeInProgress")
        .expect("condition");
    assert!(
        upgrading.message.contains("DEPLOY_FAILED")
            && upgrading.message.contains("No module named"),
        "{}",
        upgrading.message
    );
}

#[test]
fn spec_change_during_upgrade_replaces_the_pending_cluster() {
    let mut world = World::serving();
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into()));
    world.step();
    let first = world.pending().expect("pending");
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.62.0".into()));
    let actions = world.step();
    assert!(actions.contains(&Action::DeleteCluster {
        cluster: first.clone()
    }));
    assert_eq!(creates(&actions), 1);
    let second = world.pending().expect("pending");
    assert_ne!(first, second);
    assert_eq!(
        world.clusters.len(),
        2,
        "one active and one pending, never two pending"
    );
}

#[test]
fn serve_change_during_upgrade_goes_to_the_pending_cluster_only() {
    let mut world = World::serving();
    let old = world.active().expect("active");
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into()));
    world.step();
    let new = world.pending().expect("pending");
    world.head_up(&new);
    world.step();
    world.submits.clear();
    world.edit(|s| s.serve_config_v2 = Some(CONFIG.replace("price: 3", "price: 4")));
    world.step();
    assert_eq!(world.submits, vec![new]);
    let old_hash = world
        .clusters
        .iter()
        .find(|c| c.name == old)
        .and_then(|c| c.memory.submitted_config_hash.clone());
    assert_ne!(old_hash, None);
}

#[test]
fn upgrade_strategy_none_records_but_does_not_roll_out() {
    let mut world = World::serving();
    world.edit(|s| {
        s.upgrade_strategy = Some(UpgradeStrategy {
            type_: Some(UpgradeType::None),
            cluster_upgrade_options: None,
        });
        s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into());
    });
    let actions = world.step();
    assert_eq!(creates(&actions), 0);
    assert_eq!(world.event_reasons(), vec!["UpgradeSkipped"]);
    assert!(world.events[0].message.contains("rayVersion"));
    let (status, reason) = world.condition("UpgradeInProgress");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "UpgradeSkipped")
    );
    world.step();
    assert_eq!(
        world.events.len(),
        1,
        "the event once, the condition for as long as it holds"
    );
    assert_eq!(world.condition("UpgradeInProgress").1, "UpgradeSkipped");
}

#[test]
fn appended_worker_group_updates_the_cluster_in_place() {
    let mut world = World::serving();
    let active = world.active().expect("active");
    world.edit(|s| {
        let c = s.ray_cluster_config.as_mut().expect("c");
        let mut group = c.worker_group_specs[0].clone();
        group.group_name = "extra".into();
        c.worker_group_specs.push(group);
    });
    let actions = world.step();
    assert_eq!(creates(&actions), 0);
    assert!(matches!(&actions[1], Action::UpdateClusterInPlace { name, .. } if *name == active));
}

#[test]
fn unreachable_dashboard_beyond_threshold_replaces_the_cluster() {
    let mut world = World::serving();
    world.edit(|s| s.deployment_unhealthy_second_threshold = Some(10));
    let old = world.active().expect("active");
    let since = world.time();
    world.cluster_mut(&old).serve = ServeObservation::Unreachable {
        since,
        error: "connection refused".into(),
    };
    world.now += 5;
    assert_eq!(creates(&world.step()), 0, "within the threshold");
    world.now += 6;
    let actions = world.step();
    assert_eq!(creates(&actions), 1);
    assert!(
        world
            .events
            .iter()
            .any(|e| e.reason == "ClusterUnhealthy" && e.kind == EventKind::Warning)
    );
    assert_eq!(
        world.routed_to.as_deref(),
        Some(old.as_str()),
        "traffic stays until the new one is ready"
    );
    let new = world.pending().expect("pending");
    world.head_up(&new);
    world.step();
    world.ray_settles(&new, "RUNNING");
    world.step();
    assert_eq!(world.routed_to.as_deref(), Some(new.as_str()));
}

#[test]
fn failing_application_beyond_threshold_replaces_the_cluster() {
    let mut world = World::serving();
    world.edit(|s| s.service_unhealthy_second_threshold = Some(20));
    let old = world.active().expect("active");
    world.ray_settles(&old, "UNHEALTHY");
    world.step();
    assert_eq!(
        world.condition("Ready"),
        ("False".into(), "ServeApplicationsFailed".into())
    );
    world.now += 15;
    assert_eq!(creates(&world.step()), 0);
    world.now += 10;
    assert_eq!(creates(&world.step()), 1);
    assert!(
        world
            .events
            .iter()
            .any(|e| e.reason == "ClusterUnhealthy" && e.message.contains("UNHEALTHY"))
    );
}

#[test]
fn head_restart_without_applications_gets_its_config_again() {
    let mut world = World::serving();
    let active = world.active().expect("active");
    world.cluster_mut(&active).serve = ServeObservation::Reachable {
        applications: Vec::new(),
        serve_endpoints: 1,
        routes: None,
    };
    let actions = world.step();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SubmitServeConfig { cluster, .. } if *cluster == active))
    );
    assert!(world.event_reasons().contains(&"ServeConfigResubmitted"));
}

#[test]
fn refused_config_is_not_sent_again_and_status_says_why() {
    let mut world = World::new();
    world.step();
    let name = world.pending().expect("pending");
    world.head_up(&name);
    let config_hash = {
        let config = rayservice_api::ServeConfig::parse(CONFIG, "x").expect("valid");
        serve_config_hash(&config.to_json())
    };
    world.cluster_mut(&name).memory.rejected_config = Some(crate::RejectedConfig {
        hash: config_hash,
        message: "Deployment 'Nope' not found".into(),
    });
    let actions = world.step();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SubmitServeConfig { .. }))
    );
    let ready = world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(ready.reason, "ServeConfigRejected");
    assert!(ready.message.contains("Nope"));
}

#[test]
fn first_cluster_serves_healthy_apps_even_when_one_fails() {
    let mut world = World::new();
    world.step();
    let name = world.pending().expect("pending");
    world.head_up(&name);
    world.step();
    world.ray_settles(&name, "RUNNING");
    if let ServeObservation::Reachable { applications, .. } = &mut world.cluster_mut(&name).serve {
        applications[1].status = ServeAppStatus::DeployFailed;
        applications[1].message = "No module named 'conditional_dag'".into();
    }
    world.step();
    assert_eq!(world.routed_to.as_deref(), Some(name.as_str()));
    let ready = world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ServeApplicationsFailed")
    );
    assert!(ready.message.contains("conditional_dag"));
}

#[test]
fn first_cluster_serves_as_soon_as_one_app_runs_but_is_not_ready() {
    let mut world = World::new();
    world.step();
    let name = world.pending().expect("pending");
    world.head_up(&name);
    world.step();
    if let ServeObservation::Reachable { applications, .. } = &mut world.cluster_mut(&name).serve {
        applications[0].status = ServeAppStatus::Running;
        applications[1].deployments = vec![ObservedDeployment {
            name: "Router".into(),
            status: ServeDeploymentStatus::Updating,
            message: "Deployment 'Router' has 1 replica waiting for resources: {CPU: 64}".into(),
        }];
    }
    world.step();
    assert_eq!(world.routed_to.as_deref(), Some(name.as_str()));
    let ready = world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "WaitForServeDeploymentReady")
    );
    assert!(
        ready.message.contains("math_app DEPLOYING") && ready.message.contains("CPU: 64"),
        "{}",
        ready.message
    );
    world.ray_settles(&name, "RUNNING");
    world.step();
    assert_eq!(world.condition("Ready").0, "True");
}

#[test]
fn a_second_cluster_needs_every_app_running() {
    let mut world = World::serving();
    let old = world.active().expect("active");
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into()));
    world.step();
    let new = world.pending().expect("pending");
    world.head_up(&new);
    world.step();
    if let ServeObservation::Reachable { applications, .. } = &mut world.cluster_mut(&new).serve {
        applications[0].status = ServeAppStatus::Running;
    }
    world.step();
    assert_eq!(world.routed_to.as_deref(), Some(old.as_str()));
}

#[test]
fn every_app_failing_on_the_first_cluster_is_reported_and_not_routed() {
    let mut world = World::new();
    world.behaviour = RayBehaviour::Fails;
    world.step();
    let name = world.pending().expect("pending");
    world.head_up(&name);
    world.step();
    world.step();
    assert_eq!(world.routed_to, None);
    let ready = world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(ready.reason, "Initializing");
    assert!(
        ready.message.contains("DEPLOY_FAILED") && ready.message.contains("No module named"),
        "{}",
        ready.message
    );
}

#[test]
fn a_cluster_left_by_an_interrupted_create_is_adopted_not_duplicated() {
    let mut world = World::new();
    world.step();
    // The platform crashed before writing the status: the cluster exists, the status does not name it.
    world.status = Default::default();
    let actions = world.step();
    assert_eq!(creates(&actions), 0);
    assert_eq!(world.clusters.len(), 1);
    assert_eq!(
        world.pending().as_deref(),
        Some(world.clusters[0].name.as_str())
    );
}

#[test]
fn a_stray_cluster_of_another_spec_is_removed() {
    let mut world = World::serving();
    let mut stray = world.clusters[0].clone();
    stray.name = "svc-raycluster-stray".into();
    stray.memory.spec_hash = "other".into();
    world.clusters.push(stray);
    let actions = world.step();
    assert!(actions.contains(&Action::DeleteCluster {
        cluster: "svc-raycluster-stray".into()
    }));
}

#[test]
fn invalid_spec_is_reported_and_touches_nothing() {
    let mut world = World::serving();
    world.edit(|s| s.serve_config_v2 = Some("applications: [".into()));
    let actions = world.step();
    assert!(
        matches!(&actions[..], [Action::Event(Event { reason, kind: EventKind::Warning, .. })] if reason == "ValidationFailed")
    );
    assert_eq!(
        world.condition("Ready"),
        ("False".into(), "ValidationFailed".into())
    );
    assert_eq!(world.clusters.len(), 1);
    assert!(world.step().is_empty(), "reported once");
}

#[test]
fn hash_recorded_on_the_cluster_is_the_spec_hash() {
    let mut world = World::new();
    world.step();
    assert_eq!(
        world.clusters[0].memory.spec_hash,
        cluster_hash(world.spec.ray_cluster_config.as_ref().expect("c"))
    );
}

#[test]
fn traffic_waits_until_the_serve_proxy_routes_every_app() {
    let mut world = World::serving();
    let old = world.active().expect("active");
    world.edit(|s| s.ray_cluster_config.as_mut().expect("c").ray_version = Some("2.61.0".into()));
    world.step();
    let new = world.pending().expect("pending");
    world.head_up(&new);
    world.step();
    world.ray_settles(&new, "RUNNING");
    if let ServeObservation::Reachable { routes, .. } = &mut world.cluster_mut(&new).serve {
        *routes = Some(vec!["/fruit".into()]);
    }
    world.step();
    assert_eq!(
        world.routed_to.as_deref(),
        Some(old.as_str()),
        "/calc is not routed yet"
    );
    if let ServeObservation::Reachable { routes, .. } = &mut world.cluster_mut(&new).serve {
        *routes = Some(vec!["/fruit".into(), "/calc".into()]);
    }
    world.step();
    assert_eq!(world.routed_to.as_deref(), Some(new.as_str()));
}

#[test]
fn an_in_place_update_is_narrated_deployment_by_deployment() {
    let mut world = World::serving();
    assert!(
        world.events.is_empty(),
        "the first deployment is not narrated"
    );
    let active = world.active().expect("active");
    world.edit(|s| s.serve_config_v2 = Some(CONFIG.replace("price: 3", "price: 4")));
    world.step();
    if let ServeObservation::Reachable { applications, .. } = &mut world.cluster_mut(&active).serve
    {
        applications[0].status = ServeAppStatus::Running;
        applications[0].deployments = vec![ObservedDeployment {
            name: "MangoStand".into(),
            status: ServeDeploymentStatus::Updating,
            message: String::new(),
        }];
    }
    let first = world.step();
    assert!(
        first.is_empty()
            || world
                .events
                .iter()
                .all(|e| e.reason == "DeploymentStatusChanged")
    );
    world.ray_settles(&active, "RUNNING");
    world.step();
    let narrated: Vec<&str> = world
        .events
        .iter()
        .filter(|e| e.reason == "DeploymentStatusChanged")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        narrated,
        vec![
            "fruit_app/MangoStand: HEALTHY -> UPDATING",
            "fruit_app/MangoStand: UPDATING -> HEALTHY"
        ]
    );
    assert_eq!(
        world.condition("Ready").0,
        "True",
        "still Ready while a deployment updates in place"
    );
}
