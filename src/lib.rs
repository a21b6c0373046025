//! Lifeboat: streaming, encrypted, verified backups of PostgreSQL, MongoDB, MinIO and InfluxDB
//! to a backup server over SSH (or a local folder), and restores that prove themselves.
//!
//! The binary (`main.rs`) only parses the command line and maps errors to exit codes; everything
//! else lives here so that tests drive the same code.

pub mod commands;
pub mod config;
pub mod deployment;
pub mod error;
pub mod external;
pub mod layout;
pub mod legacy;
pub mod monitoring;
pub mod pipeline;
pub mod progress;
pub mod secret;
pub mod serve;
pub mod server;
pub mod signing;
pub mod stop;
pub mod stores;
pub mod units;

pub use error::{Error, Result};
