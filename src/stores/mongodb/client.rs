//! Talking to MongoDB: connecting, listing databases and collections, planning a dump, and keeping
//! the driver's errors to one short line.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, Credential};

use super::archive::CollectionMeta;
use super::{MongoDb, err};
use crate::error::Result;

/// Databases that hold the server's own state: left out unless listed by name.
pub(super) const SYSTEM_DATABASES: [&str; 3] = ["admin", "config", "local"];

/// Everything decided about a database before its data is read.
#[derive(Clone)]
pub(super) struct DatabasePlan {
    pub name: String,
    pub collections: Vec<CollectionMeta>,
}

/// A driver error as one short line (the driver's own text can span a whole topology dump).
pub(super) fn brief(e: &mongodb::error::Error) -> String {
    use mongodb::error::ErrorKind;
    let text = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({})", c.message, c.code_name),
        ErrorKind::Io(io) => format!("connection to the server lost or refused ({io})"),
        // The message describes the whole topology; the first server's error is what matters.
        ErrorKind::ServerSelection { message, .. } => match message.split_once("Error: Kind: ") {
            Some((_, cause)) => format!("no server answered ({})", cause.split(", labels").next().unwrap_or(cause)),
            None => format!("no server answered ({message})"),
        },
        ErrorKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (Some(w), _) if !w.is_empty() => {
                format!("{} (document {} of the batch)", w[0].message, w[0].index)
            }
            (_, Some(wc)) => wc.message.clone(),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 { format!("{}…", one_line.chars().take(300).collect::<String>()) } else { one_line }
}

/// The hosts part of a MongoDB URL, without user name or options, for messages.
pub(super) fn url_hosts(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority).to_string()
}

/// True when the URL carries `user:password@`.
pub(super) fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

impl MongoDb {
    fn hosts(&self) -> String {
        url_hosts(&self.cfg.url)
    }

    /// Connects and checks that the server answers.
    pub(super) async fn client(&self) -> Result<Client> {
        let mut options =
            ClientOptions::parse(&self.cfg.url).await.map_err(|e| err(format!("stores.mongodb.url cannot be used: {}", brief(&e))))?;
        options.app_name = Some("lifeboat".into());
        // Fail within seconds when the server is down, unless the URL says otherwise.
        options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        options.connect_timeout.get_or_insert(Duration::from_secs(10));
        if let Some(secret) = &self.password {
            let credential = options.credential.get_or_insert_with(Credential::default);
            if credential.username.is_none() {
                return Err(err(
                    "stores.mongodb.password_file is set but stores.mongodb.url names no user; write mongodb://USER@host:port/",
                ));
            }
            credential.password = Some(secret.read()?);
        }
        let client = Client::with_options(options).map_err(|e| err(format!("stores.mongodb.url cannot be used: {}", brief(&e))))?;
        client.database("admin").run_command(doc! { "ping": 1 }).await.map_err(|e| {
            err(format!("cannot connect to MongoDB at {}: {}; check that the server is up and stores.mongodb.url", self.hosts(), brief(&e)))
        })?;
        Ok(client)
    }

    /// The databases to back up: the configured ones (each must exist) or all but the system ones.
    pub(super) async fn databases(&self, client: &Client) -> Result<Vec<String>> {
        let mut existing =
            client.list_database_names().await.map_err(|e| err(format!("cannot list databases on {}: {}", self.hosts(), brief(&e))))?;
        existing.sort();
        if self.cfg.databases.is_empty() {
            return Ok(existing.into_iter().filter(|d| !SYSTEM_DATABASES.contains(&d.as_str())).collect());
        }
        for db in &self.cfg.databases {
            if !existing.contains(db) {
                return Err(err(format!(
                    "database `{db}` named in stores.mongodb.databases does not exist on {}; fix the list (existing: {})",
                    self.hosts(),
                    existing.join(", ")
                )));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    /// Lists a database's collections with their options and indexes.
    pub(super) async fn plan(&self, client: &Client, name: &str) -> Result<DatabasePlan> {
        let db = client.database(name);
        let listing_failed = |e: mongodb::error::Error| err(format!("cannot list the collections of {name}: {}", brief(&e)));
        let specs: Vec<Document> = db
            .run_cursor_command(doc! { "listCollections": 1 })
            .await
            .map_err(listing_failed)?
            .try_collect()
            .await
            .map_err(listing_failed)?;
        let mut collections = Vec::new();
        for spec in specs {
            let collection = spec.get_str("name").map_err(|_| err(format!("{name}: listCollections returned an entry without a name")))?;
            if collection.starts_with("system.") {
                continue;
            }
            let kind = spec.get_str("type").unwrap_or("collection");
            let options = spec.get_document("options").cloned().unwrap_or_default();
            let indexes = match kind {
                "collection" => {
                    let index_failed =
                        |e: mongodb::error::Error| err(format!("cannot list the indexes of {name}.{collection}: {}", brief(&e)));
                    match db.run_cursor_command(doc! { "listIndexes": collection }).await {
                        Ok(cursor) => cursor.try_collect::<Vec<Document>>().await.map_err(index_failed)?,
                        // Dropped since it was listed: there is nothing to back up.
                        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
                            continue;
                        }
                        Err(e) => return Err(index_failed(e)),
                    }
                }
                "view" => Vec::new(),
                other => {
                    return Err(err(format!(
                        "{name}.{collection} is a {other} collection, which Lifeboat cannot back up in a form mongorestore restores; \
                         nothing was backed up (back this database up with mongodump instead)"
                    )));
                }
            };
            collections.push(CollectionMeta {
                db: name.to_string(),
                collection: collection.to_string(),
                kind: kind.to_string(),
                options,
                indexes,
            });
        }
        collections.sort_by(|a, b| a.collection.cmp(&b.collection));
        Ok(DatabasePlan { name: name.to_string(), collections })
    }

    pub(super) async fn server_version(client: &Client) -> Result<String> {
        let info = client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| err(format!("cannot read the server version: {}", brief(&e))))?;
        Ok(info.get_str("version").unwrap_or("unknown").to_string())
    }

    /// The collections of a database (views and `system.*` left out), as the target holds them now.
    pub(super) async fn collection_names(client: &Client, name: &str) -> Result<Vec<String>> {
        let db = client.database(name);
        let failed = |e: mongodb::error::Error| err(format!("cannot list the collections of {name}: {}", brief(&e)));
        let specs: Vec<Document> = db
            .run_cursor_command(doc! { "listCollections": 1, "filter": { "type": "collection" } })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        Ok(specs
            .iter()
            .filter_map(|spec| spec.get_str("name").ok())
            .filter(|collection| !collection.starts_with("system."))
            .map(str::to_string)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(url_hosts("mongodb://app@db1:27017,db2:27017/admin?replicaSet=rs0"), "db1:27017,db2:27017");
        assert!(url_has_password("mongodb://app:secret@db1:27017/"));
        assert!(!url_has_password("mongodb://app@db1:27017/?authSource=admin"));
        assert!(!url_has_password("mongodb://db1:27017"));
    }
}
