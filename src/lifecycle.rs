//! Process lifecycle around Pingora's own: which signal means what, telling systemd where the
//! process is, and draining in-flight work before exit.
//!
//! - SIGTERM: readiness and liveness answer 503 `shutting_down` at once, systemd hears
//!   STOPPING=1; after `switchboard.grace_period_seconds` (load balancers notice) the listeners
//!   close; requests and streams in flight get up to `graceful_shutdown_timeout_seconds` to
//!   finish, and the process exits 0 as soon as none is left.
//! - SIGQUIT: Pingora's zero-downtime upgrade: the listening sockets go to a new process started
//!   with `--upgrade`; this one stops accepting and drains as above.
//! - SIGUSR2: self-upgrade for service managers: the config is validated, the binary at `argv[0]`
//!   (the new version once installed there) is started with `--upgrade`, and this process then
//!   proceeds as on SIGQUIT. Under systemd the new process becomes the main PID (it sends
//!   MAINPID= with READY=1; the unit has `NotifyAccess=all`).
//! - SIGINT: fast shutdown.
//! - READY=1 once Pingora runs and the listener accepts connections; WATCHDOG=1 every half
//!   `WATCHDOG_USEC` while the process runs.
//! - [`PidFile`]: `switchboard.pid_file` names the serving process (an upgraded process rewrites
//!   it) and is removed at exit unless a successor has written its own pid.

use crate::app::App;
use crate::systemd::Notifier;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

/// How long connections accepted before the listeners closed get to send their request head
/// before Pingora drops the ones still waiting (see [`SettledShutdown`]).
pub const SETTLE: Duration = Duration::from_millis(500);

/// Wraps the HTTP app so that, when the listeners close, connections still waiting for a request
/// head are dropped only after [`SETTLE`]. Pingora drops them at once, which fails a request
/// whose connection was accepted a moment before the listeners closed but whose bytes had not
/// arrived yet (seen under load during an upgrade). Idle keep-alive connections close after the
/// same delay.
///
/// It also bounds HTTP/2 response writes by its `Duration` (`client_write_timeout_seconds`): an
/// HTTP/2 client that stops granting flow-control window leaves the socket writable, so the
/// edge stream's stalled-write timer never fires; Pingora's per-session write timeout does.
pub struct SettledShutdown<A>(pub Arc<A>, pub Duration);

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for SettledShutdown<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if matches!(session, ServerSession::H2(_)) {
            session.set_write_timeout(Some(self.1));
        }
        crate::edge::head_begins(&session);
        self.0.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora_core::protocols::http::v2::server::H2Options> {
        self.0.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.0.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(SETTLE).await;
        self.0.http_cleanup().await
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.0
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}

/// Installs the process's SIGHUP and SIGUSR2 handlers now, so one that arrives before the
/// services listen for it is ignored instead of killing the process (the default action of
/// both). systemd only sends `ExecReload` after READY=1, by which time the services listen.
pub fn install_signal_handlers() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let _hup = signal(SignalKind::hangup())?;
        signal(SignalKind::user_defined2()).map(|_| ())
    })
}

/// Pingora's shutdown signals, with the drain flag and systemd told first.
pub struct Signals {
    pub app: Arc<App>,
    pub notifier: Arc<Notifier>,
    /// How long the listeners stay open after SIGTERM while readiness reports 503.
    pub grace_period: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
        loop {
            if let Some(s) = tokio::select! {
                _ = term.recv() => Some(self.terminate(&mut int).await),
                _ = quit.recv() => Some(self.hand_over()),
                _ = usr2.recv() => match self.spawn_successor().await {
                    Ok(pid) => {
                        log::info!("SIGUSR2: started upgraded process {pid}");
                        Some(self.hand_over())
                    }
                    Err(e) => {
                        log::error!("SIGUSR2: upgrade not started, still serving: {e}");
                        None
                    }
                },
                _ = int.recv() => Some(ShutdownSignal::FastShutdown),
            } {
                return s;
            }
        }
    }
}

