//! `exporter`: see `exporter --help` and `../shared/CONTRACT.md`.
use exporter::worker::ExportError;

fn main() {
    plumbing::build_info::set_commit(env!("WEIR_GIT_COMMIT"));
    let args: exporter::config::Args = plumbing::cli::parse_args_or_exit();
    if args.check_config.is_some() {
        std::process::exit(exporter::check_config::run(args));
    }
    plumbing::logging::init_tracing();
    let resolved = args.merged().and_then(|settings| {
        let opts = exporter::config::Options::from_settings(settings.clone())?;
        Ok((exporter::reload::Running { settings }, opts))
    });
    let (running, opts) = resolved.unwrap_or_else(|e| {
        eprintln!("exporter: {e}");
        std::process::exit(2);
    });
    let result = plumbing::cli::runtime_or_exit("exporter")
        .block_on(async { exporter::worker::run(args, running, opts, plumbing::signals::stop_flag()).await });
    let code = match &result {
        Ok(()) => return,
        Err(ExportError::Usage(_)) => 2,
        Err(ExportError::Fatal(_)) => 1,
    };
    if let Err(e) = result {
        eprintln!("exporter: {e}");
    }
    std::process::exit(code);
}
