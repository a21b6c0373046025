//! The stream layers, each a small writer (or reader) wrapping the next, as Proxmox's client
//! stacks its checksum, crypt and blob writers. [`super::encode_stream`] assembles them:
//! `zstd → age → count → hash → pipe to the server`, and restores read them back in reverse.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// zstd multi-threaded job size (zstd's minimum is 512 KiB): small jobs keep the workers'
/// buffers, and so peak memory, small; at zstd's default (4 × window) each job holds several
/// MiB per worker.
const JOB_SIZE: u32 = 1 << 20;

/// SHA-256 and size of everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), size: 0 }
    }

    /// The inner writer, the size, and the SHA-256 (hex) of what passed.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.size, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Adds what is written through it to a shared counter (progress of a running transfer).
pub struct CountWriter<W> {
    inner: W,
    counter: Arc<AtomicU64>,
}

impl<W: Write> CountWriter<W> {
    pub fn new(inner: W, counter: Arc<AtomicU64>) -> Self {
        CountWriter { inner, counter }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A zstd compressor at `level`, with `threads` workers (more than one: multi-threaded with
/// bounded jobs).
pub fn compressor<W: Write>(inner: W, level: i32, threads: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut zstd = zstd::stream::write::Encoder::new(inner, level)?;
    if threads > 1 {
        zstd.multithread(threads)?;
        zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
    }
    Ok(zstd)
}

/// How a copy into the encoder failed: reading its source, or in the layers below.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// What [`copy_buffered`] moved: the bytes, and the time spent inside `dest`'s writes (the busy
/// time of the layers below).
pub struct Copied {
    pub bytes: u64,
    pub busy: Duration,
}

/// Copies `source` into `dest` a whole buffer at a time (no 8 KiB copies).
pub fn copy_buffered(source: &mut impl BufRead, dest: &mut impl Write) -> Result<Copied, CopyError> {
    let mut copied = Copied { bytes: 0, busy: Duration::ZERO };
    loop {
        let chunk = source.fill_buf().map_err(CopyError::Read)?;
        if chunk.is_empty() {
            return Ok(copied);
        }
        let n = chunk.len();
        let started = Instant::now();
        dest.write_all(chunk).map_err(CopyError::Write)?;
        copied.busy += started.elapsed();
        copied.bytes += n as u64;
        source.consume(n);
    }
}

/// Names the stored file in read errors, so an operator knows which one is bad.
pub struct NamedErrors<R> {
    inner: R,
    name: String,
}

impl<R> NamedErrors<R> {
    pub fn new(inner: R, name: &str) -> Self {
        NamedErrors { inner, name: name.to_string() }
    }
}

impl<R: Read> Read for NamedErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| io::Error::new(e.kind(), format!("decrypting/decompressing {} failed: {e}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i / 7) % 61) as u8).collect()
    }

    #[test]
    fn hash_writer_hashes_and_sizes_what_passes() {
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, size, sha) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(size, 11);
        assert_eq!(sha, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }

    #[test]
    fn count_writer_adds_to_the_shared_counter() {
        let counter = Arc::new(AtomicU64::new(5));
        let mut w = CountWriter::new(Vec::new(), counter.clone());
        w.write_all(&[1u8; 1000]).unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 1005);
        assert_eq!(w.into_inner().len(), 1000);
    }

    #[test]
    fn compressor_round_trips_single_and_multi_threaded() {
        let data = sample(3 << 20);
        for threads in [1, 2] {
            let mut z = compressor(Vec::new(), 1, threads).unwrap();
            let mut source = io::BufReader::with_capacity(64 * 1024, &data[..]);
            copy_buffered(&mut source, &mut z).unwrap();
            let packed = z.finish().unwrap();
            assert!(packed.len() < data.len() / 10, "{threads}: {}", packed.len());
            assert_eq!(zstd::decode_all(&packed[..]).unwrap(), data);
        }
    }

    #[test]
    fn named_errors_name_the_file() {
        let bad = zstd::stream::read::Decoder::new(&b"not zstd at all"[..]).unwrap();
        let mut r = NamedErrors::new(bad, "db-x.dump.zst.age");
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("db-x.dump.zst.age"), "{e}");
    }
}
