//! Where the local control plane keeps its state and which addresses it uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Default Serve front port (the `S-serve-svc` of the guide).
pub const DEFAULT_SERVE_PORT: u16 = 8000;
/// Default dashboard front port (the `S-head-svc` of the guide).
pub const DEFAULT_DASHBOARD_PORT: u16 = 8265;

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
}

impl Settings {
    /// Settings from the environment: `RAYSERVICE_HOME`, `RAYSERVICE_SERVE_PORT`,
    /// `RAYSERVICE_DASHBOARD_PORT`, `RAYSERVICE_CONTROL_PORT`, `RAYSERVICE_BIND`, `RAYSERVICE_PYTHON`.
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
