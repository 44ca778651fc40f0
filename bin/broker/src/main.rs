//! `broker`: see `broker --help` and `../shared/CONTRACT.md`.

/// mimalloc rather than glibc's malloc: the accept path allocates per item
/// and per record on many threads at once, where glibc's arenas spent
/// about a sixth of the broker's CPU (docs/performance.md, "OTLP/HTTP ingest").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    plumbing::build_info::set_commit(env!("WEIR_GIT_COMMIT"));
    let args: broker::server::Args = plumbing::cli::parse_args_or_exit();
    if args.check_config.is_some() {
        std::process::exit(broker::check_config::run(&args));
    }
    plumbing::logging::init_tracing_as(args.log_format);
    if let Err(e) = plumbing::cli::runtime_or_exit("broker").block_on(broker::server::run(args)) {
        eprintln!("broker: {e}");
        std::process::exit(e.exit_code());
    }
}
