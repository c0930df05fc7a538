//! The objects through which a RayService's requests are split between two clusters during a
//! `NewClusterWithIncrementalUpgrade`, in KubeRay v1.7's shapes (Gateway API
//! `gateway.networking.k8s.io/v1`):
//!
//! - the Gateway `S-gateway`: the spec's `gatewayClassName`, one HTTP listener `http` on port 80;
//! - the HTTPRoute `S-httproute`: parent that Gateway, one rule matching the path prefix `/`,
//!   a weighted backend per cluster, the cluster's own Serve service;
//! - that Serve service `C-serve-svc`: the cluster's pods whose Serve proxy is healthy
//!   (`ray.io/serve=true`), on the head container's serve ports; owned by the RayCluster, so it
//!   goes with it.
//!
//! Pure builders and readers; [`crate::rayservice`] writes them as the core says
//! ([`rayservice_core::Action::SplitTraffic`]). The Gateway API types are not a dependency: the
//! objects are `DynamicObject`s built from JSON, and only the fields used here are read back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use rayservice_api::{RayCluster, RayClusterSpec};
use rayservice_core::naming::{gateway_name, http_route_name, serve_service_name};
use serde_json::{Value, json};

use crate::build::{
    self, BuildError, LABEL_CLUSTER, LABEL_ORIGIN_CRD, LABEL_ORIGIN_NAME, LABEL_SERVE,
};

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The version of the Gateway API used (standard channel).
pub const VERSION: &str = "v1";
/// The Gateway's listener, as KubeRay names it.
pub const LISTENER_NAME: &str = "http";
/// The Gateway's listener port, as KubeRay sets it.
pub const LISTENER_PORT: i64 = 80;
/// Serve's HTTP port when the head container names none.
pub const DEFAULT_SERVE_PORT: i32 = 8000;

/// `gateway.networking.k8s.io/v1` `Gateway`.
pub fn gateway_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "Gateway"),
        "gateways",
    )
}

/// `gateway.networking.k8s.io/v1` `HTTPRoute`.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "HTTPRoute"),
        "httproutes",
    )
}

/// Labels of every object of a RayService.
fn origin_labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_ORIGIN_NAME.to_string(), service.to_string()),
        (LABEL_ORIGIN_CRD.to_string(), "RayService".to_string()),
    ])
}

fn object(
    resource: &ApiResource,
    name: String,
    namespace: &str,
    service: &str,
    owner: &OwnerReference,
    spec: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(&name, resource).within(namespace);
    object.metadata.labels = Some(origin_labels(service));
    object.metadata.owner_references = Some(vec![owner.clone()]);
    object.data = json!({ "spec": spec });
    object
}

/// The Gateway of RayService `service` (owned by it through `owner`).
pub fn gateway(
    service: &str,
    namespace: &str,
    owner: &OwnerReference,
    class: &str,
) -> DynamicObject {
    object(
        &gateway_resource(),
        gateway_name(service),
        namespace,
        service,
        owner,
        json!({
            "gatewayClassName": class,
            "listeners": [{"name": LISTENER_NAME, "protocol": "HTTP", "port": LISTENER_PORT}],
        }),
    )
}

/// One backend of the HTTPRoute: a cluster's Serve service, its port and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `C-serve-svc`.
    pub service: String,
    /// The Serve port of the cluster.
    pub port: i64,
    /// Percent of the requests.
    pub weight: i64,
}

/// The HTTPRoute of RayService `service`: everything under `/` to `backends` by weight.
pub fn http_route(
    service: &str,
    namespace: &str,
    owner: &OwnerReference,
    backends: &[Backend],
) -> DynamicObject {
    let refs: Vec<Value> = backends
        .iter()
        .map(|b| {
            json!({
                "name": b.service,
                "namespace": namespace,
                "port": b.port,
                "weight": b.weight,
            })
        })
        .collect();
    object(
        &http_route_resource(),
        http_route_name(service),
        namespace,
        service,
        owner,
        json!({
            "parentRefs": [{"name": gateway_name(service), "namespace": namespace}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": refs,
            }],
        }),
    )
}

/// What of a Gateway this operator sets: the class and each listener's name, protocol and port
/// (the API server adds defaults around them).
pub fn gateway_essentials(gateway: &DynamicObject) -> (Option<String>, Vec<(String, String, i64)>) {
    let spec = &gateway.data["spec"];
    let listeners = spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_string(),
                l["protocol"].as_str().unwrap_or_default().to_string(),
                l["port"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    (
        spec["gatewayClassName"].as_str().map(str::to_string),
        listeners,
    )
}

/// What of an HTTPRoute this operator sets: its parent Gateway's name and the backends of its
/// first rule (as KubeRay reads the weights back).
pub fn route_essentials(route: &DynamicObject) -> (Option<String>, Vec<Backend>) {
    let spec = &route.data["spec"];
    let parent = spec["parentRefs"][0]["name"].as_str().map(str::to_string);
    let backends = spec["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Backend {
            service: b["name"].as_str().unwrap_or_default().to_string(),
            port: b["port"].as_i64().unwrap_or_default(),
            // The Gateway API's default weight.
            weight: b["weight"].as_i64().unwrap_or(1),
        })
        .collect();
    (parent, backends)
}

fn parse_conditions(value: &Value) -> Vec<Condition> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::from_value(c.clone()).ok())
        .collect()
}

