//! RayClusters applied on their own: storing them (all of a file's or none), explaining what an
//! apply would do, and deleting them. Running them is `crate::standalone`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rayservice_api::RayCluster;
use serde_json::{Value, json};

use super::{AppState, error};
use crate::controller::{Controller, now};
use crate::diff::DiffReport;
use crate::store::NO_OWNER;
use crate::wire::{ApplyRequest, ApplyResult};

/// A RayCluster of a request, checked, with what an apply would do to it.
pub(super) struct Planned {
    name: String,
    object: Value,
    outcome: &'static str,
}

/// Checks every RayCluster of a request against what is stored: names must not be taken by a
/// RayService's cluster.
pub(super) fn plan(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<Planned>, String> {
    let file = &request.file;
    let stored = controller
        .with_store(|s| s.rayclusters())
        .map_err(|e| e.to_string())?;
    let owned = controller
        .with_store(|s| s.clusters(None))
        .map_err(|e| e.to_string())?;
    let mut planned = Vec::new();
    for object in &request.clusters {
        let cluster: RayCluster =
            serde_json::from_value(object.clone()).map_err(|e| format!("{file}: {e}"))?;
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let at = |e: String| format!("{file}: RayCluster/{name}: {e}");
        rayservice_api::validate::raycluster(&cluster).map_err(|e| at(e.to_string()))?;
        if owned
            .iter()
            .any(|c| c.name == name && c.service != NO_OWNER)
        {
            return Err(at(
                "metadata.name: a RayService's cluster already has this name; fix: choose another name".into(),
            ));
        }
        let current = stored.iter().find(|(n, _)| *n == name).map(|(_, o)| o);
        let (outcome, object) = match current {
            None => {
                let metadata = ObjectMeta {
                    uid: Some(crate::http::apply::uuid_like()),
                    generation: Some(1),
                    creation_timestamp: Some(Time(now())),
                    namespace: Some(rayservice_api::DEFAULT_NAMESPACE.into()),
                    ..cluster.metadata.clone()
                };
                let object = RayCluster {
                    metadata,
                    spec: cluster.spec.clone(),
                    status: None,
                };
                let mut object = serde_json::to_value(&object).map_err(|e| e.to_string())?;
                object["apiVersion"] = json!(rayservice_api::API_VERSION_V1);
                object["kind"] = json!("RayCluster");
                ("created", object)
            }
            Some(current) => {
                let spec = serde_json::to_value(&cluster.spec).map_err(|e| e.to_string())?;
                if current["spec"] == spec {
                    ("unchanged", current.clone())
                } else {
                    let mut object = current.clone();
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    object["spec"] = spec;
                    object["metadata"]["generation"] = json!(generation);
                    ("configured", object)
                }
            }
        };
        planned.push(Planned {
            name,
            object,
            outcome,
        });
    }
    Ok(planned)
}

/// Stores the planned RayClusters of a request and starts what changed.
pub(super) fn apply_rayclusters(
    controller: &Arc<Controller>,
    planned: Vec<Planned>,
) -> Result<Vec<ApplyResult>, String> {
    let mut results = Vec::new();
    for Planned {
        name,
        object,
        outcome,
    } in planned
    {
        if outcome != "unchanged" {
            controller
                .with_store(|s| s.put_raycluster(&name, &object))
                .map_err(|e| e.to_string())?;
        }
        let controller = controller.clone();
        let cluster = name.clone();
        tokio::spawn(async move {
            if let Err(err) = controller.reconcile_raycluster(&cluster).await {
                tracing::warn!(cluster, %err, "cannot run the RayCluster");
                let _ = controller.record_event(
                    "RayCluster",
                    &cluster,
                    rayservice_core::EventKind::Warning,
                    "FailedToCreateHeadPod",
                    &err.to_string(),
                );
            }
        });
        results.push(ApplyResult {
            kind: "RayCluster".into(),
            name,
            outcome: outcome.into(),
        });
    }
    Ok(results)
}

/// What applying the RayClusters of a request would do.
pub(super) fn diff_rayclusters(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<DiffReport>, String> {
    Ok(plan(controller, request)?
        .into_iter()
        .map(|planned| {
            let (kind, line) = match planned.outcome {
                "created" => ("create", "the head and its workers would start"),
                "configured" => (
                    "in-place",
                    "the stored spec would change; workers a larger group wants would start",
                ),
                _ => ("none", "nothing would change"),
            };
            DiffReport {
                kind: "RayCluster".into(),
                name: planned.name,
                kinds: vec![kind.to_string()],
                lines: vec![line.to_string()],
            }
        })
        .collect())
}

/// `DELETE /v1/rayclusters/{name}`: stops a RayCluster applied on its own.
pub(super) async fn delete_raycluster(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.controller.delete_raycluster(&name).await {
        Ok(true) => Json(json!({"deleted": name})).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("rayclusters.ray.io \"{name}\" not found"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
