//! Gemini through the real gateway: Google AI Studio (`gemini/`, API key) and Vertex AI
//! (`vertex_ai/`, OAuth2 service-account tokens fetched from a mock token endpoint that checks
//! the JWT assertion) against mocks that speak the native generateContent / SSE / embeddings /
//! error formats.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const KEY_PEM: &str = include_str!("fixtures/vertex_test_key.pem");
const TOKEN: &str = "ya29.test-access-token";
const VERTEX_CHAT_PATH: &str =
    "/v1/projects/proj-x/locations/europe-west4/publishers/google/models/gemini-2.5-pro";

fn ai_studio_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: flash
    litellm_params:
      model: gemini/gemini-2.0-flash
      api_base: {base}/v1beta
      api_key: AIza-test-key
  - model_name: embed
    litellm_params:
      model: gemini/text-embedding-004
      api_base: {base}/v1beta
      api_key: AIza-test-key
"#
    )
}

fn service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "proj-from-key",
        "private_key_id": "kid-42",
        "private_key": KEY_PEM,
        "client_email": "gateway@proj-x.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
    .to_string()
}

/// Vertex deployments: credentials inline as a YAML (flow) mapping for chat, as a file path
/// for embeddings.
fn vertex_config(base: &str, key_file: &std::path::Path) -> String {
    let sa = service_account_json(&format!("{base}/token"));
    format!(
        r#"
model_list:
  - model_name: pro
    litellm_params:
      model: vertex_ai/gemini-2.5-pro
      api_base: {base}
      vertex_project: proj-x
      vertex_location: europe-west4
      vertex_credentials: {sa}
  - model_name: vembed
    litellm_params:
      model: vertex_ai/text-embedding-005
      api_base: {base}
      vertex_location: us-east1
      vertex_credentials: {path}
"#,
        path = key_file.display()
    )
}

fn public_key() -> Vec<u8> {
    let der = rustls_pemfile::pkcs8_private_keys(&mut KEY_PEM.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    pair.public().as_ref().to_vec()
}

/// The token endpoint's checks, as Google's would make them; `None` when the request is good.
fn check_token_request(req: &Recorded, public_key: &[u8]) -> Option<String> {
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        return Some(format!("content-type {:?}", req.header("content-type")));
    }
    let form = String::from_utf8_lossy(&req.body).into_owned();
    let mut grant = None;
    let mut assertion = None;
    for pair in form.split('&') {
        match pair.split_once('=') {
            Some(("grant_type", v)) => grant = Some(v.to_string()),
            Some(("assertion", v)) => assertion = Some(v.to_string()),
            _ => {}
        }
    }
    if grant.as_deref() != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Some(format!("grant_type {grant:?}"));
    }
    let jwt = assertion?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Some("assertion is not a JWT".into());
    }
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let header = decode(parts[0]);
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": "kid-42"}) {
        return Some(format!("header {header}"));
    }
    let claims = decode(parts[1]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let good = claims["iss"] == "gateway@proj-x.iam.gserviceaccount.com"
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["aud"] == "https://oauth2.googleapis.com/token"
        && iat.abs_diff(now) < 60
        && claims["exp"].as_u64() == Some(iat + 3600);
    if !good {
        return Some(format!("claims {claims}"));
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(signed.as_bytes(), &sig)
        .is_err()
    {
        return Some("bad signature".into());
    }
    None
}

fn gemini_response(text: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17},
        "modelVersion": "gemini-2.0-flash", "responseId": "resp-1"})
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(format!("data: {e}\r\n\r\n").as_bytes());
    }
    out
}

fn stream_body() -> Vec<u8> {
    sse(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "The weather "}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "in Paris:"}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "c"}}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 8, "thoughtsTokenCount": 2, "totalTokenCount": 30}}),
    ])
}

