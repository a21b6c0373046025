//! `lifeboat daemon`: the config's schedules, for a host without Kubernetes. Each due job is one
//! `lifeboat backup --store S` (or `restore --store S --yes`) run in-process, so locking, metrics,
//! drill reports and clean stops are the commands' own. One job at a time: a store that falls due
//! while another runs waits its turn, and occurrences missed meanwhile collapse into one run.
//!
//! Schedules are five-field cron in the config's `timezone` (croner: DST gaps and repeats fire
//! once). `LIFEBOAT_DAEMON_SECONDS=1` also accepts a sixth, seconds field: for tests only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::commands::{backup, restore};
use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::stop;
use crate::stores::{BackupKind, Schedule};

/// SPEC's defaults when a backup store names no schedule: daily at 01:00; for a differential
/// store, full on Sunday and differential the other days.
const DEFAULT_DUMP: &str = "0 1 * * *";
const DEFAULT_FULL: &str = "0 1 * * 0";
const DEFAULT_DIFFERENTIAL: &str = "0 1 * * 1-6";

/// Never sleep longer than this before looking at the wall clock again (a clock set, a suspend).
const LONGEST_NAP: Duration = Duration::from_secs(60);

/// What one schedule runs: a store's backup (of a kind, for a differential store) or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Backup(Option<BackupKind>),
    Restore,
}

/// One cron expression of one store, and the key it came from (for errors and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub store: String,
    pub action: Action,
    /// e.g. `stores.postgres.schedule.full`.
    pub key: String,
    pub cron: String,
    pub default: bool,
}

/// Which schedules a store's block asks for. A backup store without one takes SPEC's defaults;
/// a restore runs only when its store has a schedule (one expression: when to restore).
pub fn entries(role: Role, store: &str, differential: bool, schedule: Option<&Schedule>) -> std::result::Result<Vec<Entry>, String> {
    let key = format!("stores.{store}.schedule");
    let entry = |action, key: String, cron: &str, default| Entry { store: store.to_string(), action, key, cron: cron.to_string(), default };
    if role == Role::Restore {
        return match schedule {
            None => Ok(vec![]),
            Some(Schedule::One(cron)) => Ok(vec![entry(Action::Restore, key, cron, false)]),
            Some(Schedule::PerKind(_)) => Err(format!("{key}: with role restore give one cron expression, when to restore this store")),
        };
    }
    let kinds = match schedule {
        Some(Schedule::One(cron)) => {
            return Ok(vec![entry(Action::Backup(None), key, cron, false)]);
        }
        Some(Schedule::PerKind(kinds)) => kinds.clone(),
        None => Default::default(),
    };
    if let Some(unknown) = kinds.keys().find(|k| !["dump", "full", "differential"].contains(&k.as_str())) {
        return Err(format!("{key}.{unknown} is not a schedule key: use dump, full or differential"));
    }
    let pick = |name: &str, action, fallback: &str| match kinds.get(name) {
        Some(cron) => entry(action, format!("{key}.{name}"), cron, false),
        None => entry(action, format!("{key}.{name}"), fallback, true),
    };
    Ok(if differential {
        vec![
            pick("full", Action::Backup(Some(BackupKind::Full)), DEFAULT_FULL),
            pick("differential", Action::Backup(Some(BackupKind::Diff)), DEFAULT_DIFFERENTIAL),
        ]
    } else {
        vec![pick("dump", Action::Backup(None), DEFAULT_DUMP)]
    })
}

/// Parses a cron expression: five fields, or also six (seconds first) when `seconds` is set.
pub fn parse_cron(cron: &str, seconds: bool) -> std::result::Result<Cron, String> {
    let fields = cron.split_whitespace().count();
    if fields != 5 && !(seconds && fields == 6) {
        return Err(format!("`{cron}` is not a five-field cron expression (minute hour day-of-month month day-of-week)"));
    }
    let parser =
        CronParser::builder().seconds(if seconds { Seconds::Optional } else { Seconds::Disallowed }).year(Year::Disallowed).build();
    parser.parse(cron).map_err(|e| format!("`{cron}` is not a valid cron expression ({e})"))
}

