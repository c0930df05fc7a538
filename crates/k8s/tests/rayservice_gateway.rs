//! `NewClusterWithIncrementalUpgrade` on Kubernetes, through the Gateway API, against a real API
//! server (etcd, kube-apiserver and kube-controller-manager from `scripts/k8s-control-plane.sh`)
//! with the Gateway API's standard CRDs installed (`common::GATEWAY_API_MODULE`, the version
//! KubeRay v1.7.0 builds with). `standin` plays the kubelet, Ray (dashboard and Serve proxy on
//! each head pod's IP, `target_capacity` reported as Serve does) and the controller of the
//! GatewayClass (it marks Gateways and HTTPRoutes accepted; no request flows through them).
//!
//! What is checked is what a user sees with `kubectl`: the RayService status fields
//! (`targetCapacity`, `trafficRoutedPercent`, `lastTrafficMigratedTime`, `RollbackInProgress`),
//! the Gateway `S-gateway`, the HTTPRoute `S-httproute` and its weights, the Serve services
//! `C-serve-svc` of both clusters and `S-serve-svc`, the Serve configs each cluster received,
//! and the events. The step parameters are KubeRay's own sets (its e2e tests and sample), with
//! `intervalSeconds` shortened where a set would take minutes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use rayservice_api::{RayCluster, RayService};
use serde_json::Value;

mod common;
mod standin;

use common::{AbortOnDrop, ControlPlane, Operator, Steps, eventually, rayservice_yaml};
use standin::{GatewayController, Kubelet};

const WAIT: Duration = Duration::from_secs(60);

/// `kubectl apply -f` of files in a temporary directory.
struct Kubectl<'a> {
    cp: &'a ControlPlane,
    dir: tempfile::TempDir,
}

impl Kubectl<'_> {
    fn new(cp: &ControlPlane) -> anyhow::Result<Kubectl<'_>> {
        Ok(Kubectl {
            cp,
            dir: tempfile::tempdir()?,
        })
    }

    fn apply(&self, file: &str, yaml: &str) -> anyhow::Result<String> {
        let path: PathBuf = self.dir.path().join(file);
        std::fs::write(&path, yaml)?;
        self.cp
            .kubectl(&["apply", "-f", path.to_str().context("path")?])
    }

    fn delete(&self, file: &str) -> anyhow::Result<String> {
        let path: PathBuf = self.dir.path().join(file);
        self.cp
            .kubectl(&["delete", "-f", path.to_str().context("path")?])
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cp.kubectl(args)
    }
}

/// The control plane with our CRDs (and the Gateway API's when asked), and an admin client.
async fn control_plane(gateway_api: bool) -> anyhow::Result<(ControlPlane, Client)> {
    let cp = ControlPlane::start()?;
    let client = Client::try_from(cp.admin_config().await?)?;
    cp.install_crds(&client).await?;
    if gateway_api {
        cp.install_gateway_api(&client).await?;
    }
    Ok((cp, client))
}

fn gateways(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &rayservice_k8s::gateway::gateway_resource(),
    )
}

fn routes(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &rayservice_k8s::gateway::http_route_resource(),
    )
}

fn condition(service: &RayService, kind: &str) -> Option<(String, String, String)> {
    service
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn selector_cluster(svc: &Service) -> Option<String> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get("ray.io/cluster")
        .cloned()
}

/// (backend service, weight) of an HTTPRoute's rule.
fn weights(route: &DynamicObject) -> Vec<(String, i64)> {
    rayservice_k8s::gateway::route_essentials(route)
        .1
        .into_iter()
        .map(|b| (b.service, b.weight))
        .collect()
}

/// One look at what a user sees of an upgrade.
#[derive(Debug, Clone, PartialEq)]
struct Look {
    active: Option<String>,
    pending: Option<String>,
    active_capacity: Option<i32>,
    pending_capacity: Option<i32>,
    active_traffic: Option<i32>,
    pending_traffic: Option<i32>,
    pending_migrated: Option<String>,
    active_migrated: Option<String>,
    rolling_back: bool,
    /// The HTTPRoute's (backend, weight).
    route: Vec<(String, i64)>,
    /// The cluster `S-serve-svc` selects.
    serve_svc: Option<String>,
}

