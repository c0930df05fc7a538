//! Where the local control plane keeps its state and which addresses it uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default Serve front port (the `S-serve-svc` of the guide).
pub const DEFAULT_SERVE_PORT: u16 = 8000;
/// Default dashboard front port (the `S-head-svc` of the guide).
pub const DEFAULT_DASHBOARD_PORT: u16 = 8265;
/// Default bound on waiting for a Ray cluster's response head behind a front
/// endpoint (`RAYSERVICE_UPSTREAM_TIMEOUT`, seconds).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = rayservice_proxy::DEFAULT_UPSTREAM_TIMEOUT;

/// Settings of one local control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// State directory (`RAYSERVICE_HOME`, default `~/.rayservice`).
    pub home: PathBuf,
    /// Address of the Serve front endpoint.
    pub serve_addr: SocketAddr,
    /// Address of the dashboard front endpoint.
    pub dashboard_addr: SocketAddr,
    /// Port of the control API on 127.0.0.1 (0: any free port).
    pub control_port: u16,
    /// A Python with Ray to use instead of the managed one (`RAYSERVICE_PYTHON`).
    pub python: Option<PathBuf>,
    /// How long the front endpoints wait for a Ray cluster's response head
    /// before answering 504 (`RAYSERVICE_UPSTREAM_TIMEOUT`, whole seconds;
    /// default 300).
    pub upstream_timeout: Duration,
}

/// The largest `RAYSERVICE_UPSTREAM_TIMEOUT`: one week.
const MAX_UPSTREAM_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Whole seconds, 1 to [`MAX_UPSTREAM_TIMEOUT_SECS`].
fn parse_timeout(text: &str) -> Option<Duration> {
    let secs: u64 = text.trim().parse().ok()?;
    (1..=MAX_UPSTREAM_TIMEOUT_SECS)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

impl Settings {
    /// Settings from the environment: `RAYSERVICE_HOME`, `RAYSERVICE_SERVE_PORT`,
    /// `RAYSERVICE_DASHBOARD_PORT`, `RAYSERVICE_CONTROL_PORT`, `RAYSERVICE_BIND`, `RAYSERVICE_PYTHON`,
    /// `RAYSERVICE_UPSTREAM_TIMEOUT`.
    pub fn from_env() -> Result<Settings, String> {
        let home = match std::env::var_os("RAYSERVICE_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => {
                let user_home =
                    std::env::var_os("HOME").ok_or("neither RAYSERVICE_HOME nor HOME is set")?;
                Path::new(&user_home).join(".rayservice")
            }
        };
        let home = if home.is_absolute() {
            home
        } else {
            std::env::current_dir()
                .map_err(|e| format!("current directory: {e}"))?
                .join(home)
        };
        let port = |name: &str, default: u16| -> Result<u16, String> {
            match std::env::var(name) {
                Ok(text) if !text.is_empty() => text
                    .parse()
                    .map_err(|_| format!("{name}={text} is not a port number (0-65535)")),
                _ => Ok(default),
            }
        };
        let bind: IpAddr = match std::env::var("RAYSERVICE_BIND") {
            Ok(text) if !text.is_empty() => text
                .parse()
                .map_err(|_| format!("RAYSERVICE_BIND={text} is not an IP address"))?,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let upstream_timeout = match std::env::var("RAYSERVICE_UPSTREAM_TIMEOUT") {
            Ok(text) if !text.is_empty() => parse_timeout(&text).ok_or_else(|| {
                format!(
                    "RAYSERVICE_UPSTREAM_TIMEOUT={text} is not a number of seconds between 1 and {MAX_UPSTREAM_TIMEOUT_SECS}"
                )
            })?,
            _ => DEFAULT_UPSTREAM_TIMEOUT,
        };
        Ok(Settings {
            serve_addr: SocketAddr::new(bind, port("RAYSERVICE_SERVE_PORT", DEFAULT_SERVE_PORT)?),
            dashboard_addr: SocketAddr::new(
                bind,
                port("RAYSERVICE_DASHBOARD_PORT", DEFAULT_DASHBOARD_PORT)?,
            ),
            control_port: port("RAYSERVICE_CONTROL_PORT", 0)?,
            python: std::env::var_os("RAYSERVICE_PYTHON")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            upstream_timeout,
            home,
        })
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.home.join("state.db")
    }

    /// Where a running server says how to reach it (port, token, pid); private to the user.
    pub fn control_file(&self) -> PathBuf {
        self.home.join("control.json")
    }

    /// Lock held by the running server.
    pub fn lock_file(&self) -> PathBuf {
        self.home.join("server.lock")
    }

    /// The server's own log.
    pub fn server_log(&self) -> PathBuf {
        self.home.join("server.log")
    }

    /// Logs of Ray node processes.
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    /// A cluster's private files (its Ray token), removed with the cluster.
    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.home.join("clusters").join(cluster)
    }

    /// The file holding a cluster's Ray token (mode 0600).
    pub fn cluster_token_file(&self, cluster: &str) -> PathBuf {
        self.cluster_dir(cluster)
            .join(rayservice_ray::auth::TOKEN_FILE)
    }

    /// Packaged `working_dir`s.
    pub fn packages_dir(&self) -> PathBuf {
        self.home.join("packages")
    }

    /// Creates the state directory, private to the user.
    pub fn ensure_home(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.home)?;
        std::fs::create_dir_all(self.logs_dir())?;
        std::fs::create_dir_all(self.packages_dir())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.home, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_timeout_is_whole_seconds_within_bounds() {
        assert_eq!(parse_timeout("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_timeout(" 5 "), Some(Duration::from_secs(5)));
        for bad in ["0", "-1", "1.5", "5s", "", "99999999999999999999", "604801"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
