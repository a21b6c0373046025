//! Every program Lifeboat can start, and the version it expects of each: the one list.
//!
//! Spawn sites name programs only through these constants. The container image
//! (`deploy/image/Dockerfile`) installs every one, and `tests/deploy_image.rs` checks both ends:
//! a program started under any other name, or one the image lacks or pins at a version outside
//! `expects`, fails it. A new tool is one constant here, one line in `ALL`, one package there.

/// A program Lifeboat starts, looked up in PATH (or in a store's `bin_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The executable's file name.
    pub name: &'static str,
    pub expects: Expects,
    /// What Lifeboat runs it for.
    pub used_for: &'static str,
}

/// The versions of a program Lifeboat works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expects {
    /// The major version of the PostgreSQL server worked on: pg_dump refuses a server newer than
    /// itself, a dump's format follows pg_dump's version, and pg_ctl must match the data directory.
    ServerMajor,
    /// This version or newer.
    AtLeast(&'static str),
    /// Any release of this major version.
    Major(u32),
    /// Any release: only long-standing options are used.
    Any,
}

impl Expects {
    pub fn describe(&self) -> String {
        match self {
            Expects::ServerMajor => "the PostgreSQL server's major version".into(),
            Expects::AtLeast(v) => format!("{v} or newer"),
            Expects::Major(m) => format!("{m}.x"),
            Expects::Any => "any version".into(),
        }
    }
}

const fn program(name: &'static str, expects: Expects, used_for: &'static str) -> Program {
    Program { name, expects, used_for }
}

pub const PG_DUMP: Program = program("pg_dump", Expects::ServerMajor, "PostgreSQL dump: one database");
pub const PG_DUMPALL: Program = program("pg_dumpall", Expects::ServerMajor, "PostgreSQL dump: the roles");
pub const PG_RESTORE: Program = program("pg_restore", Expects::ServerMajor, "PostgreSQL dump restore");
pub const PSQL: Program = program("psql", Expects::ServerMajor, "PostgreSQL dump restore: replaying the roles");
pub const PG_CTL: Program = program("pg_ctl", Expects::ServerMajor, "PostgreSQL differential restore: starting the restored cluster");
/// 2.46 brought the SFTP repository type (`repo1-type=sftp`) Lifeboat configures.
pub const PGBACKREST: Program =
    program("pgbackrest", Expects::AtLeast("2.46"), "PostgreSQL differential: backup, restore, info, verify, expire");
/// `backup`/`restore -portable` of InfluxDB 1.x (2.x has another CLI and API).
pub const INFLUXD: Program = program("influxd", Expects::Major(1), "InfluxDB backup and restore");
pub const SSH: Program = program("ssh", Expects::Any, "the SFTP connection to the backup server (OpenSSH)");
pub const SSH_KEYGEN: Program = program("ssh-keygen", Expects::Any, "PostgreSQL differential: the public half of pgBackRest's SSH key");

/// Every program above.
pub const ALL: [Program; 9] = [PG_DUMP, PG_DUMPALL, PG_RESTORE, PSQL, PG_CTL, PGBACKREST, INFLUXD, SSH, SSH_KEYGEN];
