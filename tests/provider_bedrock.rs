//! The `bedrock/` provider end to end: the real gateway against a mock Bedrock runtime that
//! checks every request's SigV4 signature with its own minimal implementation (403
//! InvalidSignatureException when it does not match, as AWS does), answers Converse in JSON and
//! ConverseStream in AWS event-stream frames, and serves InvokeModel embeddings.

mod support;

use ring::{digest, hmac};
use serde_json::json;
use std::time::Duration;
use support::*;
use switchboard::codec::eventstream::{encode_event, encode_exception};

const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const WIRE_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn config(base: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/{MODEL_ID}
      api_base: {base}
      aws_access_key_id: {ACCESS_KEY}
      aws_secret_access_key: {SECRET}
      aws_region_name: us-west-2
{extra}
  - model_name: titan
    litellm_params:
      model: bedrock/amazon.titan-embed-text-v2:0
      aws_bedrock_runtime_endpoint: {base}
      aws_access_key_id: {ACCESS_KEY}
      aws_secret_access_key: {SECRET}
      aws_region_name: us-west-2
"#
    )
}

// ---------------------------------------------------------------------------------------------
// An independent SigV4 verifier (AWS's documented algorithm, written out again here).

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Recomputes the signature of a received request; `Err` says what is wrong.
fn verify_sigv4(req: &Recorded, secret: &str, region: &str) -> Result<(), String> {
    let auth = req
        .header("authorization")
        .ok_or("no Authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(", ") {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != ACCESS_KEY || scope[2] != region || scope[3] != "bedrock" {
        return Err(format!("bad credential scope {credential}"));
    }
    let amz_date = req.header("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(scope[1]) {
        return Err("x-amz-date does not match the scope date".into());
    }
    let body_hash = hex(digest::digest(&digest::SHA256, &req.body).as_ref());
    if req.header("x-amz-content-sha256") != Some(body_hash.as_str()) {
        return Err("x-amz-content-sha256 is not the hash of the body received".into());
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date", "x-amz-content-sha256", "content-type"] {
        if !names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    if req.header("x-amz-security-token").is_some() && !names.contains(&"x-amz-security-token") {
        return Err("x-amz-security-token is sent but not signed".into());
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    assert!(query.is_empty());
    let canonical_uri = path
        .split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/");
    let mut creq = format!("{}\n{canonical_uri}\n\n", req.method);
    for name in &names {
        let value = req
            .header(name)
            .ok_or_else(|| format!("signed header {name} missing"))?;
        creq.push_str(&format!("{name}:{}\n", value.trim()));
    }
    creq.push_str(&format!("\n{signed_headers}\n{body_hash}"));
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        scope[1],
        scope[2],
        scope[3],
        hex(digest::digest(&digest::SHA256, creq.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [scope[1], scope[2], scope[3], "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let expected =
        hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), sts.as_bytes()).as_ref());
    if expected != signature {
        return Err(format!(
            "signature mismatch; canonical request was:\n{creq}"
        ));
    }
    Ok(())
}

fn invalid_signature() -> Reply {
    Reply::json(
        403,
        json!({"message": "The request signature we calculated does not match the signature you provided."}),
    )
    .with_header(
        "x-amzn-ErrorType",
        "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/",
    )
}

/// A mock Bedrock runtime: verifies the signature, then lets `answer` reply.
async fn bedrock_mock(answer: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> MockUpstream {
    MockUpstream::start(move |req| match verify_sigv4(req, SECRET, "us-west-2") {
        Ok(()) => answer(req),
        Err(why) => {
            eprintln!("mock bedrock: {why}");
            invalid_signature()
        }
    })
    .await
}

fn converse_text(text: &str) -> serde_json::Value {
    json!({
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
        "metrics": {"latencyMs": 321}
    })
}

fn chat(stream: bool) -> serde_json::Value {
    json!({
        "model": "claude",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        "max_tokens": 64,
        "stream": stream,
        "stream_options": {"include_usage": true}
    })
}

#[tokio::test]
async fn converse_is_signed_translated_and_answered() {
    let up = bedrock_mock(|_| Reply::json(200, converse_text("Hi there"))).await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let mut body = chat(false);
    body.as_object_mut().unwrap().remove("stream_options");
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], 17);
    let sent = up.last();
    assert_eq!(sent.path, format!("/model/{WIRE_MODEL}/converse"));
    assert!(sent.header("x-amz-security-token").is_none());
    let sent = sent.json();
    assert_eq!(sent["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"text": "hello"}]}])
    );
    assert_eq!(sent["inferenceConfig"], json!({"maxTokens": 64}));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_verifier_and_maps_to_401() {
    let up = bedrock_mock(|_| Reply::json(200, converse_text("never"))).await;
    let cfg = config(&up.base(), "").replacen(SECRET, "not-the-secret", 1);
    let gw = Gateway::start(&cfg);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let err = resp.expect_error(401);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("InvalidSignatureException"));
}

#[tokio::test]
async fn session_token_is_sent_and_signed() {
    let up = bedrock_mock(|_| Reply::json(200, converse_text("ok"))).await;
    let gw = Gateway::start(&config(
        &up.base(),
        "      aws_session_token: FwoGZXIvYXdzEXAMPLE/token+=\n      max_tokens: 99",
    ));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some("FwoGZXIvYXdzEXAMPLE/token+=")
    );
    assert!(sent
        .header("authorization")
        .unwrap()
        .contains("x-amz-security-token"));
    // litellm_params.max_tokens is the default output cap.
    assert_eq!(sent.json()["inferenceConfig"]["maxTokens"], 99);
}

#[tokio::test]
async fn api_key_is_sent_as_bearer_instead_of_signing() {
    let up = MockUpstream::start(|_| Reply::json(200, converse_text("ok"))).await;
    let cfg = format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/{MODEL_ID}
      api_base: {}
      api_key: bedrock-api-key-123
      aws_region_name: us-east-1
"#,
        up.base()
    );
    let gw = Gateway::start(&cfg);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer bedrock-api-key-123")
    );
    assert!(sent.header("x-amz-date").is_none());
}

