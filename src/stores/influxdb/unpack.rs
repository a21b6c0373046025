//! A database's archive unpacked into the restore's private folder. The archive comes from the
//! backup server and is not trusted: Lifeboat writes influxd's portable backup folder flat, so
//! every entry must be a regular file with one plain file name, each name once, and the entries
//! together no larger than the plain size the manifest records for the archive. Anything else
//! refuses the run with one line naming the entry, before any byte of that entry is written;
//! nothing is ever written outside the folder.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::err;
use crate::error::{Error, Result};
use crate::layout::check_file_name;

/// Why an archive is refused, as one line naming `archive`.
fn refused(archive: &str, what: String) -> Error {
    err(format!("archive {archive} {what}: the backup is damaged or tampered with; nothing was changed"))
}

/// What an entry type is called in messages.
fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "a symbolic link".into(),
        tar::EntryType::Link => "a hard link".into(),
        tar::EntryType::Directory => "a directory".into(),
        tar::EntryType::Char | tar::EntryType::Block => "a device".into(),
        tar::EntryType::Fifo => "a FIFO".into(),
        other => format!("of tar type `{}`", (other.as_byte() as char).escape_debug()),
    }
}

/// Unpacks the tar stream `reader` of `archive` into `dir`; `raw_size` is the plain size the
/// manifest records for it. Returns the number of files written.
pub(super) fn unpack(reader: Box<dyn Read + Send>, dir: &Path, archive: &str, raw_size: u64) -> Result<usize> {
    let mut tar = tar::Archive::new(reader);
    let damaged = |e: io::Error| err(format!("reading {archive}: {e}; the backup is damaged; nothing was changed"));
    let mut written = 0u64;
    let mut files = 0;
    // Raw entries: long-name and pax entries are refused as they are, never read whole.
    for entry in tar.entries().map_err(damaged)?.raw(true) {
        let mut entry = entry.map_err(damaged)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let label = name.escape_debug().to_string();
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(refused(archive, format!("holds an entry Lifeboat did not write (`{label}`, {})", kind_name(kind))));
        }
        if std::str::from_utf8(&entry.path_bytes()).is_err() || check_file_name(&name).is_err() {
            return Err(refused(archive, format!("holds entry `{label}`, which is not a plain file name")));
        }
        written = written.saturating_add(entry.size());
        if written > raw_size {
            return Err(refused(archive, format!("holds more than the {raw_size} bytes its manifest records (entry `{label}`)")));
        }
        let path = dir.join(&name);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                refused(archive, format!("holds entry `{label}` twice"))
            } else {
                Error::io(format!("writing {}", path.display()), e)
            }
        })?;
        let copied = io::copy(&mut entry, &mut file).map_err(damaged)?;
        if copied != entry.size() {
            return Err(damaged(io::Error::new(io::ErrorKind::UnexpectedEof, format!("entry `{label}` is cut short"))));
        }
        files += 1;
    }
    // Read to the end so that a damaged tail is noticed too.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(damaged)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stores::archive_fuzz::{hostile_archives, largest_allocation};

    /// A tar as `tar_folder` writes it: GNU headers, regular files.
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, *body).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// An archive with one entry whose name and type are written as given, unchecked.
    fn forged(name: &[u8], kind: tar::EntryType, link: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_size(if kind == tar::EntryType::Regular { 3 } else { 0 });
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = archive(&[("first.manifest", b"{}")]);
        out.truncate(out.len() - 1024);
        out.extend_from_slice(h.as_bytes());
        if kind == tar::EntryType::Regular {
            out.extend_from_slice(b"abc");
            out.resize(out.len().next_multiple_of(512), 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// Unpacks into `<tmp>/work` and returns the outcome; nothing may appear beside `work`.
    fn unpack_bytes(bytes: &[u8]) -> (std::result::Result<usize, String>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let result = unpack(Box::new(io::Cursor::new(bytes.to_vec())), &work, "db-x.tar.zst.age", bytes.len() as u64);
        let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("work")], "nothing is written outside the folder");
        (result.map_err(|e| e.to_string()), tmp)
    }

    #[test]
    fn a_lifeboat_archive_unpacks_flat() {
        let bytes = archive(&[("20260101T000000Z.manifest", b"{}"), ("20260101T000000Z.s1.tar.gz", &[9u8; 3000])]);
        let (result, tmp) = unpack_bytes(&bytes);
        assert_eq!(result.unwrap(), 2);
        assert_eq!(std::fs::read(tmp.path().join("work/20260101T000000Z.s1.tar.gz")).unwrap(), vec![9u8; 3000]);
    }

    #[test]
    fn entries_that_are_not_plain_regular_files_are_refused_by_name() {
        for (name, kind, link, needle) in [
            (&b"/tmp/lifeboat-abs"[..], tar::EntryType::Regular, &b""[..], "`/tmp/lifeboat-abs`, which is not a plain file name"),
            (b"../../escape", tar::EntryType::Regular, b"", "`../../escape`, which is not a plain file name"),
            (b"a/../../escape", tar::EntryType::Regular, b"", "`a/../../escape`"),
            (b"a//b", tar::EntryType::Regular, b"", "`a//b`"),
            (b"./x", tar::EntryType::Regular, b"", "`./x`"),
            (b"..", tar::EntryType::Regular, b"", "`..`"),
            (b"bad\xffname", tar::EntryType::Regular, b"", "not a plain file name"),
            (b"link", tar::EntryType::Symlink, b"/etc/passwd", "`link`, a symbolic link"),
            (b"hard", tar::EntryType::Link, b"../outside", "`hard`, a hard link"),
            (b"sub", tar::EntryType::Directory, b"", "`sub`, a directory"),
            (b"dev", tar::EntryType::Char, b"", "`dev`, a device"),
            (b"././@LongLink", tar::EntryType::GNULongName, b"", "of tar type `L`"),
        ] {
            let (result, _tmp) = unpack_bytes(&forged(name, kind, link));
            let e = result.unwrap_err();
            assert!(e.contains(needle) && e.contains("archive db-x.tar.zst.age") && !e.contains('\n'), "{needle}: {e}");
        }
        let (result, _tmp) = unpack_bytes(&archive(&[("x.manifest", b"1"), ("x.manifest", b"2")]));
        assert!(result.unwrap_err().contains("`x.manifest` twice"));
    }

    #[test]
    fn entries_larger_than_the_manifest_says_are_refused_before_they_are_written() {
        let bytes = archive(&[("a", &[1u8; 5000])]);
        let tmp = tempfile::tempdir().unwrap();
        let e = unpack(Box::new(io::Cursor::new(bytes)), tmp.path(), "db-x.tar.zst.age", 4000).unwrap_err().to_string();
        assert!(e.contains("more than the 4000 bytes its manifest records (entry `a`)"), "{e}");
        assert!(!tmp.path().join("a").exists());
    }

    /// Offsets of the header blocks of a tar.
    fn header_blocks(bytes: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|b| *b != 0) {
            out.push(at);
            let size = tar::Header::from_byte_slice(&bytes[at..at + 512]).entry_size().unwrap();
            at += 512 + (size as usize).div_ceil(512) * 512;
        }
        out
    }

    fn fuzz_base() -> Vec<u8> {
        archive(&[
            ("x.manifest", br#"{"files":[]}"#),
            ("x.meta", &[3u8; 700]),
            ("x.s1.tar.gz", &[5u8; 2000]),
            ("continuous_queries.influxql", b""),
        ])
    }

    fn check_unpack(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let ((result, tmp), largest) = largest_allocation(|| unpack_bytes(bytes));
        prop_assert!(largest <= 1 << 20, "{largest} bytes allocated");
        if result.is_ok() {
            for f in std::fs::read_dir(tmp.path().join("work")).unwrap() {
                let f = f.unwrap();
                prop_assert!(f.file_type().unwrap().is_file(), "only regular files");
                prop_assert!(check_file_name(&f.file_name().to_string_lossy()).is_ok());
            }
        }
        Ok(())
    }

    /// Writes a new size into the header block at `at`, with a valid checksum.
    fn alter_size(bytes: &mut [u8], at: usize, size: u64) {
        let mut h = tar::Header::from_byte_slice(&bytes[at..at + 512]).clone();
        h.set_size(size);
        h.set_cksum();
        bytes[at..at + 512].copy_from_slice(h.as_bytes());
    }

    proptest! {
        #[test]
        fn fuzz_unpack(bytes in hostile_archives(fuzz_base(), header_blocks(&fuzz_base()), alter_size)) {
            check_unpack(&bytes)?;
        }
    }
}