/// The status conditions of a Gateway, as its controller wrote them.
pub fn gateway_conditions(gateway: &DynamicObject) -> Vec<Condition> {
    parse_conditions(&gateway.data["status"]["conditions"])
}

/// The conditions of each `status.parents` entry of an HTTPRoute that names the Gateway
/// `gateway` in `namespace` (an entry without a namespace means the route's own).
pub fn route_conditions(
    route: &DynamicObject,
    gateway: &str,
    namespace: &str,
) -> Vec<Vec<Condition>> {
    route.data["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let parent = &p["parentRef"];
            parent["name"].as_str() == Some(gateway)
                && parent["namespace"]
                    .as_str()
                    .is_none_or(|ns| ns == namespace)
        })
        .map(|p| parse_conditions(&p["conditions"]))
        .collect()
}

/// The head container's serve ports (`serve` and `serve-*`, as KubeRay exposes them); `serve`
/// 8000 when it names none.
pub fn serve_ports(spec: &RayClusterSpec) -> Vec<(String, i32)> {
    let ports: Vec<(String, i32)> = spec
        .head_group_spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref()?;
            (name == "serve" || name.starts_with("serve-"))
                .then(|| (name.to_string(), p.container_port))
        })
        .collect();
    if ports.is_empty() {
        vec![("serve".to_string(), DEFAULT_SERVE_PORT)]
    } else {
        ports
    }
}

/// The port the HTTPRoute sends a cluster's requests to: its `serve` port.
pub fn serve_port(spec: &RayClusterSpec) -> i32 {
    serve_ports(spec)
        .into_iter()
        .find(|(name, _)| name == "serve")
        .map_or(DEFAULT_SERVE_PORT, |(_, port)| port)
}

/// `C-serve-svc`: the pods of cluster `C` whose Serve proxy is healthy, on its serve ports;
/// owned by the RayCluster (it goes with the cluster) and labelled as RayService `service`'s.
pub fn cluster_serve_service(service: &str, cluster: &RayCluster) -> Result<Service, BuildError> {
    let owner = build::owner_reference(cluster)?;
    let name = owner.name.clone();
    let mut labels = origin_labels(service);
    labels.insert(LABEL_SERVE.to_string(), format!("{name}-serve"));
    let ports = serve_ports(&cluster.spec)
        .into_iter()
        .map(|(port_name, port)| ServicePort {
            name: Some(port_name),
            port,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        })
        .collect();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(serve_service_name(&name)),
            namespace: Some(build::namespace_of(cluster)),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: cluster.spec.head_group_spec.service_type.clone(),
            selector: Some(BTreeMap::from([
                (LABEL_CLUSTER.to_string(), name),
                (LABEL_SERVE.to_string(), "true".to_string()),
            ])),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "ray.io/v1".into(),
            kind: "RayService".into(),
            name: "svc".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn the_gateway_and_route_read_back_as_written() {
        let gateway = gateway("svc", "ns", &owner(), "istio");
        assert_eq!(gateway.metadata.name.as_deref(), Some("svc-gateway"));
        assert_eq!(
            gateway_essentials(&gateway),
            (
                Some("istio".to_string()),
                vec![("http".to_string(), "HTTP".to_string(), 80)]
            )
        );
        let backends = vec![
            Backend {
                service: "a-serve-svc".into(),
                port: 8000,
                weight: 75,
            },
            Backend {
                service: "b-serve-svc".into(),
                port: 9000,
                weight: 25,
            },
        ];
        let route = http_route("svc", "ns", &owner(), &backends);
        assert_eq!(route.metadata.name.as_deref(), Some("svc-httproute"));
        assert_eq!(
            route_essentials(&route),
            (Some("svc-gateway".to_string()), backends)
        );
        assert_eq!(
            route.data["spec"]["rules"][0]["matches"][0]["path"],
            json!({"type": "PathPrefix", "value": "/"})
        );
    }

    #[test]
    fn route_conditions_are_those_of_its_gateway() {
        let mut route = http_route("svc", "ns", &owner(), &[]);
        let condition = |type_: &str| {
            json!({"type": type_, "status": "True", "reason": type_, "message": "",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        route.data["status"] = json!({"parents": [
            {"parentRef": {"name": "other"}, "controllerName": "x", "conditions": [condition("Accepted")]},
            {"parentRef": {"name": "svc-gateway", "namespace": "ns"}, "controllerName": "x",
             "conditions": [condition("Accepted"), condition("ResolvedRefs")]},
        ]});
        let parents = route_conditions(&route, "svc-gateway", "ns");
        assert_eq!(parents.len(), 1);
        let types: Vec<&str> = parents[0].iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Accepted", "ResolvedRefs"]);
        assert!(route_conditions(&route, "svc-gateway", "elsewhere").is_empty());
    }

    #[test]
    fn serve_ports_follow_the_head_container() {
        let mut spec = RayClusterSpec::default();
        assert_eq!(serve_ports(&spec), [("serve".to_string(), 8000)]);
        spec.head_group_spec.template = serde_json::from_value(json!({"spec": {"containers": [{
            "name": "ray-head",
            "ports": [
                {"name": "dashboard", "containerPort": 8265},
                {"name": "serve", "containerPort": 9000},
                {"name": "serve-grpc", "containerPort": 9001},
            ],
        }]}}))
        .expect("template");
        assert_eq!(
            serve_ports(&spec),
            [
                ("serve".to_string(), 9000),
                ("serve-grpc".to_string(), 9001)
            ]
        );
        assert_eq!(serve_port(&spec), 9000);
    }
}
