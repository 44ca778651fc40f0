//! `broker --check-config FILE`: validate a configuration the way a start
//! would, and print what the broker would run with — every default filled
//! in, every token redacted — so an operator (or `ExecStartPre=`) can see a
//! mistake before a restart turns it into an outage.

use crate::server::{load_config, Args};
use config::{Config, ConfigError};

/// What a token looks like in the printed configuration: its form, never
/// its value (a sha256 of a weak token can be guessed, so that goes too).
fn redacted(token: &str) -> String {
    if token.starts_with("sha256:") {
        "sha256:<redacted>".into()
    } else {
        "<redacted>".into()
    }
}

/// The effective configuration as TOML that `broker --config` accepts
/// (once real tokens are put back).
pub fn effective_toml(cfg: &Config) -> Result<String, ConfigError> {
    let mut cfg = cfg.clone();
    let redact_all = |one: &mut String, many: &mut Vec<String>| {
        if !one.is_empty() {
            *one = redacted(one);
        }
        many.iter_mut().for_each(|t| *t = redacted(t));
    };
    redact_all(&mut cfg.admin_token, &mut cfg.admin_tokens);
    for t in &mut cfg.tenants {
        redact_all(&mut t.token, &mut t.tokens);
    }
    for d in &mut cfg.destinations {
        redact_all(&mut d.token, &mut d.tokens);
    }
    toml::to_string(&cfg).map_err(ConfigError::Print)
}

/// Run the check: 0 and the effective configuration on stdout, or 2 and
/// one line on stderr (the contract's bad-config code).
pub fn run(args: &Args) -> i32 {
    let file = args.check_config.clone();
    let args = Args { config: file.clone(), ..args.clone() };
    let name = file.as_deref().map_or_else(|| "-".into(), |p| p.display().to_string());
    match load_config(&args).and_then(|(cfg, _)| effective_toml(cfg.file())) {
        Ok(text) => {
            println!("# {name}: valid. Effective configuration (defaults filled in, tokens redacted):");
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("broker: {name}: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_and_defaults_filled_in() {
        let text = effective_toml(&Config::development()).unwrap();
        assert!(!text.contains("dev-token") && !text.contains("dev-admin") && !text.contains("dev-exporter"), "{text}");
        assert!(text.contains("admin_token = \"<redacted>\""), "{text}");
        assert!(text.contains("segment_bytes = 16777216") && text.contains("[[destination]]"), "{text}");
        // What it prints is a configuration the broker reads back.
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.shards, 4);
    }
}
