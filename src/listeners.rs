//! The gateway's listening endpoints at run time: the configured list with the command line's
//! overrides applied, a bind check before Pingora starts (Pingora retries a taken port for 30 s
//! and then panics in a service thread, leaving a process without a socket), the endpoints added
//! to Pingora's services (TCP, Unix, TLS with our live certificate state), and certificate
//! reload for SIGHUP ([`LiveListeners`]).

use crate::config::listeners::{ListenAddress, ListenerConfig, TlsConfig};
use crate::config::{ConfigError, ServerSettings};
use crate::tls::LiveTls;
use pingora_core::apps::ServerApp;
use pingora_core::services::listening::Service;
use std::sync::Arc;

/// Command-line overrides of the config's listener settings.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--host`/`--port`: the first TCP listener's address.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub threads: Option<usize>,
    /// LiteLLM's `--ssl_certfile_path`/`--ssl_keyfile_path` (or `SSL_CERTFILE_PATH`/
    /// `SSL_KEYFILE_PATH`): TLS on the first TCP listener.
    pub ssl_certfile: Option<String>,
    pub ssl_keyfile: Option<String>,
}

/// The endpoints to listen on: the config's (or its `host`/`port`) with `overrides` applied.
pub fn effective(
    settings: &ServerSettings,
    overrides: &Overrides,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut host_port = settings.clone();
    if let Some(h) = &overrides.host {
        host_port.host = h.clone();
    }
    if let Some(p) = overrides.port {
        host_port.port = p;
    }
    let mut list = host_port.listeners();
    let first_tcp = list
        .iter_mut()
        .find(|l| matches!(l.address, ListenAddress::Tcp(_)));
    if let Some(first) = first_tcp {
        if settings.listeners.is_some() && (overrides.host.is_some() || overrides.port.is_some()) {
            let (host, port) = split_host_port(first.address.as_str());
            let host = overrides.host.as_deref().unwrap_or(host);
            let port = overrides.port.unwrap_or(port);
            first.address = ListenAddress::tcp(host.trim_matches(['[', ']']), port);
        }
        match (&overrides.ssl_certfile, &overrides.ssl_keyfile) {
            (Some(cert), Some(key)) => {
                let mut tls = first
                    .tls
                    .take()
                    .unwrap_or_else(|| TlsConfig::files(cert, key));
                tls.cert_file = cert.clone();
                tls.key_file = key.clone();
                first.tls = Some(tls);
            }
            (None, None) => {}
            _ => return Err(ConfigError::new(
                "--ssl_certfile_path/--ssl_keyfile_path",
                "give both the certificate and the key (or SSL_CERTFILE_PATH and SSL_KEYFILE_PATH)",
            )),
        }
    } else if overrides.ssl_certfile.is_some() || overrides.ssl_keyfile.is_some() {
        return Err(ConfigError::new(
            "--ssl_certfile_path",
            "no TCP listener to put TLS on",
        ));
    }
    Ok(list)
}

fn split_host_port(addr: &str) -> (&str, u16) {
    addr.rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        .unwrap_or((addr, 0))
}

/// Fails when an endpoint cannot be bound now (address in use, no permission, no such
/// address), with a message naming it. Not for `--upgrade`, which takes the old sockets over.
pub fn check_bindable(listeners: &[ListenerConfig]) -> Result<(), String> {
    for l in listeners {
        let why = match &l.address {
            ListenAddress::Tcp(addr) => check_tcp(addr),
            ListenAddress::Unix(path) => check_unix(path),
        };
        if let Err(why) = why {
            return Err(format!(
                "cannot listen on {} ({}): {why}",
                l.url(),
                l.key_path
            ));
        }
    }
    Ok(())
}

