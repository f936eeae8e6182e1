//! The real client address through the gateway binary: forwarding headers believed only from
//! `switchboard.trusted_proxies`, PROXY protocol v1/v2 over raw TCP (and malformed, oversized,
//! late or untrusted headers refused without a hang), `general_settings.allowed_ips` (other
//! clients simulated with forwarded addresses from a trusted peer: the tests' peer is always
//! 127.0.0.1), and CORS preflights and headers on answers and streams.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

/// Starts the gateway with `extra` top-level sections and these extra `switchboard:` settings.
fn start(extra: &str, settings: &str) -> Gateway {
    start_with_env(extra, settings, &[])
}

fn start_with_env(extra: &str, settings: &str, env: &[(&str, &str)]) -> Gateway {
    let d = temp_dir();
    Gateway::start_with_env(
        &format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o, mock_response: \"Hi from the mock\"}}\n{extra}\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n{settings}",
            d = d.display()
        ),
        env,
    )
}

fn chat() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat_from(gw: &Gateway, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    gw.post_with("/v1/chat/completions", &all, chat().to_string().as_bytes())
        .await
}

const MODELS_CLOSE: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn v2_header(command: u8, family: u8, addr: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(addr.len() as u16).to_be_bytes());
    h.extend_from_slice(addr);
    h
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // 127.0.0.1 (the tests' peer) is a trusted proxy: the client is the rightmost untrusted hop.
    let gw = start(
        "general_settings:\n  allowed_ips: [\"198.51.100.7\", \"203.0.113.0/24\"]\n",
        "  trusted_proxies: [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
    );
    let ok = chat_from(
        &gw,
        &[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3"),
            ("x-request-id", "xff-allowed"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let line = gw
        .wait_for_log_line(|l| l["request_id"] == "xff-allowed")
        .await;
    assert_eq!(line["client_addr"], "198.51.100.7");

    // A block in allowed_ips; a port on the hop.
    let ok = chat_from(&gw, &[("x-forwarded-for", "203.0.113.99:4444")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // A client that spoofs an allowed address on the left is still itself.
    let refused = chat_from(&gw, &[("x-forwarded-for", "198.51.100.7, 192.0.2.1")]).await;
    let err = refused.expect_error(403);
    assert_eq!(
        err["message"].as_str().unwrap().split(". ").next().unwrap(),
        "Access forbidden: IP address 192.0.2.1 not allowed"
    );
    // The peer itself is not allowed.
    chat_from(&gw, &[]).await.expect_error(403);
    // Probes are open whatever the address (LiteLLM's health routes need no auth).
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
    assert_eq!(gw.get("/health/readiness", &[]).await.status, 200);
    // Models need the address too.
    assert_eq!(gw.get("/v1/models", &[]).await.status, 403);
    assert_eq!(
        gw.get("/v1/models", &[("x-forwarded-for", "198.51.100.7")])
            .await
            .status,
        200
    );

    // The same request from an untrusted peer: the header is ignored, the peer is the client.
    let untrusted = start(
        "general_settings:\n  allowed_ips: [\"198.51.100.7\"]\n",
        "  trusted_proxies: [\"10.0.0.0/8\"]\n",
    );
    let refused = chat_from(
        &untrusted,
        &[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-request-id", "xff-untrusted"),
        ],
    )
    .await;
    let err = refused.expect_error(403);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("IP address 127.0.0.1 not allowed"));
    let line = untrusted
        .wait_for_log_line(|l| l["request_id"] == "xff-untrusted")
        .await;
    assert_eq!(line["client_addr"], "127.0.0.1");
}

#[tokio::test]
async fn rfc7239_forwarded_header() {
    let gw = start(
        "general_settings:\n  allowed_ips: [\"2001:db8:cafe::17\"]\n",
        "  trusted_proxies: [\"127.0.0.1\"]\n  forwarded_header: forwarded\n",
    );
    let ok = chat_from(
        &gw,
        &[(
            "forwarded",
            "for=192.0.2.1, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Only the configured header is read: X-Forwarded-For is ignored here.
    chat_from(&gw, &[("x-forwarded-for", "2001:db8:cafe::17")])
        .await
        .expect_error(403);
    // An obfuscated or unknown hop ends the walk at the trusted peer.
    chat_from(&gw, &[("forwarded", "for=unknown")])
        .await
        .expect_error(403);
}

#[tokio::test]
async fn litellm_use_x_forwarded_for_with_trusted_ranges() {
    let gw = start(
        "general_settings:\n  allowed_ips: [\"198.51.100.7\"]\n  use_x_forwarded_for: true\n  mcp_trusted_proxy_ranges: [\"127.0.0.0/8\"]\n",
        "",
    );
    let ok = chat_from(&gw, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    chat_from(&gw, &[("x-forwarded-for", "192.0.2.1")])
        .await
        .expect_error(403);
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_set_the_client_address() {
    let gw = start(
        "general_settings:\n  allowed_ips: [\"198.51.100.7\", \"2001:db8::7\", \"203.0.113.5\"]\n",
        "  trusted_proxies: [\"127.0.0.1\"]\n  proxy_protocol: true\n",
    );
    let quiet = Duration::from_secs(10);

    let mut v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 4000\r\n".to_vec();
    v1.extend_from_slice(MODELS_CLOSE);
    let ex = raw_exchange(gw.port, &v1, quiet).await;
    assert_eq!(ex.statuses(), vec![200], "{}", ex.text());

    // v2, IPv6, sent with the request in one write.
    let mut addr = Vec::new();
    addr.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addr.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    addr.extend_from_slice(&[0x15, 0xb3, 0x0f, 0xa0]);
    let mut v2 = v2_header(1, 0x21, &addr);
    v2.extend_from_slice(MODELS_CLOSE);
    let ex = raw_exchange(gw.port, &v2, quiet).await;
    assert_eq!(ex.statuses(), vec![200], "{}", ex.text());

    // v2 IPv4 with the header and the request split across writes.
    let mut conn = Conn::connect(gw.port).await;
    let v2 = v2_header(
        1,
        0x11,
        &[203, 0, 113, 5, 10, 0, 0, 1, 0x15, 0xb3, 0x0f, 0xa0],
    );
    conn.send_raw(&v2[..5]).await;
    tokio::time::sleep(Duration::from_millis(20)).await; // let the gateway see a partial header
    conn.send_raw(&v2[5..]).await;
    let body = chat().to_string();
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "pp-v2"),
        ],
        body.as_bytes(),
    )
    .await;
    let mut resp = conn.read_streaming().await;
    assert_eq!(resp.status, 200);
    resp.read_to_end().await;
    let line = gw.wait_for_log_line(|l| l["request_id"] == "pp-v2").await;
    assert_eq!(line["client_addr"], "203.0.113.5");

    // The address is the header's, not the peer's: another source is refused.
    let mut other = b"PROXY TCP4 198.51.100.9 10.0.0.1 5555 4000\r\n".to_vec();
    other.extend_from_slice(MODELS_CLOSE);
    let ex = raw_exchange(gw.port, &other, quiet).await;
    assert_eq!(ex.statuses(), vec![403], "{}", ex.text());
    assert!(ex.text().contains("198.51.100.9"));

    // LOCAL (a load balancer's own health check) and UNKNOWN keep the peer: 127.0.0.1.
    let mut local = v2_header(0, 0x00, &[]);
    local.extend_from_slice(MODELS_CLOSE);
    let ex = raw_exchange(gw.port, &local, quiet).await;
    assert_eq!(ex.statuses(), vec![403], "{}", ex.text());
    assert!(ex.text().contains("127.0.0.1"));
    let mut unknown = b"PROXY UNKNOWN\r\n".to_vec();
    unknown.extend_from_slice(
        b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let ex = raw_exchange(gw.port, &unknown, quiet).await;
    assert_eq!(ex.statuses(), vec![200], "{}", ex.text());

    // No header at all: a plain connection, served with its peer address.
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
    assert_eq!(gw.get("/v1/models", &[]).await.status, 403);
}

#[tokio::test]
async fn bad_proxy_headers_are_refused_without_a_hang() {
    let gw = start(
        "",
        "  trusted_proxies: [\"127.0.0.1\"]\n  proxy_protocol: true\n  request_header_timeout_seconds: 1\n",
    );
    let limit = Duration::from_secs(10);
    let mut oversized_v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    oversized_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "malformed v1",
            b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "v1 over 107 bytes",
            format!("PROXY TCP4 {}", "1".repeat(300)).into_bytes(),
        ),
        ("v2 length over the limit", oversized_v2),
        ("v2 bad version", {
            let mut h = v2_header(1, 0x11, &[0; 12]);
            h[12] = 0x31;
            h
        }),
        // Stops mid-header: closed at the header timeout, not held open.
        ("truncated v1", b"PROXY TCP4 198.51.100.7".to_vec()),
        ("truncated v2", v2_header(1, 0x11, &[0; 12])[..20].to_vec()),
    ];
    for (what, bytes) in cases {
        let started = Instant::now();
        let ex = raw_exchange(gw.port, &bytes, limit).await;
        assert!(ex.closed, "{what}: connection left open");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(ex.statuses().is_empty(), "{what}: {}", ex.text());
    }
    // The gateway is still serving.
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);

    // From a peer outside trusted_proxies a PROXY header is refused at once; plain requests
    // from it are served.
    let untrusted = start(
        "",
        "  trusted_proxies: [\"10.0.0.0/8\"]\n  proxy_protocol: true\n",
    );
    let mut spoof = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 4000\r\n".to_vec();
    spoof.extend_from_slice(MODELS_CLOSE);
    let started = Instant::now();
    let ex = raw_exchange(untrusted.port, &spoof, limit).await;
    assert!(ex.closed && ex.statuses().is_empty(), "{}", ex.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    untrusted
        .wait_for_stderr("not in switchboard.trusted_proxies")
        .await;
    assert_eq!(untrusted.get("/v1/models", &[]).await.status, 200);
}

#[tokio::test]
async fn cors_preflight_and_headers_on_answers_and_streams() {
    // LiteLLM's defaults: any origin, no credentials.
    let gw = start("", "");
    let preflight = b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n";
    let ex = raw_exchange(gw.port, preflight, Duration::from_secs(10)).await;
    let text = ex.text().to_ascii_lowercase();
    assert_eq!(ex.statuses(), vec![204], "{text}");
    assert!(
        text.contains("access-control-allow-origin: *\r\n"),
        "{text}"
    );
    assert!(text.contains("access-control-allow-methods: "), "{text}");
    assert!(
        text.contains("access-control-allow-headers: authorization, content-type\r\n"),
        "{text}"
    );
    assert!(!text.contains("access-control-allow-credentials"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");

    // A stream carries the header on its head.
    let mut conn = Conn::connect(gw.port).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("origin", "https://app.example.com"),
        ],
        body.as_bytes(),
    )
    .await;
    let mut stream = conn.read_streaming().await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    let all = String::from_utf8(stream.read_to_end().await).unwrap();
    assert!(all.contains("[DONE]"));
    // Errors too; and nothing without an Origin.
    let err = gw
        .post_with(
            "/v1/chat/completions",
            &[("origin", "https://app.example.com")],
            b"{",
        )
        .await;
    assert_eq!(err.status, 400);
    assert_eq!(err.header("access-control-allow-origin"), Some("*"));
    let plain = chat_from(&gw, &[]).await;
    assert_eq!(plain.header("access-control-allow-origin"), None);

    // Listed origins with credentials, from the config; the env variable wins over it.
    let listed = start_with_env(
        "general_settings:\n  master_key: sk-test\n  cors_allow_origins: [\"https://config.example.com\"]\n  cors_allow_credentials: true\n",
        "",
        &[("LITELLM_CORS_ALLOW_ORIGINS", "https://app.example.com, https://b.example.com")],
    );
    let ok = chat_from(
        &listed,
        &[
            ("origin", "https://app.example.com"),
            ("authorization", "Bearer sk-test"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("vary"), Some("Origin"));
    // The preflight needs no key (browsers send none).
    let ex = raw_exchange(listed.port, preflight, Duration::from_secs(10)).await;
    assert_eq!(ex.statuses(), vec![204], "{}", ex.text());
    let other = chat_from(
        &listed,
        &[
            ("origin", "https://config.example.com"),
            ("authorization", "Bearer sk-test"),
        ],
    )
    .await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    let refused = raw_exchange(
        listed.port,
        b"OPTIONS /v1/models HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(refused.statuses(), vec![400], "{}", refused.text());
    assert!(refused.text().contains("cors_allow_origins"));
    assert!(!refused
        .text()
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));
}
