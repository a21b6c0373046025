//! Faults produced for real: a server that vanishes in the middle of a backup.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A relay's listening socket on a free loopback port, polled (non-blocking) so its thread can stop.
fn relay_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    (listener, port)
}

/// The next client and a fresh connection to `target` for it; None (after a short wait) when
/// no client is waiting.
fn accept_pair(listener: &TcpListener, target: u16) -> Option<(TcpStream, TcpStream)> {
    let Ok((client, _)) = listener.accept() else {
        std::thread::sleep(Duration::from_millis(5));
        return None;
    };
    client.set_nonblocking(false).unwrap();
    Some((client, TcpStream::connect(("127.0.0.1", target)).unwrap()))
}

/// A TCP relay to `127.0.0.1:target` that goes down for good (every connection cut, the port
/// closed) once `limit` bytes have passed one way. Stops by itself after 120 s.
pub struct DyingRelay {
    pub port: u16,
    down: Arc<AtomicBool>,
}

impl DyingRelay {
    /// Goes down once `limit` bytes have come back from the server (a dump being read).
    pub fn start(target: u16, limit: u64) -> DyingRelay {
        DyingRelay::start_counting(target, limit, false)
    }

    /// Goes down once `limit` bytes have gone towards the server (an upload being written).
    pub fn start_on_upload(target: u16, limit: u64) -> DyingRelay {
        DyingRelay::start_counting(target, limit, true)
    }

    fn start_counting(target: u16, limit: u64, uploads: bool) -> DyingRelay {
        let (listener, port) = relay_listener();
        let sent = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let flag = down.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let Some((client, server)) = accept_pair(&listener, target) else {
                    continue;
                };
                open.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let pump = |mut from: TcpStream, mut to: TcpStream, counted: bool| {
                    let (sent, down, open) = (sent.clone(), flag.clone(), open.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if counted && sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > limit {
                                down.store(true, Ordering::Relaxed);
                                for s in open.lock().unwrap().iter() {
                                    let _ = s.shutdown(Shutdown::Both);
                                }
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                };
                pump(server.try_clone().unwrap(), client.try_clone().unwrap(), !uploads);
                pump(client, server, uploads);
            }
            flag.store(true, Ordering::Relaxed);
            for s in open.lock().unwrap().iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
            // Dropping the listener closes the port: reconnecting is refused from now on.
        });
        DyingRelay { port, down }
    }

    /// Whether the limit was reached (the server "went away").
    pub fn went_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// A TCP relay to `127.0.0.1:target` that, once `limit` bytes have gone towards the server,
/// stops forwarding in both directions without closing anything: a link cut somewhere between,
/// as a firewall dropping packets makes it. The sockets stay open until the relay is dropped.
pub struct StallingRelay {
    pub port: u16,
    stalled: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl StallingRelay {
    pub fn start(target: u16, limit: u64) -> StallingRelay {
        let (listener, port) = relay_listener();
        let sent = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (flag, finished) = (stalled.clone(), done.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !finished.load(Ordering::Relaxed) {
                let Some((client, server)) = accept_pair(&listener, target) else {
                    continue;
                };
                held.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let pump = |mut from: TcpStream, mut to: TcpStream, counted: bool| {
                    let (sent, stalled) = (sent.clone(), flag.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || stalled.load(Ordering::Relaxed) {
                                break;
                            }
                            if counted && sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > limit {
                                stalled.store(true, Ordering::Relaxed);
                                break;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        // Nothing is shut down: the peer waits for bytes that never come.
                    });
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), true);
                pump(server, client, false);
            }
            drop(held);
        });
        StallingRelay { port, stalled, done }
    }

    /// Whether the limit was reached (the link "went silent").
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

impl Drop for StallingRelay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// A folder of PostgreSQL client tools in which `tool` writes its pid to `<bin>/<tool>.pid`,
/// passes `limit` bytes of the real tool's output (or reads nothing, for pg_restore) and then
/// hangs: a job to interrupt mid-stream. Use as `bin_dir`.
pub fn stalling_pg_tool(dir: &std::path::Path, tool: &str, limit: u64) -> std::path::PathBuf {
    let bin = dir.join("stalling-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for other in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        if other != tool {
            let _ = std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{other}"), bin.join(other));
        }
    }
    let real = format!("/usr/lib/postgresql/15/bin/{tool}");
    let feed = if tool == "pg_restore" { String::new() } else { format!("{real} \"$@\" | head -c {limit}\n") };
    let script = format!(
        "#!/bin/bash\nif [ \"$1\" = --version ]; then exec {real} --version; fi\necho $$ > {pid}\n{feed}exec sleep 120\n",
        pid = bin.join(format!("{tool}.pid")).display()
    );
    let path = bin.join(tool);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

/// Waits up to `limit` for `cond`, polling; false if it never held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Whether a process is gone (or only a zombie waiting to be reaped).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A small tmpfs mounted at `path` (a full disk on demand), unmounted when dropped.
pub struct Tmpfs {
    pub path: std::path::PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).output().unwrap();
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { path: path.to_path_buf() }
    }

    /// Fills the file system up to `leave` free bytes with `<path>/filler`.
    pub fn fill(&self, leave: u64) {
        let out = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(&self.path).output().unwrap();
        let avail: u64 = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
        std::fs::write(self.path.join("filler"), vec![0u8; avail.saturating_sub(leave) as usize]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
