//! # admin — `broker-admin`
//!
//! Owns the operator's tools: offline commands over a data directory
//! (`segments`, `dump`, `verify`, `repair`, `migrate`) and the online client
//! of a broker's admin API (`destinations`, pause/resume, rewind, dead
//! letters, re-drive).
//!
//! ## Invariants
//! - Read-only commands are safe beside a running broker: they never lock,
//!   write or map its files (see `wal::inspect`).
//! - `repair` and `migrate` refuse while a broker holds the directory.
//! - Exit 0 on success, 1 on a problem found, 2 on bad usage.
//!
//! ## Never
//! - depend on the broker crate: the data directory's layout and lock come
//!   from `plumbing`, the format from `wal`, the wire shapes from `protocol`.
//!
//! Its public surface is what `bin/broker-admin` runs: [`Cli`], [`run`]
//! and [`AdminError`] (whose [`AdminError::exit_code`] is the one mapping
//! to exit codes).

#![deny(missing_docs)]

mod error;
mod legacy_lost;
mod offline;
mod online;

pub use crate::error::AdminError;
use clap::{Args as ClapArgs, Parser, Subcommand};
use protocol::routes::AdminAction;
use std::path::{Path, PathBuf};

/// `broker-admin`'s command line: one subcommand, which [`run`] runs.
/// (`--help` shows `about`; `long_about = None` keeps this comment out of it.)
#[derive(Debug, Parser)]
#[command(
    name = "broker-admin",
    version,
    about = "Inspect, verify and repair Weir data directories; see and steer destinations",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The flags of every online command.
#[derive(Debug, ClapArgs)]
struct Online {
    /// Broker base URL, e.g. http://127.0.0.1:7070
    #[arg(long)]
    broker: String,
    /// Admin token.
    #[arg(long)]
    token: String,
    /// PEM CA certificates an `https://` broker is verified against
    /// (instead of the built-in web roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for a listener that requires one (the
    /// admin listener never does).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// The subcommands; their doc comments are their help.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// List every lane's segments (read-only).
    #[command(after_help = "Example:\n  broker-admin segments --data-dir /var/lib/weir --json")]
    Segments {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print records as JSON lines (read-only).
    #[command(
        after_help = "Example:\n  broker-admin dump --data-dir /var/lib/weir --lane normal/0 --from 100 --limit 10"
    )]
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this lane, e.g. normal/0
        #[arg(long)]
        lane: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        topic: Option<String>,
        /// Keep printing new records as they become durable (Ctrl-C to stop).
        #[arg(long)]
        follow: bool,
    },
    /// Check every frame and segment header; exit 1 when anything is wrong (read-only).
    #[command(after_help = "Example:\n  broker-admin verify --data-dir /var/lib/weir")]
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Truncate torn tails and quarantine corrupt segments (refuses while a broker runs).
    #[command(
        after_help = "Examples:\n  systemctl stop weir-broker && broker-admin repair --data-dir /var/lib/weir\n  broker-admin repair --data-dir /var/lib/weir --discard-quarantine   # after reading `verify`"
    )]
    Repair {
        #[arg(long)]
        data_dir: PathBuf,
        /// Also delete the quarantined segments (acknowledging the offsets
        /// `verify` says they lost); until then `verify` exits 1.
        #[arg(long)]
        discard_quarantine: bool,
    },
    /// Convert a data directory written by WAL format 1 to the current format (refuses
    /// while a broker runs); exit 1 when records could not be converted.
    #[command(after_help = "Example:\n  systemctl stop weir-broker && broker-admin migrate --data-dir /var/lib/weir")]
    Migrate {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Destinations of a running broker: lag, leases, breaker, dead letters.
    #[command(after_help = "Example:\n  broker-admin destinations --broker http://127.0.0.1:7070 --token dev-admin")]
    Destinations {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        json: bool,
    },
    /// Stop handing out leases for a destination.
    #[command(
        after_help = "Example:\n  broker-admin pause --broker http://127.0.0.1:7070 --token dev-admin --destination dev"
    )]
    Pause {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
    },
    /// Resume a paused destination.
    #[command(
        after_help = "Example:\n  broker-admin resume --broker http://127.0.0.1:7070 --token dev-admin --destination dev"
    )]
    Resume {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
    },
    /// Close a destination's breaker now.
    #[command(
        after_help = "Example:\n  broker-admin reset-breaker --broker http://127.0.0.1:7070 --token dev-admin --destination dev"
    )]
    ResetBreaker {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
    },
    /// Move a destination's cursor: to the earliest record, an offset, or a time.
    #[command(
        after_help = "Examples:\n  broker-admin rewind --broker URL --token T --destination dev --earliest\n  broker-admin rewind --broker URL --token T --destination dev --offset 100 --lane normal/0\n  broker-admin rewind --broker URL --token T --destination dev --timestamp 1700000000000"
    )]
    Rewind {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
        #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
        earliest: bool,
        #[arg(long, conflicts_with = "timestamp")]
        offset: Option<u64>,
        /// With --offset: only this lane.
        #[arg(long, requires = "offset")]
        lane: Option<String>,
        /// Milliseconds since the Unix epoch.
        #[arg(long)]
        timestamp: Option<u64>,
    },
    /// List a destination's dead letters.
    #[command(
        after_help = "Example:\n  broker-admin dead-letters --broker http://127.0.0.1:7070 --token dev-admin --destination dev"
    )]
    DeadLetters {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Deliver a destination's dead letters again.
    #[command(
        after_help = "Example:\n  broker-admin redrive --broker http://127.0.0.1:7070 --token dev-admin --destination dev"
    )]
    Redrive {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        destination: String,
    },
}

