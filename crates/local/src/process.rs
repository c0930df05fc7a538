//! Starting and stopping node processes, each in a process group of its own, so that stopping a
//! node never touches anything else on the machine (no `ray stop`).

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use thiserror::Error;

/// Why a process could not be started.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The log file could not be opened.
    #[error("cannot open log file {path}: {source}")]
    Log {
        /// The log file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program could not be executed.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Starts `argv` with `env` added, in a new process group, output appended to `log`.
pub fn spawn(
    argv: &[OsString],
    env: &[(String, String)],
    log: &Path,
) -> Result<tokio::process::Child, ProcessError> {
    let program = argv.first().cloned().unwrap_or_default();
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ProcessError::Log {
                path: log.display().to_string(),
                source,
            })
    };
    let stdout: File = open_log()?;
    let stderr: File = open_log()?;
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}

/// Whether process group `pgid` still has a live leader that is not a zombie.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; a zombie (Z) or dead (X) process no longer runs.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the process `pid` was started with `marker` in its command line (guards against pid reuse).
pub fn runs_with(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).contains(marker))
        .unwrap_or(false)
}

/// Whether any process of group `pgid` remains.
pub fn group_alive(pgid: i32) -> bool {
    pgid > 0 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Stops process group `pgid`: SIGTERM, then SIGKILL after `grace`.
pub async fn stop_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills every process of this user whose command line mentions `marker` (a cluster's temp dir):
/// the safety net for Ray processes that left the node's process group.
pub fn kill_by_marker(marker: &str) -> usize {
    if marker.len() < 8 {
        return 0;
    }
    let me = std::process::id() as i32;
    let uid = nix::unistd::getuid().as_raw();
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let owned = std::fs::metadata(entry.path())
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
            .unwrap_or(false);
        if owned && runs_with(pid, marker) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}
