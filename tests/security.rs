//! Security regressions through the running gateway, over raw TCP where a normal client would
//! not send the request: no way past the master key through path spellings or methods, and no
//! request smuggling (ambiguous framing is refused with 400 and a closed connection, never
//! forwarded upstream).

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const KEY: &str = "sk-gateway-secret";

/// A gateway with a master key in front of one upstream that records what reaches it, with
/// `/metrics` behind the key too.
async fn guarded() -> (MockUpstream, Gateway) {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("leaked"))).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}/v1\", api_key: sk-up}}\n  - model_name: e\n    litellm_params: {{model: openai/text-embedding-3-small, api_base: \"{}/v1\", api_key: sk-up}}\ngeneral_settings:\n  master_key: {KEY}\nlitellm_settings:\n  require_auth_for_metrics_endpoint: true\n",
        up.base(),
        up.base()
    ));
    (up, gw)
}

fn chat_body() -> String {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// A raw request with a JSON body and `Connection: close`, without any credentials.
fn unauthenticated(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const QUIET: Duration = Duration::from_secs(10);

#[tokio::test]
async fn no_path_spelling_gets_past_the_master_key() {
    let (up, gw) = guarded().await;
    // The canonical route with the key reaches the upstream: the setup can leak if auth fails.
    let ok = gw
        .post_with(
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {KEY}")),
            ],
            chat_body().as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(up.count(), 1);

    let body = chat_body();
    let embed = json!({"model": "e", "input": "hi"}).to_string();
    let cases: Vec<(&str, &str)> = vec![
        ("/v1/chat/completions", &body),
        ("/chat/completions", &body),
        ("//v1/chat/completions", &body),
        ("/v1//chat/completions", &body),
        ("/v1/chat/completions/", &body),
        ("/v1/chat/completions?x=1", &body),
        ("/v1/chat/completions#frag", &body),
        ("/v1/chat/completions;x", &body),
        ("/v1/chat%2Fcompletions", &body),
        ("/v1/chat%2fcompletions", &body),
        ("%2Fv1%2Fchat%2Fcompletions", &body),
        ("/v1%2Fchat/completions", &body),
        ("/v1/chat/completion%73", &body),
        ("/V1/Chat/Completions", &body),
        ("/V1/CHAT/COMPLETIONS", &body),
        ("/v1/../v1/chat/completions", &body),
        ("/v1/./chat/completions", &body),
        ("/./v1/chat/completions", &body),
        ("/health/../v1/chat/completions", &body),
        ("/health/liveliness/../../v1/chat/completions", &body),
        ("/metrics/../v1/chat/completions", &body),
        ("/v1/chat/completions%00", &body),
        ("/v1/chat/completions%20", &body),
        ("http://127.0.0.1/v1/chat/completions", &body),
        ("/v1/embeddings", &embed),
        ("/v1/embeddings/", &embed),
        ("/V1/EMBEDDINGS", &embed),
        ("/v1/./embeddings", &embed),
    ];
    for (target, body) in &cases {
        let r = raw_exchange(gw.port, &unauthenticated("POST", target, body), QUIET).await;
        let statuses = r.statuses();
        assert_eq!(statuses.len(), 1, "{target}: {}", r.text());
        assert!(
            [400, 401, 404].contains(&statuses[0]),
            "{target} answered {}: {}",
            statuses[0],
            r.text()
        );
        if statuses[0] != 400 {
            // The gateway's own answer: an OpenAI error object. (A 400 for a request line
            // Pingora cannot parse comes from Pingora, before the gateway sees it.)
            let e: serde_json::Value = serde_json::from_str(&r.first_body())
                .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {}", r.text()));
            assert!(e["error"]["message"].is_string(), "{target}: {e}");
        }
    }
    // Model listing behind the key too, however spelled.
    for target in [
        "/v1/models",
        "/models",
        "/v1/models/",
        "/v1/models/m",
        "//v1/models",
        "/V1/MODELS",
        "/v1/./models",
    ] {
        let r = raw_exchange(gw.port, &unauthenticated("GET", target, ""), QUIET).await;
        let statuses = r.statuses();
        assert!(
            statuses.len() == 1 && [400, 401, 404].contains(&statuses[0]),
            "{target}: {}",
            r.text()
        );
    }
    // And /metrics, which this config puts behind the key.
    for target in [
        "/metrics",
        "/metrics/",
        "//metrics",
        "/METRICS",
        "/./metrics",
        "/v1/metrics",
        "/metrics%2F",
        "/health/../metrics",
    ] {
        let r = raw_exchange(gw.port, &unauthenticated("GET", target, ""), QUIET).await;
        let statuses = r.statuses();
        assert!(
            statuses.len() == 1 && [400, 401, 404].contains(&statuses[0]),
            "{target}: {}",
            r.text()
        );
        assert!(!r.text().contains("litellm_"), "{target} leaked metrics");
    }
    assert_eq!(up.count(), 1, "a request got through without the key");
}

#[tokio::test]
async fn no_method_gets_past_the_master_key() {
    let (up, gw) = guarded().await;
    let body = chat_body();
    for method in [
        "HEAD", "OPTIONS", "GET", "PUT", "PATCH", "DELETE", "post", "Post", "TRACE", "CONNECT",
        "PROPFIND", "POSTX",
    ] {
        let r = raw_exchange(
            gw.port,
            &unauthenticated(method, "/v1/chat/completions", &body),
            QUIET,
        )
        .await;
        let statuses = r.statuses();
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| [400, 401, 405].contains(s)),
            "{method}: {}",
            r.text()
        );
        // Pingora answers CONNECT itself (405, no body); the gateway answers the rest.
        if method != "HEAD" && statuses[0] != 400 && !r.text().contains("Server: Pingora") {
            let e: serde_json::Value = serde_json::from_str(&r.first_body())
                .unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {}", r.text()));
            assert!(e["error"]["message"].is_string(), "{method}: {e}");
        }
    }
    // A wrong key or a key in the wrong place is no better than none.
    for auth in [
        "Authorization: Bearer sk-gateway-secreT",
        "Authorization: Bearer sk-gateway-secret-and-more",
        "Authorization: Bearer sk-gateway-secre",
        "Authorization: Basic c2stZ2F0ZXdheS1zZWNyZXQ6",
        "Authorization: Bearer",
        "X-Api-Key: ",
        // (`api-key`, `x-goog-api-key`, `x-litellm-api-key` do carry keys, as in LiteLLM.)
        "X-Key: sk-gateway-secret",
        "Api-Key: sk-gateway-secreT",
    ] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = raw_exchange(gw.port, req.as_bytes(), QUIET).await;
        assert_eq!(r.statuses(), [401], "{auth}: {}", r.text());
    }
    assert_eq!(up.count(), 0, "a request got through without the key");
}

