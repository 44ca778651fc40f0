//! A throwaway ClickHouse server for export tests (tests/support/clickhouse.sh).

/// Start ClickHouse on a free loopback port through the project's script.
pub fn start_clickhouse(dir: &std::path::Path) -> (String, u32) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/clickhouse.sh");
    let out = std::process::Command::new("bash").arg(script).arg(dir).arg(port.to_string()).output().unwrap();
    assert!(out.status.success(), "clickhouse did not start: {}", String::from_utf8_lossy(&out.stderr));
    let pid: u32 = std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), pid)
}

pub struct KillOnDrop(pub u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
