//! The RayCluster controller: keeps the head Service, the head Pod and the worker Pods of every
//! RayCluster as [`crate::build`] describes them, and writes the cluster's status through the
//! status subresource. Event driven through `kube::runtime::Controller` (the RayCluster, and the
//! Pods and Services it owns); a long safety requeue only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rayservice_api::RayCluster;
use rayservice_core::random_suffix;

use crate::build::{self, BuildError, LABEL_CLUSTER, LABEL_IS_RAY_NODE, LABEL_NODE_TYPE};
use crate::operate::Metrics;

/// The field manager of every server-side apply of the operator.
pub const FIELD_MANAGER: &str = "rayservice-operator";

/// Requeue after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Safety requeue of a healthy cluster; changes arrive as watch events.
const IDLE_REQUEUE: Duration = Duration::from_secs(300);

/// What the controller shares between reconciles.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
}

impl Context {
    /// A context over a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The desired objects could not be built from the spec.
    #[error("invalid RayCluster: {0}")]
    Build(#[from] BuildError),
    /// The status could not be serialized.
    #[error("serializing the status: {0}")]
    Json(#[from] serde_json::Error),
}

fn owned_by(obj: &impl ResourceExt, uid: &str) -> bool {
    obj.owner_references().iter().any(|o| o.uid == uid)
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<(), Error> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply_pod(pods: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let name = pod.name_any();
    pods.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(pod),
    )
    .await?;
    Ok(())
}

/// Brings one RayCluster's objects in line with its spec and records its status.
pub async fn reconcile(cluster: Arc<RayCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owned objects go by garbage collection.
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = build::namespace_of(&cluster);
    let uid = cluster.uid().unwrap_or_default();
    let client = ctx.client.clone();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let rc_api: Api<RayCluster> = Api::namespaced(client, &namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // The head service.
    let svc = build::head_service(&cluster)?;
    // Applied only when missing or different, as the API server's watch cache shows it: an
    // apply per reconcile was most of the API load of a thousand clusters starting at once.
    let cached = match svc_api.get_with(&svc.name_any(), &GetParams::any()).await {
        Ok(current) => Some(current),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e.into()),
    };
    let same = |current: &Service| {
        let spec = |s: &Service| s.spec.clone().unwrap_or_default();
        let (want, have) = (spec(&svc), spec(current));
        want.selector == have.selector
            && want.ports == have.ports
            && want.type_ == have.type_
            && svc.metadata.annotations.as_ref().is_none_or(|wanted| {
                current
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|have| wanted.iter().all(|(k, v)| have.get(k) == Some(v)))
            })
    };
    let svc = match cached {
        Some(current) if same(&current) => current,
        _ => {
            svc_api
                .patch(&svc.name_any(), &apply, &Patch::Apply(&svc))
                .await?
        }
    };

    // The pods of this cluster.
    let selector = format!("{LABEL_CLUSTER}={name},{LABEL_IS_RAY_NODE}=yes");
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| owned_by(p, &uid))
        .collect();
    let suspended = cluster.spec.suspend == Some(true);

    let heads: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get(LABEL_NODE_TYPE).map(String::as_str) == Some("head"))
        .collect();
    let live_head = heads
        .iter()
        .any(|p| p.metadata.deletion_timestamp.is_none());
    if suspended {
        for head in &heads {
            delete_pod(&pods_api, &head.name_any()).await?;
        }
    } else if !live_head {
        let pod = build::head_pod(&cluster, &random_suffix())?;
        tracing::info!(cluster = %name, pod = %pod.name_any(), "creating head pod");
        apply_pod(&pods_api, &pod).await?;
    }

    let diff = build::worker_diff(&cluster.spec, &pods);
    for pod in &diff.to_delete {
        tracing::info!(cluster = %name, pod = %pod, "deleting worker pod");
        delete_pod(&pods_api, pod).await?;
    }
    for (group, count) in &diff.to_create {
        for _ in 0..*count {
            let pod = build::worker_pod(&cluster, group, &random_suffix())?;
            tracing::info!(cluster = %name, pod = %pod.name_any(), "creating worker pod");
            apply_pod(&pods_api, &pod).await?;
        }
    }

    // Status from the pods as they were listed; the pod events that follow our changes
    // trigger another reconcile, which records the new state.
    let mut status = build::cluster_status(&cluster.spec, &pods);
    if let Some(head) = status.head.as_mut() {
        head.service_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone());
    }
    status.endpoints = build::service_endpoints(&svc);
    status.observed_generation = cluster.metadata.generation;
    let mut old = cluster.status.clone().unwrap_or_default();
    old.last_update_time = None;
    if old != status {
        status.last_update_time = Some(rayservice_core::status::timestamp(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let patch = serde_json::json!({
            "apiVersion": rayservice_api::API_VERSION_V1,
            "kind": "RayCluster",
            "status": serde_json::to_value(&status)?,
        });
        rc_api
            .patch_status(&name, &apply, &Patch::Apply(&patch))
            .await?;
    }
    Ok(Action::requeue(IDLE_REQUEUE))
}

/// What to do after a failed reconcile: log, and try again in 5 s.
pub fn error_policy(cluster: Arc<RayCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the RayCluster controller over all namespaces until the stream ends, recording every
/// reconcile in `metrics` (controller `raycluster`).
pub async fn run(client: Client, metrics: Metrics) {
    let clusters: Api<RayCluster> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client.clone());
    let ctx = Arc::new(Context::new(client));
    Controller::new(clusters, watcher::Config::default())
        .with_config(crate::operate::controller_config())
        .owns(
            pods,
            watcher::Config::default().labels(&format!("{LABEL_IS_RAY_NODE}=yes")),
        )
        .owns(services, watcher::Config::default().labels(LABEL_CLUSTER))
        .run(
            move |cluster, ctx| {
                let metrics = metrics.clone();
                async move {
                    let started = Instant::now();
                    let result = reconcile(cluster, ctx).await;
                    let seconds = started.elapsed().as_secs_f64();
                    metrics.reconciled("raycluster", result.is_ok(), seconds);
                    result
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => crate::operate::log_controller_error("raycluster", &e),
            }
        })
        .await;
}
