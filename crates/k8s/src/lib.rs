//! The Kubernetes operator for RayCluster (and later RayService).
//!
//! - [`build`]: the desired objects of a RayCluster (pods, head service, worker diff, status),
//!   pure and without a client.
//! - [`raycluster`]: the RayCluster controller against a real API server (`kube::runtime`).

#![warn(missing_docs)]

pub mod build;
pub mod raycluster;

pub use raycluster::{Context, Error, FIELD_MANAGER, error_policy, reconcile, run};