fn check_tcp(addr: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("not an address this host has: {e}"))?
        .next()
        .ok_or("the name resolves to no address")?;
    // std sets SO_REUSEADDR as Pingora does, so only a live listener (or no permission) fails.
    match std::net::TcpListener::bind(resolved) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "address in use (another process listens on {resolved}; is switchboard already running? use --upgrade to take its sockets over)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "permission denied ({e}; ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn check_unix(path: &str) -> Result<(), String> {
    use std::os::unix::net::{UnixListener, UnixStream};
    let p = std::path::Path::new(path);
    if p.exists() {
        // Pingora unlinks whatever is at the path: never a socket someone still serves on.
        if UnixStream::connect(p).is_ok() {
            return Err("address in use (a process accepts on this socket; is switchboard already running? use --upgrade to take it over)".into());
        }
        return Ok(());
    }
    match UnixListener::bind(p) {
        Ok(_) => {
            let _ = std::fs::remove_file(p);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Loads every TLS listener's files (startup: any error fails the start).
pub fn load_tls(listeners: &[ListenerConfig]) -> Result<Vec<Option<Arc<LiveTls>>>, ConfigError> {
    listeners
        .iter()
        .map(|l| match &l.tls {
            None => Ok(None),
            Some(tls) => {
                let loaded = crate::tls::load(tls, &format!("{}.tls", l.key_path))?;
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                log::info!("{}: certificate {}", l.url(), loaded.leaf);
                Ok(Some(LiveTls::new(tls, loaded)))
            }
        })
        .collect()
}

/// `--check`: the endpoints and their certificates, one summary line each, and warnings (a
/// certificate expiring soon); a certificate or key that would fail the start is the error.
pub fn check(
    settings: &ServerSettings,
    overrides: &Overrides,
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let mut lines = Vec::new();
    let mut all_warnings = Vec::new();
    for l in effective(settings, overrides)? {
        let mut line = format!("listen {}", l.url());
        if l.h2c && l.tls.is_none() {
            line.push_str(" (h2c)");
        }
        if l.proxy_protocol {
            line.push_str(" (PROXY protocol)");
        }
        let mut warnings = Vec::new();
        if let Some(tls) = &l.tls {
            let loaded = crate::tls::load(tls, &format!("{}.tls", l.key_path))?;
            line.push_str(&format!(
                ", TLS {}+{}, certificate {}",
                match tls.min_version {
                    crate::config::listeners::TlsVersion::Tls12 => "1.2",
                    crate::config::listeners::TlsVersion::Tls13 => "1.3",
                },
                if tls.client_ca_file.is_some() {
                    ", client certificates required"
                } else {
                    ""
                },
                loaded.leaf
            ));
            warnings = loaded.warnings;
        }
        lines.push(line);
        all_warnings.extend(warnings);
    }
    Ok((lines, all_warnings))
}

/// Adds `listener` to `service` (its live TLS state in `tls` when it has TLS).
pub fn add_endpoint<A: ServerApp + Send + Sync + 'static>(
    service: &mut Service<A>,
    listener: &ListenerConfig,
    tls: Option<&Arc<LiveTls>>,
) {
    match (&listener.address, tls, &listener.tls) {
        (ListenAddress::Tcp(addr), Some(live), Some(config)) => {
            service.add_tls_with_settings(addr, None, live.settings(config))
        }
        (ListenAddress::Unix(path), Some(live), Some(config)) => {
            use pingora_core::listeners::ListenerConfig as Endpoint;
            service.add_listener(Endpoint::uds(path).tls(live.settings(config)))
        }
        (ListenAddress::Tcp(addr), _, _) => service.add_tcp(addr),
        (ListenAddress::Unix(path), _, _) => service.add_uds(path, None),
    }
}

/// The running listeners, kept for reload: certificates change on SIGHUP, addresses do not.
pub struct LiveListeners {
    pub listeners: Vec<ListenerConfig>,
    pub tls: Vec<Option<Arc<LiveTls>>>,
    pub overrides: Overrides,
}

/// New certificates read and checked, ready to swap in.
pub struct Prepared<'a> {
    swaps: Vec<(&'a Arc<LiveTls>, TlsConfig, crate::tls::Loaded)>,
}

impl Prepared<'_> {
    /// Swaps the certificates in: new handshakes use them.
    pub fn commit(self) {
        for (live, config, loaded) in self.swaps {
            log::info!(
                "{}: now serving certificate {}",
                config.cert_file,
                loaded.leaf
            );
            live.swap(&config, loaded);
        }
    }
}

impl LiveListeners {
    /// Reads the certificate files `settings` names for each running TLS listener; any error
    /// fails the reload (the old certificates keep serving). Changes that need a restart are
    /// warned about and otherwise ignored.
    pub fn prepare(&self, settings: &ServerSettings) -> Result<Prepared<'_>, ConfigError> {
        let new = effective(settings, &self.overrides)?;
        let addresses =
            |l: &[ListenerConfig]| -> Vec<String> { l.iter().map(|x| x.url()).collect() };
        if addresses(&new) != addresses(&self.listeners) {
            log::warn!(
                "switchboard.listeners changed ({} -> {}): listener addresses and TLS on/off take effect on restart or upgrade, not on reload",
                addresses(&self.listeners).join(", "),
                addresses(&new).join(", ")
            );
        }
        let mut swaps = Vec::new();
        for (i, live) in self.tls.iter().enumerate() {
            let (Some(live), Some(listener)) = (live, new.get(i)) else {
                continue;
            };
            let Some(config) = &listener.tls else {
                continue;
            };
            let key_path = format!("{}.tls", listener.key_path);
            if let Err(why) = live.compatible(config) {
                log::warn!("{key_path}: {why}");
            }
            let loaded = crate::tls::load(config, &key_path)?;
            for w in &loaded.warnings {
                log::warn!("{w}");
            }
            swaps.push((live, config.clone(), loaded));
        }
        Ok(Prepared { swaps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_to_the_first_tcp_listener() {
        let mut s = ServerSettings::default();
        let o = Overrides {
            host: Some("127.0.0.1".into()),
            port: Some(9),
            ..Default::default()
        };
        let l = effective(&s, &o).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].address, ListenAddress::Tcp("127.0.0.1:9".into()));

        s.listeners = Some(vec![
            ListenerConfig {
                address: ListenAddress::Unix("/tmp/x.sock".into()),
                ..ListenerConfig::tcp("h", 1, "switchboard.listeners[0]")
            },
            ListenerConfig::tcp("::", 443, "switchboard.listeners[1]"),
        ]);
        let o = Overrides {
            port: Some(8443),
            ssl_certfile: Some("c.pem".into()),
            ssl_keyfile: Some("k.pem".into()),
            ..Default::default()
        };
        let l = effective(&s, &o).unwrap();
        assert_eq!(l[0].address, ListenAddress::Unix("/tmp/x.sock".into()));
        assert_eq!(l[1].address, ListenAddress::Tcp("[::]:8443".into()));
        assert_eq!(l[1].tls.as_ref().unwrap().cert_file, "c.pem");

        let half = Overrides {
            ssl_certfile: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(effective(&s, &half).is_err());
    }

    #[test]
    fn a_taken_port_is_refused_with_its_key_path() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let l = ListenerConfig::tcp("127.0.0.1", port, "switchboard.listeners[0]");
        let err = check_bindable(&[l]).unwrap_err();
        assert!(err.contains("address in use"), "{err}");
        assert!(err.contains("switchboard.listeners[0]"), "{err}");
        drop(taken);
    }
}
