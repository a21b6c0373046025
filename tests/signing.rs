//! Signed manifests against a real PostgreSQL, over SFTP to a real sshd and to a folder: a real
//! run verifies by hand with `ssh-keygen -Y verify` as the README says, and `list` names its
//! signer; a run planted by someone holding only the public age recipient, a run without a
//! signature, and a manifest edited and re-hashed after signing are each refused with one line,
//! the target untouched, while the genuine older run still restores.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::forge::Stored;
use common::*;

struct World {
    case: Case,
    backup: PathBuf,
    restore: PathBuf,
}

fn world(name: &str, transport: &Transport) -> World {
    let case = Case::new(name);
    seed_postgres(&case.db, 300);
    let backup = case.backup_config(transport);
    let restore = case.restore_config(transport);
    World { case, backup, restore }
}

impl World {
    fn complete_runs(&self) -> Vec<serde_json::Value> {
        self.case.runs(&self.restore).into_iter().filter(|r| r["complete"] == true).collect()
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.case.server_path.join(id).join("postgres")
    }

    /// A restore that must fail with exit 1 naming `needle`, leaving the database as it was.
    #[track_caller]
    fn refused(&self, args: &[&str], needle: &str) -> String {
        let before = fingerprint(&self.case.db);
        let line = assert_fails(&lifeboat(&self.restore, &[&["restore", "--yes"], args].concat()), 1, needle);
        assert_eq!(fingerprint(&self.case.db), before, "a refused restore touched the target");
        line
    }

    /// A second backup with another signing key: what someone with the public recipient and write
    /// access to the server (but not the signing key) can make. Returns its run id.
    fn planted_run(&self) -> String {
        let forger = self.case.dir.path().join("forger");
        std::fs::create_dir_all(&forger).unwrap();
        let (forger_key, _) = signing_keys(&forger);
        let text = std::fs::read_to_string(&self.backup).unwrap();
        let config =
            self.case.write_config("forger.yaml", &text.replace(self.case.signing_key.to_str().unwrap(), forger_key.to_str().unwrap()));
        psql(&self.case.db, "DELETE FROM registry.event WHERE id % 3 = 0");
        assert_ok(&lifeboat(&config, &["backup"]));
        let runs = self.case.runs(&config);
        runs.last().unwrap()["id"].as_str().unwrap().to_string()
    }
}

fn ssh_keygen_verify(allowed: &Path, dir: &Path) -> std::process::Output {
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(allowed)
        .args(["-I", "lifeboat@test", "-n", "lifeboat", "-s"])
        .arg(dir.join("manifest.json.sig"))
        .stdin(Stdio::from(std::fs::File::open(dir.join("manifest.json")).unwrap()))
        .output()
        .expect("run ssh-keygen")
}

#[test]
fn a_real_run_verifies_by_hand_with_ssh_keygen_and_list_names_its_signer() {
    for (transport, tag) in [(Transport::Ssh, "ssh"), (Transport::File, "file")] {
        let w = world(&format!("sign_real_{tag}"), &transport);
        assert_ok(&lifeboat(&w.backup, &["backup"]));
        let backed_up = fingerprint(&w.case.db);
        let runs = w.complete_runs();
        assert_eq!(runs.len(), 1, "{tag}: {runs:?}");
        let signer = runs[0]["signed_by"].as_str().unwrap();
        assert!(signer.starts_with("lifeboat@test (SHA256:"), "{tag}: list names the signer: {signer}");

        // The README's by-hand check, with nothing but OpenSSH.
        let dir = w.run_dir(runs[0]["id"].as_str().unwrap());
        let out = ssh_keygen_verify(&w.case.allowed_signers, &dir);
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.contains("Good \"lifeboat\" signature for lifeboat@test"), "{tag}: {said}");
        // ... which fails once the manifest changes by one byte.
        let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        let mut changed = manifest.clone();
        *changed.iter_mut().rfind(|b| b.is_ascii_digit()).unwrap() ^= 1;
        std::fs::write(dir.join("manifest.json"), &changed).unwrap();
        assert!(!ssh_keygen_verify(&w.case.allowed_signers, &dir).status.success(), "{tag}: ssh-keygen accepted a changed manifest");
        std::fs::write(dir.join("manifest.json"), &manifest).unwrap();

        assert_ok(&lifeboat(&w.restore, &["verify"]));
        psql(&w.case.db, "TRUNCATE registry.event");
        assert_ok(&lifeboat(&w.restore, &["restore", "--yes"]));
        assert_eq!(fingerprint(&w.case.db), backed_up, "{tag}");
    }
}

