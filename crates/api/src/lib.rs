//! The RayService and RayCluster API (`ray.io/v1`, with `ray.io/v1alpha1` accepted on input):
//! types, parsing of manifest files, and validation. No I/O.

pub mod crd;
pub mod error;
pub mod labels;
pub mod manifest;
pub mod quantity;
pub mod resources;
pub mod serve_api;
pub mod serve_config;
pub mod types;
pub mod validate;
pub mod yaml;

pub use error::{FieldError, ManifestError};
pub use manifest::{Manifest, parse_manifests};
pub use serve_config::{ServeApplication, ServeConfig, ServeDeployment};
pub use types::*;

/// Namespace given to objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Longest RayService name, so that generated cluster and pod names stay legal.
pub const MAX_RAYSERVICE_NAME_LEN: usize = 47;