impl Signals {
    async fn terminate(&self, int: &mut tokio::signal::unix::Signal) -> ShutdownSignal {
        log::info!(
            "SIGTERM: draining; listeners close in {}s",
            self.grace_period.as_secs()
        );
        self.app.draining.store(true, Ordering::Relaxed);
        self.notifier.stopping();
        tokio::select! {
            _ = tokio::time::sleep(self.grace_period) => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }

    fn hand_over(&self) -> ShutdownSignal {
        log::info!("handing the listeners to the upgraded process");
        // Health stays 200 here: the listening socket keeps being served (by both processes for
        // a few seconds, then by the new one). The new process reports READY with its MAINPID;
        // a STOPPING from here would read as the whole service stopping. reports READY with its MAINPID; a STOPPING from here would read as
        // the whole service stopping.
        self.notifier.mute();
        ShutdownSignal::GracefulUpgrade
    }

    /// Validates the config the successor will read, starts it with `--upgrade`, and checks it
    /// did not die at once. Returns its pid.
    async fn spawn_successor(&self) -> Result<u32, String> {
        let path = self.app.snapshot.load().config.source.clone();
        let config = crate::reload::load_config(&path).map_err(|e| e.to_string())?;
        crate::router::Snapshot::build(
            config,
            0,
            &self.app.client,
            &crate::router::StateRegistry::default(),
        )
        .map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        let mut rest: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if rest.is_empty() {
            return Err("no argv[0]".into());
        }
        let exe = rest.remove(0);
        if !rest.iter().any(|a| a == "--upgrade" || a == "-u") {
            rest.push("--upgrade".into());
        }
        let mut child = std::process::Command::new(&exe)
            .args(&rest)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.to_string_lossy()))?;
        let pid = child.id();
        tokio::time::sleep(Duration::from_millis(300)).await;
        match child.try_wait() {
            // Dropping the handle neither kills nor waits: the successor outlives this process.
            Ok(None) => Ok(pid),
            Ok(Some(status)) => Err(format!("the upgraded process exited at once ({status})")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Sends READY=1 and watchdog pings, and ends the process once a graceful shutdown has drained.
pub struct LifecycleService {
    pub app: Arc<App>,
    pub notifier: Arc<Notifier>,
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    /// Where to probe that the listener accepts before READY=1.
    pub listen: crate::config::listeners::ListenAddress,
    /// Started with `--upgrade`: tell systemd this is the main process now.
    pub upgraded: bool,
    /// Longest wait for in-flight requests after the listeners close.
    pub drain_timeout: Duration,
}

#[async_trait]
impl BackgroundService for LifecycleService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().ok().and_then(|mut p| p.take());
        let ready = async {
            if let Some(mut rx) = phases {
                loop {
                    match rx.recv().await {
                        Ok(ExecutionPhase::Running) => break,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
            wait_accepting(&self.listen).await;
            // READY=1 only once a SIGHUP (systemd's ExecReload) would be heard; bounded, so a
            // reload service that never starts cannot hold readiness back forever.
            for _ in 0..500 {
                if self
                    .app
                    .reload_armed
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let generation = self.app.snapshot.load().generation;
            self.notifier.ready(
                &format!(
                    "serving on {} (config generation {generation})",
                    self.listen
                ),
                self.upgraded,
            );
            // Pings until the process ends (the select below drops this future on shutdown).
            if let Some(every) = crate::systemd::watchdog_interval(self.upgraded) {
                loop {
                    self.notifier.watchdog();
                    tokio::time::sleep(every).await;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = ready => {}
            _ = wait_shutdown(&mut shutdown) => {}
        }
        self.app.draining.store(true, Ordering::Relaxed);
        self.notifier.stopping();
        self.drain().await;
    }
}

impl LifecycleService {
    /// The listeners are closed: waits until no request has been in flight for a moment (or the
    /// drain timeout passes), then exits 0 without waiting out Pingora's fixed grace sleep.
    async fn drain(&self) {
        // `graceful_shutdown_timeout_seconds` is any u64: a sum past what Instant holds is "never".
        let deadline = Instant::now().checked_add(self.drain_timeout);
        // Connections accepted just before the listeners closed send their request head within
        // SETTLE (see SettledShutdown); only then can "nothing in flight" mean done.
        tokio::time::sleep(SETTLE).await;
        let mut idle_polls = 0;
        while deadline.is_none_or(|d| Instant::now() < d) {
            if self.app.in_flight.count() == 0 {
                idle_polls += 1;
                // 5 quiet polls (100 ms) in a row mean done.
                if idle_polls >= 5 {
                    break;
                }
            } else {
                idle_polls = 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.app.in_flight.count();
        if left > 0 {
            log::warn!("drain timeout: exiting with {left} request(s) still in flight");
        } else {
            log::info!("drained: no request in flight, exiting");
        }
        // Spend still batched is written before the process ends (also on an upgrade: the old
        // process drains through here).
        if let Some(keys) = &self.app.keys {
            keys.flush(Duration::from_secs(5)).await;
        }
        // Alerts still collecting into a storm's message, or being delivered, go out too.
        crate::alerting::wait_flushed(crate::alerting::SHUTDOWN_FLUSH + Duration::from_secs(1))
            .await;
        // Spans and metrics of the last requests go out too (bounded: a dead collector does
        // not hold the exit past it).
        let _ =
            tokio::task::spawn_blocking(|| crate::telemetry::flush(Duration::from_secs(5))).await;
        remove_pid_file();
        crate::logging::flush(Duration::from_secs(2));
        std::process::exit(0);
    }
}

async fn wait_shutdown(shutdown: &mut ShutdownWatch) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            // The sender is gone: the server is ending without a graceful shutdown.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits (up to 10 s) until a connection to the listen address succeeds.
async fn wait_accepting(listen: &crate::config::listeners::ListenAddress) {
    use crate::config::listeners::ListenAddress;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let accepted = match listen {
            ListenAddress::Tcp(addr) => tokio::net::TcpStream::connect(probe_address(addr))
                .await
                .is_ok(),
            ListenAddress::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
        };
        if accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log::warn!("listener {listen} did not accept within 10s; reporting ready anyway");
}

/// `switchboard.pid_file`, written for this process (in the foreground; Pingora writes it when
/// daemonized) and removed at exit unless a successor has written its own pid there since.
pub struct PidFile;

static PID_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

impl PidFile {
    /// Writes this process's pid to `path` (atomically: a reader never sees a partial file).
    pub fn write(path: &str) -> std::io::Result<PidFile> {
        let path = std::path::PathBuf::from(path);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let _ = PID_FILE.set(path);
        Ok(PidFile)
    }

    /// Remembers `path` (written by Pingora's daemonize) for removal at exit.
    pub fn adopt(path: &str) {
        let _ = PID_FILE.set(std::path::PathBuf::from(path));
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        remove_pid_file();
    }
}

/// Removes the pid file if it still names this process (an upgraded successor's stays).
pub fn remove_pid_file() {
    let Some(path) = PID_FILE.get() else {
        return;
    };
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// A wildcard listen address is probed on loopback.
fn probe_address(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcard_probes_loopback() {
        assert_eq!(super::probe_address("0.0.0.0:4000"), "127.0.0.1:4000");
        assert_eq!(super::probe_address("[::]:4000"), "[::1]:4000");
        assert_eq!(super::probe_address("10.0.0.1:80"), "10.0.0.1:80");
    }
}
