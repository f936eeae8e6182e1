//! HTTPS upstreams: certificates are verified against the system trust store (which
//! `SSL_CERT_FILE` replaces), hostnames are resolved asynchronously, and an untrusted certificate
//! is a 502, never a silent downgrade.

#[path = "support/certs.rs"]
mod certs;
mod support;

use certs::{make_ca, make_leaf};
use serde_json::json;
use std::path::Path;
use support::*;

/// A throwaway CA (`ca.pem`) and a leaf for `localhost` / 127.0.0.1 (`leaf.pem`, `leaf.key`).
fn make_certs(dir: &Path) {
    make_ca(dir, "ca");
    make_leaf(dir, "ca", "leaf", 2);
}

fn config(port: u16) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: 'https://localhost:{port}/v1', api_key: k}}\n"
    )
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_trust_store() {
    let dir = temp_dir();
    make_certs(&dir);
    let up = MockUpstream::start_tls(&dir.join("leaf.pem"), &dir.join("leaf.key"), |_| {
        Reply::json(200, openai::completion("over TLS"))
    })
    .await;
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});

    // Trusting our test CA (SSL_CERT_FILE replaces the system store): the call goes through.
    let ca = dir.join("ca.pem");
    let gw = Gateway::start_with_env(&config(up.port), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let resp = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "over TLS");
    assert_eq!(
        up.last().header("host"),
        Some(format!("localhost:{}", up.port).as_str())
    );
    drop(gw);

    // With the system store only, the self-made CA is not trusted: 502, and nothing was sent.
    let before = up.count();
    let gw = Gateway::start(&config(up.port));
    let e = gw
        .post("/v1/chat/completions", &req)
        .await
        .expect_error(502);
    assert!(e["message"].as_str().unwrap().contains("connect"), "{e}");
    assert_eq!(
        up.count(),
        before,
        "no request may reach an unverified upstream"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An HTTP/2-only TLS upstream (ALPN `h2`), as the big providers' edges negotiate.
async fn start_h2_upstream(
    dir: &Path,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Vec<u8>)>>>,
) {
    use pingora_core::tls::{
        install_default_crypto_provider, load_certs_and_key_files, ServerConfig, TlsAcceptor,
    };
    install_default_crypto_provider();
    let (certs, key) = load_certs_and_key_files(
        dir.join("leaf.pem").to_str().unwrap(),
        dir.join("leaf.key").to_str().unwrap(),
    )
    .unwrap()
    .unwrap();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let (parts, mut body) = req.into_parts();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        let authority = parts
                            .uri
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        let auth = parts
                            .headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let streaming = String::from_utf8_lossy(&bytes).contains("\"stream\":true");
                        seen.lock().unwrap().push((
                            parts.uri.path().to_string(),
                            authority,
                            auth,
                            bytes,
                        ));
                        let ct = if streaming {
                            "text/event-stream"
                        } else {
                            "application/json"
                        };
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", ct)
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(resp, false).unwrap();
                        if streaming {
                            let body = openai::sse(&["over", " h2"], true);
                            for piece in body.chunks(17) {
                                send.send_data(bytes::Bytes::copy_from_slice(piece), false)
                                    .unwrap();
                            }
                            send.send_data(bytes::Bytes::new(), true).unwrap();
                        } else {
                            let body = openai::completion("over h2").to_string();
                            send.send_data(bytes::Bytes::from(body), true).unwrap();
                        }
                    });
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn https_upstream_over_http2() {
    let dir = temp_dir();
    make_certs(&dir);
    let (port, seen) = start_h2_upstream(&dir).await;
    let ca = dir.join("ca.pem");
    let gw = Gateway::start_with_env(&config(port), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);

    // Several requests, so pooled h2 connections are reused (multiplexed streams).
    for _ in 0..3 {
        let resp = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["choices"][0]["message"]["content"], "over h2");
    }
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "over h2");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (path, authority, auth, body) in &seen {
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(authority, &format!("localhost:{port}"));
        assert_eq!(auth, "Bearer k");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["model"], "gpt-4o");
    }
    let _ = std::fs::remove_dir_all(dir);
}
