//! The root, reached only through file descriptors: every path is walked from the root's
//! descriptor one component at a time with `O_NOFOLLOW`, so no symlink is ever followed (not
//! even one planted inside the root pointing out) and no rename done meanwhile can lead outside.
//! Only regular files are opened (a FIFO would block the session, a device is none of its
//! business).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, StatVfs, Timespec, Timestamps};

use super::path::Inside;
use super::policy::OpenIntent;
use super::wire::Attrs;

/// Why a file-system call did not happen or failed.
#[derive(Debug)]
pub enum FsError {
    /// Refused by this server's own rules (a symlink, a special file); logged as a refusal.
    Refused(&'static str),
    Os(io::Error),
}

impl From<rustix::io::Errno> for FsError {
    fn from(e: rustix::io::Errno) -> FsError {
        FsError::Os(e.into())
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> FsError {
        FsError::Os(e)
    }
}

pub type FsResult<T> = Result<T, FsError>;

pub const SYMLINK: &str = "symlinks are never followed";
const SPECIAL: &str = "only regular files and folders are served";

pub struct Confined {
    root: OwnedFd,
}

fn walk_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Confined {
    /// Opens the served folder (a symlink in the operator's own ROOT argument is followed).
    pub fn open(root: &Path) -> io::Result<Confined> {
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Confined { root: fd })
    }

    /// The folder `parts` names, walked from the root without following anything.
    fn dir(&self, parts: &[OsString]) -> FsResult<OwnedFd> {
        let mut fd = rustix::io::dup(&self.root)?;
        for name in parts {
            fd = match rustix::fs::openat(&fd, name.as_os_str(), walk_flags(), Mode::empty()) {
                Ok(next) => next,
                Err(e) => return Err(explain(&fd, name, e)),
            };
        }
        Ok(fd)
    }

    /// The folder holding `path` and its last name; the root itself has none.
    fn parent<'a>(&self, path: &'a Inside) -> FsResult<(OwnedFd, &'a OsStr)> {
        let (parent, name) = path.split_last().ok_or(FsError::Refused("the served folder itself cannot be changed"))?;
        Ok((self.dir(parent)?, name))
    }

    /// The entry itself, never what a symlink points to.
    pub fn lstat(&self, path: &Inside) -> FsResult<Stat> {
        match path.split_last() {
            None => Ok(rustix::fs::fstat(&self.root)?),
            Some(_) => {
                let (dir, name) = self.parent(path)?;
                Ok(rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
            }
        }
    }

    /// As `lstat`, but a symlink is refused rather than described (SFTP's STAT follows links).
    pub fn stat(&self, path: &Inside) -> FsResult<Stat> {
        let st = self.lstat(path)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => Err(FsError::Refused(SYMLINK)),
            _ => Ok(st),
        }
    }

    pub fn open_file(&self, path: &Inside, intent: OpenIntent, append: bool, attrs: &Attrs) -> FsResult<File> {
        let (dir, name) = self.parent(path)?;
        let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        flags |= match intent.write {
            true => OFlags::RDWR,
            false => OFlags::RDONLY,
        };
        for (on, flag) in
            [(intent.create, OFlags::CREATE), (intent.exclusive, OFlags::EXCL), (intent.truncate, OFlags::TRUNC), (append, OFlags::APPEND)]
        {
            if on {
                flags |= flag;
            }
        }
        let fd = match rustix::fs::openat(&dir, name, flags, file_mode(attrs, 0o644)) {
            Ok(fd) => fd,
            // A write-only file (mode 0200) of the writable folder: open it for writing alone.
            Err(rustix::io::Errno::ACCESS) if intent.write => {
                rustix::fs::openat(&dir, name, flags & !OFlags::RDWR | OFlags::WRONLY, file_mode(attrs, 0o644))?
            }
            Err(e) => return Err(explain(&dir, name, e)),
        };
        if !FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode).is_file() {
            return Err(FsError::Refused(SPECIAL));
        }
        // Reads and writes of a regular file never block anyway; clear the flag all the same.
        rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? & !OFlags::NONBLOCK)?;
        Ok(File::from(fd))
    }

    /// A folder's entries, read as the client asks for them.
    pub fn open_dir(&self, path: &Inside) -> FsResult<Dir> {
        let fd = self.dir(path.components())?;
        let readable = rustix::fs::openat(&fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Dir::new(readable)?)
    }

    pub fn mkdir(&self, path: &Inside, attrs: &Attrs) -> FsResult<()> {
        let (dir, name) = self.parent(path)?;
        let mode = file_mode(attrs, 0o755) | Mode::from_raw_mode(0o700);
        rustix::fs::mkdirat(&dir, name, mode).map_err(|e| explain(&dir, name, e))
    }

    pub fn remove(&self, path: &Inside) -> FsResult<()> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| explain(&dir, name, e))
    }

    pub fn rmdir(&self, path: &Inside) -> FsResult<()> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(|e| explain(&dir, name, e))
    }

    /// POSIX rename: an existing target is replaced (what pgBackRest's atomic writes expect).
    pub fn rename(&self, from: &Inside, to: &Inside) -> FsResult<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name).map_err(|e| explain(&from_dir, from_name, e))
    }

    /// The file system holding `path` (a folder, or a file's folder).
    pub fn statvfs(&self, path: &Inside) -> FsResult<StatVfs> {
        let fd = match self.dir(path.components()) {
            Ok(fd) => fd,
            Err(_) => self.parent(path)?.0,
        };
        Ok(rustix::fs::fstatvfs(&fd)?)
    }

    /// Changes mode, times or size of the entry at `path` (never following a symlink).
    pub fn setstat(&self, path: &Inside, attrs: &Attrs) -> FsResult<()> {
        let (dir, name) = self.parent(path)?;
        let access = match attrs.size {
            Some(_) => OFlags::WRONLY,
            None => OFlags::RDONLY,
        };
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| explain(&dir, name, e))?;
        set_attrs(&fd, attrs)
    }
}

