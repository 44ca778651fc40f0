//! The three binaries under test. Each is its own package, so Cargo sets
//! no `CARGO_BIN_EXE_*` for them here: the first use builds them (`cargo
//! build --bins` of their packages, a no-op when they are fresh, so a test
//! never runs a stale binary) into this test's own target directory and
//! profile, and hands out their paths.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A binary of the workspace, built on first use.
pub struct Bin {
    name: &'static str,
    path: OnceLock<PathBuf>,
}

pub static BROKER: Bin = Bin { name: "broker", path: OnceLock::new() };
pub static EXPORTER: Bin = Bin { name: "exporter", path: OnceLock::new() };
pub static ADMIN: Bin = Bin { name: "broker-admin", path: OnceLock::new() };

impl Bin {
    pub fn path(&self) -> &Path {
        self.path.get_or_init(|| {
            let dir = profile_dir();
            build_once(&dir);
            let p = dir.join(self.name);
            assert!(p.exists(), "{} was not built at {}", self.name, p.display());
            p
        })
    }
}

impl AsRef<OsStr> for Bin {
    fn as_ref(&self) -> &OsStr {
        self.path().as_os_str()
    }
}

/// `target/<profile>`: the test executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

fn build_once(dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "weir-broker",
            "-p",
            "weir-exporter",
            "-p",
            "weir-broker-admin",
            "--manifest-path",
        ]);
        cmd.arg(&manifest);
        if dir.file_name() == Some(OsStr::new("release")) {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let out = cmd.output().expect("run cargo build for the binaries under test");
        assert!(out.status.success(), "building the binaries failed:\n{}", String::from_utf8_lossy(&out.stderr));
    });
}
