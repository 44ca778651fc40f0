//! `cargo afl fuzz -i corpus/otlp_proto -o out/otlp_proto target/release/otlp_proto` (docs/fuzzing.md)
fn main() {
    afl::fuzz!(|data: &[u8]| {
        weir_fuzz::targets::otlp_proto(data);
    });
}
