//! `broker-admin`: see `broker-admin --help` and `../shared/CONTRACT.md`.
use clap::Parser;

fn main() {
    let cli = match broker::admin_cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match broker::admin_cli::run(cli) {
        broker::admin_cli::Exit::Ok => {}
        broker::admin_cli::Exit::Problems(why) => {
            eprintln!("broker-admin: {why}");
            std::process::exit(1);
        }
        broker::admin_cli::Exit::Usage(why) => {
            eprintln!("broker-admin: {why}");
            std::process::exit(2);
        }
    }
}
