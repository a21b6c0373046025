//! One job at a time per store and environment: a lock file `<root>/locks/<store folder>.lock` on
//! the backup server, created new (the server refuses to create a file that exists, over SFTP
//! and in a local folder alike), holding who took it: owner, host, pid, since when, for which
//! command. `backup` and `prune` of one store take the same lock, so they exclude each other.
//!
//! A lock is stale when its holder is on this host and its pid is gone (or now another process,
//! by its start time), whatever its age; or, on another host where nothing can be checked, when
//! it is older than `locking.stale_after`. (A job whose connection was cut cannot remove its lock;
//! on the same host the next job takes it over at once.) A stale lock is named in a
//! warning and taken over. Otherwise a job polls up to `locking.wait`, then fails naming the
//! holder. The lock is released when the job ends, whether it succeeded, failed or panicked
//! ([`with_lock`]); only a killed process leaves it, for the next job to judge.
//!
//! Issue 11 makes the production key append-only: its policy must then still allow removing
//! files under `locks/`, or no lock could ever be released.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::check_file_name;
use crate::deployment::host_name;
use crate::error::{Error, Result};
use crate::server::{BackupServer, join};

pub const LOCKS_DIR: &str = "locks";

/// `locking:` of the configuration: one job at a time per store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locking {
    /// How long a job waits for another job of the same store before failing; 0: fail at once.
    #[serde(default = "ten_minutes", deserialize_with = "crate::units::duration")]
    pub wait: Duration,
    /// A lock older than this whose holder cannot be seen alive is taken over.
    #[serde(default = "twelve_hours", deserialize_with = "crate::units::duration")]
    pub stale_after: Duration,
    /// How often a waiting job looks at the lock again.
    #[serde(default = "five_seconds", deserialize_with = "crate::units::duration")]
    pub poll: Duration,
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn twelve_hours() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

impl Default for Locking {
    fn default() -> Self {
        Locking { wait: ten_minutes(), stale_after: twelve_hours(), poll: five_seconds() }
    }
}

/// Largest lock file read: a real one is a few hundred bytes.
const MAX_LOCK: u64 = 64 * 1024;

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    pub store: String,
    pub command: String,
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot, `/proc/<pid>/stat`), so that a reused
    /// pid is not taken for the holder.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// RFC 3339.
    pub since: String,
}

impl LockHolder {
    fn this_process(store: &str, command: &str) -> LockHolder {
        let pid = std::process::id();
        LockHolder {
            store: store.to_string(),
            command: command.to_string(),
            owner: std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| format!("uid {}", unsafe_uid())),
            host: host_name(),
            pid,
            pid_start: process_start(pid),
            since: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    fn describe(&self) -> String {
        format!("`{}` on host {} (pid {}, user {}) since {}", self.command, self.host, self.pid, self.owner, self.since)
    }

    fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        let since = DateTime::parse_from_rfc3339(&self.since).ok()?;
        (now - since.with_timezone(&Utc)).to_std().ok()
    }

