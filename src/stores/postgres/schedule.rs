//! Which backup a differential run makes when `--type` is not given: full when the repository
//! has none, full on the days the `full` schedule names (weekly on Sunday by default), otherwise
//! differential. Only the day fields of the cron expression matter here: the run is already
//! happening, the question is only what kind it is today.

use chrono::{Datelike, NaiveDate};

use crate::stores::{BackupKind, Schedule};

/// SPEC's default: a full backup every Sunday at 01:00, a differential the other days.
pub const DEFAULT_FULL: &str = "0 1 * * 0";

/// The kind to make, and why (for the log).
pub fn choose(requested: Option<BackupKind>, has_full: bool, schedule: Option<&Schedule>, today: NaiveDate) -> (BackupKind, String) {
    match (requested, has_full) {
        (Some(BackupKind::Full), _) => (BackupKind::Full, "--type full".into()),
        (Some(BackupKind::Diff), true) => (BackupKind::Diff, "--type diff".into()),
        (_, false) => (BackupKind::Full, "the repository has no full backup yet".into()),
        (None, true) => {
            let full = full_cron(schedule);
            if day_matches(full, today).unwrap_or(false) {
                (BackupKind::Full, format!("today matches the full schedule `{full}`"))
            } else {
                (BackupKind::Diff, format!("today does not match the full schedule `{full}`"))
            }
        }
    }
}

/// The cron expression of full backups: `schedule.full`, or the default.
pub fn full_cron(schedule: Option<&Schedule>) -> &str {
    match schedule {
        Some(Schedule::PerKind(kinds)) => kinds.get("full").map(String::as_str).unwrap_or(DEFAULT_FULL),
        _ => DEFAULT_FULL,
    }
}

const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Whether `day` is one the five-field cron expression runs on; None when it is not valid cron.
/// As in cron, when both day-of-month and day-of-week are restricted, either may match.
pub fn day_matches(cron: &str, day: NaiveDate) -> Option<bool> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
        return None;
    };
    field_matches(minute, 0, 0, 59, &[])?;
    field_matches(hour, 0, 0, 23, &[])?;
    let month_ok = field_matches(month, day.month(), 1, 12, MONTHS)?;
    let dom_ok = field_matches(dom, day.day(), 1, 31, &[])?;
    let weekday = day.weekday().num_days_from_sunday();
    // 7 is Sunday too.
    let dow_ok = field_matches(dow, weekday, 0, 7, DAYS)? || (weekday == 0 && field_matches(dow, 7, 0, 7, DAYS)?);
    let days_ok = match (dom == "*", dow == "*") {
        (false, false) => dom_ok || dow_ok,
        _ => dom_ok && dow_ok,
    };
    Some(month_ok && days_ok)
}

/// One cron field (`*`, `5`, `1-5`, `*/2`, `1-5/2`, `mon`, lists of these) against `value`.
fn field_matches(field: &str, value: u32, min: u32, max: u32, names: &[&str]) -> Option<bool> {
    let number = |s: &str| -> Option<u32> {
        let n = match names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            Some(i) => i as u32 + min,
            None => s.parse().ok()?,
        };
        (min..=max).contains(&n).then_some(n)
    };
    let mut matched = false;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0)?),
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(range)?, number(range)?),
            },
        };
        matched |= value >= low && value <= high && (value - low).is_multiple_of(step);
    }
    Some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn cron_day_fields() {
        // 2025-06-01 is a Sunday, 2025-06-02 a Monday.
        for (cron, day, expected) in [
            ("0 1 * * 0", "2025-06-01", true),
            ("0 1 * * 0", "2025-06-02", false),
            ("0 1 * * 7", "2025-06-01", true),
            ("0 1 * * sun", "2025-06-01", true),
            ("0 1 * * 1-6", "2025-06-02", true),
            ("0 1 * * 1-6", "2025-06-01", false),
            ("0 1 1 * *", "2025-06-01", true),
            ("0 1 1 * *", "2025-06-02", false),
            ("0 1 1 * 1", "2025-06-02", true),
            ("0 1 */2 * *", "2025-06-03", true),
            ("0 1 */2 * *", "2025-06-02", false),
            ("0 1 * jan,jun *", "2025-06-02", true),
            ("0 1 * 1-5 *", "2025-06-02", false),
        ] {
            assert_eq!(day_matches(cron, date(day)), Some(expected), "{cron} on {day}");
        }
        for bad in ["0 1 * *", "0 1 * * 8", "0 1 * * x", "60 1 * * 0", "0 1 */0 * *"] {
            assert_eq!(day_matches(bad, date("2025-06-01")), None, "{bad}");
        }
    }

    #[test]
    fn the_kind_follows_the_request_then_the_repository_then_the_schedule() {
        let sunday = date("2025-06-01");
        let monday = date("2025-06-02");
        let kinds = |full: &str| Schedule::PerKind([("full".to_string(), full.to_string())].into());
        assert_eq!(choose(Some(BackupKind::Full), true, None, monday).0, BackupKind::Full);
        assert_eq!(choose(Some(BackupKind::Diff), true, None, sunday).0, BackupKind::Diff);
        assert_eq!(choose(Some(BackupKind::Diff), false, None, monday).0, BackupKind::Full);
        assert_eq!(choose(None, false, None, monday).0, BackupKind::Full);
        assert_eq!(choose(None, true, None, sunday).0, BackupKind::Full);
        assert_eq!(choose(None, true, None, monday).0, BackupKind::Diff);
        assert_eq!(choose(None, true, Some(&kinds("0 1 * * 1")), monday).0, BackupKind::Full);
        assert_eq!(choose(None, true, Some(&kinds("0 1 * * 1")), sunday).0, BackupKind::Diff);
    }
}
