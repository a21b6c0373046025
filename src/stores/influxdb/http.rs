//! InfluxDB's HTTP API: ping (server clock and version), InfluxQL queries read chunk by chunk,
//! databases, retention policies, continuous queries, and the census that counts field values
//! before a time T (the store's module documentation says why counts are bounded by T).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{InfluxDb, err};
use crate::error::{Error, Result};

/// Rows per chunk of a chunked /query response: bounds memory whatever the series cardinality.
const CHUNK_ROWS: usize = 1000;

/// An InfluxQL identifier, always quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A name as it appears in a count item: bare when plain, quoted otherwise, so items stay unique.
pub(super) fn item_part(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') { name.to_string() } else { ident(name) }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub name: String,
    pub duration: String,
    pub shard_group_duration: String,
    pub replication: u64,
    pub default: bool,
}

/// `influxd restore -db` leaves continuous queries out, so Lifeboat records and recreates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousQuery {
    pub name: String,
    /// The full `CREATE CONTINUOUS QUERY` statement, as `SHOW CONTINUOUS QUERIES` gives it.
    pub query: String,
}

/// What a database holds before T: its retention policies, continuous queries and the counts of
/// each measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Census {
    pub policies: Vec<RetentionPolicy>,
    pub continuous_queries: Vec<ContinuousQuery>,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Series {
    #[serde(default)]
    name: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// Adds up `SELECT count(*) FROM rp.measurement` answers: one series per measurement, maybe
/// split across chunks.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, rp: &str, s: Series) {
        let key = format!("{}.{}", item_part(rp), item_part(&s.name));
        let values: u64 = s
            .values
            .iter()
            .flat_map(|row| row.iter().zip(&s.columns).filter(|(_, c)| c.as_str() != "time").filter_map(|(v, _)| v.as_u64()))
            .sum();
        *self.counts.entry(format!("{key}:values")).or_default() += values;
    }
}

/// Count queries run at once: influxd spreads one query over its cores only in part.
const CENSUS_QUERIES: usize = 2;

/// The errors queries get from a shard while a restore loads data into it.
fn shard_loading(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("shard is disabled") || text.contains("engine is closed")
}

impl InfluxDb {
    fn endpoint(&self, path: &str) -> url::Url {
        let mut u = self.http.clone();
        let base = u.path().trim_end_matches('/').to_string();
        u.set_path(&format!("{base}/{path}"));
        u
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        err(format!("cannot reach InfluxDB's HTTP API at {} ({e}); check that InfluxDB is up and stores.influxdb.http_url", self.http))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let mut req = self.client.request(method, self.endpoint(path));
        if let (Some(user), Some(secret)) = (&self.cfg.username, &self.password) {
            req = req.basic_auth(user, Some(secret.read()?));
        }
        Ok(req)
    }