    /// Alive as far as this host can tell: None when the holder is on another host.
    fn alive_here(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        let start = process_start(self.pid);
        Some(start.is_some() && (self.pid_start.is_none() || start == self.pid_start))
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A process's start time from `/proc/<pid>/stat` (field 22), or None when there is no such process.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// A held lock. Release it with [`StoreLock::release`]; [`with_lock`] does so on every path.
pub struct StoreLock<'a> {
    server: &'a dyn BackupServer,
    path: String,
    written: Vec<u8>,
    released: bool,
}

impl<'a> StoreLock<'a> {
    /// Takes the lock of store folder `folder` for `command`, waiting or taking over a stale
    /// lock as `settings` say.
    pub async fn acquire(server: &'a dyn BackupServer, settings: &Locking, folder: &str, command: &str) -> Result<StoreLock<'a>> {
        check_file_name(folder)?;
        let path = join(LOCKS_DIR, &format!("{folder}.lock"));
        let deadline = Instant::now() + settings.wait;
        let mut announced = false;
        let mut vanished = 0;
        loop {
            let written = serde_json::to_vec_pretty(&LockHolder::this_process(folder, command)).expect("lock serialises");
            if server.create_if_absent(&path, &written).await? {
                // Two jobs taking over the same stale lock may both have removed it: the one whose
                // content is there holds it; the other waits like any second job.
                if server.read_small(&path, MAX_LOCK).await.ok().as_deref() == Some(&written[..]) {
                    return Ok(StoreLock { server, path, written, released: false });
                }
                continue;
            }
            let held = match read_written(server, &path).await {
                Ok(bytes) => bytes,
                // The lock vanished between the two calls (its holder finished): try again.
                Err(_) if !server.exists(&path).await? && vanished < 3 => {
                    vanished += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let holder = serde_json::from_slice::<LockHolder>(&held).ok();
            if let Some(h) = &holder
                && stale(h, settings.stale_after)
            {
                let why = match h.alive_here() {
                    Some(_) => "its process is gone from this host".to_string(),
                    None => format!("older than locking.stale_after ({} s)", settings.stale_after.as_secs()),
                };
                tracing::warn!("{folder}: taking over the stale lock {} of {}: {why}", server.describe() + "/" + &path, h.describe());
                if server.read_small(&path, MAX_LOCK).await.ok().as_deref() == Some(&held[..]) {
                    server.delete(&path).await?;
                }
                continue;
            }
            let who = match &holder {
                Some(h) => format!("locked by {}", h.describe()),
                None => "locked by a lock file that cannot be read (being written, or damaged)".to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                let waited =
                    if settings.wait.is_zero() { String::new() } else { format!(" (waited {} s, locking.wait)", settings.wait.as_secs()) };
                return Err(Error::store(
                    folder,
                    format!(
                        "{who}{waited}: another Lifeboat job is working on this store; let it finish and run again, or, if no such job is \
                         running, remove {}/{path} (a stale lock is taken over after locking.stale_after)",
                        server.describe()
                    ),
                ));
            }
            if !announced {
                tracing::warn!("{folder}: waiting up to {} s for the lock: {who}", settings.wait.as_secs());
                announced = true;
            }
            tokio::time::sleep(settings.poll.min(deadline - now).max(Duration::from_millis(10))).await;
        }
    }

    /// Removes the lock file, if it is still this job's (a job that outlived `stale_after` may
    /// have lost it to another). Never fails: a lock left behind is named in a warning.
    pub async fn release(mut self) {
        self.released = true;
        let path = &self.path;
        match self.server.read_small(path, MAX_LOCK).await {
            Ok(bytes) if bytes == self.written => {
                if let Err(e) = self.server.delete(path).await {
                    tracing::warn!("could not remove the lock {path}: {e}; remove it by hand, or the next job waits for it");
                }
            }
            Ok(_) => tracing::warn!("the lock {path} was taken over by another job while this one ran (locking.stale_after is too short)"),
            Err(e) => tracing::warn!("could not read back the lock {path} ({e}); remove it by hand if no job is running"),
        }
    }
}

impl Drop for StoreLock<'_> {
    fn drop(&mut self) {
        // Only a path that skipped `release` gets here; [`with_lock`] never does.
        if !self.released {
            tracing::warn!("the lock {} was not released; the next job takes it over once it is stale", self.path);
        }
    }
}

/// Reads a lock file held by another job. Its holder creates it and then writes it, so a read
/// between the two sees it empty or cut: read again for up to a second before calling it damaged.
async fn read_written(server: &dyn BackupServer, path: &str) -> Result<Vec<u8>> {
    let mut bytes = server.read_small(path, MAX_LOCK).await?;
    for _ in 0..20 {
        if serde_json::from_slice::<LockHolder>(&bytes).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        bytes = server.read_small(path, MAX_LOCK).await?;
    }
    Ok(bytes)
}

fn stale(holder: &LockHolder, stale_after: Duration) -> bool {
    match holder.alive_here() {
        Some(alive) => !alive,
        None => holder.age(Utc::now()).is_some_and(|age| age > stale_after),
    }
}

/// Runs `job` holding the lock of store folder `folder`; the lock is released however the job
/// ends (success, error, panic).
pub async fn with_lock<T>(
    server: &dyn BackupServer,
    settings: &Locking,
    folder: &str,
    command: &str,
    job: impl Future<Output = Result<T>>,
) -> Result<T> {
    let lock = StoreLock::acquire(server, settings, folder, command).await?;
    let result = AssertUnwindSafe(job).catch_unwind().await;
    lock.release().await;
    match result {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, pid_start: Option<u64>, age: Duration) -> LockHolder {
        let since = (Utc::now() - chrono::Duration::from_std(age).unwrap()).to_rfc3339();
        LockHolder { store: "postgres".into(), command: "backup".into(), owner: "root".into(), host: host.into(), pid, pid_start, since }
    }

    #[test]
    fn staleness_needs_age_and_a_holder_that_is_not_seen_alive() {
        let hour = Duration::from_secs(3600);
        let me = std::process::id();
        let my_start = process_start(me);
        assert!(my_start.is_some(), "/proc/self/stat is readable");
        // Another host: age alone decides.
        assert!(!stale(&holder("elsewhere.example", 1, None, hour), 2 * hour));
        assert!(stale(&holder("elsewhere.example", 1, None, 3 * hour), 2 * hour));
        // This host, this (alive) process: never stale, however old.
        assert!(!stale(&holder(&host_name(), me, my_start, 30 * hour), 2 * hour));
        // This host, the pid reused by another process (another start time): gone.
        assert!(stale(&holder(&host_name(), me, my_start.map(|s| s + 1), 3 * hour), 2 * hour));
        // This host, no such process: gone, however young.
        assert!(stale(&holder(&host_name(), u32::MAX - 1, None, 3 * hour), 2 * hour));
        assert!(stale(&holder(&host_name(), u32::MAX - 1, None, Duration::from_secs(1)), 2 * hour));
        // A lock without a readable time is never stale.
        let mut h = holder("elsewhere.example", 1, None, 3 * hour);
        h.since = "yesterday".into();
        assert!(!stale(&h, 2 * hour));
    }
}