fn error_body(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

#[tokio::test]
async fn ai_studio_chat_translates_both_ways() {
    let up = MockUpstream::start(|req| {
        if req.header("x-goog-api-key") != Some("AIza-test-key") {
            return Reply::json(
                400,
                error_body(400, "INVALID_ARGUMENT", "API key not valid."),
            );
        }
        if req.path != "/v1beta/models/gemini-2.0-flash:generateContent" {
            return Reply::json(404, error_body(404, "NOT_FOUND", "wrong path"));
        }
        Reply::json(200, gemini_response("Bonjour!"))
    })
    .await;
    let gw = Gateway::start(&ai_studio_config(&up.base()));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "flash", "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hello"}],
                "max_tokens": 50, "temperature": 0.3, "stop": "END"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 17);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let sent = up.last().json();
    assert_eq!(
        sent,
        json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
            "systemInstruction": {"parts": [{"text": "Answer in French."}]},
            "generationConfig": {"maxOutputTokens": 50, "temperature": 0.3, "stopSequences": ["END"]}})
    );
}

#[tokio::test]
async fn ai_studio_tool_round_trip() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}]},
                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10, "totalTokenCount": 40}}),
        )
    })
    .await;
    let gw = Gateway::start(&ai_studio_config(&up.base()));
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
            "properties": {"tz": {"type": "string"}}}}}]);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "flash", "tools": tools, "tool_choice": "required",
                "messages": [{"role": "user", "content": "Weather and time in Paris?"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    let sent = up.last().json();
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
    assert!(sent["tools"][0]["functionDeclarations"][0]["parameters"]
        .get("additionalProperties")
        .is_none());

    // The client sends the calls back with results: ids map to names, results become
    // functionResponse parts in one user turn.
    let (id0, id1) = (calls[0]["id"].clone(), calls[1]["id"].clone());
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "flash", "tools": tools, "messages": [
                {"role": "user", "content": "Weather and time in Paris?"},
                v["choices"][0]["message"].clone(),
                {"role": "tool", "tool_call_id": id1, "content": "14:00"},
                {"role": "tool", "tool_call_id": id0, "content": "{\"temp\": 21}"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "14:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]})
    );
}

#[tokio::test]
async fn ai_studio_stream_text_and_function_call() {
    let body = stream_body();
    let up = MockUpstream::start(move |req| {
        if req.path != "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse" {
            return Reply::json(404, error_body(404, "NOT_FOUND", "wrong path"));
        }
        Reply::stream("text/event-stream", &body, 7, Duration::from_millis(1))
    })
    .await;
    let gw = Gateway::start(&ai_studio_config(&up.base()));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "flash", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "The weather in Paris:");
    let tool_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(tool_deltas[0]["function"]["name"], "get_weather");
    assert!(tool_deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    let args: String = tool_deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris", "unit": "c"})
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["finish_reason"], "tool_calls");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 20);
    assert_eq!(last["usage"]["completion_tokens"], 10);
    let ids: std::collections::HashSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn ai_studio_embeddings_batch_with_base64() {
    let up = MockUpstream::start(|req| {
        if req.path != "/v1beta/models/text-embedding-004:batchEmbedContents" {
            return Reply::json(404, error_body(404, "NOT_FOUND", "wrong path"));
        }
        Reply::json(
            200,
            json!({"embeddings": [{"values": [1.0, 0.5]}, {"values": [0.25, -1.0]}]}),
        )
    })
    .await;
    let gw = Gateway::start(&ai_studio_config(&up.base()));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["a", "b"], "dimensions": 2}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["data"][1]["embedding"], json!([0.25, -1.0]));
    assert_eq!(
        up.last().json(),
        json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 2},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 2}]})
    );
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": "a", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // 1.0f32 and 0.5f32, little-endian.
    assert_eq!(resp.json()["data"][0]["embedding"], "AACAPwAAAD8=");
}

