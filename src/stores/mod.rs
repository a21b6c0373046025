//! The datastores. Each folder knows how to produce its dump streams and counts, how to check a
//! target, and how to restore and re-count; none knows how bytes are compressed, encrypted or
//! stored (that is [`crate::pipeline`] and [`crate::layout`]).
//!
//! The list of datastores is the one table in [`datastores!`] below: adding a fifth is one
//! folder implementing [`Datastore`] and one line there.

#[cfg(test)]
pub(crate) mod archive_fuzz;
pub mod influxdb;
pub mod minio;
pub mod mongodb;
pub mod postgres;
pub mod settings;
pub mod stderr_tail;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use settings::{Schedule, StoreContext, StoreSettings, StoreType};

use crate::error::{Error, Result};
use crate::layout::RunWriter;
use crate::layout::manifest::{Counts, Manifest, StoreBackup};
use crate::pipeline::{self, DecryptKey};
use crate::server::BackupServer;

/// A restore's verified local copies of the stored files.
pub struct RestoreFiles {
    pub dir: PathBuf,
    source: FilesSource,
}

enum FilesSource {
    /// Files as stored (age, zstd), decoded as they are read.
    Stored(Arc<DecryptKey>),
    /// Plain files already (a backup of the original scripts, adopted: [`Store::adopt_legacy`]),
    /// by stored name.
    Plain(std::collections::BTreeMap<String, PathBuf>),
}

impl RestoreFiles {
    /// Stored files downloaded into `dir`, decoded with `key` when read.
    pub fn stored(dir: PathBuf, key: Arc<DecryptKey>) -> RestoreFiles {
        RestoreFiles { dir, source: FilesSource::Stored(key) }
    }

    /// Plain files (an adopted backup of the original scripts), `dir` the work folder.
    pub fn plain_files(dir: PathBuf, files: &[AdoptedFile]) -> RestoreFiles {
        let map = files.iter().map(|f| (f.name.clone(), f.path.clone())).collect();
        RestoreFiles { dir, source: FilesSource::Plain(map) }
    }

    /// The plain bytes of a stored file, decrypted and decompressed as they are read.
    pub fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        match &self.source {
            FilesSource::Stored(key) => pipeline::open_decoded(&self.path(name)?, key, name),
            FilesSource::Plain(_) => {
                let path = self.plain(name)?.ok_or_else(|| Error::Integrity(format!("the backup has no file {name}")))?;
                let file = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                Ok(Box::new(std::io::BufReader::with_capacity(256 * 1024, file)))
            }
        }
    }

    /// The decoded copy of a stored file, when the download made one ([`Store::wants_plain_file`]);
    /// it was checked against the manifest with the file. Every file of an adopted backup is one.
    pub fn plain(&self, name: &str) -> Result<Option<PathBuf>> {
        match &self.source {
            FilesSource::Stored(_) => {
                let path = self.path(&crate::layout::plain_name(name))?;
                Ok(path.is_file().then_some(path))
            }
            FilesSource::Plain(map) => Ok(map.get(name).cloned()),
        }
    }

    /// The local path of a stored file. The name must be one plain file name: names come from
    /// a manifest on the backup server, which is not trusted.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        crate::layout::check_file_name(name)?;
        Ok(self.dir.join(name))
    }
}

/// One file of an adopted backup: its name as Lifeboat stores it, and the plain file here.
#[derive(Debug, Clone)]
pub struct AdoptedFile {
    pub name: String,
    pub path: PathBuf,
}

/// A backup of the original scripts turned into this store's own files and report, the counts
/// taken from the files themselves; what `restore` and `import` do with a legacy run.
pub struct Adopted {
    pub files: Vec<AdoptedFile>,
    pub backup: StoreBackup,
}

/// The stored file name for one database's dump: `db-<name>.<suffix>`, with every character
/// outside `[A-Za-z0-9_.-]` replaced (the real name is kept in the manifest).
pub fn database_file_name(db: &str, suffix: &str) -> String {
    let safe: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    format!("db-{safe}.{suffix}")
}

