//! One object streaming into an S3 bucket ([`super::s3::S3Server::create`]): the bytes written
//! go through a pipe to a task that cuts them into parts of a multipart upload, growing with the
//! stream (8 MiB for the first thousand, doubling every thousand after: 10,000 parts hold 8 TB).
//! Parts above [`MEMORY_PART`] are spooled through a private temporary file, so memory stays
//! bounded whatever the size. The object is completed, conditionally, only when the writer is
//! shut down; a writer dropped or failed before that aborts the upload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::s3::{S3Error, put_if_absent};

/// Starts the upload of `key` and returns the writer its bytes go to.
pub(super) fn start(client: Client, bucket: String, key: String) -> S3Writer {
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let finished = Arc::new(AtomicBool::new(false));
    let upload = Upload { client, bucket, key, finished: finished.clone() };
    let task = tokio::spawn(upload.run(reader));
    S3Writer { pipe: Some(writer), task: Some(task), finished, failed: None }
}

/// Parts held in memory up to this size; larger parts (objects past 8 GB) go through a file.
const MEMORY_PART: u64 = 8 << 20;
/// The largest part S3 accepts.
const MAX_PART: u64 = 5 << 30;

/// The size of part `n` (from 1): 8 MiB for the first thousand, doubling every thousand after.
fn part_size(n: u32) -> u64 {
    (MEMORY_PART << ((n.saturating_sub(1) / 1000).min(9))).min(MAX_PART)
}

/// One object streaming in: the bytes written to the pipe are cut into parts by [`Upload::run`].
struct Upload {
    client: Client,
    bucket: String,
    key: String,
    /// Set by the writer's shutdown before the pipe closes: an end of stream without it is a
    /// writer dropped or failed part-way, and the upload is aborted.
    finished: Arc<AtomicBool>,
}

/// One part's bytes: in memory, or spooled through a private file for large parts.
enum PartBody {
    /// Shared, so that sending it (and again on a retry) copies nothing.
    Memory(bytes::Bytes),
    File(tempfile::NamedTempFile, u64),
}

impl PartBody {
    fn len(&self) -> u64 {
        match self {
            PartBody::Memory(v) => v.len() as u64,
            PartBody::File(_, n) => *n,
        }
    }

    async fn stream(&self) -> std::result::Result<ByteStream, String> {
        match self {
            PartBody::Memory(v) => Ok(ByteStream::from(v.clone())),
            PartBody::File(file, _) => ByteStream::from_path(file.path()).await.map_err(|e| format!("reading a spooled part: {e}")),
        }
    }
}

impl Upload {
    async fn run(self, mut reader: DuplexStream) -> std::result::Result<(), String> {
        let mut upload_id: Option<String> = None;
        let result = self.stream(&mut reader, &mut upload_id).await;
        if result.is_err()
            && let Some(id) = &upload_id
        {
            // No orphan parts left billing; nothing appears under the key.
            let abort = self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(id);
            if let Err(e) = abort.send().await {
                tracing::warn!(
                    "aborting the upload of {} failed ({}); the bucket's lifecycle rule for incomplete uploads removes it",
                    self.key,
                    S3Error::from_sdk(e).detail
                );
            }
        }
        result
    }

    async fn stream(&self, reader: &mut DuplexStream, upload_id: &mut Option<String>) -> std::result::Result<(), String> {
        let mut parts = Vec::new();
        let mut in_flight: Option<JoinHandle<std::result::Result<CompletedPart, String>>> = None;
        let mut number = 0u32;
        loop {
            let size = part_size(number + 1);
            let (body, ended) = fill(reader, size).await?;
            if ended && !self.finished.load(Ordering::SeqCst) {
                return Err("the stream ended before the writer finished it".into());
            }
            if number == 0 && ended {
                // The whole object fits one part: one conditional PUT.
                let data = body.stream().await?;
                return match put_if_absent(&self.client, &self.bucket, &self.key, data).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!("{} exists already: nothing stored is ever replaced", self.key)),
                    Err(e) => Err(e.detail),
                };
            }
            if upload_id.is_none() {
                let created = self.client.create_multipart_upload().bucket(&self.bucket).key(&self.key).send().await;
                let created = created.map_err(|e| format!("starting a multipart upload: {}", S3Error::from_sdk(e).detail))?;
                *upload_id = Some(created.upload_id().ok_or("the server returned no upload id")?.to_string());
            }
            if let Some(previous) = in_flight.take() {
                parts.push(previous.await.map_err(|e| e.to_string())??);
            }
            if body.len() > 0 {
                number += 1;
                let (client, bucket, key, id) =
                    (self.client.clone(), self.bucket.clone(), self.key.clone(), upload_id.clone().expect("started"));
                in_flight = Some(tokio::spawn(async move {
                    let len = body.len() as i64;
                    let out = client
                        .upload_part()
                        .bucket(&bucket)
                        .key(&key)
                        .upload_id(&id)
                        .part_number(number as i32)
                        .content_length(len)
                        .body(body.stream().await?)
                        .send()
                        .await
                        .map_err(|e| format!("uploading part {number}: {}", S3Error::from_sdk(e).detail))?;
                    Ok(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number as i32).build())
                }));
            }
            if ended {
                if let Some(last) = in_flight.take() {
                    parts.push(last.await.map_err(|e| e.to_string())??);
                }
                let id = upload_id.clone().expect("started");
                let complete = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&id)
                    .if_none_match("*")
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
                return match complete.send().await.map_err(S3Error::from_sdk) {
                    Ok(_) => Ok(()),
                    Err(e) if e.exists() => Err(format!("{} exists already: nothing stored is ever replaced", self.key)),
                    Err(e) => Err(format!("completing the upload: {}", e.detail)),
                };
            }
        }
    }
}

