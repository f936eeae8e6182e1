//! Process assembly: builds the Pingora server (threads, pid file, upgrade socket, error log,
//! grace periods from the config's `switchboard:` section and the command line), the gateway
//! service and its listener.

use crate::config::Config;
use crate::gateway::{App, Gateway};
use crate::router::{Snapshot, StateRegistry};
use crate::upstream::UpstreamClient;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use std::sync::Arc;

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
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
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

    let client = Arc::new(UpstreamClient::new(s.upstream_keepalive_pool_size));
    let registry = StateRegistry::default();
    let snapshot = Snapshot::build(config, 1, &client, &registry).map_err(|e| e.to_string())?;
    let app = Arc::new(App::new(snapshot, client));

    let mut service = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway { app: app.clone() },
        "switchboard",
    );
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
        let checks = crate::router::health::HealthChecks::new(move || app.snapshot.load_full());
        server.add_service(pingora_core::services::background::background_service(
            "health checks",
            checks,
        ));
    }
    // --- end routing ---
    Ok(Built {
        server,
        app,
        listen,
    })
}
