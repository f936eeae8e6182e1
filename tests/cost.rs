//! Cost end to end: the real gateway against mock upstreams speaking OpenAI's and Anthropic's
//! wire formats. Whole answers carry `x-litellm-response-cost`; a stream's final usage chunk
//! carries `usage.cost` (only when the client asked for usage); the access log and
//! `litellm_spend_metric_total` carry the same cost. Expected costs are written from the
//! vendored table's rates (checked by the unit corpus in `src/cost/tests.rs`).

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// gpt-4o's table rates: input, output, cache read (USD per token).
const GPT4O: (f64, f64, f64) = (2.5e-6, 1e-5, 1.25e-6);
/// claude-sonnet-4-5's: input, output, cache read, cache write.
const SONNET: (f64, f64, f64, f64) = (3e-6, 1.5e-5, 3e-7, 3.75e-6);

fn assert_close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= want.abs() * 1e-9,
        "cost {got} != expected {want}"
    );
}

fn openai_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}/v1
      api_key: sk-upstream
  - model_name: private
    litellm_params:
      model: openai/my-private-model
      api_base: {base}/v1
      api_key: sk-upstream
  - model_name: priced-private
    litellm_params:
      model: openai/my-private-model
      api_base: {base}/v1
      api_key: sk-upstream
      input_cost_per_token: 0.001
    model_info:
      output_cost_per_token: 0.002
  - model_name: cheap-gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}/v1
      api_key: sk-upstream
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
"#
    )
}

fn completion_with_usage(usage: Value) -> Value {
    let mut v = openai::completion("Hi");
    v["usage"] = usage;
    v
}

#[tokio::test]
async fn whole_answers_carry_the_cost_header_log_and_metric() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            completion_with_usage(json!({"prompt_tokens": 1000, "completion_tokens": 500,
                "total_tokens": 1500, "prompt_tokens_details": {"cached_tokens": 400}})),
        )
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base()));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (input, output, cache_read) = GPT4O;
    let want = 600.0 * input + 400.0 * cache_read + 500.0 * output;
    let header = resp
        .header("x-litellm-response-cost")
        .expect("x-litellm-response-cost on a whole answer");
    assert_close(header.parse().unwrap(), want);

    let line = gw.wait_for_log_line(|l| l["route"] == "chat").await;
    assert_close(line["cost"].as_f64().expect("cost in the access log"), want);
    assert!(line.get("usage_estimated").is_none());

    let scrape = gw
        .wait_for_metric("litellm_spend_metric_total", &["gpt-4o"], |v| v > 0.0)
        .await;
    assert_close(
        metric_value(&scrape, "litellm_spend_metric_total", &["gpt-4o"]).unwrap(),
        want,
    );
}

#[tokio::test]
async fn configured_prices_override_the_table_and_unpriced_models_have_no_cost() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            completion_with_usage(
                json!({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}),
            ),
        )
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base()));
    let ask = |model: &'static str| {
        let gw = &gw;
        async move {
            gw.post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
        }
    };

    // Not in the table, no configured price: no cost (not a cost of 0).
    let resp = ask("private").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-litellm-response-cost"), None);
    let line = gw.wait_for_log_line(|l| l["model"] == "private").await;
    assert!(line.get("cost").is_none(), "{line}");

    // litellm_params input price and model_info output price.
    let resp = ask("priced-private").await;
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .expect("priced by its configuration")
        .parse()
        .unwrap();
    assert_close(cost, 100.0 * 0.001 + 10.0 * 0.002);

    // Configured prices win over the table's for a model the table knows.
    let resp = ask("cheap-gpt-4o").await;
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert_close(cost, 100.0 * 1e-6 + 10.0 * 2e-6);
}

