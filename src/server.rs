//! Process assembly: builds the Pingora server (threads, pid file, upgrade socket, error log,
//! grace periods from the config's `switchboard:` section and the command line), the gateway
//! service and its listener, the SIGHUP reload service and the lifecycle service (systemd
//! notifications, drain on shutdown).

use crate::app::App;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::lifecycle::{LifecycleService, SettledShutdown, Signals};
use crate::reload::ReloadService;
use crate::router::{Snapshot, StateRegistry};
use crate::systemd::Notifier;
use crate::upstream::UpstreamClient;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Command-line overrides of the config's listener settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub threads: Option<usize>,
}

pub struct Built {
    pub server: Server,
    pub app: Arc<App>,
    pub listen: String,
    signals: Signals,
}

impl Built {
    /// Runs until shut down and drained; returns only when Pingora's own teardown ends.
    pub fn run(self) {
        self.server.run(RunArgs {
            shutdown_signal: Box::new(self.signals),
        });
    }
}

/// Builds the server from a validated config. `upgrade` takes the listening sockets from a
/// running instance (Pingora's zero-downtime upgrade); `daemon` forks into the background.
pub fn build(
    config: Config,
    overrides: &Overrides,
    upgrade: bool,
    daemon: bool,
) -> Result<Built, String> {
    let mut s = config.server.clone();
    if let Some(h) = &overrides.host {
        s.host = h.clone();
    }
    if let Some(p) = overrides.port {
        s.port = p;
    }
    if let Some(t) = overrides.threads {
        s.threads = t;
    }
    let conf = ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        daemon,
        // After the listeners close Pingora sleeps this long before stopping its runtimes (which
        // drops whatever still runs); the lifecycle service exits as soon as nothing is in
        // flight, so this is the drain window's upper bound. `grace_period_seconds` (listeners
        // still open after SIGTERM) is handled in `Signals`.
        grace_period_seconds: Some(s.graceful_shutdown_timeout_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    crate::codec::limits::set_max_stream_event_bytes(s.max_stream_event_bytes);
    let client = Arc::new(UpstreamClient::new(s.upstream_keepalive_pool_size));
    let registry = StateRegistry::default();
    let config_path = config.source.clone();
    let snapshot = Snapshot::build(config, 1, &client, &registry).map_err(|e| e.to_string())?;
    let app = Arc::new(App::new(snapshot, client, registry));
    let notifier = Arc::new(Notifier::from_env());

    let proxy = pingora_proxy::http_proxy(&server.configuration, Gateway { app: app.clone() });
    let mut service = Service::new("switchboard".to_string(), SettledShutdown(Arc::new(proxy)));
    let listen = if s.host.contains(':') && !s.host.starts_with('[') {
        format!("[{}]:{}", s.host, s.port)
    } else {
        format!("{}:{}", s.host, s.port)
    };
    service.add_tcp(&listen);
    server.add_service(service);

    // --- routing: active health checks (router::health) over the current snapshot ---
    {
        let app = app.clone();
        let checks =
            crate::router::health::HealthChecks::new(move || app.snapshot.load().routing.clone());
        server.add_service(background_service("health checks", checks));
    }
    // --- end routing ---
    crate::lifecycle::install_signal_handlers()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    server.add_service(background_service(
        "config reload",
        ReloadService {
            app: app.clone(),
            config_path,
            notifier: notifier.clone(),
        },
    ));
    server.add_service(background_service(
        "lifecycle",
        LifecycleService {
            app: app.clone(),
            notifier: notifier.clone(),
            phases: Mutex::new(Some(server.watch_execution_phase())),
            listen: listen.clone(),
            upgraded: upgrade,
            drain_timeout: Duration::from_secs(s.graceful_shutdown_timeout_seconds),
        },
    ));
    let signals = Signals {
        app: app.clone(),
        notifier,
        grace_period: Duration::from_secs(s.grace_period_seconds),
    };
    Ok(Built {
        server,
        app,
        listen,
        signals,
    })
}
