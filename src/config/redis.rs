//! Where Redis is, as LiteLLM's config says it: `router_settings.redis_host` / `redis_port` /
//! `redis_password` / `redis_url` (shared routing state and rate limits), `litellm_settings.
//! cache_params` (`host`, `port`, `password`, `username`, `url`, `ssl`, `redis_startup_nodes`
//! for a cluster; the response cache), and LiteLLM's `REDIS_URL` / `REDIS_HOST` / `REDIS_PORT` /
//! `REDIS_PASSWORD` / `REDIS_USERNAME` / `REDIS_SSL` environment variables when the file names
//! none. A private CA for `rediss://` is `cache_params.ssl_ca_certs` or `REDIS_SSL_CA_CERTS` (a
//! PEM file; redis-py's `ssl_ca_certs`, which LiteLLM passes through). Plus our own
//! `switchboard.redis_failure_policy` and `switchboard.redis_timeout_ms`.
//! Only the settings live here; the client is [`crate::shared_state`].

use super::yaml::{type_name, Env, Section};
use super::ConfigError;
use serde_yaml::Value;
use std::time::Duration;

/// One Redis deployment: a single server, or a cluster reached through its startup nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]` or `rediss://…` (TLS). One node, or a cluster's startup nodes.
    pub nodes: Vec<String>,
    /// Redis Cluster (`redis_startup_nodes`).
    pub cluster: bool,
    pub username: Option<String>,
    /// Kept out of the URL (no escaping trouble) and out of `Debug`.
    pub password: Option<String>,
    /// The key path (or variable) it came from, for logs and errors.
    pub origin: String,
    /// A PEM file of the CAs that `rediss://` trusts instead of the system's
    /// (`ssl_ca_certs`, `REDIS_SSL_CA_CERTS`).
    pub ca_certs: Option<String>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("origin", &self.origin)
            .field("ca_certs", &self.ca_certs)
            .finish()
    }
}

/// A URL with any `user:password@` replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<redacted>@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// What a request meets when Redis is down or slower than the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Admit on this instance's local view (LiteLLM's behaviour): availability first.
    #[default]
    Open,
    /// Refuse with 503 until Redis answers again: limits first.
    Closed,
}

/// Default bound on one Redis round trip on the request path.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

fn tcp_url(tls: bool, host: &str, port: u16) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

fn check_url(path: &str, url: &str) -> Result<(), ConfigError> {
    let ok = [
        "redis://",
        "rediss://",
        "redis+unix://",
        "unix://",
        "valkey://",
        "valkeys://",
    ]
    .iter()
    .any(|p| url.starts_with(p) && url.len() > p.len());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!(
                "\"{}\" is not a Redis URL (expected redis://host:port or rediss://host:port)",
                redact_url(url)
            ),
        ))
    }
}

fn port_of(path: String, v: Option<u64>) -> Result<u16, ConfigError> {
    match v {
        None => Ok(6379),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ConfigError::new(path, format!("{p} is not a valid port (1-65535)"))),
    }
}

/// `router_settings.redis_url`, or `redis_host` (+ `redis_port`, default 6379) with
/// `redis_password`. `None` when neither is set.
pub fn read_router(s: &mut Section<'_>) -> Result<Option<RedisSettings>, ConfigError> {
    let password = s.string("redis_password")?.filter(|p| !p.is_empty());
    let port = s.u64("redis_port")?;
    let port_path = s.key_path("redis_port");
    if let Some(url) = s.string("redis_url")? {
        check_url(&s.key_path("redis_url"), &url)?;
        return Ok(Some(RedisSettings {
            nodes: vec![url],
            cluster: false,
            username: None,
            password,
            origin: s.key_path("redis_url"),
            ca_certs: None,
        }));
    }
    let Some(host) = s.string("redis_host")? else {
        return Ok(None);
    };
    Ok(Some(RedisSettings {
        nodes: vec![tcp_url(false, &host, port_of(port_path, port)?)],
        cluster: false,
        username: None,
        password,
        origin: s.key_path("redis_host"),
        ca_certs: None,
    }))
}

