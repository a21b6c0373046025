//! pgBackRest as Lifeboat drives it: its configuration rendered from Lifeboat's into a private
//! folder, the tool run as the owner of the data directory (as PostgreSQL's `archive_command`
//! runs it), `info --output=json` read, and its failures turned into one line saying what to do.
//!
//! The rendered folder holds `pgbackrest.conf` (with the repository passphrase) and copies of the
//! SSH key and known_hosts file: the PostgreSQL user runs `archive-push` with them and may not be
//! able to read Lifeboat's own. Files are 0600 in a 0700 folder owned by that user; the
//! passphrase is never on a command line or in a log.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::err;
use super::repo_info::error_text;
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "pgbackrest.conf";
pub const SSH_KEY: &str = "ssh_key";
pub const SSH_PUBLIC_KEY: &str = "ssh_key.pub";
pub const KNOWN_HOSTS: &str = "known_hosts";

/// Where pgBackRest's repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// On an SFTP server: the repository is the folder `path` there.
    Sftp { host: String, port: u16, user: String, path: String },
    /// In a local folder (a `file://` server).
    Posix { path: String },
}

impl Repository {
    pub fn path(&self) -> &str {
        match self {
            Repository::Sftp { path, .. } | Repository::Posix { path } => path,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Repository::Sftp { host, port, user, path } => format!("sftp://{user}@{host}:{port}{path}"),
            Repository::Posix { path } => format!("file://{path}"),
        }
    }
}

/// Everything `pgbackrest.conf` says.
pub struct Rendering<'a> {
    pub dir: &'a Path,
    pub stanza: &'a str,
    pub repository: &'a Repository,
    pub cipher_pass: &'a str,
    pub retention_full: u32,
    pub retention_diff: u32,
    pub process_max: u32,
    pub pg_path: &'a Path,
    pub pg_port: u16,
    pub pg_user: &'a str,
    pub pg_database: &'a str,
    pub pg_socket: Option<&'a Path>,
}

/// The text of `pgbackrest.conf`.
pub fn render(r: &Rendering) -> String {
    let dir = r.dir.display();
    let mut global = vec![format!("repo1-path={}", r.repository.path())];
    match r.repository {
        Repository::Sftp { host, port, user, .. } => global.extend([
            "repo1-type=sftp".to_string(),
            format!("repo1-sftp-host={host}"),
            format!("repo1-sftp-host-port={port}"),
            format!("repo1-sftp-host-user={user}"),
            format!("repo1-sftp-private-key-file={dir}/{SSH_KEY}"),
            format!("repo1-sftp-public-key-file={dir}/{SSH_PUBLIC_KEY}"),
            // The server's key must be in known_hosts: never accepted on first sight, never skipped.
            "repo1-sftp-host-key-check-type=strict".to_string(),
            format!("repo1-sftp-known-host={dir}/{KNOWN_HOSTS}"),
            "repo1-sftp-host-key-hash-type=sha256".to_string(),
        ]),
        Repository::Posix { .. } => global.push("repo1-type=posix".to_string()),
    }
    global.extend([
        "repo1-cipher-type=aes-256-cbc".to_string(),
        format!("repo1-cipher-pass={}", r.cipher_pass),
        format!("repo1-retention-full={}", r.retention_full),
        format!("repo1-retention-diff={}", r.retention_diff),
        format!("process-max={}", r.process_max),
        "compress-type=zst".to_string(),
        // The run starts when its schedule says, not after PostgreSQL's next spread checkpoint.
        "start-fast=y".to_string(),
        "log-level-console=warn".to_string(),
        "log-level-file=off".to_string(),
        format!("lock-path={dir}/lock"),
        format!("spool-path={dir}/spool"),
    ]);
    let mut stanza = vec![
        format!("pg1-path={}", r.pg_path.display()),
        format!("pg1-port={}", r.pg_port),
        format!("pg1-user={}", r.pg_user),
        format!("pg1-database={}", r.pg_database),
    ];
    if let Some(socket) = r.pg_socket {
        stanza.push(format!("pg1-socket-path={}", socket.display()));
    }
    format!(
        "# Written by Lifeboat from its configuration; changes here are overwritten.\n[global]\n{}\n\n[{}]\n{}\n",
        global.join("\n"),
        r.stanza,
        stanza.join("\n")
    )
}

