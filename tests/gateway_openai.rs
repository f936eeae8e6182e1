//! The foundation end to end: the real gateway over HTTP against mock OpenAI and Azure upstreams.

mod support;

use serde_json::json;
#[allow(unused_imports)]
use std::time::{Duration, Instant};
use support::*;

fn openai_config(base: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: {base}/v1
      api_key: sk-upstream
  - model_name: embed
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base}/v1
      api_key: sk-upstream
{extra}
"#
    )
}

#[tokio::test]
async fn chat_completion_passes_through_with_model_rewritten() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("Hi there"))).await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let resp = gw
        .post("/v1/chat/completions", &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.2}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(resp.json()["usage"]["total_tokens"], 18);
    assert!(resp.header("x-request-id").is_some());
    assert!(resp
        .header("x-litellm-overhead-duration-ms")
        .unwrap()
        .parse::<f64>()
        .is_ok());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));
    let body = sent.json();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["messages"][0]["content"], "hello");
    assert!(
        body.get("stream_options").is_none(),
        "non-streaming requests are not given stream_options"
    );
}
