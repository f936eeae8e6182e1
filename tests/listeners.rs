//! Client-facing listeners: TLS (HTTP/1.1 and HTTP/2 by ALPN, streaming included), h2c with
//! prior knowledge, mTLS, TLS 1.3 minimum, a Unix socket, certificate swap on SIGHUP under load,
//! `--check` on certificate files, bind failures, LiteLLM's ssl flags, and the pid file.
//! A throwaway CA is made with the openssl CLI (installed by `.ci/setup`); the clients are
//! rustls (through Pingora's re-exports) and the `h2` crate, and the real clients users run:
//! curl and the official OpenAI Python SDK (`tests/fixtures/openai_sdk_client.py`, in the venv
//! `.ci/setup` makes at `target/ci-venv`).

#[path = "support/certs.rs"]
mod certs;
mod support;

use certs::{make_ca, make_leaf};
use pingora_core::tls::{
    ClientConfig, RootCertStore, ServerName, TlsConnector, TlsStream as RustlsStream,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Tls = RustlsStream<TcpStream>;

// ---------------------------------------------------------------------------------------------
// Certificates (made by `support/certs.rs`).

fn serial_of_file(pem: &Path) -> String {
    let bytes = std::fs::read(pem).unwrap();
    let der = rustls_pemfile::certs(&mut bytes.as_slice())
        .next()
        .unwrap()
        .unwrap();
    serial_of_der(der.as_ref())
}

fn serial_of_der(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

/// Replaces a file atomically (as cert-manager and certbot do), so a reload never reads half.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Clients.

struct ClientOpts<'a> {
    alpn: &'a [&'a [u8]],
    /// (certificate, key) presented to an mTLS listener.
    identity: Option<(PathBuf, PathBuf)>,
    tls12_only: bool,
}

impl Default for ClientOpts<'_> {
    fn default() -> Self {
        ClientOpts {
            alpn: &[b"http/1.1"],
            identity: None,
            tls12_only: false,
        }
    }
}

fn client_config(ca: &Path, opts: &ClientOpts) -> Arc<ClientConfig> {
    pingora_core::tls::install_default_crypto_provider();
    let mut roots = RootCertStore::empty();
    let bytes = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut bytes.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = if opts.tls12_only {
        ClientConfig::builder_with_protocol_versions(&[&pingora_core::tls::version::TLS12])
    } else {
        ClientConfig::builder()
    }
    .with_root_certificates(roots);
    let mut config = match &opts.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let c = std::fs::read(cert).unwrap();
            let k = std::fs::read(key).unwrap();
            let certs = rustls_pemfile::certs(&mut c.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut k.as_slice())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(port: u16, config: &Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = TlsConnector::from(config.clone());
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    Ok(RustlsStream::Client(stream))
}

fn peer_serial(s: &Tls) -> String {
    let (_, conn) = s.get_ref();
    serial_of_der(conn.peer_certificates().unwrap()[0].as_ref())
}

fn alpn_of(s: &Tls) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

fn chat_body(model: &str, stream: bool) -> Vec<u8> {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes()
}

/// One HTTP/1.1 request on a kept-alive connection; the response's status and body
/// (content-length framed, as the gateway's non-streaming answers are).
async fn h1_request<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    s: &mut S,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    h1_call(s, "POST /v1/chat/completions", body).await
}

/// `request` is the method and path.
async fn h1_call<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    s: &mut S,
    request: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let head = format!(
        "{request} HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        if rest.len() >= len {
            let status = head[9..12].parse().unwrap();
            return Ok((status, rest[..len].to_string()));
        }
    }
}

/// An HTTP/2 connection over `io` (TLS with ALPN h2, or h2c prior knowledge).
async fn h2_client<T>(io: T) -> h2::client::SendRequest<bytes::Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A POST over HTTP/2: status and the DATA frames with their arrival times.
async fn h2_post(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    body: Vec<u8>,
) -> (u16, Vec<(Instant, Vec<u8>)>) {
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.expect("h2 ready");
    let (resp, mut send) = ready.send_request(req, false).expect("send_request");
    send.send_data(body.into(), true).unwrap();
    let resp = resp.await.expect("h2 response");
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("h2 data");
        let _ = body.flow_control().release_capacity(chunk.len());
        frames.push((Instant::now(), chunk.to_vec()));
    }
    (status, frames)
}

