//! The `switchboard` command: run the gateway, or `--check` a config.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a profile of the load bench showed glibc's malloc/free
/// (arena locks, `malloc_consolidate`) at ~10% of the gateway's CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard::config::Config;
use switchboard::router::{Snapshot, StateRegistry};
use switchboard::server::{self, Overrides};
use switchboard::upstream::UpstreamClient;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "An OpenAI-compatible LLM gateway that takes a LiteLLM proxy config"
)]
struct Cli {
    /// The LiteLLM-format config file.
    #[arg(short, long, default_value = "conf/switchboard.yaml")]
    config: PathBuf,
    /// Listen address (overrides switchboard.host; default 0.0.0.0).
    #[arg(long)]
    host: Option<String>,
    /// Listen port (overrides switchboard.port; default 4000).
    #[arg(short, long)]
    port: Option<u16>,
    /// Worker threads (overrides switchboard.threads; default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// TLS certificate chain (PEM) for the first TCP listener (LiteLLM's flag; also
    /// `SSL_CERTFILE_PATH`).
    #[arg(long = "ssl_certfile_path", alias = "ssl-certfile-path")]
    ssl_certfile_path: Option<String>,
    /// TLS private key (PEM) for the first TCP listener (also `SSL_KEYFILE_PATH`).
    #[arg(long = "ssl_keyfile_path", alias = "ssl-keyfile-path")]
    ssl_keyfile_path: Option<String>,
    /// Validate the config, print a summary and exit (non-zero on error).
    #[arg(long)]
    check: bool,
    /// With --check: every warning (ignored key, unknown provider) is a failure, for CI.
    #[arg(long, requires = "check")]
    strict: bool,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // Absolute, so SIGHUP re-reads the same file whatever the working directory becomes.
    if let Ok(abs) = std::fs::canonicalize(&cli.config) {
        cli.config = abs;
    }
    let config = match switchboard::reload::load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: invalid config {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    let overrides = Overrides {
        host: cli.host,
        port: cli.port,
        threads: cli.threads,
        ssl_certfile: cli
            .ssl_certfile_path
            .or_else(|| env_path("SSL_CERTFILE_PATH")),
        ssl_keyfile: cli
            .ssl_keyfile_path
            .or_else(|| env_path("SSL_KEYFILE_PATH")),
    };
    if cli.check {
        return check(config, &overrides, cli.strict);
    }
    let json = std::env::var("SWITCHBOARD_JSON_LOGS")
        .ok()
        .map(|v| v != "0" && v != "false")
        .unwrap_or(config.server.json_logs);
    let level = std::env::var("SWITCHBOARD_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.server.log_level);
    switchboard::logging::init(json, level);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    let built = match server::build(config, &overrides, cli.upgrade, cli.daemon) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("switchboard: cannot start ({}): {e}", cli.config.display());
            return ExitCode::from(match e {
                server::StartError::Config(_) => 2,
                server::StartError::Environment(_) => 1,
            });
        }
    };
    log::info!("switchboard listening on {}", built.listen);
    built.run();
    switchboard::logging::flush(std::time::Duration::from_secs(2));
    ExitCode::SUCCESS
}

fn env_path(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// `--check`: validate everything the server would (providers, endpoints), print a summary.
/// `strict`: warnings fail the check too (exit 1), each printed to stderr.
fn check(config: Config, overrides: &Overrides, strict: bool) -> ExitCode {
    let (listeners, tls_warnings) = match switchboard::listeners::check(&config.server, overrides) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!(
                "switchboard: invalid config {}: {e}",
                config.source.display()
            );
            return ExitCode::from(2);
        }
    };
    let client = std::sync::Arc::new(UpstreamClient::new(1));
    let source = config.source.display().to_string();
    let mut warnings = config.warnings.clone();
    warnings.extend(tls_warnings);
    let snapshot = match Snapshot::build(config, 1, &client, &StateRegistry::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: invalid config {source}: {e}");
            return ExitCode::from(2);
        }
    };
    let c = &snapshot.config;
    println!("{source}: OK");
    for line in &listeners {
        println!("  {line}");
    }
    println!(
        "  {} worker thread(s), auth: {}",
        c.server.threads,
        if c.general.master_key.is_some() {
            "master_key"
        } else {
            "none"
        }
    );
    println!(
        "  {} model group(s), {} deployment(s):",
        snapshot.group_names.len(),
        c.deployments.len()
    );
    for name in &snapshot.group_names {
        let group = snapshot.group(name).expect("listed group exists");
        println!("    {name}");
        for d in &group.deployments {
            let at = match d.provider_name() {
                "unserved" => "(cannot be called: see the warnings)",
                _ => d.api_base(),
            };
            println!(
                "      - {} {}/{} @ {at} (id {})",
                d.provider_name(),
                d.config.provider,
                d.config.model,
                d.id()
            );
            if let Some(source) = switchboard::providers::bedrock::credentials_source(&d.config) {
                println!("        credentials: {source}");
            }
        }
    }
    if warnings.is_empty() {
        println!("  no warnings");
    } else {
        println!("  {} warning(s): keys not implemented yet (ignored), deployments that cannot be called:", warnings.len());
        for w in &warnings {
            println!("    {w}");
        }
    }
    if strict && !warnings.is_empty() {
        for w in &warnings {
            eprintln!("switchboard: warning: {w}");
        }
        eprintln!(
            "switchboard: --strict: {} warning(s) in {source}, failing",
            warnings.len()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
