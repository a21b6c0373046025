//! One module per command; each `run` returns a typed outcome or an error and prints nothing on
//! stdout. What `list`, `status` and `verify` found is one value, a [`Report`]: [`show`] prints it
//! as human lines or, with `--json`, as JSON, then says whether the command failed. Progress and
//! logs go to stderr.

pub mod backup;
pub mod daemon;
pub mod import;
pub mod keygen;
pub mod list;
pub mod prune;
pub mod restore;
pub mod serve;
pub mod status;
pub mod verify;

use crate::error::Result;

/// What a command found, in two views of one value: its `Serialize` form for `--json`, and the
/// lines an operator reads.
pub trait Report: serde::Serialize {
    /// The human lines, each ending in a newline, as printed on stdout.
    fn text(&self) -> String;

    /// Prints [`Report::text`] on stdout (a report may say on stderr that it found nothing).
    fn print_text(&self) {
        print!("{}", self.text());
    }

    /// The exit once the report is printed: an error when what was found is itself a failure
    /// (a stale store, a damaged run).
    fn verdict(&self) -> Result<()> {
        Ok(())
    }
}

/// The JSON view: pretty-printed, one trailing newline.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("command outcomes serialise") + "\n"
}

/// Prints a report as text or, with `--json`, as JSON on stdout, then returns its verdict: what
/// was found is printed even when the command fails because of it.
pub fn show(report: &impl Report, json: bool) -> Result<()> {
    if json {
        print!("{}", self::json(report));
    } else {
        report.print_text();
    }
    report.verdict()
}

/// The keys of a JSON object, sorted (whatever map serde_json was built with).
#[cfg(test)]
pub(crate) fn json_keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("a JSON object").keys().cloned().collect();
    keys.sort();
    keys
}
