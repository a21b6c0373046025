//! Backups made by the original scripts (the chart's `postgres/backup.sh`): one `<db>.dump`
//! (`pg_dump -Fc`) per database and `roles.sql` (`pg_dumpall --roles-only` with every line
//! matching `ALTER ROLE.*PASSWORD` removed, which takes each role's attributes with it).
//!
//! They carry no counts, so the counts are read from the dumps themselves: pg_restore writes each
//! dump out as SQL (every byte of it read, so a damaged dump fails here), and the rows of each
//! table's `COPY` block are counted. `count(*)` of a partitioned or inherited table also counts
//! its children's rows, so the tables' `ATTACH PARTITION` and `INHERITS` are followed the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use super::sql::dump_file_name;
use super::{Postgres, PostgresExtra, ROLES_FILE, err};
use crate::error::{Error, Result};
use crate::external;
use crate::layout::manifest::StoreBackup;
use crate::stores::stderr_tail::StderrTail;
use crate::stores::{Adopted, AdoptedFile};

const LEGACY_ROLES: &str = "roles.sql";

fn refused(what: String) -> Error {
    Error::Integrity(format!("{what}; nothing was changed"))
}

impl Postgres {
    pub(super) async fn adopt(&self, unpacked: &Path, _out: &Path) -> Result<Adopted> {
        let mut dumps = BTreeMap::new();
        let mut roles = None;
        let entries = std::fs::read_dir(unpacked).map_err(|e| Error::io("reading the unpacked backup", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading the unpacked backup", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            match name.strip_suffix(".dump") {
                Some(db) if is_file && !db.is_empty() => {
                    dumps.insert(db.to_string(), entry.path());
                }
                _ if is_file && name == LEGACY_ROLES => roles = Some(entry.path()),
                _ => tracing::warn!("postgres: the backup also holds `{}`, which is not a dump; it is left out", name.escape_debug()),
            }
        }
        if dumps.is_empty() {
            return Err(refused(
                "the backup holds no database dump (`<database>.dump`): it is not a PostgreSQL backup of the original scripts".into(),
            ));
        }
        let mut files = Vec::new();
        let mut counts = BTreeMap::new();
        let mut extra = PostgresExtra { databases: BTreeMap::new(), roles_file: None, roles_without_attributes: true };
        let mut dumped_by = String::new();
        for (db, path) in &dumps {
            tracing::info!("postgres: reading {db}.dump through pg_restore to count its rows");
            dumped_by = self.dump_version(db, path).await?;
            counts.insert(db.clone(), self.count_dump_rows(db, path).await?);
            extra.databases.insert(db.clone(), dump_file_name(db));
            files.push(AdoptedFile { name: dump_file_name(db), path: path.clone() });
        }
        match roles {
            Some(path) => {
                extra.roles_file = Some(ROLES_FILE.into());
                files.push(AdoptedFile { name: ROLES_FILE.into(), path });
            }
            None => tracing::warn!("postgres: the backup holds no {LEGACY_ROLES}; a restore creates no roles"),
        }
        Ok(Adopted { files, backup: StoreBackup::new("rows", counts, &extra).tool("pg_dump", dumped_by) })
    }

