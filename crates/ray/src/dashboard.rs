//! A client for the Ray dashboard's HTTP API: Serve's REST API (`/api/serve/applications/`),
//! health checks, and the package endpoint that `ray job submit` uses to upload working dirs.
//!
//! What Ray 2.60 answers (measured):
//! - `PUT /api/serve/applications/` with a Serve config: `200` with an empty body once the
//!   config is accepted (apps then deploy in the background); `400` with a plain-text pydantic
//!   message for a config Ray refuses up front (duplicate route prefix or app name, missing
//!   `import_path`, local path as `working_dir`); `500` with a traceback for a body that is not
//!   JSON. Mistakes found later (unknown deployment name, bad import path, unreachable
//!   `working_dir`) show up as `DEPLOY_FAILED` with a message in the GET answer.
//! - `GET /api/serve/applications/?api_type=declarative`: JSON, see [`ServeDetails`]; before
//!   Serve ever ran: `{"controller_info":{},"proxies":{},"applications":{},"target_capacity":null}`.
//! - `GET /api/gcs_healthz`: `200 success`. `GET <serve>/-/healthz`: `200 success`.

use std::collections::BTreeMap;
use std::time::Duration;

use rayservice_api::serve_api::{ObservedApp, ObservedDeployment, ServeApi, SubmitError};
pub use rayservice_api::serve_api::{
    ServeAppStatus as ApplicationStatus, ServeDeploymentStatus as DeploymentStatus,
    ServeProxyStatus as ProxyStatus,
};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::auth::AuthToken;

/// Timeout for reads of the dashboard's API.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for submitting a Serve config (the first one also starts Serve's controller).
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for health checks.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout for connecting, used by [`http_client`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer read from a dashboard or a Serve proxy. A head runs the user's image, so
/// what it sends is bounded; the Serve status of hundreds of applications fits easily.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client for Ray's dashboards and Serve proxies: short connect timeout, no proxy
/// from the environment, and no redirects (a head runs the user's image: it must not be able
/// to send the controller, or a Serve config, anywhere else). Each call sets its own timeout.
pub fn http_client() -> Result<reqwest::Client, DashboardError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(DashboardError::Client)
}