    /// Pings the HTTP API; returns the server's clock (its `Date` header) and version.
    pub(super) async fn ping(&self) -> Result<(chrono::DateTime<chrono::Utc>, String)> {
        let resp =
            self.request(reqwest::Method::GET, "ping")?.timeout(Duration::from_secs(10)).send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.unreachable(format!("HTTP {}", resp.status())));
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let version = header("X-Influxdb-Version").unwrap_or_else(|| "unknown".into());
        let now = header("Date")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
            .ok_or_else(|| err(format!("{} answered /ping without a Date header: is it InfluxDB 1.x?", self.http)))?;
        Ok((now, version))
    }

    /// Runs one InfluxQL statement (POST, so DDL works too) and hands each series of the answer
    /// to `each`, reading the chunked response piece by piece.
    pub(super) async fn query(&self, db: Option<&str>, q: &str, mut each: impl FnMut(Series)) -> Result<()> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("q", q).append_pair("chunked", "true").append_pair("chunk_size", &CHUNK_ROWS.to_string());
            if let Some(db) = db {
                form.append_pair("db", db);
            }
            form.finish()
        };
        let mut resp = self
            .request(reqwest::Method::POST, "query")?
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let failed = |detail: String| err(format!("query `{q}` failed: {detail}"));
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(err(format!(
                "InfluxDB at {} refused the query (HTTP {status}); set stores.influxdb.username and password_file",
                self.http
            )));
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut handle_line = |line: &[u8]| -> Result<()> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let answer: QueryResponse =
                serde_json::from_slice(line).map_err(|e| failed(format!("HTTP {status}, unreadable answer ({e})")))?;
            if let Some(e) = answer.error {
                return Err(failed(e));
            }
            for result in answer.results {
                if let Some(e) = result.error {
                    return Err(failed(e));
                }
                result.series.into_iter().for_each(&mut each);
            }
            Ok(())
        };
        loop {
            let chunk = resp.chunk().await.map_err(|e| failed(format!("reading the answer: {e}")))?;
            let Some(chunk) = chunk else { break };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                handle_line(&line)?;
            }
        }
        handle_line(&pending)?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        Ok(())
    }

    pub(super) async fn show_databases(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.query(None, "SHOW DATABASES", |s| {
            names.extend(s.values.iter().filter_map(|row| row.first().and_then(|v| v.as_str()).map(str::to_string)))
        })
        .await?;
        Ok(names)
    }

    /// The databases to back up: the configured ones (each must exist) or all but `_internal`.
    pub(super) async fn databases(&self) -> Result<Vec<String>> {
        let existing = self.show_databases().await?;
        if self.cfg.databases.is_empty() {
            return Ok(existing.into_iter().filter(|d| d != "_internal").collect());
        }
        for db in &self.cfg.databases {
            if !existing.contains(db) {
                return Err(err(format!(
                    "database `{db}` named in stores.influxdb.databases does not exist on {}; fix the list (existing: {})",
                    self.http,
                    existing.join(", ")
                )));
            }
        }
        Ok(self.cfg.databases.clone())
    }

    pub(super) async fn retention_policies(&self, db: &str) -> Result<Vec<RetentionPolicy>> {
        let mut policies = Vec::new();
        self.query(None, &format!("SHOW RETENTION POLICIES ON {}", ident(db)), |s| {
            let col = |name: &str| s.columns.iter().position(|c| c == name);
            let (n, d, sg, r, def) = (col("name"), col("duration"), col("shardGroupDuration"), col("replicaN"), col("default"));
            for row in &s.values {
                let get = |i: Option<usize>| i.and_then(|i| row.get(i));
                let text = |i| get(i).and_then(|v: &serde_json::Value| v.as_str()).unwrap_or_default().to_string();
                policies.push(RetentionPolicy {
                    name: text(n),
                    duration: text(d),
                    shard_group_duration: text(sg),
                    replication: get(r).and_then(|v| v.as_u64()).unwrap_or(0),
                    default: get(def).and_then(|v| v.as_bool()).unwrap_or(false),
                });
            }
        })
        .await?;
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(policies)
    }

    pub(super) async fn continuous_queries(&self, db: &str) -> Result<Vec<ContinuousQuery>> {
        let mut queries = Vec::new();
        self.query(None, "SHOW CONTINUOUS QUERIES", |s| {
            if s.name == db {
                queries.extend(s.values.iter().filter_map(|row| match (row.first()?.as_str(), row.get(1)?.as_str()) {
                    (Some(name), Some(query)) => Some(ContinuousQuery { name: name.into(), query: query.into() }),
                    _ => None,
                }));
            }
        })
        .await?;
        queries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(queries)
    }

    /// The retention policies and continuous queries of `db`.
    pub(super) async fn schema(&self, db: &str) -> Result<(Vec<RetentionPolicy>, Vec<ContinuousQuery>)> {
        Ok((self.retention_policies(db).await?, self.continuous_queries(db).await?))
    }

    /// The census of a database just restored. `influxd restore` sends each shard over its own
    /// connection and exits without waiting for the server to load it; the server disables the
    /// shard while it loads it. So: wait while shards are loading, and until the counts match
    /// the backup or have not changed for a few seconds (then the caller reports the difference).
    pub(super) async fn settled_census(&self, db: &str, before: &str, expected: &BTreeMap<String, u64>) -> Result<Census> {
        const LOADING_LIMIT: Duration = Duration::from_secs(30 * 60);
        const SETTLED: Duration = Duration::from_secs(5);
        let started = std::time::Instant::now();
        let mut last: Option<(Census, std::time::Instant)> = None;
        loop {
            match self.census_once(db, before).await {
                Err(e) if shard_loading(&e) => {
                    if started.elapsed() > LOADING_LIMIT {
                        return Err(err(format!(
                            "{db}: InfluxDB was still loading the restored shards after {} minutes; check its log, then run the restore again",
                            LOADING_LIMIT.as_secs() / 60
                        )));
                    }
                    last = None;
                }
                Err(e) => return Err(e),
                Ok(census) if &census.counts == expected => return Ok(census),
                Ok(census) => match &last {
                    Some((previous, since)) if *previous == census => {
                        if since.elapsed() >= SETTLED {
                            return Ok(census);
                        }
                    }
                    _ => last = Some((census, std::time::Instant::now())),
                },
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn count_part(&self, db: &str, rp: String, q: String) -> Result<Tally> {
        let mut part = Tally::default();
        self.query(Some(db), &q, |s| part.add(&rp, s)).await.map(|()| part)
    }

    /// The measurements of `db` (in any retention policy).
    async fn measurements(&self, db: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.query(Some(db), &format!("SHOW MEASUREMENTS ON {}", ident(db)), |s| {
            names.extend(s.values.iter().filter_map(|row| row.first().and_then(|v| v.as_str()).map(str::to_string)))
        })
        .await?;
        Ok(names)
    }

    /// One `count(*)` per retention policy and measurement, [`CENSUS_QUERIES`] at a time: on
    /// `scripts/bench/stores`' 3 M points this takes 9 s where one `FROM rp./.*/` query took 19 s
    /// (that form counts every field of every measurement in each measurement).
    async fn census_once(&self, db: &str, before: &str) -> Result<Census> {
        let policies = self.retention_policies(db).await?;
        let measurements = self.measurements(db).await?;
        let mut queries = Vec::new();
        for rp in &policies {
            for m in &measurements {
                queries.push((
                    rp.name.clone(),
                    format!("SELECT count(*) FROM {}.{}.{} WHERE time < '{before}'", ident(db), ident(&rp.name), ident(m)),
                ));
            }
        }
        // The first failed query ends the census; the others in flight are dropped.
        let tally = futures::stream::iter(queries)
            .map(|(rp, q)| self.count_part(db, rp, q))
            .buffer_unordered(CENSUS_QUERIES)
            .try_fold(Tally::default(), |mut tally, part| async move {
                for (key, n) in part.counts {
                    *tally.counts.entry(key).or_default() += n;
                }
                Ok(tally)
            })
            .await
            .map_err(|e| match e {
                Error::Store { message, .. } => err(format!("{db}: counting points: {message}")),
                other => other,
            })?;
        let continuous_queries = self.continuous_queries(db).await?;
        // As the backup's counts: a measurement with nothing before T has no entry.
        let mut counts = tally.counts;
        counts.retain(|_, n| *n > 0);
        Ok(Census { policies, continuous_queries, counts })
    }

    pub(super) async fn drop_database(&self, db: &str) -> Result<()> {
        self.query(None, &format!("DROP DATABASE {}", ident(db)), |_| {}).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(json: &str) -> Series {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn names_are_quoted_when_needed() {
        assert_eq!(ident("my \"db\""), "\"my \\\"db\\\"\"");
        assert_eq!(item_part("cpu_load-1"), "cpu_load-1");
        assert_eq!(item_part("a.b"), "\"a.b\"");
    }

    #[test]
    fn tally_adds_field_values_per_measurement_across_chunks() {
        let mut t = Tally::default();
        t.add(
            "autogen",
            series(r#"{"name":"cpu","columns":["time","count_v","count_s"],"values":[["1970-01-01T00:00:00Z",3,null]],"partial":true}"#),
        );
        t.add("autogen", series(r#"{"name":"cpu","columns":["time","count_v","count_s"],"values":[["1970-01-01T00:00:00Z",2,3]]}"#));
        t.add("autogen", series(r#"{"name":"mem","columns":["time","count_free"],"values":[["1970-01-01T00:00:00Z",4]]}"#));
        t.add("my rp", series(r#"{"name":"cpu","columns":["time","count_v"],"values":[["1970-01-01T00:00:00Z",7]]}"#));
        assert_eq!(t.counts["autogen.cpu:values"], 8);
        assert_eq!(t.counts["autogen.mem:values"], 4);
        assert_eq!(t.counts["\"my rp\".cpu:values"], 7);
        assert_eq!(t.counts.len(), 3, "values only: {:?}", t.counts);
    }
}
