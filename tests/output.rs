//! Snapshots of what an operator reads: `list` and `status`, as text and as JSON, over a server
//! holding a complete run, an interrupted one and two with a damaged manifest. Dates, sizes and
//! ages change from run to run and are redacted; everything else must not drift unnoticed.

mod common;

use common::*;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\d{4}-\d{2}-\d{2}(_\d+)?", "[ID]");
    s.add_filter(r"\d{4}-\d\d-\d\dT[0-9:.]+\+00:00", "[TIME]");
    s.add_filter(r"\[ID\]T[0-9:.]+\+00:00", "[TIME]");
    s.add_filter(r"\d+(\.\d)? (B|KiB|MiB|GiB|TiB)", "[SIZE]");
    s.add_filter(r#""(bytes|age_seconds|available_bytes|total_bytes)": \d+"#, r#""$1": [N]"#);
    s.add_filter(r#""(duration_seconds)": [0-9.e-]+"#, r#""$1": [N]"#);
    s.add_filter(r"snapshots-\d+", "snapshots-[PID]");
    s.add_filter(r"\d{8}T\d{6}Z", "[STAMP]");
    s.add_filter(&format!(r"\b{}\b", regex_escape(&lifeboat::deployment::host_name())), "[HOST]");
    s.add_filter(r"\d+\.\d h old", "[AGE] h old");
    s.add_filter(r"SHA256:[A-Za-z0-9+/]{43}", "SHA256:[FINGERPRINT]");
    s
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn list_and_status_read_the_same_in_text_and_json() {
    let case = Case::new("snapshots");
    seed_postgres(&case.db, 20);
    let backup = case.backup_config(&Transport::File);
    assert_ok(&lifeboat(&backup, &["backup"]));
    let today = case.runs(&backup)[0]["id"].as_str().unwrap().to_string();
    // An older run that was interrupted (no manifest) and one whose manifest is damaged.
    let interrupted = case.server_path.join("2020-01-01/postgres");
    std::fs::create_dir_all(&interrupted).unwrap();
    std::fs::write(interrupted.join("roles.sql.zst.age"), b"half").unwrap();
    let damaged = case.server_path.join("2020-01-02/postgres");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("manifest.json"), br#"{"format_version": 1, "store": "postgr"#).unwrap();
    // And a damaged run newer than the complete one, which status counts.
    let newer = case.server_path.join(format!("{today}_9/postgres"));
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("manifest.json"), br#"{"format_version": 7}"#).unwrap();
    // Signed, so what is shown is the format check's verdict; the older one is unsigned.
    case.sign_manifest(&newer);

    // A restore drill leaves its report in the run's folder; status shows it.
    let restore = case.restore_config(&Transport::File);
    assert_ok(&lifeboat(&restore, &["restore", "--yes"]));
    let reports: Vec<_> = std::fs::read_dir(case.server_path.join(&today).join("postgres"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("drill-"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");

    let list = lifeboat(&backup, &["list"]);
    assert_ok(&list);
    let list_json = lifeboat(&backup, &["--json", "list"]);
    assert_ok(&list_json);
    let status = lifeboat(&backup, &["status"]);
    assert_ok(&status);
    let status_json = lifeboat(&backup, &["--json", "status", "--max-age", "1d"]);
    assert_ok(&status_json);
    settings().bind(|| {
        insta::assert_snapshot!("list_text", stdout(&list));
        insta::assert_snapshot!("list_json", stdout(&list_json));
        insta::assert_snapshot!("status_text", stdout(&status));
        insta::assert_snapshot!("status_json", stdout(&status_json));
    });
    // The damaged run is named as such, never chosen, and verify reports it.
    assert!(stdout(&list).contains("NO (damaged)"), "{}", stdout(&list));
    let verify = lifeboat(&backup, &["verify", "--from", "2020-01-02"]);
    assert_fails(&verify, 1, "failed verification");
}
