//! Turning a RayService as applied into the spec the core acts on locally: local `working_dir`s
//! are packaged (content-addressed, so an edited file is an in-place update) and replaced by URIs.

use std::path::{Path, PathBuf};

use rayservice_api::{RayServiceSpec, ServeConfig};
use rayservice_ray::package::{self, PackageOptions};
use thiserror::Error;

/// Why a spec could not be prepared.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// A local `working_dir` does not exist.
    #[error(
        "spec.serveConfigV2: applications[{index}].runtime_env.working_dir: directory {path} does not exist; fix: give a directory relative to the YAML file's folder ({base}), an absolute one, or a URI"
    )]
    MissingDir {
        /// Application index.
        index: usize,
        /// The resolved path.
        path: String,
        /// The folder relative paths start from.
        base: String,
    },
    /// Packaging failed.
    #[error(
        "spec.serveConfigV2: applications[{index}].runtime_env.working_dir: cannot package {path}: {message}"
    )]
    Package {
        /// Application index.
        index: usize,
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The serve config is invalid (already refused by validation; kept for completeness).
    #[error("{0}")]
    Invalid(String),
}

/// Whether `working_dir` names a URI (`https://`, `gcs://`, `file://`, `s3://`, ...) rather than a directory.
pub fn is_uri(working_dir: &str) -> bool {
    working_dir.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    })
}

/// Whether packages are written or only named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// Write each package (once per content) and use its URI: `apply`.
    Write,
    /// Only hash the folders to name the URIs they would get; nothing is written: `diff`.
    HashOnly,
}

