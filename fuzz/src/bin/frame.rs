//! `cargo afl fuzz -i corpus/frame -o out/frame target/release/frame` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::frame(data);
    });
}
