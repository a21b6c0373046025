//! InfluxDB 1.x test helpers: the HTTP API through curl, and the two things every test that
//! restores into the shared influxd needs (one restore at a time; the RPC port really serving).

use std::process::{Command, Stdio};

use super::ports::{INFLUX_HTTP_PORT, INFLUX_RPC_PORT};
use super::servers::{ensure_server, state};

/// The shared influxd's HTTP API.
pub fn http() -> String {
    format!("http://127.0.0.1:{INFLUX_HTTP_PORT}")
}

/// The shared influxd's RPC address (backup and restore).
pub fn rpc() -> String {
    format!("127.0.0.1:{INFLUX_RPC_PORT}")
}

/// Runs one InfluxQL statement through the HTTP API and returns the JSON answer.
pub fn influx_at(http: &str, db: Option<&str>, q: &str) -> serde_json::Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-XPOST", &format!("{http}/query"), "--data-urlencode", &format!("q={q}"), "--data-urlencode", "epoch=ns"]);
    if let Some(db) = db {
        cmd.args(["--data-urlencode", &format!("db={db}")]);
    }
    let out = cmd.output().expect("run curl");
    assert!(out.status.success(), "query failed: {q}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{q}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(v["results"][0]["error"].is_null() && v["error"].is_null(), "{q}: {v}");
    v
}

pub fn influx(db: Option<&str>, q: &str) -> serde_json::Value {
    ensure_server("influxdb");
    influx_at(&http(), db, q)
}

/// Writes line protocol (timestamps in seconds) into `db`/`rp`.
pub fn write_at(http: &str, db: &str, rp: Option<&str>, lines: &str) {
    let mut url = format!("{http}/write?db={db}&precision=s");
    if let Some(rp) = rp {
        url.push_str(&format!("&rp={rp}"));
    }
    let mut child = Command::new("curl")
        .args(["-sS", "-f", "-XPOST", &url, "--data-binary", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "write to {db} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

pub fn write(db: &str, rp: Option<&str>, lines: &str) {
    write_at(&http(), db, rp, lines)
}

/// influxd 1.6 imports a restore's metadata by copying the whole metastore, changing the copy and
/// writing it back, so a database or shard group created meanwhile by another test is lost and its
/// shard id can be handed out twice. Tests sharing the server therefore run one at a time: the
/// mutex orders this binary's tests, the file lock beside the server's state other test processes
/// using the same server (a second `cargo test` of another checkout).
pub struct Serial {
    _file: std::fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

pub fn serial() -> Serial {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    std::fs::create_dir_all(state()).unwrap();
    let path = state().join("influxdb-tests.lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
    file.lock().unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    Serial { _file: file, _guard: guard }
}

/// Whether influxd's snapshot service, which `influxd backup` and `influxd restore` talk to on the
/// RPC port, answers a request (the shard paths of every database). A connection alone proves
/// little: influxd accepts connections on that port before its services are registered there.
pub fn snapshot_service_answers(rpc: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(rpc)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    // Mux header 3 (the snapshot service), request type 3 (database info), the request as JSON.
    conn.write_all(b"\x03\x03{\"BackupDatabase\":\"\"}\n")?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    if answer.starts_with(b"{\"Paths\"") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected answer {:?}", String::from_utf8_lossy(&answer[..answer.len().min(80)]))))
    }
}

/// Waits (up to a minute) until the RPC port serves backups and restores, not just HTTP.
pub fn wait_for_rpc(rpc: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Err(e) = snapshot_service_answers(rpc) {
        assert!(std::time::Instant::now() < deadline, "influxd's RPC port {rpc} does not serve backups and restores: {e}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