/// Changes mode, times or size of an open file. Owners are never changed.
pub fn set_attrs(fd: impl AsFd, attrs: &Attrs) -> FsResult<()> {
    if attrs.owner.is_some() {
        return Err(FsError::Refused("owners are never changed"));
    }
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if !matches!(kind, FileType::RegularFile | FileType::Directory) {
        return Err(FsError::Refused(SPECIAL));
    }
    if let Some(size) = attrs.size {
        rustix::fs::ftruncate(&fd, size)?;
    }
    if attrs.permissions.is_some() {
        let floor = if kind == FileType::Directory { 0o700 } else { 0o600 };
        rustix::fs::fchmod(&fd, file_mode(attrs, 0) | Mode::from_raw_mode(floor))?;
    }
    if let Some((atime, mtime)) = attrs.times {
        let at = |s: u32| Timespec { tv_sec: s.into(), tv_nsec: 0 };
        rustix::fs::futimens(&fd, &Timestamps { last_access: at(atime), last_modification: at(mtime) })?;
    }
    Ok(())
}

/// The permission bits a client asked for (no set-id or sticky bits), always readable and
/// writable by the owner, so that nothing created here is unusable by `prune` on the server.
fn file_mode(attrs: &Attrs, default: u32) -> Mode {
    let asked = attrs.permissions.map(|p| p & 0o777).unwrap_or(default);
    Mode::from_raw_mode(asked | 0o600)
}

/// An error of a call on `dir`/`name`, naming a symlink when that is what stopped it.
fn explain(dir: &OwnedFd, name: &OsStr, e: rustix::io::Errno) -> FsError {
    use rustix::io::Errno;
    if matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::MLINK)
        && let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        && FileType::from_raw_mode(st.st_mode) == FileType::Symlink
    {
        return FsError::Refused(SYMLINK);
    }
    e.into()
}

/// SFTP attributes of an entry.
#[allow(clippy::unnecessary_cast)] // `st_*time` is `c_long`: i32 on 32-bit targets
pub fn attrs_of(st: &Stat) -> Attrs {
    Attrs {
        size: Some(st.st_size as u64),
        owner: Some((st.st_uid, st.st_gid)),
        permissions: Some(st.st_mode),
        times: Some((clamp_time(st.st_atime as i64), clamp_time(st.st_mtime as i64))),
    }
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, u32::MAX as i64) as u32
}

/// An `ls -l` line, as sftp clients print it.
#[allow(clippy::unnecessary_cast)] // `st_mtime` is `c_long`: i32 on 32-bit targets
pub fn long_name(name: &[u8], st: &Stat) -> Vec<u8> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::RegularFile => '-',
        _ => '?',
    };
    let mut perms = String::from(kind);
    for (bit, c) in [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o40, 'r'), (0o20, 'w'), (0o10, 'x'), (0o4, 'r'), (0o2, 'w'), (0o1, 'x')] {
        perms.push(if st.st_mode & bit != 0 { c } else { '-' });
    }
    let when = chrono::DateTime::from_timestamp(st.st_mtime as i64, 0).unwrap_or_default();
    let mut line =
        format!("{perms} {:>3} {:<8} {:<8} {:>10} {} ", st.st_nlink, st.st_uid, st.st_gid, st.st_size, when.format("%Y-%m-%d %H:%M"))
            .into_bytes();
    line.extend_from_slice(name);
    line
}
