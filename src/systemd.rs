//! systemd integration without a crate: `sd_notify(3)` messages (READY, RELOADING, STOPPING,
//! WATCHDOG, STATUS, MAINPID) sent as datagrams to `$NOTIFY_SOCKET`. Outside systemd (no
//! `$NOTIFY_SOCKET`) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A handle on the notify socket.
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Set once this process hands over to an upgraded one, which speaks to systemd from then on.
    muted: AtomicBool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = if let Some(name) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier {
            target,
            muted: AtomicBool::new(false),
        }
    }

    /// Stops all further notifications from this process (it is being replaced).
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines). Errors are logged only.
    pub fn notify(&self, message: &str) {
        if self.muted.load(Ordering::Relaxed) {
            return;
        }
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                log::warn!("sd_notify failed: {e}");
            }
        }
    }

    /// The listeners are bound and requests are served. `main_pid` tells systemd that this
    /// process is now the service's main process (after a zero-downtime upgrade).
    pub fn ready(&self, status: &str, main_pid: bool) {
        let mut msg = format!("READY=1\nSTATUS={status}");
        if main_pid {
            msg.push_str(&format!("\nMAINPID={}", std::process::id()));
        }
        self.notify(&msg);
    }

    /// A reload starts; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading config",
            monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=draining in-flight requests");
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, if it is set for this process.
/// An upgraded process inherited its predecessor's `$WATCHDOG_PID` and pings all the same: it
/// is the main process now.
pub fn watchdog_interval(upgraded: bool) -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if !upgraded && pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_notify_socket() {
        let dir = std::env::temp_dir().join(format!("sb-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
            muted: AtomicBool::new(false),
        };
        n.reloading();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
        let usec: u64 = msg.lines().nth(1).unwrap()[15..].parse().unwrap();
        assert!(usec > 0);
        n.ready("serving", true);
        let len = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(
            msg.starts_with("READY=1\n") && msg.contains("MAINPID="),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
