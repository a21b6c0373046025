//! Writing one database's archive: several collections read at once (as mongodump's
//! `--numParallelCollections`), their documents framed into interleaved archive blocks.
//!
//! On a busy server most of a dump's time is the server finding and encoding documents, one
//! cursor at a time; reading several collections at once keeps every core of the server busy.
//! The archive format allows this: a collection's documents may come in many blocks, each headed
//! by its namespace, interleaved with other collections' blocks, with the CRC over the
//! collection's documents in its own order in the closing block. Each reader hands whole blocks
//! (about [`BLOCK_BYTES`]) to the one writer through a bounded channel, so memory stays bounded
//! by `PARALLEL_COLLECTIONS × (one cursor batch + one block) + CHANNEL_DEPTH blocks`.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{RawDocumentBuf, doc};
use tokio::sync::mpsc;

use super::archive::{self, CollectionMeta, Crc64};
use super::client::{DatabasePlan, brief};
use super::err;
use crate::error::Error;
use crate::pipeline::bridge::PipeWriter;

/// Collections read at once (mongodump's default for `--numParallelCollections`). Measured on
/// FerretDB (400,000 documents, server and Lifeboat on 2 cores): one reader took 79 s, two 62-71 s,
/// three 66 s and four 65-74 s, but the archive interleaves only as many collections as were read
/// at once, and a restore inserts its batches in archive order: from a two-reader archive its
/// four batches in flight went to two tables and the inserts took 65 s instead of 38-52 s.
pub(super) const PARALLEL_COLLECTIONS: usize = 4;
/// Documents are handed to the writer in blocks of about this many bytes.
const BLOCK_BYTES: usize = 1 << 20;
/// Blocks waiting for the writer.
const CHANNEL_DEPTH: usize = 4;
/// Documents per cursor batch: fewer round trips than the server's default of 101 for the first
/// batch, while a batch of registry-sized documents (1-2 KB) stays near 1 MiB: each of the readers
/// holds its current batch and the server's next reply. Peak RSS of a backup at 40,000 and
/// 400,000 documents: 46 and 55 MiB with batches of 1,000, 43 and 46 MiB with 500, in the same time.
const CURSOR_BATCH: u32 = 500;

/// Why writing an archive stopped.
pub(super) enum Stop {
    /// The archive's reader went away (the upload failed); the upload's error says why.
    Closed,
    Failed(Error),
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Stop {
        Stop::Closed
    }
}

/// What a collection reader hands the writer.
enum Block {
    Documents { index: usize, bytes: Vec<u8> },
    End { index: usize, crc: i64, count: u64 },
}

/// Writes the whole archive of `plan` into `out` and returns the documents written per
/// collection.
pub(super) async fn write_archive(
    client: Client,
    plan: DatabasePlan,
    server_version: String,
    out: &mut PipeWriter,
) -> Result<BTreeMap<String, u64>, Stop> {
    let tool = format!("lifeboat {}", env!("CARGO_PKG_VERSION"));
    out.write_async(&archive::prelude(&server_version, &tool, &plan.collections)).await?;
    let (sender, mut blocks) = mpsc::channel::<Block>(CHANNEL_DEPTH);
    let db = client.database(&plan.name);
    let readers = async {
        // Owned here, so that it is dropped when the readers end and the writer sees the end.
        let sender = sender;
        futures::stream::iter(plan.collections.iter().enumerate().map(Ok::<_, Stop>))
            .try_for_each_concurrent(PARALLEL_COLLECTIONS, |(index, meta)| read_collection(&db, &plan.name, index, meta, sender.clone()))
            .await
    };
    let writer = async {
        let mut counts = BTreeMap::new();
        let mut opened = vec![false; plan.collections.len()];
        while let Some(block) = blocks.recv().await {
            match block {
                Block::Documents { index, bytes } => {
                    opened[index] = true;
                    write_block(out, &plan.name, &plan.collections[index], &bytes).await?;
                }
                Block::End { index, crc, count } => {
                    let meta = &plan.collections[index];
                    if !opened[index] {
                        // An empty collection (or a view) still gets its one empty block, as mongodump writes it.
                        write_block(out, &plan.name, meta, &[]).await?;
                    }
                    out.write_async(&archive::namespace_header(&plan.name, &meta.collection, true, crc)).await?;
                    out.write_async(&archive::TERMINATOR).await?;
                    if meta.kind == "collection" {
                        counts.insert(meta.collection.clone(), count);
                    }
                    tracing::debug!("mongodb: {}.{}: {count} documents", plan.name, meta.collection);
                }
            }
        }
        Ok::<_, Stop>(counts)
    };
    // The writer ends when every reader has ended and dropped its sender: a failed reader ends
    // the others (try_for_each_concurrent drops them); a failed writer drops the receiver, so
    // every reader's next send fails.
    let (read, counts) = tokio::join!(readers, writer);
    read?;
    counts
}

async fn write_block(out: &mut PipeWriter, db: &str, meta: &CollectionMeta, documents: &[u8]) -> std::io::Result<()> {
    out.write_async(&archive::namespace_header(db, &meta.collection, false, 0)).await?;
    out.write_async(documents).await?;
    out.write_async(&archive::TERMINATOR).await
}

/// Reads one collection to its end, sending its documents in blocks and then its CRC and count.
async fn read_collection(
    db: &mongodb::Database,
    name: &str,
    index: usize,
    meta: &CollectionMeta,
    sender: mpsc::Sender<Block>,
) -> Result<(), Stop> {
    let mut crc = Crc64::new();
    let mut count = 0u64;
    if meta.kind == "collection" {
        let failed = |e: mongodb::error::Error| {
            Stop::Failed(err(format!(
                "reading {name}.{} failed: {}; the run was not completed, earlier backups are untouched",
                meta.collection,
                brief(&e)
            )))
        };
        let mut cursor = db.collection::<RawDocumentBuf>(&meta.collection).find(doc! {}).batch_size(CURSOR_BATCH).await.map_err(failed)?;
        let mut block = Vec::with_capacity(BLOCK_BYTES + 64 * 1024);
        while cursor.advance().await.map_err(failed)? {
            let bytes = cursor.current().as_bytes();
            crc.update(bytes);
            block.extend_from_slice(bytes);
            count += 1;
            if block.len() >= BLOCK_BYTES {
                let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK_BYTES + 64 * 1024));
                sender.send(Block::Documents { index, bytes: full }).await.map_err(|_| Stop::Closed)?;
            }
        }
        if !block.is_empty() {
            sender.send(Block::Documents { index, bytes: block }).await.map_err(|_| Stop::Closed)?;
        }
    }
    sender.send(Block::End { index, crc: crc.value(), count }).await.map_err(|_| Stop::Closed)
}
