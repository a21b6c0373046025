//! The last lines a datastore tool (pg_dump, influxd, …) wrote to stderr, kept for the one-line
//! error an operator sees when the tool fails.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt;

const KEEP: usize = 20;

#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<String>>>);

impl StderrTail {
    /// Reads `stderr` to its end in the background, calling `on_line` for each line.
    pub fn watch(stderr: tokio::process::ChildStderr, mut on_line: impl FnMut(&str) + Send + 'static) -> StderrTail {
        let tail = StderrTail::default();
        let lines = tail.0.clone();
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
        });
        tail
    }

    /// The last `n` non-empty lines joined with ` / `, or `no message`.
    pub fn last(&self, n: usize) -> String {
        let kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let plain: Vec<&str> = kept.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect();
        if plain.is_empty() {
            return "no message".into();
        }
        plain[plain.len().saturating_sub(n)..].join(" / ")
    }
}
