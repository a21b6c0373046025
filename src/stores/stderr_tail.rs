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