/// What one datastore does; the commands drive it through [`ConfiguredStore`].
#[async_trait]
pub trait Store: Send + Sync {
    /// Checks that everything named in the configuration exists, then streams the dumps into
    /// `run` and returns the counts describing exactly what was dumped.
    async fn backup(&self, run: &mut RunWriter<'_>) -> Result<StoreBackup>;

    /// Checks that the restore target is reachable, before anything is downloaded.
    async fn check_target(&self) -> Result<()>;

    /// Replaces the target's data with the verified files, then returns the counts found in it.
    async fn restore(&self, manifest: &Manifest, files: &RestoreFiles) -> Result<Counts>;

    /// True when the restore wants `entry` decoded into a file too ([`RestoreFiles::plain`]),
    /// made while it downloads into `work_dir`; by default stores read it decoded as a stream.
    fn wants_plain_file(&self, _manifest: &Manifest, _entry: &crate::layout::manifest::FileEntry, _work_dir: &Path) -> bool {
        false
    }

    /// One line describing restored counts (e.g. `1200 rows`), for the closing log line.
    fn describe_counts(&self, manifest: &Manifest) -> String {
        let total: u64 = manifest.counts.values().flat_map(|m| m.values()).sum();
        format!("{total} {}", manifest.count_unit)
    }

    /// Reads a backup made by OpenCRVS's original scripts, unpacked whole in `unpacked` (its
    /// files checked as plain relative paths), and makes this store's own plain files of it in
    /// `out`, with the counts read from its data. Every dump is opened and read to the end here:
    /// one that does not open, or an archive with nothing to restore, is refused before any
    /// target is touched.
    async fn adopt_legacy(&self, _unpacked: &Path, _out: &Path) -> Result<Adopted> {
        Err(Error::Usage("this store cannot read backups made by the original scripts".into()))
    }

    /// The store as configured with `type: differential`, whose backups a tool of its own keeps
    /// outside the date folders; None for `type: dump`.
    fn differential(&self) -> Option<&dyn DifferentialStore> {
        None
    }
}

/// `lifeboat backup --type`: what a differential store's run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Diff,
}

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(BackupKind::Full),
            "diff" => Ok(BackupKind::Diff),
            _ => Err(format!("`{s}` is not a backup type: use full or diff")),
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
        })
    }
}

/// One backup in a differential store's repository, as `list` and `status` show it.
#[derive(Debug, Clone)]
pub struct RepoBackup {
    pub label: String,
    /// `full`, `diff` (or `incr`, when made by hand), or `mirror`.
    pub kind: String,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// Bytes this backup added to the repository.
    pub stored_bytes: u64,
    /// Where it lives on the backup server, relative to the server's root.
    pub path: String,
    /// False for a run that never finished (no manifest); it is never restored.
    pub complete: bool,
    /// Why a run cannot be used, when what marks it finished is damaged.
    pub damaged: Option<String>,
    /// Who signed its manifest (a checked signature), as `list` shows it; None for pgBackRest,
    /// whose repository is checked by pgBackRest itself.
    pub signed_by: Option<String>,
}

/// What one differential backup run made.
#[derive(Debug, Clone)]
pub struct RepoBackupDone {
    pub backup: RepoBackup,
    /// Bytes of the database this run read and sent (the changed files, for a differential).
    pub read_bytes: u64,
}

/// What a differential restore is asked for: the newest state, a backup (`--from`), or a moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepoRestoreRequest<'a> {
    pub from: Option<&'a str>,
    pub target_time: Option<&'a str>,
}

/// What a differential store's prune removed (or, dry, would remove).
#[derive(Debug, Clone, Default)]
pub struct RepoPruned {
    pub removed: Vec<RepoBackup>,
    /// Every byte freed, including data no kept backup refers to any more.
    pub freed_bytes: u64,
}

