//! One home for the labels and annotations both platforms write on the objects they show or
//! create (KubeRay's names where KubeRay has one).

use std::collections::BTreeMap;

use crate::types::NodeType;

/// `ray.io/cluster`: the name of the RayCluster a pod or service belongs to.
pub const LABEL_CLUSTER: &str = "ray.io/cluster";
/// `ray.io/node-type`: `head` or `worker`.
pub const LABEL_NODE_TYPE: &str = "ray.io/node-type";
/// `ray.io/group`: the worker group (`headgroup` for the head).
pub const LABEL_GROUP: &str = "ray.io/group";
/// `ray.io/identifier`: `CLUSTER-head` or `CLUSTER-worker`.
pub const LABEL_IDENTIFIER: &str = "ray.io/identifier";
/// `ray.io/is-ray-node`: `yes` on every Ray pod.
pub const LABEL_IS_RAY_NODE: &str = "ray.io/is-ray-node";
/// `ray.io/originated-from-cr-name`: the RayService a RayCluster (and its pods) was made for.
pub const LABEL_ORIGIN_NAME: &str = "ray.io/originated-from-cr-name";
/// `ray.io/originated-from-crd`: `RayService` on a RayService's clusters and their pods.
pub const LABEL_ORIGIN_CRD: &str = "ray.io/originated-from-crd";
/// `ray.io/serve`: `true` on a pod whose Serve proxy answers `/-/healthz`.
pub const LABEL_SERVE: &str = "ray.io/serve";
/// The group label value of the head pod (as in KubeRay).
pub const HEAD_GROUP: &str = "headgroup";
/// Annotation on a RayCluster: the hash of its spec without what the autoscaler owns
/// (KubeRay's name). KubeRay's other annotations are in [`crate::types::annotations`].
pub use crate::types::annotations::HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE as HASH_ANNOTATION;
/// Finalizer that lets the operator remove what it created before a RayService goes.
pub const RAYSERVICE_FINALIZER: &str = "ray.io/rayservice-finalizer";
/// Annotation on a RayCluster: what the core remembers about it, as JSON.
pub const ANNOTATION_MEMORY: &str = "rayservice.io/memory";

/// The `ray.io` labels of a Ray node (pod or local process).
pub fn node_labels(cluster: &str, node: NodeType, group: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_NODE_TYPE.to_string(), node.as_str().to_string()),
        (LABEL_GROUP.to_string(), group.to_string()),
        (
            LABEL_IDENTIFIER.to_string(),
            format!("{cluster}-{}", node.as_str()),
        ),
        (LABEL_IS_RAY_NODE.to_string(), "yes".to_string()),
    ])
}

/// The labels that say which RayService a RayCluster (and its nodes) was made for.
pub fn origin_labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_ORIGIN_NAME.to_string(), service.to_string()),
        (LABEL_ORIGIN_CRD.to_string(), "RayService".to_string()),
    ])
}
/// Annotation of a RayService: the longest time (seconds, default 600) a cluster traffic left
/// may keep running for its requests in flight after `rayClusterDeletionDelaySeconds`.
pub const ANNOTATION_DRAIN_TIMEOUT: &str = "rayservice.dev/drain-timeout-seconds";
/// Annotation of a RayService: the error percentage (5xx and failed connections, default 5) of
/// the new cluster, over at least 20 requests, above which an incremental upgrade is rolled back
/// automatically when the old cluster did better over the same window.
pub const ANNOTATION_MAX_ERROR_PERCENT: &str = "rayservice.dev/max-error-percent";
/// Annotation of a RayService (optional, e.g. `"3"`): roll an upgrade back automatically when
/// the new cluster's p99 latency exceeds this many times the old cluster's over the same window
/// (at least 20 requests on each).
pub const ANNOTATION_MAX_P99_RATIO: &str = "rayservice.dev/max-p99-ratio";
