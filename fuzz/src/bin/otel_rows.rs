//! `cargo afl fuzz -i corpus/otel_rows -o out/otel_rows target/release/otel_rows` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::otel_rows(data);
    });
}
