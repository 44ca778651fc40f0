include!("../build_commit.rs");
