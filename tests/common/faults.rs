//! Faults produced for real: a server that vanishes in the middle of a backup.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP relay to `127.0.0.1:target` that goes down for good (every connection cut, the port
/// closed) once `limit` bytes have come back from the server. Stops by itself after 120 s.
pub struct DyingRelay {
    pub port: u16,
    down: Arc<AtomicBool>,
}

impl DyingRelay {
    pub fn start(target: u16, limit: u64) -> DyingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let flag = down.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
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
                pump(server.try_clone().unwrap(), client.try_clone().unwrap(), true);
                pump(client, server, false);
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
