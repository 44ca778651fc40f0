//! `cargo afl fuzz -i corpus/scan -o out/scan target/release/scan` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::scan(data);
    });
}
