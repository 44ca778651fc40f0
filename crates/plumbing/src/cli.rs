//! Flags and the runtime, with the contract's exit codes.

/// Parse a binary's flags: `--help`/`--version` exit 0, bad usage exits 2
/// with clap's message (the contract's exit codes).
pub fn parse_args_or_exit<T: clap::Parser>() -> T {
    T::try_parse().unwrap_or_else(|e| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let _ = e.print();
        std::process::exit(code);
    })
}

/// A multi-threaded runtime, or exit 1 with a one-line reason.
pub fn runtime_or_exit(binary: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| {
        eprintln!("{binary}: cannot start the async runtime: {e}");
        std::process::exit(1);
    })
}
