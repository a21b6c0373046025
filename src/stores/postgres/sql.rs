//! The SQL side of a PostgreSQL dump: which tables are counted and how, and how the roles
//! dump is made safe to replay.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::err;
use crate::error::Result;

/// Tables whose rows are counted: ordinary and partitioned tables outside the system schemas,
/// excluding tables that belong to extensions (pg_dump does not dump those as data).
pub const TABLES_SQL: &str = "
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1";

/// Rows per table of the database `client` is connected to (inside its current transaction).
pub async fn count_rows(client: &Client, db: &str) -> Result<BTreeMap<String, u64>> {
    let tables = client.query(TABLES_SQL, &[]).await.map_err(|e| err(format!("{db}: cannot list tables: {e}")))?;
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(|e| err(format!("{db}: cannot count rows of {table}: {e}")))?
            .get(0);
        counts.insert(table, n as u64);
    }
    Ok(counts)
}

/// A file name for a database's dump (the real name is kept in the manifest).
pub fn dump_file_name(db: &str) -> String {
    crate::stores::database_file_name(db, "dump.zst.age")
}

/// Makes `pg_dumpall --roles-only` output safe to replay on a server that has some roles already:
/// each `CREATE ROLE x;` tolerates an existing role, the `ALTER ROLE` after it sets attributes.
pub fn idempotent_roles(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 1024);
    for line in sql.lines() {
        if line.starts_with("CREATE ROLE ") && line.ends_with(';') {
            out.push_str(&format!("DO $lifeboat$ BEGIN {line} EXCEPTION WHEN duplicate_object THEN NULL; END $lifeboat$;\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_are_safe_file_names() {
        assert_eq!(dump_file_name("events"), "db-events.dump.zst.age");
        assert_eq!(dump_file_name("user-mgnt"), "db-user-mgnt.dump.zst.age");
        assert_eq!(dump_file_name("a/b c"), "db-a_b_c.dump.zst.age");
    }

    #[test]
    fn roles_replay_tolerates_existing_roles() {
        let sql = "SET x = 1;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n";
        let out = idempotent_roles(sql);
        assert!(out.contains("DO $lifeboat$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END $lifeboat$;"));
        assert!(out.contains("ALTER ROLE app WITH LOGIN;"));
        assert!(!out.contains("\nCREATE ROLE app;"));
    }
}
