//! `lifeboat keygen`: a new age identity (restore side) and its public recipient (backup side).

use crate::pipeline::generate_identity;

/// Prints the identity file on stdout (redirect it into a file) and the recipient on stderr.
pub fn run() -> String {
    let (identity, recipient) = generate_identity();
    print!("{identity}");
    eprintln!("Public key: {recipient}");
    eprintln!("Put the public key in encryption.recipients on the backup side; keep the identity only on the restore side.");
    recipient
}
