//! Reading a configuration file: bounded, so `--config /dev/zero` (or a
//! log file named by mistake) is an error naming the file, not a broker that
//! reads until memory runs out.

use super::{Config, ConfigError};
use std::io::Read;
use std::path::Path;

/// Largest configuration file read: 4 MiB, far above any real one (a
/// thousand tenants take about 150 KiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The text of `path`, read through `Read::take` so at most
/// [`MAX_CONFIG_BYTES`] + 1 bytes are ever held.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf(), max: MAX_CONFIG_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::NotText { path: path.to_path_buf() })
}

impl Config {
    /// Read and parse the file at `path`, expand `${VAR}` in its string
    /// values from the process environment, and read the secret files it
    /// names (not validated: command-line overrides apply first, then
    /// [`Config::validate`]).
    pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read_file_with(path, &plumbing::env_vars::from_environment)
    }

    /// [`Config::read_file`] with the variables from `lookup`.
    pub fn read_file_with(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let parsed = Config::from_toml(&read_text(path)?)?;
        let mut expanded = plumbing::env_vars::expand(&parsed, lookup)?;
        expanded.load_secret_files()?;
        Ok(expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_expanded_after_parsing_and_an_unset_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("weir.toml");
        std::fs::write(&p, "admin_token = \"${ADMIN}\"\ndata_dir = \"$${ADMIN}\"\n").unwrap();
        let env = |name: &str| (name == "ADMIN").then(|| "x\"\nshards = 9".to_string());
        let cfg = Config::read_file_with(&p, &env).unwrap();
        assert_eq!(cfg.admin_token, "x\"\nshards = 9", "a value is content, never TOML");
        assert_eq!(cfg.shards, wal::DEFAULT_SHARDS);
        assert_eq!(cfg.data_dir, Path::new("${ADMIN}"));
        let e = Config::read_file_with(&p, &|_: &str| None).unwrap_err().to_string();
        assert!(e.contains("admin_token") && e.contains("ADMIN") && e.contains("not set"), "{e}");
    }

    #[test]
    fn config_refuses_dev_zero_with_a_size_cap() {
        let e = Config::read_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than 4194304"), "{}", e);
    }

    #[test]
    fn config_read_errors_name_the_file_and_the_cause() {
        let e = Config::read_file(Path::new("/nonexistent/weir.toml")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/weir.toml") && e.contains("No such file"), "{}", e);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bin.toml");
        std::fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        assert!(Config::read_file(&p).unwrap_err().to_string().contains("not UTF-8"));
        // Exactly at the cap is read (and then judged as TOML).
        std::fs::write(&p, vec![b' '; MAX_CONFIG_BYTES as usize]).unwrap();
        let cfg = Config::read_file(&p).expect("blank TOML parses");
        assert!(cfg.validate().unwrap_err().to_string().contains("admin_token"));
    }
}
