//! Signed manifests: the backup side signs every run's `manifest.json` with an ed25519 key only it
//! holds, in OpenSSH's signature format (SSHSIG, namespace `lifeboat`), into
//! `manifest.json.sig`; everyone else checks it against an OpenSSH `allowed_signers` file. Whoever
//! holds only the public age recipient (or write access to the backup server) can make a run that
//! decrypts, but not one that verifies. An operator checks a run by hand with
//! `ssh-keygen -Y verify -f allowed_signers -I lifeboat -n lifeboat -s manifest.json.sig < manifest.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::deployment::Role;
use crate::error::{Error, Result};
use crate::secret::SecretFile;

/// The signature next to a manifest.
pub const SIGNATURE_NAME: &str = "manifest.json.sig";
/// The SSHSIG namespace: a Lifeboat signature can never pass for a git or file signature.
pub const NAMESPACE: &str = "lifeboat";
/// Largest signature read: an ed25519 SSHSIG is about 300 bytes.
pub const MAX_SIGNATURE: u64 = 16 << 10;
/// Largest allowed_signers file read.
const MAX_ALLOWED_SIGNERS: u64 = 1 << 20;

/// The `signing:` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Backup side: the OpenSSH ed25519 private key (unencrypted) that signs every manifest.
    pub key_file: Option<PathBuf>,
    /// Restore side (and `verify`, `list`, `prune` anywhere): OpenSSH `allowed_signers` lines.
    pub allowed_signers_file: Option<PathBuf>,
    /// Restore backups made before manifests were signed (they have no signature). Off by default:
    /// an unsigned run may as well be planted by whoever can write to the backup server.
    #[serde(default)]
    pub restore_unsigned_backups_made_before_signing: bool,
}

impl SigningConfig {
    /// The config-time check: what each role must have.
    pub fn check(&self, role: Role) -> std::result::Result<(), String> {
        match role {
            // A backup-role config without the key serves prune and verify on the backup server.
            Role::Backup if self.key_file.is_none() && self.allowed_signers_file.is_none() => {
                Err("signing.key_file is required for role backup: every manifest is signed; \
                 make a key with `ssh-keygen -t ed25519 -N '' -C lifeboat -f signing_key` and give the restore side its \
                 public half in signing.allowed_signers_file"
                    .into())
            }
            Role::Restore if self.allowed_signers_file.is_none() => Err("signing.allowed_signers_file is required for role restore: \
                 restores check who signed each backup; write `lifeboat namespaces=\"lifeboat\" <signing_key.pub>` into it"
                .into()),
            _ => Ok(()),
        }
    }

    /// The backup side's signer, the key read now; `backup` cannot run without one.
    pub fn signer(&self) -> Result<ManifestSigner> {
        let key = self.key_file.as_deref().ok_or_else(|| {
            Error::Usage(
                "signing.key_file is required to back up: every manifest is signed (this configuration only checks \
                 signatures, as prune and verify on the backup server do)"
                    .into(),
            )
        })?;
        ManifestSigner::load(key)
    }

    /// How runs are checked: against `allowed_signers_file`, or, on the backup side without one,
    /// against the public half of its own signing key.
    pub fn trust(&self) -> Result<Trust> {
        let accept_unsigned = self.restore_unsigned_backups_made_before_signing;
        let signers = match (&self.allowed_signers_file, &self.key_file) {
            (Some(file), _) => AllowedSigners::load(file)?,
            (None, Some(key)) => {
                let signer = ManifestSigner::load(key)?;
                AllowedSigners {
                    entries: vec![Allowed { principals: "this backup's signing key".into(), key: signer.key.public_key().clone() }],
                }
            }
            (None, None) => return Err(Error::Usage("signing: neither key_file nor allowed_signers_file is set".into())),
        };
        Ok(Trust { signers, accept_unsigned })
    }
}

/// The backup side's signing key.
pub struct ManifestSigner {
    key: PrivateKey,
}

impl ManifestSigner {
    pub fn load(path: &Path) -> Result<ManifestSigner> {
        let secret = SecretFile::new("signing key", path);
        let text = secret.read()?;
        let bad = |reason: &str| Error::SecretFile { what: "signing key", path: path.to_path_buf(), reason: reason.into() };
        let key = PrivateKey::from_openssh(text.as_bytes())
            .map_err(|_| bad("not an OpenSSH private key; make one with `ssh-keygen -t ed25519 -N '' -C lifeboat -f signing_key`"))?;
        if key.is_encrypted() {
            return Err(bad("the key has a passphrase; a job cannot type it: make one with `-N ''` and protect the file instead"));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(bad("not an ed25519 key; make one with `ssh-keygen -t ed25519`"));
        }
        Ok(ManifestSigner { key })
    }

