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
    stat_fields(pid).is_some_and(|(state, _, _)| runs(&state))
}

/// Whether a process in this `/proc` state runs: a zombie (Z) or dead (X) one no longer does
/// (an exited process whose parent, often init, has not reaped it yet).
fn runs(state: &str) -> bool {
    state != "Z" && state != "X"
}

/// Who process `pid` is, as long as the machine runs: its boot id and its start time (clock
/// ticks after boot, `/proc/PID/stat` field 22). A reused pid has another start time; after a
/// reboot the boot id differs. `None` when the process does not exist.
pub fn identity(pid: i32) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let start_time = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(format!("{}:{start_time}", boot.trim()))
}

/// Whether `pid` is provably a process this program started: alive, with the `identity`
/// recorded when it was started (when one was recorded), and with `marker` (a cluster's own
/// temp dir, a random path) in its command line. Nothing else is ever adopted or signalled.
pub fn is_ours(pid: i32, identity: Option<&str>, marker: &str) -> bool {
    alive(pid)
        && marker.len() >= 8
        && identity.is_none_or(|recorded| self::identity(pid).as_deref() == Some(recorded))
        && runs_with(pid, marker)
}

/// Whether the process `pid` was started with `marker` in its command line (guards against pid reuse).
pub fn runs_with(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).contains(marker))
        .unwrap_or(false)
}

/// Whether process `pid` is `ancestor` or one of its descendants (its parent chain, read from
/// `/proc`, reaches `ancestor`).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..32 {
        if current == ancestor {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match stat_fields(current) {
            Some((_, parent, _)) => current = parent,
            None => return false,
        }
    }
    false
}

/// Whether any process of group `pgid` remains that still [`runs`].
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 0 || killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Some(pids) = all_pids() else {
        return true;
    };
    pids.into_iter()
        .any(|pid| stat_fields(pid).is_some_and(|(state, _, group)| group == pgid && runs(&state)))
}

/// Every process id in `/proc` now; `None` when it cannot be read.
fn all_pids() -> Option<Vec<i32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .collect(),
    )
}

/// Stops process group `pgid`: SIGTERM, then SIGKILL after `grace`.
pub async fn stop_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    // Ray starts some processes (its workers) in sessions of their own: they are found as
    // descendants of the node's process now, while their parents still run, and stopped
    // with the group (each checked to be the same process before it is signalled).
    let strays: Vec<(i32, String)> = descendants(pgid)
        .into_iter()
        .filter(|pid| process_group(*pid) != Some(pgid))
        .filter_map(|pid| identity(pid).map(|id| (pid, id)))
        .collect();
    let same = |pid: i32, id: &str| identity(pid).as_deref() == Some(id) && alive(pid);
    let signal_strays = |signal: Signal| {
        for (pid, id) in &strays {
            if same(*pid, id) {
                let _ = nix::sys::signal::kill(Pid::from_raw(*pid), signal);
            }
        }
    };
    let all_gone = || !group_alive(pgid) && !strays.iter().any(|(pid, id)| same(*pid, id));
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    signal_strays(Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if all_gone() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
    signal_strays(Signal::SIGKILL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !all_gone() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fields of `/proc/PID/stat` after the command name: state, parent pid, process group.
fn stat_fields(pid: i32) -> Option<(String, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, parent, group))
}

fn process_group(pid: i32) -> Option<i32> {
    stat_fields(pid).map(|(_, _, group)| group)
}

/// Every live descendant of `root` (children, their children, ...), from one look at `/proc`.
pub fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| stat_fields(pid).map(|(_, parent, _)| (pid, parent)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, _) in parents.iter().filter(|(_, p)| *p == parent) {
            if !found.contains(pid) && *pid != root {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Kills every process of this user whose command line mentions `marker` (a cluster's temp dir):
/// the safety net for Ray processes that left the node's process group.
pub fn kill_by_marker(marker: &str) -> Vec<i32> {
    let mut killed = Vec::new();
    if marker.len() < 8 {
        return killed;
    }
    let me = std::process::id() as i32;
    let uid = nix::unistd::getuid().as_raw();
    for pid in all_pids().unwrap_or_default() {
        if pid == me {
            continue;
        }
        let owned = std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
            .unwrap_or(false);
        if owned && runs_with(pid, marker) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;

    use super::*;

    /// A process of ours, in its own group, whose command line names `marker`.
    fn sleeper(marker: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "sleep 30; : \"$0\"", marker])
            .process_group(0)
            .spawn()
            .expect("sh")
    }

    #[test]
    fn only_a_process_with_our_identity_and_marker_is_ours() {
        let marker = "/tmp/rs-identity-test-marker";
        let mut ours = sleeper(marker);
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = ours.id() as i32;
        // Until the child has exec'd, its command line is still the test's.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !runs_with(pid, marker) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let recorded = identity(pid).expect("identity of a live process");
        assert!(is_ours(pid, Some(&recorded), marker));
        assert!(
            is_ours(pid, None, marker),
            "rows from before identities: marker only"
        );
        // A pid reused by another process has another start time.
        let other = format!("{}:1", recorded.split(':').next().unwrap_or_default());
        assert!(!is_ours(pid, Some(&other), marker));
        // An unrelated process (the `setsid sleep` of the finding) is never ours.
        let stranger_pid = stranger.id() as i32;
        assert!(!is_ours(stranger_pid, None, marker));
        assert!(!is_ours(
            stranger_pid,
            identity(stranger_pid).as_deref(),
            marker
        ));
        assert!(
            !is_ours(pid, Some(&recorded), "/tmp"),
            "too short a marker proves nothing"
        );
        for child in [&mut ours, &mut stranger] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(!is_ours(pid, Some(&recorded), marker));
    }

    #[test]
    fn stopping_a_group_also_stops_its_descendants_in_other_sessions() {
        // A node whose child left for a session of its own (as Ray's workers do).
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 300 & wait"])
            .process_group(0)
            .spawn()
            .expect("sh");
        let pgid = leader.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stray = loop {
            if let Some(pid) = descendants(pgid)
                .into_iter()
                .find(|pid| process_group(*pid) != Some(pgid) && runs_with(*pid, "300"))
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no stray child");
            std::thread::sleep(Duration::from_millis(10));
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(stop_group(pgid, Duration::from_millis(500)));
        let _ = leader.wait();
        assert!(
            !alive(stray),
            "the child in its own session was stopped too"
        );
    }
}
