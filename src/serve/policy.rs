//! What a key may do, decided from the operation and where it lands, before the file system is
//! touched. A pure function, table-tested.
//!
//! - read-only (the restore key): open for reading, list, stat; nothing else.
//! - append-only (the production key): also create new folders, and new files that only the
//!   handle which created them may write: an open for writing must create the file, and is done
//!   as an exclusive create whatever the client asked (`sftp put` sends CREAT|TRUNC), so it fails
//!   on an existing file. An existing file is never opened for writing again, and nothing is
//!   truncated, renamed, removed, re-moded or linked. Two exceptions: the lock files `locks/<name>.lock`, which each job creates and
//!   removes (`layout::lock`); and the folders named by `--writable-subdir` (pgBackRest's
//!   repository, which renames and deletes its own files), where everything below the folder
//!   itself is allowed.

use std::ffi::OsString;

use super::path::Inside;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AppendOnly,
    ReadOnly,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    /// Top-level folders of the root with full read/write access below them (append-only only).
    pub writable: Vec<OsString>,
}

/// How a file is to be opened, from the SFTP open flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenIntent {
    pub write: bool,
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
}

impl OpenIntent {
    pub fn changes_anything(&self) -> bool {
        self.write || self.create || self.truncate
    }
}

/// One operation a client asks for, with where it lands.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// Open for reading, list, stat, free space.
    Read(&'a Inside),
    Open(&'a Inside, OpenIntent),
    MakeDir(&'a Inside),
    Remove(&'a Inside),
    RemoveDir(&'a Inside),
    Rename(&'a Inside, &'a Inside),
    /// Mode, owner, times or size of a path or of an open file.
    SetStat(&'a Inside),
    /// A symlink or a hard link.
    Link(&'a Inside),
}

/// Why an operation is refused, said to the client and in the log.
pub type Refusal = &'static str;

pub const LOCKS_DIR: &str = "locks";

impl Policy {
    pub fn name(&self) -> &'static str {
        match self.mode {
            Mode::AppendOnly => "append-only",
            Mode::ReadOnly => "read-only",
        }
    }

    /// Below one of the writable folders (not the folder itself).
    fn in_writable(&self, path: &Inside) -> bool {
        let parts = path.components();
        self.mode == Mode::AppendOnly && parts.len() >= 2 && self.writable.contains(&parts[0])
    }

    /// How an allowed open is done: outside the writable folders, an append-only key's open for
    /// writing only ever creates a new file (exclusive, nothing to truncate).
    pub fn effective(&self, path: &Inside, intent: OpenIntent) -> OpenIntent {
        match self.mode == Mode::AppendOnly && intent.changes_anything() && !self.in_writable(path) {
            true => OpenIntent { create: true, exclusive: true, truncate: false, ..intent },
            false => intent,
        }
    }

    pub fn decide(&self, operation: Operation) -> Result<(), Refusal> {
        use Operation::*;
        if let Read(_) = operation {
            return Ok(());
        }
        if let Open(_, intent) = operation
            && !intent.changes_anything()
        {
            return Ok(());
        }
        if self.mode == Mode::ReadOnly {
            return Err("this key may only read and list");
        }
        match operation {
            Read(_) => Ok(()),
            Link(_) => Err("links are never made"),
            Open(path, _) | MakeDir(path) | Remove(path) | RemoveDir(path) | SetStat(path) if self.in_writable(path) => Ok(()),
            Rename(from, to) if self.in_writable(from) && self.in_writable(to) && from.components()[0] == to.components()[0] => Ok(()),
            Open(_, OpenIntent { create: false, .. }) => Err("an existing file is never written again"),
            Open(..) => Ok(()),
            MakeDir(_) => Ok(()),
            Remove(path) if is_lock_file(path) => Ok(()),
            Remove(_) => Err("files are never removed (except lock files under locks/)"),
            RemoveDir(_) => Err("folders are never removed"),
            Rename(..) => Err("nothing is ever renamed"),
            SetStat(_) => Err("modes, owners, times and sizes are never changed"),
        }
    }
}

/// `locks/<name>.lock`, directly under the root's `locks/` folder.
fn is_lock_file(path: &Inside) -> bool {
    match path.components() {
        [dir, name] => {
            let name = name.to_string_lossy();
            dir == LOCKS_DIR && name.len() > ".lock".len() && name.ends_with(".lock") && !name.starts_with('.')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::serve::path::RootPath;

    fn at(path: &str) -> Inside {
        RootPath::new(Path::new("/r"), Path::new("/r")).resolve(path.as_bytes()).unwrap()
    }

    const READ: OpenIntent = OpenIntent { write: false, create: false, exclusive: false, truncate: false };
    const CREATE_NEW: OpenIntent = OpenIntent { write: true, create: true, exclusive: true, truncate: false };
    const OVERWRITE: OpenIntent = OpenIntent { write: true, create: true, exclusive: false, truncate: true };
    const REWRITE: OpenIntent = OpenIntent { write: true, create: false, exclusive: false, truncate: false };
    const CREATE_OR_OPEN: OpenIntent = OpenIntent { write: true, create: true, exclusive: false, truncate: false };
    const TRUNCATE_NEW: OpenIntent = OpenIntent { write: true, create: true, exclusive: true, truncate: true };

    #[test]
    fn each_key_may_do_what_its_policy_says() {
        let append = Policy { mode: Mode::AppendOnly, writable: vec!["postgres".into()] };
        let read = Policy { mode: Mode::ReadOnly, writable: vec![] };
        let (a, b, lock, run_file) = (at("a"), at("b"), at("locks/postgres.lock"), at("2025-01-01/postgres/db.zst.age"));
        let (pg, pg2, pg_root) = (at("postgres/archive/x"), at("postgres/backup/y"), at("postgres"));
        use Operation::*;
        // (operation, append-only allows, read-only allows)
        let table: &[(Operation, bool, bool)] = &[
            (Read(&a), true, true),
            (Open(&run_file, READ), true, true),
            (Open(&run_file, CREATE_NEW), true, false),
            (Open(&lock, CREATE_NEW), true, false),
            // Allowed, but done as an exclusive create (see below).
            (Open(&run_file, OVERWRITE), true, false),
            (Open(&run_file, CREATE_OR_OPEN), true, false),
            (Open(&run_file, TRUNCATE_NEW), true, false),
            (Open(&run_file, REWRITE), false, false),
            (MakeDir(&a), true, false),
            (MakeDir(&pg_root), true, false),
            (Remove(&a), false, false),
            (Remove(&run_file), false, false),
            (Remove(&lock), true, false),
            (Remove(&at("locks/sub/x.lock")), false, false),
            (Remove(&at("locks/notes.txt")), false, false),
            (Remove(&at("locks/.lock")), false, false),
            (Remove(&at("a/locks/x.lock")), false, false),
            (Remove(&at("locks")), false, false),
            (RemoveDir(&at("locks")), false, false),
            (RemoveDir(&a), false, false),
            (Rename(&a, &b), false, false),
            (Rename(&lock, &at("locks/other.lock")), false, false),
            (SetStat(&a), false, false),
            (Link(&a), false, false),
            // pgBackRest's folder: everything below it, nothing on the folder itself.
            (Open(&pg, OVERWRITE), true, false),
            (Open(&pg, REWRITE), true, false),
            (Remove(&pg), true, false),
            (RemoveDir(&pg), true, false),
            (Rename(&pg, &pg2), true, false),
            (SetStat(&pg), true, false),
            (Link(&pg), false, false),
            (Rename(&pg, &a), false, false),
            (Rename(&a, &pg), false, false),
            (Remove(&pg_root), false, false),
            (RemoveDir(&pg_root), false, false),
            (Rename(&pg_root, &at("postgres2")), false, false),
            (Open(&at("postgres2/x"), REWRITE), false, false),
        ];
        for (operation, append_allows, read_allows) in table {
            assert_eq!(append.decide(*operation).is_ok(), *append_allows, "append-only: {operation:?}");
            assert_eq!(read.decide(*operation).is_ok(), *read_allows, "read-only: {operation:?}");
        }
    }

    #[test]
    fn a_writable_folder_means_nothing_to_a_read_only_key() {
        let read = Policy { mode: Mode::ReadOnly, writable: vec!["postgres".into()] };
        assert!(read.decide(Operation::Remove(&at("postgres/x"))).is_err());
        assert_eq!(read.name(), "read-only");
    }

    #[test]
    fn an_append_only_open_for_writing_only_creates_new_files() {
        let append = Policy { mode: Mode::AppendOnly, writable: vec!["postgres".into()] };
        let f = at("f");
        for asked in [CREATE_NEW, OVERWRITE, CREATE_OR_OPEN, TRUNCATE_NEW] {
            assert_eq!(append.effective(&f, asked), CREATE_NEW, "{asked:?}");
        }
        assert_eq!(append.effective(&f, READ), READ);
        // pgBackRest's folder opens as asked; a read-only key never gets this far.
        assert_eq!(append.effective(&at("postgres/x"), OVERWRITE), OVERWRITE);
        assert_eq!(append.effective(&at("postgres2/x"), OVERWRITE), CREATE_NEW);
        assert_eq!(append.effective(&at("postgres"), OVERWRITE), CREATE_NEW);
        assert_eq!(append.decide(Operation::Open(&f, REWRITE)), Err("an existing file is never written again"));
    }
}
