//! After each job: Prometheus metrics and an optional webhook, so that a failure reaches a person.
//!
//! Metrics (text format, one set per role and store, labels `role` and `store`):
//! `lifeboat_last_attempt_timestamp_seconds`, `lifeboat_last_success_timestamp_seconds`,
//! `lifeboat_last_duration_seconds`, `lifeboat_last_read_bytes`, `lifeboat_last_stored_bytes` and
//! `lifeboat_last_result` (1 ok, 0 failed). They go to a file per role and store in
//! `monitoring.textfile_dir` (node_exporter's textfile collector; written to a temporary name and
//! renamed, so the collector never reads half a file), and/or to a Pushgateway
//! (`monitoring.pushgateway_url`, grouping key `job=lifeboat, role, store`). A failed job keeps
//! the last success time of the one before: read back from the file, and for the Pushgateway by
//! POST, which replaces only the metrics it sends.
//!
//! The webhook (`monitoring.webhook_url_file`: the URL is read from a file, as it usually holds
//! a token) gets a short JSON body when a job fails, and when it succeeds if
//! `webhook_on_success` is set. Publishing never changes a job's result: a metrics or webhook
//! failure is logged as a warning, the job's own exit code stands.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::deployment::Role;
use crate::error::{Error, Result};
use crate::secret::SecretFile;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// A folder read by node_exporter's textfile collector.
    pub textfile_dir: Option<PathBuf>,
    /// e.g. `http://pushgateway.monitoring:9091`.
    pub pushgateway_url: Option<String>,
    /// A file holding the webhook URL.
    pub webhook_url_file: Option<PathBuf>,
    /// Also call the webhook when a job succeeds.
    #[serde(default)]
    pub webhook_on_success: bool,
}

impl MonitoringConfig {
    /// Checks what can be checked without network (called by `Config::parse`).
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(url) = &self.pushgateway_url {
            let ok = url::Url::parse(url).ok().is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                return Err(format!("monitoring.pushgateway_url `{url}` is not an http(s) URL; expected e.g. http://pushgateway:9091"));
            }
        }
        if self.webhook_on_success && self.webhook_url_file.is_none() {
            return Err("monitoring.webhook_on_success is set but monitoring.webhook_url_file is not".into());
        }
        Ok(())
    }
}

/// What one store's job did, for metrics and the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub store: String,
    pub ok: bool,
    /// The backup id or label, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    pub read_bytes: u64,
    pub stored_bytes: u64,
}

impl JobResult {
    /// A job that succeeded with backup `backup`, having taken `seconds`.
    pub fn succeeded(store: &str, started_at: DateTime<Utc>, backup: &str, seconds: f64, read_bytes: u64, stored_bytes: u64) -> JobResult {
        JobResult {
            store: store.to_string(),
            ok: true,
            backup: Some(backup.to_string()),
            error: None,
            started_at,
            seconds,
            read_bytes,
            stored_bytes,
        }
    }

    /// A job that failed (or was stopped) with `e`.
    pub fn failed(store: &str, started_at: DateTime<Utc>, e: &Error) -> JobResult {
        JobResult {
            store: store.to_string(),
            ok: false,
            backup: None,
            error: Some(e.to_string()),
            started_at,
            seconds: (Utc::now() - started_at).num_milliseconds() as f64 / 1000.0,
            read_bytes: 0,
            stored_bytes: 0,
        }
    }
}

/// Publishes the results of one command's jobs as configured; never fails the job.
pub async fn publish(config: &MonitoringConfig, role: Role, results: &[JobResult]) {
    if results.is_empty() {
        return;
    }
    let now = Utc::now();
    if let Some(dir) = &config.textfile_dir {
        for r in results {
            if let Err(e) = write_textfile(dir, role, r, now) {
                tracing::warn!("{}: metrics not written: {e}", r.store);
            }
        }
    }
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(20)).build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            return tracing::warn!("metrics and webhook not sent: cannot set up the HTTP client: {e}");
        }
    };
    if let Some(url) = &config.pushgateway_url {
        for r in results {
            if let Err(e) = push(&client, url, role, r, now).await {
                tracing::warn!("{}: metrics not pushed: {e}", r.store);
            }
        }
    }
    if let Some(file) = &config.webhook_url_file {
        let failed = results.iter().any(|r| !r.ok);
        if (failed || config.webhook_on_success)
            && let Err(e) = call_webhook(&client, file, role, results, now).await
        {
            tracing::warn!("webhook not called: {e}");
        }
    }
}

/// The metrics of one job, with the last success time `last_success` (this job's, or kept).
pub fn render(role: Role, r: &JobResult, now: DateTime<Utc>, last_success: Option<f64>) -> String {
    let labels = format!("role=\"{role}\",store=\"{}\"", r.store);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}");
    };
    metric("lifeboat_last_attempt_timestamp_seconds", "When the last job of this role and store finished.", secs(now));
    if let Some(t) = last_success {
        metric("lifeboat_last_success_timestamp_seconds", "When the last successful job of this role and store finished.", t);
    }
    metric("lifeboat_last_result", "1 if the last job succeeded, 0 if it failed.", if r.ok { 1.0 } else { 0.0 });
    metric("lifeboat_last_duration_seconds", "How long the last job took.", r.seconds);
    metric("lifeboat_last_read_bytes", "Plain bytes the last job read.", r.read_bytes as f64);
    metric("lifeboat_last_stored_bytes", "Bytes the last job stored or fetched.", r.stored_bytes as f64);
    out
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn textfile_path(dir: &Path, role: Role, store: &str) -> PathBuf {
    dir.join(format!("lifeboat_{role}_{store}.prom"))
}

