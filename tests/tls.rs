//! HTTPS upstreams: certificates are verified against the system trust store (which
//! `SSL_CERT_FILE` replaces), hostnames are resolved asynchronously, and an untrusted certificate
//! is a 502, never a silent downgrade.

mod support;

use serde_json::json;
use std::path::Path;
use std::process::Command;
use support::*;

/// A throwaway CA and a leaf certificate for `localhost` / 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
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
        "/CN=Switchboard Test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
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
