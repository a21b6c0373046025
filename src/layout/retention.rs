//! Retention: which of one store's run folders `prune` keeps. A pure function of the runs' ids,
//! their states and today's date, so that it is table-tested without a server.
//!
//! The policy (`retention: keep_daily / keep_weekly / keep_monthly`), applied to one store's
//! *complete* runs, newest first (as restic's `forget` does):
//! - `keep_daily: N` keeps the newest complete run of each of the last N distinct days that have
//!   one; `keep_weekly: N` the same over ISO weeks (Monday to Sunday), `keep_monthly: N` over
//!   calendar months. Days are the run folders' dates, which are already in the configured
//!   timezone. A run kept by several rules is kept once. Days, weeks or months without a
//!   complete run are skipped, not counted: a week of failed backups never costs an old one.
//! - The newest complete run is always kept, whatever the numbers (even all zero).
//! - Every other complete run is removed.
//! - A run without a manifest (killed, failed) is removed once it is surely older than a day:
//!   its folder's date is two or more days before today. A younger one may still be running
//!   and is kept.
//! - A damaged run (a manifest that cannot be read or parsed, or that belongs to another run) is
//!   kept and named every time: its files may be all that is left of that day, and only a
//!   person can judge it. It never counts as a complete run, so it can never make `prune`
//!   remove a complete run the policy keeps.

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use super::RunId;

/// `retention:` of the configuration: how many daily, weekly and monthly runs `prune` keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "seven")]
    pub keep_daily: u32,
    #[serde(default = "four")]
    pub keep_weekly: u32,
    #[serde(default = "six")]
    pub keep_monthly: u32,
}

fn seven() -> u32 {
    7
}
fn four() -> u32 {
    4
}
fn six() -> u32 {
    6
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }
    }
}

/// What `prune` knows of a run before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Complete,
    Incomplete,
    Damaged,
}

/// What happens to a run, and why (shown by `prune` and in its JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept; the reasons, e.g. `newest, daily, weekly`.
    Keep(String),
    Remove(&'static str),
}

impl Verdict {
    pub fn removes(&self) -> bool {
        matches!(self, Verdict::Remove(_))
    }
}

/// Which day, ISO week or month a date falls in.
type Bucket = fn(NaiveDate) -> (i32, u32);