/// What a differential restore brought back, for the outcome and the closing line.
#[derive(Debug, Clone)]
pub struct RepoRestoreDone {
    pub label: String,
    /// e.g. `recovery target 2025-06-01 12:00:00+00 reached: WAL replayed to 0/5000050, last transaction at ...`.
    pub recovered: String,
    pub stored_bytes: u64,
}

/// What `check_target` downloaded and checked, handed back to `restore` (each store its own type).
pub type RepoPrepared = Box<dyn std::any::Any + Send>;

/// One differential backup checked by `verify`.
#[derive(Debug, Clone)]
pub struct RepoVerified {
    /// The backup's label, or `repository` when the tool checks the repository as a whole.
    pub id: String,
    pub files: usize,
    pub bytes: u64,
    pub problems: Vec<String>,
    /// How it was checked, for the closing line (e.g. `checked by pgbackrest verify`).
    pub how: String,
}

/// Encodes one new stored file exactly as dump files are (zstd, then age to the configured
/// recipients, hashed as stored). `commands::backup` holds the key and the compression settings
/// and lends this to a differential store that writes its own files (the MinIO mirror).
#[async_trait]
pub trait FileEncoder: Send + Sync {
    async fn encode(
        &self,
        source: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        dest: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        counters: Arc<crate::progress::Counters>,
    ) -> Result<pipeline::EncodedFile>;
    /// The manifest's `compression` and `encryption` fields.
    fn describe(&self) -> (String, String);
}

/// What a backup lends a differential store: the backup server, whose signatures are trusted
/// (the previous run is read back), the encoder of new files and the manifest signer.
pub struct BackupAccess<'a> {
    pub server: &'a dyn BackupServer,
    pub trust: &'a crate::signing::Trust,
    pub encoder: &'a dyn FileEncoder,
    pub signer: &'a crate::signing::ManifestSigner,
}

/// What the commands that read a repository (restore, list, status, verify, prune) lend a
/// differential store: the backup server, whose signatures are trusted, and the key that opens
/// stored files where the command holds it (restore, `verify --deep`).
pub struct RepoAccess<'a> {
    pub server: &'a dyn BackupServer,
    pub trust: &'a crate::signing::Trust,
    pub key: Option<Arc<DecryptKey>>,
}

/// A store whose backups live outside the date folders, in a repository of its own on the backup
/// server: PostgreSQL through pgBackRest (Lifeboat drives the tool, never reimplements it), and
/// the MinIO mirror (Lifeboat's own incremental format).
#[async_trait]
pub trait DifferentialStore: Send + Sync {
    /// Makes a `kind` backup, or the one the schedule asks for on `today` when `kind` is None.
    async fn backup(&self, kind: Option<BackupKind>, today: chrono::NaiveDate, access: &BackupAccess<'_>) -> Result<RepoBackupDone>;
    /// Checks that the target can be restored over and that the requested backup exists; a store
    /// that can also download and verify the backup does it here, before any target is touched.
    async fn check_target(&self, request: RepoRestoreRequest<'_>, access: &RepoAccess<'_>) -> Result<RepoPrepared>;
    /// Replaces the target with the requested backup and checks it.
    async fn restore(&self, request: RepoRestoreRequest<'_>, access: &RepoAccess<'_>, prepared: RepoPrepared) -> Result<RepoRestoreDone>;
    /// The backups in the repository (complete or not), oldest first.
    async fn backups(&self, access: &RepoAccess<'_>) -> Result<Vec<RepoBackup>>;
    /// Checks the repository, or the backup `from` names (None: no such backup here); `deep`
    /// decrypts too where the store can (needs `access.key`).
    async fn verify(&self, access: &RepoAccess<'_>, from: Option<&str>, deep: bool) -> Result<Option<RepoVerified>>;
    /// Applies the retention (`lifeboat prune`): the tool's own (pgBackRest `expire`), or else
    /// keeps the backups labelled in `keep` (what `retention:` keeps of [`Self::backups`]) and
    /// removes the rest; with `dry_run`, only says what would go.
    async fn prune(&self, access: &RepoAccess<'_>, keep: &std::collections::BTreeSet<String>, dry_run: bool) -> Result<RepoPruned>;
}

/// How a datastore is made from its configuration block.
pub trait Datastore: Store + Sized + 'static {
    /// Its `stores.<name>` block; holds `#[serde(flatten)] settings: StoreSettings`.
    type Config: DeserializeOwned + Clone + std::fmt::Debug;
    /// The backup types it implements.
    const TYPES: &'static [StoreType];
    /// Checks the block (no network) and builds the store.
    fn new(cfg: Self::Config, ctx: &StoreContext) -> Result<Self>;
}

/// A datastore as configured: its name and shared settings, and the store itself.
pub struct ConfiguredStore {
    pub name: &'static str,
    pub settings: StoreSettings,
    pub store: Box<dyn Store>,
}

impl std::fmt::Debug for ConfiguredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredStore").field("name", &self.name).field("settings", &self.settings).finish()
    }
}

impl ConfiguredStore {
    /// Its folder inside a run: `server_dir`, or the name.
    pub fn folder(&self) -> &str {
        self.settings.server_dir.as_deref().unwrap_or(self.name)
    }

