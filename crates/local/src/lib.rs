//! Local mode: RayServices run as Ray clusters of local processes, behind stable front
//! endpoints, with state in SQLite. The `server` module runs the control plane; `client` is
//! how the CLI talks to it. Decisions come from `rayservice-core`; this crate only carries them
//! out and observes.

pub mod client;
pub mod cluster;
pub mod controller;
pub mod diff;
mod http;
pub mod process;
pub mod resolve;
pub mod server;
pub mod settings;
pub mod standalone;
pub mod store;
pub mod views;
pub mod wire;

use rayservice_ray::install::RayRuntime;

pub use settings::Settings;

/// Finds Ray (`RAYSERVICE_PYTHON`) or installs the pinned version under the state directory.
///
/// Importing Ray to check it takes a second or more, so a successful check is remembered in the
/// state directory, keyed by the Python's path, size and modification time.
pub fn ray_runtime(
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<RayRuntime, String> {
    let mut options = rayservice_ray::install::InstallOptions::from_env(&settings.home);
    options.python = settings.python.clone();
    let python = options
        .python
        .clone()
        .unwrap_or_else(|| options.venv_dir().join("bin").join("python"));
    let cache = settings.home.join("ray-runtime.json");
    let key = python_key(&python);
    if let Some(runtime) = key.as_ref().and_then(|key| cached_runtime(&cache, key)) {
        return Ok(runtime);
    }
    let runtime =
        rayservice_ray::install::find_or_install(&options, |report| progress(&report.message))
            .map_err(|e| e.to_string())?;
    if let Some(key) = python_key(&runtime.python) {
        let record = serde_json::json!({
            "key": key,
            "python": runtime.python,
            "ray": runtime.ray,
            "version": runtime.version,
        });
        let _ = std::fs::create_dir_all(&settings.home);
        let _ = server::write_private(&cache, record.to_string().as_bytes());
    }
    Ok(runtime)
}

/// Identifies a Python installation: its path, and the size and modification time of the
/// interpreter and of its Ray package directory.
fn python_key(python: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let interpreter = std::fs::metadata(python).ok()?;
    let site = python.parent()?.parent()?.join("lib");
    let ray_dir = std::fs::read_dir(&site)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("site-packages").join("ray"))
        .find(|p| p.is_dir())
        .and_then(|p| std::fs::metadata(p).ok());
    Some(format!(
        "{}:{}:{}:{}",
        python.display(),
        interpreter.size(),
        interpreter.mtime(),
        ray_dir.map(|m| m.mtime()).unwrap_or(0)
    ))
}

fn cached_runtime(cache: &std::path::Path, key: &str) -> Option<RayRuntime> {
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(cache).ok()?).ok()?;
    if record["key"] != key {
        return None;
    }
    let runtime = RayRuntime {
        python: record["python"].as_str()?.into(),
        ray: record["ray"].as_str()?.into(),
        version: record["version"].as_str()?.to_string(),
    };
    runtime.ray.exists().then_some(runtime)
}
