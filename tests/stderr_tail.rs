//! `StderrTail`: a tool's last words reach its error even when the reader of its stderr is
//! behind (a busy machine), and a pipe held open by a grandchild delays the error only a bounded
//! time. Plain `sh` stands in for the datastore tools.

use std::process::Stdio;
use std::time::{Duration, Instant};

use lifeboat::stores::stderr_tail::StderrTail;

fn spawn(script: &str) -> (tokio::process::Child, StderrTail) {
    let mut child = tokio::process::Command::new("sh").args(["-c", script]).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let tail = StderrTail::watch(child.stderr.take().unwrap(), |_| {});
    (child, tail)
}

/// On a one-thread runtime the reader task cannot run before this test yields: the tool has
/// exited with its message unread, as on a busy machine. `last` still has it.
#[tokio::test(flavor = "current_thread")]
async fn the_last_lines_are_read_before_they_are_given() {
    let (mut child, tail) = spawn("echo 'first' >&2; echo 'backup: unexpected EOF (simulated)' >&2; exit 1");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tail.so_far(2), "no message", "the reader ran early: this test no longer shows the race");
    assert!(!child.wait().await.unwrap().success());
    assert_eq!(tail.last(2).await, "first / backup: unexpected EOF (simulated)");
    assert_eq!(tail.last(1).await, "backup: unexpected EOF (simulated)");
}

/// A grandchild that keeps stderr open does not hold the error back for long.
#[tokio::test(flavor = "current_thread")]
async fn a_pipe_held_open_by_a_grandchild_waits_only_a_bounded_time() {
    let (mut child, tail) = spawn("sleep 4 & echo 'tool failed' >&2; exit 3");
    assert_eq!(child.wait().await.unwrap().code(), Some(3));
    let started = Instant::now();
    assert_eq!(tail.last(3).await, "tool failed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(4), "waited {waited:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_tool_has_no_message() {
    let (mut child, tail) = spawn("exit 1");
    child.wait().await.unwrap();
    assert_eq!(tail.last(3).await, "no message");
}
