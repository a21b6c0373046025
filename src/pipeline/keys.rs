//! Keys: what the backup side encrypts to (age X25519 recipients, or a passphrase) and what the
//! restore side decrypts with (an age identity file, or the same passphrase).

use std::io;

use age::secrecy::SecretString;

use crate::deployment::Role;
use crate::error::{Error, Result};
use crate::secret::SecretFile;

/// `encryption:` of the configuration. The backup side holds only what encrypts (recipients,
/// or the passphrase), the restore side what decrypts (the identity, or the passphrase).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 public keys (`age1...`): the backup side encrypts to these.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// age identity file: the restore side decrypts with it.
    pub identity_file: Option<std::path::PathBuf>,
    /// A passphrase file, the simple alternative to recipients and identity.
    pub passphrase_file: Option<std::path::PathBuf>,
}

impl EncryptionConfig {
    /// The block's own rules for `role`; the message names the key and the fix.
    pub fn check(&self, role: Role) -> std::result::Result<(), String> {
        match role {
            Role::Backup => {
                if self.identity_file.is_some() {
                    return Err("encryption.identity_file is set but role is backup: the backup side holds only \
                                the public recipients; move the identity to the restore configuration"
                        .into());
                }
                if self.recipients.is_empty() && self.passphrase_file.is_none() {
                    return Err("encryption needs recipients (age public keys) or passphrase_file for role backup; \
                                `lifeboat keygen` makes a key pair"
                        .into());
                }
            }
            Role::Restore => {
                if self.identity_file.is_none() && self.passphrase_file.is_none() {
                    return Err("encryption needs identity_file (or passphrase_file) for role restore".into());
                }
            }
        }
        if !self.recipients.is_empty() && self.passphrase_file.is_some() {
            return Err("encryption: set either recipients or passphrase_file, not both".into());
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(format!("encryption.recipients[{i}] is not an age public key (age1...); `lifeboat keygen` prints one"));
            }
        }
        Ok(())
    }
}

/// How backups are encrypted: to age X25519 recipients, or with a passphrase.
pub enum EncryptKey {
    Recipients(Vec<age::x25519::Recipient>),
    Passphrase(SecretFile),
}

impl EncryptKey {
    pub fn from_config(enc: &EncryptionConfig) -> Result<EncryptKey> {
        if let Some(path) = &enc.passphrase_file {
            let secret = SecretFile::new("passphrase", path);
            secret.read()?;
            return Ok(EncryptKey::Passphrase(secret));
        }
        let recipients = enc
            .recipients
            .iter()
            .map(|r| r.parse::<age::x25519::Recipient>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Error::Usage("encryption.recipients holds an invalid age public key".into()))?;
        Ok(EncryptKey::Recipients(recipients))
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            EncryptKey::Recipients(_) => "age-x25519",
            EncryptKey::Passphrase(_) => "age-scrypt",
        }
    }

    pub(super) fn encryptor(&self) -> Result<age::Encryptor> {
        match self {
            EncryptKey::Recipients(rs) => age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| Error::Decrypt(format!("cannot set up encryption: {e}"))),
            EncryptKey::Passphrase(file) => Ok(age::Encryptor::with_user_passphrase(SecretString::from(file.read()?))),
        }
    }
}

/// How backups are decrypted: with an age identity file, or a passphrase.
pub struct DecryptKey {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    source: String,
}

impl DecryptKey {
    pub fn from_config(enc: &EncryptionConfig) -> Result<DecryptKey> {
        if let Some(path) = &enc.identity_file {
            let text = SecretFile::new("age identity", path).read()?;
            let bad = |reason: String| Error::SecretFile { what: "age identity", path: path.clone(), reason };
            let mut identities: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let id = line
                    .parse::<age::x25519::Identity>()
                    .map_err(|_| bad("it does not hold an age identity (AGE-SECRET-KEY-1...); `lifeboat keygen` makes one".into()))?;
                identities.push(Box::new(id));
            }
            if identities.is_empty() {
                return Err(bad("it holds no AGE-SECRET-KEY-1... line".into()));
            }
            return Ok(DecryptKey { identities, source: format!("identity file {}", path.display()) });
        }
        if let Some(path) = &enc.passphrase_file {
            let pass = SecretFile::new("passphrase", path).read()?;
            let mut id = age::scrypt::Identity::new(SecretString::from(pass));
            // Allow the work factor our own encryptor picks on slower machines.
            id.set_max_work_factor(22);
            return Ok(DecryptKey { identities: vec![Box::new(id)], source: format!("passphrase file {}", path.display()) });
        }
        Err(Error::Usage("encryption.identity_file or passphrase_file is needed to decrypt".into()))
    }

    /// Opens an age stream, failing clearly when the key does not fit.
    pub(super) fn decrypt<R: io::BufRead>(&self, input: R, name: &str) -> Result<age::stream::StreamReader<R>> {
        let decryptor = age::Decryptor::new_buffered(input)
            .map_err(|e| Error::Decrypt(format!("{name} is not a readable age file ({e}): the stored file is damaged")))?;
        decryptor.decrypt(self.identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| {
            Error::Decrypt(format!(
                "cannot decrypt {name} with the {} ({e}): use the identity matching the backup side's recipients",
                self.source
            ))
        })
    }
}

/// Generates a new X25519 identity: (identity file text, public recipient).
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let text = format!("# created: {created}\n# public key: {recipient}\n{}\n", identity.to_string().expose_secret());
    (text, recipient)
}