/// The user owning the data directory: pgBackRest and pg_ctl run as this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The owner of `data_directory`; fails when this process can act for neither it nor root.
    pub fn of(data_directory: &Path) -> Result<Owner> {
        let meta = std::fs::metadata(data_directory).map_err(|e| {
            err(format!(
                "data directory {} cannot be read ({e}); create it owned by the PostgreSQL user with mode 0700, or fix stores.postgres.data_directory",
                data_directory.display()
            ))
        })?;
        let owner = Owner { uid: meta.uid(), gid: meta.gid() };
        let me = current_uid();
        if me != 0 && me != owner.uid {
            return Err(err(format!(
                "data directory {} belongs to uid {}, but Lifeboat runs as uid {me}: run it as that user (or as root)",
                data_directory.display(),
                owner.uid
            )));
        }
        Ok(owner)
    }

    /// True when commands must switch to this user (Lifeboat runs as root for another user).
    fn switch_needed(&self) -> bool {
        current_uid() == 0 && self.uid != 0
    }

    /// Makes a command run as this user.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        if self.switch_needed() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes `files` into `dir` (0700), each 0600 and owned by `owner`, replacing each atomically so
/// that a running `archive_command` never reads half a file.
pub fn write_private(dir: &Path, owner: Owner, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::io(format!("writing {what} in {} (stores.postgres.pgbackrest_dir)", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("the folder", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("the folder's mode", e))?;
    let chown = |path: &Path| -> std::io::Result<()> {
        if owner.switch_needed() { std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid)) } else { Ok(()) }
    };
    chown(dir).map_err(|e| io("the folder's owner", e))?;
    for (name, bytes) in files {
        let partial = dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).map_err(|e| io(name, e))?;
        file.write_all(bytes).and_then(|_| file.sync_all()).map_err(|e| io(name, e))?;
        chown(&partial).map_err(|e| io(name, e))?;
        std::fs::rename(&partial, dir.join(name)).map_err(|e| io(name, e))?;
    }
    Ok(())
}

/// What a failure message should point the operator at.
#[derive(Debug, Clone)]
pub struct Hints {
    pub repository: String,
    pub known_hosts_file: Option<PathBuf>,
    pub passphrase_file: PathBuf,
}

/// The pgBackRest binary, its rendered configuration and the stanza, run as the data's owner.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    pub program: PathBuf,
    pub dir: PathBuf,
    pub stanza: String,
    pub owner: Owner,
    pub hints: Hints,
}

