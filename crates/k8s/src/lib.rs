//! The Kubernetes operator for RayCluster (and later RayService).
//!
//! - [`build`]: the desired objects of a RayCluster (pods, head service, worker diff, status),
//!   pure and without a client.
//! - [`gateway`]: the Gateway API objects of incremental upgrades (pure builders and readers).
//! - [`operate`]: metrics, health and readiness probes, leader election.
//! - [`raycluster`]: the RayCluster controller against a real API server (`kube::runtime`).
//! - [`rayservice`]: the RayService controller, the Kubernetes platform of the shared core.

pub mod build;
pub mod events;
pub mod gateway;
pub mod operate;
pub mod raycluster;
pub mod rayservice;
pub mod runtime;

pub use raycluster::{Context, Error, FIELD_MANAGER, error_policy, reconcile, run};
