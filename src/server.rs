//! Process assembly: builds the Pingora server (threads, pid file, upgrade socket, error log,
//! grace periods from the config's `switchboard:` section and the command line), the gateway
//! service and its listener, the SIGHUP reload service and the lifecycle service (systemd
//! notifications, drain on shutdown).

use crate::app::App;
use crate::config::Config;
use crate::edge::{Edge, EdgeLimits};
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

pub use crate::listeners::Overrides;

pub struct Built {
    pub server: Server,
    pub app: Arc<App>,
    /// The endpoints, as URLs, for the start-up log line.
    pub listen: String,
    signals: Signals,
    pid_file: Option<crate::lifecycle::PidFile>,
}

impl Built {
    /// Runs until shut down and drained; returns only when Pingora's own teardown ends.
    pub fn run(self) {
        self.server.run(RunArgs {
            shutdown_signal: Box::new(self.signals),
        });
        drop(self.pid_file);
    }
}

/// Why the server could not be built.
#[derive(Debug)]
pub enum StartError {
    /// The config (or a file it names, such as a certificate) is invalid: exit code 2.
    Config(String),
    /// A listener cannot bind, or the pid file cannot be written: exit code 1.
    Environment(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid config: {e}"),
            StartError::Environment(e) => f.write_str(e),
        }
    }
}