/// The Redis connection keys of `litellm_settings.cache_params` (`url`, `host`, `port`,
/// `password`, `username`, `ssl`, `redis_startup_nodes`); `None` when none names a server.
/// Other `cache_params` keys are left for the cache to read.
pub fn read_cache_params(s: &mut Section<'_>) -> Result<Option<RedisSettings>, ConfigError> {
    let read = read_cache_server(s)?;
    let ca = s.string("ssl_ca_certs")?.filter(|c| !c.trim().is_empty());
    Ok(read.map(|r| RedisSettings { ca_certs: ca, ..r }))
}

fn read_cache_server(s: &mut Section<'_>) -> Result<Option<RedisSettings>, ConfigError> {
    let tls = s.bool("ssl")?.unwrap_or(false);
    let password = s.string("password")?.filter(|p| !p.is_empty());
    let username = s.string("username")?.filter(|p| !p.is_empty());
    let port_path = s.key_path("port");
    let port = s.u64("port")?;
    let nodes_path = s.key_path("redis_startup_nodes");
    if let Some(nodes) = s.value("redis_startup_nodes") {
        let Value::Sequence(items) = nodes else {
            return Err(ConfigError::new(
                nodes_path,
                format!(
                    "expected a list of {{host, port}} nodes, found {}",
                    type_name(nodes)
                ),
            ));
        };
        let mut urls = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            urls.push(startup_node(
                &format!("{nodes_path}[{i}]"),
                item,
                tls,
                s.env(),
            )?);
        }
        if urls.is_empty() {
            return Err(ConfigError::new(nodes_path, "lists no node"));
        }
        return Ok(Some(RedisSettings {
            nodes: urls,
            cluster: true,
            username,
            password,
            origin: nodes_path,
            ca_certs: None,
        }));
    }
    if let Some(url) = s.string("url")? {
        check_url(&s.key_path("url"), &url)?;
        return Ok(Some(RedisSettings {
            nodes: vec![url],
            cluster: false,
            username,
            password,
            origin: s.key_path("url"),
            ca_certs: None,
        }));
    }
    let Some(host) = s.string("host")? else {
        return Ok(None);
    };
    Ok(Some(RedisSettings {
        nodes: vec![tcp_url(tls, &host, port_of(port_path, port)?)],
        cluster: false,
        username,
        password,
        origin: s.key_path("host"),
        ca_certs: None,
    }))
}

/// A cluster startup node: `{host: h, port: p}` (LiteLLM's form) or `"h:p"`.
fn startup_node(path: &str, item: &Value, tls: bool, env: &Env) -> Result<String, ConfigError> {
    match item {
        Value::Mapping(m) => {
            let host = match m.get("host") {
                Some(Value::String(h)) => env.resolve(&format!("{path}.host"), h)?,
                _ => {
                    return Err(ConfigError::new(
                        format!("{path}.host"),
                        "a host is required",
                    ))
                }
            };
            let port = match m.get("port") {
                None => None,
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(p)) => {
                    let p = env.resolve(&format!("{path}.port"), p)?;
                    Some(p.trim().parse::<u64>().map_err(|_| {
                        ConfigError::new(format!("{path}.port"), format!("\"{p}\" is not a port"))
                    })?)
                }
                Some(other) => {
                    return Err(ConfigError::new(
                        format!("{path}.port"),
                        format!("expected a port number, found {}", type_name(other)),
                    ))
                }
            };
            Ok(tcp_url(tls, &host, port_of(format!("{path}.port"), port)?))
        }
        Value::String(s) => {
            let s = env.resolve(path, s)?;
            if s.contains("://") {
                check_url(path, &s)?;
                return Ok(s);
            }
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| ConfigError::new(path, format!("\"{s}\" is not host:port")))?;
            let port = port
                .parse::<u64>()
                .map_err(|_| ConfigError::new(path, format!("\"{s}\" is not host:port")))?;
            Ok(tcp_url(tls, host, port_of(path.to_string(), Some(port))?))
        }
        other => Err(ConfigError::new(
            path,
            format!("expected {{host, port}}, found {}", type_name(other)),
        )),
    }
}

