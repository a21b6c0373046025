//! The `lifeboat` command line: parse, run one command, map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lifeboat::commands;
use lifeboat::config::Config;
use lifeboat::error::{Error, Result};
use lifeboat::stores::BackupKind;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Streaming, encrypted, verified backups and restores of PostgreSQL, MongoDB, MinIO and InfluxDB"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", default_value = "lifeboat.yaml")]
    config: PathBuf,
    /// Print results as JSON (list, status, verify, prune, import).
    #[arg(long, global = true)]
    json: bool,
    /// More detail in the logs (-v: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the enabled backups now (all, or the named stores).
    Backup {
        #[arg(long = "store")]
        stores: Vec<String>,
        /// full or diff, for a store of type differential (default: by its schedule).
        #[arg(long = "type")]
        kind: Option<BackupKind>,
    },
    /// Restore the newest complete backup (or --from ID) onto the target, replacing its data.
    Restore {
        #[arg(long = "store")]
        stores: Vec<String>,
        /// Backup id to restore (YYYY-MM-DD or YYYY-MM-DD_N, see `list`).
        #[arg(long)]
        from: Option<String>,
        /// For a differential PostgreSQL store: recover to this moment, e.g. '2025-06-01 14:30:00+00'.
        #[arg(long)]
        target_time: Option<String>,
        /// Do not ask for confirmation (required when not on a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// List the backups on the server.
    List,
    /// Turn the backups of OpenCRVS's original scripts into signed Lifeboat runs (originals kept).
    Import {
        #[arg(long = "store")]
        stores: Vec<String>,
        /// Only the original scripts' backups of this date (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Print what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check stored files against their manifests; --deep also decrypts and decompresses.
    Verify {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        deep: bool,
    },
    /// Apply the retention policy: remove the runs it does not keep (and expire differential backups).
    Prune {
        #[arg(long = "store")]
        stores: Vec<String>,
        /// Print what would be removed and the bytes it would free; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove the original scripts' files the same retention does not keep (a day that
        /// holds a Lifeboat run, its own or the file imported, no longer keeps the file).
        #[arg(long)]
        legacy: bool,
    },
    /// Newest complete backup per store; non-zero exit when older than --max-age.
    Status {
        /// e.g. 26h, 2d.
        #[arg(long)]
        max_age: Option<String>,
    },
    /// Print a new age identity (stdout) and its public recipient (stderr).
    Keygen,
    /// Run the configured schedules (backups, or restores that have a schedule) until SIGTERM or SIGINT.
    Daemon,
    /// On the backup server, as a key's forced command: SFTP on stdin/stdout confined to ROOT.
    Serve {
        /// Create new files and folders, read and list; never overwrite, rename or delete.
        #[arg(long, value_name = "ROOT", conflicts_with = "read_only", required_unless_present = "read_only")]
        append_only: Option<PathBuf>,
        /// Read and list only.
        #[arg(long, value_name = "ROOT")]
        read_only: Option<PathBuf>,
        /// With --append-only: a folder directly inside ROOT with full access below it (pgBackRest's repository); repeatable.
        #[arg(long = "writable-subdir", value_name = "NAME", requires = "append_only")]
        writable_subdirs: Vec<String>,
        /// Also append each refusal to FILE (sshd drops an SFTP session's stderr).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    let default = if verbose > 0 { "lifeboat=debug,info,tokio_postgres=warn" } else { "info,tokio_postgres=warn" };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Keygen = cli.command {
        commands::keygen::run();
        return Ok(());
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Backup { stores, kind } => commands::backup::run(&config, &stores, kind).await.map(|_| ()),
        Command::Restore { stores, from, target_time, yes } => commands::restore::run(
            &config,
            commands::restore::RestoreOptions { only: &stores, from: from.as_deref(), target_time: target_time.as_deref(), yes },
        )
        .await
        .map(|_| ()),
        // What these find is printed as text or JSON, then decides the exit (a stale store, a damaged run).
        Command::List => commands::show(&commands::list::run(&config).await?, cli.json),
        Command::Import { stores, from, dry_run } => commands::show(
            &commands::import::run(&config, commands::import::ImportOptions { only: &stores, from: from.as_deref(), dry_run }).await?,
            cli.json,
        ),
        Command::Verify { from, deep } => commands::show(&commands::verify::run(&config, from.as_deref(), deep).await?, cli.json),
        Command::Prune { stores, dry_run, legacy } => {
            commands::prune::run(&config, &stores, commands::prune::PruneOptions { dry_run, legacy }, cli.json).await.map(|_| ())
        }
        Command::Status { max_age } => commands::show(&commands::status::run(&config, max_age.as_deref()).await?, cli.json),
        Command::Daemon => commands::daemon::run(&config).await,
        Command::Keygen | Command::Serve { .. } => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.verbose);
    if let Command::Serve { append_only, read_only, writable_subdirs, log } = &cli.command {
        // Blocking and single-threaded like OpenSSH's sftp-server: no runtime, no config file,
        // and SIGTERM or a closed connection simply ends it.
        let (mode, root) = match (append_only, read_only) {
            (Some(root), _) => (lifeboat::serve::Mode::AppendOnly, root),
            (None, Some(root)) => (lifeboat::serve::Mode::ReadOnly, root),
            (None, None) => unreachable!("clap requires one of them"),
        };
        return match commands::serve::run(mode, root, writable_subdirs, log.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        if let Err(e) = lifeboat::stop::install() {
            return Err(Error::io("listening for SIGTERM and SIGINT", e));
        }
        tokio::select! {
            result = run(cli) => result,
            // Backup and restore answer a stop themselves (nothing committed, what was restored);
            // any other command, or one that does not answer, is dropped after a grace period.
            signal = forced_stop() => Err(Error::Stopped(format!("stopped by {signal}; nothing was committed"))),
        }
    });
    // Blocking threads (zstd, age) end once their pipes close; never wait on them for long.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

/// Completes a few seconds after SIGTERM or SIGINT, so that a job stops within 5 seconds.
async fn forced_stop() -> &'static str {
    let signal = lifeboat::stop::requested().await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    signal
}

fn report(e: Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(e.exit_code() as u8)
}
