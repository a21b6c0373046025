//! The last lines a datastore tool (pg_dump, influxd, …) wrote to stderr, kept for the one-line
//! error an operator sees when the tool fails.
//!
//! The lines are read by a task of their own, which may still be behind when the tool has
//! exited (a busy machine): [`StderrTail::last`] waits for that reader to reach the end of the
//! pipe before answering, so a tool's last words are never lost from its error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

const KEEP: usize = 20;

/// How long [`StderrTail::last`] waits for the end of stderr once the tool has exited. Bounded:
/// a grandchild the tool left running may hold the pipe open for ever.
const END_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct StderrTail {
    lines: Arc<Mutex<Vec<String>>>,
    /// Becomes true once the reader has reached the end of the pipe.
    ended: watch::Receiver<bool>,
}

impl StderrTail {
    /// Reads `stderr` to its end in the background, calling `on_line` for each line.
    pub fn watch(stderr: tokio::process::ChildStderr, mut on_line: impl FnMut(&str) + Send + 'static) -> StderrTail {
        let (ended_tx, ended) = watch::channel(false);
        let tail = StderrTail { lines: Arc::default(), ended };
        let lines = tail.lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                on_line(&line);
                let mut kept = lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                kept.push(line);
                if kept.len() > KEEP {
                    kept.remove(0);
                }
            }
            let _ = ended_tx.send(true);
        });
        tail
    }

    /// For a tool that has exited: the last `n` non-empty lines joined with ` / `, or
    /// `no message`, once every line it wrote has been read (at most [`END_WAIT`] later).
    pub async fn last(&self, n: usize) -> String {
        let mut ended = self.ended.clone();
        // An error means the reader is gone (it has ended, or panicked): nothing more will come.
        let _ = tokio::time::timeout(END_WAIT, ended.wait_for(|ended| *ended)).await;
        self.so_far(n)
    }

    /// For a tool still running: the last `n` non-empty lines read so far, or `no message`.
    pub fn so_far(&self, n: usize) -> String {
        let kept = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let plain: Vec<&str> = kept.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect();
        if plain.is_empty() {
            return "no message".into();
        }
        plain[plain.len().saturating_sub(n)..].join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Instant;

    use super::*;

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
        assert!(waited >= END_WAIT && waited < END_WAIT + Duration::from_secs(2), "waited {waited:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_tool_has_no_message() {
        let (mut child, tail) = spawn("exit 1");
        child.wait().await.unwrap();
        assert_eq!(tail.last(3).await, "no message");
    }
}
