//! The streaming layers: `source → zstd → age → SHA-256 → sink` for backups, and the reverse for
//! restores. Each layer is a small `Write` (or `Read`) wrapping the next, so memory stays bounded
//! by a few buffers whatever the size of the dump, and nothing is written whole to local disk.
//!
//! The compress/encrypt/hash chain is synchronous (zstd and age are), so it runs on a blocking
//! thread; it hands fixed-size chunks through a bounded channel to the async upload, which gives
//! back-pressure from the backup server all the way to the dump tool.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use age::secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::{Compression, EncryptionConfig, SecretFile};
use crate::error::{Error, Result};

/// Size of the chunks handed from the encoding thread to the upload.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between encoder and upload: bounds memory to about CHUNK * (DEPTH + 2).
const DEPTH: usize = 4;
/// zstd multi-threaded job size (zstd's minimum is 512 KiB).
const JOB_SIZE: u32 = 1 << 20;

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

    fn encryptor(&self) -> Result<age::Encryptor> {
        match self {
            EncryptKey::Recipients(rs) => {
                age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| Error::Decrypt(format!("cannot set up encryption: {e}")))
            }
            EncryptKey::Passphrase(file) => {
                Ok(age::Encryptor::with_user_passphrase(SecretString::from(file.read()?)))
            }
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
                let id = line.parse::<age::x25519::Identity>().map_err(|_| {
                    bad("it does not hold an age identity (AGE-SECRET-KEY-1...); `lifeboat keygen` makes one".into())
                })?;
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
            return Ok(DecryptKey {
                identities: vec![Box::new(id)],
                source: format!("passphrase file {}", path.display()),
            });
        }
        Err(Error::Usage("encryption.identity_file or passphrase_file is needed to decrypt".into()))
    }

    /// Opens an age stream, failing clearly when the key does not fit.
    fn decrypt<R: io::BufRead>(&self, input: R, name: &str) -> Result<age::stream::StreamReader<R>> {
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

/// Byte counters shared with the progress display.
#[derive(Default, Debug)]
pub struct Counters {
    pub read: AtomicU64,
    pub stored: AtomicU64,
}

/// What one encoded stream produced.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    pub raw_size: u64,
    pub size: u64,
    pub sha256: String,
    /// CPU-ish time spent inside the compress/encrypt/hash chain (wall time of that thread's writes).
    pub encode_time: Duration,
    pub elapsed: Duration,
}

/// Hashes and counts what passes through, then hands fixed-size chunks to the upload channel.
struct HashingChunkSink {
    hasher: Sha256,
    size: u64,
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
    counters: Arc<Counters>,
}

impl HashingChunkSink {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload to the backup server stopped"))
    }
}