/// A valid chat request body in chunked encoding, as one chunk.
fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// Sends `head` (ending in the blank line) and `body` with the right key, followed by a second,
/// pipelined request that would be answered if the connection stayed open. Asserts exactly one
/// response, a 400, then the connection closed, and nothing forwarded upstream.
async fn assert_refused(gw: &Gateway, up: &MockUpstream, what: &str, head: &str, body: &str) {
    let follow_up =
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    let r = raw_exchange(
        gw.port,
        format!("{head}{body}{follow_up}").as_bytes(),
        QUIET,
    )
    .await;
    assert_eq!(r.statuses(), [400], "{what}: {}", r.text());
    assert!(r.closed, "{what}: the connection stayed open");
    assert_eq!(up.count(), 0, "{what}: forwarded upstream");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (up, gw) = guarded().await;
    let body = chat_body();
    let auth = format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n");
    let chunked_body = chunked(&body);

    // The same request framed well is served (so a refusal below is about framing alone), both
    // with Content-Length and chunked, and the connection stays usable.
    for (framing, payload) in [
        (format!("Content-Length: {}", body.len()), body.clone()),
        (
            "Transfer-Encoding: chunked".to_string(),
            chunked_body.clone(),
        ),
    ] {
        let head =
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}{framing}\r\n\r\n");
        assert_eq!(
            served_then_reused(&gw, &format!("{head}{payload}")).await,
            200,
            "{framing}"
        );
    }
    assert_eq!(up.count(), 2);
    up.requests.lock().unwrap().clear();

    let cases = [
        // Content-Length and Transfer-Encoding together (CL.TE / TE.CL smuggling).
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                chunked_body.len()
            ),
            chunked_body.clone(),
        ),
        (
            "Transfer-Encoding before a short Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n".to_string(),
            chunked_body.clone(),
        ),
        (
            "Content-Length with Transfer-Encoding in odd case",
            format!(
                "content-LENGTH: {}\r\ntransfer-encoding: CHUNKED\r\n",
                chunked_body.len()
            ),
            chunked_body.clone(),
        ),
        // Conflicting Content-Lengths.
        (
            "two different Content-Lengths",
            format!(
                "Content-Length: {}\r\nContent-Length: {}\r\n",
                body.len(),
                body.len() + 1
            ),
            body.clone(),
        ),
        (
            "a Content-Length list that disagrees",
            format!("Content-Length: {}, {}\r\n", body.len(), body.len() - 1),
            body.clone(),
        ),
        (
            "a signed Content-Length",
            format!("Content-Length: +{}\r\n", body.len()),
            body.clone(),
        ),
        // A final encoding other than chunked: the body length would be unknowable.
        (
            "Transfer-Encoding: chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n".to_string(),
            chunked_body.clone(),
        ),
        (
            "Transfer-Encoding: identity",
            "Transfer-Encoding: identity\r\n".to_string(),
            chunked_body.clone(),
        ),
        (
            "two Transfer-Encoding lines, chunked first",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n".to_string(),
            chunked_body.clone(),
        ),
        // Whitespace games with the header name.
        (
            "whitespace before the colon",
            "Transfer-Encoding : chunked\r\n".to_string(),
            chunked_body.clone(),
        ),
        // obs-fold: a header continued on the next line.
        (
            "an obs-folded header",
            format!("Content-Length: {}\r\nX-Folded: a\r\n b\r\n", body.len()),
            body.clone(),
        ),
        (
            "an obs-folded Transfer-Encoding",
            "Transfer-Encoding:\r\n chunked\r\n".to_string(),
            chunked_body.clone(),
        ),
    ];
    for (what, framing, payload) in &cases {
        let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}{framing}\r\n");
        assert_refused(&gw, &up, what, &head, payload).await;
    }
    // HTTP/1.0 cannot use Transfer-Encoding at all.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    );
    assert_refused(
        &gw,
        &up,
        "HTTP/1.0 with Transfer-Encoding",
        &head,
        &chunked_body,
    )
    .await;

    // The gateway's own refusal (Content-Length with Transfer-Encoding) is an OpenAI error.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let r = raw_exchange(gw.port, format!("{head}{chunked_body}").as_bytes(), QUIET).await;
    let e: serde_json::Value = serde_json::from_str(&r.first_body()).unwrap();
    assert_eq!(e["error"]["code"], "ambiguous_framing", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Length and Transfer-Encoding"),
        "{e}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn identical_duplicate_content_lengths_frame_one_body() {
    // RFC 9110 §8.6 lets a recipient accept identical duplicates as one value (Pingora does);
    // what matters is that the body is read once and the next request on the connection starts
    // right after it.
    let (up, gw) = guarded().await;
    let body = chat_body();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}",
        n = body.len()
    );
    assert_eq!(served_then_reused(&gw, &req).await, 200);
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().json()["messages"][0]["content"], "hi");
}

/// Sends `request` on a new connection, reads its response, then sends a second request on the
/// same connection and checks it is answered from where the first body ended (a 200 for the
/// model list). Returns the first response's status.
async fn served_then_reused(gw: &Gateway, request: &str) -> u16 {
    let mut conn = Conn::connect(gw.port).await;
    conn.send_raw(request.as_bytes()).await;
    let first = conn.read_streaming().await.into_response_and_conn().await;
    let (next, _) = first
        .1
        .send(
            "GET",
            "/v1/models",
            &[("authorization", &format!("Bearer {KEY}"))],
            b"",
        )
        .await;
    assert_eq!(next.status, 200, "after {request:?}: {}", next.text());
    assert_eq!(next.json()["object"], "list", "{}", next.text());
    first.0.status
}
