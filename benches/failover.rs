//! Failover benchmark: what a failing primary adds to a call its fallback answers.
//!
//! `cargo bench --bench failover` (which also builds `target/release/switchboard`) starts three
//! loopback mock upstreams in this process (one answers 200 with a small completion, one 500,
//! one 429 with `retry-after: 1`), then the release gateway on a temp config with three
//! single-deployment groups: `healthy`, `primary-500` and `primary-429`, the last two with
//! `fallbacks: [healthy]` and the default `num_retries` (2). Over one keep-alive client
//! connection it sends requests one at a time to each group in turn (interleaved batches, so
//! machine load drifts hit all three alike) and reports latency p50/p99 per group and what the
//! failover adds to a healthy call. Every answer must be a 200 from the healthy upstream.
//!
//! Bounded: at most `SB_FAILOVER_REQUESTS` [2000] measured requests per group after
//! `SB_FAILOVER_WARMUP` [100], and never more than `SB_FAILOVER_MAX_SECS` [60] in all (a gateway
//! that backs off before falling back stops early with what it has). `SB_FAILOVER_GATEWAY_BIN`
//! runs another binary (e.g. an older build, for an A/B). The gateway is killed on every exit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: never load the machine
    // from a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: skipped (run it with `cargo bench --bench failover`)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("failover: {e}");
        std::process::exit(1);
    }
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The gateway child, killed and reaped when dropped (every exit path).
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const GROUPS: [&str; 3] = ["healthy", "primary-500", "primary-429"];

fn run() -> Result<(), String> {
    let per_group: usize = env_num("SB_FAILOVER_REQUESTS", 2000);
    let warmup: usize = env_num("SB_FAILOVER_WARMUP", 100);
    let max_secs: f64 = env_num("SB_FAILOVER_MAX_SECS", 60.0);
    let bin = std::env::var_os("SB_FAILOVER_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ok_port = runtime.block_on(mock(200, ""))?;
    let e500_port = runtime.block_on(mock(500, ""))?;
    let e429_port = runtime.block_on(mock(429, "retry-after: 1\r\n"))?;

    let dir = std::env::temp_dir().join(format!("switchboard-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let entry = |group: &str, p: u16| {
        format!(
            "  - model_name: {group}\n    litellm_params: {{model: openai/m, api_base: \"http://127.0.0.1:{p}/v1\", api_key: k}}\n"
        )
    };
    let yaml = format!(
        "model_list:\n{}{}{}router_settings:\n  fallbacks: [{{primary-500: [healthy]}}, {{primary-429: [healthy]}}]\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  log_level: warn\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n",
        entry("healthy", ok_port),
        entry("primary-500", e500_port),
        entry("primary-429", e429_port),
        d = dir.display()
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let result = (|| {
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let _gateway = Gateway(child);
        let started = Instant::now();
        let mut conn = loop {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
                break c;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err("the gateway did not start listening within 20 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        conn.set_nodelay(true).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let requests: Vec<Vec<u8>> = GROUPS.iter().map(|g| chat_request(g)).collect();
        for (g, req) in GROUPS.iter().zip(&requests) {
            for _ in 0..warmup {
                call(&mut conn, req).map_err(|e| format!("{g} (warm-up): {e}"))?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs_f64(max_secs);
        let mut samples: Vec<Vec<u32>> = vec![Vec::with_capacity(per_group); GROUPS.len()];
        let batch = 50;
        'rounds: while samples.iter().any(|s| s.len() < per_group) {
            for (i, req) in requests.iter().enumerate() {
                for _ in 0..batch.min(per_group - samples[i].len()) {
                    if Instant::now() > deadline {
                        break 'rounds;
                    }
                    let t = Instant::now();
                    call(&mut conn, req).map_err(|e| format!("{}: {e}", GROUPS[i]))?;
                    samples[i].push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
        }
        report(&mut samples);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn chat_request(group: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{group}","messages":[{{"role":"user","content":"Write a haiku about proxies."}}],"max_tokens":64}}"#
    );
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// One request on the keep-alive connection; the answer must be the healthy upstream's 200.
fn call(conn: &mut TcpStream, request: &[u8]) -> Result<(), String> {
    conn.write_all(request).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the gateway closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) else {
            continue;
        };
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no Content-Length")?;
        if buf.len() < head + len {
            continue;
        }
        let body = String::from_utf8_lossy(&buf[head..head + len]);
        if resp.code != Some(200) || !body.contains("from the healthy upstream") {
            return Err(format!("got {:?}: {body}", resp.code));
        }
        return Ok(());
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(samples: &mut [Vec<u32>]) {
    for s in samples.iter_mut() {
        s.sort_unstable();
    }
    if samples.iter().any(|s| s.is_empty()) {
        println!("failover: a group has no samples (time limit reached)");
        return;
    }
    let (h50, h99) = (percentile(&samples[0], 0.5), percentile(&samples[0], 0.99));
    println!(
        "switchboard failover benchmark (one connection, requests one at a time), load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>13} {:>13}",
        "scenario", "n", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"
    );
    let labels = ["healthy call", "500, then fallback", "429, then fallback"];
    for (label, s) in labels.iter().zip(samples.iter()) {
        let (p50, p99) = (percentile(s, 0.5), percentile(s, 0.99));
        println!(
            "{label:<28} {:>6} {p50:>9.3} {p99:>9.3} {:>13.3} {:>13.3}",
            s.len(),
            p50 - h50,
            p99 - h99
        );
    }
    println!("(target: a 500 or 429 failover adds under 1 ms to a healthy call)");
}

/// A keep-alive HTTP/1.1 mock answering every request with `status` (a completion for 200, an
/// OpenAI error otherwise). Returns its port; it runs until the process exits.
async fn mock(status: u16, extra_headers: &'static str) -> Result<u16, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let body = if status == 200 {
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"from the healthy upstream"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}"#
    } else {
        r#"{"error":{"message":"failing on purpose","type":"server_error"}}"#
    };
    let reply: &'static [u8] = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .leak();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: head, then Content-Length bytes of body.
                    let done = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break Some(end + 4 + len);
                            }
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let Some(used) = done else { return };
                    buf.drain(..used);
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}