#[tokio::test]
async fn ai_studio_errors_are_mapped() {
    let up = MockUpstream::start(|req| {
        let body = req.json();
        let text = body["contents"][0]["parts"][0]["text"].as_str().unwrap_or("").to_string();
        match text.as_str() {
            "rate" => Reply::json(
                429,
                error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
            )
            .with_header("retry-after", "17"),
            "long" => Reply::json(
                400,
                error_body(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
            ),
            "key" => Reply::json(
                400,
                json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
            ),
            "busy" => Reply::json(503, error_body(503, "UNAVAILABLE", "The model is overloaded.")),
            _ => Reply::bytes(200, "application/json", b"{\"candidates\": [".to_vec()),
        }
    })
    .await;
    let gw = Gateway::start(&ai_studio_config(&up.base()));
    let ask = |t: &str| json!({"model": "flash", "messages": [{"role": "user", "content": t}]});

    let resp = gw.post("/v1/chat/completions", &ask("rate")).await;
    let e = resp.expect_error(429);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("17"));

    let e = gw
        .post("/v1/chat/completions", &ask("long"))
        .await
        .expect_error(400);
    assert_eq!(e["code"], "context_length_exceeded");

    let e = gw
        .post("/v1/chat/completions", &ask("key"))
        .await
        .expect_error(401);
    assert_eq!(e["type"], "authentication_error");

    gw.post("/v1/chat/completions", &ask("busy"))
        .await
        .expect_error(503);

    let e = gw
        .post("/v1/chat/completions", &ask("garbled"))
        .await
        .expect_error(502);
    assert!(e["message"].as_str().unwrap().contains("gemini"));

    // Bad input never reaches the upstream.
    let before = up.count();
    let e = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "flash", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 2}}),
        )
        .await
        .expect_error(400);
    assert_eq!(e["param"], "logit_bias");
    assert!(e["message"].as_str().unwrap().contains("gemini"));
    let e = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "flash", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://img.test/photo"}}]}]}),
        )
        .await
        .expect_error(400);
    assert!(e["message"].as_str().unwrap().contains("media type"));
    assert_eq!(up.count(), before);
}

/// A Vertex mock: the token endpoint verifies the JWT assertion and hands out one token;
/// every model call must carry it.
async fn vertex_mock() -> MockUpstream {
    let public_key = public_key();
    MockUpstream::start(move |req| {
        if req.path == "/token" {
            return match check_token_request(req, &public_key) {
                None => Reply::json(
                    200,
                    json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
                ),
                Some(why) => Reply::json(
                    400,
                    json!({"error": "invalid_grant", "error_description": why}),
                ),
            };
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(
                401,
                error_body(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            );
        }
        let chat = format!("{VERTEX_CHAT_PATH}:generateContent");
        let stream = format!("{VERTEX_CHAT_PATH}:streamGenerateContent?alt=sse");
        let embed = "/v1/projects/proj-from-key/locations/us-east1/publishers/google/models/text-embedding-005:predict";
        if req.path == chat {
            let body = req.json();
            if body["contents"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["role"].is_string()))
            {
                Reply::json(200, gemini_response("From Vertex."))
            } else {
                Reply::json(400, error_body(400, "INVALID_ARGUMENT", "Please use a valid role: user, model."))
            }
        } else if req.path == stream {
            Reply::stream("text/event-stream", &stream_body(), 5, Duration::ZERO)
        } else if req.path == embed {
            Reply::json(
                200,
                json!({"predictions": [
                    {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 3, "truncated": false}}},
                    {"embeddings": {"values": [0.3, 0.4], "statistics": {"token_count": 4, "truncated": false}}}],
                    "metadata": {"billableCharacterCount": 10}}),
            )
        } else {
            Reply::json(404, error_body(404, "NOT_FOUND", &format!("no route {}", req.path)))
        }
    })
    .await
}

fn write_key_file(base: &str) -> std::path::PathBuf {
    let path = temp_dir().join("sa.json");
    std::fs::write(&path, service_account_json(&format!("{base}/token"))).unwrap();
    path
}

#[tokio::test]
async fn vertex_fetches_one_token_for_many_requests() {
    let up = vertex_mock().await;
    let key_file = write_key_file(&up.base());
    let gw = Gateway::start(&vertex_config(&up.base(), &key_file));
    let ask = json!({"model": "pro", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    // A burst of concurrent first requests, then more: one token fetch.
    let burst: Vec<_> = (0..6)
        .map(|_| {
            let (port, body) = (gw.port, ask.to_string());
            tokio::spawn(async move {
                request(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                )
                .await
            })
        })
        .collect();
    for handle in burst {
        let resp = handle.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(
            resp.json()["choices"][0]["message"]["content"],
            "From Vertex."
        );
    }
    for _ in 0..3 {
        let resp = gw.post("/v1/chat/completions", &ask).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let token_fetches = up.requests().iter().filter(|r| r.path == "/token").count();
    assert_eq!(token_fetches, 1, "the token is cached and shared");
    assert_eq!(
        up.last().json()["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );

    // Streaming through Vertex.
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "pro", "stream": true, "messages": [{"role": "user", "content": "Weather?"}]}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "The weather in Paris:");
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(|u| u.is_null())));

    // Embeddings via :predict; the project comes from the key file.
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "vembed", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["data"][1]["embedding"], json!([0.3, 0.4]));
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    assert_eq!(
        up.last().json(),
        json!({"instances": [{"content": "a"}, {"content": "b"}]})
    );
    assert_eq!(
        up.requests().iter().filter(|r| r.path == "/token").count(),
        2,
        "the second service account (key file) has its own token"
    );
}

