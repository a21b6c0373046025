//! The one bridge between blocking code (zstd, age, tar, influxd's files, psql's stdin) and async
//! code (the backup server, database drivers, S3): a bounded pipe of byte chunks.
//!
//! [`pipe`] gives a [`PipeWriter`] and a [`PipeReader`]; each side works from a blocking thread
//! (`std::io::Write` / `std::io::Read`) or from async code (`write_async` / `AsyncRead`). The
//! bound gives back-pressure across the bridge, so memory stays at `chunk × depth` whatever the
//! size of the stream.
//!
//! A stream ends cleanly only when the writer calls `finish`: a writer dropped or failed
//! part-way makes the reader see an error, never a clean end. A truncated dump can therefore
//! never pass for a whole one.

use std::io::{self, BufRead, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

/// Default chunk size handed across the bridge.
pub const CHUNK: usize = 256 * 1024;
/// Default number of chunks in flight.
pub const DEPTH: usize = 8;

type Item = io::Result<Bytes>;

/// A bounded pipe of `chunk`-sized pieces, at most `depth` in flight.
pub fn pipe_with(chunk: usize, depth: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let finished = Arc::new(AtomicBool::new(false));
    let writer = PipeWriter { tx, buf: BytesMut::with_capacity(chunk), chunk, finished: finished.clone() };
    (writer, PipeReader { rx, current: Bytes::new(), finished, end: None })
}

/// A pipe with the default chunk size and depth.
pub fn pipe() -> (PipeWriter, PipeReader) {
    pipe_with(CHUNK, DEPTH)
}

fn reader_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the reading side of the stream stopped")
}

/// The writing half. Bytes are gathered into chunks; a full chunk waits for room in the pipe.
pub struct PipeWriter {
    tx: mpsc::Sender<Item>,
    buf: BytesMut,
    chunk: usize,
    finished: Arc<AtomicBool>,
}

impl PipeWriter {
    fn take_chunk(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.chunk)).freeze())
    }

    /// Writes from async code; waits while the pipe is full.
    pub async fn write_async(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = data.len().min(self.chunk - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= self.chunk {
                let chunk = self.take_chunk().expect("full");
                self.tx.send(Ok(chunk)).await.map_err(|_| reader_gone())?;
            }
        }
        Ok(())
    }

    /// Ends the stream cleanly, from async code.
    pub async fn finish_async(mut self) -> io::Result<()> {
        if let Some(chunk) = self.take_chunk() {
            self.tx.send(Ok(chunk)).await.map_err(|_| reader_gone())?;
        }
        self.finished.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the stream with an error the reader will see, from async code.
    pub async fn fail_async(self, e: io::Error) {
        let _ = self.tx.send(Err(e)).await;
    }

    /// Ends the stream cleanly, from a blocking thread.
    pub fn finish(mut self) -> io::Result<()> {
        if let Some(chunk) = self.take_chunk() {
            self.tx.blocking_send(Ok(chunk)).map_err(|_| reader_gone())?;
        }
        self.finished.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the stream with an error the reader will see, from a blocking thread.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

/// Blocking writes (call only from a blocking thread, never from async code).
impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= self.chunk {
            let chunk = self.take_chunk().expect("full");
            self.tx.blocking_send(Ok(chunk)).map_err(|_| reader_gone())?;
        }
        Ok(take)
    }

    /// Chunks are sent when full or at `finish`; flushing early would only make them smaller.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading half: `AsyncRead`/`AsyncBufRead` for async code, `Read`/`BufRead` for a
/// blocking thread.
pub struct PipeReader {
    rx: mpsc::Receiver<Item>,
    current: Bytes,
    finished: Arc<AtomicBool>,
    /// How the stream ended, once it has: kept so that every later read says the same (a
    /// failed stream never turns into a clean end on a second read).
    end: Option<Result<(), (io::ErrorKind, String)>>,
}

impl PipeReader {
    /// Takes one message of the channel: a chunk, a failure, or the channel closing (a clean
    /// end only if the writer said so).
    fn take(&mut self, item: Option<Item>) {
        match item {
            Some(Ok(chunk)) => self.current = chunk,
            Some(Err(e)) => self.end = Some(Err((e.kind(), e.to_string()))),
            None if self.finished.load(Ordering::Acquire) => self.end = Some(Ok(())),
            None => self.end = Some(Err((io::ErrorKind::UnexpectedEof, "the stream's producer stopped before the end".into()))),
        }
    }

    /// How the stream ended, as a read result, if it has.
    fn ended(&self) -> Option<io::Result<&'static [u8]>> {
        self.end.as_ref().map(|end| match end {
            Ok(()) => Ok(&[][..]),
            Err((kind, message)) => Err(io::Error::new(*kind, message.clone())),
        })
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for PipeReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            if let Some(end) = this.ended() {
                return Poll::Ready(end);
            }
            let item = ready!(this.rx.poll_recv(cx));
            this.take(item);
        }
        Poll::Ready(Ok(&this.current[..]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        self.get_mut().current.advance(amount);
    }
}

/// Blocking reads (call only from a blocking thread, never from async code).
impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            if let Some(end) = self.ended() {
                return end;
            }
            let item = self.rx.blocking_recv();
            self.take(item);
        }
        Ok(&self.current[..])
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount);
    }
}

