//! `broker`: see `broker --help` and `../shared/CONTRACT.md`.

fn main() {
    let args: broker::server::Args = broker::parse_args_or_exit();
    broker::init_tracing();
    if let Err(e) = broker::runtime_or_exit("broker").block_on(broker::server::run(args)) {
        eprintln!("broker: {e}");
        std::process::exit(e.exit_code());
    }
}
