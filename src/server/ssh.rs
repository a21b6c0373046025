//! `ssh://user@host:port/path`: a plain OpenSSH server, spoken to over SFTP.
//!
//! The transport is the system's OpenSSH client (`ssh -s sftp`), run with no user configuration,
//! the configured key only, and `StrictHostKeyChecking=yes` against the configured known_hosts:
//! an unknown or changed host key is refused. OpenSSH's client is the most widely audited SSH
//! implementation and is present wherever backups are taken; the SFTP protocol on top is spoken
//! by `openssh-sftp-client`, which pipelines writes for throughput.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use openssh_sftp_client::{Sftp, SftpOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};

use super::sftp_upload::SftpUpload;
use super::{BackupServer, DirEntry, FreeSpace, ListPage, page_of};
use crate::error::{Error, Result};
use crate::external;

/// The keys of `server:` an `ssh://` server needs (flattened into [`super::ServerConfig`]: the
/// file keeps the chart's flat `server.ssh_key_file` and `server.known_hosts_file`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SshSettings {
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
}

/// An `ssh://user@host:port/path` server with the keys to reach it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpLocation {
    pub user: String,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The root folder, absolute.
    pub path: String,
    pub key_file: PathBuf,
    pub known_hosts_file: PathBuf,
}

impl SshSettings {
    /// Reads `url` (`ssh://user@host:port/path`) with these keys; the message names the key.
    pub fn location(&self, url: &str) -> std::result::Result<SftpLocation, String> {
        let bad_url = |why: &str| format!("server.url `{url}`: {why}; expected ssh://user@host:port/path");
        let parsed = url::Url::parse(url).map_err(|e| bad_url(&e.to_string()))?;
        let host = parsed.host_str().ok_or_else(|| bad_url("no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
        if parsed.username().is_empty() {
            return Err(bad_url("no user"));
        }
        if parsed.password().is_some() {
            return Err(bad_url("passwords are not accepted; use ssh_key_file"));
        }
        let path = parsed.path().trim_end_matches('/').to_string();
        if !path.starts_with('/') {
            return Err(bad_url("the path must be an absolute folder other than /"));
        }
        let key_file = self.ssh_key_file.clone().ok_or("server.ssh_key_file is required for an ssh:// server")?;
        let known_hosts_file = self.known_hosts_file.clone().ok_or(
            "server.known_hosts_file is required for an ssh:// server: host keys are always checked \
             (get it with `ssh-keyscan -p PORT HOST`, then compare the fingerprint out of band)",
        )?;
        Ok(SftpLocation { user: parsed.username().to_string(), host, port: parsed.port().unwrap_or(22), path, key_file, known_hosts_file })
    }
}

pub struct SshServer {
    sftp: Sftp,
    root: PathBuf,
    describe: String,
    /// The ssh process; when it has exited, the connection is gone.
    child: Mutex<Child>,
    timeout: Duration,
    // Keeps the private copy of the key alive as long as the connection.
    _key_dir: tempfile::TempDir,
}

/// Why ssh gave up, read from its stderr.
fn classify(stderr: &str, host: &str, known_hosts: &str) -> String {
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || stderr.contains("Host key for") && stderr.contains("has changed") {
        format!(
            "the host key of {host} has CHANGED and does not match {known_hosts}: refusing to connect; \
             check the server (it may be replaced or attacked), then update known_hosts_file"
        )
    } else if stderr.contains("host key is known") || stderr.contains("Host key verification failed") {
        format!(
            "the host key of {host} is not in {known_hosts} (or does not match it): refusing to connect; \
             add it with `ssh-keyscan` after checking its fingerprint out of band"
        )
    } else if stderr.contains("Permission denied") {
        format!("{host} refused the SSH key: check ssh_key_file and the server's authorized_keys")
    } else if stderr.contains("Connection refused")
        || stderr.contains("timed out")
        || stderr.contains("No route to host")
        || stderr.contains("Could not resolve")
        || stderr.contains("Connection closed")
        || stderr.contains("Network is unreachable")
    {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        format!("cannot reach {host} ({first}): check that the server is up and the address is right")
    } else {
        let text: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        format!("ssh to {host} failed: {}", if text.is_empty() { "no message from ssh".to_string() } else { text.join(" / ") })
    }
}

impl SshServer {
    pub async fn connect(location: &SftpLocation, timeout: Duration) -> Result<SshServer> {
        let SftpLocation { user, host, port, path, key_file, known_hosts_file: known_hosts } = location;
        let port = *port;
        let root = PathBuf::from(path);
        let describe = format!("ssh://{user}@{host}:{port}{}", root.display());
        if !known_hosts.is_file() {
            return Err(Error::SecretFile {
                what: "known_hosts",
                path: known_hosts.clone(),
                reason: "it does not exist; host keys are always checked".into(),
            });
        }

        // ssh refuses keys readable by others, and Kubernetes mounts secrets 0644: use a private copy.
        let key_dir = tempfile::Builder::new().prefix("lifeboat-ssh-").tempdir().map_err(|e| Error::io("creating a temp folder", e))?;
        let key_copy = key_dir.path().join("key");
        let key_bytes =
            std::fs::read(key_file).map_err(|e| Error::SecretFile { what: "ssh key", path: key_file.clone(), reason: e.to_string() })?;
        std::fs::write(&key_copy, &key_bytes).map_err(|e| Error::io("writing the private key copy", e))?;
        std::fs::set_permissions(&key_copy, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("securing the private key copy", e))?;

        let mut child = Command::new(external::SSH.name)
            .arg("-F")
            .arg("none")
            .arg("-i")
            .arg(&key_copy)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "PasswordAuthentication=no"])
            // A server that stops answering (a cut link that never closes) ends the session after
            // about `server.timeout`, so a job fails instead of hanging.
            .arg("-o")
            .arg(format!("ConnectTimeout={}", timeout.as_secs()))
            .arg("-o")
            .arg(format!("ServerAliveInterval={}", (timeout.as_secs() / 4).max(1)))
            .args(["-o", "ServerAliveCountMax=4"])
            .args(["-o", "Compression=no", "-o", "LogLevel=ERROR"])
            .args(["-o", cipher_preference()])
            .arg("-p")
            .arg(port.to_string())
            .arg("-l")
            .arg(user)
            .args(["-s", host, "sftp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C on the terminal reaches Lifeboat, which still needs
            // the connection to remove an unfinished run, not ssh.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Server {
                server: describe.clone(),
                message: format!("cannot run the ssh client ({e}): install openssh-client"),
            })?;

        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let collected = stderr_text.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = collected.lock().unwrap();
                if text.len() < 16 * 1024 {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });

        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let opened = tokio::time::timeout(Duration::from_secs(60), Sftp::new(stdin, stdout, SftpOptions::default())).await;
        let known = known_hosts.display().to_string();
        let sftp = match opened {
            Ok(Ok(sftp)) => sftp,
            other => {
                // Let ssh finish writing why it stopped.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let text = stderr_text.lock().unwrap().clone();
                let message = match other {
                    Err(_) => {
                        format!("no SFTP answer from {host}:{port} within 60 s: check the server")
                    }
                    _ => classify(&text, &format!("{host}:{port}"), &known),
                };
                return Err(Error::Server { server: describe, message });
            }
        };

