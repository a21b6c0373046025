//! One module per command; each `run` returns a typed outcome or an error, and prints its result
//! (human lines, or JSON with `--json`) on stdout. Progress and logs go to stderr.

pub mod backup;
pub mod daemon;
pub mod keygen;
pub mod list;
pub mod prune;
pub mod restore;
pub mod serve;
pub mod status;
pub mod verify;