async fn look(client: &Client, name: &str) -> anyhow::Result<Look> {
    let service = Api::<RayService>::namespaced(client.clone(), "default")
        .get(name)
        .await?;
    let status = service.status.clone().unwrap_or_default();
    let (active, pending) = (
        &status.active_service_status,
        &status.pending_service_status,
    );
    let route = routes(client)
        .get_opt(&format!("{name}-httproute"))
        .await?
        .map(|r| weights(&r))
        .unwrap_or_default();
    let serve_svc = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt(&format!("{name}-serve-svc"))
        .await?
        .and_then(|s| selector_cluster(&s));
    Ok(Look {
        active: active.ray_cluster_name.clone(),
        pending: pending.ray_cluster_name.clone(),
        active_capacity: active.target_capacity,
        pending_capacity: pending.target_capacity,
        active_traffic: active.traffic_routed_percent,
        pending_traffic: pending.traffic_routed_percent,
        pending_migrated: pending.last_traffic_migrated_time.clone(),
        active_migrated: active.last_traffic_migrated_time.clone(),
        rolling_back: condition(&service, "RollbackInProgress").is_some_and(|(s, ..)| s == "True"),
        route,
        serve_svc,
    })
}

/// Records every distinct [`Look`] at RayService `name`, every `every`, until dropped.
fn record(client: Client, name: &str, every: Duration) -> (Arc<Mutex<Vec<Look>>>, AbortOnDrop) {
    let looks: Arc<Mutex<Vec<Look>>> = Arc::default();
    let seen = looks.clone();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Ok(now) = look(&client, &name).await {
                let mut looks = seen.lock().unwrap_or_else(|p| p.into_inner());
                if looks.last() != Some(&now) {
                    looks.push(now);
                }
            }
        }
    });
    (looks, AbortOnDrop(task))
}

fn looks_of(looks: &Arc<Mutex<Vec<Look>>>) -> Vec<Look> {
    looks.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Distinct values in order of appearance, repeats in a row folded.
fn distinct<T: PartialEq + Clone>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for value in values {
        if out.last() != Some(&value) {
            out.push(value);
        }
    }
    out
}

fn seconds(time: &str) -> anyhow::Result<i64> {
    Ok(time.parse::<k8s_openapi::jiff::Timestamp>()?.as_second())
}

/// The upgrade as KubeRay's e2e tests check it, over the looks while a pending cluster existed:
/// capacities and shares move one way only, the pending share never exceeds its capacity, the
/// two capacities never exceed 100 + maxSurgePercent, traffic moves are at least
/// `intervalSeconds` apart, and `S-serve-svc` stays on the active cluster. Returns the pending
/// shares seen.
fn check_forward(looks: &[Look], steps: Steps) -> anyhow::Result<Vec<i32>> {
    let during: Vec<&Look> = looks.iter().filter(|l| l.pending.is_some()).collect();
    ensure!(!during.is_empty(), "no look during the upgrade");
    let serving = distinct(looks.iter().filter_map(|l| l.serve_svc.clone()));
    ensure!(
        serving.len() <= 2,
        "S-serve-svc switched more than once: {serving:?}"
    );
    let mut previous: Option<&Look> = None;
    for look in &during {
        let active_capacity = look.active_capacity.unwrap_or(100);
        let pending_capacity = look.pending_capacity.unwrap_or(0);
        let pending_traffic = look.pending_traffic.unwrap_or(0);
        ensure!(
            active_capacity + pending_capacity <= 100 + steps.surge,
            "capacity above 100 + maxSurgePercent: {look:?}"
        );
        ensure!(
            pending_traffic <= pending_capacity,
            "traffic above capacity: {look:?}"
        );
        // S-serve-svc moves in the reconcile that promotes the new cluster, just before the
        // status says so: a look may catch it between the two writes, once all traffic moved.
        ensure!(
            look.serve_svc == look.active || look.pending_traffic == Some(100),
            "S-serve-svc left the active cluster: {look:?}"
        );
        if let Some(before) = previous
            && before.pending == look.pending
        {
            ensure!(
                active_capacity <= before.active_capacity.unwrap_or(100)
                    && pending_capacity >= before.pending_capacity.unwrap_or(0)
                    && pending_traffic >= before.pending_traffic.unwrap_or(0),
                "not monotonic: {before:?} -> {look:?}"
            );
        }
        previous = Some(look);
    }
    let moves: Vec<i64> = distinct(during.iter().filter_map(|l| l.pending_migrated.clone()))
        .iter()
        .map(|t| seconds(t))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        moves
            .windows(2)
            .all(|w| w[1] - w[0] >= i64::from(steps.interval)),
        "traffic moves closer than intervalSeconds {}: {moves:?}",
        steps.interval
    );
    Ok(distinct(
        during.iter().map(|l| l.pending_traffic.unwrap_or(0)),
    ))
}

