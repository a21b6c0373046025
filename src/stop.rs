//! Clean stops. Kubernetes ends a job with SIGTERM (an operator with Ctrl-C, SIGINT); either
//! must stop a backup within seconds with nothing committed, and a restore with a clear account
//! of which stores were restored. The signal only raises a flag here: each command races its
//! work against [`requested`] at the points where stopping is safe to describe, and drops the
//! work future, which kills the child tools (they are spawned `kill_on_drop`).

use std::sync::OnceLock;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

struct Stop {
    token: CancellationToken,
    signal: OnceLock<&'static str>,
}

fn global() -> &'static Stop {
    static STOP: OnceLock<Stop> = OnceLock::new();
    STOP.get_or_init(|| Stop { token: CancellationToken::new(), signal: OnceLock::new() })
}

/// Listens for SIGTERM and SIGINT for the rest of the process. A second signal exits at once.
pub fn install() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            request(name);
        }
    });
    Ok(())
}

/// Raises the stop flag as if `name` had been received (the signal handler's only action).
pub fn request(name: &'static str) {
    let stop = global();
    if stop.token.is_cancelled() {
        eprintln!("error: {name} received again: exiting now without cleaning up");
        std::process::exit(1);
    }
    let _ = stop.signal.set(name);
    tracing::warn!("{name} received: stopping; nothing more will be committed");
    stop.token.cancel();
}

/// Whether a stop was asked for.
pub fn is_requested() -> bool {
    global().token.is_cancelled()
}

/// Completes when a stop is asked for, with the signal's name.
pub async fn requested() -> &'static str {
    let stop = global();
    stop.token.cancelled().await;
    stop.signal.get().copied().unwrap_or("a stop request")
}

/// The name of the signal that stopped the job, if any.
pub fn signal_name() -> &'static str {
    global().signal.get().copied().unwrap_or("a stop request")
}

/// Races `work` against a stop request: None when stopped (`work` is dropped, which kills its
/// child tools).
pub async fn unless_requested<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        result = work => Some(result),
        _ = requested() => None,
    }
}
