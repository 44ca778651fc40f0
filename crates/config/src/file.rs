//! Reading a configuration file: bounded, so `--config /dev/zero` (or a
//! log file named by mistake) is an error naming the file, not a broker that
//! reads until memory runs out.

use super::{Config, ConfigError};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest configuration file read: 4 MiB, far above any real one (a
/// thousand tenants take about 150 KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: larger than {max} bytes; is this the right file?")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("config {path}: not UTF-8 text")]
    NotText { path: PathBuf },
}

impl From<ReadError> for ConfigError {
    fn from(e: ReadError) -> ConfigError {
        // One line: the cause is already in the message (`{source}`).
        ConfigError(e.to_string().replace('\n', " "))
    }
}

/// The text of `path`, read through `Read::take` so at most
/// [`MAX_CONFIG_BYTES`] + 1 bytes are ever held.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), max: MAX_CONFIG_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: path.to_path_buf() })
}

impl Config {
    /// Read and parse the file at `path` (not validated: command-line
    /// overrides apply first, then [`Config::validate`]).
    pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_text(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_dev_zero_with_a_size_cap() {
        let e = Config::read_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.0.contains("/dev/zero") && e.0.contains("larger than 4194304"), "{}", e.0);
    }

    #[test]
    fn config_read_errors_name_the_file_and_the_cause() {
        let e = Config::read_file(Path::new("/nonexistent/weir.toml")).unwrap_err();
        assert!(e.0.contains("/nonexistent/weir.toml") && e.0.contains("No such file"), "{}", e.0);
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bin.toml");
        std::fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        assert!(Config::read_file(&p).unwrap_err().0.contains("not UTF-8"));
        // Exactly at the cap is read (and then judged as TOML).
        std::fs::write(&p, vec![b'\n'; MAX_CONFIG_BYTES as usize]).unwrap();
        assert!(Config::read_file(&p).unwrap_err().0.contains("admin_token"));
    }
}
