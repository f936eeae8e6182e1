//! Hot reload on SIGHUP. The config file (and the environment variables it names) is read again,
//! validated and built into a complete new [`Snapshot`] on a blocking thread, off the request
//! path, then swapped in with one `ArcSwap::store`. Requests and streams already running keep
//! the snapshot they loaded; new requests see the new one. Deployment state lives in the
//! process-wide [`StateRegistry`](crate::router::StateRegistry) and the connection pool in the
//! process-wide `UpstreamClient`, so deployments that survive a reload keep both.
//!
//! An invalid config changes nothing: the old snapshot keeps serving, the error is logged with
//! its key path, `switchboard_config_reloads_total{result="failed"}` counts it, and
//! `/health/readiness` reports it.

use crate::app::App;
pub use crate::app::ReloadOutcome;
use crate::config::{Config, ConfigError};
use crate::listeners::LiveListeners;
use crate::router::Snapshot;
use crate::systemd::Notifier;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Names an environment file (systemd `EnvironmentFile=` syntax) whose variables `os.environ/`
/// references see before the process environment, read again on every load: the process
/// environment is fixed at start, so without it a changed API key would need a restart.
pub const ENV_FILE_VAR: &str = "SWITCHBOARD_ENV_FILE";

/// Loads the config, with the variables of `$SWITCHBOARD_ENV_FILE` when it is set. Its
/// warnings include the deployments no provider can serve (they load, and fail when called).
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let env = match std::env::var_os(ENV_FILE_VAR) {
        Some(file) if !file.is_empty() => read_env_file(Path::new(&file))?,
        _ => HashMap::new(),
    };
    let mut config = Config::load_with_env(path, env)?;
    let unserved = crate::providers::unserved::load_warnings(&config);
    config.warnings.extend(unserved);
    Ok(config)
}

