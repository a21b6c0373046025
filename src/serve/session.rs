//! One client's session: each request resolved to a place inside the root, put to the policy,
//! then done through the confined file system; every refusal answered PERMISSION_DENIED with its
//! reason and logged to stderr (which sshd hands to the client) as one line.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, StatVfs};

use super::fs::{Confined, FsError, FsResult, attrs_of, long_name, set_attrs};
use super::path::{Inside, Outside, RootPath};
use super::policy::{OpenIntent, Operation, Policy};
use super::wire::*;

/// Open files and folders one client may hold at once, at most: pgBackRest's restore holds about
/// one per file of the cluster until it is done. The process's open-file limit is raised to fit
/// (as far as its hard limit allows); a file handle costs a descriptor and its path.
pub const MAX_HANDLES: usize = 16384;
/// Open folders, at most (each holds a buffer of up to some 32 KiB of entries).
pub const MAX_DIR_HANDLES: usize = 256;
/// Descriptors kept free for everything else: stdio, the root, a path being walked, the log.
const RESERVED_FDS: usize = 16;
/// Entries per READDIR reply (each well under 1 KiB, so a reply stays far below a packet).
const DIR_BATCH: usize = 64;

/// The extensions offered (OpenSSH's names); each is still put to the policy when used.
const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
];

enum Handle {
    File { file: File, path: Inside, write: bool },
    Dir { dir: Dir, path: Inside },
}

pub struct Session {
    policy: Policy,
    root: RootPath,
    fs: Confined,
    handles: Vec<Option<Handle>>,
    /// Open handles allowed, from the process's open-file limit.
    handle_limit: usize,
    started: bool,
    data: Vec<u8>,
    /// `--log FILE`: refusals appended there too (sshd drops a subsystem's stderr).
    log: Option<File>,
    /// Who is connected, from sshd's `SSH_CLIENT`, for the log.
    client: String,
}

/// A request that gets a status reply instead of its answer.
enum Failure {
    Refused { what: &'static str, path: String, why: &'static str },
    Status(u32, String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        let code = match e.kind() {
            io::ErrorKind::NotFound => FX_NO_SUCH_FILE,
            io::ErrorKind::PermissionDenied => FX_PERMISSION_DENIED,
            _ => FX_FAILURE,
        };
        Failure::Status(code, e.to_string())
    }
}

type Answer = Result<(), Failure>;

/// A client's path for a log line: lossy, control characters replaced, at most 200 characters.
fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn bad_handle() -> Failure {
    Failure::Status(FX_FAILURE, "invalid handle".into())
}

impl Session {
    pub fn open(policy: Policy, root: &Path, log: Option<File>) -> io::Result<Session> {
        let absolute = std::path::absolute(root)?;
        let canonical = std::fs::canonicalize(root)?;
        Ok(Session {
            fs: Confined::open(&canonical)?,
            root: RootPath::new(&absolute, &canonical),
            policy,
            handles: Vec::new(),
            handle_limit: handle_limit(),
            started: false,
            data: Vec::new(),
            log,
            client: std::env::var("SSH_CLIENT")
                .map(|c| c.split_whitespace().take(2).collect::<Vec<_>>().join(" port "))
                .unwrap_or_else(|_| "local".into()),
        })
    }

