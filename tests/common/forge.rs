//! Forging a hostile backup the way someone who can write to the backup server would: a stored
//! file decrypted with the test's identity, its plain bytes changed, encrypted again to the
//! test's recipient, and the manifest's size, SHA-256 and raw size rewritten to match, so that
//! the download checks pass and only the archive's content is hostile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::Case;

/// The plain bytes of a stored file (age, then zstd), read with the case's identity.
pub fn decrypt_stored(case: &Case, path: &Path) -> Vec<u8> {
    let enc = lifeboat::pipeline::keys::EncryptionConfig { identity_file: Some(case.identity_file.clone()), ..Default::default() };
    let key = lifeboat::pipeline::DecryptKey::from_config(&enc).expect("the case's identity");
    let mut reader = lifeboat::pipeline::open_decoded(path, &key, "stored file").expect("the stored file opens");
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).expect("the stored file decodes");
    plain
}

/// `plain` compressed and encrypted to the case's recipient, as Lifeboat stores files.
pub fn encrypt_for(case: &Case, plain: &[u8]) -> Vec<u8> {
    let recipient: age::x25519::Recipient = case.recipient.parse().expect("the case's recipient");
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).unwrap();
    writer.write_all(&zstd::encode_all(plain, 3).unwrap()).unwrap();
    writer.finish().unwrap();
    out
}

/// A stored file of a run on a `file://` (or local sshd) server.
pub struct Stored {
    pub run_dir: PathBuf,
    pub name: String,
}

impl Stored {
    /// The one stored file of the case's only run of `store` whose name satisfies `pick`.
    pub fn find(case: &Case, config: &Path, store: &str, pick: impl Fn(&str) -> bool) -> Stored {
        let run = case.runs(config).into_iter().rfind(|r| r["store"] == store && r["complete"] == true).expect("a complete run");
        let (run_dir, manifest) = case.manifest_of(&run);
        let name = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .find(|n| pick(n))
            .expect("the file");
        Stored { run_dir, name }
    }

    pub fn plain(&self, case: &Case) -> Vec<u8> {
        decrypt_stored(case, &self.run_dir.join(&self.name))
    }

    /// Replaces the file by `plain`, encrypted, makes the manifest describe it exactly and signs
    /// it with the case's key (a forger who holds the backup side's signing key).
    pub fn replace(&self, case: &Case, plain: &[u8]) {
        self.rehash(case, plain);
        case.sign_manifest(&self.run_dir);
    }

    /// [`Stored::replace`] by a forger without the signing key: the old signature stays.
    pub fn rehash(&self, case: &Case, plain: &[u8]) {
        let stored = encrypt_for(case, plain);
        std::fs::write(self.run_dir.join(&self.name), &stored).unwrap();
        let path = self.run_dir.join("manifest.json");
        let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = manifest["files"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == self.name.as_str()).unwrap();
        entry["size"] = stored.len().into();
        entry["sha256"] = hex::encode(Sha256::digest(&stored)).into();
        entry["raw_size"] = plain.len().into();
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }
}

/// A path under a fresh folder of the system temp dir that nothing has written yet: where a
/// hostile entry aims, checked afterwards to still not exist.
pub fn unique_target(case: &Case, label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lifeboat-hostile-{}-{}-{label}", case.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("planted")
}