fn out() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

/// Run one command; its error is the line to print and says the exit code
/// ([`AdminError::exit_code`]).
pub fn run(cli: Cli) -> Result<(), AdminError> {
    match cli.cmd {
        Cmd::Segments { data_dir, json } => offline::segments(&data_dir, json, &mut out()),
        Cmd::Dump { data_dir, lane, from, limit, tenant, topic, follow } => {
            let lane = lane.map(|l| l.parse()).transpose().map_err(AdminError::BadLane)?;
            let filter = offline::DumpFilter { lane, from, limit, tenant, topic };
            run_dump(&data_dir, &filter, follow)
        }
        Cmd::Verify { data_dir } => run_verify(&data_dir),
        Cmd::Migrate { data_dir } => run_migrate(&data_dir),
        Cmd::Repair { data_dir, discard_quarantine } => run_repair(&data_dir, discard_quarantine),
        online_cmd => run_online(online_cmd),
    }
}

/// `dump`, once or (`follow`) until stopped.
fn run_dump(data_dir: &Path, filter: &offline::DumpFilter, follow: bool) -> Result<(), AdminError> {
    if !follow {
        return offline::dump(data_dir, filter, &mut out()).map(|_| ());
    }
    let mut seen = std::collections::HashMap::new();
    loop {
        offline::dump_from(data_dir, filter, &mut seen, &mut out())?;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn run_verify(data_dir: &Path) -> Result<(), AdminError> {
    let found = offline::verify(data_dir, true)?;
    for line in &found.notes {
        println!("note: {line}");
    }
    for line in &found.problems {
        println!("{line}");
    }
    if !found.problems.is_empty() {
        return Err(AdminError::VerifyProblems { count: found.problems.len() });
    }
    println!("verify: clean");
    Ok(())
}

fn run_migrate(data_dir: &Path) -> Result<(), AdminError> {
    let done = offline::migrate(data_dir)?;
    for line in &done.lines {
        println!("migrate: {line}");
    }
    // Acknowledged records were left unconverted: not a success a script
    // may start the broker after.
    if done.kept_aside > 0 {
        return Err(AdminError::KeptAside { segments: done.kept_aside });
    }
    Ok(())
}

fn run_repair(data_dir: &Path, discard_quarantine: bool) -> Result<(), AdminError> {
    let done = offline::repair(data_dir, discard_quarantine)?;
    if done.is_empty() {
        println!("repair: nothing to do");
    }
    for line in done {
        println!("repair: {line}");
    }
    Ok(())
}

fn run_online(cmd: Cmd) -> Result<(), AdminError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AdminError::Runtime)?;
    rt.block_on(online_command(cmd))
}

fn print_action(result: protocol::ActionResult) {
    println!("{}: {} — {}", result.destination, result.action, result.detail);
}

async fn online_command(cmd: Cmd) -> Result<(), AdminError> {
    let client = |o: &Online| {
        let tls = online::ClientTls {
            ca_file: o.ca_file.clone(),
            client_cert: o.client_cert.clone(),
            client_key: o.client_key.clone(),
        };
        online::AdminClient::new(&o.broker, &o.token, &tls)
    };
    let act = |online: Online, destination: String, action: AdminAction| async move {
        print_action(client(&online)?.action(&destination, action, None).await?);
        Ok(())
    };
    match cmd {
        Cmd::Destinations { online, json } => {
            let list = client(&online)?.destinations().await?;
            online::print_destinations(&list, json, &mut out()).map_err(AdminError::Output)
        }
        Cmd::Pause { online, destination } => act(online, destination, AdminAction::Pause).await,
        Cmd::Resume { online, destination } => act(online, destination, AdminAction::Resume).await,
        Cmd::ResetBreaker { online, destination } => act(online, destination, AdminAction::ResetBreaker).await,
        Cmd::Redrive { online, destination } => act(online, destination, AdminAction::Redrive).await,
        Cmd::Rewind { online, destination, earliest, offset, lane, timestamp } => {
            let target = match (earliest, offset, timestamp) {
                (true, None, None) => protocol::RewindTarget::Earliest,
                (false, Some(offset), None) => protocol::RewindTarget::Offset { offset, lane },
                (false, None, Some(ts_ms)) => protocol::RewindTarget::Timestamp { ts_ms },
                _ => return Err(AdminError::RewindTarget),
            };
            print_action(client(&online)?.rewind(&destination, &target).await?);
            Ok(())
        }
        Cmd::DeadLetters { online, destination, limit, json } => {
            let list = client(&online)?.dead_letters(&destination, limit).await?;
            online::print_dead_letters(&list, json, &mut out()).map_err(AdminError::Output)
        }
        Cmd::Segments { .. } | Cmd::Verify { .. } | Cmd::Dump { .. } | Cmd::Repair { .. } | Cmd::Migrate { .. } => {
            Ok(())
        }
    }
}