/// LiteLLM's `REDIS_URL`, else `REDIS_HOST` (+ `REDIS_PORT`, `REDIS_SSL`), with
/// `REDIS_PASSWORD` / `REDIS_USERNAME`. `None` when neither is set.
pub fn from_env(env: &Env) -> Result<Option<RedisSettings>, ConfigError> {
    let nonempty = |v: &str| env.lookup(v).filter(|s| !s.trim().is_empty());
    let password = nonempty("REDIS_PASSWORD");
    let username = nonempty("REDIS_USERNAME");
    if let Some(url) = nonempty("REDIS_URL") {
        check_url("REDIS_URL", &url)?;
        return Ok(Some(RedisSettings {
            nodes: vec![url],
            cluster: false,
            username,
            password,
            origin: "REDIS_URL".into(),
            ca_certs: None,
        }));
    }
    let Some(host) = nonempty("REDIS_HOST") else {
        return Ok(None);
    };
    let port = match nonempty("REDIS_PORT") {
        None => None,
        Some(p) => Some(
            p.trim()
                .parse::<u64>()
                .map_err(|_| ConfigError::new("REDIS_PORT", format!("\"{p}\" is not a port")))?,
        ),
    };
    let tls = nonempty("REDIS_SSL")
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    Ok(Some(RedisSettings {
        nodes: vec![tcp_url(tls, &host, port_of("REDIS_PORT".into(), port)?)],
        cluster: false,
        username,
        password,
        origin: "REDIS_HOST".into(),
        ca_certs: None,
    }))
}

/// `REDIS_SSL_CA_CERTS`: the CA file for every Redis that names none itself.
pub fn apply_env_ca(env: &Env, settings: [&mut Option<RedisSettings>; 2]) {
    let Some(ca) = env
        .lookup("REDIS_SSL_CA_CERTS")
        .filter(|c| !c.trim().is_empty())
    else {
        return;
    };
    for s in settings.into_iter().flatten() {
        if s.ca_certs.is_none() {
            s.ca_certs = Some(ca.clone());
        }
    }
}

/// `switchboard.redis_failure_policy` (`open` | `closed`, default open).
pub fn read_policy(s: &mut Section<'_>) -> Result<FailurePolicy, ConfigError> {
    match s.string("redis_failure_policy")?.as_deref().map(str::trim) {
        None | Some("open") => Ok(FailurePolicy::Open),
        Some("closed") => Ok(FailurePolicy::Closed),
        Some(other) => Err(ConfigError::new(
            s.key_path("redis_failure_policy"),
            format!("\"{other}\" is not a policy (expected open or closed)"),
        )),
    }
}

