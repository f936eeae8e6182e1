//! TLS benchmark: what client-facing TLS costs the gateway, against plaintext.
//!
//! `cargo bench --bench tls` (which also builds `target/release/switchboard`) makes a throwaway
//! CA and two server certificates (RSA 2048 and ECDSA P-256) with the openssl CLI, starts the
//! release gateway with three listeners (plaintext, TLS with the RSA certificate, TLS with the
//! ECDSA one) and a `mock_response` model (no upstream: the figures are the client side's), then
//! runs closed-loop loads and prints requests/s and the gateway's CPU per request (utime +
//! stime from `/proc/<pid>/stat`):
//!
//! - `keepalive`: N keep-alive connections, requests back to back (TLS cost per request is the
//!   record layer only);
//! - `handshake`: every request on a new connection (`Connection: close`); over TLS a full
//!   handshake each time (the client's session resumption is off), so requests/s is the
//!   handshake rate.
//!
//! Environment: `SB_TLS_SECS` [3] measured seconds per run, `SB_TLS_CONNS` [16] concurrent
//! clients, `SB_TLS_GATEWAY_THREADS` [2], `SB_TLS_CLIENT_THREADS` [2], `SB_TLS_GATEWAY_BIN`
//! [the release binary cargo built].

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tls: skipped (run it with `cargo bench --bench tls`)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("tls: {e}");
        std::process::exit(1);
    }
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux.
    ticks as f64 / 100.0
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e} (install it: .ci/setup)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn make_certs(dir: &Path) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bench CA",
        ],
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    for (name, alg) in [("rsa", "rsa:2048"), ("ecdsa", "ec")] {
        let mut req = vec!["req", "-newkey", alg];
        if alg == "ec" {
            req.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        req.extend([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        )?;
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Plain,
    Rsa,
    Ecdsa,
}

fn run() -> Result<(), String> {
    let secs: f64 = env_num("SB_TLS_SECS", 3.0);
    let conns: usize = env_num("SB_TLS_CONNS", 16);
    let gateway_threads: usize = env_num("SB_TLS_GATEWAY_THREADS", 2);
    let client_threads: usize = env_num("SB_TLS_CLIENT_THREADS", 2);
    let bin = std::env::var_os("SB_TLS_GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_switchboard")));
    let dir = std::env::temp_dir().join(format!("switchboard-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    make_certs(&dir)?;
    let ports = [free_port(), free_port(), free_port()];
    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/x, mock_response: hello}}\nswitchboard:\n  threads: {gateway_threads}\n  log_level: warn\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n  listeners:\n    - 127.0.0.1:{p0}\n    - address: 127.0.0.1:{p1}\n      tls: {{cert_file: {d}/rsa.pem, key_file: {d}/rsa.key}}\n    - address: 127.0.0.1:{p2}\n      tls: {{cert_file: {d}/ecdsa.pem, key_file: {d}/ecdsa.key}}\n",
        d = dir.display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
    );
    std::fs::write(dir.join("config.yaml"), yaml).map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("access.log")).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let gw = Gateway(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ports
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        if Instant::now() > deadline {
            return Err("the gateway did not start listening within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let mut roots = RootCertStore::empty();
    let ca = std::fs::read(dir.join("ca.pem")).map_err(|e| e.to_string())?;
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "tls bench: {conns} connections, {secs}s per run, gateway {gateway_threads} thread(s), loadavg {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!(
        "{:<10} {:<12} {:>10} {:>14} {:>8}",
        "mode", "listener", "req/s", "gw CPU/req", "errors"
    );
    for keepalive in [true, false] {
        for (target, name) in [
            (Target::Plain, "plaintext"),
            (Target::Rsa, "TLS RSA2048"),
            (Target::Ecdsa, "TLS P-256"),
        ] {
            if keepalive && target == Target::Ecdsa {
                continue; // the record layer does not depend on the certificate's key
            }
            let port = ports[target as usize];
            // Warm up one second, then measure.
            rt.block_on(load(port, target, &config, conns, keepalive, 1.0));
            let cpu0 = cpu_seconds(gw.0.id());
            let (n, errors, took) =
                rt.block_on(load(port, target, &config, conns, keepalive, secs));
            let cpu = cpu_seconds(gw.0.id()) - cpu0;
            println!(
                "{:<10} {:<12} {:>10.0} {:>11.1} µs {:>8}",
                if keepalive { "keepalive" } else { "handshake" },
                name,
                n as f64 / took,
                cpu / n.max(1) as f64 * 1e6,
                errors
            );
        }
    }
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn load(
    port: u16,
    target: Target,
    config: &Arc<ClientConfig>,
    conns: usize,
    keepalive: bool,
    secs: f64,
) -> (u64, u64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (done, errors, stop, config) =
            (done.clone(), errors.clone(), stop.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match connect(port, target, &config).await {
                    Ok(mut s) => loop {
                        match exchange(&mut *s, keepalive).await {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => break false,
                        }
                        if !keepalive || stop.load(Ordering::Relaxed) {
                            break true;
                        }
                    },
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let took = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    (n, errors.load(Ordering::Relaxed), took)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(
    port: u16,
    target: Target,
    config: &Arc<ClientConfig>,
) -> std::io::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    if target == Target::Plain {
        return Ok(Box::new(tcp));
    }
    let connector = pingora_core::tls::TlsConnector::from(config.clone());
    let s = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(Box::new(s))
}

/// One chat completion; reads the content-length framed answer.
async fn exchange(s: &mut dyn Io, keepalive: bool) -> std::io::Result<()> {
    const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
        BODY.len(),
        if keepalive { "" } else { "connection: close\r\n" }
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(BODY);
    s.write_all(&req).await?;
    let mut buf = Vec::with_capacity(2048);
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(std::io::Error::other(head));
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(());
        }
    }
}
