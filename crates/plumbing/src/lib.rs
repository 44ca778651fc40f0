//! # plumbing — what every Weir process needs around its own job
//!
//! Owns: `weir_build_info` and the `process_*` metrics (`build_info`),
//! parsing a binary's flags with the contract's exit codes, `${VAR}`
//! in configuration values (`env_vars`), the log
//! subscriber, the async runtime, stop signals, the wall clock, the data directory's layout
//! and its lock, and the hardened HTTP/1.1 listener that the broker and the
//! exporter's own `/metrics` both serve on.
//!
//! ## Invariants
//! - `--help`/`--version` exit 0; bad usage exits 2 with a one-line reason.
//! - One broker per data directory: [`datadir::DirLock`] is an OFD lock
//!   that read-only tools can test without taking it.
//! - Every connection the listener serves has a request-head deadline; a
//!   stop drains requests in flight, then returns.
//! - Connections that have not sent a whole first head are bounded apart
//!   from the others (`admission`): silence cannot hold a place for long.
//!
//! ## Never
//! - depend on the broker, the WAL or sled: the exporter links this crate
//!   and must stay an HTTP-only process.
//!
//! Every `unsafe` block (the data directory's `fcntl` lock) says why it is
//! sound in a `// SAFETY:` comment.

#![deny(missing_docs)]

mod admission;
pub mod build_info;
pub mod cli;
pub mod clock;
pub mod datadir;
pub mod env_vars;
pub mod listener;
pub mod logging;
pub mod reasons;
pub mod signals;
pub mod tls;