        let server = SshServer { sftp, root, describe, child: Mutex::new(child), timeout, _key_dir: key_dir };
        server.create_root().await?;
        Ok(server)
    }

    fn path(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
    }

    fn fail(&self, what: &str, rel: &str, e: impl std::fmt::Display) -> Error {
        self.error(format!("{what} {}: {e}", self.path(rel).display()))
    }

    async fn create_root(&self) -> Result<()> {
        if self.sftp.fs().metadata(&self.root).await.is_ok() {
            return Ok(());
        }
        let mut current = PathBuf::from("/");
        for part in self.root.components().skip(1) {
            current.push(part);
            self.create_folder(&current).await?;
        }
        Ok(())
    }

    /// Creates the folder `path` unless it exists.
    async fn create_folder(&self, path: &std::path::Path) -> Result<()> {
        let mut fs = self.sftp.fs();
        if fs.metadata(path).await.is_err()
            && let Err(e) = fs.create_dir(path).await
            // Another job at the same moment may have created it (SFTP v3 has no "already
            // exists" status): only a folder still missing is a failure.
            && fs.metadata(path).await.is_err()
        {
            return Err(self.error(format!("cannot create the folder {}: {e}; check permissions on the server", path.display())));
        }
        Ok(())
    }

    /// Creates the missing folders between the root (which exists once connected) and `rel`'s
    /// own folder: never above the root, where a confined server (`lifeboat serve`) refuses.
    async fn create_parents(&self, rel: &str) -> Result<()> {
        let mut current = self.root.clone();
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            current.push(part);
            self.create_folder(&current).await?;
        }
        Ok(())
    }

    /// Opens `rel` as a new file (exclusive create), making its missing parent folders when the
    /// first try fails.
    async fn create_new(&self, rel: &str) -> std::result::Result<openssh_sftp_client::file::File, openssh_sftp_client::Error> {
        let open = || async { self.sftp.options().write(true).create_new(true).open(self.path(rel)).await };
        match open().await {
            Ok(file) => Ok(file),
            // The folder may be missing, or made just now by a job or an upload beside this one
            // (the mirror uploads four files into a new folder at once): either way, once the
            // folders are there, the open is tried again. A file that exists fails it again.
            Err(first) => {
                if self.create_parents(rel).await.is_err() {
                    return Err(first);
                }
                open().await
            }
        }
    }
}

