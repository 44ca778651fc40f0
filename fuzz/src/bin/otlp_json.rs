//! `cargo afl fuzz -i corpus/otlp_json -o out/otlp_json target/release/otlp_json` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::otlp_json(data);
    });
}
