//! Fuzz targets for Weir's untrusted-input parsers (see `docs/fuzzing.md`).
//! The bodies live in [`targets`], a plain module that the root package's
//! `tests/fuzz_corpus.rs` also compiles (by path) to replay the corpora.
pub mod targets;