fn joined(frames: &[(Instant, Vec<u8>)]) -> String {
    String::from_utf8(frames.iter().flat_map(|(_, f)| f.clone()).collect()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Configs.

/// A config with a mock model `m`, an OpenAI-compatible model `up` at `upstream` (if any), and
/// these listener entries (YAML list items, indented for `listeners:`).
fn config(dir: &Path, upstream: Option<&str>, listeners: &str, extra: &str) -> String {
    let mut yaml = String::from(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, mock_response: hello over tls}\n",
    );
    if let Some(base) = upstream {
        yaml.push_str(&format!(
            "  - model_name: up\n    litellm_params: {{model: openai/gpt-4o, api_base: '{base}/v1', api_key: k}}\n"
        ));
    }
    yaml.push_str(&format!(
        "switchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n{extra}  listeners:\n{listeners}",
        d = dir.display()
    ));
    yaml
}

fn tls_listener(cert: &Path, key: &Path, more: &str) -> String {
    format!(
        "    - address: 127.0.0.1:1\n      tls: {{cert_file: '{}', key_file: '{}'{more}}}\n",
        cert.display(),
        key.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// TLS with HTTP/1.1 and HTTP/2 chosen by ALPN; a stream over HTTP/2 arrives piece by piece as
/// the upstream sends it, like over HTTP/1.1.
#[tokio::test]
async fn tls_serves_http1_and_http2_and_streams_over_h2() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let words = ["one ", "two ", "three ", "four"];
    let up = MockUpstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&words, false),
            60,
            Duration::from_millis(40),
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &dir,
        Some(&up.base()),
        &tls_listener(&cert, &key, ""),
        "",
    ));
    let ca = dir.join("ca.pem");

    // HTTP/1.1 (the client offers only http/1.1).
    let h1 = client_config(&ca, &ClientOpts::default());
    let mut s = tls_connect(gw.port, &h1).await.expect("TLS handshake");
    assert_eq!(alpn_of(&s).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_serial(&s), serial_of_file(&cert));
    let (status, body) = h1_request(&mut s, &chat_body("m", false)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello over tls"), "{body}");
    // Kept alive: a second request on the same TLS connection.
    let (status, _) = h1_request(&mut s, &chat_body("m", false)).await.unwrap();
    assert_eq!(status, 200);

    // HTTP/2 (the client offers h2 first).
    let h2c = client_config(
        &ca,
        &ClientOpts {
            alpn: &[b"h2", b"http/1.1"],
            ..Default::default()
        },
    );
    let s = tls_connect(gw.port, &h2c).await.expect("TLS handshake");
    assert_eq!(alpn_of(&s).as_deref(), Some(&b"h2"[..]));
    let mut client = h2_client(s).await;
    let (status, frames) = h2_post(&mut client, chat_body("m", false)).await;
    assert_eq!(status, 200);
    assert!(joined(&frames).contains("hello over tls"));

    // Streaming over HTTP/2: several DATA frames, spread over the upstream's pacing.
    let (status, frames) = h2_post(&mut client, chat_body("up", true)).await;
    assert_eq!(status, 200, "{}", joined(&frames));
    let text = joined(&frames);
    let content: String = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(content, "one two three four");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(frames.len() >= 3, "{} frame(s): buffered?", frames.len());
    let spread = frames.last().unwrap().0 - frames[0].0;
    assert!(
        spread >= Duration::from_millis(100),
        "the stream arrived at once ({spread:?}): buffered"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// h2c with prior knowledge on a plaintext listener, HTTP/1.1 on the same port; an HTTP/2
/// connection outlives the request-head timeout (the edge's head bounds are HTTP/1's).
#[tokio::test]
async fn h2c_prior_knowledge_beside_http1_and_past_the_head_timeout() {
    let dir = temp_dir();
    let up = MockUpstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["a ", "b ", "c ", "d ", "e"], false),
            40,
            Duration::from_millis(150),
        )
    })
    .await;
    let yaml = config(
        &dir,
        Some(&up.base()),
        "    - address: 127.0.0.1:1\n      h2c: true\n",
        "  request_header_timeout_seconds: 0.5\n",
    );
    let gw = Gateway::start(&yaml);

    let tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let mut client = h2_client(tcp).await;
    let (status, frames) = h2_post(&mut client, chat_body("m", false)).await;
    assert_eq!(status, 200);
    assert!(joined(&frames).contains("hello over tls"));
    // A stream that takes well past the 0.5 s head timeout, on the same connection.
    let started = Instant::now();
    let (status, frames) = h2_post(&mut client, chat_body("up", true)).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() > Duration::from_millis(700));
    assert!(joined(&frames).contains("[DONE]"), "{}", joined(&frames));
    // And the connection still takes requests afterwards.
    let (status, _) = h2_post(&mut client, chat_body("m", false)).await;
    assert_eq!(status, 200);

    // HTTP/1.1 on the same listener.
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = std::fs::remove_dir_all(dir);
}

