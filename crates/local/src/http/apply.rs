//! `apply` and `diff`: validate and resolve the objects of a file once, then store them (all or
//! nothing) or explain what the core would do with them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rayservice_api::{RayService, RayServiceStatus, ServeConfig};
use serde_json::{Value, json};

use super::{AppState, error};
use crate::controller::{Controller, now, route_prefixes};
use crate::resolve::{Packaging, resolve_spec};
use crate::store::ServiceRecord;
use crate::wire::{ApplyRequest, ApplyResult};

pub(super) async fn apply(
    State(state): State<AppState>,
    Json(request): Json<ApplyRequest>,
) -> Response {
    // The RayClusters are checked before anything is stored.
    let clusters = match super::rayclusters::plan(&state.controller, &request) {
        Ok(clusters) => clusters,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let mut results = match apply_objects(&state.controller, &request).await {
        Ok(results) => results,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    for result in &results {
        state.controller.wake(&result.name);
    }
    match super::rayclusters::apply_rayclusters(&state.controller, clusters) {
        Ok(clusters) => results.extend(clusters),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    }
    Json(results).into_response()
}

pub(super) async fn diff(
    State(state): State<AppState>,
    Json(request): Json<ApplyRequest>,
) -> Response {
    let clusters = super::rayclusters::diff_rayclusters(&state.controller, &request);
    match (diff_objects(&state.controller, &request).await, clusters) {
        (Ok(mut reports), Ok(clusters)) => {
            reports.extend(clusters);
            Json(reports).into_response()
        }
        (Err(message), _) | (_, Err(message)) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// One RayService of a file, validated, with its local `working_dir`s resolved.
struct Prepared {
    name: String,
    service: RayService,
    resolved: rayservice_api::RayServiceSpec,
}

/// Reads, validates and resolves every object of a request, off the async runtime (packaging
/// reads whole folders); the first error names the file, the object and the field.
async fn prepare(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
    packaging: Packaging,
) -> Result<Vec<Prepared>, String> {
    let packages_dir = controller.settings.packages_dir();
    let request = request.clone();
    let file = request.file.clone();
    tokio::task::spawn_blocking(move || prepare_blocking(&request, &packages_dir, packaging))
        .await
        .map_err(|e| format!("{file}: preparing the objects failed: {e}"))?
}

fn prepare_blocking(
    request: &ApplyRequest,
    packages_dir: &std::path::Path,
    packaging: Packaging,
) -> Result<Vec<Prepared>, String> {
    let file = &request.file;
    let mut prepared = Vec::new();
    for object in &request.objects {
        let service: RayService =
            serde_json::from_value(object.clone()).map_err(|e| format!("{file}: {e}"))?;
        let name = service.metadata.name.clone().unwrap_or_default();
        let at = |e: String| format!("{file}: RayService/{name}: {e}");
        rayservice_api::validate::rayservice(&service, rayservice_api::API_VERSION_V1)
            .map_err(|e| at(e.to_string()))?;
        let resolved = resolve_spec(&service.spec, &request.base_dir, packages_dir, packaging)
            .map_err(|e| at(e.to_string()))?;
        prepared.push(Prepared {
            name,
            service,
            resolved,
        });
    }
    Ok(prepared)
}

/// Runs the core on the current state twice, with the stored spec and with the new one, and
/// explains the difference. Nothing is carried out.
async fn diff_objects(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<crate::diff::DiffReport>, String> {
    let file = &request.file;
    let mut reports = Vec::new();
    for Prepared { name, resolved, .. } in prepare(controller, request, Packaging::HashOnly).await?
    {
        let at = |e: String| format!("{file}: RayService/{name}: {e}");
        let parse = |spec: &rayservice_api::RayServiceSpec| -> Result<ServeConfig, String> {
            ServeConfig::parse(
                spec.serve_config_v2.as_deref().unwrap_or_default(),
                "spec.serveConfigV2",
            )
            .map_err(|e| at(e.to_string()))
        };
        let desired = parse(&resolved)?;
        let record = controller
            .with_store(|s| s.service(&name))
            .map_err(|e| e.to_string())?
            .filter(|r| !r.deleting);
        let Some(record) = record else {
            reports.push(crate::diff::explain(
                &name,
                None,
                &desired,
                &empty_decision(),
                &empty_decision(),
                None,
            ));
            continue;
        };
        let current_spec: rayservice_api::RayServiceSpec =
            serde_json::from_value(record.resolved_spec.clone()).map_err(|e| e.to_string())?;
        let current = parse(&current_spec)?;
        let status: RayServiceStatus =
            serde_json::from_value(record.status.clone()).unwrap_or_default();
        let generation = record.object["metadata"]["generation"]
            .as_i64()
            .unwrap_or(1);
        let changed =
            serde_json::to_value(&resolved).map_err(|e| e.to_string())? != record.resolved_spec;
        let observed = controller
            .observe_service(&name, status, "xxxxx".into())
            .await
            .map_err(|e| e.to_string())?;
        let baseline = rayservice_core::reconcile(
            &rayservice_core::Desired::new(&name, generation, &current_spec),
            &observed,
        );
        let proposed_generation = if changed { generation + 1 } else { generation };
        let proposed = rayservice_core::reconcile(
            &rayservice_core::Desired::new(&name, proposed_generation, &resolved),
            &observed,
        );
        // The core explains a spec change when the generation moves; the baseline never does.
        reports.push(crate::diff::explain(
            &name,
            Some(&current),
            &desired,
            &baseline,
            &proposed,
            rayservice_core::incremental::Options::of(&resolved),
        ));
    }
    Ok(reports)
}

fn empty_decision() -> rayservice_core::Decision {
    rayservice_core::Decision {
        actions: Vec::new(),
        status: Default::default(),
        requeue_after: std::time::Duration::ZERO,
    }
}

/// Validates, resolves and stores the objects of one apply; all or nothing.
async fn apply_objects(
    controller: &Arc<Controller>,
    request: &ApplyRequest,
) -> Result<Vec<ApplyResult>, String> {
    let file = &request.file;
    let prepared = prepare(controller, request, Packaging::Write).await?;
    let existing = controller
        .with_store(|s| s.services())
        .map_err(|e| e.to_string())?;
    check_route_clashes(&prepared, &existing, file)?;

    let mut results = Vec::new();
    for Prepared {
        name,
        service,
        resolved,
    } in prepared
    {
        let resolved_json = serde_json::to_value(&resolved).map_err(|e| e.to_string())?;
        let spec_json = serde_json::to_value(&service.spec).map_err(|e| e.to_string())?;
        let current = existing.iter().find(|r| r.name == name && !r.deleting);
        let (outcome, record) = match current {
            Some(record)
                if record.object["spec"] == spec_json && record.resolved_spec == resolved_json =>
            {
                results.push(ApplyResult {
                    kind: "RayService".into(),
                    name,
                    outcome: "unchanged".into(),
                });
                continue;
            }
            Some(record) => {
                let mut object = record.object.clone();
                let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                object["spec"] = spec_json;
                object["metadata"]["generation"] = json!(generation);
                merge_labels(&mut object, &service.metadata);
                (
                    "configured",
                    ServiceRecord {
                        object,
                        resolved_spec: resolved_json,
                        ..record.clone()
                    },
                )
            }
            None => {
                let metadata = ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(rayservice_api::DEFAULT_NAMESPACE.into()),
                    uid: Some(uuid_like()),
                    generation: Some(1),
                    creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(now().as_second())
                            .unwrap_or_else(|_| now()),
                    )),
                    labels: service.metadata.labels.clone(),
                    annotations: service.metadata.annotations.clone(),
                    ..Default::default()
                };
                let object = RayService {
                    metadata,
                    spec: service.spec.clone(),
                    status: None,
                };
                let object = serde_json::to_value(&object).map_err(|e| e.to_string())?;
                let status =
                    serde_json::to_value(RayServiceStatus::default()).map_err(|e| e.to_string())?;
                (
                    "created",
                    ServiceRecord {
                        name: name.clone(),
                        object,
                        resolved_spec: resolved_json,
                        status,
                        deleting: false,
                    },
                )
            }
        };
        controller
            .with_store(|s| s.put_service(&record))
            .map_err(|e| e.to_string())?;
        results.push(ApplyResult {
            kind: "RayService".into(),
            name,
            outcome: outcome.into(),
        });
    }
    Ok(results)
}

fn merge_labels(object: &mut Value, metadata: &ObjectMeta) {
    object["metadata"]["labels"] = serde_json::to_value(&metadata.labels).unwrap_or(Value::Null);
    object["metadata"]["annotations"] =
        serde_json::to_value(&metadata.annotations).unwrap_or(Value::Null);
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.retain(|_, v| !v.is_null());
    }
}

pub(super) fn uuid_like() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Two RayServices cannot own the same route prefix on the shared Serve endpoint.
fn check_route_clashes(
    prepared: &[Prepared],
    existing: &[ServiceRecord],
    file: &str,
) -> Result<(), String> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let incoming: Vec<&String> = prepared.iter().map(|p| &p.name).collect();
    for record in existing
        .iter()
        .filter(|r| !r.deleting && !incoming.contains(&&r.name))
    {
        for prefix in route_prefixes(record) {
            owners.insert(prefix, record.name.clone());
        }
    }
    for Prepared { name, resolved, .. } in prepared {
        let record = ServiceRecord {
            name: name.clone(),
            object: Value::Null,
            resolved_spec: serde_json::to_value(resolved).unwrap_or(Value::Null),
            status: Value::Null,
            deleting: false,
        };
        for prefix in route_prefixes(&record) {
            if let Some(owner) = owners.get(&prefix).filter(|o| *o != name) {
                return Err(format!(
                    "{file}: RayService/{name}: spec.serveConfigV2: route_prefix `{prefix}` is already served by RayService {owner} on the shared Serve endpoint; fix: choose another route_prefix (requests with `Host: {name}-serve-svc` still reach {name} only)"
                ));
            }
            owners.insert(prefix, name.clone());
        }
    }
    Ok(())
}
