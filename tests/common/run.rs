//! Running the lifeboat binary and reading what it said.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the lifeboat binary with a config and arguments, no stdin.
pub fn lifeboat(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .expect("run lifeboat")
}

/// Starts the lifeboat binary in the background (to interrupt it), no stdin, stderr discarded.
pub fn spawn_lifeboat(config: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_remove("LIFEBOAT_CONFIG")
        .spawn()
        .expect("start lifeboat")
}

/// Starts the lifeboat binary in the background with stdout and stderr captured, to signal it
/// and then read what it said (`wait_with_output`).
pub fn spawn_lifeboat_captured(config: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_remove("LIFEBOAT_CONFIG")
        .spawn()
        .expect("start lifeboat")
}

/// Sends a signal (e.g. `TERM`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `error:` line of a failed run.
pub fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "expected exactly one error line, got:\n{text}");
    lines[0].to_string()
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "lifeboat failed ({:?}):\n{}", out.status.code(), stderr(out));
}

#[track_caller]
pub fn assert_fails(out: &Output, code: i32, needle: &str) -> String {
    assert_eq!(out.status.code(), Some(code), "expected exit {code}, stderr:\n{}", stderr(out));
    let line = error_line(out);
    assert!(line.contains(needle), "error line should mention `{needle}`: {line}");
    line
}

/// Starts the lifeboat binary in the background with its stderr written to `log`, to watch
/// what it says while it runs.
pub fn spawn_lifeboat_logged(config: &Path, args: &[&str], log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the log file"))
        .env_remove("LIFEBOAT_CONFIG")
        .spawn()
        .expect("start lifeboat")
}

/// Polls `done` every 50 ms until it holds, failing with `what` after `limit`.
#[track_caller]
pub fn poll_until(what: &str, limit: std::time::Duration, done: impl FnMut() -> bool) {
    poll_until_or(what, limit, done, String::new)
}

/// [`poll_until`], adding `context()` (the logs of the processes involved) to the failure.
#[track_caller]
pub fn poll_until_or(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool, context: impl FnOnce() -> String) {
    let started = std::time::Instant::now();
    while !done() {
        if started.elapsed() >= limit {
            panic!("gave up waiting {limit:?} for {what}\n{}", context());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
