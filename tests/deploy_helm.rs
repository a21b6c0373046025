//! The Helm chart (deploy/helm/lifeboat): rendered with the real Helm library, checked against
//! Kubernetes' schemas and `helm lint --strict` by tests/helm/test_chart.py, which also runs this
//! build's binary on every rendered Lifeboat configuration, and the PostgreSQL sidecar's and restore
//! Job's on a real PostgreSQL (as root: a private read-only mount). Needs the tools venv and the helm
//! CLI that scripts/install-deps sets up.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn helm_chart_renders_validates_and_refuses() {
    let python = PathBuf::from(std::env::var("HOME").expect("HOME is not set")).join(".cache/lifeboat-tools/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/install-deps", python.display());
    let out = Command::new(&python)
        .arg("tests/helm/test_chart.py")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LIFEBOAT_BIN", env!("CARGO_BIN_EXE_lifeboat"))
        .output()
        .expect("running tests/helm/test_chart.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tests/helm/test_chart.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(!stdout.contains("skip "), "a chart test was skipped:\n{stdout}");
}
