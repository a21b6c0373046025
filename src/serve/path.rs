//! Where a client's path lands: resolved by its text alone (no file system access, so no symlink
//! can change the answer) to a place inside the served root, or refused.
//!
//! Clients see the server's real paths: the root is served at its own absolute path (the
//! `ssh://host/srv/lifeboat/production` a config names), relative paths start at the root, and any
//! path whose `..` or absolute form leaves the root is outside. Nothing outside exists for them.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// A place inside the root: its components below the root, none empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside(Vec<OsString>);

impl Inside {
    pub fn root() -> Inside {
        Inside(Vec::new())
    }

    pub fn components(&self) -> &[OsString] {
        &self.0
    }

    /// The folder holding it and its own name; None for the root itself.
    pub fn split_last(&self) -> Option<(&[OsString], &OsStr)> {
        self.0.split_last().map(|(last, parent)| (parent, last.as_os_str()))
    }

    /// The relative text, `.` for the root, for messages.
    pub fn display(&self) -> String {
        if self.0.is_empty() {
            return ".".into();
        }
        let parts: Vec<_> = self.0.iter().map(|c| c.to_string_lossy()).collect();
        parts.join("/")
    }
}

/// The served folder, as the client names it.
#[derive(Debug, Clone)]
pub struct RootPath {
    /// The components of the root's absolute path, as given and as canonicalised (an alias when
    /// the given path passes through a symlink the operator chose).
    names: Vec<Vec<Vec<u8>>>,
}

/// Why a path is refused before the file system is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outside {
    /// `..` or an absolute path leaving the root.
    Escapes,
    /// A NUL byte, which no file name can hold.
    BadName,
}

impl RootPath {
    /// `given` must be absolute; `canonical` is the same folder with symlinks resolved.
    pub fn new(given: &Path, canonical: &Path) -> RootPath {
        let mut names = vec![normalise(&[], given.as_os_str().as_bytes()).unwrap_or_default()];
        let canonical = normalise(&[], canonical.as_os_str().as_bytes()).unwrap_or_default();
        if canonical != names[0] {
            names.push(canonical);
        }
        RootPath { names }
    }

    /// The absolute path the client sees for a place inside.
    pub fn absolute(&self, inside: &Inside) -> Vec<u8> {
        let mut out = Vec::new();
        for part in self.names[0].iter().map(|p| p.as_slice()).chain(inside.0.iter().map(|c| c.as_bytes())) {
            out.push(b'/');
            out.extend_from_slice(part);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    }

    /// Resolves a client's path: relative ones from the root; `.` and `..` by text.
    pub fn resolve(&self, client: &[u8]) -> Result<Inside, Outside> {
        if client.contains(&0) {
            return Err(Outside::BadName);
        }
        let start: &[Vec<u8>] = if client.starts_with(b"/") { &[] } else { &self.names[0] };
        let Some(absolute) = normalise(start, client) else {
            return Err(Outside::Escapes);
        };
        for root in &self.names {
            if absolute.len() >= root.len() && absolute[..root.len()] == root[..] {
                let rest = absolute[root.len()..].iter().map(|c| OsString::from_vec(c.clone()));
                return Ok(Inside(rest.collect()));
            }
        }
        Err(Outside::Escapes)
    }
}

/// `start` joined with `path`, with `.` and empty parts dropped and `..` applied; None when
/// `..` climbs above `/`.
fn normalise(start: &[Vec<u8>], path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut parts = start.to_vec();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            name => parts.push(name.to_vec()),
        }
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(parts: &[&str]) -> Inside {
        Inside(parts.iter().map(OsString::from).collect())
    }

    #[test]
    fn paths_resolve_inside_the_root_or_are_refused() {
        let root = RootPath::new(Path::new("/srv/lb/prod"), Path::new("/data/lb/prod"));
        let table: &[(&str, Result<Inside, Outside>)] = &[
            ("", Ok(inside(&[]))),
            (".", Ok(inside(&[]))),
            ("/srv/lb/prod", Ok(inside(&[]))),
            ("/srv/lb/prod/", Ok(inside(&[]))),
            ("/srv/lb/prod/2025-01-01/postgres", Ok(inside(&["2025-01-01", "postgres"]))),
            ("//srv//lb/./prod/a/", Ok(inside(&["a"]))),
            ("/data/lb/prod/a", Ok(inside(&["a"]))),
            ("a/b/../c", Ok(inside(&["a", "c"]))),
            ("a/..", Ok(inside(&[]))),
            ("/srv/lb/prod/a/../../prod/b", Ok(inside(&["b"]))),
            ("..", Err(Outside::Escapes)),
            ("../prod2/x", Err(Outside::Escapes)),
            ("a/../../x", Err(Outside::Escapes)),
            ("../../etc/passwd", Err(Outside::Escapes)),
            ("/srv/lb/prod/../../../../../etc/passwd", Err(Outside::Escapes)),
            ("/etc/passwd", Err(Outside::Escapes)),
            ("/", Err(Outside::Escapes)),
            ("/srv/lb/production", Err(Outside::Escapes)),
            ("/srv/lb/prod2/a", Err(Outside::Escapes)),
            ("/srv/lb", Err(Outside::Escapes)),
            ("a\0b", Err(Outside::BadName)),
        ];
        for (client, expected) in table {
            assert_eq!(&root.resolve(client.as_bytes()), expected, "{client:?}");
        }
    }

    #[test]
    fn the_client_sees_the_given_root_path() {
        let root = RootPath::new(Path::new("/srv/lb/prod/"), Path::new("/srv/lb/prod"));
        assert_eq!(root.absolute(&inside(&[])), b"/srv/lb/prod");
        assert_eq!(root.absolute(&inside(&["a", "b"])), b"/srv/lb/prod/a/b");
        let resolved = root.resolve(b"x/../y/z").unwrap();
        assert_eq!(resolved.display(), "y/z");
        assert_eq!(resolved.split_last(), Some((&[OsString::from("y")][..], OsStr::new("z"))));
        assert_eq!(Inside::root().display(), ".");
        assert!(Inside::root().split_last().is_none());
    }

    #[test]
    fn non_utf8_names_pass_through() {
        let root = RootPath::new(Path::new("/r"), Path::new("/r"));
        let got = root.resolve(b"caf\xe9").unwrap();
        assert_eq!(got.components()[0].as_bytes(), b"caf\xe9");
    }
}
