//! Restoring one database from its archive: drop, create collections, insert, build each
//! collection's indexes and count it once its data is in.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use mongodb::bson::{Bson, RawDocumentBuf, doc};
use mongodb::{Client, Database};
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::archive::{self, CollectionMeta, Event};
use super::client::SYSTEM_DATABASES;
use super::client::brief;
use super::{MongoDb, RestoreFiles, err};
use crate::error::Result;
use crate::pipeline::bridge::blocking_reader_to_async;

/// Restore inserts: at most this many documents, or this many bytes, per batch.
const BATCH_DOCS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;
/// Insert batches in flight at once; with the batch limits above, at most 16 MiB of documents.
const INSERT_WORKERS: usize = 4;
/// Collections building their indexes and being counted at once, beside the inserts. On FerretDB
/// (400,000 documents, 2 cores) one, two and four took the same time: the counts are bound by the
/// server reading every document once (and PostgreSQL setting hint bits on the freshly loaded
/// pages); two keeps a large collection's count from holding up a small one's.
const FINISHING_AT_ONCE: usize = 2;

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

/// Replaces database `name` with the archive `file` and returns the documents per collection the
/// target then holds.
///
/// Each collection goes as mongorestore takes it: its documents, then its indexes, then (for the
/// verification) its count, while the archive's other collections are still being inserted. The
/// archive interleaves collections, so a collection is done when its end marker has been read and
/// its last batch acknowledged; its indexes and count then run beside the remaining inserts.
pub(super) async fn restore_database(client: &Client, name: &str, file: &str, files: &RestoreFiles) -> Result<BTreeMap<String, u64>> {
    let broken =
        |e: std::io::Error| err(format!("{file}: {e}; database {name} is only partly restored: restore an older backup with --from ID"));
    let mut reader = open_archive(files, file, name, "").await?;
    let collections = reader.collections.clone();
    let started = Instant::now();

    let db = client.database(name);
    db.drop().await.map_err(|e| err(format!("cannot drop database {name}: {}", brief(&e))))?;
    tracing::info!("mongodb: dropped {name}; restoring {} collection(s)", collections.len());
    let partly =
        move |what: String| err(format!("{what}; database {name} is only partly restored: run the restore again (it starts over)"));
    let mut pending: HashMap<String, Pending> = HashMap::new();
    for c in collections.iter().filter(|c| c.kind == "collection") {
        let mut create = doc! { "create": c.collection.clone() };
        create.extend(c.options.clone());
        db.run_command(create).await.map_err(|e| partly(format!("cannot create collection {name}.{}: {}", c.collection, brief(&e))))?;
        pending.insert(c.collection.clone(), Pending { in_flight: 0, ended: false, indexes: index_specs(c) });
    }

    // Batches are inserted several at a time (as mongorestore's parallel collections and insert
    // workers do): the server is busy finding room and indexing `_id`, and one batch waiting for
    // its answer would leave it idle. Order between batches does not matter: the only index
    // while inserting is `_id`, and a collection's other indexes are built after its data.
    let mut inserting = futures::stream::FuturesUnordered::new();
    let mut finishing = Finishing::new(db.clone(), name);
    let mut documents = 0u64;
    loop {
        finishing.check().map_err(&partly)?;
        let event = if inserting.len() >= INSERT_WORKERS {
            None
        } else {
            match reader.next_event(BATCH_DOCS, BATCH_BYTES).await.map_err(broken)? {
                Some(event) => Some(event),
                None => break,
            }
        };
        match event {
            None => {
                let collection = inserting.next().await.expect("not empty")?;
                acknowledged(&mut pending, &mut finishing, collection);
            }
            Some(Event::Documents { collection, docs }) => {
                let Some(state) = pending.get_mut(&collection) else {
                    return Err(partly(format!("{file} holds documents for {name}.{collection}, which is not a collection")));
                };
                state.in_flight += 1;
                documents += docs.len() as u64;
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
                        .map(|_| collection.clone())
                        .map_err(|e| partly(format!("inserting into {name}.{collection} failed: {}", brief(&e))))
                });
            }
            Some(Event::End { collection, count }) => {
                tracing::debug!("mongodb: {name}.{collection}: {count} documents read");
                if let Some(state) = pending.get_mut(&collection) {
                    state.ended = true;
                    start_if_done(&mut pending, &mut finishing, collection);
                }
            }
        }
    }
    while let Some(done) = inserting.next().await {
        acknowledged(&mut pending, &mut finishing, done?);
    }
    tracing::info!("mongodb: {name}: {documents} documents inserted in {:.1} s", started.elapsed().as_secs_f64());
    let mut counts = finishing.finish().await.map_err(&partly)?;
    // Views last: they may read from the collections above.
    for c in collections.iter().filter(|c| c.kind == "view") {
        let mut create = doc! { "create": c.collection.clone() };
        create.extend(c.options.clone());
        db.run_command(create).await.map_err(|e| partly(format!("cannot create view {name}.{}: {}", c.collection, brief(&e))))?;
    }
    // Whatever else the database holds now (another writer's collection) is counted too, so that
    // the comparison with the backup's counts sees it.
    for collection in MongoDb::collection_names(client, name).await? {
        if let Entry::Vacant(slot) = counts.entry(collection) {
            let n = count(&db, name, slot.key()).await.map_err(err)?;
            slot.insert(n);
        }
    }
    tracing::info!("mongodb: {name} restored, indexed and counted in {:.1} s", started.elapsed().as_secs_f64());
    Ok(counts)
}