fn stream_events() -> Vec<u8> {
    let mut out = Vec::new();
    encode_event(
        "messageStart",
        br#"{"p":"abc","role":"assistant"}"#,
        &mut out,
    );
    encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"Checking "}}"#,
        &mut out,
    );
    encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"the weather."}}"#,
        &mut out,
    );
    encode_event("contentBlockStop", br#"{"contentBlockIndex":0}"#, &mut out);
    encode_event(
        "contentBlockStart",
        br#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_X1","name":"get_weather"}}}"#,
        &mut out,
    );
    encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
        &mut out,
    );
    encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
        &mut out,
    );
    encode_event("contentBlockStop", br#"{"contentBlockIndex":1}"#, &mut out);
    encode_event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut out);
    encode_event(
        "metadata",
        br#"{"usage":{"inputTokens":20,"outputTokens":9,"totalTokens":29},"metrics":{"latencyMs":50},"p":"xy"}"#,
        &mut out,
    );
    out
}

#[tokio::test]
async fn converse_stream_eventstream_becomes_openai_chunks() {
    let frames = stream_events();
    let up = bedrock_mock(move |_| {
        Reply::stream(
            "application/vnd.amazon.eventstream",
            &frames,
            7,
            Duration::from_millis(1),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let mut body = chat(true);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let resp = gw.post_stream("/v1/chat/completions", &body).await;
    let resp = resp.into_response().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "Checking the weather.");
    let calls: Vec<&serde_json::Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "tooluse_X1");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    let finishes: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, vec!["tool_calls"]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 29);
    let sent = up.last();
    assert_eq!(sent.path, format!("/model/{WIRE_MODEL}/converse-stream"));
    assert_eq!(
        sent.json()["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn exception_frame_mid_stream_ends_with_an_error_event() {
    let mut frames = Vec::new();
    encode_event("messageStart", br#"{"role":"assistant"}"#, &mut frames);
    encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"Partial"}}"#,
        &mut frames,
    );
    encode_exception(
        "modelStreamErrorException",
        br#"{"message":"The model stream failed","originalStatusCode":500}"#,
        &mut frames,
    );
    let up = bedrock_mock(move |_| {
        Reply::stream(
            "application/vnd.amazon.eventstream",
            &frames,
            5,
            Duration::ZERO,
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post_stream("/v1/chat/completions", &chat(true))
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    let data = resp.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("The model stream failed"));
    assert_eq!(err["error"]["type"], "server_error");
    assert!(resp.text().contains("Partial"));
    assert!(!resp.text().contains("finish_reason\":\"stop"));
}

#[tokio::test]
async fn throttling_is_429_with_retry_after() {
    let up = bedrock_mock(|_| {
        Reply::json(
            429,
            json!({"message": "Too many requests, please wait before trying again."}),
        )
        .with_header(
            "x-amzn-ErrorType",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )
        .with_header("retry-after", "17")
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let err = resp.expect_error(429);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("17"));
}

#[tokio::test]
async fn context_length_validation_error_and_malformed_2xx() {
    let up = bedrock_mock(|req| {
        if req.json()["messages"][0]["content"][0]["text"] == "long" {
            Reply::json(
                400,
                json!({"message": "Input is too long for requested model."}),
            )
            .with_header("x-amzn-ErrorType", "ValidationException")
        } else {
            Reply::bytes(200, "application/json", b"<html>gateway</html>".to_vec())
        }
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let ask =
        |text: &str| json!({"model": "claude", "messages": [{"role": "user", "content": text}]});
    let err = gw
        .post("/v1/chat/completions", &ask("long"))
        .await
        .expect_error(400);
    assert_eq!(err["code"], "context_length_exceeded");
    gw.post("/v1/chat/completions", &ask("short"))
        .await
        .expect_error(502);
}

#[tokio::test]
async fn unsupported_parameter_and_image_url_are_400s_without_upstream_calls() {
    let up = bedrock_mock(|_| Reply::json(200, converse_text("never"))).await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let err = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}], "seed": 3}),
        )
        .await
        .expect_error(400);
    assert_eq!(err["param"], "seed");
    let err = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        )
        .await
        .expect_error(400);
    assert!(err["message"].as_str().unwrap().contains("data:"));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn titan_embeddings_one_signed_request_per_input() {
    let up = bedrock_mock(|req| {
        let text = req.json()["inputText"].as_str().unwrap().to_string();
        let x = text.len() as f32;
        Reply::json(
            200,
            json!({"embedding": [x, 0.5], "inputTextTokenCount": text.len()}),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "titan", "input": ["a", "bbb", "cc"], "dimensions": 256}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let firsts: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"][0].as_f64().unwrap())
        .collect();
    assert_eq!(firsts, vec![1.0, 3.0, 2.0], "vectors in input order");
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(r.json()["dimensions"], 256);
    }
    // base64 is honoured.
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "titan", "input": "abcd", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // [4.0, 0.5] as little-endian f32.
    assert_eq!(resp.json()["data"][0]["embedding"], "AACAQAAAAD8=");
}

#[tokio::test]
async fn cohere_embeddings_batch_in_one_request() {
    let up = bedrock_mock(|req| {
        let n = req.json()["texts"].as_array().unwrap().len();
        Reply::json(
            200,
            json!({"id": "e1", "embeddings": (0..n).map(|i| vec![i as f32, 1.0]).collect::<Vec<_>>(), "texts": [], "response_type": "embeddings_floats"}),
        )
    })
    .await;
    let cfg = format!(
        r#"
model_list:
  - model_name: cohere-embed
    litellm_params:
      model: bedrock/cohere.embed-english-v3
      api_base: {}
      aws_access_key_id: {ACCESS_KEY}
      aws_secret_access_key: {SECRET}
      aws_region_name: us-west-2
"#,
        up.base()
    );
    let gw = Gateway::start(&cfg);
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "cohere-embed", "input": ["x", "y"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"][1]["embedding"][0], 1.0);
    let sent = up.last();
    assert_eq!(sent.path, "/model/cohere.embed-english-v3/invoke");
    assert_eq!(
        sent.json(),
        json!({"texts": ["x", "y"], "input_type": "search_document"})
    );
}
