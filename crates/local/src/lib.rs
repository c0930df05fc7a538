//! Local mode: RayServices run as Ray clusters of local processes, behind stable front
//! endpoints, with state in SQLite. The `server` module runs the control plane; `client` is
//! how the CLI talks to it. Decisions come from `rayservice-core`; this crate only carries them
//! out and observes.

pub mod client;
pub mod cluster;
pub mod controller;
pub mod diff;
pub mod process;
pub mod resolve;
pub mod server;
pub mod settings;
pub mod store;
pub mod views;

use rayservice_ray::install::RayRuntime;

pub use settings::Settings;

/// Finds Ray (`RAYSERVICE_PYTHON`) or installs the pinned version under the state directory.
pub fn ray_runtime(
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<RayRuntime, String> {
    let mut options = rayservice_ray::install::InstallOptions::from_env(&settings.home);
    options.python = settings.python.clone();
    rayservice_ray::install::find_or_install(&options, |report| progress(&report.message))
        .map_err(|e| e.to_string())
}
