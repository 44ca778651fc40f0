//! `${VAR}` in a configuration file's string values, expanded after the
//! file is parsed — so a variable's value is only ever a string's content,
//! never TOML, and cannot add or change a key. Shared by the broker's and
//! the exporter's configuration readers.
//!
//! The rules (docs/config.md, "Secrets"): `${NAME}` is the variable's
//! value (NAME: a letter or `_`, then letters, digits, `_`); `$$` is one
//! literal `$`; any other `$` is itself. An unset variable, or a `${` that
//! is not a well-formed reference, is an error naming the key that holds it
//! (and the variable), never its value.

use serde::{de::DeserializeOwned, Serialize};
use toml::Value;

/// Why a configuration's variables could not be expanded. The broker and
/// the exporter exit 2 with it.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// `${NAME}` names a variable the environment does not hold: set it, or
    /// write `$${` for a literal `${`.
    #[error("{key}: environment variable {name} is not set (write $$ for a literal $)")]
    Unset {
        /// The key holding the reference, e.g. `tenant[0].token`.
        key: String,
        /// The variable's name.
        name: String,
    },
    /// `${` without a closing `}`, or with a name that is not a variable's.
    #[error("{key}: `${{` at byte {at} is not a ${{NAME}} reference (write $$ for a literal $)")]
    Malformed {
        /// The key holding the reference.
        key: String,
        /// Byte offset of the `$` in the value.
        at: usize,
    },
    /// The parsed configuration could not be turned into its TOML value
    /// tree (a bug of its types: a file's values always fit).
    #[error("expanding variables: the configuration's types do not map to TOML")]
    ToTree(#[source] toml::ser::Error),
    /// The expanded tree did not read back as the configuration (a bug of
    /// its types: only strings change, into strings).
    #[error("expanding variables: the expanded configuration does not read back")]
    FromTree(#[source] toml::de::Error),
}

/// Longest variable name taken: far above any real one, and a bound on the
/// scan of a malformed reference.
const MAX_NAME: usize = 255;

/// `config` with every string value (at any depth) expanded by `lookup`.
pub fn expand<T: Serialize + DeserializeOwned>(
    config: &T,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ExpandError> {
    // The TOML tree, not JSON's: it keeps NaN and infinities (which the
    // validation then refuses by name) and every integer a file can hold.
    let mut tree = Value::try_from(config).map_err(ExpandError::ToTree)?;
    let mut key = String::new();
    expand_tree(&mut tree, &mut key, lookup)?;
    tree.try_into().map_err(ExpandError::FromTree)
}

/// The process environment, as [`expand`]'s `lookup`.
pub fn from_environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Expand every string under `node`; `key` is its path (restored on return).
fn expand_tree(node: &mut Value, key: &mut String, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), ExpandError> {
    let depth = key.len();
    match node {
        Value::String(text) => {
            if let Some(expanded) = expand_str(text, key, lookup)? {
                *text = expanded;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                key.push_str(&format!("[{i}]"));
                expand_tree(item, key, lookup)?;
                key.truncate(depth);
            }
        }
        Value::Table(fields) => {
            for (name, item) in fields.iter_mut() {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
                expand_tree(item, key, lookup)?;
                key.truncate(depth);
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
    Ok(())
}

/// One value expanded; `None` when it holds no `$` (nothing to do).
pub fn expand_str(
    text: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ExpandError> {
    if !text.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Bounded: every turn consumes at least one byte of `rest`.
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let at = text.len() - rest.len() + dollar;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('{') {
            let malformed = || ExpandError::Malformed { key: key.to_string(), at };
            let end = reference.find('}').filter(|&e| e <= MAX_NAME).ok_or_else(malformed)?;
            let name = &reference[..end];
            if !is_name(name) {
                return Err(malformed());
            }
            let value =
                lookup(name).ok_or_else(|| ExpandError::Unset { key: key.to_string(), name: name.to_string() })?;
            out.push_str(&value);
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// A configuration parser's message with every quoted value redacted:
/// serde names the value it could not take (`invalid type: string
/// "s3cret", expected a sequence`), which may be a token. Key names are in
/// backticks and stay; the message is made one line.
pub fn quoted_redacted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.replace('\n', " ").split('"').enumerate() {
        match i % 2 {
            0 => out.push_str(part),
            _ => out.push_str("\"<redacted>\""),
        }
    }
    out
}

/// A shell variable's name: a letter or `_`, then letters, digits, `_`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("\"\nadmin_token = \"x\"".into()),
            _ => None,
        }
    }

    fn one(text: &str) -> Result<String, ExpandError> {
        Ok(expand_str(text, "k", &env)?.unwrap_or_else(|| text.to_string()))
    }

    #[test]
    fn references_are_replaced_and_dollar_dollar_is_a_literal_dollar() {
        assert_eq!(one("${TOKEN}").unwrap(), "s3cret");
        assert_eq!(one("a-${TOKEN}-${EMPTY}-b").unwrap(), "a-s3cret--b");
        assert_eq!(one("$${TOKEN}").unwrap(), "${TOKEN}");
        assert_eq!(one("cost $5 and $$").unwrap(), "cost $5 and $");
        assert_eq!(one("trailing $").unwrap(), "trailing $");
        assert_eq!(one("plain").unwrap(), "plain");
    }

    #[test]
    fn an_unset_or_malformed_reference_names_the_key_and_the_variable_only() {
        let e = one("${NOPE}").unwrap_err().to_string();
        assert!(e.contains("k:") && e.contains("NOPE") && e.contains("not set"), "{e}");
        for bad in ["${TOKEN", "${}", "${1X}", "${TO KEN}", "x${a-b}"] {
            assert!(matches!(one(bad), Err(ExpandError::Malformed { .. })), "{bad}");
        }
        let long = format!("${{{}}}", "A".repeat(MAX_NAME + 1));
        assert!(matches!(one(&long), Err(ExpandError::Malformed { .. })));
    }

    #[test]
    fn a_parse_message_keeps_key_names_and_loses_quoted_values() {
        let m = "invalid type: string \"s3cret\", expected a sequence\nfor key `tokens`";
        assert_eq!(quoted_redacted(m), "invalid type: string \"<redacted>\", expected a sequence for key `tokens`");
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct File {
        admin_token: String,
        port: u16,
        rate: f64,
        hard: Option<f64>,
        tenant: Vec<Tenant>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Tenant {
        name: String,
        tokens: Vec<String>,
    }

    #[test]
    fn every_string_at_any_depth_is_expanded_and_a_value_cannot_add_a_key() {
        let file = File {
            admin_token: "${QUOTE}".into(),
            port: 7,
            rate: f64::INFINITY,
            hard: Some(f64::NAN),
            tenant: vec![Tenant { name: "t".into(), tokens: vec!["a".into(), "${TOKEN}".into()] }],
        };
        let out = expand(&file, &env).unwrap();
        assert_eq!(out.admin_token, "\"\nadmin_token = \"x\"", "the value is content, not TOML");
        assert_eq!(out.tenant[0].tokens, ["a", "s3cret"]);
        assert_eq!(out.port, 7);
        assert_eq!(out.rate, f64::INFINITY, "non-finite values survive, for the validation to refuse");
        assert!(out.hard.is_some_and(f64::is_nan), "a NaN is not turned into an absent value");
        let bad = File { tenant: vec![Tenant { name: "${NOPE}".into(), tokens: vec![] }], ..file };
        let e = expand(&bad, &env).unwrap_err().to_string();
        assert!(e.starts_with("tenant[0].name: environment variable NOPE"), "{e}");
    }
}