/// Serve `target_capacity` of every config a cluster's stand-in Ray received.
fn capacities(kubelet: &Kubelet, cluster: &str) -> Vec<Value> {
    kubelet
        .puts(cluster)
        .iter()
        .map(|p| p.get("target_capacity").cloned().unwrap_or(Value::Null))
        .collect()
}

fn active_of(service: &RayService) -> Option<String> {
    service
        .status
        .as_ref()?
        .active_service_status
        .ray_cluster_name
        .clone()
}

fn pending_of(service: &RayService) -> Option<String> {
    service
        .status
        .as_ref()?
        .pending_service_status
        .ray_cluster_name
        .clone()
}

/// Waits until RayService `name` serves from a cluster other than `old` with none pending.
async fn promoted(rs_api: &Api<RayService>, name: &str, old: &str) -> anyhow::Result<String> {
    eventually(
        &format!("{name}: the new cluster serves alone"),
        WAIT,
        || async {
            let service = rs_api.get(name).await?;
            Ok(active_of(&service).filter(|a| a != old && pending_of(&service).is_none()))
        },
    )
    .await
}

async fn ready(rs_api: &Api<RayService>, name: &str) -> anyhow::Result<String> {
    eventually(&format!("{name} Ready"), WAIT, || async {
        let service = rs_api.get(name).await?;
        let ready = condition(&service, "Ready").is_some_and(|(s, ..)| s == "True");
        Ok(active_of(&service).filter(|_| ready))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_gateway_traffic_and_capacity_move_step_by_step() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (cp, client) = control_plane(true).await?;
    eprintln!("control plane up after {:?}", started.elapsed());
    let kubelet = Kubelet::start(client.clone(), "default", [44, 0]);
    let _operator = Operator::start(&client);
    let kubectl = Kubectl::new(&cp)?;
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    let rc_api: Api<RayCluster> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    // KubeRay's "aggressive gradual" set, traffic moves 2 s apart instead of 5.
    let steps = Steps {
        step: 25,
        interval: 2,
        surge: 50,
    };
    let name = "gw-sample";
    kubectl.apply(
        "gw.yaml",
        &rayservice_yaml(name, steps, Some("istio"), "1", 3),
    )?;
    let first = ready(&rs_api, name).await?;
    eprintln!("Ready after {:?}", started.elapsed());

    // Serving: the Gateway of the spec's class, an HTTPRoute sending everything to the cluster's
    // own Serve service, owned by the RayService; S-serve-svc on the cluster too.
    let uid = rs_api.get(name).await?.uid().context("uid")?;
    let gateway = eventually("the Gateway", WAIT, || async {
        Ok(gateways(&client).get_opt("gw-sample-gateway").await?)
    })
    .await?;
    assert_eq!(
        rayservice_k8s::gateway::gateway_essentials(&gateway),
        (
            Some("istio".to_string()),
            vec![("http".to_string(), "HTTP".to_string(), 80)]
        )
    );
    assert!(gateway.owner_references().iter().any(|o| o.uid == uid));
    let route = eventually("the HTTPRoute", WAIT, || async {
        Ok(routes(&client).get_opt("gw-sample-httproute").await?)
    })
    .await?;
    assert!(route.owner_references().iter().any(|o| o.uid == uid));
    assert_eq!(
        route.data["spec"]["parentRefs"][0]["name"], "gw-sample-gateway",
        "{route:?}"
    );
    assert_eq!(
        route.data["spec"]["rules"][0]["matches"][0]["path"],
        serde_json::json!({"type": "PathPrefix", "value": "/"})
    );
    assert_eq!(weights(&route), [(format!("{first}-serve-svc"), 100)]);
    assert_eq!(
        route.data["spec"]["rules"][0]["backendRefs"][0]["port"],
        8000
    );
    let own = svcs.get(&format!("{first}-serve-svc")).await?;
    assert_eq!(selector_cluster(&own).as_deref(), Some(first.as_str()));
    assert_eq!(
        own.spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get("ray.io/serve"))
            .map(String::as_str),
        Some("true")
    );
    assert!(
        own.owner_references()
            .iter()
            .any(|o| o.kind == "RayCluster" && o.name == first)
    );
    assert_eq!(
        selector_cluster(&svcs.get("gw-sample-serve-svc").await?).as_deref(),
        Some(first.as_str())
    );

    // The upgrade KubeRay's e2e test makes (worker CPU request, then a new price). No controller
    // has accepted the Gateway yet: the new cluster comes up and stays at no capacity, and the
    // condition says why.
    let (looks, _recorder) = record(client.clone(), name, Duration::from_millis(100));
    kubectl.apply(
        "gw.yaml",
        &rayservice_yaml(name, steps, Some("istio"), "500m", 4),
    )?;
    let message = eventually("the upgrade waiting for the Gateway", WAIT, || async {
        let service = rs_api.get(name).await?;
        Ok(condition(&service, "UpgradeInProgress")
            .map(|(_, _, message)| message)
            .filter(|m| {
                m.contains("waits: Gateway gw-sample-gateway is not Accepted and Programmed")
            }))
    })
    .await?;
    eprintln!("gate message after {:?}", started.elapsed());
    eprintln!("waiting: {message}");
    let second = pending_of(&rs_api.get(name).await?).context("pending")?;
    let now = look(&client, name).await?;
    assert_eq!(
        (now.pending_capacity, now.pending_traffic),
        (Some(0), Some(0))
    );
    assert_eq!(
        now.route,
        [
            (format!("{first}-serve-svc"), 100),
            (format!("{second}-serve-svc"), 0)
        ]
    );
    assert!(
        svcs.get_opt(&format!("{second}-serve-svc"))
            .await?
            .is_some()
    );

    // The Gateway controller accepts them: the upgrade runs to its end.
    let _gateway_controller = GatewayController::start(client.clone(), "default");
    let accepted = std::time::Instant::now();
    let new = promoted(&rs_api, name, &first).await?;
    eprintln!(
        "upgraded {:?} after the Gateway was accepted",
        accepted.elapsed()
    );
    assert_eq!(new, second);
    let looks = looks_of(&looks);
    let shares = check_forward(&looks, steps)?;
    // 100 % lasts one reconcile before the promotion: a look may miss it.
    assert!(
        shares == [0, 25, 50, 75, 100] || shares == [0, 25, 50, 75],
        "{shares:?} in {looks:#?}"
    );
    // The route carried the same shares, in the same order.
    let route_shares = distinct(
        looks
            .iter()
            .filter(|l| l.route.len() == 2)
            .map(|l| (l.route[0].1, l.route[1].1)),
    );
    assert!(
        route_shares == [(100, 0), (75, 25), (50, 50), (25, 75), (0, 100)]
            || route_shares == [(100, 0), (75, 25), (50, 50), (25, 75)],
        "{route_shares:?} in {looks:#?}"
    );
    let capacity_pairs = distinct(looks.iter().filter(|l| l.pending.is_some()).map(|l| {
        (
            l.active_capacity.unwrap_or(100),
            l.pending_capacity.unwrap_or(0),
        )
    }));
    assert_eq!(
        capacity_pairs,
        [(100, 0), (100, 50), (50, 50), (50, 100)],
        "{looks:#?}"
    );
    // Serve got each capacity in its config: the new cluster 0, 50, 100 %, the old one 50, 0 %.
    assert_eq!(capacities(&kubelet, &second), [0, 50, 100]);
    let old_capacities = capacities(&kubelet, &first);
    assert!(
        old_capacities.ends_with(&[Value::from(50), Value::from(0)]),
        "{old_capacities:?}"
    );

    // Done: the route and S-serve-svc on the new cluster, the old cluster and its service gone.
    let last = look(&client, name).await?;
    assert_eq!(last.route, [(format!("{second}-serve-svc"), 100)]);
    assert_eq!(last.serve_svc.as_deref(), Some(second.as_str()));
    eventually(
        "the old cluster and its Serve service gone",
        WAIT,
        || async {
            let cluster = rc_api.get_opt(&first).await?;
            let svc = svcs.get_opt(&format!("{first}-serve-svc")).await?;
            Ok((cluster.is_none() && svc.is_none()).then_some(()))
        },
    )
    .await?;
    eprintln!("old gone after {:?}", started.elapsed());
    let described = kubectl.run(&["describe", "rayservices", name])?;
    for reason in [
        "TargetCapacityChanged",
        "TrafficMigrated",
        "TrafficSwitched",
    ] {
        assert!(
            described.contains(reason),
            "{reason} missing in:\n{described}"
        );
    }
    assert!(
        !described.contains("IncrementalUpgradeWithoutGateway"),
        "{described}"
    );
    let events = kubectl.run(&[
        "get",
        "events",
        "--field-selector",
        "reason=FieldsNotActedOn",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    assert!(
        events.contains("enableInTreeAutoscaling") && !events.contains("upgradeStrategy"),
        "{events}"
    );

    // Deleting the RayService removes the Gateway, the HTTPRoute and every Serve service.
    eprintln!("deleting after {:?}", started.elapsed());
    kubectl.delete("gw.yaml")?;
    eventually("everything gone", WAIT, || async {
        let left = gateways(&client)
            .list(&ListParams::default())
            .await?
            .items
            .len()
            + routes(&client)
                .list(&ListParams::default())
                .await?
                .items
                .len()
            + rc_api.list(&ListParams::default()).await?.items.len()
            + svcs
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|s| s.name_any().starts_with(name))
                .count();
        Ok((left == 0).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_gateway_reverting_the_spec_mid_upgrade_rolls_back() -> anyhow::Result<()> {
    let (cp, client) = control_plane(true).await?;
    let _kubelet = Kubelet::start(client.clone(), "default", [45, 0]);
    let _gateway_controller = GatewayController::start(client.clone(), "default");
    let _operator = Operator::start(&client);
    let kubectl = Kubectl::new(&cp)?;
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    let rc_api: Api<RayCluster> = Api::namespaced(client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    // Traffic moves 5 s apart: the revert lands long before the upgrade could finish.
    let steps = Steps {
        step: 25,
        interval: 5,
        surge: 50,
    };
    let name = "rollback";
    let original = rayservice_yaml(name, steps, Some("istio"), "1", 3);
    kubectl.apply("rollback.yaml", &original)?;
    let old = ready(&rs_api, name).await?;
    let (looks, _recorder) = record(client.clone(), name, Duration::from_millis(100));
    kubectl.apply(
        "rollback.yaml",
        &rayservice_yaml(name, steps, Some("istio"), "500m", 4),
    )?;
    let new = eventually("half of the traffic on the new cluster", WAIT, || async {
        let now = look(&client, name).await?;
        Ok(now.pending.filter(|_| now.pending_traffic == Some(50)))
    })
    .await?;
    kubectl.apply("rollback.yaml", &original)?;
    eventually("RollbackInProgress", WAIT, || async {
        Ok(look(&client, name).await?.rolling_back.then_some(()))
    })
    .await?;
    eventually("the old cluster serving alone again", WAIT, || async {
        let now = look(&client, name).await?;
        Ok((now.active.as_deref() == Some(old.as_str()) && now.pending.is_none()).then_some(()))
    })
    .await?;
    let looks = looks_of(&looks);
    let from = looks
        .iter()
        .position(|l| l.rolling_back)
        .context("no look while rolling back")?;
    let back: Vec<&Look> = looks[from..]
        .iter()
        .filter(|l| l.pending.is_some())
        .collect();
    // The shares go back step by step, never forward; the route follows; the active cluster
    // regains its capacity; S-serve-svc never left it.
    let shares = distinct(back.iter().map(|l| l.pending_traffic.unwrap_or(0)));
    ensure!(
        shares.windows(2).all(|w| w[0] > w[1]) && shares.last() == Some(&0),
        "pending shares during the rollback: {shares:?}"
    );
    ensure!(shares.len() >= 3, "not step by step: {shares:?}");
    let route_pending = distinct(back.iter().filter_map(|l| l.route.get(1).map(|r| r.1)));
    ensure!(
        route_pending.windows(2).all(|w| w[0] > w[1]),
        "route during the rollback: {route_pending:?}"
    );
    let active_capacity = distinct(back.iter().map(|l| l.active_capacity.unwrap_or(100)));
    ensure!(
        active_capacity.windows(2).all(|w| w[0] < w[1]) && active_capacity.last() == Some(&100),
        "active capacity during the rollback: {active_capacity:?}"
    );
    ensure!(
        back.iter()
            .all(|l| l.serve_svc.as_deref() == Some(old.as_str()))
    );
    let last = look(&client, name).await?;
    assert_eq!(last.route, [(format!("{old}-serve-svc"), 100)]);
    assert!(!last.rolling_back);
    eventually(
        "the new cluster and its Serve service gone",
        WAIT,
        || async {
            let cluster = rc_api.get_opt(&new).await?;
            let svc = svcs.get_opt(&format!("{new}-serve-svc")).await?;
            Ok((cluster.is_none() && svc.is_none()).then_some(()))
        },
    )
    .await?;
    let described = kubectl.run(&["describe", "rayservices", name])?;
    assert!(described.contains("RollbackInProgress"), "{described}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_gateway_kuberays_parameter_sets_converge() -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let (cp, client) = control_plane(true).await?;
    eprintln!("control plane up after {:?}", began.elapsed());
    let kubelet = Kubelet::start(client.clone(), "default", [46, 0]);
    let _gateway_controller = GatewayController::start(client.clone(), "default");
    let _operator = Operator::start(&client);
    let kubectl = Kubectl::new(&cp)?;
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    // KubeRay v1.7.0's e2e sets (BlueGreen, AggressiveGradual, ConservativeGradual with 1 s
    // instead of 10 s between traffic moves) and its sample's (10/30/10, with 1 s), all at once.
    let sets = [
        (
            "blue-green",
            Steps {
                step: 100,
                interval: 1,
                surge: 100,
            },
        ),
        (
            "aggressive",
            Steps {
                step: 25,
                interval: 5,
                surge: 50,
            },
        ),
        (
            "conservative",
            Steps {
                step: 5,
                interval: 1,
                surge: 25,
            },
        ),
        (
            "sample",
            Steps {
                step: 10,
                interval: 1,
                surge: 10,
            },
        ),
    ];
    for (name, steps) in sets {
        kubectl.apply(
            &format!("{name}.yaml"),
            &rayservice_yaml(name, steps, Some("istio"), "1", 3),
        )?;
    }
    let mut firsts = Vec::new();
    for (name, _) in sets {
        firsts.push(ready(&rs_api, name).await?);
    }
    eprintln!("all four Ready after {:?}", began.elapsed());
    let recorders: Vec<_> = sets
        .iter()
        .map(|(name, _)| record(client.clone(), name, Duration::from_millis(300)))
        .collect();
    let started = std::time::Instant::now();
    for (name, steps) in sets {
        kubectl.apply(
            &format!("{name}.yaml"),
            &rayservice_yaml(name, steps, Some("istio"), "500m", 4),
        )?;
    }
    for ((name, steps), (first, (looks, _))) in sets.iter().zip(firsts.iter().zip(&recorders)) {
        let new = eventually(
            &format!("{name}: the new cluster serves alone"),
            Duration::from_secs(90),
            || async {
                let service = rs_api.get(name).await?;
                Ok(active_of(&service).filter(|a| a != first && pending_of(&service).is_none()))
            },
        )
        .await?;
        eprintln!("{name}: converged after {:?}", started.elapsed());
        let looks = looks_of(looks);
        let shares = check_forward(&looks, *steps).with_context(|| name.to_string())?;
        // Only shares KubeRay's stepping passes through (a look may miss one that lasted less
        // than the recorder's 300 ms, as 100 % does: the promotion follows within a reconcile).
        let expected: Vec<i32> = {
            let mut all = vec![0];
            let mut at = 0;
            while at < 100 {
                at = (at + steps.step).min(100);
                all.push(at);
            }
            all
        };
        ensure!(
            shares.iter().all(|s| expected.contains(s)),
            "{name}: shares {shares:?}, expected steps of {expected:?}"
        );
        ensure!(
            capacities(&kubelet, &new)
                .iter()
                .any(|c| c.as_i64() == Some(100)),
            "{name}: the new cluster never reached 100 %"
        );
        let route = look(&client, name).await?.route;
        assert_eq!(route, [(format!("{new}-serve-svc"), 100)], "{name}");
    }
    let elapsed = started.elapsed();
    eprintln!("all four sets converged in {elapsed:?}");
    let names: BTreeSet<String> = gateways(&client)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|g| g.name_any())
        .collect();
    assert_eq!(
        names,
        sets.iter().map(|(n, _)| format!("{n}-gateway")).collect()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_api_it_is_a_new_cluster_upgrade_and_once_installed_kuberays_rules_apply()
-> anyhow::Result<()> {
    let (cp, client) = control_plane(false).await?;
    let _kubelet = Kubelet::start(client.clone(), "default", [47, 0]);
    let _operator = Operator::start(&client);
    let kubectl = Kubectl::new(&cp)?;
    let rs_api: Api<RayService> = Api::namespaced(client.clone(), "default");
    let steps = Steps {
        step: 25,
        interval: 1,
        surge: 50,
    };
    let name = "plain";
    kubectl.apply(
        "plain.yaml",
        &rayservice_yaml(name, steps, Some("istio"), "1", 3),
    )?;
    let first = ready(&rs_api, name).await?;
    kubectl.apply(
        "plain.yaml",
        &rayservice_yaml(name, steps, Some("istio"), "500m", 4),
    )?;
    let second = promoted(&rs_api, name, &first).await?;
    let status = rs_api.get(name).await?.status.context("status")?;
    assert_eq!(
        status.active_service_status.ray_cluster_name.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(status.active_service_status.traffic_routed_percent, None);
    let described = kubectl.run(&["describe", "rayservices", name])?;
    assert!(described.contains("TrafficSwitched"), "{described}");
    for absent in ["TrafficMigrated", "IncrementalUpgradeWithoutGateway"] {
        assert!(!described.contains(absent), "{absent} in:\n{described}");
    }
    let warned = kubectl.run(&[
        "get",
        "events",
        "--field-selector",
        "reason=FieldsNotActedOn",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    assert!(warned.contains("spec.upgradeStrategy.type"), "{warned}");

    // The Gateway API installed later is picked up: the RayService gets its Gateway.
    cp.install_gateway_api(&client).await?;
    let route = eventually(
        "the HTTPRoute once the Gateway API is there",
        WAIT,
        || async { Ok(routes(&client).get_opt("plain-httproute").await?) },
    )
    .await?;
    assert_eq!(weights(&route), [(format!("{second}-serve-svc"), 100)]);
    // From now on KubeRay's requirements hold: no gatewayClassName is a validation failure.
    kubectl.apply(
        "no-class.yaml",
        &rayservice_yaml("no-class", steps, None, "1", 3),
    )?;
    let (_, _, message) =
        eventually("Ready=False ValidationFailed", WAIT, || async {
            let service = rs_api.get("no-class").await?;
            Ok(condition(&service, "Ready")
                .filter(|(s, r, _)| s == "False" && r == "ValidationFailed"))
        })
        .await?;
    assert!(
        message.starts_with("spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName"),
        "{message}"
    );
    let clusters: Api<RayCluster> = Api::namespaced(client.clone(), "default");
    let made = clusters
        .list(&ListParams::default().labels("ray.io/originated-from-cr-name=no-class"))
        .await?
        .items;
    assert!(made.is_empty(), "nothing runs an invalid spec: {made:?}");
    Ok(())
}