/// Makes an async reader readable from a blocking thread: a task pumps it into a pipe,
/// filling each chunk before handing it over (pipes from child processes return small reads).
/// The task returns the bytes it read; `read` counts them as they go, for progress.
pub fn to_blocking(
    mut source: Box<dyn AsyncRead + Send + Unpin>,
    read: Arc<AtomicU64>,
) -> (PipeReader, tokio::task::JoinHandle<io::Result<u64>>) {
    let (mut writer, reader) = pipe_with(CHUNK, DEPTH / 2);
    let pump = tokio::spawn(async move {
        let mut total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                match source.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let kind = e.kind();
                        let message = e.to_string();
                        writer.fail_async(e).await;
                        return Err(io::Error::new(kind, message));
                    }
                }
            }
            if filled == 0 {
                break;
            }
            total += filled as u64;
            read.fetch_add(filled as u64, Ordering::Relaxed);
            if writer.write_async(&buf[..filled]).await.is_err() {
                // The consumer stopped; its own error is the one to report.
                return Ok(total);
            }
        }
        // A consumer that stopped has its own error to report.
        let _ = writer.finish_async().await;
        Ok(total)
    });
    (reader, pump)
}

/// Makes a blocking reader (a decoded stored file) readable from async code (database drivers,
/// a child's stdin). A read error on the thread reaches the async side as an error.
pub fn blocking_reader_to_async(reader: Box<dyn Read + Send>) -> Box<dyn AsyncRead + Send + Unpin> {
    let (writer, async_reader) = pipe();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut writer = writer;
        match io::copy(&mut reader, &mut writer) {
            Ok(_) => {
                let _ = writer.finish();
            }
            Err(e) => writer.fail(e),
        }
    });
    Box::new(async_reader)
}

/// Runs `produce` on a blocking thread, writing into a pipe whose reading half is returned for
/// async code (e.g. a tar built from local files, streamed to the backup server). An error from
/// `produce` reaches the reader as an error and is also returned by the handle.
pub fn spawn_blocking_writer<F>(produce: F) -> (PipeReader, tokio::task::JoinHandle<io::Result<()>>)
where
    F: FnOnce(&mut PipeWriter) -> io::Result<()> + Send + 'static,
{
    let (mut writer, reader) = pipe();
    let handle = tokio::task::spawn_blocking(move || match produce(&mut writer) {
        Ok(()) => writer.finish(),
        Err(e) => {
            writer.fail(io::Error::new(e.kind(), e.to_string()));
            Err(e)
        }
    });
    (reader, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_writer_to_async_reader_carries_every_byte() {
        let data = sample(3 * CHUNK + 123);
        let expected = data.clone();
        let (mut reader, handle) = spawn_blocking_writer(move |w| {
            for piece in data.chunks(1000) {
                w.write_all(piece)?;
            }
            Ok(())
        });
        let mut got = Vec::new();
        AsyncReadExt::read_to_end(&mut reader, &mut got).await.unwrap();
        handle.await.unwrap().unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_producer_that_stops_early_is_an_error_never_a_clean_end() {
        // Dropped without finish.
        let (mut w, mut r) = pipe_with(16, 2);
        tokio::task::spawn_blocking(move || {
            w.write_all(b"half of it").unwrap();
            drop(w);
        });
        let mut got = Vec::new();
        let e = AsyncReadExt::read_to_end(&mut r, &mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let again = AsyncReadExt::read_to_end(&mut r, &mut got).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::UnexpectedEof, "a failed stream stays failed");
        // Failed with a reason: the reader sees that reason.
        let (reader, handle) = spawn_blocking_writer(|w| {
            w.write_all(b"abc")?;
            Err(io::Error::other("disk on fire"))
        });
        let mut reader = reader;
        let e = AsyncReadExt::read_to_end(&mut reader, &mut Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert!(handle.await.unwrap().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_reader_to_blocking_and_back() {
        let data = sample(CHUNK * 2 + 7);
        let counted = Arc::new(AtomicU64::new(0));
        let (blocking, pump) = to_blocking(Box::new(std::io::Cursor::new(data.clone())), counted.clone());
        let mut back = blocking_reader_to_async(Box::new(blocking));
        let mut got = Vec::new();
        back.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(pump.await.unwrap().unwrap(), data.len() as u64);
        assert_eq!(counted.load(Ordering::Relaxed), data.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_source_reaches_the_blocking_reader() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::other("pg_dump died")))
            }
        }
        let (mut blocking, pump) = to_blocking(Box::new(Failing), Arc::new(AtomicU64::new(0)));
        let read = tokio::task::spawn_blocking(move || Read::read_to_end(&mut blocking, &mut Vec::new())).await.unwrap();
        assert!(read.unwrap_err().to_string().contains("pg_dump died"));
        assert!(pump.await.unwrap().is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_goes_away_stops_the_writer() {
        let (reader, handle) = spawn_blocking_writer(|w| {
            loop {
                w.write_all(&[0u8; 4096])?;
            }
        });
        drop(reader);
        let e = handle.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