    /// Answers one packet into `out`; Err ends the session (no INIT first).
    pub fn answer(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let request = match parse(packet) {
            Ok(r) => r,
            Err(Malformed { id }) => {
                status(out, id.unwrap_or(0), FX_BAD_MESSAGE, "malformed request");
                return Ok(());
            }
        };
        match request {
            Request::Init { .. } if !self.started => {
                self.started = true;
                frame(out, FXP_VERSION, |o| {
                    put_u32(o, 3);
                    for (name, version) in EXTENSIONS {
                        put_string(o, name.as_bytes());
                        put_string(o, version.as_bytes());
                    }
                });
                return Ok(());
            }
            _ if !self.started => return Err("the client did not begin with SSH_FXP_INIT".into()),
            _ => {}
        }
        let id = request.id();
        match self.dispatch(request, out) {
            Ok(()) => {}
            Err(Failure::Status(code, message)) => status(out, id, code, &message),
            Err(Failure::Refused { what, path, why }) => {
                let line = format!("lifeboat serve ({}, {}): refused {what} {path}: {why}", self.policy.name(), self.client);
                tracing::warn!("{line}");
                if let Some(log) = &mut self.log {
                    // One write per line, so lines of concurrent sessions (O_APPEND) never interleave.
                    let stamped = format!("{} [{}] {line}\n", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"), std::process::id());
                    let _ = log.write_all(stamped.as_bytes());
                }
                status(out, id, FX_PERMISSION_DENIED, &format!("refused by lifeboat serve ({}): {why}", self.policy.name()));
            }
        }
        Ok(())
    }

    fn resolve(&self, what: &'static str, path: &[u8]) -> Result<Inside, Failure> {
        self.root.resolve(path).map_err(|outside| Failure::Refused {
            what,
            path: shown(path),
            why: match outside {
                Outside::Escapes => "outside the served folder",
                Outside::BadName => "not a valid file name",
            },
        })
    }

    fn allow(&self, what: &'static str, path: &Inside, operation: Operation) -> Answer {
        self.policy.decide(operation).map_err(|why| Failure::Refused { what, path: path.display(), why })
    }

    /// Resolves `path` and puts `operation` on it to the policy.
    fn checked(&self, what: &'static str, path: &[u8], operation: impl FnOnce(&Inside) -> Operation) -> Result<Inside, Failure> {
        let inside = self.resolve(what, path)?;
        self.allow(what, &inside, operation(&inside))?;
        Ok(inside)
    }

    fn fs_done<T>(&self, what: &'static str, path: &Inside, result: FsResult<T>) -> Result<T, Failure> {
        result.map_err(|e| match e {
            FsError::Refused(why) => Failure::Refused { what, path: path.display(), why },
            FsError::Os(e) => e.into(),
        })
    }

    fn dispatch(&mut self, request: Request, out: &mut Vec<u8>) -> Answer {
        match request {
            Request::Init { .. } => Err(Failure::Status(FX_BAD_MESSAGE, "a second SSH_FXP_INIT".into())),
            Request::Open { id, path, flags, attrs } => {
                let requested = OpenIntent {
                    write: flags & (FXF_WRITE | FXF_APPEND) != 0,
                    create: flags & FXF_CREAT != 0,
                    exclusive: flags & FXF_EXCL != 0,
                    truncate: flags & FXF_TRUNC != 0,
                };
                let inside = self.checked("open", path, |p| Operation::Open(p, requested))?;
                let intent = self.policy.effective(&inside, requested);
                let slot = self.free_slot()?;
                let file = match self.fs.open_file(&inside, intent, flags & FXF_APPEND != 0, &attrs) {
                    Err(FsError::Os(e)) if intent.exclusive && e.kind() == io::ErrorKind::AlreadyExists && intent != requested => {
                        Err(FsError::Refused("an existing file is never overwritten"))
                    }
                    other => other,
                };
                let file = self.fs_done("open", &inside, file)?;
                self.handles[slot] = Some(Handle::File { file, path: inside, write: intent.write });
                reply_handle(out, id, slot);
                Ok(())
            }
            Request::Close { id, handle } => {
                let slot = self.slot(handle)?;
                self.handles[slot] = None;
                ok(out, id)
            }
            Request::Read { id, handle, offset, len } => {
                let mut data = std::mem::take(&mut self.data);
                let Handle::File { file, .. } = self.handle(handle)? else { return Err(bad_handle()) };
                data.resize(len.min(MAX_DATA) as usize, 0);
                let read = file.read_at(&mut data, offset);
                let answer = match read {
                    Ok(0) if len > 0 => Err(Failure::Status(FX_EOF, "end of file".into())),
                    Ok(n) => {
                        frame(out, FXP_DATA, |o| {
                            put_u32(o, id);
                            put_string(o, &data[..n]);
                        });
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                };
                self.data = data;
                answer
            }
            Request::Write { id, handle, offset, data } => {
                let Handle::File { file, write, path } = self.handle(handle)? else { return Err(bad_handle()) };
                if !*write {
                    return Err(Failure::Refused { what: "write", path: path.display(), why: "the file was not opened for writing" });
                }
                file.write_all_at(data, offset)?;
                ok(out, id)
            }
            Request::Lstat { id, path } => {
                let inside = self.checked("stat", path, |p| Operation::Read(p))?;
                let st = self.fs.lstat(&inside);
                reply_attrs(out, id, &attrs_of(&self.fs_done("stat", &inside, st)?))
            }
            Request::Stat { id, path } => {
                let inside = self.checked("stat", path, |p| Operation::Read(p))?;
                let st = self.fs.stat(&inside);
                reply_attrs(out, id, &attrs_of(&self.fs_done("stat", &inside, st)?))
            }
            Request::Fstat { id, handle } => {
                let st = match self.handle(handle)? {
                    Handle::File { file, .. } => rustix::fs::fstat(file),
                    Handle::Dir { dir, .. } => dir.stat(),
                };
                reply_attrs(out, id, &attrs_of(&st.map_err(io::Error::from)?))
            }
            Request::SetStat { id, path, attrs } => {
                let inside = self.checked("setstat", path, |p| Operation::SetStat(p))?;
                let done = self.fs.setstat(&inside, &attrs);
                self.fs_done("setstat", &inside, done)?;
                ok(out, id)
            }
            Request::FSetStat { id, handle, attrs } => {
                let path = match self.handle(handle)? {
                    Handle::File { path, .. } | Handle::Dir { path, .. } => path.clone(),
                };
                self.allow("setstat", &path, Operation::SetStat(&path))?;
                let done = match self.handle(handle)? {
                    Handle::File { file, .. } => set_attrs(&*file, &attrs),
                    Handle::Dir { dir, .. } => dir.fd().map_err(FsError::from).and_then(|fd| set_attrs(fd, &attrs)),
                };
                self.fs_done("setstat", &path, done)?;
                ok(out, id)
            }
            Request::OpenDir { id, path } => {
                let inside = self.checked("list", path, |p| Operation::Read(p))?;
                if self.handles.iter().filter(|h| matches!(h, Some(Handle::Dir { .. }))).count() >= MAX_DIR_HANDLES {
                    return Err(Failure::Status(FX_FAILURE, format!("too many open folders (at most {MAX_DIR_HANDLES})")));
                }
                let slot = self.free_slot()?;
                let dir = self.fs.open_dir(&inside);
                let dir = self.fs_done("list", &inside, dir)?;
                self.handles[slot] = Some(Handle::Dir { dir, path: inside });
                reply_handle(out, id, slot);
                Ok(())
            }
            Request::ReadDir { id, handle } => {
                let Handle::Dir { dir, .. } = self.handle(handle)? else { return Err(bad_handle()) };
                read_dir(dir, id, out)
            }
            Request::Remove { id, path } => {
                let inside = self.checked("remove", path, |p| Operation::Remove(p))?;
                let done = self.fs.remove(&inside);
                self.fs_done("remove", &inside, done)?;
                ok(out, id)
            }
            Request::MkDir { id, path, attrs } => {
                let inside = self.checked("mkdir", path, |p| Operation::MakeDir(p))?;
                let done = self.fs.mkdir(&inside, &attrs);
                self.fs_done("mkdir", &inside, done)?;
                ok(out, id)
            }
            Request::RmDir { id, path } => {
                let inside = self.checked("rmdir", path, |p| Operation::RemoveDir(p))?;
                let done = self.fs.rmdir(&inside);
                self.fs_done("rmdir", &inside, done)?;
                ok(out, id)
            }
            Request::RealPath { id, path } => {
                let inside = self.resolve("realpath", path)?;
                let absolute = self.root.absolute(&inside);
                frame(out, FXP_NAME, |o| {
                    put_u32(o, id);
                    put_u32(o, 1);
                    put_string(o, &absolute);
                    put_string(o, &absolute);
                    put_attrs(o, &Attrs::default());
                });
                Ok(())
            }
            Request::Rename { id, from, to } => self.rename(id, from, to, out),
            Request::ReadLink { path, .. } => {
                let inside = self.resolve("readlink", path)?;
                Err(Failure::Refused { what: "readlink", path: inside.display(), why: super::fs::SYMLINK })
            }
            Request::Symlink { path, .. } => {
                self.checked("symlink", path, |p| Operation::Link(p))?;
                Err(Failure::Status(FX_FAILURE, "links are never made".into()))
            }
            Request::Extended { id, name, data } => self.extended(id, name, data, out),
            Request::Unknown { kind, .. } => Err(Failure::Status(FX_OP_UNSUPPORTED, format!("request type {kind} is not supported"))),
        }
    }

    fn rename(&mut self, id: u32, from: &[u8], to: &[u8], out: &mut Vec<u8>) -> Answer {
        let from = self.resolve("rename", from)?;
        let to = self.resolve("rename", to)?;
        self.allow("rename", &from, Operation::Rename(&from, &to))?;
        let done = self.fs.rename(&from, &to);
        self.fs_done("rename", &from, done)?;
        ok(out, id)
    }

    fn extended(&mut self, id: u32, name: &[u8], data: &[u8], out: &mut Vec<u8>) -> Answer {
        let mut args = Cursor::new(data);
        let malformed = || Failure::Status(FX_BAD_MESSAGE, "malformed extended request".into());
        match name {
            b"limits@openssh.com" => {
                reply_extended(out, id, &[MAX_PACKET as u64, MAX_DATA as u64, MAX_DATA as u64, self.handle_limit as u64])
            }
            b"statvfs@openssh.com" => {
                let inside = self.checked("statvfs", args.string().ok_or_else(malformed)?, |p| Operation::Read(p))?;
                let st = self.fs.statvfs(&inside);
                reply_statvfs(out, id, &self.fs_done("statvfs", &inside, st)?)
            }
            b"fstatvfs@openssh.com" => {
                let st = match self.handle(args.string().ok_or_else(malformed)?)? {
                    Handle::File { file, .. } => rustix::fs::fstatvfs(file),
                    Handle::Dir { dir, .. } => dir.statvfs(),
                };
                reply_statvfs(out, id, &st.map_err(io::Error::from)?)
            }
            b"fsync@openssh.com" => {
                let Handle::File { file, .. } = self.handle(args.string().ok_or_else(malformed)?)? else { return Err(bad_handle()) };
                file.sync_all()?;
                ok(out, id)
            }
            b"posix-rename@openssh.com" => {
                let (from, to) = (args.string().ok_or_else(malformed)?, args.string().ok_or_else(malformed)?);
                self.rename(id, from, to, out)
            }
            b"hardlink@openssh.com" => {
                let (_, link) = (args.string().ok_or_else(malformed)?, args.string().ok_or_else(malformed)?);
                self.checked("hardlink", link, |p| Operation::Link(p))?;
                Err(Failure::Status(FX_FAILURE, "links are never made".into()))
            }
            other => Err(Failure::Status(FX_OP_UNSUPPORTED, format!("extension {} is not supported", shown(other)))),
        }
    }

    fn free_slot(&mut self) -> Result<usize, Failure> {
        if let Some(free) = self.handles.iter().position(Option::is_none) {
            return Ok(free);
        }
        if self.handles.len() >= self.handle_limit {
            return Err(Failure::Status(FX_FAILURE, format!("too many open files (at most {})", self.handle_limit)));
        }
        self.handles.push(None);
        Ok(self.handles.len() - 1)
    }

    fn slot(&self, handle: &[u8]) -> Result<usize, Failure> {
        let slot = <[u8; 4]>::try_from(handle).map(|b| u32::from_be_bytes(b) as usize).map_err(|_| bad_handle())?;
        match self.handles.get(slot) {
            Some(Some(_)) => Ok(slot),
            _ => Err(bad_handle()),
        }
    }

    fn handle(&mut self, handle: &[u8]) -> Result<&mut Handle, Failure> {
        let slot = self.slot(handle)?;
        self.handles[slot].as_mut().ok_or_else(bad_handle)
    }
}

/// Raises the open-file limit towards what [`MAX_HANDLES`] needs and returns how many handles fit.
fn handle_limit() -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = (MAX_HANDLES + RESERVED_FDS) as u64;
    let limit = getrlimit(Resource::Nofile);
    let current = match limit.current {
        Some(current) if current < wanted => {
            let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
            match setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }) {
                Ok(()) => raised,
                Err(_) => current,
            }
        }
        Some(current) => current,
        None => wanted,
    };
    (current as usize).saturating_sub(RESERVED_FDS).clamp(16, MAX_HANDLES)
}

