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

pub mod error;
mod legacy_lost;
pub mod offline;
pub mod online;

use crate::error::AdminError;
use clap::{Args as ClapArgs, Parser, Subcommand};
use protocol::routes::AdminAction;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "broker-admin",
    version,
    about = "Inspect, verify and repair Weir data directories; see and steer destinations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, ClapArgs)]
pub struct Online {
    /// Broker base URL, e.g. http://127.0.0.1:7070
    #[arg(long)]
    pub broker: String,
    /// Admin token.
    #[arg(long)]
    pub token: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
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
    /// Convert a data directory written by WAL format 1 to format 2 (refuses
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

/// Outcome: exit code and a one-line reason for failures.
pub enum Exit {
    Ok,
    Problems(String),
    Usage(String),
}

fn out() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

pub fn run(cli: Cli) -> Exit {
    match cli.cmd {
        Cmd::Segments { data_dir, json } => to_exit(offline::segments(&data_dir, json, &mut out())),
        Cmd::Dump { data_dir, lane, from, limit, tenant, topic, follow } => {
            let lane = match lane.map(|l| l.parse()).transpose() {
                Ok(l) => l,
                Err(e) => return Exit::Usage(format!("--lane: {e}")),
            };
            let f = offline::DumpFilter { lane, from, limit, tenant, topic };
            if !follow {
                return to_exit(offline::dump(&data_dir, &f, &mut out()).map(|_| ()));
            }
            let mut seen = std::collections::HashMap::new();
            loop {
                if let Err(e) = offline::dump_from(&data_dir, &f, &mut seen, &mut out()) {
                    return Exit::Problems(e.to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        Cmd::Verify { data_dir } => match offline::verify(&data_dir, true) {
            Ok(v) => {
                for line in &v.notes {
                    println!("note: {line}");
                }
                for line in &v.problems {
                    println!("{line}");
                }
                if v.problems.is_empty() {
                    println!("verify: clean");
                    Exit::Ok
                } else {
                    Exit::Problems(format!(
                        "verify: {} problem(s) found; run `broker-admin repair` with the broker stopped",
                        v.problems.len()
                    ))
                }
            }
            Err(e) => Exit::Problems(e.to_string()),
        },
        Cmd::Migrate { data_dir } => match offline::migrate(&data_dir) {
            Ok(done) => {
                for line in &done.lines {
                    println!("migrate: {line}");
                }
                // Acknowledged records were left unconverted: not a success
                // a script may start the broker after.
                if done.kept_aside > 0 {
                    Exit::Problems(format!(
                        "migrate: {} segment(s) kept records it could not convert aside; read the lines above and `broker-admin verify` before starting the broker",
                        done.kept_aside
                    ))
                } else {
                    Exit::Ok
                }
            }
            Err(e) => Exit::Problems(e.to_string()),
        },
        Cmd::Repair { data_dir, discard_quarantine } => match offline::repair(&data_dir, discard_quarantine) {
            Ok(done) => {
                if done.is_empty() {
                    println!("repair: nothing to do");
                }
                for line in done {
                    println!("repair: {line}");
                }
                Exit::Ok
            }
            Err(e) => Exit::Problems(e.to_string()),
        },
        online_cmd => run_online(online_cmd),
    }
}

fn to_exit(r: Result<(), AdminError>) -> Exit {
    match r {
        Ok(()) => Exit::Ok,
        Err(e) => Exit::Problems(e.to_string()),
    }
}

fn run_online(cmd: Cmd) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return Exit::Problems(e.to_string()),
    };
    let client = |o: &Online| online::AdminClient::new(&o.broker, &o.token);
    let print_action = |r: Result<protocol::ActionResult, AdminError>| match r {
        Ok(a) => {
            println!("{}: {} — {}", a.destination, a.action, a.detail);
            Exit::Ok
        }
        Err(e) => Exit::Problems(e.to_string()),
    };
    let result: Result<Exit, AdminError> = rt.block_on(async {
        Ok(match cmd {
            Cmd::Destinations { online, json } => {
                let list = client(&online)?.destinations().await?;
                online::print_destinations(&list, json, &mut out()).map_err(AdminError::Output)?;
                Exit::Ok
            }
            Cmd::Pause { online, destination } => {
                print_action(client(&online)?.action(&destination, AdminAction::Pause, None).await)
            }
            Cmd::Resume { online, destination } => {
                print_action(client(&online)?.action(&destination, AdminAction::Resume, None).await)
            }
            Cmd::ResetBreaker { online, destination } => {
                print_action(client(&online)?.action(&destination, AdminAction::ResetBreaker, None).await)
            }
            Cmd::Rewind { online, destination, earliest, offset, lane, timestamp } => {
                let target = match (earliest, offset, timestamp) {
                    (true, None, None) => protocol::RewindTarget::Earliest,
                    (false, Some(offset), None) => protocol::RewindTarget::Offset { offset, lane },
                    (false, None, Some(ts_ms)) => protocol::RewindTarget::Timestamp { ts_ms },
                    _ => {
                        return Ok(Exit::Usage("rewind needs exactly one of --earliest, --offset, --timestamp".into()))
                    }
                };
                print_action(client(&online)?.rewind(&destination, &target).await)
            }
            Cmd::DeadLetters { online, destination, limit, json } => {
                let list = client(&online)?.dead_letters(&destination, limit).await?;
                online::print_dead_letters(&list, json, &mut out()).map_err(AdminError::Output)?;
                Exit::Ok
            }
            Cmd::Redrive { online, destination } => {
                print_action(client(&online)?.action(&destination, AdminAction::Redrive, None).await)
            }
            Cmd::Segments { .. } | Cmd::Dump { .. } | Cmd::Verify { .. } | Cmd::Repair { .. } | Cmd::Migrate { .. } => {
                Exit::Ok
            }
        })
    });
    result.unwrap_or_else(|e| Exit::Problems(e.to_string()))
}
