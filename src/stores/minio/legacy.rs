//! Backups made by the original scripts (the chart's `minio/backup.sh`): `mc mirror` of each
//! bucket into a folder of its name, the objects as plain files. `mc mirror` keeps no metadata
//! (content types, user metadata) and no bucket settings, so an adopted backup records none:
//! a restore says so, and keeps each bucket's policy and versioning as the target has them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use super::archive::{ARCHIVE_FORMAT, ArchiveHeader, HEADER_ENTRY, Stop, TarWriter, now_secs, valid_bucket_name};
use super::{ARCHIVE_FILE, BucketSettings, Minio, MinioExtra, err};
use crate::error::{Error, Result};
use crate::layout::manifest::{Counts, StoreBackup};
use crate::pipeline::bridge::pipe;
use crate::stores::{Adopted, AdoptedFile};

/// S3's longest object key, in bytes.
const MAX_KEY: usize = 1024;

fn refused(what: String) -> Error {
    Error::Integrity(format!("{what}; nothing was changed"))
}

/// One object of the backup: its key and the file holding it.
struct LegacyObject {
    key: String,
    path: PathBuf,
    size: u64,
    mtime: u64,
}

impl Minio {
    /// Needs nothing of the target: the bucket folders become Lifeboat's archive.
    pub(super) async fn adopt(&self, unpacked: &Path, out: &Path) -> Result<Adopted> {
        let list_dir = unpacked.to_path_buf();
        let buckets =
            tokio::task::spawn_blocking(move || list_buckets(&list_dir)).await.map_err(|e| err(format!("reading the backup: {e}")))??;
        if buckets.is_empty() {
            return Err(refused("the backup holds no bucket folder: it is not a MinIO backup of the original scripts".into()));
        }
        let archive = out.join(ARCHIVE_FILE);
        let (writer, mut reader) = pipe();
        let settings: BTreeMap<String, BucketSettings> = buckets.keys().map(|b| (b.clone(), BucketSettings::default())).collect();
        let header = ArchiveHeader { format: ARCHIVE_FORMAT, buckets: settings.clone() };
        let produce = async move {
            let mut out = TarWriter::new(writer);
            let result = write_archive(&header, &buckets, &mut out).await;
            out.close(result).await
        };
        let target = archive.clone();
        let save = async move {
            let mut file = tokio::fs::File::create_new(&target).await.map_err(|e| Error::io(format!("writing {}", target.display()), e))?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buffer).await.map_err(|e| err(format!("archiving the backup's objects: {e}")))?;
                if n == 0 {
                    break;
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &buffer[..n])
                    .await
                    .map_err(|e| Error::io(format!("writing {}", target.display()), e))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| Error::io(format!("writing {}", target.display()), e))
        };
        let (produced, saved) = tokio::join!(produce, save);
        let counts = match produced {
            Ok(counts) => counts,
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::ConsumerGone) => return Err(saved.err().unwrap_or_else(|| err("archiving the backup's objects stopped"))),
        };
        saved?;
        let extra = MinioExtra { archive: ARCHIVE_FILE.into(), buckets: settings, settings_not_recorded: true };
        Ok(Adopted {
            files: vec![AdoptedFile { name: ARCHIVE_FILE.into(), path: archive }],
            backup: StoreBackup::new("objects/bytes", counts, &extra).tool("mc", "mirror (original scripts)"),
        })
    }
}

/// The bucket folders of the backup and their objects, each key checked as S3 takes it.
fn list_buckets(dir: &Path) -> Result<BTreeMap<String, Vec<LegacyObject>>> {
    let mut buckets = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("reading the unpacked backup", e))? {
        let entry = entry.map_err(|e| Error::io("reading the unpacked backup", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) || !valid_bucket_name(&name) {
            tracing::warn!("minio: the backup also holds `{}`, which is not a bucket folder; it is left out", name.escape_debug());
            continue;
        }
        let mut objects = Vec::new();
        walk(&entry.path(), "", &mut objects)?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        buckets.insert(name, objects);
    }
    Ok(buckets)
}

fn walk(dir: &Path, prefix: &str, objects: &mut Vec<LegacyObject>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("reading the unpacked backup", e))? {
        let entry = entry.map_err(|e| Error::io("reading the unpacked backup", e))?;
        let name = entry
            .file_name()
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| refused("the backup holds a file name that is not UTF-8".into()))?;
        let key = format!("{prefix}{name}");
        let meta = entry.metadata().map_err(|e| Error::io("reading the unpacked backup", e))?;
        if meta.is_dir() {
            walk(&entry.path(), &format!("{key}/"), objects)?;
        } else if meta.is_file() {
            if key.len() > MAX_KEY {
                return Err(refused(format!("the backup holds an object key longer than S3 allows ({} bytes)", key.len())));
            }
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
            objects.push(LegacyObject { key, path: entry.path(), size: meta.len(), mtime: mtime.unwrap_or_else(now_secs) });
        }
    }
    Ok(())
}

/// Lifeboat's archive of the buckets: the header, then each bucket and its objects, no metadata.
async fn write_archive(
    header: &ArchiveHeader,
    buckets: &BTreeMap<String, Vec<LegacyObject>>,
    out: &mut TarWriter,
) -> std::result::Result<Counts, Stop> {
    let json = serde_json::to_vec_pretty(header).expect("archive header serialises");
    out.entry(HEADER_ENTRY, &[], tar::EntryType::Regular, json.len() as u64, now_secs()).await?;
    out.write(&json).await?;
    out.pad().await?;
    let mut counts = Counts::new();
    let mut buffer = vec![0u8; 1 << 20];
    for (bucket, objects) in buckets {
        out.entry(&format!("{bucket}/"), &[("LIFEBOAT.bucket", bucket.as_bytes())], tar::EntryType::Directory, 0, now_secs()).await?;
        let mut bytes = 0u64;
        for object in objects {
            let records: [(&str, &[u8]); 2] = [("LIFEBOAT.bucket", bucket.as_bytes()), ("LIFEBOAT.key", object.key.as_bytes())];
            out.entry(&format!("{bucket}/{}", object.key), &records, tar::EntryType::Regular, object.size, object.mtime).await?;
            let mut file = tokio::fs::File::open(&object.path)
                .await
                .map_err(|e| Stop::Failed(Error::io(format!("reading {}", object.path.display()), e)))?;
            let mut written = 0u64;
            loop {
                let n =
                    file.read(&mut buffer).await.map_err(|e| Stop::Failed(Error::io(format!("reading {}", object.path.display()), e)))?;
                if n == 0 {
                    break;
                }
                written += n as u64;
                if written > object.size {
                    break;
                }
                out.write(&buffer[..n]).await?;
            }
            if written != object.size {
                return Err(Stop::Failed(err(format!("{bucket}/{} changed size while it was archived", object.key))));
            }
            out.pad().await?;
            bytes += object.size;
        }
        let scope = counts.entry(bucket.clone()).or_default();
        scope.insert("objects".into(), objects.len() as u64);
        scope.insert("bytes".into(), bytes);
    }
    out.write(&[0u8; 1024]).await?;
    Ok(counts)
}