fn ok(out: &mut Vec<u8>, id: u32) -> Answer {
    status(out, id, FX_OK, "ok");
    Ok(())
}

fn reply_handle(out: &mut Vec<u8>, id: u32, slot: usize) {
    frame(out, FXP_HANDLE, |o| {
        put_u32(o, id);
        put_string(o, &(slot as u32).to_be_bytes());
    });
}

fn reply_attrs(out: &mut Vec<u8>, id: u32, attrs: &Attrs) -> Answer {
    frame(out, FXP_ATTRS, |o| {
        put_u32(o, id);
        put_attrs(o, attrs);
    });
    Ok(())
}

fn reply_extended(out: &mut Vec<u8>, id: u32, values: &[u64]) -> Answer {
    frame(out, FXP_EXTENDED_REPLY, |o| {
        put_u32(o, id);
        values.iter().for_each(|v| put_u64(o, *v));
    });
    Ok(())
}

fn reply_statvfs(out: &mut Vec<u8>, id: u32, st: &StatVfs) -> Answer {
    let values = [
        st.f_bsize,
        st.f_frsize,
        st.f_blocks,
        st.f_bfree,
        st.f_bavail,
        st.f_files,
        st.f_ffree,
        st.f_favail,
        st.f_fsid,
        st.f_flag.bits(),
        st.f_namemax,
    ];
    reply_extended(out, id, &values)
}

/// The next batch of a folder's entries (without `.` and `..`), or EOF.
fn read_dir(dir: &mut Dir, id: u32, out: &mut Vec<u8>) -> Answer {
    let mut entries = Vec::new();
    while entries.len() < DIR_BATCH {
        let Some(entry) = dir.read() else { break };
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // An entry removed since the folder was read is left out.
        if let Ok(st) = rustix::fs::statat(dir.fd().map_err(io::Error::from)?.as_fd(), OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            entries.push((name.to_vec(), st));
        }
    }
    if entries.is_empty() {
        return Err(Failure::Status(FX_EOF, "no more entries".into()));
    }
    frame(out, FXP_NAME, |o| {
        put_u32(o, id);
        put_u32(o, entries.len() as u32);
        for (name, st) in &entries {
            put_string(o, name);
            put_string(o, &long_name(name, st));
            put_attrs(o, &attrs_of(st));
        }
    });
    Ok(())
}
