//! Finding a Python with `ray[serve]`, or installing one into a managed venv.
//!
//! Order: an explicit Python ([`InstallOptions::python`], filled from `RAYSERVICE_PYTHON` by
//! [`InstallOptions::from_env`]) is used as it is, after checking that it imports `ray` and
//! `ray.serve`. Otherwise a venv managed by us at `<state_dir>/ray/<version>/venv` is used,
//! created on first use with `python3 -m venv` (`RAYSERVICE_BOOTSTRAP_PYTHON` picks another
//! interpreter) and `pip install "ray[serve]==<version>"`.
//!
//! A venv cannot be moved after creation (its scripts name their interpreter by absolute
//! path), so it is built in place and a marker file is written last: a venv without the
//! marker is an interrupted install and is removed and redone, never trusted. A lock file
//! keeps two processes from installing at once.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use thiserror::Error;

/// The Ray version installed when none is asked for.
pub const RAY_VERSION: &str = "2.60.0";
/// Environment variable naming a Python that already has `ray[serve]`.
pub const PYTHON_ENV: &str = "RAYSERVICE_PYTHON";
/// Environment variable naming the Python used to create the managed venv.
pub const BOOTSTRAP_PYTHON_ENV: &str = "RAYSERVICE_BOOTSTRAP_PYTHON";
/// File written into the venv once the install is complete and checked.
pub const COMPLETE_MARKER: &str = ".rayservice-complete";

/// Python code printing Ray's version and the interpreter's scripts directory.
const PROBE: &str = "import ray, ray.serve, sys, sysconfig\nprint(ray.__version__)\nprint(sysconfig.get_path('scripts'))";

/// Lines of a failed command's output kept for the error.
const TAIL_LINES: usize = 25;

/// A usable Ray installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RayRuntime {
    /// The Python interpreter that imports `ray`.
    pub python: PathBuf,
    /// The `ray` command of that installation.
    pub ray: PathBuf,
    /// `ray.__version__`.
    pub version: String,
}

/// Where to find or put Ray.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Use this Python (no install); it must have `ray[serve]`.
    pub python: Option<PathBuf>,
    /// State directory; the managed venv lives at `<state_dir>/ray/<version>/venv`.
    pub state_dir: PathBuf,
    /// Ray version for the managed venv.
    pub version: String,
    /// Python that creates the managed venv (default: `python3` from `PATH`).
    pub bootstrap_python: Option<PathBuf>,
}

impl InstallOptions {
    /// Managed install of [`RAY_VERSION`] under `state_dir`, ignoring the environment.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        InstallOptions {
            python: None,
            state_dir: state_dir.into(),
            version: RAY_VERSION.to_string(),
            bootstrap_python: None,
        }
    }

    /// Like [`InstallOptions::new`], with `python` from `RAYSERVICE_PYTHON` and
    /// `bootstrap_python` from `RAYSERVICE_BOOTSTRAP_PYTHON` when they are set and not empty.
    pub fn from_env(state_dir: impl Into<PathBuf>) -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        InstallOptions {
            python: var(PYTHON_ENV),
            bootstrap_python: var(BOOTSTRAP_PYTHON_ENV),
            ..Self::new(state_dir)
        }
    }

    /// The managed venv's directory.
    pub fn venv_dir(&self) -> PathBuf {
        self.state_dir.join("ray").join(&self.version).join("venv")
    }
}

/// Step of finding or installing Ray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStage {
    /// Checking an existing Python.
    Checking,
    /// Removing an unfinished or broken install.
    Cleaning,
    /// Creating the venv.
    CreatingVenv,
    /// Running pip (each output line is reported).
    Installing,
    /// Checking the new install.
    Verifying,
    /// Done.
    Ready,
}

/// One progress report: a stage and a line of text (e.g. a pip output line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallProgress {
    /// The current step.
    pub stage: InstallStage,
    /// What is happening.
    pub message: String,
}

