//! Tokens a broker on a public address refuses: plain tokens too short to
//! resist guessing, and every token the repository ships in `ops/` (whose
//! values anyone can read, in plain or as a digest). On a loopback address
//! both stay allowed: short development tokens are convenient there, and
//! nobody else can reach the port.

use super::{Config, ConfigError};
use crate::tokens::TokenSpec;
use std::net::SocketAddr;

/// Shortest plain token accepted on a non-loopback address, bytes. A
/// `sha256:` token cannot be length-checked: its secret is not in the file.
pub(crate) const MIN_PUBLIC_TOKEN_BYTES: usize = 16;

/// SHA-256 digests (hex) of every token shipped in `ops/` — the examples
/// and placeholders of `ops/broker.toml`, `ops/k8s/*.toml`,
/// `ops/exporter.toml` and `ops/scale-out/run.sh`. A test
/// (`tests/ops_files.rs::ops_tokens_are_all_in_the_shipped_token_list`)
/// scans `ops/` so a newly shipped token cannot slip in unlisted.
pub const SHIPPED_TOKEN_DIGESTS: &[&str] = &[
    // password
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
    // test
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    // foo
    "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    // bar
    "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9",
    // baz
    "baa5a0964d3320fbc0c6a922140453c8513ea24ab8fd0577034804a967248096",
    // admin-secret
    "16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01",
    // files-secret
    "86cd5a13af62d4dd01ff3b19536cde1e12f61ec3180328d676d29a6784062e64",
    // tok-t1
    "e8ec2b9e64503cc6ce986ab273b6e1b650d05de43619625b102cf4e0395851e4",
    // tok-t2
    "923da9cc6575ba189cbe7f6b0dbbecbdd0a1ad2a722c561132b2f53f47af57b6",
    // tok-t3
    "62e7a4a1da3c8a5cd02b7159d07b398d59ae34877915265428aae3340636e17b",
    // tok-t4
    "9f789572e928289de559a49ebb66684281e1a053928df7316cd294a383067776",
    // tok-t5
    "2a2ea7640c51dcc3b27af1fe7fc0701fa84aa803bfca4539c02b9bb2431908e6",
    // tok-t6
    "02fa127e9f4075af0380c47e78e2d123baac3535abcecce485a1f28a8a40d550",
    // tok-t7
    "6b341fc8fcef39f02d4b50319cacc16c1a1cfe41e10fc42dbf61d753b5d81e9a",
    // tok-t8
    "b478d2f41694e702a7843dfbd1371ab696062c24b49e51d589330e363ddb076c",
    // REPLACE-ME-admin-token
    "18e26be30b57cba6d5a0d2401d1b0bc4461acef0f9177117669e376c504a1885",
    // REPLACE-ME-acme-ingest-token
    "fe6e7f136de5adbcdc45e944ccc70ac61f12c5f4ddf8aabfd5ebdc239360e6f7",
    // REPLACE-ME-globex-ingest-token
    "2ff091cd1f784fba06c05f679f13ed343d0748f1a64bf98325b9d00588b24a87",
    // REPLACE-ME-acme-ch-exporter-token
    "2395811b9c7a76baa4f5258d11741d64c9a134709ce44e396d336d4250aacd9b",
    // REPLACE-ME-audit-webhook-exporter-token
    "25c5d8a5cd1e7f6513751bc71f80e41fc18402fba77b50824a2acfd4cfeec767",
];

/// Is `token` (plain or `sha256:<hex>`, as a config holds it) one of the
/// tokens shipped in `ops/`? A token that does not parse is not.
pub fn is_shipped_token(token: &str) -> bool {
    let Ok(spec) = TokenSpec::parse(token) else {
        return false;
    };
    SHIPPED_TOKEN_DIGESTS
        .iter()
        .filter_map(|hex| TokenSpec::parse(&format!("sha256:{hex}")).ok())
        .any(|shipped| shipped == spec)
}

impl Config {
    /// On a non-loopback `listen`, refuse weak tokens, naming the key.
    pub(super) fn check_public_tokens(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if listen.ip().is_loopback() {
            return Ok(());
        }
        for (owner, token) in self.token_owners() {
            if is_shipped_token(token) {
                return Err(ConfigError::ShippedTokenOnPublicAddress { owner, listen });
            }
            if !token.starts_with("sha256:") && token.len() < MIN_PUBLIC_TOKEN_BYTES {
                return Err(ConfigError::ShortTokenOnPublicAddress {
                    owner,
                    listen,
                    min_bytes: MIN_PUBLIC_TOKEN_BYTES,
                });
            }
        }
        Ok(())
    }
}
