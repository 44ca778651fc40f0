//! systemd's readiness protocol (`sd_notify(3)`), spoken directly: one
//! datagram to the Unix socket named by `NOTIFY_SOCKET`. Why not a crate:
//! the protocol is a single `sendto`, and the broker must control exactly
//! when READY goes — only after WAL recovery, so `systemctl start` and
//! units ordered `After=weir-broker.service` wait for a broker that can
//! accept (`Type=notify` in `ops/systemd/weir-broker.service`).

use std::os::unix::net::UnixDatagram;

/// Sent once recovery is done and the broker serves.
pub const READY: &str = "READY=1\nSTATUS=WAL recovered; serving";
/// Sent when SIGTERM/SIGINT arrives, before in-flight commits finish.
pub const STOPPING: &str = "STOPPING=1\nSTATUS=stopping: finishing in-flight commits";
/// Sent before recovery starts (a long recovery shows in `systemctl status`).
pub const RECOVERING: &str = "STATUS=recovering the WAL";

/// Send `state` to the service manager. `Ok(false)` when not run under
/// one (no `NOTIFY_SOCKET`); an error is the caller's to log, never fatal.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.split_first() {
        // A leading '@' names a socket in the abstract namespace.
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(_) => {
            sock.send_to(state.as_bytes(), &path)?;
        }
        None => return Ok(false),
    }
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: a broker that
/// cannot tell systemd it is ready still serves (systemd times it out).
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