/// The first time after `after` that `cron` names, in `tz`.
pub fn next_after(cron: &Cron, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Tz>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false).ok()
}

/// The jobs due at `now`, in schedule order; of one store's due jobs only the first runs (a full
/// backup listed before a differential makes the differential pointless), the others are passed.
pub fn due(entries: &[Entry], next: &[DateTime<Tz>], now: DateTime<Utc>) -> (Vec<usize>, Vec<usize>) {
    let (mut run, mut passed) = (Vec::new(), Vec::new());
    for (i, at) in next.iter().enumerate() {
        if *at > now {
            continue;
        }
        if run.iter().any(|&j: &usize| entries[j].store == entries[i].store) {
            passed.push(i);
        } else {
            run.push(i);
        }
    }
    (run, passed)
}

struct Job {
    entry: Entry,
    cron: Cron,
    next: DateTime<Tz>,
}

impl Job {
    fn advance(&mut self, tz: Tz) -> Result<()> {
        let now = Utc::now();
        self.next = next_after(&self.cron, now, tz)
            .ok_or_else(|| Error::Usage(format!("{} `{}` never runs again after {now}", self.entry.key, self.entry.cron)))?;
        Ok(())
    }

    fn describe(&self) -> String {
        let what = match self.entry.action {
            Action::Backup(Some(BackupKind::Full)) => "full backup",
            Action::Backup(Some(BackupKind::Diff)) => "differential backup",
            Action::Backup(None) => "backup",
            Action::Restore => "restore",
        };
        let default = if self.entry.default { ", the default" } else { "" };
        format!(
            "{}: next {what} at {} ({} `{}`{default})",
            self.entry.store,
            self.next.format("%Y-%m-%d %H:%M:%S %Z"),
            self.entry.key,
            self.entry.cron
        )
    }
}

fn plan(config: &Config, seconds: bool, tz: Tz) -> Result<Vec<Job>> {
    let invalid = |message: String| Error::Config { file: config.file.clone(), message };
    let mut jobs = Vec::new();
    for store in config.configured_stores(&[])? {
        let differential = store.store.differential().is_some();
        for entry in entries(config.role, store.name, differential, store.settings.schedule.as_ref()).map_err(invalid)? {
            let cron = parse_cron(&entry.cron, seconds).map_err(|e| invalid(format!("{} {e}", entry.key)))?;
            let next = next_after(&cron, Utc::now(), tz).ok_or_else(|| invalid(format!("{} `{}` never runs", entry.key, entry.cron)))?;
            jobs.push(Job { entry, cron, next });
        }
    }
    if jobs.is_empty() {
        return Err(invalid(format!(
            "role {}: no enabled store has a schedule, so the daemon has nothing to run; give a store `schedule: \"0 3 * * *\"`",
            config.role
        )));
    }
    Ok(jobs)
}

/// Runs the schedules until SIGTERM or SIGINT: Ok when stopped between jobs, the job's own
/// `Stopped` error (exit 1) when a stop interrupted one.
pub async fn run(config: &Config) -> Result<()> {
    let tz = config.tz()?;
    let seconds = std::env::var("LIFEBOAT_DAEMON_SECONDS").is_ok_and(|v| v == "1");
    let mut jobs = plan(config, seconds, tz)?;
    tracing::info!("daemon: role {}, timezone {tz}, {} schedule(s)", config.role, jobs.len());
    jobs.iter().for_each(|job| tracing::info!("{}", job.describe()));
    loop {
        let now = Utc::now();
        let entries: Vec<Entry> = jobs.iter().map(|j| j.entry.clone()).collect();
        let next: Vec<DateTime<Tz>> = jobs.iter().map(|j| j.next).collect();
        let (run, passed) = due(&entries, &next, now);
        if run.is_empty() {
            let soonest = next.iter().min().expect("plan refuses an empty schedule").with_timezone(&Utc);
            let nap = (soonest - now).to_std().unwrap_or_default().min(LONGEST_NAP);
            if stop::unless_requested(tokio::time::sleep(nap)).await.is_none() {
                tracing::info!("daemon: stopped by {} with no job running", stop::signal_name());
                return Ok(());
            }
            continue;
        }
        for i in run {
            if stop::is_requested() {
                tracing::info!("daemon: stopped by {} between jobs", stop::signal_name());
                return Ok(());
            }
            run_job(config, &jobs[i].entry).await?;
            jobs[i].advance(tz)?;
            tracing::info!("{}", jobs[i].describe());
        }
        for i in passed {
            tracing::info!("{}: {} was due too; one run per store is enough", jobs[i].entry.store, jobs[i].entry.key);
            jobs[i].advance(tz)?;
            tracing::info!("{}", jobs[i].describe());
        }
    }
}

