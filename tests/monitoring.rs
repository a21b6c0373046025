//! Metrics and alerts after each job, against a real Prometheus Pushgateway and checked with
//! Prometheus' own promtool: the textfile and the pushed metrics, a failure that keeps the last
//! success time, the webhook body on failure, and the sample alert rules (parsed and unit-tested).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn pushgateway() -> String {
    format!("http://127.0.0.1:{PUSHGATEWAY_PORT}")
}

fn promtool() -> PathBuf {
    let tools = std::env::var("LIFEBOAT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lifeboat-tools"));
    let bin = tools.join("promtool-2.53.3+ds1-2/usr/bin/promtool");
    assert!(bin.exists(), "{} missing: run scripts/install-deps", bin.display());
    bin
}

#[test]
fn the_sample_alert_rules_parse_and_fire_as_documented() {
    let dir = repo().join("deploy/prometheus");
    for args in [&["check", "rules", "lifeboat-alerts.yaml"][..], &["test", "rules", "lifeboat-alerts.test.yaml"][..]] {
        let out = Command::new(promtool()).args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An HTTP endpoint that answers 200 and hands over each request body (a webhook receiver).
fn webhook_receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/hooks/T0KEN-secret", listener.local_addr().unwrap().port());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (url, rx)
}

/// The value of `metric` with `store="<store>"` in a Prometheus text exposition.
fn value(text: &str, metric: &str, store: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&format!("store=\"{store}\"")) && l.contains("role=\"backup\""))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

fn pushed() -> String {
    let out = Command::new("curl").args(["-fsS", &format!("{}/metrics", pushgateway())]).output().unwrap();
    assert!(out.status.success(), "reading the Pushgateway: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn each_backup_publishes_metrics_and_a_failure_calls_the_webhook_and_keeps_the_last_success() {
    ensure_server("pushgateway");
    let case = Case::new("metrics");
    seed_postgres(&case.db, 50);
    let textfiles = case.dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    let (hook, calls) = webhook_receiver();
    let hook_file = case.dir.path().join("webhook-url");
    std::fs::write(&hook_file, format!("{hook}\n")).unwrap();
    let monitoring = format!(
        "monitoring:\n  textfile_dir: {}\n  pushgateway_url: {}\n  webhook_url_file: {}\n",
        textfiles.display(),
        pushgateway(),
        hook_file.display()
    );
    let backup = case
        .write_config("monitored.yaml", &format!("{}{monitoring}", std::fs::read_to_string(case.backup_config(&Transport::File)).unwrap()));

    assert_ok(&lifeboat(&backup, &["backup"]));
    let file = textfiles.join("lifeboat_backup_postgres.prom");
    let text = std::fs::read_to_string(&file).unwrap();
    let lint = Command::new(promtool()).args(["check", "metrics"]).stdin(std::fs::File::open(&file).unwrap()).output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert_eq!(value(&text, "lifeboat_last_result", "postgres"), Some(1.0), "{text}");
    let success = value(&text, "lifeboat_last_success_timestamp_seconds", "postgres").expect("a success time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - success).abs() < 120.0, "{success} is not now ({now})");
    assert!(value(&text, "lifeboat_last_stored_bytes", "postgres").unwrap() > 0.0, "{text}");
    let gateway = pushed();
    assert_eq!(value(&gateway, "lifeboat_last_result", "postgres"), Some(1.0), "{gateway}");
    assert_eq!(value(&gateway, "lifeboat_last_success_timestamp_seconds", "postgres"), Some(success));
    assert!(calls.recv_timeout(Duration::from_millis(500)).is_err(), "the webhook is for failures unless webhook_on_success");

    // A failed backup: the result drops to 0, the last success stays, the webhook is called.
    psql("postgres", &format!("DROP DATABASE \"{}\" WITH (FORCE)", case.db));
    let out = lifeboat(&backup, &["backup"]);
    let line = assert_fails(&out, 1, "does not exist");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(value(&text, "lifeboat_last_result", "postgres"), Some(0.0), "{text}");
    assert_eq!(value(&text, "lifeboat_last_success_timestamp_seconds", "postgres"), Some(success), "{text}");
    assert!(value(&text, "lifeboat_last_attempt_timestamp_seconds", "postgres").unwrap() >= success);
    let gateway = pushed();
    assert_eq!(value(&gateway, "lifeboat_last_result", "postgres"), Some(0.0), "{gateway}");
    assert_eq!(value(&gateway, "lifeboat_last_success_timestamp_seconds", "postgres"), Some(success), "{gateway}");
    let call = calls.recv_timeout(Duration::from_secs(10)).expect("the webhook was called");
    assert_eq!(call["result"], "failed", "{call}");
    assert_eq!(call["role"], "backup");
    assert_eq!(call["stores"][0]["store"], "postgres");
    assert!(line.contains(call["stores"][0]["error"].as_str().unwrap()), "{call} / {line}");
    assert!(call["text"].as_str().unwrap().contains("FAILED for postgres"), "{call}");
    assert!(!stderr(&out).contains("T0KEN"), "the webhook URL leaked into the log");

    // A backup server that cannot be reached fails every store before any store starts: that is
    // published too, not only printed.
    let unreachable = case.write_config(
        "unreachable.yaml",
        &std::fs::read_to_string(&backup).unwrap().replace(
            &format!("url: file://{}", case.server_path.display()),
            &format!(
                "url: ssh://root@127.0.0.1:{CLOSED_SSH_PORT}/nowhere\n  ssh_key_file: {}\n  known_hosts_file: {}",
                state().join("sshd/client_key").display(),
                state().join("sshd/known_hosts").display()
            ),
        ),
    );
    let out = lifeboat(&unreachable, &["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(value(&text, "lifeboat_last_result", "postgres"), Some(0.0), "{text}");
    let call = calls.recv_timeout(Duration::from_secs(10)).expect("the webhook was called for an unreachable server");
    assert_eq!((call["result"].as_str(), call["stores"][0]["store"].as_str()), (Some("failed"), Some("postgres")), "{call}");
}

#[test]
fn bad_monitoring_settings_are_refused_naming_the_key() {
    let case = Case::new("metrics_config");
    let base = std::fs::read_to_string(case.backup_config(&Transport::File)).unwrap();
    for (block, needle) in [
        ("monitoring:\n  pushgateway_url: pushgateway:9091\n", "monitoring.pushgateway_url"),
        ("monitoring:\n  webhook_on_success: true\n", "webhook_url_file"),
        ("monitoring:\n  textfile: /tmp/x\n", "textfile"),
    ] {
        let config = case.write_config("bad.yaml", &format!("{base}{block}"));
        assert_fails(&lifeboat(&config, &["backup"]), 2, needle);
    }
}
