//! Running PostgreSQL's client tools (pg_dump, pg_dumpall, pg_restore, psql): from `bin_dir`
//! or PATH, with the password only in the child's environment, never on its command line.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::err;
use crate::error::Result;
use crate::pipeline::bridge::blocking_reader_to_async;
use crate::secret::SecretFile;
use crate::stores::stderr_tail::StderrTail;

pub struct Tools {
    pub bin_dir: Option<PathBuf>,
    pub password: Option<SecretFile>,
}

impl Tools {
    pub fn command(&self, name: &str) -> Result<tokio::process::Command> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        let mut cmd = tokio::process::Command::new(program);
        if let Some(secret) = &self.password {
            // Via the environment of the child only: never on a command line.
            cmd.env("PGPASSWORD", secret.read()?);
        }
        cmd.kill_on_drop(true);
        Ok(cmd)
    }

    pub async fn version(&self, name: &str) -> Result<String> {
        let out = self
            .command(name)?
            .arg("--version")
            .output()
            .await
            .map_err(|e| err(format!("cannot run {name} ({e}): install the PostgreSQL client tools or set stores.postgres.bin_dir")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a client tool with `input` (decoded backup bytes) on its stdin.
    pub async fn run_with_input(&self, name: &str, args: &[String], input: Box<dyn std::io::Read + Send>) -> Result<()> {
        let mut child = self
            .command(name)?
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run {name} ({e}): install the PostgreSQL client tools")))?;
        let stderr = StderrTail::watch(child.stderr.take().expect("piped"), |_| {});
        let mut stdin = child.stdin.take().expect("piped");
        let mut source = blocking_reader_to_async(input);
        let copied = async {
            tokio::io::copy(&mut source, &mut stdin).await?;
            stdin.shutdown().await
        }
        .await;
        drop(stdin);
        let status = child.wait().await.map_err(|e| err(format!("waiting for {name}: {e}")))?;
        if let Err(e) = copied {
            // A decode error is the cause; a broken pipe means the tool stopped first.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(err(format!("{name}: reading the backup failed: {e}")));
            }
        }
        if !status.success() {
            return Err(err(format!("{name} failed ({status}): {}", stderr.last(3).await)));
        }
        Ok(())
    }
}
