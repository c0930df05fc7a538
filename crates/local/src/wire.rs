//! The wire types of the local control API (JSON over HTTP on loopback), shared by the server
//! and the CLI's client.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a client finds a running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlInfo {
    /// Port of the control API on 127.0.0.1.
    pub port: u16,
    /// Bearer token the API requires.
    pub token: String,
    /// The server's process id.
    pub pid: u32,
}

/// What `apply` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// RayService objects, already parsed and validated by the client.
    pub objects: Vec<Value>,
    /// RayCluster objects applied on their own.
    #[serde(default)]
    pub clusters: Vec<Value>,
    /// Folder of the YAML file: relative `working_dir`s start there.
    pub base_dir: PathBuf,
    /// The file name, for error messages.
    pub file: String,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplyResult {
    /// `RayService` or `RayCluster`.
    #[serde(default = "rayservice_kind")]
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
}

fn rayservice_kind() -> String {
    "RayService".to_string()
}

/// An error answer of the control API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
}
