//! Test harness: real PostgreSQL 15, OpenSSH sshd, FerretDB, MinIO and InfluxDB on 127.0.0.1,
//! started once per run (`servers`) on the ports of scripts/servers/ports (`ports`); one test's world and its config files for any mix of
//! stores (`config`); produced faults (`faults`); running the binary (`run`); the one round-trip
//! test shape every store reuses (`roundtrip`); clients of the shared InfluxDB and FerretDB
//! (`influx`, `mongo`), and of MinIO or s3s-fs (`s3`), imported by name where used. Each test works on
//! its own database, bucket and backup folder, so tests run in parallel.

#![allow(dead_code, unused_imports)]

pub mod config;
pub mod faults;
pub mod forge;
pub mod influx;
pub mod mongo;
pub mod ports;
pub mod roundtrip;
pub mod run;
pub mod s3;
pub mod servers;

pub use config::*;
pub use faults::*;
pub use ports::*;
pub use roundtrip::*;
pub use run::*;
pub use servers::*;
