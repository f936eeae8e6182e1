//! `switchboard.listeners`: where the gateway accepts clients. Each listener is an address (IPv4
//! `0.0.0.0:4000`, IPv6 `[::1]:4000`, or a Unix socket path) with optional TLS (certificate
//! chain and key files, minimum version, ALPN, client certificates checked against a CA file),
//! cleartext HTTP/2 with prior knowledge (`h2c`), and `proxy_protocol` (see
//! [`crate::proxy_protocol`]). Without a list, `switchboard.host`/`port` make the one plaintext
//! listener, as before.

use super::yaml::{sequence, type_name, Section};
use super::ConfigError;
use serde_yaml::Value;

/// One listening endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub address: ListenAddress,
    pub tls: Option<TlsConfig>,
    /// Cleartext HTTP/2 with prior knowledge (HTTP/1.1 still served); TLS listeners negotiate
    /// HTTP/2 with ALPN instead.
    pub h2c: bool,
    /// A PROXY protocol (v1/v2) header precedes every connection's bytes.
    pub proxy_protocol: bool,
    /// The key path of this entry (`switchboard.listeners[1]`), for errors about it later
    /// (certificate files on reload, say).
    pub key_path: String,
}

impl ListenerConfig {
    /// The plaintext listener on `host:port`.
    pub fn tcp(host: &str, port: u16, key_path: &str) -> Self {
        ListenerConfig {
            address: ListenAddress::tcp(host, port),
            tls: None,
            h2c: false,
            proxy_protocol: false,
            key_path: key_path.to_string(),
        }
    }

    /// `https://[::1]:4443`, `http://0.0.0.0:4000`, `unix:/run/sb.sock`, for logs.
    pub fn url(&self) -> String {
        match &self.address {
            ListenAddress::Tcp(a) if self.tls.is_some() => format!("https://{a}"),
            ListenAddress::Tcp(a) => format!("http://{a}"),
            ListenAddress::Unix(p) if self.tls.is_some() => format!("https+unix:{p}"),
            ListenAddress::Unix(p) => format!("unix:{p}"),
        }
    }
}

/// A TCP `host:port` (IPv6 hosts bracketed) or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    Tcp(String),
    Unix(String),
}

impl ListenAddress {
    /// `host:port`, bracketing a bare IPv6 host.
    pub fn tcp(host: &str, port: u16) -> Self {
        if host.contains(':') && !host.starts_with('[') {
            ListenAddress::Tcp(format!("[{host}]:{port}"))
        } else {
            ListenAddress::Tcp(format!("{host}:{port}"))
        }
    }

