//! Load benchmark: the gateway's pass-through cost under real HTTP load on loopback.
//!
//! `cargo bench --bench load` (which also builds `target/release/switchboard`):
//! 1. re-executes this binary as a fast upstream mock (`SB_LOAD_ROLE=upstream`): a minimal tokio
//!    HTTP/1.1 keep-alive server answering OpenAI chat completions with a fixed JSON body, or, when
//!    the request has `"stream":true`, with a short SSE stream whose first event is written at once;
//!    requests to `…/messages` get the same answers in Anthropic's Messages format;
//! 2. starts the release gateway on a temp config with two deployments pointing at the mock:
//!    `gpt-4o` (`openai/`, pass-through) and `claude` (`anthropic/`, translated both ways);
//! 3. drives closed-loop load (N keep-alive connections, each sending its next request when the
//!    previous response ended) first directly at the mock, then through the gateway, and prints
//!    requests/s, latency percentiles, time to first body byte for streams, and CPU per request of
//!    the gateway and the mock from `/proc/<pid>/stat` (utime + stime).
//!
//! CPU per request is the robust figure on a shared machine: requests/s and latency depend on
//! what else runs on the cores, CPU time per request much less.
//!
//! Environment (defaults in brackets): `SB_LOAD_SECS` [5] measured seconds per loaded run,
//! `SB_LOAD_WARMUP_SECS` [1], `SB_LOAD_CONNS` [16], `SB_LOAD_IDLE_SECS` [3] per unloaded
//! (one-connection) run, `SB_LOAD_GATEWAY_THREADS` [2], `SB_LOAD_UPSTREAM_THREADS` [2],
//! `SB_LOAD_CLIENT_THREADS` [2], `SB_LOAD_STREAM_EVENTS` [8] content events per stream,
//! `SB_LOAD_GATEWAY_BIN` [the release binary cargo built], `SB_LOAD_RUNS`
//! [`chat,stream,anthropic,astream,stream64,chat1,stream1`: loaded runs (16 connections, or
//! `SB_LOAD_CONNS`; `stream64` 64), one-connection runs; `anthropic`/`astream` go to the
//! Anthropic deployment; all run when unset],
//! `SB_LOAD_KEEP` [unset: the temp dir with the gateway's config and logs is removed at the end],
//! `SB_LOAD_EXTRA_YAML` [unset: appended to the gateway's config, e.g. a `litellm_settings.cache`
//! section: every request of a run is then a cache hit but the first],
//! `SB_LOAD_OTEL` [unset: set, the gateway runs with `callbacks: [otel]`, every trace sampled,
//! spans and metrics exported over OTLP/HTTP to the mock, which accepts and discards them; run
//! with and without it in the same minute for the telemetry's CPU per request; not together
//! with a `litellm_settings` section in `SB_LOAD_EXTRA_YAML`],
//! `SB_LOAD_OTEL=ab:N` [unset: instead of the usual runs, N pairs of alternating
//! `SB_LOAD_SECS` slices of `chat` and `stream` (those of `SB_LOAD_RUNS`) through a gateway
//! without telemetry and a second one with it, both running throughout; prints each pair and
//! the totals: telemetry's CPU per request with the machine's drift cancelled out],
//! `SB_LOAD_BARE` [1: the OpenAI runs also go through a bare Pingora proxy, the floor; 0: not],
//! `SB_LOAD_WORK_STEALING` [the gateway's default: `switchboard.work_stealing` for the gateway,
//! and the same runtime mode for the bare proxy].
//!
//! The floor (`SB_LOAD_ROLE=bare`): a Pingora `ProxyHttp` with nothing but `upstream_peer`, on
//! the same Pingora version and thread count as the gateway, forwarding the OpenAI requests to
//! the mock unchanged. Its CPU per request is what Pingora's own request path costs (read and
//! parse both heads, the upstream pool, relay the body); the gateway's CPU per request minus it
//! is what Switchboard's own work costs.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    match std::env::var("SB_LOAD_ROLE").as_deref() {
        Ok("upstream") => return upstream::run(),
        Ok("bare") => bare::run(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not. Never load the machine
    // from a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: skipped (run it with `cargo bench --bench load`)");
        return;
    }
    let cfg = Settings::from_env();
    if let Err(e) = orchestrate(&cfg) {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and child processes

struct Settings {
    secs: f64,
    warmup: f64,
    idle_secs: f64,
    conns: usize,
    gateway_threads: usize,
    upstream_threads: usize,
    client_threads: usize,
    stream_events: usize,
    gateway_bin: PathBuf,
    keep: bool,
    /// Also run the OpenAI runs through a bare Pingora proxy (the floor).
    bare: bool,
    /// `switchboard.work_stealing` for the gateway, and the same for the bare proxy; unset: the
    /// gateway's default.
    work_stealing: bool,
    /// Which runs to do: `chat`, `stream`, `anthropic`, `astream`, `stream64`, `chat1`,
    /// `stream1`.
    runs: Vec<String>,
    /// The gateway runs with `callbacks: [otel]` (`SB_LOAD_OTEL`).
    otel: bool,
    /// `SB_LOAD_OTEL=ab:N`: N alternating slices through a gateway without telemetry and one
    /// with it, instead of the usual runs.
    otel_ab: usize,
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v} is not a valid number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            secs: env_num("SB_LOAD_SECS", 5.0),
            warmup: env_num("SB_LOAD_WARMUP_SECS", 1.0),
            idle_secs: env_num("SB_LOAD_IDLE_SECS", 3.0),
            conns: env_num("SB_LOAD_CONNS", 16usize).max(1),
            gateway_threads: env_num("SB_LOAD_GATEWAY_THREADS", 2usize).max(1),
            upstream_threads: env_num("SB_LOAD_UPSTREAM_THREADS", 2usize).max(1),
            client_threads: env_num("SB_LOAD_CLIENT_THREADS", 2usize).max(1),
            stream_events: env_num("SB_LOAD_STREAM_EVENTS", 8usize),
            gateway_bin: std::env::var_os("SB_LOAD_GATEWAY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard"))),
            keep: std::env::var_os("SB_LOAD_KEEP").is_some(),
            bare: std::env::var("SB_LOAD_BARE").map_or(true, |v| v != "0"),
            work_stealing: std::env::var("SB_LOAD_WORK_STEALING").map_or_else(
                |_| switchboard::config::ServerSettings::default().work_stealing,
                |v| v != "0" && v != "false",
            ),
            runs: std::env::var("SB_LOAD_RUNS")
                .unwrap_or_else(|_| "chat,stream,anthropic,astream,stream64,chat1,stream1".into())
                .split(',')
                .map(|r| r.trim().to_string())
                .collect(),
            otel: std::env::var_os("SB_LOAD_OTEL").is_some(),
            otel_ab: std::env::var("SB_LOAD_OTEL")
                .ok()
                .and_then(|v| v.strip_prefix("ab:").map(str::to_string))
                .map(|n| {
                    n.parse()
                        .unwrap_or_else(|_| panic!("SB_LOAD_OTEL=ab:{n}: N is not a number"))
                })
                .unwrap_or(0),
        }
    }
}

