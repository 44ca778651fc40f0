//! Secrets outside the file: `${VAR}` in string values (expanded after the
//! file is parsed, by `plumbing::env_vars`), and the `*_file` keys whose
//! files hold tokens (`admin_token_file`; a tenant's or destination's
//! `token_file`, first line, and `tokens_file`, one token a line).
//!
//! A principal (the admin, a tenant, a destination's exporters) holds every
//! token its keys name at once — `token`, `tokens`, and the files' — so a
//! token rotates with no failed request: add the new one, move the
//! clients, remove the old.

use super::{Config, ConfigError, TokenOwner};
use std::io::Read;
use std::path::Path;

/// Largest secret file read: 64 KiB holds hundreds of tokens; anything
/// larger is the wrong file.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Most tokens one principal may hold at once: a rotation needs two; a
/// bound keeps a runaway `tokens_file` from growing the token table.
pub const MAX_TOKENS_PER_PRINCIPAL: usize = 64;

/// What a `*_file` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileForm {
    /// One token: the first line.
    One,
    /// Tokens, one a line; blank lines are skipped.
    Lines,
}

/// The tokens in the file at `path` (key `key`, for messages).
fn read_tokens(key: &str, path: &Path, form: FileForm) -> Result<Vec<String>, ConfigError> {
    let fail = |source| ConfigError::SecretFile { key: key.to_string(), path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(fail)?;
    let invalid =
        |why: &'static str| ConfigError::SecretFileInvalid { key: key.to_string(), path: path.to_path_buf(), why };
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(invalid("larger than 64 KiB"));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text"))?;
    let lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let tokens: Vec<String> = match form {
        FileForm::One => lines.take(1).map(str::to_string).collect(),
        FileForm::Lines => lines.map(str::to_string).collect(),
    };
    if tokens.is_empty() {
        return Err(invalid("holds no token"));
    }
    Ok(tokens)
}

/// The tokens of a `token_file` and a `tokens_file`, either absent.
fn read_both(
    one: Option<&Path>,
    lines: Option<&Path>,
    section: &dyn Fn(&str) -> String,
) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    if let Some(path) = one {
        out.extend(read_tokens(&section("token_file"), path, FileForm::One)?);
    }
    if let Some(path) = lines {
        out.extend(read_tokens(&section("tokens_file"), path, FileForm::Lines)?);
    }
    Ok(out)
}

/// One principal's tokens: its one-token key (when set), its list, its files'.
fn tokens<'a>(one: &'a str, many: &'a [String], files: &'a [String]) -> Vec<&'a str> {
    let one = Some(one).filter(|t| !t.is_empty());
    one.into_iter().chain(many.iter().map(String::as_str)).chain(files.iter().map(String::as_str)).collect()
}

impl Config {
    /// Read every `*_file` key's file into the principal's `*file_tokens`
    /// (replacing what an earlier read left: a reload reads them again).
    pub fn load_secret_files(&mut self) -> Result<(), ConfigError> {
        self.admin_file_tokens = match &self.admin_token_file {
            Some(path) => read_tokens("admin_token_file", path, FileForm::One)?,
            None => Vec::new(),
        };
        for t in &mut self.tenants {
            let name = t.name.clone();
            t.file_tokens =
                read_both(t.token_file.as_deref(), t.tokens_file.as_deref(), &|key| format!("tenant {name:?}: {key}"))?;
        }
        for d in &mut self.destinations {
            let name = d.name.clone();
            d.file_tokens = read_both(d.token_file.as_deref(), d.tokens_file.as_deref(), &|key| {
                format!("destination {name:?}: {key}")
            })?;
        }
        Ok(())
    }

    /// Every principal with all of its tokens (keys, then files), in the
    /// file's order: the admin, the tenants, the destinations.
    pub(crate) fn principals(&self) -> Vec<(TokenOwner, Vec<&str>)> {
        let mut out = Vec::with_capacity(1 + self.tenants.len() + self.destinations.len());
        out.push((TokenOwner::Admin, tokens(&self.admin_token, &self.admin_tokens, &self.admin_file_tokens)));
        for t in &self.tenants {
            out.push((TokenOwner::Tenant(t.name.clone()), tokens(&t.token, &t.tokens, &t.file_tokens)));
        }
        for d in &self.destinations {
            out.push((TokenOwner::Destination(d.name.clone()), tokens(&d.token, &d.tokens, &d.file_tokens)));
        }
        out
    }

    /// Every token with the key that holds it, for messages.
    pub(crate) fn token_owners(&self) -> impl Iterator<Item = (TokenOwner, &str)> {
        self.principals().into_iter().flat_map(|(owner, tokens)| tokens.into_iter().map(move |t| (owner.clone(), t)))
    }

    /// Every principal holds at least one token and at most
    /// [`MAX_TOKENS_PER_PRINCIPAL`].
    pub(crate) fn check_token_counts(&self) -> Result<(), ConfigError> {
        for (owner, tokens) in self.principals() {
            if tokens.is_empty() {
                return Err(ConfigError::NoToken { owner });
            }
            if tokens.len() > MAX_TOKENS_PER_PRINCIPAL {
                return Err(ConfigError::TooManyTokens { owner, max: MAX_TOKENS_PER_PRINCIPAL });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn tokens_come_from_every_key_and_file_and_all_of_them_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin"), "admin-from-file\nignored-second-line\n").unwrap();
        std::fs::write(dir.path().join("acme"), "\n acme-a \n\nacme-b\n").unwrap();
        let text = format!(
            "admin_token_file = {:?}\nadmin_tokens = [\"admin-two\"]\n\
             [[tenant]]\nname = \"acme\"\ntoken = \"acme-0\"\ntokens_file = {:?}\nrate_per_sec = 1.0\nburst = 1\n\
             [[topic]]\nname = \"t\"\n\
             [[destination]]\nname = \"d\"\ntopics = [\"t\"]\ntokens = [\"d-old\", \"d-new\"]\n",
            dir.path().join("admin"),
            dir.path().join("acme")
        );
        let mut c = config(&text);
        c.load_secret_files().unwrap();
        let all: Vec<(String, &str)> = c.token_owners().map(|(o, t)| (o.to_string(), t)).collect();
        let want = [
            ("admin_token", "admin-two"),
            ("admin_token", "admin-from-file"),
            ("tenant \"acme\" token", "acme-0"),
            ("tenant \"acme\" token", "acme-a"),
            ("tenant \"acme\" token", "acme-b"),
            ("destination \"d\" token", "d-old"),
            ("destination \"d\" token", "d-new"),
        ];
        assert_eq!(all, want.map(|(o, t)| (o.to_string(), t)));
        let valid = c.validate().unwrap();
        assert_eq!(valid.tokens.tenants[0].len(), 3);
        assert_eq!(valid.tokens.admin.len(), 2);
    }

    #[test]
    fn a_principal_without_a_token_or_with_an_unreadable_file_is_refused_by_key() {
        let mut c = Config::development();
        c.tenants[0].token.clear();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tenant \"dev\"") && e.contains("no token"), "{e}");
        c.tenants[0].token_file = Some("/nonexistent/weir-token".into());
        let e = c.load_secret_files().unwrap_err().to_string();
        assert!(e.contains("tenant \"dev\": token_file") && e.contains("/nonexistent/weir-token"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, "\n  \n").unwrap();
        c.tenants[0].token_file = Some(blank);
        assert!(c.load_secret_files().unwrap_err().to_string().contains("holds no token"));
        c.tenants[0].token_file = Some("/dev/zero".into());
        assert!(c.load_secret_files().unwrap_err().to_string().contains("larger than 64 KiB"));
    }
}
