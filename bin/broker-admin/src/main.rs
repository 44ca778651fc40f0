//! `broker-admin`: see `broker-admin --help` and `../shared/CONTRACT.md`.
use admin::{run, Cli, Exit};

fn main() {
    let cli: Cli = plumbing::cli::parse_args_or_exit();
    let (code, why) = match run(cli) {
        Exit::Ok => return,
        Exit::Problems(why) => (1, why),
        Exit::Usage(why) => (2, why),
    };
    eprintln!("broker-admin: {why}");
    std::process::exit(code);
}