/// mTLS: a client certificate from the configured CA is accepted; none, or one from another
/// CA, is refused before any request is served.
#[tokio::test]
async fn mtls_accepts_the_cas_clients_and_refuses_others() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    make_ca(&dir, "clients");
    make_ca(&dir, "rogue");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let good = make_leaf(&dir, "clients", "good-client", 2);
    let bad = make_leaf(&dir, "rogue", "rogue-client", 2);
    let more = format!(", client_ca_file: '{}'", dir.join("clients.pem").display());
    let gw = Gateway::start(&config(&dir, None, &tls_listener(&cert, &key, &more), ""));
    let ca = dir.join("ca.pem");

    let with = client_config(
        &ca,
        &ClientOpts {
            identity: Some(good),
            ..Default::default()
        },
    );
    let mut s = tls_connect(gw.port, &with).await.expect("handshake");
    let (status, body) = h1_request(&mut s, &chat_body("m", false)).await.unwrap();
    assert_eq!(status, 200, "{body}");

    for (what, opts) in [
        ("no certificate", ClientOpts::default()),
        (
            "another CA's certificate",
            ClientOpts {
                identity: Some(bad.clone()),
                ..Default::default()
            },
        ),
    ] {
        let config = client_config(&ca, &opts);
        // With TLS 1.3 the client learns of the refusal on its first read.
        let outcome = async {
            let mut s = tls_connect(gw.port, &config).await?;
            h1_request(&mut s, &chat_body("m", false)).await
        }
        .await;
        assert!(outcome.is_err(), "{what}: served {outcome:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `min_version: "1.3"` refuses a TLS 1.2-only client; the default accepts it.
#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let second = reserve_port();
    let listeners = format!(
        "{}    - address: 127.0.0.1:{}\n      tls: {{cert_file: '{}', key_file: '{}'}}\n",
        tls_listener(&cert, &key, ", min_version: '1.3'"),
        second.port,
        cert.display(),
        key.display()
    );
    let gw = Gateway::start(&config(&dir, None, &listeners, ""));
    let ca = dir.join("ca.pem");
    let old = client_config(
        &ca,
        &ClientOpts {
            tls12_only: true,
            ..Default::default()
        },
    );
    // Refused at the handshake or, for a client that lists TLS 1.3 suites anyway, right after
    // it: either way no request is served.
    let outcome = async {
        let mut s = tls_connect(gw.port, &old).await?;
        h1_request(&mut s, &chat_body("m", false)).await
    }
    .await;
    assert!(outcome.is_err(), "TLS 1.2 served: {outcome:?}");
    let modern = client_config(&ca, &ClientOpts::default());
    let mut s = tls_connect(gw.port, &modern).await.expect("TLS 1.3");
    assert_eq!(
        h1_request(&mut s, &chat_body("m", false)).await.unwrap().0,
        200
    );
    // The second listener keeps the 1.2 default.
    let mut s = tls_connect(second.port, &old).await.expect("TLS 1.2");
    assert_eq!(
        h1_request(&mut s, &chat_body("m", false)).await.unwrap().0,
        200
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGHUP swaps the certificate under load: no request fails, established connections keep
/// going, new handshakes see the new serial. A mismatched or expired replacement fails the
/// reload and the last good certificate keeps serving.
#[tokio::test]
async fn sighup_swaps_the_certificate_under_load_with_no_failures() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (first, first_key) = make_leaf(&dir, "ca", "first", 2);
    let (second, second_key) = make_leaf(&dir, "ca", "second", 30);
    let (expired, expired_key) = make_leaf(&dir, "ca", "expired", -1);
    let live = dir.join("live.pem");
    let live_key = dir.join("live.key");
    replace(&first, &live);
    replace(&first_key, &live_key);
    let gw = Gateway::start(&config(&dir, None, &tls_listener(&live, &live_key, ""), ""));
    let ca = client_config(&dir.join("ca.pem"), &ClientOpts::default());
    let ca_h2 = client_config(
        &dir.join("ca.pem"),
        &ClientOpts {
            alpn: &[b"h2"],
            ..Default::default()
        },
    );

    // Load: keep-alive HTTP/1.1 connections and one HTTP/2 connection, requests back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, ca) = (stop.clone(), ok.clone(), failures.clone(), ca.clone());
        let port = gw.port;
        tasks.push(tokio::spawn(async move {
            let mut s = tls_connect(port, &ca).await.expect("handshake");
            let serial = peer_serial(&s);
            while !stop.load(Ordering::Relaxed) {
                match h1_request(&mut s, &chat_body("m", false)).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        break;
                    }
                };
            }
            serial
        }));
    }
    {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let s = tls_connect(gw.port, &ca_h2).await.expect("handshake");
        let serial = peer_serial(&s);
        let mut client = h2_client(s).await;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match h2_post(&mut client, chat_body("m", false)).await {
                    (200, _) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.lock().unwrap().push(format!("h2 {}", other.0));
                        break;
                    }
                };
            }
            serial
        }));
    }
    let progress = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            assert!(
                wait_until(
                    || ok.load(Ordering::Relaxed) >= target,
                    Duration::from_secs(20)
                )
                .await,
                "the load stalled"
            );
        }
    };
    progress(20).await;

    replace(&second, &live);
    replace(&second_key, &live_key);
    gw.signal("HUP");
    gw.wait_for_stderr("now serving certificate CN=second")
        .await;
    // New handshakes, during the load, get the new certificate. (A fresh client each time: a
    // resumed TLS session keeps the certificate it was made with.)
    let fresh = || client_config(&dir.join("ca.pem"), &ClientOpts::default());
    let s = tls_connect(gw.port, &fresh())
        .await
        .expect("handshake after swap");
    assert_eq!(peer_serial(&s), serial_of_file(&second));
    progress(20).await; // the old connections keep serving

    // A key that does not match: the reload fails, the new-but-good certificate stays.
    replace(&first_key, &live_key);
    gw.signal("HUP");
    gw.wait_for_stderr("does not belong to the certificate")
        .await;
    let s = tls_connect(gw.port, &fresh())
        .await
        .expect("handshake after bad reload");
    assert_eq!(peer_serial(&s), serial_of_file(&second));
    let mut s = tls_connect(gw.port, &fresh()).await.unwrap();
    let (_, ready) = h1_call(&mut s, "GET /health/readiness", b"").await.unwrap();
    assert!(ready.contains("key_file"), "readiness: {ready}");
    // An expired certificate (with its own key): refused the same way.
    replace(&expired, &live);
    replace(&expired_key, &live_key);
    gw.signal("HUP");
    gw.wait_for_stderr("expired on").await;
    let s = tls_connect(gw.port, &fresh())
        .await
        .expect("handshake after expired");
    assert_eq!(peer_serial(&s), serial_of_file(&second));
    progress(10).await;

    stop.store(true, Ordering::Relaxed);
    let mut old_serials = Vec::new();
    for t in tasks {
        old_serials.push(t.await.unwrap());
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // The connections made before the swap kept the first certificate to the end.
    let first_serial = serial_of_file(&first);
    assert!(old_serials.iter().all(|s| *s == first_serial));
    let _ = std::fs::remove_dir_all(dir);
}

