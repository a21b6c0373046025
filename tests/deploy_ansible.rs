//! The backup-server playbook (deploy/ansible): tests/ansible/test_playbook.sh lints it, runs it
//! twice against this machine (the second run must change nothing), then logs in with each key
//! through a private sshd to prove what it can and cannot do, backs up and verifies through them
//! with this build's binary, and runs the cron lines. Needs root and the tools venv that
//! scripts/install-deps sets up (ansible-core, ansible-lint).

use std::process::Command;

#[test]
fn backup_server_playbook_runs_twice_and_each_key_can_only_what_it_should() {
    let out = Command::new("bash")
        .arg("tests/ansible/test_playbook.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LIFEBOAT_BIN", env!("CARGO_BIN_EXE_lifeboat"))
        .output()
        .expect("running tests/ansible/test_playbook.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tests/ansible/test_playbook.sh failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("all ansible tests passed"), "the script ended early:\n{stdout}\n{stderr}");
}