#[async_trait]
impl BackupServer for SshServer {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn create(&self, path: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
        let file = self.create_new(path).await.map_err(|e| self.fail("cannot create", path, e))?;
        Ok(Box::new(SftpUpload::new(file)))
    }

    async fn open(&self, path: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let file = self.sftp.open(self.path(path)).await.map_err(|e| self.fail("cannot open", path, e))?;
        Ok(read_ahead(file))
    }

    async fn list_page(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        use futures::StreamExt;
        let mut fs = self.sftp.fs();
        let dir = match fs.open_dir(self.path(prefix)).await {
            Ok(d) => d,
            Err(e) => {
                if fs.metadata(self.path(prefix)).await.is_err() {
                    return Ok(ListPage::default());
                }
                return Err(self.fail("cannot list", prefix, e));
            }
        };
        // SFTP reads a folder whole, in the server's order: the page is cut from all of it.
        let mut entries = Vec::new();
        let stream = dir.read_dir();
        futures::pin_mut!(stream);
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| self.fail("cannot list", prefix, e))?;
            let name = entry.filename().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            entries.push(DirEntry { name, is_dir, size: if is_dir { 0 } else { entry.metadata().len().unwrap_or(0) } });
        }
        Ok(page_of(entries, after))
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>> {
        match self.sftp.fs().metadata(self.path(path)).await {
            Ok(meta) if meta.file_type().is_some_and(|t| t.is_dir()) => Ok(None),
            Ok(meta) => Ok(Some(meta.len().unwrap_or(0))),
            Err(_) => Ok(None),
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.sftp.fs().remove_file(self.path(path)).await {
            Ok(()) => Ok(()),
            Err(_) if self.sftp.fs().metadata(self.path(path)).await.is_err() => Ok(()),
            Err(e) => Err(self.fail("cannot remove", path, e)),
        }
    }

    async fn remove_empty_prefix(&self, prefix: &str) -> Result<()> {
        match self.sftp.fs().remove_dir(self.path(prefix)).await {
            Ok(()) => Ok(()),
            // Gone already, or holding something put there meanwhile: both are fine.
            Err(_) if self.sftp.fs().metadata(self.path(prefix)).await.is_err() => Ok(()),
            Err(_) if !self.list_page(prefix, None).await?.entries.is_empty() => Ok(()),
            Err(e) => Err(self.fail("cannot remove folder", prefix, e)),
        }
    }

    async fn upload_failed(&self, path: &str, e: std::io::Error) -> Error {
        // A lost connection surfaces as a bare I/O error of the SFTP task; ssh's exit tells why.
        let mut exited = false;
        for _ in 0..20 {
            exited = matches!(self.child.lock().unwrap().try_wait(), Ok(Some(_)));
            if exited {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let why = match exited {
            true => format!(
                "the connection was lost (the server did not answer for {} s, server.timeout, or the link was cut); \
                 check the network and the server, then run the backup again",
                self.timeout.as_secs()
            ),
            false => e.to_string(),
        };
        self.error(format!("writing {}: {why}", self.path(path).display()))
    }

    async fn free_space(&self) -> Result<Option<FreeSpace>> {
        if !self.sftp.support_statvfs() {
            return Ok(None);
        }
        let st = self.sftp.fs().statvfs(&self.root).await.map_err(|e| self.fail("cannot read the free space of", "", e))?;
        Ok(Some(FreeSpace { available_bytes: st.bavail.saturating_mul(st.frsize), total_bytes: st.blocks.saturating_mul(st.frsize) }))
    }
}

/// The ssh client's cipher order. Every byte of a backup crosses the ssh session, so its cipher
/// costs CPU on both ends: where the CPU has AES instructions, AES-GCM costs less than OpenSSH's
/// default first choice, chacha20-poly1305 (`scripts/bench/postgres`: ssh
/// and sshd together 4.1 s → 2.8 s CPU for a 673 MB backup). `^` only moves
/// them to the front: the server may still choose any cipher of the default list.
fn cipher_preference() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    if aes { "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com" } else { "Ciphers=^chacha20-poly1305@openssh.com" }
}

/// Bytes asked for by one SFTP read: under OpenSSH's largest answer (261,120 bytes), so a read
/// is answered whole.
const READ_CHUNK: u32 = 240 * 1024;
/// SFTP reads in flight per download. With one at a time (what `TokioCompatFile` does), each
/// 240 KiB waits a whole round trip and the download runs at the latency's pace; several
/// outstanding keep the session full. Memory: READS_IN_FLIGHT × READ_CHUNK.
const READS_IN_FLIGHT: usize = 8;

/// A remote file as a byte stream, read ahead with several requests in flight, in order.
fn read_ahead(file: openssh_sftp_client::file::File) -> Box<dyn AsyncRead + Send + Unpin> {
    use futures::{StreamExt, TryStreamExt};
    let chunks = futures::stream::iter(0u64..)
        .map(move |i| read_chunk(file.clone(), i * READ_CHUNK as u64, READ_CHUNK))
        .buffered(READS_IN_FLIGHT)
        // The first empty chunk is the end of the file; the reads already sent past it are dropped.
        .try_take_while(|chunk| futures::future::ready(Ok(!chunk.is_empty())));
    Box::new(tokio_util::io::StreamReader::new(Box::pin(chunks)))
}

/// `len` bytes from `offset`, fewer only at the end of the file (a short answer is followed up).
async fn read_chunk(mut file: openssh_sftp_client::file::File, offset: u64, len: u32) -> std::io::Result<bytes::Bytes> {
    use tokio::io::AsyncSeek;
    let mut out = bytes::BytesMut::with_capacity(len as usize);
    while out.len() < len as usize {
        std::pin::Pin::new(&mut file).start_seek(std::io::SeekFrom::Start(offset + out.len() as u64))?;
        match file.read(len - out.len() as u32, bytes::BytesMut::new()).await.map_err(std::io::Error::other)? {
            Some(data) if !data.is_empty() => out.extend_from_slice(&data),
            _ => break,
        }
    }
    Ok(out.freeze())
}
