//! The streaming layers: `source → zstd → age → SHA-256 → backup server` for backups, and the
//! reverse for restores. Each layer is a small `Write` (or `Read`) wrapping the next
//! ([`layers`]), so memory stays bounded by a few buffers whatever the size of the dump, and
//! nothing is written whole to local disk. Stores never see any of this: they hand a byte
//! stream to [`crate::layout::RunWriter::put`] and read plain bytes from
//! [`crate::stores::RestoreFiles::open`].
//!
//! zstd and age are synchronous, so the chain runs on a blocking thread between two
//! [`bridge`] pipes: an async dump stream is pumped into it (a dump tool's stdout is read by the
//! thread itself, [`child_pipe`]), the encoded bytes are pumped out to the upload. Every pipe is
//! bounded, which carries back-pressure from the backup server all the way to the dump tool.

pub mod bridge;
pub mod child_pipe;
pub mod keys;
pub mod layers;

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use bridge::blocking_reader_to_async;
pub use keys::{DecryptKey, EncryptKey, generate_identity};

use crate::progress::Counters;

use crate::error::{Error, Result};
use layers::{CopyError, CountWriter, HashWriter, NamedErrors};

/// `compression:` of the configuration (zstd, the layer before encryption).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level (1-19). 1 is the default: on registry-like dumps it compresses as well as
    /// level 3 (2.50x vs 2.47x in scripts/bench/postgres) at about 1.6x the speed, and a backup must
    /// keep up with pg_dump on a small machine.
    #[serde(default = "level_one")]
    pub level: i32,
    /// zstd worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub threads: u32,
}

fn level_one() -> i32 {
    1
}

impl Default for Compression {
    fn default() -> Self {
        Compression { level: 1, threads: 0 }
    }
}

impl Compression {
    /// The block's own rules; the message names the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(1..=19).contains(&self.level) {
            return Err("compression.level must be between 1 and 19".into());
        }
        Ok(())
    }
}

/// Size of the encoded chunks handed to the upload (bigger than [`bridge::CHUNK`]: fewer,
/// larger SFTP writes).
const UPLOAD_CHUNK: usize = 1 << 20;
/// Encoded chunks in flight: bounds that side to about UPLOAD_CHUNK × (UPLOAD_DEPTH + 2).
const UPLOAD_DEPTH: usize = 4;

/// What one encoded stream produced.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    pub raw_size: u64,
    pub size: u64,
    pub sha256: String,
    /// Time spent inside the compress/encrypt/hash chain (wall time of that thread's writes).
    pub encode_time: Duration,
    pub elapsed: Duration,
}

fn worker_threads(compression: &Compression) -> u32 {
    match compression.threads {
        0 => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        n => n,
    }
}

/// Where a stored file's plain bytes come from.
pub enum Source {
    /// Any async stream (a driver's cursor, an S3 body, a bridge from a blocking producer):
    /// pumped into the encoder thread through a [`bridge`] pipe.
    Stream(Box<dyn AsyncRead + Send + Unpin>),
    /// A dump tool's stdout: read by the encoder thread itself, in gathered reads
    /// ([`child_pipe`] says why).
    ChildPipe(std::io::PipeReader),
}

impl From<Box<dyn AsyncRead + Send + Unpin>> for Source {
    fn from(stream: Box<dyn AsyncRead + Send + Unpin>) -> Self {
        Source::Stream(stream)
    }
}

