//! `lifeboat serve --append-only|--read-only ROOT [--writable-subdir NAME]... [--log FILE]`: on
//! the backup server, the forced command of a key in `authorized_keys`; SFTP on stdin/stdout
//! inside ROOT with that key's policy (see `serve::policy`). Needs no configuration file.
//! Refusals go to stderr, which sshd drops for an SFTP session: `--log` keeps them.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::serve::{self, Mode, Policy, ServeError};

pub fn run(mode: Mode, root: &Path, writable_subdirs: &[String], log: Option<&Path>) -> Result<()> {
    let policy = policy(mode, root, writable_subdirs)?;
    let log = match log {
        None => None,
        Some(path) => Some(std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path).map_err(|e| {
            Error::Usage(format!("serve: cannot open the log {}: {e}; check the path and its folder's owner", path.display()))
        })?),
    };
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    serve::serve(&policy, root, log, stdin, stdout).map_err(|e| match e {
        ServeError::Root { .. } => Error::Usage(e.to_string()),
        ServeError::Output(source) => Error::Io { context: "lifeboat serve: writing to the client".into(), source },
        ServeError::Protocol(message) => Error::Server { server: format!("lifeboat serve {}", root.display()), message },
    })
}

/// The policy the arguments ask for, or why they make no sense.
pub fn policy(mode: Mode, root: &Path, writable_subdirs: &[String]) -> Result<Policy> {
    if !root.is_absolute() {
        return Err(Error::Usage(format!("serve: ROOT `{}` must be an absolute path", root.display())));
    }
    if mode == Mode::ReadOnly && !writable_subdirs.is_empty() {
        return Err(Error::Usage("serve: --writable-subdir goes with --append-only, never with --read-only".into()));
    }
    let mut writable = Vec::new();
    for name in writable_subdirs {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') || name == serve::policy::LOCKS_DIR {
            return Err(Error::Usage(format!(
                "serve: --writable-subdir `{name}` must be the name of one folder directly inside ROOT (not `locks`), e.g. postgres"
            )));
        }
        writable.push(OsString::from(name));
    }
    Ok(Policy { mode, writable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_that_make_no_sense_are_refused() {
        let root = Path::new("/srv/lb");
        assert!(policy(Mode::AppendOnly, Path::new("srv/lb"), &[]).is_err());
        assert!(policy(Mode::ReadOnly, root, &["postgres".into()]).is_err());
        for bad in ["", ".", "..", "a/b", "locks", "a\0"] {
            assert!(policy(Mode::AppendOnly, root, &[bad.into()]).is_err(), "{bad:?}");
        }
        let ok = policy(Mode::AppendOnly, root, &["postgres".into(), "minio".into()]).unwrap();
        assert_eq!(ok.writable, vec![OsString::from("postgres"), OsString::from("minio")]);
    }
}