#[tokio::test]
async fn a_streams_final_usage_chunk_carries_the_cost() {
    let body = openai::sse(&["a", "b", "c"], true);
    let up =
        MockUpstream::start(move |_| Reply::stream("text/event-stream", &body, 5, Duration::ZERO))
            .await;
    let gw = Gateway::start(&openai_config(&up.base()));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    // The head went out before the usage was known: no cost header on streams (as LiteLLM).
    assert_eq!(resp.header("x-litellm-response-cost"), None);
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "abc");
    let (input, output, _) = GPT4O;
    let want = 5.0 * input + 3.0 * output;
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["total_tokens"], 8);
    assert_close(last["usage"]["cost"].as_f64().expect("usage.cost"), want);
    // Only the usage chunk carries it.
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.get("usage").is_none_or(|u| u.get("cost").is_none())));
    let line = gw.wait_for_log_line(|l| l["route"] == "chat").await;
    assert_close(line["cost"].as_f64().unwrap(), want);

    // Without include_usage the client gets no usage chunk, but the call is still billed.
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "y"}]}),
        )
        .await
        .into_response()
        .await;
    assert!(!resp.text().contains("\"cost\""), "{}", resp.text());
    // Access logging follows the response: wait for both lines.
    let billed = || {
        gw.access_log()
            .iter()
            .filter(|l| l["cost"].is_f64())
            .count()
    };
    wait_until(|| billed() >= 2, Duration::from_secs(10)).await;
    let billed = billed();
    assert_eq!(billed, 2, "{}", gw.stdout());
}

fn anthropic_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: sk-ant-test
"#
    )
}

fn anthropic_sse(events: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for ev in events {
        out.push_str(&format!(
            "event: {}\ndata: {ev}\n\n",
            ev["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

#[tokio::test]
async fn anthropic_cache_reads_and_writes_are_priced_apart() {
    let up = MockUpstream::start(|r: &Recorded| {
        if r.json()["stream"] == true {
            let body = anthropic_sse(&[
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
                    "usage": {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 8}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ]);
            // Awkward boundaries: 7-byte pieces split keys and numbers.
            Reply::stream("text/event-stream", &body, 7, Duration::ZERO)
        } else {
            Reply::json(
                200,
                json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": 50, "output_tokens": 12, "cache_creation_input_tokens": 10,
                        "cache_read_input_tokens": 40}}),
            )
        }
    })
    .await;
    let gw = Gateway::start(&anthropic_config(&up.base()));
    let (input, output, read, write) = SONNET;

    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let usage = &resp.json()["usage"];
    assert_eq!(usage["prompt_tokens"], 100);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 40);
    assert_eq!(usage["prompt_tokens_details"]["cache_creation_tokens"], 10);
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert_close(
        cost,
        50.0 * input + 40.0 * read + 10.0 * write + 12.0 * output,
    );

    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "Hello");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 30);
    assert_eq!(usage["completion_tokens"], 9);
    assert_close(
        usage["cost"].as_f64().expect("usage.cost"),
        20.0 * input + 8.0 * read + 2.0 * write + 9.0 * output,
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_billed_an_estimate() {
    // The upstream sends two events, then goes quiet (its usage would come at the end).
    let body = openai::sse(&["one", "two", "three"], true);
    let second_event_end = {
        let mut ends = body.windows(2).enumerate().filter(|(_, w)| w == b"\n\n");
        ends.nth(1).unwrap().0 + 2
    };
    let up = MockUpstream::start(move |_| {
        let mut r = Reply::stream_split(
            "text/event-stream",
            &body,
            &[second_event_end],
            Duration::ZERO,
        );
        if let Reply::Parts { parts, .. } = &mut r {
            parts[1].0 = Duration::from_secs(30);
        }
        r
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base()));
    let mut s = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "tell me a long story please"}]}),
        )
        .await;
    assert_eq!(s.status, 200);
    assert!(s.next_chunk().await.is_some());
    s.hang_up();
    let line = gw
        .wait_for_log_line(|l| l["route"] == "chat" && l["client_disconnected"] == true)
        .await;
    assert_eq!(line["usage_estimated"], true, "{line}");
    let completion = line["completion_tokens"].as_u64().unwrap();
    assert!(completion >= 1, "{line}");
    let prompt = line["prompt_tokens"].as_f64().unwrap();
    let (input, output, _) = GPT4O;
    assert_close(
        line["cost"].as_f64().expect("an estimated cost"),
        prompt * input + completion as f64 * output,
    );
}

#[tokio::test]
async fn embeddings_are_priced_on_input_tokens_only() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::embeddings(2))).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: embed
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {}/v1
      api_key: sk-upstream
"#,
        up.base()
    ));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // text-embedding-3-small: 2e-8 per input token; the upstream reported 4.
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .expect("cost header on embeddings")
        .parse()
        .unwrap();
    assert_close(cost, 4.0 * 2e-8);
}
