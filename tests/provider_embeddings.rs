//! Embeddings-only upstreams through the real gateway: Voyage's native API (request mapping,
//! float and base64 answers, key from the environment, chat refused, errors) and Mistral's
//! OpenAI-compatible `/embeddings`.

mod support;

use serde_json::{json, Value};
use support::*;

fn voyage_mock(req: &Recorded) -> Reply {
    if req.path != "/v1/embeddings" {
        return Reply::json(404, json!({"detail": format!("no route {}", req.path)}));
    }
    let body = req.json();
    let inputs = body["input"].as_array().cloned().unwrap_or_default();
    if inputs.first().and_then(Value::as_str) == Some("slow down") {
        return Reply::json(429, json!({"detail": "Rate limit exceeded"}))
            .with_header("retry-after", "13");
    }
    // Deliberately out of order: the gateway must order by index.
    let mut data: Vec<Value> = (0..inputs.len())
        .map(|i| json!({"object": "embedding", "embedding": [i as f64, 0.25], "index": i}))
        .collect();
    data.reverse();
    Reply::json(
        200,
        json!({"object": "list", "data": data, "model": "voyage-3", "usage": {"total_tokens": 10}}),
    )
}

fn voyage_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: voyage
    litellm_params:
      model: voyage/voyage-3
      api_base: {base}/v1
      api_key: vo-key
  - model_name: voyage-env
    litellm_params:
      model: voyage/voyage-3-lite
      api_base: {base}/v1
"#
    )
}

#[tokio::test]
async fn voyage_embeddings() {
    let up = MockUpstream::start(voyage_mock).await;
    let gw = Gateway::start_with_env(&voyage_config(&up.base()), &[("VOYAGE_API_KEY", "vo-env")]);
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "voyage", "input": ["a", "b", "c"], "input_type": "document", "dimensions": 512}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"], json!([0.0, 0.25]));
    assert_eq!(v["data"][2]["embedding"], json!([2.0, 0.25]));
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    let sent = up.last();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.header("authorization"), Some("Bearer vo-key"));
    assert_eq!(
        sent.json(),
        json!({"input": ["a", "b", "c"], "model": "voyage-3", "input_type": "document", "output_dimension": 512})
    );

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "voyage-env", "input": "a", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // [0.0, 0.25] as little-endian f32.
    assert_eq!(resp.json()["data"][0]["embedding"], "AAAAAAAAgD4=");
    let sent = up.last();
    assert_eq!(sent.header("authorization"), Some("Bearer vo-env"));
    assert_eq!(
        sent.json(),
        json!({"input": ["a"], "model": "voyage-3-lite"})
    );
}

#[tokio::test]
async fn voyage_refuses_chat_and_maps_errors() {
    let up = MockUpstream::start(voyage_mock).await;
    let gw = Gateway::start(&voyage_config(&up.base()));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "voyage", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let err = resp.expect_error(400);
    assert_eq!(err["param"], "model");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("voyage") && msg.contains("/v1/embeddings"),
        "{msg}"
    );
    assert_eq!(up.count(), 0, "chat must not reach Voyage");

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "voyage", "input": ["slow down"]}),
        )
        .await;
    let err = resp.expect_error(429);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("13"));

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "voyage", "input": "x", "truncation": false}),
        )
        .await;
    assert_eq!(resp.expect_error(400)["param"], "truncation");
}

#[tokio::test]
async fn mistral_embed_goes_to_openai_compatible_embeddings() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::embeddings(2))).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: mistral-embed
    litellm_params:
      model: mistral/mistral-embed
      api_base: {}/v1
      api_key: mi-key
"#,
        up.base()
    ));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "mistral-embed", "input": ["x", "y"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"][1]["embedding"], json!([0.1, 0.2, 1.0]));
    let sent = up.last();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.header("authorization"), Some("Bearer mi-key"));
    assert_eq!(sent.json()["model"], "mistral-embed");
    assert_eq!(sent.json()["input"], json!(["x", "y"]));
}