/// The spec with local `working_dir`s packaged into `packages_dir` and replaced by their URIs.
/// `runtime_env.excludes`, `.gitignore` and `.rayignore` decide what goes in, as in Ray.
/// Blocking: reads whole folders; call it off the async runtime.
pub fn resolve_spec(
    spec: &RayServiceSpec,
    base_dir: &Path,
    packages_dir: &Path,
    packaging: Packaging,
) -> Result<RayServiceSpec, ResolveError> {
    let Some(text) = spec.serve_config_v2.as_deref() else {
        return Ok(spec.clone());
    };
    let mut config = ServeConfig::parse(text, "spec.serveConfigV2")
        .map_err(|e| ResolveError::Invalid(e.to_string()))?;
    let mut changed = false;
    for (index, app) in config.applications.iter_mut().enumerate() {
        let Some(dir) = app.working_dir().map(str::to_string) else {
            continue;
        };
        if is_uri(&dir) {
            continue;
        }
        let path = if Path::new(&dir).is_absolute() {
            PathBuf::from(&dir)
        } else {
            base_dir.join(&dir)
        };
        if !path.is_dir() {
            return Err(ResolveError::MissingDir {
                index,
                path: path.display().to_string(),
                base: base_dir.display().to_string(),
            });
        }
        let options = PackageOptions {
            excludes: app
                .runtime_env
                .as_ref()
                .and_then(|env| env.get("excludes"))
                .and_then(serde_json::Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            ..PackageOptions::default()
        };
        let packaged = match packaging {
            Packaging::Write => package::package_dir(&path, packages_dir, &options),
            Packaging::HashOnly => package::package_uri(&path, packages_dir, &options),
        };
        let uri = packaged.map_err(|e| ResolveError::Package {
            index,
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some(env) = app.runtime_env.as_mut() {
            env.insert("working_dir".into(), serde_json::Value::String(uri));
            changed = true;
        }
    }
    if !changed {
        return Ok(spec.clone());
    }
    let yaml = serde_saphyr::to_string(&config.to_json())
        .map_err(|e| ResolveError::Invalid(e.to_string()))?;
    Ok(RayServiceSpec {
        serve_config_v2: Some(yaml),
        ..spec.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_recognised() {
        for uri in [
            "https://github.com/a.zip",
            "gcs://_ray_pkg_1.zip",
            "file:///tmp/x.zip",
            "s3://b/k.zip",
        ] {
            assert!(is_uri(uri), "{uri}");
        }
        for dir in ["./test_dag", "test_dag", "/abs/dir", "C:dir"] {
            assert!(!is_uri(dir), "{dir}");
        }
    }

    #[test]
    fn local_dirs_are_packaged_and_uris_kept() {
        let base = tempfile::tempdir().expect("tmp");
        let packages = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(base.path().join("app")).expect("mkdir");
        std::fs::write(base.path().join("app/m.py"), "x = 1\n").expect("write");
        let spec = RayServiceSpec {
            serve_config_v2: Some(
                "applications:\n- name: a\n  import_path: m.x\n  route_prefix: /a\n  runtime_env: {working_dir: ./app}\n- name: b\n  import_path: m.y\n  route_prefix: /b\n  runtime_env: {working_dir: 'https://example.invalid/b.zip'}\n"
                    .into(),
            ),
            ..Default::default()
        };
        let resolved =
            resolve_spec(&spec, base.path(), packages.path(), Packaging::Write).expect("resolve");
        let config = ServeConfig::parse(resolved.serve_config_v2.as_deref().expect("text"), "x")
            .expect("valid");
        let first = config.applications[0].working_dir().expect("dir");
        assert!(is_uri(first) && first != "./app", "{first}");
        assert_eq!(
            config.applications[1].working_dir(),
            Some("https://example.invalid/b.zip")
        );

        // Same content, same URI; changed content, new URI.
        let again =
            resolve_spec(&spec, base.path(), packages.path(), Packaging::Write).expect("resolve");
        assert_eq!(again, resolved);
        std::fs::write(base.path().join("app/m.py"), "x = 2\n").expect("write");
        let edited =
            resolve_spec(&spec, base.path(), packages.path(), Packaging::Write).expect("resolve");
        assert_ne!(edited, resolved);
    }

    #[test]
    fn missing_dir_names_the_field_and_the_base() {
        let base = tempfile::tempdir().expect("tmp");
        let spec = RayServiceSpec {
            serve_config_v2: Some("applications:\n- name: a\n  import_path: m.x\n  runtime_env: {working_dir: ./nope}\n".into()),
            ..Default::default()
        };
        let err = resolve_spec(&spec, base.path(), base.path(), Packaging::Write)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("applications[0].runtime_env.working_dir") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn diff_only_hashes_and_excludes_count() {
        let base = tempfile::tempdir().expect("tmp");
        let out = tempfile::tempdir().expect("tmp");
        let packages = out.path().join("packages");
        std::fs::create_dir(base.path().join("app")).expect("mkdir");
        std::fs::write(base.path().join("app/m.py"), "x = 1\n").expect("write");
        std::fs::write(base.path().join("app/.env"), "SECRET=1\n").expect("write");
        let spec = |excludes: &str| RayServiceSpec {
            serve_config_v2: Some(format!(
                "applications:\n- name: a\n  import_path: m.x\n  runtime_env: {{working_dir: ./app, excludes: [{excludes}]}}\n"
            )),
            ..Default::default()
        };
        let named = resolve_spec(&spec("'.env'"), base.path(), &packages, Packaging::HashOnly)
            .expect("hash");
        assert!(!packages.exists(), "diff wrote packages");
        let written =
            resolve_spec(&spec("'.env'"), base.path(), &packages, Packaging::Write).expect("write");
        assert_eq!(named, written);
        // The excluded file does not change the package.
        std::fs::write(base.path().join("app/.env"), "SECRET=2\n").expect("write");
        let again = resolve_spec(&spec("'.env'"), base.path(), &packages, Packaging::HashOnly)
            .expect("hash");
        assert_eq!(again, written);
        let with_env =
            resolve_spec(&spec(""), base.path(), &packages, Packaging::HashOnly).expect("hash");
        assert_ne!(with_env, written);
    }
}