/// `switchboard.redis_timeout_ms` (1-10000, default 50).
pub fn read_timeout(s: &mut Section<'_>) -> Result<Duration, ConfigError> {
    Ok(s.f64_in("redis_timeout_ms", 1.0, 10_000.0)?
        .map(|ms| Duration::from_micros((ms * 1000.0) as u64))
        .unwrap_or(DEFAULT_REDIS_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn section_of<'a>(yaml: &'a Value, env: &'a Env<'a>) -> Section<'a> {
        Section::new("s", Some(yaml), env).unwrap()
    }

    #[test]
    fn router_keys_cache_params_and_env() {
        let vars = HashMap::new();
        let env = Env { overrides: &vars };
        let v: Value =
            serde_yaml::from_str("{redis_host: r1, redis_port: 6380, redis_password: p@ss}")
                .unwrap();
        let r = read_router(&mut section_of(&v, &env)).unwrap().unwrap();
        assert_eq!(r.nodes, ["redis://r1:6380"]);
        assert_eq!(r.password.as_deref(), Some("p@ss"));
        assert!(!format!("{r:?}").contains("p@ss"));

        let v: Value = serde_yaml::from_str("{redis_url: 'rediss://u:x@h:1/2'}").unwrap();
        let r = read_router(&mut section_of(&v, &env)).unwrap().unwrap();
        assert_eq!(r.nodes, ["rediss://u:x@h:1/2"]);
        assert!(!format!("{r:?}").contains(":x@"));

        let v: Value = serde_yaml::from_str("{redis_url: 'http://h'}").unwrap();
        let e = read_router(&mut section_of(&v, &env)).unwrap_err();
        assert_eq!(e.path, "s.redis_url");
        let v: Value = serde_yaml::from_str("{redis_host: h, redis_port: 0}").unwrap();
        assert_eq!(
            read_router(&mut section_of(&v, &env)).unwrap_err().path,
            "s.redis_port"
        );

        let v: Value = serde_yaml::from_str(
            "{type: redis, ssl: true, password: pw, redis_startup_nodes: [{host: a, port: 7000}, 'b:7001']}",
        )
        .unwrap();
        let r = read_cache_params(&mut section_of(&v, &env))
            .unwrap()
            .unwrap();
        assert!(r.cluster);
        assert_eq!(r.nodes, ["rediss://a:7000", "rediss://b:7001"]);
        assert_eq!(r.ca_certs, None);
        let v: Value =
            serde_yaml::from_str("{url: 'rediss://h:1', ssl_ca_certs: /etc/ca.pem}").unwrap();
        let r = read_cache_params(&mut section_of(&v, &env))
            .unwrap()
            .unwrap();
        assert_eq!(r.ca_certs.as_deref(), Some("/etc/ca.pem"));
        let v: Value = serde_yaml::from_str("{redis_startup_nodes: [{port: 1}]}").unwrap();
        assert_eq!(
            read_cache_params(&mut section_of(&v, &env))
                .unwrap_err()
                .path,
            "s.redis_startup_nodes[0].host"
        );
        let v: Value = serde_yaml::from_str("{type: redis}").unwrap();
        assert!(read_cache_params(&mut section_of(&v, &env))
            .unwrap()
            .is_none());

        let vars: HashMap<String, String> = [
            ("REDIS_HOST", "envhost"),
            ("REDIS_PORT", "6390"),
            ("REDIS_SSL", "True"),
            ("REDIS_PASSWORD", "pw"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = Env { overrides: &vars };
        let r = from_env(&env).unwrap().unwrap();
        assert_eq!(r.nodes, ["rediss://envhost:6390"]);
        assert_eq!(r.password.as_deref(), Some("pw"));

        // REDIS_SSL_CA_CERTS: for every Redis that names no CA of its own.
        let vars: HashMap<String, String> =
            [("REDIS_SSL_CA_CERTS".to_string(), "/env/ca.pem".to_string())].into();
        let env = Env { overrides: &vars };
        let own = RedisSettings {
            ca_certs: Some("/own.pem".into()),
            ..r.clone()
        };
        let (mut a, mut b) = (Some(r), Some(own));
        apply_env_ca(&env, [&mut a, &mut b]);
        assert_eq!(a.unwrap().ca_certs.as_deref(), Some("/env/ca.pem"));
        assert_eq!(b.unwrap().ca_certs.as_deref(), Some("/own.pem"));
    }

    #[test]
    fn policy_and_timeout() {
        let vars = HashMap::new();
        let env = Env { overrides: &vars };
        let v: Value =
            serde_yaml::from_str("{redis_failure_policy: closed, redis_timeout_ms: 20}").unwrap();
        let mut s = section_of(&v, &env);
        assert_eq!(read_policy(&mut s).unwrap(), FailurePolicy::Closed);
        assert_eq!(read_timeout(&mut s).unwrap(), Duration::from_millis(20));
        let v: Value =
            serde_yaml::from_str("{redis_failure_policy: maybe, redis_timeout_ms: 0}").unwrap();
        let mut s = section_of(&v, &env);
        assert_eq!(
            read_policy(&mut s).unwrap_err().path,
            "s.redis_failure_policy"
        );
        assert_eq!(read_timeout(&mut s).unwrap_err().path, "s.redis_timeout_ms");
    }
}