/// Reads `source` to its end and writes it compressed, encrypted and hashed to `dest`.
/// `dest` is shut down (flushed and closed) at the end; the caller decides what makes it count.
/// Memory use is bounded by a few MiB whatever the source size.
pub async fn encode_stream(
    source: Source,
    mut dest: Box<dyn AsyncWrite + Send + Unpin>,
    key: &EncryptKey,
    compression: &Compression,
    counters: Arc<Counters>,
) -> Result<EncodedFile> {
    let started = Instant::now();
    let encryptor = key.encryptor()?;
    let (level, threads) = (compression.level, worker_threads(compression));
    let (mut raw, pump): (Box<dyn BufRead + Send>, _) = match source {
        Source::Stream(stream) => {
            let (raw, pump) = bridge::to_blocking(stream, counters.read.clone());
            (Box::new(raw), Some(pump))
        }
        Source::ChildPipe(pipe) => (Box::new(child_pipe::ChildPipe::reader(pipe, counters.read.clone())), None),
    };
    let (encoded, mut upload_reader) = bridge::pipe_with(UPLOAD_CHUNK, UPLOAD_DEPTH);
    let stored = counters.stored.clone();

    let encoder = tokio::task::spawn_blocking(move || -> std::result::Result<(u64, u64, String, Duration), CopyError> {
        let hashed = HashWriter::new(CountWriter::new(encoded, stored));
        let encrypted = encryptor.wrap_output(hashed).map_err(CopyError::Write)?;
        let mut compressed = layers::compressor(encrypted, level, threads).map_err(CopyError::Write)?;
        let copied = layers::copy_buffered(&mut raw, &mut compressed)?;
        let finishing = Instant::now();
        let encrypted = compressed.finish().map_err(CopyError::Write)?;
        let (counted, size, sha256) = encrypted.finish().map_err(CopyError::Write)?.finish();
        counted.into_inner().finish().map_err(CopyError::Write)?;
        Ok((copied.bytes, size, sha256, copied.busy + finishing.elapsed()))
    });
    let pump = async move {
        match pump {
            Some(pump) => pump.await.map(|read| read.map(drop)),
            None => Ok(Ok(())),
        }
    };
    let upload = async move {
        tokio::io::copy_buf(&mut upload_reader, &mut dest).await?;
        dest.shutdown().await
    };

    let (read_res, upload_res, enc_res) = tokio::join!(pump, upload, encoder);
    let enc = enc_res.map_err(|e| Error::io("encoding thread", io::Error::other(e.to_string())))?;
    let read_res = read_res.map_err(|e| Error::io("reading thread", io::Error::other(e.to_string())))?;
    // Report the first cause: a failed upload makes the encoder fail with BrokenPipe, and a
    // failed read makes the encoder and the upload fail after it.
    read_res.map_err(|e| Error::io("reading the dump stream", e))?;
    let enc = match enc {
        Err(CopyError::Read(e)) => return Err(Error::io("reading the dump stream", e)),
        other => other,
    };
    upload_res.map_err(Error::Upload)?;
    let (raw_size, size, sha256, encode_time) = enc.map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => Error::io("compressing and encrypting", e),
    })?;
    Ok(EncodedFile { raw_size, size, sha256, encode_time, elapsed: started.elapsed() })
}

/// Grows a pipe's kernel buffer (64 KiB by default) so a dump tool writing into it is woken, and
/// wakes us, far less often. Best effort: an unprivileged process may be capped lower.
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    const PIPE_SIZE: libc::c_int = 1 << 20;
    // SAFETY: fcntl on a file descriptor we own, with an integer argument; failure is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

/// Copies `source` to `dest` while computing its SHA-256 and size; `stored` counts progress.
pub async fn copy_hashed(
    source: Box<dyn AsyncRead + Send + Unpin>,
    dest: &mut (dyn AsyncWrite + Send + Unpin),
    stored: &AtomicU64,
) -> io::Result<(u64, String)> {
    copy_hashed_tapped(source, dest, None, stored).await
}

/// As [`copy_hashed`], also handing every byte to `tap` while it reads them. A tap whose reader
/// stopped is let go: the copy and its hash go on, and the tap's reader reports its own failure.
pub async fn copy_hashed_tapped(
    mut source: Box<dyn AsyncRead + Send + Unpin>,
    dest: &mut (dyn AsyncWrite + Send + Unpin),
    mut tap: Option<&mut bridge::PipeWriter>,
    stored: &AtomicU64,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dest.write_all(&buf[..n]).await?;
        if let Some(t) = tap.as_mut()
            && t.write_async(&buf[..n]).await.is_err()
        {
            tap = None;
        }
        size += n as u64;
        stored.fetch_add(n as u64, Ordering::Relaxed);
    }
    dest.flush().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Opens a local stored file (age + zstd) as a plain byte stream.
pub fn open_decoded(path: &Path, key: &DecryptKey, name: &str) -> Result<Box<dyn io::Read + Send>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    decode_stream(BufReader::with_capacity(256 * 1024, file), key, name)
}