    pub fn kind(&self) -> StoreType {
        self.settings.kind
    }
}

fn build<S: Datastore>(name: &'static str, settings: &StoreSettings, cfg: &S::Config, ctx: &StoreContext) -> Result<ConfiguredStore> {
    if settings.enabled && !S::TYPES.contains(&settings.kind) {
        return Err(Error::Usage(format!(
            "stores.{name}.type {} is not supported by this version; use type: {}",
            settings.kind,
            S::TYPES.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ")
        )));
    }
    Ok(ConfiguredStore { name, settings: settings.clone(), store: Box::new(S::new(cfg.clone(), ctx)?) })
}

/// Declares the datastores: the `stores:` configuration block and how each is built.
macro_rules! datastores {
    ($($name:ident => $store:ty),* $(,)?) => {
        /// The `stores:` block of the configuration: one optional entry per datastore.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct StoreConfigs {
            $(pub $name: Option<<$store as Datastore>::Config>,)*
        }

        /// Every datastore's name, in backup order.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];

        impl StoreConfigs {
            /// Every configured store (enabled or not), checked and built, in backup order.
            pub fn build_all(&self, ctx: &StoreContext) -> Result<Vec<ConfiguredStore>> {
                let mut out = Vec::new();
                $(
                    if let Some(cfg) = &self.$name {
                        out.push(build::<$store>(stringify!($name), &cfg.settings, cfg, ctx)?);
                    }
                )*
                Ok(out)
            }
        }
    };
}

datastores! {
    postgres => postgres::Postgres,
    mongodb => mongodb::MongoDb,
    influxdb => influxdb::InfluxDb,
    minio => minio::Minio,
}

/// The enabled stores of `built`, in backup order, filtered by `only` (`--store`) when not empty.
pub fn configured<'a>(built: &'a [ConfiguredStore], config_file: &Path, only: &[String]) -> Result<Vec<&'a ConfiguredStore>> {
    for name in only {
        if !NAMES.contains(&name.as_str()) {
            return Err(Error::Usage(format!("--store {name}: unknown store; choose from {}", NAMES.join(", "))));
        }
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let stores: Vec<&ConfiguredStore> = built.iter().filter(|s| s.settings.enabled && wanted(s.name)).collect();
    let file = config_file.display();
    for name in only {
        if !stores.iter().any(|st| st.name == name) {
            return Err(Error::Usage(format!("--store {name}: stores.{name} is not configured or not enabled in {file}")));
        }
    }
    if stores.is_empty() {
        return Err(Error::Usage(format!("no enabled stores in {file}")));
    }
    Ok(stores)
}
