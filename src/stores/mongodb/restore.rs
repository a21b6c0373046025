//! Restoring one database from its archive: drop, create collections, insert, build indexes.

use futures::{StreamExt, TryStreamExt};
use mongodb::Client;
use mongodb::bson::{Bson, RawDocumentBuf, doc};
use tokio::io::AsyncRead;

use super::archive::{self, Event};
use super::client::SYSTEM_DATABASES;
use super::client::brief;
use super::{RestoreFiles, err};
use crate::error::Result;
use crate::pipeline::bridge::blocking_reader_to_async;

/// Restore inserts: at most this many documents, or this many bytes, per batch.
const BATCH_DOCS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;
/// Insert batches in flight at once; with the batch limits above, at most 16 MiB of documents.
const INSERT_WORKERS: usize = 4;

type ArchiveReader = archive::Reader<Box<dyn AsyncRead + Send + Unpin>>;

/// Opens a database's archive and checks that it holds that database; `context` ends each error
/// message. The archive is decrypted and decompressed on a blocking thread, parsed here.
pub(super) async fn open_archive(files: &RestoreFiles, file: &str, name: &str, context: &str) -> Result<ArchiveReader> {
    let reader =
        archive::Reader::open(blocking_reader_to_async(files.open(file)?)).await.map_err(|e| err(format!("{file}: {e}{context}")))?;
    if let Some(other) = reader.collections.iter().find(|c| c.db != name) {
        return Err(err(format!(
            "{file} holds {}.{}, which is not in database {name}: the backup is damaged or tampered with{context}",
            other.db.escape_debug(),
            other.collection.escape_debug()
        )));
    }
    Ok(reader)
}

/// Reads a database's whole archive once, before anything is dropped: every namespace, length
/// and CRC is checked, so a damaged or hostile archive fails the run while the target is intact.
pub(super) async fn check_archive(files: &RestoreFiles, file: &str, name: &str) -> Result<()> {
    let context = "; nothing was restored";
    let mut reader = open_archive(files, file, name, context).await?;
    while reader.next_event(BATCH_DOCS, BATCH_BYTES).await.map_err(|e| err(format!("{file}: {e}{context}")))?.is_some() {}
    Ok(())
}

/// A database the restore may drop and replace: a valid name; one of `databases` when the
/// restore side lists them, and never a system database otherwise (a backup never holds one then).
pub(super) fn check_target_database(name: &str, databases: &[String]) -> Result<()> {
    let allowed = if databases.is_empty() { !SYSTEM_DATABASES.contains(&name) } else { databases.iter().any(|d| d == name) };
    if !archive::valid_database_name(name) || !allowed {
        return Err(err(format!(
            "the backup holds database `{}`, which stores.mongodb.databases does not list: nothing was restored; add it to the list to restore it",
            name.escape_debug()
        )));
    }
    Ok(())
}

pub(super) async fn restore_database(client: &Client, name: &str, file: &str, files: &RestoreFiles) -> Result<()> {
    let broken =
        |e: std::io::Error| err(format!("{file}: {e}; database {name} is only partly restored: restore an older backup with --from ID"));
    let mut reader = open_archive(files, file, name, "").await?;
    let collections = reader.collections.clone();

    let db = client.database(name);
    db.drop().await.map_err(|e| err(format!("cannot drop database {name}: {}", brief(&e))))?;
    tracing::info!("mongodb: dropped {name}; restoring {} collection(s)", collections.len());
    let partly = |what: String| err(format!("{what}; database {name} is only partly restored: run the restore again (it starts over)"));
    for c in collections.iter().filter(|c| c.kind == "collection") {
        let mut create = doc! { "create": c.collection.clone() };
        create.extend(c.options.clone());
        db.run_command(create).await.map_err(|e| partly(format!("cannot create collection {name}.{}: {}", c.collection, brief(&e))))?;
    }

    // Batches are inserted several at a time (as mongorestore's parallel collections and insert
    // workers do): the server is busy finding room and indexing `_id`, and one batch waiting for
    // its answer would leave it idle. Order between batches does not matter: the only index
    // while inserting is `_id`, and the other indexes are built after the data.
    let mut inserting = futures::stream::FuturesUnordered::new();
    while let Some(event) = reader.next_event(BATCH_DOCS, BATCH_BYTES).await.map_err(broken)? {
        match event {
            Event::Documents { collection, docs } => {
                if inserting.len() >= INSERT_WORKERS {
                    inserting.next().await.expect("not empty")?;
                }
                let target = db.collection::<RawDocumentBuf>(&collection);
                let partly = &partly;
                inserting.push(async move {
                    target
                        .insert_many(docs)
                        // Unordered, as mongorestore inserts by default: the server may write
                        // the batch in one go. Any document refused still fails the restore.
                        .ordered(false)
                        // The documents were valid when written; a validator added since must
                        // not make the restore differ from the backup.
                        .bypass_document_validation(true)
                        .await
                        .map(|_| ())
                        .map_err(|e| partly(format!("inserting into {name}.{collection} failed: {}", brief(&e))))
                });
            }
            Event::End { collection, count } => {
                tracing::debug!("mongodb: {name}.{collection}: {count} documents read");
            }
        }
    }
    while let Some(done) = inserting.next().await {
        done?;
    }

    // Indexes of different collections are built at once: each build is one server-side job.
    let mut builds = Vec::new();
    for c in collections.iter().filter(|c| c.kind == "collection") {
        let indexes: Vec<Bson> = c
            .indexes
            .iter()
            .filter(|i| i.get_str("name").ok() != Some("_id_"))
            .map(|i| {
                let mut index = i.clone();
                // The server picks the index version; `ns` is obsolete and refused by newer servers.
                index.remove("v");
                index.remove("ns");
                Bson::Document(index)
            })
            .collect();
        if !indexes.is_empty() {
            let (db, collection) = (db.clone(), c.collection.clone());
            builds.push(async move {
                let built = db.run_command(doc! { "createIndexes": collection.clone(), "indexes": indexes }).await;
                built.map(|_| ()).map_err(|e| (collection, e))
            });
        }
    }
    futures::stream::iter(builds)
        .buffer_unordered(INSERT_WORKERS)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|(collection, e)| partly(format!("cannot create the indexes of {name}.{collection}: {}", brief(&e))))?;
    // Views last: they may read from the collections above.
    for c in collections.iter().filter(|c| c.kind == "view") {
        let mut create = doc! { "create": c.collection.clone() };
        create.extend(c.options.clone());
        db.run_command(create).await.map_err(|e| partly(format!("cannot create view {name}.{}: {}", c.collection, brief(&e))))?;
    }
    Ok(())
}
