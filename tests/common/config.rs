//! One test's world (its database, backup folder, keys) and the configuration files it writes,
//! for any mix of stores.

use std::path::{Path, PathBuf};

use super::run::{lifeboat, stderr};
use super::servers::{PG_PORT, SSH_PORT, ensure_server, state};

/// One test's world: its database, its backup folder, its keys and configs.
pub struct Case {
    pub name: String,
    pub db: String,
    pub dir: tempfile::TempDir,
    pub server_path: PathBuf,
    pub identity_file: PathBuf,
    pub recipient: String,
    /// The backup side's manifest signing key (OpenSSH ed25519) and the restore side's
    /// `allowed_signers` file naming it (principal `lifeboat@test`).
    pub signing_key: PathBuf,
    pub allowed_signers: PathBuf,
    /// `work_dir:` of both configs, when the test watches Lifeboat's temporary folders.
    pub work_dir: Option<PathBuf>,
}

pub enum Transport {
    Ssh,
    File,
    /// The real MinIO as an `s3://` backup server: this case's own bucket (see [`Case::s3_bucket`]).
    S3,
}

impl Case {
    pub fn new(name: &str) -> Case {
        ensure_server("postgres");
        let dir = tempfile::Builder::new().prefix(&format!("lifeboat-{name}-")).tempdir().unwrap();
        let server_path = PathBuf::from("/var/tmp/lifeboat-test/servers").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&server_path);
        let (identity, recipient) = lifeboat::pipeline::generate_identity();
        let identity_file = dir.path().join("identity.txt");
        std::fs::write(&identity_file, identity).unwrap();
        let (signing_key, allowed_signers) = signing_keys(dir.path());
        Case {
            name: name.into(),
            db: format!("t_{name}"),
            dir,
            server_path,
            identity_file,
            recipient,
            signing_key,
            allowed_signers,
            work_dir: None,
        }
    }

    pub fn server_block(&self, transport: &Transport) -> String {
        match transport {
            Transport::Ssh => {
                ensure_server("sshd");
                let s = state().join("sshd");
                format!(
                    "server:\n  url: ssh://root@127.0.0.1:{SSH_PORT}{}\n  ssh_key_file: {}\n  known_hosts_file: {}\n",
                    self.server_path.display(),
                    s.join("client_key").display(),
                    s.join("known_hosts").display()
                )
            }
            Transport::File => format!("server:\n  url: file://{}\n", self.server_path.display()),
            Transport::S3 => format!(
                "server:\n  url: s3://{}/lifeboat\n  endpoint: {}\n  access_key_file: {}\n  secret_key_file: {}\n",
                self.s3_bucket(),
                super::s3::s3_endpoint(super::s3::MINIO_PORT),
                super::s3::s3_key_file("s3-access-key").display(),
                super::s3::s3_key_file("s3-secret-key").display()
            ),
        }
    }

    pub fn postgres_block(&self, extra: &str) -> String {
        format!(
            "stores:\n  postgres:\n    type: dump\n    url: postgres://postgres@127.0.0.1:{PG_PORT}/postgres\n    databases: [{}]\n{extra}",
            self.db
        )
    }

    /// This case's bucket on the real MinIO (`lb-<name>-<pid>`), made when first asked for.
    pub fn s3_bucket(&self) -> String {
        let name: String = self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let bucket = format!("lb-{name}-{}", std::process::id());
        let s3 = super::s3::S3::minio();
        if !s3.bucket_exists(&bucket) {
            s3.fresh_bucket(&bucket);
        }
        bucket
    }

    /// Gives both configs a `work_dir` of their own (created, empty) and returns it.
    pub fn with_work_dir(&mut self) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        self.work_dir = Some(work.clone());
        work
    }

    fn work_dir_line(&self) -> String {
        self.work_dir.as_ref().map(|w| format!("work_dir: {}\n", w.display())).unwrap_or_default()
    }

    /// The `signing:` block of a role's config: the key that signs (backup) or the signers
    /// trusted (restore).
    pub fn signing_block(&self, role: &str) -> String {
        match role {
            "backup" => format!("signing:\n  key_file: {}\n", self.signing_key.display()),
            _ => format!("signing:\n  allowed_signers_file: {}\n", self.allowed_signers.display()),
        }
    }

    /// Signs `dir/manifest.json` (as it now is) with this case's signing key, as the backup side
    /// does: a test that rewrites a manifest plays a holder of that key, to reach the checks after
    /// the signature's.
    pub fn sign_manifest(&self, dir: &Path) {
        let signer = lifeboat::signing::ManifestSigner::load(&self.signing_key).unwrap();
        let bytes = std::fs::read(dir.join("manifest.json")).unwrap();
        std::fs::write(dir.join(lifeboat::signing::SIGNATURE_NAME), signer.sign(&bytes).unwrap()).unwrap();
    }

    /// Writes a config file and returns its path.
    pub fn write_config(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A backup-side config (age recipient, Africa/Lagos) for any mix of `stores:` blocks.
    pub fn backup_config_with(&self, transport: &Transport, stores: &str, file: &str) -> PathBuf {
        let text = format!(
            "role: backup\ntimezone: Africa/Lagos\n{}{}encryption:\n  recipients: [{}]\nsigning:\n  key_file: {}\n{stores}",
            self.work_dir_line(),
            self.server_block(transport),
            self.recipient,
            self.signing_key.display()
        );
        self.write_config(file, &text)
    }

    /// A restore-side config (age identity, the same Africa/Lagos as the backup side: `prune` and
    /// `status` count days in it) for any mix of `stores:` blocks.
    pub fn restore_config_with(&self, transport: &Transport, stores: &str, file: &str) -> PathBuf {
        let text = format!(
            "role: restore\ntimezone: Africa/Lagos\n{}{}encryption:\n  identity_file: {}\nsigning:\n  allowed_signers_file: {}\n{stores}",
            self.work_dir_line(),
            self.server_block(transport),
            self.identity_file.display(),
            self.allowed_signers.display()
        );
        self.write_config(file, &text)
    }

    pub fn backup_config(&self, transport: &Transport) -> PathBuf {
        self.backup_config_with(transport, &self.postgres_block(""), "backup.yaml")
    }

    pub fn restore_config(&self, transport: &Transport) -> PathBuf {
        self.restore_config_with(transport, &self.postgres_block(""), "restore.yaml")
    }

    /// A run's folder on a `file://` server and its manifest, read directly from disk.
    pub fn manifest_of(&self, run: &serde_json::Value) -> (PathBuf, serde_json::Value) {
        let dir = self.server_path.join(run["path"].as_str().expect("a listed run has a path"));
        let manifest =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("the run has a manifest")).expect("valid JSON");
        (dir, manifest)
    }

    /// The run folders on the backup server, oldest first.
    pub fn runs(&self, config: &Path) -> Vec<serde_json::Value> {
        let out = lifeboat(config, &["list", "--json"]);
        assert!(out.status.success(), "list failed: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json prints JSON");
        v.as_array().unwrap().clone()
    }
}

/// A fresh manifest signing key in `dir` (as the README says to make one) and an
/// `allowed_signers` file that trusts it for namespace `lifeboat`.
pub fn signing_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("signing_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lifeboat@test", "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("lifeboat@test namespaces=\"lifeboat\" {public}")).unwrap();
    (key, allowed)
}