#[test]
fn a_run_planted_with_only_the_public_recipient_is_refused_and_the_genuine_one_restores() {
    for (transport, tag) in [(Transport::Ssh, "ssh"), (Transport::File, "file")] {
        let w = world(&format!("sign_planted_{tag}"), &transport);
        assert_ok(&lifeboat(&w.backup, &["backup"]));
        let genuine = fingerprint(&w.case.db);
        let planted = w.planted_run();
        psql(&w.case.db, "TRUNCATE registry.event");

        // Named with --from: refused in one line naming the unknown key.
        let line = w.refused(&["--from", &planted], &format!("backup {planted} of postgres is damaged: not trusted: signed by SHA256:"));
        assert!(line.contains("which is not in signing.allowed_signers_file"), "{tag}: {line}");
        // verify says so too, and list shows it as damaged with no signer.
        assert_fails(&lifeboat(&w.restore, &["verify", "--from", &planted]), 1, "failed verification");
        let listed = w.case.runs(&w.restore);
        let row = listed.iter().find(|r| r["id"] == planted.as_str()).unwrap();
        assert_eq!((row["complete"].clone(), row["signed_by"].clone()), (false.into(), serde_json::Value::Null), "{tag}");

        // The newest-first choice passes over it, says so, and restores the genuine run.
        let out = lifeboat(&w.restore, &["restore", "--yes"]);
        assert_ok(&out);
        assert!(stderr(&out).contains(&format!("passing over damaged backup {planted}")), "{tag}: {}", stderr(&out));
        assert_eq!(fingerprint(&w.case.db), genuine, "{tag}: the genuine run is the one restored");

        // Its signature removed, the planted run is unsigned: refused as such.
        std::fs::remove_file(w.run_dir(&planted).join("manifest.json.sig")).unwrap();
        w.refused(&["--from", &planted], "it has no manifest.json.sig");
    }
}

#[test]
fn a_manifest_edited_and_rehashed_after_signing_is_refused() {
    for (transport, tag) in [(Transport::Ssh, "ssh"), (Transport::File, "file")] {
        let w = world(&format!("sign_rehashed_{tag}"), &transport);
        assert_ok(&lifeboat(&w.backup, &["backup"]));
        let id = w.complete_runs()[0]["id"].as_str().unwrap().to_string();
        // The roles script swapped for one of the forger's, and the manifest made to match it.
        let stored = Stored::find(&w.case, &w.backup, "postgres", |n| n.starts_with("roles"));
        stored.rehash(&w.case, b"CREATE ROLE forger SUPERUSER LOGIN PASSWORD 'x';\n");
        psql(&w.case.db, "DELETE FROM registry.event WHERE id % 2 = 0");
        w.refused(&["--from", &id], "the manifest was changed after it was signed");
        w.refused(&[], "no complete backup of postgres");
        assert_fails(&lifeboat(&w.restore, &["verify"]), 1, "failed verification");
    }
}

#[test]
fn unsigned_backups_from_before_signing_restore_only_with_the_switch_named_for_it() {
    let w = world("sign_legacy", &Transport::File);
    assert_ok(&lifeboat(&w.backup, &["backup"]));
    let backed_up = fingerprint(&w.case.db);
    let id = w.complete_runs()[0]["id"].as_str().unwrap().to_string();
    // As a backup made before manifests were signed looks.
    std::fs::remove_file(w.run_dir(&id).join("manifest.json.sig")).unwrap();
    psql(&w.case.db, "DELETE FROM registry.event WHERE id % 2 = 0");
    let line = w.refused(&[], "no complete backup of postgres");
    assert!(line.contains("1 damaged run(s) found"), "{line}");
    w.refused(&["--from", &id], "restore_unsigned_backups_made_before_signing");

    let text = std::fs::read_to_string(&w.restore).unwrap();
    let legacy =
        w.case.write_config("legacy.yaml", &text.replace("signing:\n", "signing:\n  restore_unsigned_backups_made_before_signing: true\n"));
    let listed = w.case.runs(&legacy);
    assert_eq!(listed[0]["signed_by"], "unsigned (accepted: made before signing)");
    assert_ok(&lifeboat(&legacy, &["restore", "--yes"]));
    assert_eq!(fingerprint(&w.case.db), backed_up);

    // A backup config without a signing key is refused at start: it would write unrestorable runs.
    let unsigned = w.case.write_config(
        "nokey.yaml",
        &std::fs::read_to_string(&w.backup).unwrap().replace(&format!("signing:\n  key_file: {}\n", w.case.signing_key.display()), ""),
    );
    assert_fails(&lifeboat(&unsigned, &["backup"]), 2, "signing.key_file is required for role backup");
    // A key that is not an OpenSSH private key: one line naming the file, never its content.
    let bad = w.case.write_config("bad_key", "not a key\n");
    let badcfg = w.case.write_config(
        "badkey.yaml",
        &std::fs::read_to_string(&w.backup).unwrap().replace(w.case.signing_key.to_str().unwrap(), bad.to_str().unwrap()),
    );
    let line = assert_fails(&lifeboat(&badcfg, &["backup"]), 2, "not an OpenSSH private key");
    assert!(line.contains("bad_key") && !line.contains("not a key"), "{line}");
    assert_eq!(w.case.runs(&legacy).len(), 1, "nothing new was written");
}