/// Why Ray could not be found or installed. Each message says what to do.
#[derive(Debug, Error)]
pub enum InstallError {
    /// A Python interpreter could not be started.
    #[error("cannot run Python {python}: {source}; {hint}")]
    PythonNotRunnable {
        /// The interpreter.
        python: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// The Python runs but cannot import `ray` / `ray.serve`.
    #[error(
        "Python {python} cannot import ray and ray.serve: {output}\nInstall it there with `{python} -m pip install \"ray[serve]=={wanted}\"`, or unset RAYSERVICE_PYTHON to let rayservice manage its own Ray"
    )]
    RayMissing {
        /// The interpreter.
        python: PathBuf,
        /// The end of Python's output.
        output: String,
        /// The version we would install.
        wanted: String,
    },
    /// Ray is there but its `ray` command is not.
    #[error("Python {python} has Ray {version} but no `ray` command in {scripts}")]
    NoRayCommand {
        /// The interpreter.
        python: PathBuf,
        /// Ray's version.
        version: String,
        /// Where it was looked for.
        scripts: PathBuf,
    },
    /// `python -m venv` failed.
    #[error(
        "creating a venv at {dir} with {python} failed: {output}\nOn Debian/Ubuntu install python3-venv, set RAYSERVICE_BOOTSTRAP_PYTHON to another python3, or set RAYSERVICE_PYTHON to a Python that has ray[serve] {wanted}"
    )]
    VenvFailed {
        /// The interpreter used.
        python: PathBuf,
        /// The venv directory.
        dir: PathBuf,
        /// The end of its output.
        output: String,
        /// The Ray version wanted.
        wanted: String,
    },
    /// `pip install` failed.
    #[error(
        "pip could not install ray[serve]=={version} for Python {python_version}{network}:\n{output}\nSet RAYSERVICE_PYTHON to a Python that already has ray[serve]=={version} to skip the install"
    )]
    PipFailed {
        /// The Ray version wanted.
        version: String,
        /// The venv's Python version.
        python_version: String,
        /// A note when the output looks like no network access to the package index.
        network: &'static str,
        /// The last lines of pip's output.
        output: String,
    },
    /// The new install reports another Ray version than the one installed.
    #[error("the venv at {dir} has Ray {found}, expected {wanted}")]
    WrongVersion {
        /// The venv.
        dir: PathBuf,
        /// The version found.
        found: String,
        /// The version wanted.
        wanted: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Finds Ray as [`InstallOptions`] say, installing it into the managed venv if needed.
/// Blocking (runs Python and pip); reports progress through `progress`.
pub fn find_or_install(
    options: &InstallOptions,
    mut progress: impl FnMut(InstallProgress),
) -> Result<RayRuntime, InstallError> {
    let mut report = |stage, message: String| progress(InstallProgress { stage, message });
    if let Some(python) = &options.python {
        report(
            InstallStage::Checking,
            format!("checking Ray in {}", python.display()),
        );
        let runtime = verify_python(python, &options.version)?;
        if runtime.version != options.version {
            report(
                InstallStage::Checking,
                format!(
                    "{} has Ray {}, not the tested {}; using it anyway",
                    python.display(),
                    runtime.version,
                    options.version
                ),
            );
        }
        report(
            InstallStage::Ready,
            format!("using Ray {} from {}", runtime.version, python.display()),
        );
        return Ok(runtime);
    }

    let venv = options.venv_dir();
    let root = venv
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| options.state_dir.clone());
    fs::create_dir_all(&root).map_err(io("create", &root))?;
    let lock_path = root.join(".install.lock");
    let lock = fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
    lock.lock().map_err(io("lock", &lock_path))?;

    let python = venv.join("bin").join("python");
    if venv.join(COMPLETE_MARKER).is_file() {
        report(
            InstallStage::Checking,
            format!("checking Ray in {}", venv.display()),
        );
        match verify_python(&python, &options.version) {
            Ok(runtime) if runtime.version == options.version => {
                report(
                    InstallStage::Ready,
                    format!("using Ray {} from {}", runtime.version, venv.display()),
                );
                return Ok(runtime);
            }
            Ok(runtime) => report(
                InstallStage::Cleaning,
                format!(
                    "{} has Ray {}; reinstalling",
                    venv.display(),
                    runtime.version
                ),
            ),
            Err(error) => report(
                InstallStage::Cleaning,
                format!(
                    "the install in {} is broken ({error}); reinstalling",
                    venv.display()
                ),
            ),
        }
    } else if venv.exists() {
        report(
            InstallStage::Cleaning,
            format!("removing the unfinished install in {}", venv.display()),
        );
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(io("remove", &venv))?;
    }

    let bootstrap = options
        .bootstrap_python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    report(
        InstallStage::CreatingVenv,
        format!(
            "creating a venv at {} with {}",
            venv.display(),
            bootstrap.display()
        ),
    );
    let output = Command::new(&bootstrap)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| InstallError::PythonNotRunnable {
            python: bootstrap.clone(),
            source,
            hint: "install python3 (with venv), or set RAYSERVICE_BOOTSTRAP_PYTHON to a python3, or RAYSERVICE_PYTHON to a Python that has ray[serve]",
        })?;
    if !output.status.success() || !python.exists() {
        return Err(InstallError::VenvFailed {
            python: bootstrap,
            dir: venv,
            output: tail(&combined(&output), TAIL_LINES),
            wanted: options.version.clone(),
        });
    }

    let python_version = Command::new(&python)
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".to_string());
    let requirement = format!("ray[serve]=={}", options.version);
    report(
        InstallStage::Installing,
        format!("pip install {requirement} (Python {python_version})"),
    );
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        &requirement,
    ])
    .env("PIP_NO_INPUT", "1")
    .env("PYTHONUNBUFFERED", "1");
    let (success, lines) = run_streaming(pip, &python, |line| {
        report(InstallStage::Installing, line.to_string())
    })?;
    if !success {
        let output = lines.iter().cloned().collect::<Vec<_>>().join("\n");
        return Err(InstallError::PipFailed {
            version: options.version.clone(),
            python_version,
            network: if looks_like_network_error(&output) {
                " (the package index looks unreachable)"
            } else {
                ""
            },
            output,
        });
    }

    report(
        InstallStage::Verifying,
        "checking the new install".to_string(),
    );
    let runtime = verify_python(&python, &options.version)?;
    if runtime.version != options.version {
        return Err(InstallError::WrongVersion {
            dir: venv,
            found: runtime.version,
            wanted: options.version.clone(),
        });
    }
    let marker = venv.join(COMPLETE_MARKER);
    let temp = venv.join(format!("{COMPLETE_MARKER}.tmp"));
    fs::write(&temp, format!("{}\n", runtime.version)).map_err(io("write", &temp))?;
    fs::rename(&temp, &marker).map_err(io("write", &marker))?;
    report(
        InstallStage::Ready,
        format!("installed Ray {} in {}", runtime.version, venv.display()),
    );
    Ok(runtime)
}