/// Decrypts and decompresses a stored stream (age + zstd) as it is read.
pub fn decode_stream(input: impl io::BufRead + Send + 'static, key: &DecryptKey, name: &str) -> Result<Box<dyn io::Read + Send>> {
    let reader = key.decrypt(input, name)?;
    let decoder = zstd::stream::read::Decoder::new(reader).map_err(|e| Error::io(format!("starting to decompress {name}"), e))?;
    Ok(Box::new(NamedErrors::new(decoder, name)))
}

/// Checks that `key` can open the stored file, reading only its header.
pub fn check_decryptable(path: &Path, key: &DecryptKey, name: &str) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    key.decrypt(BufReader::new(file), name).map(|_| ())
}

/// Decodes a whole stored file, counting plain bytes, without keeping it: `verify --deep`.
pub fn decode_to_sink(path: &Path, key: &DecryptKey, name: &str) -> Result<u64> {
    let mut reader = open_decoded(path, key, name)?;
    io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::Integrity(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::keys::EncryptionConfig;
    use std::io::Read;

    fn keys() -> (EncryptKey, DecryptKey, tempfile::TempDir) {
        let (identity, recipient) = generate_identity();
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("age.key");
        std::fs::write(&id_file, identity).unwrap();
        let enc = EncryptKey::from_config(&EncryptionConfig { recipients: vec![recipient], ..Default::default() }).unwrap();
        let dec = DecryptKey::from_config(&EncryptionConfig { identity_file: Some(id_file), ..Default::default() }).unwrap();
        (enc, dec, dir)
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i / 5) % 97) as u8).collect()
    }

    /// The whole chain, both ways, through a real local file: the stored bytes are age over
    /// zstd, hashed as stored, and decode back to the input.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn encode_then_decode_round_trips_and_hashes_the_stored_bytes() {
        let (enc, dec, dir) = keys();
        let data = sample(5 << 20);
        let stored_path = dir.path().join("x.zst.age");
        let dest = tokio::fs::File::create(&stored_path).await.unwrap();
        let counters = Arc::new(Counters::default());
        let compression = Compression { level: 1, threads: 2 };
        let out = encode_stream(
            Source::Stream(Box::new(std::io::Cursor::new(data.clone()))),
            Box::new(dest),
            &enc,
            &compression,
            counters.clone(),
        )
        .await
        .unwrap();
        let stored = std::fs::read(&stored_path).unwrap();
        assert_eq!((out.raw_size, out.size), (data.len() as u64, stored.len() as u64));
        assert_eq!((counters.read(), counters.stored()), (out.raw_size, out.size));
        assert_eq!(out.sha256, hex::encode(Sha256::digest(&stored)));
        assert!(stored.starts_with(b"age-encryption.org/v1"));
        assert!(out.size < out.raw_size / 5, "compressed before encryption: {}", out.size);
        let mut plain = Vec::new();
        open_decoded(&stored_path, &dec, "x").unwrap().read_to_end(&mut plain).unwrap();
        assert_eq!(plain, data);
        assert_eq!(decode_to_sink(&stored_path, &dec, "x").unwrap(), data.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_key_and_damaged_bytes_are_named() {
        let (enc, dec, dir) = keys();
        let (_, other, _other_dir) = keys();
        let path = dir.path().join("x.zst.age");
        let dest = tokio::fs::File::create(&path).await.unwrap();
        encode_stream(
            Source::Stream(Box::new(std::io::Cursor::new(sample(100_000)))),
            Box::new(dest),
            &enc,
            &Compression::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let e = check_decryptable(&path, &other, "x.zst.age").unwrap_err().to_string();
        assert!(e.contains("cannot decrypt x.zst.age") && e.contains("identity"), "{e}");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let e = decode_to_sink(&path, &dec, "x.zst.age").unwrap_err().to_string();
        assert!(e.contains("x.zst.age"), "{e}");
    }

    /// A failing source must fail the encode (never a clean, truncated stored file).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_source_fails_the_encode() {
        let (enc, _, dir) = keys();
        let source = tokio::io::AsyncReadExt::chain(
            std::io::Cursor::new(sample(300_000)),
            tokio_util::io::StreamReader::new(futures::stream::iter(vec![Err::<bytes::Bytes, _>(io::Error::other("pg_dump died"))])),
        );
        let dest = tokio::fs::File::create(dir.path().join("y")).await.unwrap();
        let e = encode_stream(Source::Stream(Box::new(source)), Box::new(dest), &enc, &Compression::default(), Default::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("pg_dump died"), "{e}");
    }
}