#[tokio::test]
async fn vertex_rejected_credentials_are_401() {
    // The token endpoint refuses every assertion.
    let up = MockUpstream::start(|req| {
        if req.path == "/token" {
            return Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            );
        }
        Reply::json(200, gemini_response("unreachable"))
    })
    .await;
    let key_file = write_key_file(&up.base());
    let gw = Gateway::start(&vertex_config(&up.base(), &key_file));
    let e = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "pro", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await
        .expect_error(401);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("Invalid JWT Signature"));
    assert!(up.requests().iter().all(|r| r.path == "/token"));
}

/// Claude on Vertex: Anthropic's Messages format at `publishers/anthropic/...:rawPredict`, with
/// the service account's token, `anthropic_version` in the body and no `model`.
#[tokio::test]
async fn vertex_claude_raw_predict_and_stream() {
    let public_key = public_key();
    let base_path = "/v1/projects/proj-x/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929";
    let up = MockUpstream::start(move |req| {
        if req.path == "/token" {
            return match check_token_request(req, &public_key) {
                None => Reply::json(200, json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})),
                Some(why) => Reply::json(400, json!({"error": "invalid_grant", "error_description": why})),
            };
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(401, error_body(401, "UNAUTHENTICATED", "bad token"));
        }
        let body = req.json();
        if body.get("model").is_some() || body["anthropic_version"] != "vertex-2023-10-16" {
            return Reply::json(400, json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("bad body {body}")}}));
        }
        if req.path == format!("{base_path}:rawPredict") {
            let prompt = body["messages"][0]["content"].to_string();
            if prompt.contains("busy") {
                return Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
            }
            if prompt.contains("quota") {
                return Reply::json(429, error_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com"))
                    .with_header("retry-after", "9");
            }
            Reply::json(200, json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "Hi from Claude on Vertex."}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 6}}))
        } else if req.path == format!("{base_path}:streamRawPredict") {
            let events = [
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 4}}),
                json!({"type": "message_stop"}),
            ];
            let mut out = String::new();
            for ev in &events {
                out.push_str(&format!("event: {}\ndata: {ev}\n\n", ev["type"].as_str().unwrap()));
            }
            Reply::stream("text/event-stream", out.as_bytes(), 9, Duration::ZERO)
        } else {
            Reply::json(404, error_body(404, "NOT_FOUND", &format!("no route {}", req.path)))
        }
    })
    .await;
    let sa = service_account_json(&format!("{}/token", up.base()));
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: vertex_ai/claude-sonnet-4-5@20250929
      api_base: {base}
      vertex_project: proj-x
      vertex_location: us-east5
      vertex_credentials: {sa}
"#,
        base = up.base()
    ));
    let ask = |t: &str| json!({"model": "claude", "messages": [{"role": "user", "content": t}]});
    let resp = gw.post("/v1/chat/completions", &ask("hello")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hi from Claude on Vertex."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 16);

    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(stream_text(&openai_chunks(&resp)), "Hello there");

    // Anthropic's overloaded error and Google's quota error are both understood.
    gw.post("/v1/chat/completions", &ask("busy"))
        .await
        .expect_error(503);
    let resp = gw.post("/v1/chat/completions", &ask("quota")).await;
    assert_eq!(resp.expect_error(429)["code"], "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("9"));

    assert_eq!(
        up.requests().iter().filter(|r| r.path == "/token").count(),
        1
    );
}