/// What went wrong talking to the dashboard.
#[derive(Debug, Error)]
pub enum DashboardError {
    /// The request could not be made or answered in time (dashboard down, timeout).
    #[error("request to {url} failed: {source}")]
    Request {
        /// The URL called.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// Ray refused what was sent (HTTP 400), e.g. a Serve config it cannot accept.
    #[error("Ray refused the request to {url} (HTTP {status}): {message}")]
    Rejected {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Ray's explanation, as it wrote it.
        message: String,
    },
    /// Any other unexpected HTTP status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("cannot decode the answer of {url}: {source} (body starts: {body_start})")]
    Decode {
        /// The URL called.
        url: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
        /// The first characters of the body.
        body_start: String,
    },
    /// A package URI is not `<protocol>://<name>.zip`.
    #[error("package URI {uri:?} is not of the form gcs://<name>.zip")]
    PackageUri {
        /// The URI given.
        uri: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The answer was longer than [`MAX_BODY_BYTES`]; it was not read further.
    #[error("{url} answered more than {limit} bytes; not read further")]
    TooLarge {
        /// The URL called.
        url: String,
        /// The limit.
        limit: usize,
    },
}

/// A client for one cluster's dashboard, at `http://<host>:<port>`. With a token
/// ([`DashboardClient::with_token`]) every call carries `Authorization: Bearer <token>`, as a
/// cluster with Ray's token authentication wants (see [`crate::auth`]).
#[derive(Debug, Clone)]
pub struct DashboardClient {
    http: reqwest::Client,
    host: String,
    base_url: String,
    token: Option<AuthToken>,
}

impl DashboardClient {
    /// A client for the dashboard on `127.0.0.1:<port>`, with its own [`http_client`].
    pub fn new(port: u16) -> Result<Self, DashboardError> {
        Ok(Self::with_client(http_client()?, port))
    }

    /// A client for the dashboard on `127.0.0.1:<port>` that shares an HTTP client. Give it
    /// one made by [`http_client`]; each call sets its own timeout.
    pub fn with_client(http: reqwest::Client, port: u16) -> Self {
        Self::at(http, "127.0.0.1", port)
    }

    /// A client for the dashboard on `<host>:<port>`.
    pub fn at(http: reqwest::Client, host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let base_url = format!("http://{host}:{port}");
        DashboardClient {
            http,
            host,
            base_url,
            token: None,
        }
    }

    /// The same client, sending `token` with every call (none: no `Authorization` header).
    pub fn with_token(mut self, token: Option<AuthToken>) -> Self {
        self.token = token;
        self
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(url))
    }

    fn put(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.put(url))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.secret()),
            None => request,
        }
    }

    /// The dashboard's base URL, e.g. `http://127.0.0.1:8265`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Submits a whole Serve config (`PUT /api/serve/applications/`). Ok means Ray accepted
    /// it; the apps deploy in the background. A config Ray refuses gives
    /// [`DashboardError::Rejected`] with Ray's message.
    pub async fn put_serve_applications(
        &self,
        config: &serde_json::Value,
    ) -> Result<(), DashboardError> {
        let url = format!("{}/api/serve/applications/", self.base_url);
        let request = self.put(&url).timeout(SUBMIT_TIMEOUT).json(config);
        let (status, body) = send(request, &url).await?;
        expect_ok(&url, status, body)
    }

    /// The Serve applications deployed from configs, their status and their deployments
    /// (`GET /api/serve/applications/?api_type=declarative`).
    pub async fn get_serve_applications(&self) -> Result<ServeDetails, DashboardError> {
        let url = format!(
            "{}/api/serve/applications/?api_type=declarative",
            self.base_url
        );
        let (status, body) = send(self.get(&url).timeout(REQUEST_TIMEOUT), &url).await?;
        if status != 200 {
            return Err(status_error(&url, status, &body));
        }
        ServeDetails::from_json(&body).map_err(|source| DashboardError::Decode {
            url,
            source,
            body_start: body.chars().take(200).collect(),
        })
    }

    /// Whether the dashboard answers and sees the GCS (`GET /api/gcs_healthz`).
    pub async fn gcs_healthz(&self) -> bool {
        let url = format!("{}/api/gcs_healthz", self.base_url);
        matches!(
            send(self.get(&url).timeout(HEALTH_TIMEOUT), &url).await,
            Ok((200, _))
        )
    }

    /// Whether the Serve proxy on `serve_port` (same host) is up (`GET /-/healthz`).
    pub async fn serve_healthz(&self, serve_port: u16) -> bool {
        let url = format!("http://{}:{serve_port}/-/healthz", self.host);
        matches!(
            send(self.get(&url).timeout(HEALTH_TIMEOUT), &url).await,
            Ok((200, _))
        )
    }

    /// Route prefix → application name, as the Serve proxy on `serve_port` knows them
    /// (`GET /-/routes`).
    pub async fn serve_routes(
        &self,
        serve_port: u16,
    ) -> Result<BTreeMap<String, String>, DashboardError> {
        let url = format!("http://{}:{serve_port}/-/routes", self.host);
        let (status, body) = send(self.get(&url).timeout(REQUEST_TIMEOUT), &url).await?;
        if status != 200 {
            return Err(status_error(&url, status, &body));
        }
        serde_json::from_str(&body).map_err(|source| DashboardError::Decode {
            url,
            source,
            body_start: body.chars().take(200).collect(),
        })
    }

    /// Whether a package (`gcs://_ray_pkg_<hash>.zip`) is already stored in the cluster's GCS
    /// (`GET /api/packages/gcs/<name>`).
    pub async fn package_exists(&self, uri: &str) -> Result<bool, DashboardError> {
        let url = self.package_url(uri)?;
        let (status, body) = send(self.get(&url).timeout(REQUEST_TIMEOUT), &url).await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(&url, status, &body)),
        }
    }

    /// Stores a package in the cluster's GCS (`PUT /api/packages/gcs/<name>`, body: the zip),
    /// the way `ray job submit --working-dir` does. The zip must be flat (no top-level
    /// folder; see [`crate::package::PackageLayout::Flat`]). Ray deletes an uploaded package
    /// that nothing references after a while, and all of them when the head restarts.
    pub async fn upload_package(&self, uri: &str, zip: Vec<u8>) -> Result<(), DashboardError> {
        let url = self.package_url(uri)?;
        let (status, body) = send(self.put(&url).timeout(SUBMIT_TIMEOUT).body(zip), &url).await?;
        expect_ok(&url, status, body)
    }

    fn package_url(&self, uri: &str) -> Result<String, DashboardError> {
        let bad = || DashboardError::PackageUri {
            uri: uri.to_string(),
        };
        let (protocol, name) = uri.split_once("://").ok_or_else(bad)?;
        let name_ok = name.ends_with(".zip")
            && !name.contains('/')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if protocol != "gcs" || !name_ok {
            return Err(bad());
        }
        Ok(format!("{}/api/packages/{protocol}/{name}", self.base_url))
    }
}

