//! The vocabulary of Ray Serve's REST API that the client (`rayservice-ray`) and the decision
//! core (`rayservice-core`) share: Serve's statuses as typed values, what one look at a
//! cluster's applications says, and [`ServeApi`], the two calls the core's contract with Ray
//! needs. The client implements the trait over HTTP; the core's tests implement it in memory.

use std::future::Future;

use serde::{Deserialize, Serialize};

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this crate does not know, kept as Ray wrote it.
            Unknown(String),
        }

        impl $name {
            /// The value as Ray writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Unknown(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $($text => Self::$variant,)*
                    _ => Self::Unknown(text),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_string()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::Unknown(String::new())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// Status of a Serve application.
    ServeAppStatus {
        /// Not deployed yet.
        NotStarted = "NOT_STARTED",
        /// Being deployed (or waiting for resources).
        Deploying = "DEPLOYING",
        /// The config could not be applied; the message says why.
        DeployFailed = "DEPLOY_FAILED",
        /// All deployments healthy.
        Running = "RUNNING",
        /// A deployment is unhealthy.
        Unhealthy = "UNHEALTHY",
        /// Being deleted.
        Deleting = "DELETING",
    }
}

status_enum! {
    /// Status of a Serve deployment.
    ServeDeploymentStatus {
        /// Replicas being started or reconfigured.
        Updating = "UPDATING",
        /// All replicas healthy.
        Healthy = "HEALTHY",
        /// A replica failed its health check or could not start.
        Unhealthy = "UNHEALTHY",
        /// The deployment could not be deployed.
        DeployFailed = "DEPLOY_FAILED",
        /// Adding replicas.
        Upscaling = "UPSCALING",
        /// Removing replicas.
        Downscaling = "DOWNSCALING",
    }
}

status_enum! {
    /// Status of a Serve proxy.
    ServeProxyStatus {
        /// Starting.
        Starting = "STARTING",
        /// Serving.
        Healthy = "HEALTHY",
        /// Failing health checks.
        Unhealthy = "UNHEALTHY",
        /// Draining before its node goes away.
        Draining = "DRAINING",
        /// Drained.
        Drained = "DRAINED",
    }
}

impl ServeAppStatus {
    /// `DEPLOY_FAILED` or `UNHEALTHY`: the application does not serve as configured.
    pub fn is_failing(&self) -> bool {
        matches!(self, Self::DeployFailed | Self::Unhealthy)
    }
}

impl ServeDeploymentStatus {
    /// `UNHEALTHY` or `DEPLOY_FAILED`.
    pub fn is_failing(&self) -> bool {
        matches!(self, Self::Unhealthy | Self::DeployFailed)
    }
}

/// One Serve application as Ray reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedApp {
    /// Application name.
    pub name: String,
    /// Its status.
    pub status: ServeAppStatus,
    /// Ray's message (why it failed, what it waits for).
    pub message: String,
    /// Its deployments.
    pub deployments: Vec<ObservedDeployment>,
}

/// One deployment of a Serve application as Ray reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDeployment {
    /// Deployment name.
    pub name: String,
    /// Its status.
    pub status: ServeDeploymentStatus,
    /// Ray's message.
    pub message: String,
}

/// Why a Serve config was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Ray read the config and refused it (HTTP 400); sending it again will not help.
    Rejected(String),
    /// The dashboard could not be reached or failed; worth trying again.
    Failed(String),
}

/// What the core asks of one cluster's Serve REST API (the head's dashboard).
pub trait ServeApi: Sync {
    /// The applications Ray knows (`GET /api/serve/applications/`); `Err` carries why the
    /// dashboard did not answer.
    fn applications(&self) -> impl Future<Output = Result<Vec<ObservedApp>, String>> + Send;

    /// Replaces the cluster's Serve config (`PUT /api/serve/applications/`).
    fn submit(
        &self,
        config: &serde_json::Value,
    ) -> impl Future<Output = Result<(), SubmitError>> + Send;
}