    /// Parses `host:port`, `[v6]:port`, a path (`/…`, `./…`) or `unix:path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Self::unix(path);
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Self::unix(s);
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!("\"{s}\" is not host:port, [ipv6]:port or a Unix socket path")
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("\"{port}\" in \"{s}\" is not a port (0-65535)"))?;
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.is_empty() {
            return Err(format!("\"{s}\" has no host (use 0.0.0.0 or [::] for all)"));
        }
        if host.starts_with('[') {
            bare.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("\"{bare}\" in \"{s}\" is not an IPv6 address"))?;
        } else if bare.contains(':') {
            return Err(format!(
                "\"{s}\": write an IPv6 address in brackets, [{bare}]:{port}"
            ));
        }
        Ok(ListenAddress::tcp(bare, port))
    }

    fn unix(path: &str) -> Result<Self, String> {
        if path.is_empty() {
            return Err("the Unix socket path is empty".into());
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if path.len() > 107 {
            return Err(format!(
                "the Unix socket path is {} bytes long; the limit is 107",
                path.len()
            ));
        }
        Ok(ListenAddress::Unix(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            ListenAddress::Tcp(a) | ListenAddress::Unix(a) => a,
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(a) => f.write_str(a),
            ListenAddress::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// A listener's TLS settings (`tls:`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// PEM: the certificate, then its intermediates.
    pub cert_file: String,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in preference order (`h2`, `http/1.1`).
    pub alpn: Vec<Alpn>,
    /// PEM CA certificates: clients must present a certificate signed by one (mTLS).
    pub client_ca_file: Option<String>,
}

impl TlsConfig {
    /// Certificate and key with the defaults: TLS 1.2 and up, ALPN `h2` then `http/1.1`.
    pub fn files(cert_file: &str, key_file: &str) -> Self {
        TlsConfig {
            cert_file: cert_file.to_string(),
            key_file: key_file.to_string(),
            min_version: TlsVersion::Tls12,
            alpn: vec![Alpn::H2, Alpn::Http11],
            client_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
}

/// Reads `switchboard.listeners` (absent: `None`, the caller uses `host`/`port`).
pub fn read(s: &mut Section<'_>) -> Result<Option<Vec<ListenerConfig>>, ConfigError> {
    let path = s.key_path("listeners");
    let Some(value) = s.value("listeners") else {
        return Ok(None);
    };
    let items = sequence(&path, Some(value))?;
    if items.is_empty() {
        return Err(ConfigError::new(
            path,
            "the list is empty; give at least one listener or remove the key",
        ));
    }
    let mut out: Vec<ListenerConfig> = Vec::with_capacity(items.len());
    for (item_path, v) in items {
        let listener = read_one(&item_path, v, s)?;
        if let Some(dup) = out.iter().find(|l| l.address == listener.address) {
            return Err(ConfigError::new(
                format!("{item_path}.address"),
                format!(
                    "{} is already the address of {}",
                    listener.address, dup.key_path
                ),
            ));
        }
        out.push(listener);
    }
    Ok(Some(out))
}

fn read_one(path: &str, v: &Value, parent: &Section<'_>) -> Result<ListenerConfig, ConfigError> {
    let env = parent.env();
    // A bare string is an address with no options.
    if let Value::String(s) = v {
        let s = env.resolve(path, s)?;
        let address = ListenAddress::parse(&s).map_err(|e| ConfigError::new(path, e))?;
        return Ok(ListenerConfig {
            address,
            tls: None,
            h2c: false,
            proxy_protocol: false,
            key_path: path.to_string(),
        });
    }
    if !matches!(v, Value::Mapping(_)) {
        return Err(ConfigError::new(
            path,
            format!(
                "expected an address or a mapping with `address`, found {}",
                type_name(v)
            ),
        ));
    }
    let mut s = Section::new(path, Some(v), env)?;
    let address = s
        .string("address")?
        .ok_or_else(|| ConfigError::new(s.key_path("address"), "missing; e.g. 0.0.0.0:4000"))?;
    let address =
        ListenAddress::parse(&address).map_err(|e| ConfigError::new(s.key_path("address"), e))?;
    let h2c = s.bool("h2c")?.unwrap_or(false);
    let proxy_protocol = s.bool("proxy_protocol")?.unwrap_or(false);
    let tls = match s.value("tls") {
        None => None,
        Some(t) => Some(read_tls(&s.key_path("tls"), t, &s)?),
    };
    let mut unknown = Vec::new();
    s.finish(&mut unknown);
    // An unknown key on a listener is a typo in security settings more often than not: refuse.
    if let Some(w) = unknown.first() {
        let key = w.split(':').next().unwrap_or(w);
        return Err(ConfigError::new(
            key,
            "unknown listener key (address, tls, h2c, proxy_protocol)",
        ));
    }
    Ok(ListenerConfig {
        address,
        tls,
        h2c,
        proxy_protocol,
        key_path: path.to_string(),
    })
}

fn read_tls(path: &str, v: &Value, parent: &Section<'_>) -> Result<TlsConfig, ConfigError> {
    let mut s = Section::new(path, Some(v), parent.env())?;
    let file = |s: &mut Section<'_>, key: &'static str| -> Result<Option<String>, ConfigError> {
        match s.string(key)? {
            Some(f) if f.trim().is_empty() => {
                Err(ConfigError::new(s.key_path(key), "the file name is empty"))
            }
            other => Ok(other),
        }
    };
    let cert_file = file(&mut s, "cert_file")?;
    let key_file = file(&mut s, "key_file")?;
    let (cert_file, key_file) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (c, k),
        (None, _) => {
            return Err(ConfigError::new(
                s.key_path("cert_file"),
                "missing: TLS needs cert_file (PEM chain) and key_file",
            ))
        }
        (_, None) => {
            return Err(ConfigError::new(
                s.key_path("key_file"),
                "missing: TLS needs cert_file (PEM chain) and key_file",
            ))
        }
    };
    let mut tls = TlsConfig::files(&cert_file, &key_file);
    if let Some(v) = s.string("min_version")? {
        tls.min_version = match v
            .trim()
            .trim_start_matches("TLSv")
            .trim_start_matches("tls")
        {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            _ => {
                return Err(ConfigError::new(
                    s.key_path("min_version"),
                    format!("\"{v}\" is not a supported version (\"1.2\" or \"1.3\")"),
                ))
            }
        };
    }
    if let Some(list) = s.string_list("alpn")? {
        let mut alpn = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let proto = match p.trim().to_ascii_lowercase().as_str() {
                "h2" => Alpn::H2,
                "http/1.1" => Alpn::Http11,
                _ => {
                    return Err(ConfigError::new(
                        format!("{}[{i}]", s.key_path("alpn")),
                        format!("\"{p}\" is not a supported protocol (h2, http/1.1)"),
                    ))
                }
            };
            if !alpn.contains(&proto) {
                alpn.push(proto);
            }
        }
        if alpn.is_empty() {
            return Err(ConfigError::new(
                s.key_path("alpn"),
                "the list is empty; give h2, http/1.1 or both",
            ));
        }
        tls.alpn = alpn;
    }
    tls.client_ca_file = file(&mut s, "client_ca_file")?;
    let mut unknown = Vec::new();
    s.finish(&mut unknown);
    if let Some(w) = unknown.first() {
        let key = w.split(':').next().unwrap_or(w);
        return Err(ConfigError::new(
            key,
            "unknown TLS key (cert_file, key_file, min_version, alpn, client_ca_file)",
        ));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ok = |s: &str, want: ListenAddress| assert_eq!(ListenAddress::parse(s).unwrap(), want);
        ok("0.0.0.0:4000", ListenAddress::Tcp("0.0.0.0:4000".into()));
        ok("[::1]:4443", ListenAddress::Tcp("[::1]:4443".into()));
        ok("[::]:80", ListenAddress::Tcp("[::]:80".into()));
        ok("localhost:1", ListenAddress::Tcp("localhost:1".into()));
        ok("/run/sb.sock", ListenAddress::Unix("/run/sb.sock".into()));
        ok("unix:sb.sock", ListenAddress::Unix("sb.sock".into()));
        for bad in [
            "4000",
            "::1:4000",
            "[::1]:x",
            "[nope]:1",
            ":4000",
            "1.2.3.4:70000",
            "unix:",
        ] {
            assert!(ListenAddress::parse(bad).is_err(), "{bad}");
        }
        assert!(ListenAddress::parse(&format!("/{}", "a".repeat(120))).is_err());
        assert_eq!(
            ListenAddress::tcp("::1", 4000),
            ListenAddress::Tcp("[::1]:4000".into())
        );
    }

    #[test]
    fn listeners_are_read_with_key_paths_in_errors() {
        use crate::config::litellm::parse;
        let c = parse(
            "switchboard:\n  trusted_proxies: [10.0.0.0/8]\n  listeners:\n    - 0.0.0.0:4000\n    - address: '[::1]:4443'\n      tls: {cert_file: c.pem, key_file: k.pem, min_version: '1.3', alpn: [http/1.1], client_ca_file: ca.pem}\n    - {address: /run/sb.sock, h2c: true, proxy_protocol: true}\n",
        )
        .unwrap();
        let l = c.server.listeners.unwrap();
        assert_eq!(l.len(), 3);
        let tls = l[1].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.alpn, vec![Alpn::Http11]);
        assert_eq!(tls.client_ca_file.as_deref(), Some("ca.pem"));
        assert!(l[2].h2c && l[2].proxy_protocol);
        assert_eq!(l[2].key_path, "switchboard.listeners[2]");
        // Absent: host/port make the one listener.
        let c = parse("switchboard: {host: '::', port: 81}\n").unwrap();
        assert_eq!(
            c.server.listeners()[0].address,
            ListenAddress::Tcp("[::]:81".into())
        );

        for (yaml, path) in [
            ("[]", "switchboard.listeners"),
            (
                "[{tls: {cert_file: c}}]",
                "switchboard.listeners[0].address",
            ),
            ("[{address: ':1'}]", "switchboard.listeners[0].address"),
            (
                "[{address: 'a:1', tls: {cert_file: c}}]",
                "switchboard.listeners[0].tls.key_file",
            ),
            (
                "[{address: 'a:1', tls: {cert_file: c, key_file: k, alpn: [h3]}}]",
                "switchboard.listeners[0].tls.alpn[0]",
            ),
            (
                "[{address: 'a:1', tls: {cert_file: c, key_file: k, ciphers: x}}]",
                "switchboard.listeners[0].tls.ciphers",
            ),
            (
                "[{address: 'a:1', tsl: {}}]",
                "switchboard.listeners[0].tsl",
            ),
            ("['a:1', 'a:1']", "switchboard.listeners[1].address"),
            (
                "[{address: 'a:1', h2c: maybe}]",
                "switchboard.listeners[0].h2c",
            ),
        ] {
            let err = parse(&format!("switchboard:\n  listeners: {yaml}\n")).unwrap_err();
            assert_eq!(err.path, path, "{yaml}: {err}");
        }
    }
}