/// One job; only a stop ends the daemon, any other failure is logged (and reported by the command's metrics).
async fn run_job(config: &Config, entry: &Entry) -> Result<()> {
    let only = [entry.store.clone()];
    tracing::info!("{}: starting the scheduled job ({} `{}`)", entry.store, entry.key, entry.cron);
    let result = match entry.action {
        Action::Backup(kind) => backup::run(config, &only, kind).await.map(|_| ()),
        Action::Restore => {
            let options = restore::RestoreOptions { only: &only, from: None, target_time: None, yes: true };
            restore::run(config, options).await.map(|_| ())
        }
    };
    match result {
        Err(e @ Error::Stopped(_)) => Err(e),
        Err(e) => {
            tracing::error!("{}: the scheduled job failed: {e}; the daemon goes on", entry.store);
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_next_run_is_in_the_configured_timezone() {
        let lagos: Tz = "Africa/Lagos".parse().unwrap();
        let cron = parse_cron("0 1 * * *", false).unwrap();
        // 00:30 UTC is 01:30 in Lagos (UTC+1): today's 01:00 there has passed.
        let next = next_after(&cron, utc("2025-06-01T00:30:00Z"), lagos).unwrap();
        assert_eq!(next.with_timezone(&Utc), utc("2025-06-02T00:00:00Z"));
        assert_eq!(next.format("%Y-%m-%d %H:%M %Z").to_string(), "2025-06-02 01:00 WAT");
        // 23:30 UTC on the 1st is 00:30 on the 2nd in Lagos: 01:00 that day is 30 minutes away.
        assert_eq!(next_after(&cron, utc("2025-06-01T23:30:00Z"), lagos).unwrap().with_timezone(&Utc), utc("2025-06-02T00:00:00Z"));
        // A job that ended within its own minute runs next the day after, not again.
        assert_eq!(next_after(&cron, utc("2025-06-02T00:00:00.500Z"), lagos).unwrap().with_timezone(&Utc), utc("2025-06-03T00:00:00Z"));
    }

    #[test]
    fn a_dst_gap_or_repeat_runs_the_job_once() {
        let london: Tz = "Europe/London".parse().unwrap();
        let cron = parse_cron("30 1 * * *", false).unwrap();
        let runs = |from: &str, n: usize| -> Vec<DateTime<Utc>> {
            std::iter::successors(next_after(&cron, utc(from), london), |t| next_after(&cron, t.with_timezone(&Utc), london))
                .take(n)
                .map(|t| t.with_timezone(&Utc))
                .collect()
        };
        // 2025-03-30: 01:00 GMT jumps to 02:00 BST, so 01:30 does not exist that day.
        let spring = runs("2025-03-29T12:00:00Z", 2);
        assert_eq!(spring, [utc("2025-03-30T01:00:00Z"), utc("2025-03-31T00:30:00Z")]);
        // 2025-10-26: 01:30 happens twice (BST, then GMT); one run.
        let fall = runs("2025-10-25T12:00:00Z", 2);
        assert_eq!(fall, [utc("2025-10-26T00:30:00Z"), utc("2025-10-27T01:30:00Z")]);
    }

    #[test]
    fn five_fields_in_production_six_only_for_tests() {
        assert!(parse_cron("0 1 * * 0", false).is_ok());
        for bad in ["0 1 * *", "*/5 0 1 * * 0", "61 1 * * *", "0 1 * * mon-", "every day"] {
            assert!(parse_cron(bad, false).is_err(), "{bad}");
        }
        assert!(parse_cron("*/2 * * * * *", true).is_ok());
        assert!(parse_cron("0 1 * * 0", true).is_ok());
    }

    #[test]
    fn schedule_keys_become_jobs_of_a_kind() {
        let per_kind = |pairs: &[(&str, &str)]| Schedule::PerKind(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let summary = |e: Vec<Entry>| e.into_iter().map(|e| (e.key, e.action, e.cron, e.default)).collect::<Vec<_>>();
        let full = Action::Backup(Some(BackupKind::Full));
        let diff = Action::Backup(Some(BackupKind::Diff));
        // A differential store: full and differential from their keys, SPEC's defaults for the rest.
        let both = per_kind(&[("dump", "0 2 * * *"), ("full", "0 3 * * 6")]);
        assert_eq!(
            summary(entries(Role::Backup, "postgres", true, Some(&both)).unwrap()),
            vec![
                ("stores.postgres.schedule.full".into(), full, "0 3 * * 6".into(), false),
                ("stores.postgres.schedule.differential".into(), diff, DEFAULT_DIFFERENTIAL.into(), true),
            ]
        );
        // The same block on a dump store uses `dump`.
        assert_eq!(
            summary(entries(Role::Backup, "postgres", false, Some(&both)).unwrap()),
            vec![("stores.postgres.schedule.dump".into(), Action::Backup(None), "0 2 * * *".into(), false)]
        );
        // One expression: the store chooses the kind by day, as `lifeboat backup` does.
        let one = Schedule::One("0 4 * * *".into());
        assert_eq!(
            summary(entries(Role::Backup, "postgres", true, Some(&one)).unwrap()),
            vec![("stores.postgres.schedule".into(), Action::Backup(None), "0 4 * * *".into(), false)]
        );
        assert_eq!(entries(Role::Backup, "minio", false, None).unwrap()[0].cron, DEFAULT_DUMP);
        let typo = per_kind(&[("ful", "0 3 * * 6")]);
        assert_eq!(
            entries(Role::Backup, "postgres", true, Some(&typo)).unwrap_err(),
            "stores.postgres.schedule.ful is not a schedule key: use dump, full or differential"
        );
        // Restores run only where asked, at one time.
        assert!(entries(Role::Restore, "postgres", false, None).unwrap().is_empty());
        assert_eq!(entries(Role::Restore, "postgres", false, Some(&one)).unwrap()[0].action, Action::Restore);
        assert!(
            entries(Role::Restore, "postgres", false, Some(&both)).unwrap_err().contains("stores.postgres.schedule: with role restore")
        );
    }

    #[test]
    fn of_one_stores_due_jobs_the_full_backup_runs_and_the_differential_is_passed() {
        let lagos: Tz = "Africa/Lagos".parse().unwrap();
        let sunday = per_kind_entries();
        let at = |s: &str| utc(s).with_timezone(&lagos);
        let now = utc("2025-06-01T00:00:00Z");
        // Both of postgres's due at 01:00 Lagos; minio's later.
        let next = [at("2025-06-01T00:00:00Z"), at("2025-06-01T00:00:00Z"), at("2025-06-01T01:00:00Z")];
        assert_eq!(due(&sunday, &next, now), (vec![0], vec![1]));
        // A store due while another ran waits its turn: both overdue now, both run, in order.
        let next = [at("2025-06-01T00:00:00Z"), at("2025-06-02T00:00:00Z"), at("2025-05-31T23:59:00Z")];
        assert_eq!(due(&sunday, &next, now), (vec![0, 2], vec![]));
        let next = [at("2025-06-07T00:00:00Z"), at("2025-06-02T00:00:00Z"), at("2025-06-01T01:00:00Z")];
        assert_eq!(due(&sunday, &next, now), (vec![], vec![]));
    }

    fn per_kind_entries() -> Vec<Entry> {
        let mut all = entries(Role::Backup, "postgres", true, None).unwrap();
        all.extend(entries(Role::Backup, "minio", false, None).unwrap());
        all
    }
}
