//! kubectl-style listings of what local mode runs: RayServices, RayClusters, pods (node
//! processes), services (front endpoints) and events, as Kubernetes objects.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rayservice_api::{NodeType, RayCluster, RayClusterSpec, labels};
use serde_json::{Value, json};

use super::{AppState, error};
use crate::cluster::ClusterLayout;
use crate::controller::now;
use crate::store::{ClusterRecord, NO_OWNER, ServiceRecord};
use crate::views::{EventView, PodView, ServiceView};

pub(super) async fn list_services(State(state): State<AppState>) -> Response {
    match state.controller.with_store(|s| s.services()) {
        Ok(records) => Json(
            records
                .into_iter()
                .filter(|r| !r.deleting)
                .map(service_object)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn service_object(record: ServiceRecord) -> Value {
    let mut object = record.object;
    object["apiVersion"] = json!(rayservice_api::API_VERSION_V1);
    object["kind"] = json!("RayService");
    object["status"] = record.status;
    reorder(
        object,
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )
}

fn reorder(object: Value, first: &[&str]) -> Value {
    let Value::Object(mut map) = object else {
        return object;
    };
    let mut out = serde_json::Map::new();
    for key in first {
        if let Some(v) = map.remove(*key) {
            out.insert((*key).to_string(), v);
        }
    }
    out.extend(map);
    Value::Object(out)
}

pub(super) async fn get_service(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.controller.with_store(|s| s.service(&name)) {
        Ok(Some(record)) if !record.deleting => Json(service_object(record)).into_response(),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            &format!("rayservices.ray.io \"{name}\" not found"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(super) async fn delete_service(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.controller.delete_service(&name).await {
        Ok(true) => Json(json!({"deleted": name})).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            &format!("rayservices.ray.io \"{name}\" not found"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(super) async fn list_clusters(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let Ok(records) = controller.with_store(|s| s.clusters(None)) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "state database unavailable",
        );
    };
    let services: BTreeMap<String, Value> = controller
        .with_store(|s| s.services())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.name.clone(), r.object["metadata"]["uid"].clone()))
        .collect();
    let applied: BTreeMap<String, Value> = controller
        .with_store(|s| s.rayclusters())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut clusters = Vec::new();
    for record in records {
        let spec: RayClusterSpec = record.spec.clone();
        let layout: Option<ClusterLayout> = serde_json::from_value(record.layout.clone()).ok();
        let nodes =
            controller
                .clusters
                .observe_nodes(&record.name, &spec, record.memory.target_capacity);
        let head_ready = nodes.head_running && controller.head_ready(&record);
        let observed = rayservice_core::ObservedCluster {
            name: record.name.clone(),
            spec: spec.clone(),
            created_at: now(),
            memory: record.memory.clone(),
            nodes: rayservice_core::NodesObservation {
                head_up: nodes.head_running,
                head_ready,
                workers_desired: nodes.workers_desired,
                workers_running: nodes.workers_running,
                failure: nodes.failure,
            },
            serve: rayservice_core::ServeObservation::Unknown,
            in_flight: None,
            traffic: None,
        };
        let mut status = rayservice_core::status::cluster_status(&observed);
        if let Some(layout) = &layout {
            status.endpoints = layout.endpoints();
        }
        status.head = Some(crate::controller::local_head_info(
            controller.clusters.head_pod_name(&record.name),
        ));
        let metadata = if record.service == NO_OWNER {
            // Applied on its own: the metadata the user gave (with uid and creation time).
            applied
                .get(&record.name)
                .and_then(|object| serde_json::from_value(object["metadata"].clone()).ok())
                .unwrap_or_default()
        } else {
            ObjectMeta {
                name: Some(record.name.clone()),
                namespace: Some(rayservice_api::DEFAULT_NAMESPACE.into()),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(record.created_at)
                        .unwrap_or_else(|_| now()),
                )),
                labels: Some(labels::origin_labels(&record.service)),
                annotations: Some(BTreeMap::from([(
                    rayservice_core::HASH_ANNOTATION.to_string(),
                    record.memory.spec_hash.clone(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: rayservice_api::API_VERSION_V1.into(),
                    kind: "RayService".into(),
                    name: record.service.clone(),
                    uid: services
                        .get(&record.service)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            }
        };
        let cluster = RayCluster {
            metadata,
            spec,
            status: Some(status),
        };
        let mut value = serde_json::to_value(&cluster).unwrap_or(Value::Null);
        value["apiVersion"] = json!(rayservice_api::API_VERSION_V1);
        value["kind"] = json!("RayCluster");
        clusters.push(reorder(
            value,
            &["apiVersion", "kind", "metadata", "spec", "status"],
        ));
    }
    Json(clusters).into_response()
}

pub(super) async fn list_pods(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let Ok(nodes) = controller.with_store(|s| s.nodes(None)) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "state database unavailable",
        );
    };
    let records: BTreeMap<String, ClusterRecord> = controller
        .with_store(|s| s.clusters(None))
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    let pods: Vec<PodView> = nodes
        .into_iter()
        .map(|node| {
            let (running, pid) = controller.clusters.node_state(&node.cluster, &node.name);
            let record = records.get(&node.cluster);
            let ready = running
                && (node.node_type != "head" || record.is_some_and(|r| controller.head_ready(r)));
            let service = record.map(|r| r.service.clone()).unwrap_or_default();
            let node_type = if node.node_type == NodeType::Head.as_str() {
                NodeType::Head
            } else {
                NodeType::Worker
            };
            let mut labels = labels::node_labels(&node.cluster, node_type, &node.group);
            if service != NO_OWNER {
                labels.extend(labels::origin_labels(&service));
            }
            PodView {
                phase: if running {
                    "Running"
                } else if node.restarts > 0 {
                    "CrashLoopBackOff"
                } else {
                    "Pending"
                }
                .into(),
                ready: if ready { "1/1" } else { "0/1" }.into(),
                restarts: node.restarts,
                pid: pid.or(node.pid),
                started_at: crate::controller::rfc3339(node.started_at),
                log_path: node.log_path,
                name: node.name,
                cluster: node.cluster,
                service,
                node_type: node.node_type,
                group: node.group,
                labels,
            }
        })
        .collect();
    Json(pods).into_response()
}

pub(super) async fn list_endpoints(State(state): State<AppState>) -> Response {
    let controller = &state.controller;
    let settings = &controller.settings;
    let services = controller.with_store(|s| s.services()).unwrap_or_default();
    let clusters = controller
        .with_store(|s| s.clusters(None))
        .unwrap_or_default();
    let mut views = Vec::new();
    for service in services.iter().filter(|s| !s.deleting) {
        let created = service.object["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let active = service.status["activeServiceStatus"]["rayClusterName"]
            .as_str()
            .map(str::to_string);
        views.push(ServiceView {
            name: format!("{}-head-svc", service.name),
            service_type: "ClusterIP".into(),
            cluster_ip: settings.dashboard_addr.ip().to_string(),
            ports: vec![format!("{}/TCP", settings.dashboard_addr.port())],
            target_cluster: active.clone(),
            created_at: created.clone(),
        });
        views.push(ServiceView {
            name: format!("{}-serve-svc", service.name),
            service_type: "ClusterIP".into(),
            cluster_ip: settings.serve_addr.ip().to_string(),
            ports: vec![format!("{}/TCP", settings.serve_addr.port())],
            target_cluster: active,
            created_at: created,
        });
    }
    for cluster in clusters {
        let Ok(layout) = serde_json::from_value::<ClusterLayout>(cluster.layout.clone()) else {
            continue;
        };
        views.push(ServiceView {
            name: format!("{}-head-svc", cluster.name),
            service_type: "ClusterIP".into(),
            cluster_ip: "127.0.0.1".into(),
            ports: vec![
                format!("{}/TCP", layout.client_port),
                format!("{}/TCP", layout.dashboard_port),
                format!("{}/TCP", layout.gcs_port),
                format!("{}/TCP", layout.serve_port),
            ],
            target_cluster: Some(cluster.name.clone()),
            created_at: crate::controller::rfc3339(cluster.created_at),
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Json(views).into_response()
}

pub(super) async fn list_events(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let controller = &state.controller;
    let mut records = controller
        .with_store(|s| s.events(&name, 50))
        .unwrap_or_default();
    let clusters = controller
        .with_store(|s| s.clusters(Some(&name)))
        .unwrap_or_default();
    for cluster in clusters {
        records.extend(
            controller
                .with_store(|s| s.events(&cluster.name, 20))
                .unwrap_or_default(),
        );
    }
    records.sort_by_key(|r| r.last_seen);
    let views: Vec<EventView> = records
        .into_iter()
        .map(|r| EventView {
            event_type: r.event_type,
            reason: r.reason,
            message: r.message,
            count: r.count,
            first_timestamp: crate::controller::rfc3339(r.first_seen),
            last_timestamp: crate::controller::rfc3339(r.last_seen),
            source: if r.object_kind == "RayCluster" {
                "raycluster-controller".into()
            } else {
                "rayservice-controller".into()
            },
        })
        .collect();
    Json(views).into_response()
}
