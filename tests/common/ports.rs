//! The fixed loopback ports of the suite, from scripts/servers/ports (the one table the server
//! scripts source too), read at compile time: a name missing from the table, or a value that is
//! not a port, fails the build.

const TABLE: &str = include_str!("../../scripts/servers/ports");

/// The value of the `NAME=PORT` line of the table named `name`.
const fn port(name: &str) -> u16 {
    let (table, name) = (TABLE.as_bytes(), name.as_bytes());
    let mut line = 0;
    while line < table.len() {
        let mut i = 0;
        while i < name.len() && line + i < table.len() && table[line + i] == name[i] {
            i += 1;
        }
        let mut at = line + i;
        if i == name.len() && at < table.len() && table[at] == b'=' {
            at += 1;
            let mut value: u32 = 0;
            let start = at;
            while at < table.len() && table[at] != b'\n' {
                assert!(table[at].is_ascii_digit(), "scripts/servers/ports: a value is not a number");
                value = value * 10 + (table[at] - b'0') as u32;
                assert!(value <= u16::MAX as u32, "scripts/servers/ports: a value is not a port");
                at += 1;
            }
            assert!(at > start, "scripts/servers/ports: a value is empty");
            return value as u16;
        }
        while line < table.len() && table[line] != b'\n' {
            line += 1;
        }
        line += 1;
    }
    panic!("scripts/servers/ports lacks a port the tests name")
}

pub const PG_PORT: u16 = port("PG_PORT");
/// The pgBackRest test cluster (scripts/servers/pgbackrest-pg.sh).
pub const PGBR_PG_PORT: u16 = port("PGBR_PG_PORT");
pub const SSH_PORT: u16 = port("SSH_PORT");
/// FerretDB.
pub const MONGO_PORT: u16 = port("MONGO_PORT");
pub const INFLUX_HTTP_PORT: u16 = port("INFLUX_HTTP_PORT");
pub const INFLUX_RPC_PORT: u16 = port("INFLUX_RPC_PORT");
pub const MINIO_PORT: u16 = port("MINIO_PORT");
/// s3s-fs, an S3 server without versioning.
pub const S3S_PORT: u16 = port("S3S_PORT");
pub const PUSHGATEWAY_PORT: u16 = port("PUSHGATEWAY_PORT");

pub const SERVE_SSH_PORT: u16 = port("SERVE_SSH_PORT");
pub const DIFF_FROM_DIFF_PORT: u16 = port("DIFF_FROM_DIFF_PORT");
pub const DIFF_AT_TIME_PORT: u16 = port("DIFF_AT_TIME_PORT");
pub const DIFF_NEWEST_PORT: u16 = port("DIFF_NEWEST_PORT");
pub const DIFF_WRONG_PASSPHRASE_PORT: u16 = port("DIFF_WRONG_PASSPHRASE_PORT");
pub const DIFF_BY_HAND_PORT: u16 = port("DIFF_BY_HAND_PORT");
pub const SERVE_PGBR_RESTORE_PORT: u16 = port("SERVE_PGBR_RESTORE_PORT");
pub const PRUNE_PG_PORT: u16 = port("PRUNE_PG_PORT");
pub const PRIVATE_INFLUX_HTTP_PORT: u16 = port("PRIVATE_INFLUX_HTTP_PORT");
pub const PRIVATE_INFLUX_RPC_PORT: u16 = port("PRIVATE_INFLUX_RPC_PORT");

pub const CLOSED_SSH_PORT: u16 = port("CLOSED_SSH_PORT");
pub const CLOSED_MONGO_PORT: u16 = port("CLOSED_MONGO_PORT");
pub const CLOSED_INFLUX_HTTP_PORT: u16 = port("CLOSED_INFLUX_HTTP_PORT");
pub const CLOSED_S3_PORT: u16 = port("CLOSED_S3_PORT");