/// Checks that `python` imports `ray` and `ray.serve`, and finds its `ray` command.
/// `wanted` only goes into the error message.
pub fn verify_python(python: &Path, wanted: &str) -> Result<RayRuntime, InstallError> {
    let output = Command::new(python)
        .args(["-c", PROBE])
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| InstallError::PythonNotRunnable {
            python: python.to_path_buf(),
            source,
            hint: "check the path in RAYSERVICE_PYTHON, or unset it to let rayservice manage its own Ray",
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    let (Some(version), Some(scripts), true) =
        (lines.next(), lines.next(), output.status.success())
    else {
        return Err(InstallError::RayMissing {
            python: python.to_path_buf(),
            output: tail(&combined(&output), 3),
            wanted: wanted.to_string(),
        });
    };
    let scripts = PathBuf::from(scripts);
    let candidates = [
        Some(scripts.join("ray")),
        python.parent().map(|dir| dir.join("ray")),
    ];
    let Some(ray) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
        return Err(InstallError::NoRayCommand {
            python: python.to_path_buf(),
            version: version.to_string(),
            scripts,
        });
    };
    Ok(RayRuntime {
        python: python.to_path_buf(),
        ray,
        version: version.to_string(),
    })
}

/// Runs `command`, handing each stdout/stderr line to `on_line`; returns whether it succeeded
/// and its last lines.
fn run_streaming(
    mut command: Command,
    program: &Path,
    mut on_line: impl FnMut(&str),
) -> Result<(bool, VecDeque<String>), InstallError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InstallError::PythonNotRunnable {
            python: program.to_path_buf(),
            source,
            hint: "the managed venv looks broken; delete it and retry",
        })?;
    let (sender, receiver) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(sender);
    let mut last = VecDeque::with_capacity(TAIL_LINES);
    for line in receiver {
        if line.trim().is_empty() {
            continue;
        }
        on_line(&line);
        if last.len() == TAIL_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(io("wait for", program))?;
    Ok((status.success(), last))
}