impl ServeApi for DashboardClient {
    async fn applications(&self) -> Result<Vec<ObservedApp>, String> {
        self.get_serve_applications()
            .await
            .map(|details| details.observed_apps())
            .map_err(|error| error.to_string())
    }

    async fn submit(&self, config: &serde_json::Value) -> Result<(), SubmitError> {
        match self.put_serve_applications(config).await {
            Ok(()) => Ok(()),
            Err(DashboardError::Rejected { message, .. }) => Err(SubmitError::Rejected(message)),
            Err(error) => Err(SubmitError::Failed(error.to_string())),
        }
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<(u16, String), DashboardError> {
    let request_error = |source| DashboardError::Request {
        url: url.to_string(),
        source,
    };
    let mut response = request.send().await.map_err(request_error)?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(DashboardError::TooLarge {
                url: url.to_string(),
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn expect_ok(url: &str, status: u16, body: String) -> Result<(), DashboardError> {
    match status {
        200..=299 => Ok(()),
        400 => Err(DashboardError::Rejected {
            url: url.to_string(),
            status,
            message: body.trim().to_string(),
        }),
        _ => Err(status_error(url, status, &body)),
    }
}

fn status_error(url: &str, status: u16, body: &str) -> DashboardError {
    let mut body: String = body.trim().chars().take(2000).collect();
    if body.is_empty() {
        body = "(empty body)".to_string();
    }
    DashboardError::Status {
        url: url.to_string(),
        status,
        body,
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What `GET /api/serve/applications/` says about Serve on a cluster. Fields this crate does
/// not need (controller metrics, full deployment configs, ...) are skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServeDetails {
    /// Applications by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub applications: BTreeMap<String, ApplicationDetails>,
    /// Where proxies run (`HeadOnly`, `EveryNode`, `Disabled`); absent before Serve started.
    #[serde(default)]
    pub proxy_location: Option<String>,
    /// The HTTP options Serve started with (later changes are ignored by Ray).
    #[serde(default)]
    pub http_options: Option<HttpOptions>,
    /// Proxies by node id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub proxies: BTreeMap<String, ProxyDetails>,
    /// The Serve controller; empty before Serve started.
    #[serde(default, deserialize_with = "null_as_default")]
    pub controller_info: ControllerInfo,
}

impl ServeDetails {
    /// Decodes the dashboard's JSON answer.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The applications as the decision core reads them (name, status, message, deployments).
    pub fn observed_apps(&self) -> Vec<ObservedApp> {
        self.applications
            .iter()
            .map(|(name, app)| ObservedApp {
                name: name.clone(),
                status: app.status.clone(),
                message: app.message.clone(),
                deployments: app
                    .deployments
                    .iter()
                    .map(|(d_name, d)| ObservedDeployment {
                        name: d_name.clone(),
                        status: d.status.clone(),
                        message: d.message.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Whether Serve's controller runs (it starts with the first submitted config).
    pub fn serve_started(&self) -> bool {
        self.controller_info
            .actor_id
            .as_deref()
            .is_some_and(|id| !id.is_empty())
    }
}

/// Serve's HTTP options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOptions {
    /// Host the proxies bind.
    #[serde(default)]
    pub host: Option<String>,
    /// Port the proxies bind.
    #[serde(default)]
    pub port: Option<u16>,
}

/// The Serve controller actor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerInfo {
    /// Node it runs on.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Its actor id.
    #[serde(default)]
    pub actor_id: Option<String>,
}

/// One Serve proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyDetails {
    /// Node it runs on.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_id: String,
    /// That node's IP.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_ip: String,
    /// Its status.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: ProxyStatus,
}

/// One Serve application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplicationDetails {
    /// Its name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Its route prefix (`None` for apps without HTTP ingress, and for apps that failed
    /// before their code was imported).
    #[serde(default)]
    pub route_prefix: Option<String>,
    /// Its status.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: ApplicationStatus,
    /// Why it has that status (a traceback for `DEPLOY_FAILED`), often empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
    /// When its config was last applied (seconds since the epoch). Ray gives every app of
    /// one submitted config the same time.
    #[serde(default)]
    pub last_deployed_time_s: Option<f64>,
    /// `declarative` (from a config) or `imperative` (from `serve.run`).
    #[serde(default)]
    pub source: Option<String>,
    /// Deployments by name. Empty when the app failed before its deployments were built.
    #[serde(default, deserialize_with = "null_as_default")]
    pub deployments: BTreeMap<String, DeploymentDetails>,
}

/// One deployment of a Serve application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDetails {
    /// Its name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Its status.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: DeploymentStatus,
    /// What caused the status (`CONFIG_UPDATE_STARTED`, `HEALTH_CHECK_FAILED`, ...).
    #[serde(default)]
    pub status_trigger: Option<String>,
    /// Why it has that status; e.g. replicas waiting for resources say so here.
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
    /// Replicas wanted.
    #[serde(default)]
    pub target_num_replicas: Option<u32>,
    /// Replicas as Ray sees them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub replicas: Vec<ReplicaDetails>,
}

/// One replica of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDetails {
    /// Its id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub replica_id: String,
    /// `STARTING`, `RUNNING`, `STOPPING`, ...
    #[serde(default, deserialize_with = "null_as_default")]
    pub state: String,
    /// Node it runs on.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Its process id.
    #[serde(default)]
    pub pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    const RUNNING: &str = include_str!("../tests/fixtures/serve_details_running.json");
    const MIXED: &str = include_str!("../tests/fixtures/serve_details_mixed.json");
    const EMPTY: &str = include_str!("../tests/fixtures/serve_details_empty.json");

    #[test]
    fn decodes_running_apps() {
        let details = ServeDetails::from_json(RUNNING).unwrap();
        assert!(details.serve_started());
        assert_eq!(details.proxy_location.as_deref(), Some("HeadOnly"));
        assert_eq!(
            details.http_options,
            Some(HttpOptions {
                host: Some("127.0.0.1".into()),
                port: Some(20009)
            })
        );
        assert_eq!(details.proxies.len(), 1);
        assert!(
            details
                .proxies
                .values()
                .all(|p| p.status == ProxyStatus::Healthy)
        );
        let fruit = &details.applications["fruit_app"];
        assert_eq!(fruit.status, ApplicationStatus::Running);
        assert_eq!(fruit.route_prefix.as_deref(), Some("/fruit"));
        assert_eq!(fruit.message, "");
        assert_eq!(fruit.source.as_deref(), Some("declarative"));
        assert!(fruit.last_deployed_time_s.is_some_and(|t| t > 1.7e9));
        let names: Vec<_> = fruit.deployments.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "DAGDriver",
                "FruitMarket",
                "MangoStand",
                "OrangeStand",
                "PearStand"
            ]
        );
        let mango = &fruit.deployments["MangoStand"];
        assert_eq!(mango.status, DeploymentStatus::Healthy);
        assert_eq!(
            mango.status_trigger.as_deref(),
            Some("CONFIG_UPDATE_COMPLETED")
        );
        assert_eq!(mango.target_num_replicas, Some(2));
        assert_eq!(mango.replicas.len(), 2);
        assert!(
            mango
                .replicas
                .iter()
                .all(|r| r.state == "RUNNING" && r.pid.is_some())
        );
        let math = &details.applications["math_app"];
        assert_eq!(math.deployments.len(), 5);
        assert!(math.deployments.contains_key("create_order"));
    }

    #[test]
    fn decodes_failed_and_waiting_apps() {
        let details = ServeDetails::from_json(MIXED).unwrap();
        let gh = &details.applications["gh_app"];
        assert_eq!(gh.status, ApplicationStatus::DeployFailed);
        assert!(
            gh.message
                .starts_with("Runtime env setup for app 'gh_app' failed")
        );
        assert!(gh.message.contains("Failed to resolve 'github.com'"));
        assert!(gh.deployments.is_empty());
        let import = &details.applications["noimport_app"];
        assert_eq!(import.status, ApplicationStatus::DeployFailed);
        assert!(
            import
                .message
                .contains("ModuleNotFoundError: No module named 'nosuchmodule'")
        );
        let big = &details.applications["big_app"];
        assert_eq!(big.status, ApplicationStatus::Deploying);
        assert_eq!(
            big.last_deployed_time_s,
            details.applications["fruit_app"].last_deployed_time_s
        );
        assert_eq!(gh.route_prefix, None);
        let pear = &big.deployments["PearStand"];
        assert_eq!(pear.status, DeploymentStatus::Updating);
        assert!(pear.message.contains("taken more than 30s to be scheduled"));
        assert!(
            pear.message
                .contains("Resources required for each replica: {\"CPU\": 8.0}")
        );
    }

    #[test]
    fn decodes_serve_not_started() {
        let details = ServeDetails::from_json(EMPTY).unwrap();
        assert!(!details.serve_started());
        assert!(details.applications.is_empty() && details.proxies.is_empty());
        assert_eq!(details.proxy_location, None);
    }

    #[test]
    fn unknown_statuses_and_nulls_are_kept() {
        let details = ServeDetails::from_json(
            r#"{"applications": {"a": {"status": "SOMETHING_NEW", "message": null, "deployments": null,
                "route_prefix": null, "extra": [1, 2]}}, "proxies": null, "new_field": {}}"#,
        )
        .unwrap();
        let app = &details.applications["a"];
        assert_eq!(
            app.status,
            ApplicationStatus::Unknown("SOMETHING_NEW".into())
        );
        assert_eq!(app.status.to_string(), "SOMETHING_NEW");
        assert_eq!(app.message, "");
        assert!(app.deployments.is_empty());
        assert_eq!(ApplicationStatus::DeployFailed.to_string(), "DEPLOY_FAILED");
        let round_trip: ServeDetails =
            serde_json::from_value(serde_json::to_value(&details).unwrap()).unwrap();
        assert_eq!(round_trip, details);
    }