/// Reads up to `size` bytes of the stream into one part; true when the stream ended.
async fn fill(reader: &mut DuplexStream, size: u64) -> std::result::Result<(PartBody, bool), String> {
    let mut chunk = vec![0u8; 256 << 10];
    if size <= MEMORY_PART {
        let mut data = Vec::with_capacity(size as usize);
        while (data.len() as u64) < size {
            let want = chunk.len().min((size - data.len() as u64) as usize);
            let n = reader.read(&mut chunk[..want]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok((PartBody::Memory(data.into()), true));
            }
            data.extend_from_slice(&chunk[..n]);
        }
        return Ok((PartBody::Memory(data.into()), false));
    }
    let spool = tempfile::NamedTempFile::new().map_err(|e| format!("making a spool file for a large part: {e}"))?;
    let mut file = tokio::fs::File::from_std(spool.reopen().map_err(|e| e.to_string())?);
    let mut written = 0u64;
    while written < size {
        let want = chunk.len().min((size - written) as usize);
        let n = reader.read(&mut chunk[..want]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            file.flush().await.map_err(|e| e.to_string())?;
            return Ok((PartBody::File(spool, written), true));
        }
        file.write_all(&chunk[..n]).await.map_err(|e| format!("spooling a large part: {e}"))?;
        written += n as u64;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    Ok((PartBody::File(spool, written), false))
}

/// The writer side of [`BackupServer::create`]: bytes go into the pipe, the upload task cuts and
/// sends them; shutting down waits for the object to be complete (or for why it is not).
pub(super) struct S3Writer {
    pipe: Option<DuplexStream>,
    task: Option<JoinHandle<std::result::Result<(), String>>>,
    finished: Arc<AtomicBool>,
    /// The upload's error once known, returned to every later call.
    failed: Option<String>,
}

impl S3Writer {
    /// The upload's own error, once the pipe says it stopped reading.
    fn upload_error(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        if let Some(message) = &self.failed {
            return Poll::Ready(std::io::Error::other(message.clone()));
        }
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(std::io::Error::other("the upload ended"));
        };
        match Pin::new(task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(done) => {
                self.task = None;
                let message = match done {
                    Ok(Err(message)) => message,
                    Ok(Ok(())) => "the upload ended early".into(),
                    Err(e) => format!("the upload task failed: {e}"),
                };
                self.failed = Some(message.clone());
                Poll::Ready(std::io::Error::other(message))
            }
        }
    }
}

impl AsyncWrite for S3Writer {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(pipe) = this.pipe.as_mut() else {
            return Poll::Ready(Err(std::io::Error::other("write after shutdown")));
        };
        match Pin::new(pipe).poll_write(cx, buf) {
            Poll::Ready(Err(_)) => this.upload_error(cx).map(Err),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(pipe) = this.pipe.as_mut() {
            this.finished.store(true, Ordering::SeqCst);
            if let Poll::Ready(Err(_)) = Pin::new(pipe).poll_shutdown(cx) {
                return this.upload_error(cx).map(Err);
            }
            // Dropping the writing end is what the reader sees as the end of the stream.
            this.pipe = None;
        }
        if let Some(message) = &this.failed {
            return Poll::Ready(Err(std::io::Error::other(message.clone())));
        }
        let Some(task) = this.task.as_mut() else { return Poll::Ready(Ok(())) };
        match Pin::new(task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(done) => {
                this.task = None;
                match done {
                    Ok(Ok(())) => Poll::Ready(Ok(())),
                    Ok(Err(message)) => {
                        this.failed = Some(message.clone());
                        Poll::Ready(Err(std::io::Error::other(message)))
                    }
                    Err(e) => Poll::Ready(Err(std::io::Error::other(format!("the upload task failed: {e}")))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_ten_thousand_hold_five_terabytes() {
        assert_eq!(part_size(1), 8 << 20);
        assert_eq!(part_size(1000), 8 << 20);
        assert_eq!(part_size(1001), 16 << 20);
        let total: u64 = (1..=10_000).map(part_size).sum();
        assert!(total > 5 << 40, "{total}");
        assert!((1..=10_000).map(part_size).all(|p| (5 << 20..=MAX_PART).contains(&p)));
    }
}