    /// The armored SSHSIG of `manifest`, as `ssh-keygen -Y sign -n lifeboat` writes it.
    pub fn sign(&self, manifest: &[u8]) -> Result<Vec<u8>> {
        let sig =
            self.key.sign(NAMESPACE, HashAlg::Sha512, manifest).map_err(|e| Error::Usage(format!("signing the manifest failed: {e}")))?;
        let pem = sig.to_pem(LineEnding::LF).map_err(|e| Error::Usage(format!("signing the manifest failed: {e}")))?;
        Ok(pem.into_bytes())
    }
}

#[derive(Debug)]
struct Allowed {
    /// The principals field, as written (comma-separated patterns).
    principals: String,
    key: PublicKey,
}

/// An OpenSSH `allowed_signers` file (`man ssh-keygen`, ALLOWED SIGNERS): one key per line with
/// its principals and options. Lines restricted by `namespaces=` to others than `lifeboat` are
/// not trusted for Lifeboat; `cert-authority` lines are refused (not supported).
#[derive(Debug)]
pub struct AllowedSigners {
    entries: Vec<Allowed>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners> {
        let bad = |reason: String| Error::SecretFile { what: "allowed signers file", path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if bytes.len() as u64 > MAX_ALLOWED_SIGNERS {
            return Err(bad("larger than 1 MiB: not an allowed_signers file".into()));
        }
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let signers = AllowedSigners::parse(&text).map_err(bad)?;
        if signers.entries.is_empty() {
            return Err(bad("it lists no key for namespace lifeboat; add `lifeboat namespaces=\"lifeboat\" <signing_key.pub>`".into()));
        }
        Ok(signers)
    }

    fn parse(text: &str) -> std::result::Result<AllowedSigners, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (principals, rest) = line.split_once(char::is_whitespace).ok_or(format!("line {n}: principals without a key"))?;
            let rest = rest.trim_start();
            // Options come before the key type and never start with `ssh-`/`ecdsa-`/`sk-`.
            let (options, key) = if ["ssh-", "ecdsa-", "sk-"].iter().any(|p| rest.starts_with(p)) {
                ("", rest)
            } else {
                split_options(rest).ok_or(format!("line {n}: options without a key"))?
            };
            let mut namespaces_ok = true;
            for option in options_list(options) {
                let lower = option.to_ascii_lowercase();
                if lower == "cert-authority" {
                    return Err(format!("line {n}: cert-authority is not supported; list the signing key itself"));
                }
                // Honouring validity dates needs the signing time, which a signature does not carry:
                // refusing them is safer than silently ignoring them.
                if lower.starts_with("valid-after=") || lower.starts_with("valid-before=") {
                    return Err(format!(
                        "line {n}: {} is not supported; remove the key instead when it is retired",
                        &lower[..lower.find('=').unwrap()]
                    ));
                }
                if let Some(list) = lower.strip_prefix("namespaces=") {
                    namespaces_ok = list.trim_matches('"').split(',').any(|ns| ns.trim() == NAMESPACE);
                }
            }
            let key = PublicKey::from_openssh(key).map_err(|_| format!("line {n}: not an OpenSSH public key"))?;
            if namespaces_ok {
                entries.push(Allowed { principals: principals.to_string(), key });
            }
        }
        Ok(AllowedSigners { entries })
    }
}

/// `opt1,opt2="a b,c" key...` → (`opt1,opt2="a b,c"`, `key...`): options end at the first space
/// outside quotes.
fn split_options(text: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Some((&text[..i], text[i..].trim_start())),
            _ => {}
        }
    }
    None
}

fn options_list(options: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in options.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&options[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < options.len() {
        out.push(&options[start..]);
    }
    out
}

/// How a reader judges a run's signature.
pub struct Trust {
    signers: AllowedSigners,
    accept_unsigned: bool,
}

/// What a run's signature says.
#[derive(Debug, Clone, PartialEq)]
pub enum Signature {
    /// Signed by an allowed key: its principals and fingerprint, as `list` shows them.
    By(String),
    /// No signature, accepted by `restore_unsigned_backups_made_before_signing`.
    AcceptedUnsigned,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::By(who) => f.write_str(who),
            Signature::AcceptedUnsigned => f.write_str("unsigned (accepted: made before signing)"),
        }
    }
}