/// A child process killed (and reaped) when dropped, so every exit path stops it.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("the {} exited early ({status})", self.name)),
            _ => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn start_upstream(cfg: &Settings) -> Result<(Proc, u16), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .env("SB_LOAD_ROLE", "upstream")
        .env("SB_LOAD_UPSTREAM_THREADS", cfg.upstream_threads.to_string())
        .env("SB_LOAD_STREAM_EVENTS", cfg.stream_events.to_string())
        .stdin(Stdio::piped()) // the mock exits when this pipe closes (we exit or die)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn upstream mock: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc {
        name: "upstream mock",
        child,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("upstream mock: {e}"))?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("upstream mock did not report its port (got {line:?})"))?;
    Ok((proc, port))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn start_gateway(
    cfg: &Settings,
    dir: &Path,
    upstream_port: u16,
    otel: bool,
) -> Result<(Proc, u16), String> {
    if !cfg.gateway_bin.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release --bin switchboard` (cargo bench builds it)",
            cfg.gateway_bin.display()
        ));
    }
    let port = free_port();
    let yaml = format!(
        r#"model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: http://127.0.0.1:{upstream_port}
      api_key: sk-ant-bench
switchboard:
  threads: {threads}
  work_stealing: {work_stealing}
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  log_level: warn
  pid_file: {d}/sb.pid
  upgrade_sock: {d}/sb.sock
"#,
        threads = cfg.gateway_threads,
        work_stealing = cfg.work_stealing,
        d = dir.display()
    );
    let yaml = if otel {
        format!("{yaml}litellm_settings:\n  callbacks: [otel]\n")
    } else {
        yaml
    } + &std::env::var("SB_LOAD_EXTRA_YAML").unwrap_or_default();
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).map_err(|e| format!("write config: {e}"))?;
    // The access log (one JSON line per request) goes to a file, as it would to a log pipe:
    // its cost is part of the gateway's CPU per request.
    let stdout = std::fs::File::create(dir.join("access.log")).map_err(|e| e.to_string())?;
    let stderr = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new(&cfg.gateway_bin);
    if otel {
        command
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{upstream_port}"),
            )
            .env("OTEL_TRACES_SAMPLER", "always_on")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    }
    let child = command
        .arg("--config")
        .arg(&config)
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", cfg.gateway_bin.display()))?;
    let mut proc = Proc {
        name: "gateway",
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Err(e) = proc.check_alive() {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(format!("{e}: {log}"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((proc, port));
        }
        if Instant::now() > deadline {
            return Err("the gateway did not start listening within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The floor: a bare Pingora `ProxyHttp` (this binary with `SB_LOAD_ROLE=bare`) forwarding to
/// the mock with no logic, on the same Pingora version and thread count as the gateway.
fn start_bare(cfg: &Settings, upstream_port: u16) -> Result<(Proc, u16), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let port = free_port();
    let child = Command::new(exe)
        .env("SB_LOAD_ROLE", "bare")
        .env("SB_LOAD_BARE_UPSTREAM", upstream_port.to_string())
        .env("SB_LOAD_BARE_PORT", port.to_string())
        .env("SB_LOAD_GATEWAY_THREADS", cfg.gateway_threads.to_string())
        .env("SB_LOAD_WORK_STEALING", cfg.work_stealing.to_string())
        .stdin(Stdio::piped()) // exits when this pipe closes
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn bare proxy: {e}"))?;
    let mut proc = Proc {
        name: "bare Pingora proxy",
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        proc.check_alive()?;
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((proc, port));
        }
        if Instant::now() > deadline {
            return Err("the bare proxy did not start listening within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// The upstream API a run exercises through the gateway (the client always speaks OpenAI to
/// the gateway; a direct run speaks the upstream's own API to the mock).
#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

fn chat_request(api: Api, target: Target, stream: bool) -> Vec<u8> {
    let stream_field = if stream { r#","stream":true"# } else { "" };
    let (path, body) = match (api, target) {
        (Api::OpenAi, _) | (Api::Anthropic, Target::Bare) => (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"gpt-4o","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Write a haiku about proxies."}}],"temperature":0.7,"max_tokens":256{stream_field}}}"#
            ),
        ),
        (Api::Anthropic, Target::Gateway) => (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"claude","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Write a haiku about proxies."}}],"temperature":0.7,"max_tokens":256{stream_field}}}"#
            ),
        ),
        // What the gateway sends the mock for the request above.
        (Api::Anthropic, Target::Direct) => (
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","system":"You are a helpful assistant.","messages":[{{"role":"user","content":"Write a haiku about proxies."}}],"temperature":0.7,"max_tokens":256{stream_field}}}"#
            ),
        ),
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-client\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Direct,
    Gateway,
    /// The bare Pingora proxy (OpenAI runs only: it forwards the client's request unchanged).
    Bare,
}

struct Run {
    label: &'static str,
    api: Api,
    stream: bool,
    conns: usize,
    target: Target,
    secs: f64,
}

struct Measured {
    requests: u64,
    errors: u64,
    elapsed: f64,
    latency_us: Vec<u32>,
    ttfb_us: Vec<u32>,
    gateway_cpu: Option<f64>,
    upstream_cpu: f64,
    client_cpu: f64,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed
    }
    fn per_req_us(&self, cpu: f64) -> f64 {
        cpu / self.requests.max(1) as f64 * 1e6
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn orchestrate(cfg: &Settings) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("switchboard-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result =
        (|| {
            let (mut upstream, upstream_port) = start_upstream(cfg)?;
            let (mut gateway, gateway_port) =
                start_gateway(cfg, &dir, upstream_port, cfg.otel && cfg.otel_ab == 0)?;
            let mut bare = if cfg.bare {
                Some(start_bare(cfg, upstream_port)?)
            } else {
                None
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.client_threads)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;

            println!(
            "switchboard load benchmark: {} cores, load average {} at start; gateway {} threads \
             (work stealing {}), mock {} threads, client {} threads; {} s measured after {} s \
             warm-up per loaded run",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            loadavg(),
            cfg.gateway_threads,
            cfg.work_stealing,
            cfg.upstream_threads,
            cfg.client_threads,
            cfg.secs,
            cfg.warmup
        );
            println!(
                "pids: gateway {}, upstream mock {}, load client {}{}",
                gateway.pid(),
                upstream.pid(),
                std::process::id(),
                bare.as_ref()
                    .map(|(b, _)| format!(", bare Pingora proxy {}", b.pid()))
                    .unwrap_or_default()
            );
            if cfg.otel_ab > 0 {
                let traced_dir = dir.join("otel");
                std::fs::create_dir_all(&traced_dir).map_err(|e| e.to_string())?;
                let traced = start_gateway(cfg, &traced_dir, upstream_port, true)?;
                println!("gateway with telemetry: pid {}", traced.0.pid());
                return otel_ab(
                    cfg,
                    &runtime,
                    (&mut gateway, gateway_port),
                    traced,
                    &mut upstream,
                );
            }
            let runs = [
                ("chat", "chat", Api::OpenAi, false, cfg.conns, cfg.secs),
                (
                    "stream",
                    "chat stream",
                    Api::OpenAi,
                    true,
                    cfg.conns,
                    cfg.secs,
                ),
                (
                    "anthropic",
                    "anthropic",
                    Api::Anthropic,
                    false,
                    cfg.conns,
                    cfg.secs,
                ),
                (
                    "astream",
                    "anthropic stream",
                    Api::Anthropic,
                    true,
                    cfg.conns,
                    cfg.secs,
                ),
                (
                    "stream64",
                    "chat stream, 64 conns",
                    Api::OpenAi,
                    true,
                    64,
                    cfg.secs,
                ),
                (
                    "chat1",
                    "chat, 1 conn",
                    Api::OpenAi,
                    false,
                    1,
                    cfg.idle_secs,
                ),
                (
                    "stream1",
                    "chat stream, 1 conn",
                    Api::OpenAi,
                    true,
                    1,
                    cfg.idle_secs,
                ),
            ];
            let mut results = Vec::new();
            for (key, label, api, stream, conns, secs) in runs {
                if !cfg.runs.iter().any(|r| r == key) {
                    continue;
                }
                for target in [Target::Direct, Target::Gateway, Target::Bare] {
                    if target == Target::Bare && (bare.is_none() || api != Api::OpenAi) {
                        continue;
                    }
                    let run = Run {
                        label,
                        api,
                        stream,
                        conns,
                        target,
                        secs,
                    };
                    let (port, proxy_pid) = match (target, &bare) {
                        (Target::Direct, _) => (upstream_port, None),
                        (Target::Gateway, _) => (gateway_port, Some(gateway.pid())),
                        (Target::Bare, Some((b, port))) => (*port, Some(b.pid())),
                        (Target::Bare, None) => unreachable!("skipped above"),
                    };
                    let m = runtime.block_on(measure(
                        &run,
                        SocketAddr::from(([127, 0, 0, 1], port)),
                        cfg.warmup,
                        upstream.pid(),
                        proxy_pid,
                    ));
                    upstream.check_alive()?;
                    gateway.check_alive()?;
                    if let Some((b, _)) = &mut bare {
                        b.check_alive()?;
                    }
                    if m.requests == 0 {
                        return Err(format!(
                            "{label} via {}: no request completed ({} errors); logs in {}",
                            target_name(target),
                            m.errors,
                            dir.display()
                        ));
                    }
                    results.push((run, m));
                }
            }
            report(&results);
            println!("load average at end: {}", loadavg());
            Ok(())
        })();
    if !cfg.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("gateway config and logs kept in {}", dir.display());
    }
    result
}

/// `SB_LOAD_OTEL=ab:N`: telemetry's CPU per request, measured in N pairs of alternating
/// `SB_LOAD_SECS` slices through two gateways running side by side, one without telemetry and
/// one with `callbacks: [otel]` (every trace sampled, spans and metrics exported to the mock).
/// Alternating short slices puts both through the same moments of a shared machine, which a
/// run of one after a run of the other does not; the figure is the ratio of the totals, with
/// the median of the pairs' ratios beside it.
fn otel_ab(
    cfg: &Settings,
    runtime: &tokio::runtime::Runtime,
    plain: (&mut Proc, u16),
    mut traced: (Proc, u16),
    upstream: &mut Proc,
) -> Result<(), String> {
    let (plain, plain_port) = plain;
    for (key, stream) in [("chat", false), ("stream", true)] {
        if !cfg.runs.iter().any(|r| r == key) {
            continue;
        }
        let run = Run {
            label: key,
            api: Api::OpenAi,
            stream,
            conns: cfg.conns,
            target: Target::Gateway,
            secs: cfg.secs,
        };
        let mut totals = [(0u64, 0f64); 2];
        let mut ratios = Vec::new();
        println!(
            "\n{key}, {} conns: CPU µs/req without → with telemetry",
            cfg.conns
        );
        for pair in 0..cfg.otel_ab {
            let mut per_req = [0f64; 2];
            for (side, port, pid) in [(0, plain_port, plain.pid()), (1, traced.1, traced.0.pid())] {
                let m = runtime.block_on(measure(
                    &run,
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    cfg.warmup,
                    upstream.pid(),
                    Some(pid),
                ));
                upstream.check_alive()?;
                plain.check_alive()?;
                traced.0.check_alive()?;
                if m.requests == 0 || m.errors > 0 {
                    return Err(format!(
                        "{key} pair {pair}: {} requests, {} errors",
                        m.requests, m.errors
                    ));
                }
                let cpu = m.gateway_cpu.unwrap_or(0.0);
                per_req[side] = m.per_req_us(cpu);
                totals[side].0 += m.requests;
                totals[side].1 += cpu;
            }
            let ratio = per_req[1] / per_req[0];
            ratios.push(ratio);
            println!(
                "  pair {:>2}: {:>6.1} → {:>6.1} ({:+.1}%)",
                pair + 1,
                per_req[0],
                per_req[1],
                (ratio - 1.0) * 100.0
            );
        }
        ratios.sort_by(f64::total_cmp);
        let per_req = |(n, cpu): (u64, f64)| cpu / n.max(1) as f64 * 1e6;
        let (off, on) = (per_req(totals[0]), per_req(totals[1]));
        println!(
            "  total:   {off:>6.1} → {on:>6.1} ({:+.1}%); median of pairs {:+.1}%",
            (on / off - 1.0) * 100.0,
            (ratios[ratios.len() / 2] - 1.0) * 100.0
        );
    }
    println!("load average at end: {}", loadavg());
    Ok(())
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Direct => "direct",
        Target::Gateway => "gateway",
        Target::Bare => "pingora",
    }
}

fn report(results: &[(Run, Measured)]) {
    println!();
    println!(
        "{:<22} {:<8} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>11} {:>11} {:>11}",
        "run",
        "via",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ttfb p50",
        "ttfb p99",
        "errors",
        "proxy µs/req",
        "mock µs/req",
        "client µs/req"
    );
    for (run, m) in results {
        let mut lat = m.latency_us.clone();
        lat.sort_unstable();
        let mut ttfb = m.ttfb_us.clone();
        ttfb.sort_unstable();
        let (t50, t99) = if run.stream {
            (
                format!("{:.3}", percentile(&ttfb, 0.5)),
                format!("{:.3}", percentile(&ttfb, 0.99)),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<22} {:<8} {:>5} {:>8.0} {:>8.3} {:>8.3} {:>9} {:>9} {:>6} {:>11} {:>11.1} {:>11.1}",
            run.label,
            target_name(run.target),
            run.conns,
            m.rps(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            t50,
            t99,
            m.errors,
            m.gateway_cpu
                .map(|c| format!("{:.1}", m.per_req_us(c)))
                .unwrap_or_else(|| "-".into()),
            m.per_req_us(m.upstream_cpu),
            m.per_req_us(m.client_cpu),
        );
    }
    println!();
    println!("summary (targets, issue 9: gateway CPU/request <= 2x the mock's for pass-through, <= 2.5x for Anthropic translation, <= 1.5x for streams; streaming adds < 1 ms to time to first byte):");
    for group in results.chunk_by(|a, b| a.0.label == b.0.label) {
        let [(run, direct), (_, via), rest @ ..] = group else {
            continue;
        };
        let gw = via.per_req_us(via.gateway_cpu.unwrap_or(0.0));
        let mock_direct = direct.per_req_us(direct.upstream_cpu);
        let mock_via = via.per_req_us(via.upstream_cpu);
        let ratio = gw / mock_direct;
        let target = match (run.api, run.stream) {
            (Api::Anthropic, _) => 2.5,
            (Api::OpenAi, true) => 1.5,
            (Api::OpenAi, false) => 2.0,
        };
        let verdict = if ratio <= target { "meets" } else { "MISSES" };
        let mut line = format!(
            "  {:<22} gateway {gw:.1} µs CPU/req = {ratio:.2}x the mock's {mock_direct:.1} µs (direct run; {:.2}x its {mock_via:.1} µs in the gateway run) [{verdict} {target}x]",
            run.label,
            gw / mock_via,
        );
        if run.stream {
            let mut d = direct.ttfb_us.clone();
            let mut g = via.ttfb_us.clone();
            d.sort_unstable();
            g.sort_unstable();
            let d50 = percentile(&d, 0.5);
            let g50 = percentile(&g, 0.5);
            let d99 = percentile(&d, 0.99);
            let g99 = percentile(&g, 0.99);
            line.push_str(&format!(
                "; ttfb +{:.3} ms p50, +{:.3} ms p99 {}",
                g50 - d50,
                g99 - d99,
                if g50 - d50 < 1.0 {
                    "[meets 1 ms at p50]"
                } else {
                    "[MISSES 1 ms at p50]"
                }
            ));
        }
        println!("{line}");
        if let [(_, bare)] = rest {
            let floor = bare.per_req_us(bare.gateway_cpu.unwrap_or(0.0));
            println!(
                "  {:<22} bare Pingora proxy {floor:.1} µs CPU/req = {:.2}x the mock's; the gateway's own work {:.1} µs/req ({:.0}% of its CPU)",
                "",
                floor / mock_direct,
                gw - floor,
                (gw - floor) / gw * 100.0
            );
        }
    }
}

/// One closed-loop run: `conns` connections each sending the next request as soon as the last
/// response ended. Requests that start after the warm-up and end before the deadline count; CPU
/// is sampled at the same two instants.
async fn measure(
    run: &Run,
    addr: SocketAddr,
    warmup: f64,
    upstream_pid: u32,
    gateway_pid: Option<u32>,
) -> Measured {
    let request = Arc::new(chat_request(run.api, run.target, run.stream));
    let start = Instant::now();
    let warm = start + Duration::from_secs_f64(warmup);
    let stop = warm + Duration::from_secs_f64(run.secs);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(run.conns);
    for _ in 0..run.conns {
        let request = request.clone();
        let errors = errors.clone();
        let stream = run.stream;
        tasks.push(tokio::spawn(async move {
            connection_loop(addr, &request, stream, warm, stop, &errors).await
        }));
    }
    tokio::time::sleep_until(warm.into()).await;
    let cpu0 = (
        gateway_pid.map(cpu_seconds),
        cpu_seconds(upstream_pid),
        cpu_seconds(std::process::id()),
    );
    tokio::time::sleep_until(stop.into()).await;
    let cpu1 = (
        gateway_pid.map(cpu_seconds),
        cpu_seconds(upstream_pid),
        cpu_seconds(std::process::id()),
    );
    let mut latency_us = Vec::new();
    let mut ttfb_us = Vec::new();
    for t in tasks {
        if let Ok((lat, ttfb)) = t.await {
            latency_us.extend(lat);
            ttfb_us.extend(ttfb);
        }
    }
    Measured {
        requests: latency_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed: run.secs,
        latency_us,
        ttfb_us,
        gateway_cpu: cpu1.0.zip(cpu0.0).map(|(b, a)| b - a),
        upstream_cpu: cpu1.1 - cpu0.1,
        client_cpu: cpu1.2 - cpu0.2,
    }
}

async fn connection_loop(
    addr: SocketAddr,
    request: &[u8],
    stream: bool,
    warm: Instant,
    stop: Instant,
    errors: &AtomicU64,
) -> (Vec<u32>, Vec<u32>) {
    let mut latency = Vec::with_capacity(65_536);
    let mut ttfb = Vec::with_capacity(if stream { 65_536 } else { 0 });
    let mut conn: Option<Client> = None;
    while Instant::now() < stop {
        let c = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(Client::new(s))
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match c.exchange(request, stream).await {
            Ok(first_byte) => {
                let t1 = Instant::now();
                if t0 >= warm && t1 <= stop {
                    latency.push((t1 - t0).as_micros() as u32);
                    if stream {
                        ttfb.push((first_byte - t0).as_micros() as u32);
                    }
                }
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    (latency, ttfb)
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client (Content-Length and chunked bodies).

struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    body: Vec<u8>,
}

impl Client {
    fn new(sock: TcpStream) -> Client {
        Client {
            sock,
            buf: Vec::with_capacity(64 * 1024),
            body: Vec::with_capacity(64 * 1024),
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let n = self.sock.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Sends one request and reads its whole response; returns when the first body byte arrived.
    /// A non-200 status or a malformed response is an error.
    async fn exchange(&mut self, request: &[u8], stream: bool) -> std::io::Result<Instant> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        self.sock.write_all(request).await?;
        self.body.clear();
        // Head.
        let (status, head_len, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp
                .parse(&self.buf)
                .map_err(|_| bad("bad response head"))?
            {
                httparse::Status::Complete(n) => {
                    let mut length = None;
                    let mut chunked = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        }
                    }
                    break (resp.code.unwrap_or(0), n, length, chunked);
                }
                httparse::Status::Partial => self.fill().await?,
            }
        };
        self.buf.drain(..head_len);
        if self.buf.is_empty() {
            self.fill().await?;
        }
        let first_byte = Instant::now();
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text =
                    std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("chunk size"))?;
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad("chunk size"))?;
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    self.fill().await?;
                }
                self.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..need);
                if size == 0 {
                    break;
                }
            }
        } else {
            let n = length.ok_or_else(|| bad("response without length"))?;
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.body.extend_from_slice(&self.buf[..n]);
            self.buf.drain(..n);
        }
        if status != 200 {
            return Err(bad(&format!(
                "status {status}: {}",
                String::from_utf8_lossy(&self.body)
            )));
        }
        let complete = if stream {
            // OpenAI's end, or Anthropic's (direct runs at the mock).
            self.body.ends_with(b"data: [DONE]\n\n")
                || self
                    .body
                    .ends_with(b"data: {\"type\":\"message_stop\"}\n\n")
        } else {
            self.body.starts_with(b"{") && self.body.ends_with(b"}")
        };
        if !complete {
            return Err(bad("incomplete body"));
        }
        Ok(first_byte)
    }
}

// ---------------------------------------------------------------------------------------------
// The fast upstream mock (this binary with SB_LOAD_ROLE=upstream).

mod upstream {
    use super::*;

    const COMPLETION: &str = r#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1732230000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Packets pass like wind,\nthe proxy holds the doorway,\nbytes flow, none are lost.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":27,"completion_tokens":21,"total_tokens":48},"system_fingerprint":"fp_abc"}"#;

    const MESSAGE: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Packets pass like wind,\nthe proxy holds the doorway,\nbytes flow, none are lost."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":27,"output_tokens":21}}"#;

    /// Prebuilt responses: the JSON reply, and the stream as (head + first event, the rest) with
    /// and without the usage chunk; and the same answers in Anthropic's Messages format.
    struct Replies {
        json: Vec<u8>,
        stream_first: Vec<u8>,
        stream_rest: Vec<u8>,
        stream_rest_usage: Vec<u8>,
        anthropic_json: Vec<u8>,
        anthropic_stream_first: Vec<u8>,
        anthropic_stream_rest: Vec<u8>,
    }

    fn chunk(out: &mut Vec<u8>, data: &str) {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn replies(events: usize) -> Replies {
        let mut json = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            COMPLETION.len()
        )
        .into_bytes();
        json.extend_from_slice(COMPLETION.as_bytes());
        let head = r#"{"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1732230000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_abc","#;
        let mut first = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunk(&mut first, &format!("data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"));
        let words = [
            " Packets", " pass", " like", " wind,", " the", " proxy", " holds", " doorway",
        ];
        let mut rest = Vec::new();
        for i in 0..events {
            chunk(&mut rest, &format!("data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n", words[i % words.len()]));
        }
        chunk(&mut rest, &format!("data: {head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n"));
        let mut rest_usage = rest.clone();
        chunk(&mut rest_usage, &format!("data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":27,\"completion_tokens\":{events},\"total_tokens\":{}}}}}\n\n", 27 + events));
        for r in [&mut rest, &mut rest_usage] {
            chunk(r, "data: [DONE]\n\n");
            r.extend_from_slice(b"0\r\n\r\n");
        }
        let mut anthropic_json = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            MESSAGE.len()
        )
        .into_bytes();
        anthropic_json.extend_from_slice(MESSAGE.as_bytes());
        // Anthropic's stream: message_start at once, then the content block (one delta per
        // word), message_delta with the stop reason and usage, message_stop; one chunk each.
        let mut a_first = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunk(&mut a_first, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":27,\"output_tokens\":1}}}\n\n");
        let mut a_rest = Vec::new();
        chunk(&mut a_rest, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        for i in 0..events {
            chunk(&mut a_rest, &format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n", words[i % words.len()]));
        }
        chunk(
            &mut a_rest,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        chunk(&mut a_rest, &format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{events}}}}}\n\n"));
        chunk(
            &mut a_rest,
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        a_rest.extend_from_slice(b"0\r\n\r\n");
        Replies {
            json,
            stream_first: first,
            stream_rest: rest,
            stream_rest_usage: rest_usage,
            anthropic_json,
            anthropic_stream_first: a_first,
            anthropic_stream_rest: a_rest,
        }
    }

    pub fn run() {
        let threads = env_num("SB_LOAD_UPSTREAM_THREADS", 2usize).max(1);
        let events = env_num("SB_LOAD_STREAM_EVENTS", 8usize);
        // Exit when the parent closes our stdin (it finished, or died).
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("mock runtime");
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
            let port = listener.local_addr().expect("addr").port();
            println!("listening {port}");
            let _ = std::io::stdout().flush();
            let replies = Arc::new(replies(events));
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let replies = replies.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, &replies).await;
                });
            }
        });
    }

    fn find(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    async fn serve(mut sock: TcpStream, replies: &Replies) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            // Head.
            let (head_len, length, anthropic) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let anthropic = req.path.is_some_and(|p| p.ends_with("/messages"));
                        let length = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (n, length, anthropic);
                    }
                    Ok(httparse::Status::Partial) => {
                        if buf.capacity() - buf.len() < 4096 {
                            buf.reserve(16 * 1024);
                        }
                        if sock.read_buf(&mut buf).await? == 0 {
                            return Ok(());
                        }
                    }
                    Err(_) => return Ok(()),
                }
            };
            while buf.len() < head_len + length {
                buf.reserve(head_len + length - buf.len());
                if sock.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let body = &buf[head_len..head_len + length];
            let stream = find(body, b"\"stream\":true");
            if anthropic && stream {
                sock.write_all(&replies.anthropic_stream_first).await?;
                sock.write_all(&replies.anthropic_stream_rest).await?;
            } else if anthropic {
                sock.write_all(&replies.anthropic_json).await?;
            } else if stream {
                let rest = if find(body, b"\"include_usage\":true") {
                    &replies.stream_rest_usage
                } else {
                    &replies.stream_rest
                };
                sock.write_all(&replies.stream_first).await?;
                sock.write_all(rest).await?;
            } else {
                sock.write_all(&replies.json).await?;
            }
            buf.drain(..head_len + length);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The floor: a bare Pingora proxy (this binary with SB_LOAD_ROLE=bare).

mod bare {
    use super::env_num;
    use async_trait::async_trait;
    use pingora_core::server::configuration::{Opt, ServerConf};
    use pingora_core::server::Server;
    use pingora_core::upstreams::peer::HttpPeer;
    use pingora_proxy::{ProxyHttp, Session};

    /// Forwards every request unchanged to the mock: no body read, no logging, no metrics;
    /// Pingora's own request path (read and parse both heads, pool, relay bodies) and nothing
    /// else.
    struct Bare {
        upstream: std::net::SocketAddr,
    }

    #[async_trait]
    impl ProxyHttp for Bare {
        type CTX = ();

        fn new_ctx(&self) {}

        async fn upstream_peer(
            &self,
            _session: &mut Session,
            _ctx: &mut (),
        ) -> pingora_core::Result<Box<HttpPeer>> {
            Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
        }
    }

    pub fn run() -> ! {
        let upstream: u16 = env_num("SB_LOAD_BARE_UPSTREAM", 0);
        let port: u16 = env_num("SB_LOAD_BARE_PORT", 0);
        let threads = env_num("SB_LOAD_GATEWAY_THREADS", 2usize).max(1);
        // Exit when the parent closes our stdin (it finished, or died).
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        let conf = ServerConf {
            threads,
            work_stealing: std::env::var("SB_LOAD_WORK_STEALING").map_or(true, |v| v == "true"),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
        server.bootstrap();
        let mut proxy = pingora_proxy::http_proxy_service(
            &server.configuration,
            Bare {
                upstream: ([127, 0, 0, 1], upstream).into(),
            },
        );
        proxy.add_tcp(&format!("127.0.0.1:{port}"));
        server.add_service(proxy);
        server.run_forever()
    }
}
