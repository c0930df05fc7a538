//! Everything the project needs to know about Ray itself, as a library.
//!
//! - [`auth`]: Ray's token authentication, one private token per cluster.
//! - [`node`]: the `ray start` command line of a head or worker node, with ports and a temp dir
//!   of its own so several clusters can share one machine.
//! - [`start`]: the one rule for `ray start`'s flags that both platforms follow.
//! - [`dashboard`]: a client for the dashboard's Serve REST API (`/api/serve/applications/`),
//!   its health endpoints, and the package upload endpoint.
//! - [`install`]: finding a Python with `ray[serve]`, or installing one into a managed venv.
//! - [`package`]: turning a local `working_dir` into a deterministic zip Ray can use.
//!
//! Facts about Ray 2.60 that this crate relies on are collected in `notes/ray-facts.md`.

pub mod auth;
pub mod dashboard;
pub mod install;
pub mod node;
pub mod package;
pub mod start;

pub use auth::AuthToken;
pub use dashboard::{DashboardClient, DashboardError, ServeDetails};
pub use install::{InstallOptions, InstallProgress, RAY_VERSION, RayRuntime, find_or_install};
pub use node::{HeadPorts, NodeCommand, NodeKind, NodeLaunch, NodePorts};
pub use package::{PackageLayout, PackageOptions, package_dir, package_uri};