fn looks_like_network_error(output: &str) -> bool {
    [
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Max retries exceeded",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "No matching distribution found",
        "Could not find a version that satisfies",
    ]
    .iter()
    .any(|needle| output.contains(needle))
}

fn combined(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &Path, body: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A fake `python3` whose `-m venv DIR` makes a fake venv; that venv's `pip install` runs
    /// `pip_body` and its `-c` probe answers like Ray 2.60.0 once pip has succeeded.
    fn fake_bootstrap(dir: &Path, pip_body: &str) -> PathBuf {
        let venv_python = dir.join("venv-python.sh");
        script(
            &venv_python,
            &format!(
                r#"bin=$(dirname "$0")
case "$1" in
  -m) echo run >> "$bin/../pip-runs"; {pip_body} ;;
  -c) case "$2" in
        *ray*) if [ -f "$bin/../installed" ]; then echo 2.60.0; echo "$bin"; else echo "ModuleNotFoundError: No module named 'ray'" >&2; exit 1; fi ;;
        *) echo 3.11.7 ;;
      esac ;;
esac
"#
            ),
        );
        let bootstrap = dir.join("python3");
        script(
            &bootstrap,
            &format!(
                r#"[ "$1" = "-m" ] && [ "$2" = venv ] || exit 2; mkdir -p "$3/bin" && cp "{}" "$3/bin/python""#,
                venv_python.display()
            ),
        );
        bootstrap
    }

    const PIP_OK: &str = r#"echo "Collecting ray[serve]==2.60.0"; echo "Successfully installed ray-2.60.0"; touch "$bin/ray" "$bin/../installed""#;

    fn options(state: &Path, bootstrap: PathBuf) -> InstallOptions {
        InstallOptions {
            bootstrap_python: Some(bootstrap),
            ..InstallOptions::new(state)
        }
    }

    #[test]
    fn installs_once_then_reuses() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(
            &tmp.path().join("state"),
            fake_bootstrap(tmp.path(), PIP_OK),
        );
        let mut seen = Vec::new();
        let runtime = find_or_install(&opts, |p| seen.push(p)).unwrap();
        let venv = tmp.path().join("state/ray/2.60.0/venv");
        assert_eq!(opts.venv_dir(), venv);
        assert_eq!(runtime.python, venv.join("bin/python"));
        assert_eq!(runtime.ray, venv.join("bin/ray"));
        assert_eq!(runtime.version, "2.60.0");
        assert!(venv.join(COMPLETE_MARKER).is_file());
        let stages: Vec<_> = seen.iter().map(|p| p.stage).collect();
        assert_eq!(stages.first(), Some(&InstallStage::CreatingVenv));
        assert_eq!(stages.last(), Some(&InstallStage::Ready));
        assert!(seen.iter().any(|p| p.stage == InstallStage::Installing
            && p.message == "Successfully installed ray-2.60.0"));

        let again = find_or_install(&opts, |_| {}).unwrap();
        assert_eq!(again, runtime);
        assert_eq!(
            fs::read_to_string(venv.join("pip-runs"))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn unfinished_install_is_redone() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(
            &tmp.path().join("state"),
            fake_bootstrap(tmp.path(), PIP_OK),
        );
        let venv = opts.venv_dir();
        fs::create_dir_all(venv.join("bin")).unwrap();
        fs::write(venv.join("half-written"), "").unwrap();
        let mut seen = Vec::new();
        find_or_install(&opts, |p| seen.push(p)).unwrap();
        assert!(seen.iter().any(|p| p.stage == InstallStage::Cleaning));
        assert!(!venv.join("half-written").exists());
        assert!(venv.join(COMPLETE_MARKER).is_file());
    }

    #[test]
    fn broken_install_with_marker_is_redone() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(
            &tmp.path().join("state"),
            fake_bootstrap(tmp.path(), PIP_OK),
        );
        find_or_install(&opts, |_| {}).unwrap();
        fs::remove_file(opts.venv_dir().join("installed")).unwrap();
        let mut seen = Vec::new();
        find_or_install(&opts, |p| seen.push(p)).unwrap();
        assert!(
            seen.iter()
                .any(|p| p.stage == InstallStage::Cleaning && p.message.contains("broken"))
        );
    }

    #[test]
    fn pip_failure_names_the_cause_and_keeps_no_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let pip_fail = r#"echo "WARNING: Retrying ... Failed to establish a new connection" >&2; echo "ERROR: No matching distribution found for ray[serve]==2.60.0" >&2; exit 1"#;
        let opts = options(
            &tmp.path().join("state"),
            fake_bootstrap(tmp.path(), pip_fail),
        );
        let err = find_or_install(&opts, |_| {}).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, InstallError::PipFailed { .. }), "{text}");
        assert!(text.contains("No matching distribution found"), "{text}");
        assert!(text.contains("package index looks unreachable"), "{text}");
        assert!(text.contains("Python 3.11.7"), "{text}");
        assert!(text.contains("RAYSERVICE_PYTHON"), "{text}");
        assert!(!opts.venv_dir().join(COMPLETE_MARKER).exists());
    }

    #[test]
    fn missing_bootstrap_python_and_failing_venv() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = options(
            &tmp.path().join("state"),
            tmp.path().join("no-such-python3"),
        );
        let err = find_or_install(&opts, |_| {}).unwrap_err();
        assert!(
            matches!(err, InstallError::PythonNotRunnable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no-such-python3"));

        let failing = tmp.path().join("python3-novenv");
        script(
            &failing,
            "echo 'The virtual environment was not created successfully because ensurepip is not available.' >&2; exit 1",
        );
        let err =
            find_or_install(&options(&tmp.path().join("state"), failing), |_| {}).unwrap_err();
        assert!(matches!(err, InstallError::VenvFailed { .. }), "{err}");
        assert!(err.to_string().contains("ensurepip is not available"));
        assert!(err.to_string().contains("python3-venv"));
    }

    #[test]
    fn explicit_python_is_checked_not_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good/bin/python");
        script(&good, r#"echo 2.60.0; dirname "$0""#);
        script(&tmp.path().join("good/bin/ray"), "");
        let opts = InstallOptions {
            python: Some(good.clone()),
            ..InstallOptions::new(tmp.path().join("state"))
        };
        let runtime = find_or_install(&opts, |_| {}).unwrap();
        assert_eq!(
            runtime,
            RayRuntime {
                python: good,
                ray: tmp.path().join("good/bin/ray"),
                version: "2.60.0".into()
            }
        );
        assert!(!tmp.path().join("state").exists());

        let bad = tmp.path().join("bad/bin/python");
        script(
            &bad,
            r#"echo "ModuleNotFoundError: No module named 'ray'" >&2; exit 1"#,
        );
        let err = find_or_install(
            &InstallOptions {
                python: Some(bad),
                ..opts.clone()
            },
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, InstallError::RayMissing { .. }), "{err}");
        assert!(err.to_string().contains("No module named 'ray'"));
        assert!(
            err.to_string()
                .contains("pip install \"ray[serve]==2.60.0\"")
        );

        let missing = InstallOptions {
            python: Some(tmp.path().join("nope/python")),
            ..opts
        };
        assert!(matches!(
            find_or_install(&missing, |_| {}),
            Err(InstallError::PythonNotRunnable { .. })
        ));
    }

    #[test]
    fn options_from_env_defaults() {
        let opts = InstallOptions::new("/state");
        assert_eq!(opts.version, RAY_VERSION);
        assert_eq!(opts.venv_dir(), PathBuf::from("/state/ray/2.60.0/venv"));
    }

    /// Checks the real Python named by RAYSERVICE_PYTHON, when set.
    #[test]
    fn real_python_from_env() {
        let Some(python) = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty()) else {
            eprintln!("skipping: {PYTHON_ENV} is not set");
            return;
        };
        let runtime = verify_python(Path::new(&python), RAY_VERSION).unwrap();
        assert_eq!(runtime.version, RAY_VERSION);
        assert!(runtime.ray.is_file());
    }
}