    /// One HTTP request as a test server read it: request line, headers, body, and the stream
    /// to answer on.
    struct Received {
        line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        stream: std::net::TcpStream,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    fn receive(stream: std::net::TcpStream) -> Received {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        Received {
            line: line.trim().to_string(),
            headers,
            body,
            stream: reader.into_inner(),
        }
    }

    /// Answers one HTTP request with `status` and `body`, and hands back the request line and body.
    fn one_shot_server(
        status: &'static str,
        body: &'static str,
    ) -> (u16, std::thread::JoinHandle<(String, String)>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut request = receive(stream);
            write!(
                request.stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            (
                request.line,
                String::from_utf8_lossy(&request.body).into_owned(),
            )
        });
        (port, handle)
    }

    /// Answers `n` requests with `200 {}` and hands back each one's `Authorization` header.
    fn header_server(n: usize) -> (u16, std::thread::JoinHandle<Vec<Option<String>>>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (stream, _) = listener.accept().unwrap();
                let mut request = receive(stream);
                write!(
                    request.stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                )
                .unwrap();
                seen.push(request.header("authorization"));
            }
            seen
        });
        (port, handle)
    }

    #[tokio::test]
    async fn every_call_carries_the_token_when_there_is_one() {
        let token = AuthToken::parse(&"ab12".repeat(16)).unwrap();
        let (port, server) = header_server(7);
        let client = DashboardClient::new(port)
            .unwrap()
            .with_token(Some(token.clone()));
        let _ = client.put_serve_applications(&serde_json::json!({})).await;
        let _ = client.get_serve_applications().await;
        let _ = client.gcs_healthz().await;
        let _ = client.serve_healthz(port).await;
        let _ = client.serve_routes(port).await;
        let _ = client.package_exists("gcs://_ray_pkg_a.zip").await;
        let _ = client.upload_package("gcs://_ray_pkg_a.zip", vec![1]).await;
        let seen = server.join().unwrap();
        assert_eq!(seen, vec![Some(token.bearer()); 7]);
        assert!(!format!("{client:?}").contains(token.secret()));

        let (port, server) = header_server(1);
        let _ = DashboardClient::new(port).unwrap().gcs_healthz().await;
        assert_eq!(server.join().unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn put_sends_the_config_and_maps_400_to_rejected() {
        let message = "1 validation error for ServeDeploySchema\napplications\n  Value error, Found duplicate applications for route prefix \"/fruit\".";
        let (port, server) = one_shot_server("400 Bad Request", message);
        let client = DashboardClient::new(port).unwrap();
        let config = serde_json::json!({"applications": [{"name": "a", "import_path": "m.app"}]});
        let err = client.put_serve_applications(&config).await.unwrap_err();
        let (request_line, body) = server.join().unwrap();
        assert_eq!(request_line, "PUT /api/serve/applications/ HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            config
        );
        match err {
            DashboardError::Rejected {
                status,
                message: got,
                ..
            } => {
                assert_eq!(status, 400);
                assert_eq!(got, message);
            }
            other => panic!("expected Rejected, got {other}"),
        }
    }

    #[tokio::test]
    async fn put_ok_and_other_statuses() {
        let (port, server) = one_shot_server("200 OK", "");
        DashboardClient::new(port)
            .unwrap()
            .put_serve_applications(&serde_json::json!({}))
            .await
            .unwrap();
        server.join().unwrap();

        let (port, server) = one_shot_server("500 Internal Server Error", "Traceback ...");
        let err = DashboardClient::new(port)
            .unwrap()
            .put_serve_applications(&serde_json::json!({}))
            .await
            .unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, DashboardError::Status { status: 500, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn get_decodes_and_reports_bad_json() {
        let (port, server) = one_shot_server("200 OK", EMPTY);
        let details = DashboardClient::new(port)
            .unwrap()
            .get_serve_applications()
            .await
            .unwrap();
        let (request_line, _) = server.join().unwrap();
        assert_eq!(
            request_line,
            "GET /api/serve/applications/?api_type=declarative HTTP/1.1"
        );
        assert!(details.applications.is_empty());

        let (port, server) = one_shot_server("200 OK", "not json");
        let err = DashboardClient::new(port)
            .unwrap()
            .get_serve_applications()
            .await
            .unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, DashboardError::Decode { ref body_start, .. } if body_start == "not json"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn health_checks_and_unreachable_dashboard() {
        let (port, server) = one_shot_server("200 OK", "success");
        assert!(DashboardClient::new(port).unwrap().gcs_healthz().await);
        assert_eq!(server.join().unwrap().0, "GET /api/gcs_healthz HTTP/1.1");

        let (port, server) = one_shot_server("200 OK", "success");
        assert!(DashboardClient::new(1).unwrap().serve_healthz(port).await);
        assert_eq!(server.join().unwrap().0, "GET /-/healthz HTTP/1.1");

        // Nothing listens on a port we just freed.
        let port = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = DashboardClient::new(port).unwrap();
        assert!(!client.gcs_healthz().await);
        assert!(matches!(
            client.get_serve_applications().await,
            Err(DashboardError::Request { .. })
        ));
    }

    /// A peer that answers every request on its port with `head` then `body_len` bytes, and
    /// counts the requests it got.
    fn hostile_peer(
        head: String,
        body_len: usize,
    ) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(head.as_bytes());
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            }
        });
        (port, requests)
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use std::sync::atomic::Ordering;
        let (target, target_hits) = hostile_peer(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into(),
            0,
        );
        for status in ["302 Found", "307 Temporary Redirect"] {
            let head = format!(
                "HTTP/1.1 {status}\r\nLocation: http://127.0.0.1:{target}/api/serve/applications/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let (port, hits) = hostile_peer(head, 0);
            let client = DashboardClient::new(port).unwrap();
            let get = client.get_serve_applications().await;
            assert!(
                matches!(
                    get,
                    Err(DashboardError::Status {
                        status: 302 | 307,
                        ..
                    })
                ),
                "{get:?}"
            );
            let put = client
                .put_serve_applications(&serde_json::json!({"applications": []}))
                .await;
            assert!(
                matches!(
                    put,
                    Err(DashboardError::Status {
                        status: 302 | 307,
                        ..
                    })
                ),
                "{put:?}"
            );
            assert_eq!(hits.load(Ordering::SeqCst), 2);
        }
        assert_eq!(
            target_hits.load(Ordering::SeqCst),
            0,
            "a redirect was followed"
        );
    }

    #[tokio::test]
    async fn oversized_answers_are_not_read_to_the_end() {
        let len = MAX_BODY_BYTES + 1;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
        let (port, _) = hostile_peer(head, len);
        let client = DashboardClient::new(port).unwrap();
        let answer = client.get_serve_applications().await;
        assert!(
            matches!(
                answer,
                Err(DashboardError::TooLarge {
                    limit: MAX_BODY_BYTES,
                    ..
                })
            ),
            "{answer:?}"
        );
    }

    #[test]
    fn package_urls() {
        let client = DashboardClient::new(8265).unwrap();
        assert_eq!(
            client.package_url("gcs://_ray_pkg_0123abcd.zip").unwrap(),
            "http://127.0.0.1:8265/api/packages/gcs/_ray_pkg_0123abcd.zip"
        );
        for bad in [
            "file:///tmp/x.zip",
            "gcs://a/b.zip",
            "gcs://x.tar",
            "_ray_pkg_1.zip",
        ] {
            assert!(
                matches!(
                    client.package_url(bad),
                    Err(DashboardError::PackageUri { .. })
                ),
                "{bad}"
            );
        }
    }
}
