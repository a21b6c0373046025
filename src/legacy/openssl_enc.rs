//! `openssl enc -aes-256-cbc -pbkdf2 -salt`, read back: what OpenCRVS's original backup scripts
//! wrote (`-pass env:ENCRYPT_PASS`). The file is `Salted__`, an 8-byte salt, then AES-256-CBC
//! ciphertext with PKCS#7 padding; key and IV are derived together from the passphrase and the
//! salt by PBKDF2-HMAC-SHA256 with OpenSSL's default 10,000 iterations.
//!
//! The format has no MAC: a wrong passphrase or a damaged file shows only as bad padding at the
//! very end (or, with a chance of about 1 in 256, as garbage the gzip and tar layers above
//! refuse). So the reader decrypts as a stream, holds the last block back, and fails at the end
//! unless the padding is sound; callers read the whole archive before they touch anything.

use std::io::{self, Read};

use aes::Aes256;
use cbc::cipher::{BlockDecryptMut, KeyIvInit, generic_array::GenericArray};

const MAGIC: &[u8; 8] = b"Salted__";
const BLOCK: usize = 16;
/// OpenSSL's default for `-pbkdf2` without `-iter`.
pub const ITERATIONS: u32 = 10_000;

/// Decrypts an `openssl enc -aes-256-cbc -pbkdf2 -salt` stream as it is read.
pub struct OpensslDecrypt<R> {
    inner: R,
    cipher: cbc::Decryptor<Aes256>,
    /// Ciphertext read but not yet a whole block.
    pending: Vec<u8>,
    /// Plain bytes ready to hand out, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
    /// The last decrypted block, held back until the end shows whether it is the padded one.
    held: Option<[u8; BLOCK]>,
    ended: bool,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl<R: Read> OpensslDecrypt<R> {
    /// Reads the header and derives the key from `passphrase` (no newline: the chart's secret
    /// as `env:` passes it).
    pub fn new(mut inner: R, passphrase: &[u8]) -> io::Result<Self> {
        let mut header = [0u8; 16];
        let mut got = 0;
        while got < header.len() {
            match inner.read(&mut header[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got < header.len() || &header[..8] != MAGIC {
            return Err(invalid(
                "not an `openssl enc -salt` file (no `Salted__` header): not made by the original backup scripts, or damaged",
            ));
        }
        let mut key_iv = [0u8; 48];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase, &header[8..], ITERATIONS, &mut key_iv);
        let cipher = cbc::Decryptor::<Aes256>::new(GenericArray::from_slice(&key_iv[..32]), GenericArray::from_slice(&key_iv[32..]));
        Ok(OpensslDecrypt { inner, cipher, pending: Vec::new(), ready: Vec::new(), ready_from: 0, held: None, ended: false })
    }

    /// Reads more ciphertext and decrypts every whole block of it, keeping the last one back.
    fn fill(&mut self) -> io::Result<()> {
        self.ready.clear();
        self.ready_from = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.inner.read(&mut chunk)?;
        if n == 0 {
            self.ended = true;
            if !self.pending.is_empty() {
                return Err(invalid(format!(
                    "the encrypted file ends {} bytes into a block: it is cut short or damaged",
                    self.pending.len()
                )));
            }
            let last = self.held.take().ok_or_else(|| invalid("the encrypted file holds no data at all: it is cut short or damaged"))?;
            let pad = last[BLOCK - 1] as usize;
            if pad == 0 || pad > BLOCK || last[BLOCK - pad..].iter().any(|b| *b as usize != pad) {
                return Err(invalid("bad padding at the end of the encrypted file: the passphrase is wrong, or the file is damaged"));
            }
            self.ready.extend_from_slice(&last[..BLOCK - pad]);
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk[..n]);
        let whole = self.pending.len() / BLOCK * BLOCK;
        for block in self.pending[..whole].chunks_exact(BLOCK) {
            let mut b = GenericArray::clone_from_slice(block);
            self.cipher.decrypt_block_mut(&mut b);
            if let Some(previous) = self.held.replace(b.into()) {
                self.ready.extend_from_slice(&previous);
            }
        }
        self.pending.drain(..whole);
        Ok(())
    }
}

impl<R: Read> Read for OpensslDecrypt<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.ready_from == self.ready.len() {
            if self.ended {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.ready.len() - self.ready_from);
        out[..n].copy_from_slice(&self.ready[self.ready_from..self.ready_from + n]);
        self.ready_from += n;
        Ok(n)
    }
}