/// Builds the server from a validated config. `upgrade` takes the listening sockets from a
/// running instance (Pingora's zero-downtime upgrade); `daemon` forks into the background.
pub fn build(
    config: Config,
    overrides: &Overrides,
    upgrade: bool,
    daemon: bool,
) -> Result<Built, StartError> {
    use StartError::{Config as Invalid, Environment};
    let mut s = config.server.clone();
    if let Some(t) = overrides.threads {
        s.threads = t;
    }
    let listeners =
        crate::listeners::effective(&s, overrides).map_err(|e| Invalid(e.to_string()))?;
    let live_tls = crate::listeners::load_tls(&listeners).map_err(|e| Invalid(e.to_string()))?;
    if !upgrade {
        crate::listeners::check_bindable(&listeners).map_err(Environment)?;
    }
    for l in listeners.iter().filter(|l| l.proxy_protocol) {
        // The slot is parsed for the PROXY protocol work (issue 11, client addresses).
        log::warn!(
            "{}.proxy_protocol: not implemented by Switchboard yet; ignored",
            l.key_path
        );
    }
    let conf = ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
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
    let snapshot =
        Snapshot::build(config, 1, &client, &registry).map_err(|e| Invalid(e.to_string()))?;
    let keys = match &snapshot.config.general.master_key {
        Some(_) => {
            let url = crate::store::resolve_url(
                snapshot.config.general.database_url.as_deref(),
                snapshot.config.server.state_dir.as_deref(),
            );
            let every = snapshot.config.general.proxy_batch_write_at;
            Some(crate::keys::Keys::open(&url, every).map_err(Environment)?)
        }
        None => None,
    };
    let app = Arc::new(App::with_keys(snapshot, client, registry, keys));
    start_shared_cooldowns(&app);
    let notifier = Arc::new(Notifier::from_env());

    // Pingora's h2c switch is per app, and its pre-TLS hook per set of endpoints: listeners
    // with `h2c` or `proxy_protocol` get a service of their own (same gateway, same connection
    // count and edge limits).
    let mut services: [Option<Service<_>>; 4] = Default::default();
    let limits = Arc::new(EdgeLimits::new(&s));
    let open_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let proxy_protocol = Arc::new(crate::proxy_protocol::ProxyProtocol::new(
        s.trusted_proxies.clone(),
        s.request_header_timeout,
    ));
    for (listener, tls) in listeners.iter().zip(&live_tls) {
        let wants_h2c = listener.h2c && listener.tls.is_none();
        let wants_pp = listener.proxy_protocol;
        let slot = &mut services[usize::from(wants_h2c) * 2 + usize::from(wants_pp)];
        let service = slot.get_or_insert_with(|| {
            let mut proxy =
                pingora_proxy::http_proxy(&server.configuration, Gateway { app: app.clone() });
            // HTTP/2 header blocks get the same bound as HTTP/1 heads (max_request_header_kb).
            let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
            h2.max_header_list_size(u32::try_from(s.max_request_header).unwrap_or(u32::MAX));
            proxy.h2_options = Some(h2);
            if wants_h2c {
                let mut options = pingora_core::apps::HttpServerOptions::default();
                options.h2c = true;
                proxy.server_options = Some(options);
            }
            let edge = Edge::with_count(
                SettledShutdown(Arc::new(proxy), s.client_write_timeout),
                limits.clone(),
                open_connections.clone(),
            )
            .with_proxy_protocol(wants_pp.then(|| proxy_protocol.clone()));
            let name = match (wants_h2c, wants_pp) {
                (false, false) => "switchboard",
                (true, false) => "switchboard h2c",
                (false, true) => "switchboard proxy-protocol",
                (true, true) => "switchboard h2c proxy-protocol",
            };
            let mut service = Service::new(name.to_string(), edge);
            if wants_pp {
                // TLS endpoints read the header before the handshake.
                service
                    .endpoints()
                    .set_pre_tls_callback(proxy_protocol.clone());
            }
            service
        });
        crate::listeners::add_endpoint(service, listener, tls.as_ref());
    }
    for service in services.into_iter().flatten() {
        server.add_service(service);
    }
    let listen = listeners
        .iter()
        .map(|l| l.url())
        .collect::<Vec<_>>()
        .join(", ");
    let probe = listeners[0].address.clone();
    let live_listeners = Arc::new(crate::listeners::LiveListeners {
        listeners,
        tls: live_tls,
        overrides: overrides.clone(),
    });

    // --- routing: active health checks (router::health) over the current snapshot ---
    {
        let app1 = app.clone();
        let checks =
            crate::router::health::HealthChecks::new(move || app1.snapshot.load().routing.clone());
        server.add_service(background_service("health checks", checks));
        let app2 = app.clone();
        let model_checks = crate::health::BackgroundChecks {
            snapshot: move || app2.snapshot.load().routing.clone(),
            client: app.client.clone(),
            health: app.model_health.clone(),
        };
        server.add_service(background_service("model health checks", model_checks));
        let (app3, app4) = (app.clone(), app.clone());
        let alerts = crate::alerting::AlertSender {
            snapshot: move || app3.snapshot.load().routing.clone(),
            client: app.client.clone(),
            totals: move || crate::alerting::daily_report::totals(&app4.metrics),
        };
        server.add_service(background_service("alerts", alerts));
    }
    // --- end routing ---
    crate::lifecycle::install_signal_handlers()
        .map_err(|e| Environment(format!("cannot install signal handlers: {e}")))?;
    server.add_service(background_service(
        "config reload",
        ReloadService {
            app: app.clone(),
            config_path,
            notifier: notifier.clone(),
            listeners: Some(live_listeners),
        },
    ));
    server.add_service(background_service(
        "lifecycle",
        LifecycleService {
            app: app.clone(),
            notifier: notifier.clone(),
            phases: Mutex::new(Some(server.watch_execution_phase())),
            listen: probe,
            upgraded: upgrade,
            drain_timeout: Duration::from_secs(s.graceful_shutdown_timeout_seconds),
        },
    ));
    let signals = Signals {
        app: app.clone(),
        notifier,
        grace_period: Duration::from_secs(s.grace_period_seconds),
    };
    // Daemonized, Pingora writes the pid file after the fork; in the foreground (systemd,
    // containers) it is written here, and an upgraded process rewrites it with its own pid.
    let pid_file = if daemon {
        crate::lifecycle::PidFile::adopt(&s.pid_file);
        None
    } else {
        Some(crate::lifecycle::PidFile::write(&s.pid_file).map_err(|e| {
            Environment(format!(
                "switchboard.pid_file: cannot write {}: {e}",
                s.pid_file
            ))
        })?)
    };
    Ok(Built {
        server,
        app,
        listen,
        signals,
        pid_file,
    })
}

/// With Redis configured, deployment cooldowns and rpm/tpm usage are shared by every instance
/// on it ([`crate::shared_state::cooldowns`], [`crate::shared_state::deployment_usage`]); the
/// Redis settings are read at start.
fn start_shared_cooldowns(app: &Arc<App>) {
    let config = &app.snapshot.load().config;
    let Some(redis) = &config.router.redis else {
        return;
    };
    let weak = Arc::downgrade(app);
    let usage_app = weak.clone();
    crate::shared_state::deployment_usage::start(
        redis.clone(),
        config.server.redis_failure_policy,
        Arc::new(move |visit| {
            if let Some(app) = usage_app.upgrade() {
                for d in app.snapshot.load().deployments() {
                    if d.limits.rpm.is_some() || d.limits.tpm.is_some() {
                        visit(d.id(), &d.state.fleet);
                    }
                }
            }
        }),
    );
    crate::shared_state::cooldowns::start(
        redis.clone(),
        config.server.redis_failure_policy,
        Arc::new(move |id, left| {
            if let Some(s) = weak.upgrade().and_then(|app| app.registry.get(id)) {
                s.adopt_cooldown(std::time::Instant::now(), left);
            }
        }),
    );
}
