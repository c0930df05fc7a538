//! The CLI's side of the control API: find the server (starting it when it does not run) and
//! call it.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::settings::Settings;
use crate::views::{EventView, PodView, ServiceView};
use crate::wire::{ApiError, ApplyRequest, ApplyResult, ControlInfo};

/// Why a control API call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be started.
    #[error("the rayservice server did not start: {0}")]
    Start(String),
    /// The server answered with an error.
    #[error("{0}")]
    Api(String),
    /// The object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server could not be reached.
    #[error("cannot reach the rayservice server: {0}")]
    Transport(String),
}

/// A connection to the local control plane.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// Connects to the running server of `settings.home`, starting one in the background if
    /// none answers (`server_exe` is the program that runs `server`).
    pub async fn connect_or_start(
        settings: &Settings,
        server_exe: &std::path::Path,
    ) -> Result<Client, ClientError> {
        if let Some(client) = Client::connect(settings).await {
            return Ok(client);
        }
        start_server(settings, server_exe)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(client) = Client::connect(settings).await {
                return Ok(client);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ClientError::Start(format!(
                    "no answer after 30s; see {}",
                    settings.server_log().display()
                )));
            }
            if let Some(failure) = server_failed(settings) {
                return Err(ClientError::Start(failure));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connects to a running server, if one answers.
    pub async fn connect(settings: &Settings) -> Option<Client> {
        let bytes = std::fs::read(settings.control_file()).ok()?;
        let info: ControlInfo = serde_json::from_slice(&bytes).ok()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .ok()?;
        let client = Client {
            base: format!("http://127.0.0.1:{}", info.port),
            token: info.token,
            http,
        };
        let health = client
            .http
            .get(format!("{}/v1/health", client.base))
            .bearer_auth(&client.token)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match health {
            Ok(response) if response.status().is_success() => Some(client),
            _ => None,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Transport(format!("bad answer: {e}")));
        }
        let message = serde_json::from_slice::<ApiError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        if status == reqwest::StatusCode::NOT_FOUND {
            Err(ClientError::NotFound(message))
        } else {
            Err(ClientError::Api(message))
        }
    }

    /// Applies RayService objects.
    pub async fn apply(&self, request: &ApplyRequest) -> Result<Vec<ApplyResult>, ClientError> {
        self.call(
            self.http
                .post(format!("{}/v1/apply", self.base))
                .json(request),
        )
        .await
    }

    /// What applying would do, without doing it.
    pub async fn diff(
        &self,
        request: &ApplyRequest,
    ) -> Result<Vec<crate::diff::DiffReport>, ClientError> {
        self.call(
            self.http
                .post(format!("{}/v1/diff", self.base))
                .json(request),
        )
        .await
    }

    /// Every RayService.
    pub async fn rayservices(&self) -> Result<Vec<Value>, ClientError> {
        self.call(self.http.get(format!("{}/v1/rayservices", self.base)))
            .await
    }

    /// One RayService.
    pub async fn rayservice(&self, name: &str) -> Result<Value, ClientError> {
        self.call(
            self.http
                .get(format!("{}/v1/rayservices/{name}", self.base)),
        )
        .await
    }

    /// Stops and forgets a RayCluster applied on its own.
    pub async fn delete_raycluster(&self, name: &str) -> Result<(), ClientError> {
        let _: Value = self
            .call(
                self.http
                    .delete(format!("{}/v1/rayclusters/{name}", self.base)),
            )
            .await?;
        Ok(())
    }

    /// Deletes a RayService and waits until its processes stopped.
    pub async fn delete_rayservice(&self, name: &str) -> Result<(), ClientError> {
        let _: Value = self
            .call(
                self.http
                    .delete(format!("{}/v1/rayservices/{name}", self.base)),
            )
            .await?;
        Ok(())
    }

    /// Every RayCluster.
    pub async fn rayclusters(&self) -> Result<Vec<Value>, ClientError> {
        self.call(self.http.get(format!("{}/v1/rayclusters", self.base)))
            .await
    }

    /// Every Ray node process.
    pub async fn pods(&self) -> Result<Vec<PodView>, ClientError> {
        self.call(self.http.get(format!("{}/v1/pods", self.base)))
            .await
    }

    /// Every local endpoint.
    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.call(self.http.get(format!("{}/v1/services", self.base)))
            .await
    }

    /// Events of an object and its clusters.
    pub async fn events(&self, name: &str) -> Result<Vec<EventView>, ClientError> {
        self.call(self.http.get(format!("{}/v1/events/{name}", self.base)))
            .await
    }

    /// Stops the server (and, with `stop_clusters`, every cluster first).
    pub async fn shutdown(&self, stop_clusters: bool) -> Result<(), ClientError> {
        let _: Value = self
            .call(
                self.http
                    .post(format!("{}/v1/shutdown", self.base))
                    .json(&serde_json::json!({"stopClusters": stop_clusters})),
            )
            .await?;
        Ok(())
    }
}

fn start_server(settings: &Settings, server_exe: &std::path::Path) -> Result<(), ClientError> {
    settings.ensure_home().map_err(|e| {
        ClientError::Start(format!("cannot create {}: {e}", settings.home.display()))
    })?;
    let log = settings.server_log();
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
    };
    let (out, err) = match (open(), open()) {
        (Ok(out), Ok(err)) => (out, err),
        _ => return Err(ClientError::Start(format!("cannot open {}", log.display()))),
    };
    let _ = std::fs::remove_file(failure_file(settings));
    let mut command = std::process::Command::new(server_exe);
    command
        .arg("server")
        .env("RAYSERVICE_HOME", &settings.home)
        .env("RAYSERVICE_SERVER_FAILURE_FILE", failure_file(settings))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().map_err(|e| {
        ClientError::Start(format!("cannot run {} server: {e}", server_exe.display()))
    })?;
    Ok(())
}

/// Where a background server writes why it could not start.
pub fn failure_file(settings: &Settings) -> PathBuf {
    settings.home.join("server.failed")
}

fn server_failed(settings: &Settings) -> Option<String> {
    std::fs::read_to_string(failure_file(settings))
        .ok()
        .filter(|s| !s.trim().is_empty())
}