/// The verdict for each of one store's runs, in the order given.
pub fn plan(policy: &Retention, runs: &[(RunId, RunKind)], today: NaiveDate) -> Vec<Verdict> {
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); runs.len()];
    let mut complete: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].1 == RunKind::Complete).collect();
    complete.sort_by(|&a, &b| runs[b].0.cmp(&runs[a].0));
    if let Some(&newest) = complete.first() {
        reasons[newest].push("newest");
    }
    let rules: [(&'static str, u32, Bucket); 3] = [
        ("daily", policy.keep_daily, |d| (d.year(), d.ordinal())),
        ("weekly", policy.keep_weekly, |d| (d.iso_week().year(), d.iso_week().week())),
        ("monthly", policy.keep_monthly, |d| (d.year(), d.month())),
    ];
    for (name, keep, bucket_of) in rules {
        let mut left = keep;
        let mut last = None;
        for &i in &complete {
            let bucket = Some(bucket_of(runs[i].0.date));
            if left > 0 && bucket != last {
                reasons[i].push(name);
                left -= 1;
            }
            last = bucket;
        }
    }
    runs.iter()
        .zip(reasons)
        .map(|((id, kind), why)| match kind {
            RunKind::Complete if why.is_empty() => Verdict::Remove("not kept by the retention policy"),
            RunKind::Complete => Verdict::Keep(why.join(", ")),
            RunKind::Damaged => Verdict::Keep("damaged manifest: look at it, then remove it by hand".into()),
            RunKind::Incomplete if (today - id.date).num_days() >= 2 => {
                Verdict::Remove("no manifest (killed or failed) and older than a day")
            }
            RunKind::Incomplete => Verdict::Keep("no manifest yet, but less than a day old: it may be running".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn id(date: NaiveDate, seq: u32) -> RunId {
        RunId { date, seq }
    }

    fn policy(keep_daily: u32, keep_weekly: u32, keep_monthly: u32) -> Retention {
        Retention { keep_daily, keep_weekly, keep_monthly }
    }

    fn kept(runs: &[(RunId, RunKind)], policy: &Retention, today: NaiveDate) -> Vec<String> {
        let verdicts = plan(policy, runs, today);
        runs.iter().zip(verdicts).filter(|(_, v)| !v.removes()).map(|(r, _)| r.0.to_string()).collect()
    }

    /// The policy computed another way: group the complete runs by bucket, take the N newest
    /// buckets, keep the newest run of each.
    fn expected(runs: &[(RunId, RunKind)], p: &Retention, today: NaiveDate) -> BTreeSet<RunId> {
        let complete: Vec<&RunId> = runs.iter().filter(|r| r.1 == RunKind::Complete).map(|r| &r.0).collect();
        let mut keep = BTreeSet::new();
        let mut by = |n: u32, key: &dyn Fn(NaiveDate) -> String| {
            let mut buckets: BTreeMap<String, RunId> = BTreeMap::new();
            for r in &complete {
                let entry = buckets.entry(key(r.date)).or_insert_with(|| (*r).clone());
                if **r > *entry {
                    *entry = (*r).clone();
                }
            }
            keep.extend(buckets.into_values().rev().take(n as usize));
        };
        by(p.keep_daily, &|d| d.format("%Y-%m-%d").to_string());
        by(p.keep_weekly, &|d| format!("{}-W{:02}", d.iso_week().year(), d.iso_week().week()));
        by(p.keep_monthly, &|d| d.format("%Y-%m").to_string());
        if let Some(newest) = complete.iter().max() {
            keep.insert((*newest).clone());
        }
        for (r, kind) in runs {
            let young = (today - r.date).num_days() < 2;
            if *kind == RunKind::Damaged || (*kind == RunKind::Incomplete && young) {
                keep.insert(r.clone());
            }
        }
        keep
    }

    /// 400 simulated days of two stores: daily runs with gaps, second runs on some days, killed
    /// runs (some the newest of their day), a damaged manifest, and young incomplete runs.
    type Runs = Vec<(RunId, RunKind)>;

    fn simulated() -> (NaiveDate, Runs, Runs) {
        let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let today = start + chrono::Duration::days(399);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for n in 0..400u32 {
            let date = start + chrono::Duration::days(n as i64);
            // Store a: every day but every 17th; a second run every 7th day; a killed third run every 13th.
            if n % 17 != 5 {
                a.push((id(date, 1), RunKind::Complete));
                if n % 7 == 3 {
                    a.push((id(date, 2), RunKind::Complete));
                }
                if n % 13 == 0 {
                    a.push((id(date, 3), RunKind::Incomplete));
                }
            }
            // Store b: every other day, a killed run first on every 5th, a killed retry last on every 11th.
            if n % 2 == 0 {
                let mut seq = 1;
                if n % 5 == 0 {
                    b.push((id(date, seq), RunKind::Incomplete));
                    seq += 1;
                }
                b.push((id(date, seq), if n == 300 { RunKind::Damaged } else { RunKind::Complete }));
                if n % 11 == 0 {
                    b.push((id(date, seq + 1), RunKind::Incomplete));
                }
            }
        }
        // The last two days: a killed run of each store (may still be running: kept), and store
        // b's newest run is killed, so its newest complete one is older.
        b.push((id(today, 1), RunKind::Incomplete));
        a.push((id(today - chrono::Duration::days(1), 4), RunKind::Incomplete));
        (today, a, b)
    }

    #[test]
    fn four_hundred_days_of_two_stores_keep_exactly_the_policy() {
        let (today, a, b) = simulated();
        for p in [
            policy(7, 4, 6),
            policy(0, 0, 0),
            policy(3, 0, 0),
            policy(0, 5, 0),
            policy(0, 0, 12),
            policy(30, 10, 13),
            policy(1000, 0, 0),
            policy(1, 1, 1),
        ] {
            for runs in [&a, &b] {
                let got: BTreeSet<RunId> = kept(runs, &p, today).iter().map(|s| RunId::parse(s).unwrap()).collect();
                assert_eq!(got, expected(runs, &p, today), "policy {p:?}");
            }
        }
        // keep_daily beyond the number of days keeps one complete run per day that has one: the
        // newest, so the earlier run of a day with two goes.
        let days: BTreeSet<NaiveDate> = a.iter().filter(|r| r.1 == RunKind::Complete).map(|r| r.0.date).collect();
        let verdicts = plan(&policy(1000, 0, 0), &a, today);
        let kept_complete: Vec<&RunId> =
            a.iter().zip(&verdicts).filter(|(r, v)| r.1 == RunKind::Complete && !v.removes()).map(|(r, _)| &r.0).collect();
        assert_eq!(kept_complete.len(), days.len());
        assert!(
            verdicts
                .iter()
                .zip(&a)
                .any(|(v, r)| r.0.seq == 1 && r.1 == RunKind::Complete && v.removes() && r.0.date.to_string() == "2025-01-04")
        );
    }

    #[test]
    fn the_default_policy_over_the_simulation_written_out() {
        let (today, _, b) = simulated();
        // today is 2026-02-04 (a Wednesday); store b runs on even day numbers, day 398 = 2026-02-03.
        let got = kept(&b, &policy(7, 4, 6), today);
        assert_eq!(
            got,
            [
                "2025-09-30",   // monthly (September; the 6th month back)
                "2025-10-28_2", // damaged (day 300, after a killed run): kept, never counted
                "2025-10-30",   // monthly
                "2025-11-29",   // monthly
                "2025-12-31",   // monthly
                "2026-01-18",   // weekly (ISO week 2026-W03, the 4th back)
                "2026-01-22",   // daily (the 7th back)
                "2026-01-24",   // daily, weekly (W04)
                "2026-01-26_2", // daily: the newest of its day (the first run was killed)
                "2026-01-28",   // daily
                "2026-01-30",   // daily, monthly (January)
                "2026-02-01",   // daily, weekly (W05); its killed retry (_2) goes
                "2026-02-03",   // newest, daily, weekly (W06), monthly
                "2026-02-04",   // killed but today: may still be running
            ]
        );
    }

    #[test]
    fn the_newest_complete_run_survives_a_policy_of_zeros_and_damage() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let today = d("2026-03-10");
        let runs = vec![
            (id(d("2026-03-01"), 1), RunKind::Complete),
            (id(d("2026-03-05"), 1), RunKind::Complete),
            (id(d("2026-03-08"), 1), RunKind::Incomplete),
            (id(d("2026-03-09"), 1), RunKind::Damaged),
            (id(d("2026-03-09"), 2), RunKind::Incomplete),
        ];
        let verdicts = plan(&policy(0, 0, 0), &runs, today);
        assert_eq!(verdicts[0], Verdict::Remove("not kept by the retention policy"));
        assert_eq!(verdicts[1], Verdict::Keep("newest".into()));
        assert!(verdicts[2].removes(), "two days old without a manifest");
        assert!(!verdicts[3].removes() && !verdicts[4].removes());
        // One daily slot: the damaged run of the 9th does not take it from the 5th.
        let verdicts = plan(&policy(1, 0, 0), &runs, today);
        assert_eq!(verdicts[1], Verdict::Keep("newest, daily".into()));
        assert!(plan(&policy(0, 0, 0), &[], today).is_empty());
    }
}
