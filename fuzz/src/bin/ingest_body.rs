//! `cargo afl fuzz -i corpus/ingest_body -o out/ingest_body target/release/ingest_body` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::ingest_body(data);
    });
}
