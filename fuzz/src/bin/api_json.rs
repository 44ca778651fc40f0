//! `cargo afl fuzz -i corpus/api_json -o out/api_json target/release/api_json` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::api_json(data);
    });
}