    /// `pg_restore --list`: the dump opens; returns the pg_dump version that made it.
    async fn dump_version(&self, db: &str, path: &Path) -> Result<String> {
        let mut cmd = self.tools.command(external::PG_RESTORE.name)?;
        let out =
            cmd.arg("--list").arg(path).stdin(Stdio::null()).output().await.map_err(|e| err(format!("cannot run pg_restore: {e}")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(refused(format!(
                "{db}.dump does not open with pg_restore ({})",
                why.trim().lines().last().unwrap_or("no message")
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().find_map(|l| l.trim_start_matches(';').trim().strip_prefix("Dumped by pg_dump version:"));
        Ok(version.map(|v| v.trim().to_string()).unwrap_or_default())
    }

    /// Rows per table of one dump, read from its SQL as pg_restore writes it out.
    async fn count_dump_rows(&self, db: &str, path: &Path) -> Result<BTreeMap<String, u64>> {
        let mut cmd = self.tools.command(external::PG_RESTORE.name)?;
        cmd.arg("--file=-").arg(path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| err(format!("cannot run pg_restore: {e}")))?;
        let stderr = StderrTail::watch(child.stderr.take().expect("piped"), |_| {});
        let mut out = tokio::io::BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
        let mut census = DumpCensus::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = out.read_until(b'\n', &mut line).await.map_err(|e| err(format!("reading pg_restore's output for {db}: {e}")))?;
            if n == 0 {
                break;
            }
            census.line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
        let status = child.wait().await.map_err(|e| err(format!("waiting for pg_restore: {e}")))?;
        if !status.success() {
            return Err(refused(format!("{db}.dump cannot be read to its end by pg_restore ({})", stderr.last(2).await)));
        }
        census.counts().map_err(|why| refused(format!("{db}.dump: {why}")))
    }
}

/// What the SQL of a dump says about its tables: which exist, the rows of each one's `COPY`,
/// and which tables are children of which (partitions, inheritance).
#[derive(Debug, Default)]
struct DumpCensus {
    tables: BTreeSet<String>,
    rows: BTreeMap<String, u64>,
    /// (child, parent)
    children: Vec<(String, String)>,
    /// The table whose `COPY` block is being read.
    in_copy: Option<String>,
    /// The table whose `CREATE TABLE` statement is being read (for its `INHERITS`).
    in_create: Option<String>,
}

impl DumpCensus {
    fn line(&mut self, line: &[u8]) {
        if let Some(table) = &self.in_copy {
            if line == b"\\." {
                self.in_copy = None;
            } else {
                *self.rows.entry(table.clone()).or_default() += 1;
            }
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else { return };
        if let Some(rest) = text.strip_prefix("CREATE TABLE ").or_else(|| text.strip_prefix("CREATE UNLOGGED TABLE ")) {
            if let Some((name, _)) = qualified_name(rest) {
                self.tables.insert(name.clone());
                self.in_create = (!text.ends_with(';')).then_some(name);
            }
        } else if let Some(table) = &self.in_create {
            if let Some(parents) = text.strip_prefix("INHERITS (") {
                let mut rest = parents;
                while let Some((parent, after)) = qualified_name(rest) {
                    self.children.push((table.clone(), parent));
                    rest = after.trim_start_matches([',', ' ']);
                }
            }
            if text.ends_with(';') {
                self.in_create = None;
            }
        } else if let Some(rest) = text.strip_prefix("ALTER TABLE ONLY ").or_else(|| text.strip_prefix("ALTER TABLE ")) {
            if let Some((parent, after)) = qualified_name(rest)
                && let Some(child) = after.strip_prefix(" ATTACH PARTITION ")
                && let Some((child, _)) = qualified_name(child)
            {
                self.children.push((child, parent));
            }
        } else if let Some(rest) = text.strip_prefix("COPY ")
            && text.ends_with(" FROM stdin;")
            && let Some((name, _)) = qualified_name(rest)
        {
            self.rows.entry(name.clone()).or_default();
            self.in_copy = Some(name);
        }
    }

    /// Rows per table as `count(*)` finds them after a restore: each table's own rows and every
    /// descendant's (each descendant once).
    fn counts(&self) -> std::result::Result<BTreeMap<String, u64>, String> {
        if let Some(table) = &self.in_copy {
            return Err(format!("the data of {table} ends without its end marker"));
        }
        let mut counts = BTreeMap::new();
        for table in &self.tables {
            let mut seen = BTreeSet::from([table.clone()]);
            let mut todo = vec![table.clone()];
            while let Some(t) = todo.pop() {
                for (child, parent) in &self.children {
                    if parent == &t && seen.insert(child.clone()) {
                        todo.push(child.clone());
                    }
                }
            }
            counts.insert(table.clone(), seen.iter().map(|t| self.rows.get(t).copied().unwrap_or(0)).sum());
        }
        if let Some(orphan) = self.rows.keys().find(|t| !self.tables.contains(*t)) {
            return Err(format!("it holds data for {orphan}, whose table it does not create"));
        }
        Ok(counts)
    }
}

/// `schema.table` at the start of `text`, each part bare or double-quoted (`""` inside quotes
/// is one quote) and kept as written, which is how `format('%I.%I')` writes it; and the rest.
fn qualified_name(text: &str) -> Option<(String, &str)> {
    let (schema, rest) = identifier(text)?;
    let (table, rest) = identifier(rest.strip_prefix('.')?)?;
    Some((format!("{schema}.{table}"), rest))
}

fn identifier(text: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let bytes = quoted.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some((&text[..i + 2], &text[i + 2..]));
            }
            i += 1;
        }
        return None;
    }
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(text.len());
    (end > 0).then(|| (&text[..end], &text[end..]))
}

/// The roles of a legacy `roles.sql` as its `CREATE ROLE` statements name them (quoted as written).
pub(super) fn created_roles(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|l| l.strip_prefix("CREATE ROLE ")?.strip_suffix(';'))
        .filter(|name| identifier(name).is_some_and(|(_, rest)| rest.is_empty()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(sql: &str) -> std::result::Result<BTreeMap<String, u64>, String> {
        let mut c = DumpCensus::default();
        for line in sql.lines() {
            c.line(line.as_bytes());
        }
        c.counts()
    }

    #[test]
    fn copy_rows_are_counted_per_table_with_children() {
        let sql = "\
CREATE TABLE public.events (
    id integer
)
PARTITION BY RANGE (id);
CREATE TABLE public.events_1 (
    id integer
);
CREATE TABLE \"Odd \"\"Schema\"\"\".\"T.1\" (
    x text
);
CREATE TABLE public.base (
    id integer
);
CREATE TABLE public.derived (
    id integer
)
INHERITS (public.base);
CREATE TABLE public.empty (
    id integer
);
ALTER TABLE ONLY public.events ATTACH PARTITION public.events_1 FOR VALUES FROM (0) TO (10);
COPY public.events_1 (id) FROM stdin;
1
2
\\.
COPY \"Odd \"\"Schema\"\"\".\"T.1\" (x) FROM stdin;
a\\nb
\\.
COPY public.base (id) FROM stdin;
1
\\.
COPY public.derived (id) FROM stdin;
2
3
\\.
COPY public.empty (id) FROM stdin;
\\.
";
        let counts = census(sql).unwrap();
        let want: BTreeMap<String, u64> = [
            ("public.events", 2),
            ("public.events_1", 2),
            ("\"Odd \"\"Schema\"\"\".\"T.1\"", 1),
            ("public.base", 3),
            ("public.derived", 2),
            ("public.empty", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(counts, want);
    }

    #[test]
    fn a_cut_copy_block_or_data_without_a_table_is_refused() {
        assert!(census("CREATE TABLE public.t (\n);\nCOPY public.t (id) FROM stdin;\n1\n").unwrap_err().contains("end marker"));
        assert!(census("COPY public.t (id) FROM stdin;\n1\n\\.\n").unwrap_err().contains("does not create"));
    }

    #[test]
    fn roles_named_by_create_role() {
        let sql = "CREATE ROLE app;\nALTER ROLE app WITH NOLOGIN;\nCREATE ROLE \"Odd\";\nCREATE ROLE x; DROP TABLE y;\n";
        assert_eq!(created_roles(sql), vec!["app".to_string(), "\"Odd\"".to_string()]);
    }
}
