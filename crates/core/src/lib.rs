//! The RayService decision core, shared by local mode and the Kubernetes operator.
//!
//! Pure functions from (desired spec, observed state, clock) to actions and a new status:
//! the cluster hash, in-place update versus new cluster, readiness, health thresholds,
//! promotion and the deletion delay. No I/O happens here.

pub mod contract;
pub mod decide;
pub mod hash;
pub mod incremental;
pub mod model;
pub mod naming;
pub mod status;
mod suspend;

pub use contract::{ClusterMemory, RejectedConfig};
pub use decide::reconcile;
pub use hash::{HASH_ANNOTATION, cluster_hash};
pub use model::*;
pub use naming::{cluster_name, random_suffix};

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod tests;
