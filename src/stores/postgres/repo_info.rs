//! What pgBackRest says: `info --output=json` (the stanza's state and its backups), `verify
//! --output=text --verbose` (the problems found), and the error of a failed command as one line.

use serde::Deserialize;

use super::err;
use crate::error::Result;

/// A stanza as `info --output=json` describes it.
#[derive(Debug, Clone)]
pub struct StanzaInfo {
    /// 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data, 99 other.
    pub code: i64,
    /// The repository's own message (e.g. why it could not be read).
    pub message: String,
    pub backups: Vec<InfoBackup>,
}

impl StanzaInfo {
    /// True when `stanza-create` is needed before anything else.
    pub fn missing(&self) -> bool {
        matches!(self.code, 1 | 3)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoBackup {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: InfoSpan,
    pub info: InfoSizes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoSpan {
    pub stop: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfoSizes {
    /// Bytes of the database this backup read (the changed files, for a differential).
    pub delta: u64,
    pub repository: InfoRepoSizes,
}

/// Sizes in the repository; pgBackRest leaves `size` out for bundled backups.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InfoRepoSizes {
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub delta: u64,
}

#[derive(Deserialize)]
struct RawStanza {
    name: String,
    status: RawStatus,
    #[serde(default)]
    backup: Vec<InfoBackup>,
    #[serde(default)]
    repo: Vec<RawRepo>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct RawRepo {
    status: RawStatus,
}

pub fn parse_info(text: &str, stanza: &str) -> Result<StanzaInfo> {
    // A repository read with the wrong passphrase yields info files of random bytes, which
    // pgBackRest quotes into its JSON raw: control characters (dropped here) or even quotes.
    let cleaned: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let stanzas: Vec<RawStanza> = match serde_json::from_str(&cleaned) {
        Ok(stanzas) => stanzas,
        Err(_) if cleaned.contains("FormatError") || cleaned.contains("CryptoError") => {
            return Ok(StanzaInfo { code: 99, message: "FormatError".into(), backups: Vec::new() });
        }
        Err(e) => {
            return Err(err(format!("pgbackrest info printed JSON Lifeboat cannot read ({e}); is pgBackRest 2.46 or newer?")));
        }
    };
    let Some(found) = stanzas.into_iter().find(|s| s.name == stanza) else {
        return Ok(StanzaInfo { code: 1, message: "missing stanza path".into(), backups: Vec::new() });
    };
    let message = found.repo.first().map(|r| r.status.message.clone()).unwrap_or(found.status.message);
    Ok(StanzaInfo { code: found.status.code, message, backups: found.backup })
}

/// The problems `pgbackrest verify --output=text --verbose` reports; empty when it says `status: ok`.
pub fn verify_problems(text: &str) -> Vec<String> {
    if text.lines().any(|l| l.trim() == "status: ok") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("status: invalid") || (line.starts_with("archiveId:") && !line.ends_with(&valid_wal_suffix(line))) {
            let detail = lines.get(i + 1).copied().unwrap_or("");
            problems.push(format!("{line} ({detail})"));
        }
    }
    if problems.is_empty() {
        problems.push(format!("pgbackrest verify did not report status ok: {}", error_text(text)));
    }
    problems
}

/// For `archiveId: 15-1, total WAL checked: 5, total valid WAL: 5`: the ending that means all valid.
fn valid_wal_suffix(line: &str) -> String {
    let checked = line.split("total WAL checked: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?");
    format!("total valid WAL: {checked}")
}

/// The error pgBackRest reported, as one printable line (binary garbage from a failed decryption
/// never reaches a terminal or a log).
pub fn error_text(output: &str) -> String {
    let printable = |s: &str| -> String {
        let kept: String = s.chars().filter(|c| !c.is_control() && *c != char::REPLACEMENT_CHARACTER).collect();
        kept.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let lines: Vec<&str> = output.lines().collect();
    let Some(start) = lines.iter().position(|l| l.contains("ERROR: [")) else {
        let plain: Vec<String> = lines.iter().map(|l| printable(l)).filter(|l| !l.is_empty()).collect();
        return if plain.is_empty() { "no message".into() } else { plain[plain.len().saturating_sub(2)..].join(" / ") };
    };
    // The error, and its indented continuation lines (hints, causes).
    let first = lines[start].split_once("ERROR: ").map(|(_, rest)| rest).unwrap_or(lines[start]);
    let mut parts = vec![printable(first)];
    parts.extend(lines[start + 1..].iter().take_while(|l| l.starts_with(' ')).map(|l| printable(l)).take(3));
    let mut text = parts.join(" / ");
    if text.len() > 600 {
        let mut end = 600;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::postgres::pgbackrest::{explain, tests::hints};

    #[test]
    fn info_json_is_read() {
        let text = r#"[{"archive":[],"backup":[{"label":"20261124-190231F","type":"full","timestamp":{"start":1795546951,"stop":1795546958},
            "info":{"delta":22992880,"size":22992880,"repository":{"delta":2833968,"size":2833968}},"error":false}],
            "name":"main","repo":[{"key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"message":"ok"}}]"#;
        let info = parse_info(text, "main").unwrap();
        assert_eq!((info.code, info.backups.len(), info.backups[0].info.repository.delta), (0, 1, 2833968));
        let missing = r#"[{"archive":[],"backup":[],"name":"main","repo":[{"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"message":"missing stanza path"}}]"#;
        assert!(parse_info(missing, "main").unwrap().missing());
        assert!(parse_info("[]", "main").unwrap().missing());
        assert!(parse_info("not json", "main").is_err());
        let garbage = "[{\"name\":\"main\",\"status\":{\"code\":99,\"message\":\"other\"},\"repo\":[{\"status\":{\"code\":99,\"message\":\"[FormatError] at line 1: \u{1}\"\"x\"}}]}]";
        let info = parse_info(garbage, "main").unwrap();
        assert_eq!(info.code, 99);
        assert!(explain("info", &format!("ERROR: {}", info.message), &hints()).contains("passphrase_file"));
    }

    #[test]
    fn verify_output_is_read() {
        let ok = "stanza: main\nstatus: ok\n  archiveId: 15-1, total WAL checked: 5, total valid WAL: 5\n";
        assert!(verify_problems(ok).is_empty());
        let bad = "stanza: main\nstatus: error\n  backup: 20261124-190231F, status: invalid, total files checked: 966, total valid files: 965\n    checksum invalid: 1\n";
        assert_eq!(
            verify_problems(bad),
            ["backup: 20261124-190231F, status: invalid, total files checked: 966, total valid files: 965 (checksum invalid: 1)"]
        );
        let wal = "stanza: main\nstatus: error\n  archiveId: 15-1, total WAL checked: 5, total valid WAL: 4\n    checksum invalid: 1\n";
        assert_eq!(verify_problems(wal).len(), 1);
    }
}