impl Trust {
    /// Checks `manifest` against its signature (`None`: the run has no signature file). The error
    /// is the reason the run is refused, for a "damaged" line.
    pub fn check(&self, manifest: &[u8], signature: Option<&[u8]>) -> std::result::Result<Signature, String> {
        let Some(signature) = signature else {
            return match self.accept_unsigned {
                true => Ok(Signature::AcceptedUnsigned),
                false => Err(format!(
                    "it has no {SIGNATURE_NAME}: it was made before manifests were signed, or planted by someone without the \
                     signing key; set signing.restore_unsigned_backups_made_before_signing only if you know it is the former"
                )),
            };
        };
        let sig = std::str::from_utf8(signature)
            .ok()
            .and_then(|pem| SshSig::from_pem(pem).ok())
            .ok_or(format!("{SIGNATURE_NAME} is not an SSH signature"))?;
        if sig.namespace() != NAMESPACE {
            return Err(format!("{SIGNATURE_NAME} is for namespace `{}`, not `{NAMESPACE}`", sig.namespace().escape_debug()));
        }
        let signer = self.signers.entries.iter().find(|a| a.key.key_data() == sig.public_key()).ok_or_else(|| {
            let key = PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256);
            format!("signed by {key}, which is not in signing.allowed_signers_file")
        })?;
        signer
            .key
            .verify(NAMESPACE, manifest, &sig)
            .map_err(|_| format!("{SIGNATURE_NAME} does not match manifest.json: the manifest was changed after it was signed"))?;
        Ok(Signature::By(format!("{} ({})", signer.principals, signer.key.fingerprint(HashAlg::Sha256))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn trust(lines: &str, accept_unsigned: bool) -> Trust {
        Trust { signers: AllowedSigners::parse(lines).unwrap(), accept_unsigned }
    }

    #[test]
    fn a_signed_manifest_verifies_and_every_change_is_refused() {
        let key = key(1);
        let signer = ManifestSigner { key: key.clone() };
        let public = key.public_key().to_openssh().unwrap();
        let t = trust(&format!("# production\nlifeboat@prod namespaces=\"git,lifeboat\" {public}\n"), false);
        let manifest = br#"{"id":"2026-11-24"}"#;
        let sig = signer.sign(manifest).unwrap();
        assert!(matches!(t.check(manifest, Some(&sig)), Ok(Signature::By(p)) if p.starts_with("lifeboat@prod (SHA256:")));
        assert!(t.check(br#"{"id":"2026-11-25"}"#, Some(&sig)).unwrap_err().contains("changed after it was signed"));
        assert!(t.check(manifest, None).unwrap_err().contains("no manifest.json.sig"));
        assert_eq!(trust(&format!("x {public}"), true).check(manifest, None), Ok(Signature::AcceptedUnsigned));
        assert!(t.check(manifest, Some(b"garbage")).unwrap_err().contains("not an SSH signature"));
        let other = ManifestSigner { key: self::key(2) }.sign(manifest).unwrap();
        assert!(t.check(manifest, Some(&other)).unwrap_err().contains("not in signing.allowed_signers_file"));
        let git = key.sign("git", HashAlg::Sha512, manifest).unwrap().to_pem(LineEnding::LF).unwrap();
        assert!(t.check(manifest, Some(git.as_bytes())).unwrap_err().contains("namespace `git`"));
    }

    #[test]
    fn allowed_signers_lines_are_read_as_openssh_does() {
        let public = key(3).public_key().to_openssh().unwrap();
        // A key restricted to other namespaces is not trusted for Lifeboat.
        assert!(AllowedSigners::parse(&format!("a namespaces=\"git\" {public}")).unwrap().entries.is_empty());
        assert_eq!(AllowedSigners::parse(&format!("a,b namespaces=\"lifeboat\" {public}")).unwrap().entries.len(), 1);
        assert!(AllowedSigners::parse(&format!("a valid-after=\"20260101\" {public}")).unwrap_err().contains("valid-after"));
        assert!(AllowedSigners::parse(&format!("a cert-authority {public}")).unwrap_err().contains("cert-authority"));
        assert!(AllowedSigners::parse("a ssh-ed25519 AAAAnotbase64").unwrap_err().contains("line 1"));
        assert!(AllowedSigners::parse("lonely").unwrap_err().contains("principals without a key"));
    }
}