impl Write for HashingChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.counters.stored.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut rest = data;
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == CHUNK {
                self.send_buf()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads `source` to its end and writes it compressed, encrypted and hashed to `dest`.
/// `dest` is shut down (flushed and closed) at the end; the caller decides when it becomes
/// visible. Memory use is bounded by a few MiB whatever the source size.
pub async fn encode_stream(
    mut source: Box<dyn AsyncRead + Send + Unpin>,
    mut dest: Box<dyn AsyncWrite + Send + Unpin>,
    key: &EncryptKey,
    compression: &Compression,
    counters: Arc<Counters>,
) -> Result<EncodedFile> {
    let started = Instant::now();
    let encryptor = key.encryptor()?;
    let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let (enc_tx, mut enc_rx) = mpsc::channel::<Vec<u8>>(DEPTH);
    let level = compression.level;
    let threads = if compression.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
    } else {
        compression.threads
    };

    // Encoding thread: raw chunks in, encoded chunks out.
    let sink_counters = counters.clone();
    let encoder = tokio::task::spawn_blocking(move || -> io::Result<(u64, String, Duration)> {
        let sink = HashingChunkSink {
            hasher: Sha256::new(),
            size: 0,
            buf: Vec::with_capacity(CHUNK),
            tx: enc_tx,
            counters: sink_counters,
        };
        let age_writer = encryptor.wrap_output(sink)?;
        let mut zstd = zstd::stream::write::Encoder::new(age_writer, level)?;
        if threads > 1 {
            zstd.multithread(threads)?;
            // Small jobs keep the workers' buffers (and so peak memory) small; at zstd's
            // default (4 × window) each job holds several MiB per worker.
            zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
        }
        let mut busy = Duration::ZERO;
        while let Some(chunk) = raw_rx.blocking_recv() {
            let t = Instant::now();
            zstd.write_all(&chunk)?;
            busy += t.elapsed();
        }
        let t = Instant::now();
        let age_writer = zstd.finish()?;
        let mut sink = age_writer.finish()?;
        sink.send_buf()?;
        busy += t.elapsed();
        let digest = hex::encode(sink.hasher.finalize());
        Ok((sink.size, digest, busy))
    });

    // Upload task: encoded chunks out to the server.
    let upload = async move {
        while let Some(chunk) = enc_rx.recv().await {
            dest.write_all(&chunk).await?;
        }
        dest.shutdown().await?;
        Ok::<_, io::Error>(())
    };

    // Reader: source into raw chunks.
    let read_counters = counters.clone();
    let read = async move {
        let mut raw = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK / 4];
            let mut filled = 0;
            // Fill the chunk reasonably before handing it over; pipes return small reads.
            while filled < buf.len() {
                let n = source.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            raw += filled as u64;
            read_counters.read.fetch_add(filled as u64, Ordering::Relaxed);
            if raw_tx.send(buf).await.is_err() {
                // The encoder stopped; its error is reported below.
                break;
            }
        }
        Ok::<_, io::Error>(raw)
    };

    let (read_res, upload_res, enc_res) = tokio::join!(read, upload, encoder);
    let enc = enc_res.map_err(|e| Error::io("encoding thread", io::Error::other(e.to_string())))?;
    // Report the first cause: a failed upload makes the encoder fail with BrokenPipe.
    upload_res.map_err(|e| Error::io("writing to the backup server", e))?;
    let raw_size = read_res.map_err(|e| Error::io("reading the dump stream", e))?;
    let (size, sha256, encode_time) = enc.map_err(|e| Error::io("compressing and encrypting", e))?;
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

/// Copies `source` to `dest` while computing its SHA-256 and size.
pub async fn copy_hashed(
    mut source: Box<dyn AsyncRead + Send + Unpin>,
    dest: &mut (dyn AsyncWrite + Send + Unpin),
    counters: &Counters,
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
        size += n as u64;
        counters.stored.fetch_add(n as u64, Ordering::Relaxed);
    }
    dest.flush().await?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Opens a local stored file (age + zstd) as a plain byte stream.
pub fn open_decoded(path: &Path, key: &DecryptKey, name: &str) -> Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let reader = key.decrypt(BufReader::with_capacity(256 * 1024, file), name)?;
    let decoder = zstd::stream::read::Decoder::new(reader)
        .map_err(|e| Error::io(format!("starting to decompress {name}"), e))?;
    Ok(Box::new(DecodeErrors { inner: decoder, name: name.to_string() }))
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

/// Names the file in decode errors so an operator knows which stored file is bad.
struct DecodeErrors<R> {
    inner: R,
    name: String,
}

impl<R: Read> Read for DecodeErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("decrypting/decompressing {} failed: {e}", self.name)))
    }
}

/// Runs a blocking reader on its own thread and exposes it as an async reader, so async consumers
/// (database drivers, child process stdin) can take decoded bytes with bounded buffering.
/// A read error on the thread reaches the async side as an error, never as a clean end.
pub fn blocking_reader_to_async(mut reader: Box<dyn Read + Send>) -> Box<dyn AsyncRead + Send + Unpin> {
    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(DEPTH);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; CHUNK / 4];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

/// Generates a new X25519 identity: (identity file text, public recipient).
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    (text, recipient)
}
