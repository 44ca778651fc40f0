//! `cargo afl fuzz -i corpus/config -o out/config target/release/config` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::config(data);
    });
}
