//! A run's manifest with its signature (`crate::signing`), for every kind of run: the date-folder
//! runs of [`super::RunWriter`] and the MinIO mirror's runs. Written signature first, manifest
//! last, so the manifest stays the commit; read back untrusted, and a run counts as complete only
//! when both are there and the signature is by an allowed signer over these exact bytes.

use super::RunState;
use super::manifest::{MANIFEST_NAME, Manifest};
use crate::error::Result;
use crate::server::{BackupServer, join};
use crate::signing::{MAX_SIGNATURE, ManifestSigner, SIGNATURE_NAME, Trust};

/// Largest manifest read: far above any real one (a few KiB per thousand tables).
pub const MAX_MANIFEST: u64 = 64 << 20;

/// Commits a run in folder `dir`: `manifest.json.sig`, then `manifest.json`, each durable.
pub async fn commit_manifest(server: &dyn BackupServer, dir: &str, manifest: &Manifest, signer: &ManifestSigner) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    let signature = signer.sign(&json)?;
    for (name, bytes) in [(SIGNATURE_NAME, &signature), (MANIFEST_NAME, &json)] {
        server.write_new(&join(dir, name), bytes).await?;
        server.make_durable(&join(dir, name)).await?;
    }
    Ok(())
}

/// Reads the manifest of run `id` in folder `dir` (the caller saw it listed, with or without a
/// signature next to it), checks its signature with `trust`, that it names this run, and
/// `is_ours` (what kind of run the folder must hold). Never fails: a reason becomes `Damaged`.
pub async fn read_manifest(
    server: &dyn BackupServer,
    dir: &str,
    id: &str,
    has_signature: bool,
    trust: &Trust,
    is_ours: impl Fn(&Manifest) -> std::result::Result<(), String>,
) -> RunState {
    let data = match server.read_small(&join(dir, MANIFEST_NAME), MAX_MANIFEST).await {
        Ok(data) => data,
        Err(e) => return RunState::Damaged(format!("{MANIFEST_NAME} cannot be read ({e})")),
    };
    let signature = match has_signature {
        false => None,
        true => match server.read_small(&join(dir, SIGNATURE_NAME), MAX_SIGNATURE).await {
            Ok(bytes) => Some(bytes),
            Err(e) => return RunState::Damaged(format!("{SIGNATURE_NAME} cannot be read ({e})")),
        },
    };
    // The signature first: nothing of an unverified manifest is believed, not even its id.
    let signature = match trust.check(&data, signature.as_deref()) {
        Ok(signature) => signature,
        Err(why) => return RunState::Damaged(format!("not trusted: {why}")),
    };
    let mut manifest = match Manifest::parse(&data) {
        Ok(manifest) => manifest,
        Err(why) => return RunState::Damaged(why),
    };
    // A manifest copied in from another run would restore that run under this one's name.
    if manifest.id != id {
        return RunState::Damaged(format!("{MANIFEST_NAME} belongs to run {}, not {id}", manifest.id.escape_debug()));
    }
    if let Err(why) = is_ours(&manifest) {
        return RunState::Damaged(why);
    }
    manifest.signature = Some(signature);
    RunState::Complete(Box::new(manifest))
}
