//! `broker`: see `broker --help` and `../shared/CONTRACT.md`.
use clap::Parser;

fn main() {
    let args = match broker::server::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    broker::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(broker::server::run(args)) {
        eprintln!("broker: {e}");
        std::process::exit(e.exit_code());
    }
}
