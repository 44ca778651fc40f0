//! Tokens and roles. Tokens are kept only as SHA-256 digests (configured
//! plain or as `sha256:<hex>`), compared in constant time, and never logged.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Who a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A tenant, by its id.
    Tenant(crate::TenantId),
    /// The exporters of a destination, by its id.
    Exporter(crate::DestinationId),
    /// The operator (`admin_token`).
    Admin,
}

/// A configured token, as its SHA-256 digest; its `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenSpec([u8; 32]);

impl std::fmt::Debug for TokenSpec {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.write_str("TokenSpec(<redacted>)")
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn hex_nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A configured token that cannot be used; fix the key that holds it
/// ([`crate::ConfigError::Token`] names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `sha256:` followed by other than 64 characters.
    #[error("token: sha256: needs 64 hex digits")]
    DigestLength,
    /// `sha256:` followed by a character that is not a hex digit.
    #[error("token: sha256: has a non-hex digit")]
    DigestDigit,
    /// An empty token would match an empty bearer.
    #[error("token: must not be empty")]
    Empty,
}

impl TokenSpec {
    /// A token as configured: plain (its digest is taken) or
    /// `sha256:<64 hex digits>`.
    pub(crate) fn parse(configured: &str) -> Result<TokenSpec, TokenError> {
        if let Some(hex) = configured.strip_prefix("sha256:") {
            let b = hex.as_bytes();
            if b.len() != 64 {
                return Err(TokenError::DigestLength);
            }
            let mut out = [0u8; 32];
            for (i, pair) in b.chunks(2).enumerate() {
                match (hex_nibble(pair[0]), hex_nibble(pair[1])) {
                    (Some(h), Some(l)) => out[i] = h << 4 | l,
                    _ => return Err(TokenError::DigestDigit),
                }
            }
            return Ok(TokenSpec(out));
        }
        if configured.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(TokenSpec(digest(configured.as_bytes())))
    }

    /// Whether `presented` is this token (compared in constant time).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        ct_eq(&self.0, &digest(presented.as_bytes()))
    }
}

/// Constant-time equality of two digests.
fn ct_eq(left: &[u8; 32], right: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= left[i] ^ right[i];
    }
    std::hint::black_box(diff) == 0
}

/// Token digests to roles.
pub struct Authenticator {
    /// Bucketed by the first digest bytes, which reveal nothing of a token;
    /// the full digest is then compared in constant time.
    by_prefix: HashMap<u64, Vec<([u8; 32], Role)>>,
}

fn prefix(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

impl Authenticator {
    /// The table of `entries`; when two hold the same digest, the later
    /// one's role is the answer.
    pub fn new(entries: impl IntoIterator<Item = (TokenSpec, Role)>) -> Self {
        let mut by_prefix: HashMap<u64, Vec<([u8; 32], Role)>> = HashMap::new();
        for (spec, role) in entries {
            by_prefix.entry(prefix(&spec.0)).or_default().push((spec.0, role));
        }
        Authenticator { by_prefix }
    }

    /// The role of a presented bearer token, if any.
    pub fn role(&self, token: &str) -> Option<Role> {
        let d = digest(token.as_bytes());
        let mut found = None;
        for (cand, role) in self.by_prefix.get(&prefix(&d)).into_iter().flatten() {
            if ct_eq(cand, &d) {
                found = Some(*role);
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_sha256_tokens_authenticate_the_same() {
        let hex: String = digest(b"s3cret").iter().map(|b| format!("{b:02x}")).collect();
        let a = Authenticator::new([
            (
                TokenSpec::parse("s3cret").unwrap(),
                Role::Tenant(crate::Ids::default().assign(["t"], []).unwrap().tenants[0]),
            ),
            (TokenSpec::parse(&format!("sha256:{hex}")).unwrap(), Role::Admin),
        ]);
        // Both entries match the same token; the later one wins deterministically.
        assert_eq!(a.role("s3cret"), Some(Role::Admin));
        assert_eq!(a.role("other"), None);
    }

    #[test]
    fn bearer_header_is_parsed_strictly() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
