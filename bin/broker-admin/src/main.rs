//! `broker-admin`: see `broker-admin --help` and `../shared/CONTRACT.md`.
use admin::{run, Cli};

fn main() {
    let cli: Cli = plumbing::cli::parse_args_or_exit();
    if let Err(e) = run(cli) {
        eprintln!("broker-admin: {e}");
        std::process::exit(e.exit_code());
    }
}