/// The last success time in an earlier metrics file, if it holds one.
fn previous_success(text: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with("lifeboat_last_success_timestamp_seconds{"))?.rsplit(' ').next()?.parse().ok()
}

fn write_textfile(dir: &Path, role: Role, r: &JobResult, now: DateTime<Utc>) -> Result<()> {
    let path = textfile_path(dir, role, &r.store);
    let last_success = match r.ok {
        true => Some(secs(now)),
        false => std::fs::read_to_string(&path).ok().as_deref().and_then(previous_success),
    };
    let text = render(role, r, now, last_success);
    let tmp = dir.join(format!(".lifeboat_{role}_{}.prom.tmp", r.store));
    std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

async fn push(client: &reqwest::Client, base: &str, role: Role, r: &JobResult, now: DateTime<Utc>) -> Result<()> {
    let url = format!("{}/metrics/job/lifeboat/role/{role}/store/{}", base.trim_end_matches('/'), r.store);
    // PUT replaces the group (success); POST replaces only the metrics sent, so a failure keeps
    // the last success time pushed before.
    let (request, last_success) = match r.ok {
        true => (client.put(&url), Some(secs(now))),
        false => (client.post(&url), None),
    };
    let response = request.body(render(role, r, now, last_success)).send().await.map_err(|e| http_error(base, e))?;
    if !response.status().is_success() {
        return Err(Error::store("metrics", format!("the Pushgateway at {base} answered {}", response.status())));
    }
    Ok(())
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    text: String,
    result: &'static str,
    role: String,
    host: String,
    finished_at: String,
    stores: &'a [JobResult],
}

async fn call_webhook(client: &reqwest::Client, file: &Path, role: Role, results: &[JobResult], now: DateTime<Utc>) -> Result<()> {
    let url = SecretFile::new("webhook URL", file).read()?;
    let url = url.trim();
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.store.as_str()).collect();
    let host = crate::deployment::host_name();
    let text = match failed.is_empty() {
        true => format!("Lifeboat {role} on {host} succeeded: {}", results.iter().map(|r| r.store.as_str()).collect::<Vec<_>>().join(", ")),
        false => format!(
            "Lifeboat {role} on {host} FAILED for {}: {}",
            failed.join(", "),
            results.iter().find_map(|r| r.error.as_deref()).unwrap_or("see the job's log")
        ),
    };
    let body = WebhookBody {
        text,
        result: if failed.is_empty() { "ok" } else { "failed" },
        role: role.to_string(),
        host,
        finished_at: now.to_rfc3339(),
        stores: results,
    };
    // The URL holds a token: errors name the file, never the URL.
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("serialises"))
        .send()
        .await
        .map_err(|e| Error::store("webhook", format!("the URL in {} did not answer ({})", file.display(), e.without_url())))?;
    if !response.status().is_success() {
        return Err(Error::store("webhook", format!("the URL in {} answered {}", file.display(), response.status())));
    }
    Ok(())
}

fn http_error(base: &str, e: reqwest::Error) -> Error {
    Error::store("metrics", format!("cannot reach the Pushgateway at {base} ({})", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ok: bool) -> JobResult {
        JobResult {
            store: "postgres".into(),
            ok,
            backup: None,
            error: (!ok).then(|| "pg_dump failed".into()),
            started_at: Utc::now(),
            seconds: 12.5,
            read_bytes: 1000,
            stored_bytes: 400,
        }
    }

    #[test]
    fn a_failed_job_keeps_the_last_success_time_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = DateTime::parse_from_rfc3339("2026-11-24T01:00:00Z").unwrap().to_utc();
        write_textfile(dir.path(), Role::Backup, &job(true), t1).unwrap();
        let t2 = DateTime::parse_from_rfc3339("2026-11-25T01:00:00Z").unwrap().to_utc();
        write_textfile(dir.path(), Role::Backup, &job(false), t2).unwrap();
        let text = std::fs::read_to_string(textfile_path(dir.path(), Role::Backup, "postgres")).unwrap();
        assert!(text.contains("lifeboat_last_success_timestamp_seconds{role=\"backup\",store=\"postgres\"} 1795482000\n"), "{text}");
        assert!(text.contains("lifeboat_last_attempt_timestamp_seconds{role=\"backup\",store=\"postgres\"} 1795568400\n"), "{text}");
        assert!(text.contains("lifeboat_last_result{role=\"backup\",store=\"postgres\"} 0\n"), "{text}");
        // No earlier success at all: the metric is absent, never zero (which would read as 1970).
        let fresh = tempfile::tempdir().unwrap();
        write_textfile(fresh.path(), Role::Backup, &job(false), t2).unwrap();
        let text = std::fs::read_to_string(textfile_path(fresh.path(), Role::Backup, "postgres")).unwrap();
        assert!(!text.contains("lifeboat_last_success_timestamp_seconds{"), "{text}");
    }

    #[test]
    fn settings_are_checked() {
        let bad = MonitoringConfig { pushgateway_url: Some("pushgateway:9091".into()), ..Default::default() };
        assert!(bad.check().unwrap_err().contains("monitoring.pushgateway_url"));
        let bad = MonitoringConfig { webhook_on_success: true, ..Default::default() };
        assert!(bad.check().unwrap_err().contains("webhook_url_file"));
    }
}