fn run_check(config_path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(config_path)
        .arg("--check")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--check` validates the TLS files: expiring soon is a warning; expired, a key that does not
/// match, an unreadable file or a CA file that is not PEM is an error naming the key path.
#[test]
fn check_validates_certificate_files() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "soon", 2);
    let (later, later_key) = make_leaf(&dir, "ca", "later", 60);
    let (expired, expired_key) = make_leaf(&dir, "ca", "expired", -1);
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").unwrap();
    let path = dir.join("config.yaml");
    let check = |listener: String| {
        std::fs::write(&path, config(&dir, None, &listener, "")).unwrap();
        run_check(&path, &[])
    };

    let (code, out, err) = check(tls_listener(&later, &later_key, ""));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("listen https://127.0.0.1:1"), "{out}");
    assert!(out.contains("CN=later"), "{out}");
    assert!(!out.contains("within 14 days"), "{out}");

    let (code, out, err) = check(tls_listener(&cert, &key, ""));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("within 14 days"), "{out}");
    // With --strict the expiry warning fails the check.
    let strict = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--strict", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));

    let cases = [
        (
            tls_listener(&expired, &expired_key, ""),
            "switchboard.listeners[0].tls.cert_file",
            "expired on",
        ),
        (
            tls_listener(&cert, &later_key, ""),
            "switchboard.listeners[0].tls.key_file",
            "does not belong",
        ),
        (
            tls_listener(&dir.join("missing.pem"), &key, ""),
            "switchboard.listeners[0].tls.cert_file",
            "cannot read",
        ),
        (
            tls_listener(&dir.join("garbage.pem"), &key, ""),
            "switchboard.listeners[0].tls.cert_file",
            "no PEM certificate",
        ),
        (
            tls_listener(
                &cert,
                &key,
                &format!(", client_ca_file: '{}'", dir.join("garbage.pem").display()),
            ),
            "switchboard.listeners[0].tls.client_ca_file",
            "no PEM certificate",
        ),
        (
            tls_listener(&cert, &key, ", min_version: '1.1'"),
            "switchboard.listeners[0].tls.min_version",
            "not a supported version",
        ),
        (
            "    - address: '::1:80'\n".to_string(),
            "switchboard.listeners[0]",
            "in brackets",
        ),
    ];
    for (listener, key_path, message) in cases {
        let (code, out, err) = check(listener);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(key_path) && err.contains(message), "{err}");
    }
    // An expired certificate fails the start too, the same way.
    std::fs::write(
        &path,
        config(&dir, None, &tls_listener(&expired, &expired_key, ""), ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired on"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A second instance on a port (or Unix socket) already served fails at once with exit code 1
/// and says why, instead of logging "listening" and running without a socket.
#[tokio::test]
async fn a_taken_address_fails_the_start() {
    let dir = temp_dir();
    let sock = dir.join("gw.sock");
    let yaml = config(
        &dir,
        None,
        &format!("    - 127.0.0.1:1\n    - '{}'\n", sock.display()),
        "",
    );
    let gw = Gateway::start(&yaml);
    // Served on the Unix socket too.
    let mut unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (status, body) = h1_request(&mut unix, &chat_body("m", false)).await.unwrap();
    assert_eq!(status, 200, "{body}");

    let second = |port: u16, other_dir: &Path| {
        let yaml = config(
            other_dir,
            None,
            &format!("    - 127.0.0.1:{port}\n    - '{}'\n", sock.display()),
            "",
        );
        std::fs::create_dir_all(other_dir).unwrap();
        let path = other_dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    // The TCP port is taken.
    let (out, took) = second(gw.port, &dir.join("second"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("address in use"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", gw.port)), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The Unix socket is served by the first process: not stolen, refused.
    let free = reserve_port();
    let (out, _) = second(free.port, &dir.join("third"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gw.sock") && err.contains("address in use"),
        "{err}"
    );
    // The first instance still serves on both.
    let mut unix = tokio::net::UnixStream::connect(&sock).await.unwrap();
    assert_eq!(
        h1_request(&mut unix, &chat_body("m", false))
            .await
            .unwrap()
            .0,
        200
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// LiteLLM's `SSL_CERTFILE_PATH`/`SSL_KEYFILE_PATH` put TLS on the default listener.
#[tokio::test]
async fn litellm_ssl_env_enables_tls_on_the_default_listener() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let gw = Gateway::start_with_env(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, mock_response: hello over tls}\n",
        &[
            ("SSL_CERTFILE_PATH", cert.to_str().unwrap()),
            ("SSL_KEYFILE_PATH", key.to_str().unwrap()),
        ],
    );
    let ca = client_config(&dir.join("ca.pem"), &ClientOpts::default());
    let mut s = tls_connect(gw.port, &ca)
        .await
        .expect("TLS on the default listener");
    assert_eq!(
        h1_request(&mut s, &chat_body("m", false)).await.unwrap().0,
        200
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A PROXY protocol header before the TLS handshake (a TCP load balancer in front of a TLS
/// listener) gives the client's address; without one the peer's is used.
#[tokio::test]
async fn proxy_protocol_before_the_tls_handshake() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let mut yaml = config(
        &dir,
        None,
        &format!(
            "{}      proxy_protocol: true\n",
            tls_listener(&cert, &key, "")
        ),
        "  trusted_proxies: [\"127.0.0.1\"]\n",
    );
    yaml.push_str("general_settings:\n  allowed_ips: [\"198.51.100.7\"]\n");
    let gw = Gateway::start(&yaml);
    let ca = client_config(&dir.join("ca.pem"), &ClientOpts::default());

    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let mut s = RustlsStream::Client(
        TlsConnector::from(ca.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake after the PROXY header"),
    );
    let (status, body) = h1_call(&mut s, "GET /v1/models", b"").await.unwrap();
    assert_eq!(status, 200, "{body}");

    // No header: served, as the peer (127.0.0.1), which allowed_ips refuses.
    let mut s = tls_connect(gw.port, &ca).await.expect("TLS handshake");
    let (status, body) = h1_call(&mut s, "GET /v1/models", b"").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("127.0.0.1"), "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid file: written at start in the foreground, rewritten by an upgraded process when it
/// takes the sockets over, and removed when that process exits (the old one leaves it alone).
#[tokio::test]
async fn pid_file_follows_the_serving_process() {
    let dir = temp_dir();
    let pid_file = dir.join("sb.pid");
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    let mut old = Gateway::start(&config(&dir, None, "    - 127.0.0.1:1\n", ""));
    assert_eq!(read_pid(), Some(old.pid()));

    let mut new = old.spawn_upgrade();
    new.wait_for_stderr("No incoming socket transfer").await;
    old.signal("QUIT");
    assert!(
        wait_until(|| read_pid() == Some(new.pid()), Duration::from_secs(10)).await,
        "pid file: {:?}, new pid {}",
        read_pid(),
        new.pid()
    );
    let status = old
        .exited(Duration::from_secs(15))
        .await
        .expect("old exits");
    assert!(status.success());
    assert_eq!(
        read_pid(),
        Some(new.pid()),
        "the old process removed the new pid"
    );
    let r = new
        .post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 200);

    new.signal("TERM");
    let status = new
        .exited(Duration::from_secs(15))
        .await
        .expect("new exits");
    assert!(status.success());
    assert!(!pid_file.exists(), "pid file left behind");
    let _ = std::fs::remove_dir_all(dir);
}

/// An HTTP/2 client that grants no flow-control window stalls its stream without stalling the
/// socket; `client_write_timeout_seconds` still ends the response instead of holding it forever.
#[tokio::test]
async fn h2_client_granting_no_window_is_cut_by_the_write_timeout() {
    let dir = temp_dir();
    let events: Vec<String> = (0..200).map(|i| format!("word{i} ")).collect();
    let words: Vec<&'static str> = events
        .into_iter()
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    let up = MockUpstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&words, false),
            200,
            Duration::from_millis(20),
        )
    })
    .await;
    let yaml = config(
        &dir,
        Some(&up.base()),
        "    - address: 127.0.0.1:1\n      h2c: true\n",
        "  client_write_timeout_seconds: 1\n",
    );
    let gw = Gateway::start(&yaml);
    let tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let mut ready = client.ready().await.unwrap();
    let (resp, mut send) = ready.send_request(req, false).unwrap();
    send.send_data(chat_body("up", true).into(), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response head")
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Never release capacity: the body can only end by the gateway giving up on it.
    let mut body = resp.into_body();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.data().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stalled HTTP/2 stream was held open");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Real clients: curl and the official OpenAI Python SDK (both installed by `.ci/setup`).

/// curl with `args`, then the URL; returns (exit code, stdout, stderr). `-w` output ends stdout.
fn curl(args: &[&str], url: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is not installed: run .ci/setup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A chat completion POST for curl: headers, body, and `-w` printing "\n<version> <status>".
fn curl_chat(stream: bool) -> Vec<String> {
    [
        "-H",
        "content-type: application/json",
        "-d",
        &String::from_utf8(chat_body("m", stream)).unwrap(),
        "-w",
        "\n%{http_version} %{http_code}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Splits curl's stdout into (body, "<version> <status>").
fn curl_outcome(stdout: &str) -> (&str, &str) {
    stdout.rsplit_once('\n').expect("curl -w output")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// curl over TLS with `--cacert`: HTTP/1.1 and HTTP/2 by ALPN, a stream over HTTP/2 arrives as
/// SSE events ending in `[DONE]`, and `--http2-prior-knowledge` against an h2c listener.
#[tokio::test]
async fn curl_over_tls_http1_http2_streaming_and_h2c() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let h2c = reserve_port();
    let listeners = format!(
        "{}    - address: 127.0.0.1:{}\n      h2c: true\n",
        tls_listener(&cert, &key, ""),
        h2c.port
    );
    let gw = Gateway::start(&config(&dir, None, &listeners, ""));
    let ca = dir.join("ca.pem").display().to_string();
    let url = format!("https://127.0.0.1:{}/v1/chat/completions", gw.port);

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let mut args = vec!["--cacert", &ca, flag];
        let chat = curl_chat(false);
        args.extend(strs(&chat));
        let (code, out, err) = curl(&args, &url);
        assert_eq!(code, 0, "curl {flag}: {err}");
        let (body, status) = curl_outcome(&out);
        assert_eq!(status, format!("{version} 200"), "curl {flag}: {body}");
        assert!(body.contains("hello over tls"), "curl {flag}: {body}");
    }

    // Streaming over HTTP/2, unbuffered (-N): one SSE event per word, then [DONE].
    let mut args = vec!["--cacert", &ca, "--http2", "-N"];
    let chat = curl_chat(true);
    args.extend(strs(&chat));
    let (code, out, err) = curl(&args, &url);
    assert_eq!(code, 0, "curl streaming: {err}");
    let (body, status) = curl_outcome(&out);
    assert_eq!(status, "2 200", "{body}");
    let events = sse_data(body);
    assert!(events.len() >= 4, "{} event(s): {body}", events.len());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("a JSON chunk"))
        .collect();
    assert_eq!(stream_text(&chunks), "hello over tls", "{body}");

    // h2c with prior knowledge on the plaintext listener.
    let mut args = vec!["--http2-prior-knowledge"];
    let chat = curl_chat(false);
    args.extend(strs(&chat));
    let (code, out, err) = curl(
        &args,
        &format!("http://127.0.0.1:{}/v1/chat/completions", h2c.port),
    );
    assert_eq!(code, 0, "curl h2c: {err}");
    let (body, status) = curl_outcome(&out);
    assert_eq!(status, "2 200", "{body}");
    assert!(body.contains("hello over tls"), "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

/// curl against an mTLS listener: served with `--cert/--key` from the client CA, refused
/// without a certificate.
#[tokio::test]
async fn curl_mtls_with_and_without_a_client_certificate() {
    let dir = temp_dir();
    make_ca(&dir, "ca");
    make_ca(&dir, "clients");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let (client_cert, client_key) = make_leaf(&dir, "clients", "curl-client", 2);
    let more = format!(", client_ca_file: '{}'", dir.join("clients.pem").display());
    let gw = Gateway::start(&config(&dir, None, &tls_listener(&cert, &key, &more), ""));
    let ca = dir.join("ca.pem").display().to_string();
    let url = format!("https://127.0.0.1:{}/v1/chat/completions", gw.port);
    let chat = curl_chat(false);

    for flag in ["--http1.1", "--http2"] {
        let (client_cert, client_key) = (client_cert.display(), client_key.display());
        let (client_cert, client_key) = (client_cert.to_string(), client_key.to_string());
        let mut args = vec![
            "--cacert",
            &ca,
            flag,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
        ];
        args.extend(strs(&chat));
        let (code, out, err) = curl(&args, &url);
        assert_eq!(code, 0, "curl {flag} with a certificate: {err}");
        let (body, status) = curl_outcome(&out);
        assert!(status.ends_with(" 200"), "{status}: {body}");
        assert!(body.contains("hello over tls"), "{body}");

        let mut args = vec!["--cacert", &ca, flag];
        args.extend(strs(&chat));
        let (code, out, _) = curl(&args, &url);
        assert_ne!(
            code, 0,
            "curl {flag} without a certificate was served: {out}"
        );
        assert!(!out.contains("hello over tls"), "{out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The official OpenAI Python SDK over TLS (the CA given to httpx), on HTTP/1.1 and on HTTP/2:
/// a chat completion, a stream with usage (`stream_options.include_usage`), and embeddings.
#[tokio::test]
async fn openai_python_sdk_over_tls_http1_and_http2() {
    let python = python_with("openai, h2");
    let dir = temp_dir();
    make_ca(&dir, "ca");
    let (cert, key) = make_leaf(&dir, "ca", "localhost", 2);
    let gw = Gateway::start(&config(&dir, None, &tls_listener(&cert, &key, ""), ""));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai_sdk_client.py");
    let base_url = format!("https://127.0.0.1:{}/v1", gw.port);
    let ca = dir.join("ca.pem");

    for (version, expected) in [("http1", "HTTP/1.1"), ("http2", "HTTP/2")] {
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&base_url)
            .arg(&ca)
            .args(["m", "m", version])
            .output()
            .await
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "SDK over {version}: {stderr}{stdout}");
        let seen: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("the script's JSON");
        assert_eq!(seen["text"], "hello over tls", "{seen}");
        let deltas = seen["deltas"].as_array().unwrap();
        assert!(deltas.len() >= 3, "one delta per word: {seen}");
        let streamed: String = deltas.iter().filter_map(|d| d.as_str()).collect();
        assert_eq!(streamed, "hello over tls", "{seen}");
        let usage = &seen["usage"];
        assert!(usage["completion_tokens"].as_u64() > Some(0), "{seen}");
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(
                usage["prompt_tokens"].as_u64().unwrap()
                    + usage["completion_tokens"].as_u64().unwrap()
            ),
            "{seen}"
        );
        let embeddings = seen["embeddings"].as_array().unwrap();
        assert_eq!(embeddings.len(), 2, "{seen}");
        assert!(embeddings.iter().all(|n| n.as_u64() > Some(0)), "{seen}");
        assert_eq!(seen["http_versions"], json!([expected]), "{seen}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
