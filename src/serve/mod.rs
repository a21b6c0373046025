//! `lifeboat serve`: an SFTP version 3 server on stdin/stdout, confined to one folder, with a
//! policy per key (the forced command of an `authorized_keys` line). OpenSSH's own sftp-server
//! cannot stop a key that may create files from overwriting or deleting them; this one can.
//!
//! - `wire.rs`: packets on the wire, parsed from untrusted bytes with bounded lengths
//! - `path.rs`: where a client's path lands inside the root, by its text
//! - `policy.rs`: what each key may do (append-only, read-only, the writable folders)
//! - `fs.rs`: the root reached through file descriptors, never following a symlink
//! - `session.rs`: one client's requests answered, refusals logged
//!
//! Requests are answered one at a time, in order, as OpenSSH's sftp-server does; replies are
//! written out whenever no further complete request is waiting, so pipelined clients keep their
//! throughput. Memory is bounded: one packet of at most [`wire::MAX_PACKET`] bytes in, its reply
//! out, and at most [`session::MAX_HANDLES`] open files ([`session::MAX_DIR_HANDLES`] folders).

pub mod fs;
pub mod path;
pub mod policy;
pub mod session;
pub mod wire;

#[cfg(test)]
mod wire_tests;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

pub use policy::{Mode, Policy};

/// Why a session ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve {root}: {source}; check that the folder exists and this user may read it")]
    Root { root: String, source: io::Error },
    #[error("protocol error from the client: {0}")]
    Protocol(String),
    #[error("writing to the client: {0}")]
    Output(io::Error),
}

/// Serves one client on `input`/`output` until it closes its side; refusals also go to `log`.
pub fn serve(policy: &Policy, root: &Path, log: Option<File>, input: impl Read, output: impl Write) -> Result<(), ServeError> {
    match session::Session::open(policy.clone(), root, log) {
        Ok(mut session) => answer_all(input, output, |packet, out| session.answer(packet, out)),
        Err(source) => {
            let error = ServeError::Root { root: root.display().to_string(), source };
            tracing::error!("lifeboat serve: {error}");
            // Still speak SFTP, so that the client can show why: sshd drops an SFTP session's stderr.
            let message = format!("lifeboat serve: {error}");
            answer_all(input, output, |packet, out| {
                match wire::parse(packet) {
                    Ok(wire::Request::Init { .. }) => wire::frame(out, wire::FXP_VERSION, |o| wire::put_u32(o, 3)),
                    Ok(request) => wire::status(out, request.id(), wire::FX_FAILURE, &message),
                    Err(wire::Malformed { id }) => wire::status(out, id.unwrap_or(0), wire::FX_FAILURE, &message),
                }
                Ok(())
            })?;
            Err(error)
        }
    }
}

/// Reads requests and writes what `answer` replies until the input ends.
fn answer_all(
    input: impl Read,
    mut output: impl Write,
    mut answer: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), String>,
) -> Result<(), ServeError> {
    let mut input = BufReader::with_capacity(wire::MAX_PACKET, input);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        if !out.is_empty() && (!holds_whole_packet(input.buffer()) || out.len() >= wire::MAX_PACKET) {
            output.write_all(&out).and_then(|()| output.flush()).map_err(ServeError::Output)?;
            out.clear();
        }
        match wire::read_packet(&mut input, &mut packet) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = output.write_all(&out).and_then(|()| output.flush());
                return Err(ServeError::Protocol(e.to_string()));
            }
        }
        answer(&packet, &mut out).map_err(ServeError::Protocol)?;
    }
    output.write_all(&out).and_then(|()| output.flush()).map_err(ServeError::Output)
}

/// Whether `buffered` input already holds a whole next request (then answering it first does not
/// keep a client waiting for replies it needs before it sends more).
fn holds_whole_packet(buffered: &[u8]) -> bool {
    match buffered.get(..4) {
        Some(len) => buffered.len() - 4 >= u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize,
        None => false,
    }
}
