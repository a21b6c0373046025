//! A child process's stdout read by the encoder thread itself, in gathered reads.
//!
//! Dump tools write through stdio in 4 KiB pieces: pg_dump makes about 370,000 writes for a
//! 1.6 GB database. A reader waiting on the pipe is woken by each one, and on two cores those
//! wake-ups (with the async pump they came to 40,000 context switches a second) cost about as
//! much as a layer of the pipeline. So the encoder thread reads the pipe itself, with no pump
//! and no extra copy, and after a read that brought less than [`GATHER`] it sleeps [`SETTLE`]:
//! meanwhile the writes pile up in the pipe (widened to 1 MiB by `widen_pipe`), and no one is
//! waiting on it to be woken. The next read then takes them all at once.
//!
//! The end of the pipe is only the end of the bytes: whether the dump was whole is the child's
//! exit status, which the store checks before the file can count.

use std::io::{self, BufReader, PipeReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most one read takes (the widened pipe's size).
const BUFFER: usize = 1 << 20;
/// A read that brought at least this much is handed on at once; less, and the reader gathers.
const GATHER: usize = 128 << 10;
/// The pause between gathering reads: at pg_dump's 250 MB/s about 125 KB arrive meanwhile, far
/// from filling the pipe, so the writer is never held up.
const SETTLE: Duration = Duration::from_micros(500);

/// A pipe whose every read gathers, counting the bytes into `read` for progress.
pub struct ChildPipe {
    pipe: PipeReader,
    read: Arc<AtomicU64>,
}

impl ChildPipe {
    /// The pipe behind a buffer of [`BUFFER`] bytes, which each gathered read fills.
    pub fn reader(pipe: PipeReader, read: Arc<AtomicU64>) -> BufReader<ChildPipe> {
        BufReader::with_capacity(BUFFER, ChildPipe { pipe, read })
    }
}

impl Read for ChildPipe {
    /// Reads until [`GATHER`] bytes (or `out`) are filled or the pipe ends, sleeping [`SETTLE`]
    /// after each read that fell short; 0 only at the end.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = GATHER.min(out.len());
        let mut filled = 0;
        while filled < want {
            match self.pipe.read(&mut out[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if filled < want {
                std::thread::sleep(SETTLE);
            }
        }
        self.read.fetch_add(filled as u64, Ordering::Relaxed);
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    #[test]
    fn reads_everything_a_slow_small_writer_sends_and_counts_it() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let copy = sent.clone();
        let writing = std::thread::spawn(move || {
            for (i, piece) in copy.chunks(4096).enumerate() {
                writer.write_all(piece).unwrap();
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let counted = Arc::new(AtomicU64::new(0));
        let mut pipe = ChildPipe::reader(reader, counted.clone());
        let mut got = Vec::new();
        pipe.read_to_end(&mut got).unwrap();
        writing.join().unwrap();
        assert_eq!(got, sent);
        assert_eq!(counted.load(Ordering::Relaxed), sent.len() as u64);
        // At the end it stays at the end.
        assert_eq!(pipe.fill_buf().unwrap().len(), 0);
    }

    #[test]
    fn a_writer_that_closes_at_once_gives_an_empty_stream() {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(writer);
        let mut got = Vec::new();
        ChildPipe::reader(reader, Arc::new(AtomicU64::new(0))).read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }
}