impl PgBackRest {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// Runs `pgbackrest <args>` and returns its standard output; a failure is one explained line.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg(format!("--config={}", self.config_path().display()))
            .arg(format!("--stanza={}", self.stanza))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        self.owner.apply(&mut cmd);
        let command = args.iter().find(|a| !a.starts_with("--")).copied().unwrap_or("");
        tracing::debug!("postgres: running pgbackrest {}", args.join(" "));
        let out = cmd.output().await.map_err(|e| {
            err(format!(
                "cannot run pgBackRest at {} ({e}): install it (scripts/install-deps) or set stores.postgres.pgbackrest",
                self.program.display()
            ))
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let text = format!("{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
            return Err(err(explain(command, &text, &self.hints)));
        }
        Ok(stdout)
    }

    /// `pgbackrest info --output=json` for the stanza.
    pub async fn info(&self) -> Result<super::repo_info::StanzaInfo> {
        let text = self.run(&["info", "--output=json"]).await?;
        super::repo_info::parse_info(&text, &self.stanza)
    }
}

/// One failing pgBackRest command's output as one line: what failed and what to do.
pub fn explain(command: &str, output: &str, hints: &Hints) -> String {
    let message = error_text(output);
    if message.contains("known hosts failure") || message.contains("KNOWNHOST") {
        let file = hints.known_hosts_file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
        return format!(
            "pgbackrest {command}: the backup server's host key does not match server.known_hosts_file {file} ({}); check the server, then update known_hosts_file",
            hints.repository
        );
    }
    if message.contains("FormatError") || message.contains("CryptoError") {
        return format!(
            "pgbackrest {command}: cannot decrypt the repository {}: stores.postgres.passphrase_file {} does not hold the passphrase the repository was made with",
            hints.repository,
            hints.passphrase_file.display()
        );
    }
    if message.contains("public key authentication failed") || message.contains("unable to authenticate") {
        return format!(
            "pgbackrest {command}: the backup server refused server.ssh_key_file ({message}); check the key and the server's authorized_keys"
        );
    }
    format!("pgbackrest {command} failed: {message}")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn rendering<'a>(repository: &'a Repository, socket: Option<&'a Path>) -> Rendering<'a> {
        Rendering {
            dir: Path::new("/var/lib/lifeboat/pgbackrest"),
            stanza: "main",
            repository,
            cipher_pass: "correct horse",
            retention_full: 4,
            retention_diff: 6,
            process_max: 2,
            pg_path: Path::new("/var/lib/postgresql/15/main"),
            pg_port: 5432,
            pg_user: "postgres",
            pg_database: "postgres",
            pg_socket: socket,
        }
    }

    #[test]
    fn sftp_rendering_pins_the_host_key_and_encrypts() {
        let repo = Repository::Sftp {
            host: "backup.example.org".into(),
            port: 22,
            user: "backup".into(),
            path: "/home/backup/production/postgres".into(),
        };
        let text = render(&rendering(&repo, Some(Path::new("/run/postgresql"))));
        for line in [
            "repo1-type=sftp",
            "repo1-path=/home/backup/production/postgres",
            "repo1-sftp-host=backup.example.org",
            "repo1-sftp-host-port=22",
            "repo1-sftp-host-user=backup",
            "repo1-sftp-private-key-file=/var/lib/lifeboat/pgbackrest/ssh_key",
            "repo1-sftp-public-key-file=/var/lib/lifeboat/pgbackrest/ssh_key.pub",
            "repo1-sftp-host-key-check-type=strict",
            "repo1-sftp-known-host=/var/lib/lifeboat/pgbackrest/known_hosts",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=correct horse",
            "repo1-retention-full=4",
            "repo1-retention-diff=6",
            "process-max=2",
            "compress-type=zst",
            "start-fast=y",
            "[main]",
            "pg1-path=/var/lib/postgresql/15/main",
            "pg1-port=5432",
            "pg1-socket-path=/run/postgresql",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing from:\n{text}");
        }
        assert!(!text.contains("accept-new") && !text.contains("check-type=none"));
    }

    #[test]
    fn posix_rendering_has_no_sftp_keys() {
        let repo = Repository::Posix { path: "/mnt/backups/postgres".into() };
        let text = render(&rendering(&repo, None));
        assert!(text.contains("repo1-type=posix\n") && text.contains("repo1-path=/mnt/backups/postgres\n"));
        assert!(!text.contains("sftp") && !text.contains("pg1-socket-path"));
    }

    pub fn hints() -> Hints {
        Hints {
            repository: "sftp://root@127.0.0.1:52222/r".into(),
            known_hosts_file: Some("/ssh/known_hosts".into()),
            passphrase_file: "/keys/pg".into(),
        }
    }

    #[test]
    fn failures_are_explained_in_one_clean_line() {
        let host = "2026-11-24 19:02:46.885 P00  ERROR: [101]: known hosts failure: '127.0.0.1' mismatch in known hosts files: LIBSSH2_KNOWNHOST_CHECK_MISMATCH [1]: check type [strict]\n";
        let line = explain("backup", host, &hints());
        assert!(line.contains("host key") && line.contains("/ssh/known_hosts") && line.contains("update known_hosts_file"), "{line}");
        let garbage = "P00  ERROR: [029]: unable to load info file 'a/archive.info':\n      FormatError: key/value found outside of section at line 1: \u{fffd}\u{1}x\u{7}\n      HINT: has a stanza-create been performed?\n";
        let line = explain("stanza-create", garbage, &hints());
        assert!(line.contains("passphrase_file /keys/pg") && !line.contains('\u{fffd}') && !line.contains('\n'), "{line}");
        let other = "P00  ERROR: [056]: unable to find primary cluster - cannot proceed\n                                    HINT: are all available clusters in recovery?\n";
        assert_eq!(
            explain("backup", other, &hints()),
            "pgbackrest backup failed: [056]: unable to find primary cluster - cannot proceed / HINT: are all available clusters in recovery?"
        );
        assert_eq!(error_text("\n\n"), "no message");
    }
}