/// Reads `KEY=VALUE` lines (blank lines and `#`/`;` comments skipped, one level of single or
/// double quotes removed), as systemd's `EnvironmentFile=` does for the simple cases.
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(ENV_FILE_VAR, format!("cannot read {}: {e}", path.display()))
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            ConfigError::new(
                format!("{}:{}", path.display(), i + 1),
                "expected KEY=VALUE",
            )
        })?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new(
                format!("{}:{}", path.display(), i + 1),
                format!("\"{key}\" is not a variable name"),
            ));
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| value.strip_prefix(*a)?.strip_suffix(*b))
            .filter(|_| value.len() >= 2)
            .unwrap_or(value);
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Re-reads `config_path` and swaps the new snapshot into `app`. Blocking (file I/O, provider
/// set-up): call it off the async workers. Returns the new generation.
pub fn reload(app: &App, config_path: &Path) -> Result<u64, ConfigError> {
    reload_with(app, config_path, None)
}

/// [`reload`], also swapping the TLS listeners' certificates. The reload is all or nothing: a
/// certificate that fails to load (or is expired, or does not match its key) fails it like any
/// config error, and the old certificates and snapshot keep serving.
pub fn reload_with(
    app: &App,
    config_path: &Path,
    listeners: Option<&LiveListeners>,
) -> Result<u64, ConfigError> {
    let result = load_config(config_path).and_then(|config| {
        let current = app.snapshot.load();
        warn_unreloadable(&current.config, &config);
        for w in &config.warnings {
            log::warn!("{w}");
        }
        let certificates = listeners.map(|l| l.prepare(&config.server)).transpose()?;
        let generation = current.generation + 1;
        let snapshot = Snapshot::build(config, generation, &app.client, &app.registry)?;
        Ok((snapshot, certificates))
    });
    let outcome = match result {
        Ok((snapshot, certificates)) => {
            if let Some(c) = certificates {
                c.commit();
            }
            let generation = snapshot.generation;
            crate::codec::limits::set_max_stream_event_bytes(
                snapshot.config.server.max_stream_event_bytes,
            );
            app.snapshot.store(Arc::new(crate::app::Live::with_keys(
                snapshot,
                app.keys.as_ref(),
            )));
            app.metrics.reload(true);
            log::info!(
                "config reloaded from {}: generation {generation}",
                config_path.display()
            );
            Ok(generation)
        }
        Err(e) => {
            app.metrics.reload(false);
            log::error!(
                "config reload from {} failed, still serving generation {}: {e}",
                config_path.display(),
                app.snapshot.load().generation
            );
            Err(e)
        }
    };
    app.last_reload.store(Some(Arc::new(ReloadOutcome {
        at: crate::context::unix_now(),
        generation: app.snapshot.load().generation,
        error: outcome.as_ref().err().map(|e| e.to_string()),
    })));
    outcome
}

/// Listener and process settings only change with a restart or an upgrade: say so.
fn warn_unreloadable(old: &Config, new: &Config) {
    let (a, b) = (&old.server, &new.server);
    let changed: Vec<&str> = [
        ("host", a.host != b.host),
        ("port", a.port != b.port),
        ("threads", a.threads != b.threads),
        ("work_stealing", a.work_stealing != b.work_stealing),
        ("pid_file", a.pid_file != b.pid_file),
        ("upgrade_sock", a.upgrade_sock != b.upgrade_sock),
        (
            "upstream_keepalive_pool_size",
            a.upstream_keepalive_pool_size != b.upstream_keepalive_pool_size,
        ),
        ("max_connections", a.max_connections != b.max_connections),
        (
            "request_header_timeout_seconds",
            a.request_header_timeout != b.request_header_timeout,
        ),
        (
            "max_request_header_kb",
            a.max_request_header != b.max_request_header,
        ),
        (
            "client_write_timeout_seconds",
            a.client_write_timeout != b.client_write_timeout,
        ),
    ]
    .into_iter()
    .filter_map(|(k, c)| c.then_some(k))
    .collect();
    if !changed.is_empty() {
        log::warn!(
            "switchboard.{{{}}} changed: these take effect on restart or upgrade, not on reload",
            changed.join(", ")
        );
    }
}

/// The Pingora background service that reloads on every SIGHUP until shutdown.
pub struct ReloadService {
    pub app: Arc<App>,
    pub config_path: PathBuf,
    pub notifier: Arc<Notifier>,
    /// The running listeners, whose certificates reload with the config.
    pub listeners: Option<Arc<LiveListeners>>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup: Signal = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, hot reload is off: {e}");
                // Readiness must not wait forever for a reload that cannot happen.
                self.app
                    .reload_armed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        self.app
            .reload_armed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    self.notifier.reloading();
                    let (app, path) = (self.app.clone(), self.config_path.clone());
                    let listeners = self.listeners.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        reload_with(&app, &path, listeners.as_deref())
                    })
                    .await;
                    if let Err(e) = result {
                        log::error!("config reload task failed: {e}");
                    }
                    // Spend batched under the old generation is written now.
                    if let Some(keys) = &self.app.keys {
                        keys.flush(std::time::Duration::from_secs(5)).await;
                    }
                    let generation = self.app.snapshot.load().generation;
                    self.notifier
                        .ready(&format!("serving config generation {generation}"), false);
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::StateRegistry;
    use crate::upstream::UpstreamClient;

    fn dep(name: &str, id: &str, text: &str) -> String {
        format!("  - model_name: {name}\n    litellm_params: {{model: openai/x, mock_response: {text}}}\n    model_info: {{id: {id}}}\n")
    }

    /// Surviving deployments keep their live state; snapshots held by requests are untouched.
    #[test]
    fn reload_swaps_whole_snapshots_and_keeps_state() {
        let dir = std::env::temp_dir().join(format!("sb-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "model_list:\n{}{}",
                dep("g", "a", "one"),
                dep("g", "b", "two")
            ),
        )
        .unwrap();
        let client = Arc::new(UpstreamClient::new(1));
        let registry = StateRegistry::default();
        let snapshot =
            Snapshot::build(Config::load(&path).unwrap(), 1, &client, &registry).unwrap();
        let app = App::new(snapshot, client, registry);
        let held = app.snapshot.load_full();
        let state_a = held.group("g").unwrap().deployments[0].state.clone();
        state_a
            .requests
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);

        std::fs::write(
            &path,
            format!(
                "model_list:\n{}{}",
                dep("g", "a", "changed"),
                dep("h", "c", "new")
            ),
        )
        .unwrap();
        assert_eq!(reload(&app, &path).unwrap(), 2);
        let now = app.snapshot.load_full();
        let a = &now.group("g").unwrap().deployments;
        assert_eq!(a.len(), 1);
        assert!(Arc::ptr_eq(&a[0].state, &state_a), "a kept its state");
        assert_eq!(
            a[0].state
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            7
        );
        assert!(now.group("h").is_some());
        // The snapshot a request held is unchanged.
        assert_eq!(held.generation, 1);
        assert_eq!(held.group("g").unwrap().deployments.len(), 2);

        // A broken file changes nothing and is reported.
        std::fs::write(
            &path,
            "model_list:\n  - model_name: g\n    litellm_params: {rpm: nope}\n",
        )
        .unwrap();
        let err = reload(&app, &path).unwrap_err();
        assert!(err.path.starts_with("model_list[0]"), "{err}");
        assert_eq!(app.snapshot.load().generation, 2);
        let last = app.last_reload.load_full().unwrap();
        assert_eq!(last.generation, 2);
        assert!(last.error.as_deref().unwrap().contains("model_list[0]"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_env_files() {
        let dir = std::env::temp_dir().join(format!("sb-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        std::fs::write(&f, "# keys\nA=1\n\n B = \"two words\" \n;c\nC='x'\nD=\n").unwrap();
        let env = super::read_env_file(&f).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "x");
        assert_eq!(env["D"], "");
        std::fs::write(&f, "A=1\nnot a line\n").unwrap();
        let err = super::read_env_file(&f).unwrap_err();
        assert!(err.path.ends_with(":2"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
