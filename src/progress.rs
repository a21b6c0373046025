//! Progress of long transfers: a live bar on a terminal, a plain log line every 15 s otherwise
//! (cron jobs and Kubernetes logs). Always on stderr; stdout carries only command results.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicU64;

/// Byte counters shared with the progress display.
#[derive(Default, Debug)]
pub struct Counters {
    pub read: Arc<AtomicU64>,
    pub stored: Arc<AtomicU64>,
}

impl Counters {
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
}

/// Shows progress for one transfer until dropped.
pub struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Progress {
    pub fn start(label: String, counters: Arc<Counters>) -> Progress {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed_precise}]").expect("valid template"),
            );
            bar.set_prefix(label);
            tokio::spawn(async move {
                loop {
                    let read = counters.read.load(Ordering::Relaxed);
                    let stored = counters.stored.load(Ordering::Relaxed);
                    let rate = read as f64 / started.elapsed().as_secs_f64().max(0.001);
                    bar.set_message(format!("read {}, stored {}, {}/s", human_bytes(read), human_bytes(stored), human_bytes(rate as u64)));
                    bar.tick();
                    tokio::select! {
                        _ = &mut rx => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                bar.finish_and_clear();
            });
        } else {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    }
                    let read = counters.read.load(Ordering::Relaxed);
                    let stored = counters.stored.load(Ordering::Relaxed);
                    tracing::info!(
                        "{label}: read {}, stored {}, {:.0} s",
                        human_bytes(read),
                        human_bytes(stored),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
        Progress { stop: Some(tx) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Bytes in binary units, e.g. `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The closing line of a store's backup or restore.
pub fn summary(store: &str, action: &str, id: &str, read: u64, stored: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "{store}: {action} {id} done: read {}, stored {}, {:.1} s, {}/s",
        human_bytes(read),
        human_bytes(stored),
        secs,
        human_bytes((read as f64 / secs) as u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