/// Where a collection of the archive stands during a restore.
struct Pending {
    /// Insert batches sent and not yet acknowledged.
    in_flight: usize,
    /// Its end marker has been read: no more batches will come.
    ended: bool,
    /// Its indexes other than `_id`, to build once its data is in.
    indexes: Vec<Bson>,
}

/// One insert batch of `collection` was acknowledged: when it was the last, the collection's
/// indexes and count start.
fn acknowledged(pending: &mut HashMap<String, Pending>, finishing: &mut Finishing, collection: String) {
    pending.get_mut(&collection).expect("inserted collections are known").in_flight -= 1;
    start_if_done(pending, finishing, collection);
}

/// Starts the indexes and count of `collection` once its end marker is read and no batch of it
/// is in flight.
fn start_if_done(pending: &mut HashMap<String, Pending>, finishing: &mut Finishing, collection: String) {
    let state = pending.get_mut(&collection).expect("known collection");
    if state.ended && state.in_flight == 0 {
        finishing.start(collection, std::mem::take(&mut state.indexes));
    }
}

/// The documents `collection` holds now, exactly.
async fn count(db: &Database, name: &str, collection: &str) -> std::result::Result<u64, String> {
    db.collection::<RawDocumentBuf>(collection)
        .count_documents(doc! {})
        .await
        .map_err(|e| format!("cannot count the documents of {name}.{collection}: {}", brief(&e)))
}

/// A collection's indexes as `createIndexes` takes them.
fn index_specs(c: &CollectionMeta) -> Vec<Bson> {
    c.indexes
        .iter()
        .filter(|i| i.get_str("name").ok() != Some("_id_"))
        .map(|i| {
            let mut index = i.clone();
            // The server picks the index version; `ns` is obsolete and refused by newer servers.
            index.remove("v");
            index.remove("ns");
            Bson::Document(index)
        })
        .collect()
}

/// The collections whose data is in: each builds its indexes and is counted on a task of its own,
/// at most [`FINISHING_AT_ONCE`] at a time, while the restore goes on inserting the others.
struct Finishing {
    db: Database,
    name: String,
    tasks: JoinSet<std::result::Result<(String, u64), String>>,
    slots: Arc<Semaphore>,
    counts: BTreeMap<String, u64>,
}

impl Finishing {
    fn new(db: Database, name: &str) -> Finishing {
        Finishing {
            db,
            name: name.to_string(),
            tasks: JoinSet::new(),
            slots: Arc::new(Semaphore::new(FINISHING_AT_ONCE)),
            counts: BTreeMap::new(),
        }
    }

    fn start(&mut self, collection: String, indexes: Vec<Bson>) {
        let (db, name, slots) = (self.db.clone(), self.name.clone(), self.slots.clone());
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let started = Instant::now();
            if !indexes.is_empty() {
                db.run_command(doc! { "createIndexes": collection.clone(), "indexes": indexes })
                    .await
                    .map_err(|e| format!("cannot create the indexes of {name}.{collection}: {}", brief(&e)))?;
            }
            let indexed = started.elapsed();
            let n = count(&db, &name, &collection).await?;
            tracing::info!(
                "mongodb: {name}.{collection}: indexes built in {:.1} s, {n} documents counted in {:.1} s",
                indexed.as_secs_f64(),
                (started.elapsed() - indexed).as_secs_f64()
            );
            Ok((collection, n))
        });
    }

    /// Takes the results of the tasks that have ended; the first failure stops the restore.
    fn check(&mut self) -> std::result::Result<(), String> {
        while let Some(done) = self.tasks.try_join_next() {
            self.record(done)?;
        }
        Ok(())
    }

    /// Waits for every task; the first failure stops the others.
    async fn finish(mut self) -> std::result::Result<BTreeMap<String, u64>, String> {
        while let Some(done) = self.tasks.join_next().await {
            self.record(done)?;
        }
        Ok(self.counts)
    }

    fn record(
        &mut self,
        done: std::result::Result<std::result::Result<(String, u64), String>, tokio::task::JoinError>,
    ) -> std::result::Result<(), String> {
        let (collection, n) = done.map_err(|e| e.to_string())??;
        self.counts.insert(collection, n);
        Ok(())
    }
}
