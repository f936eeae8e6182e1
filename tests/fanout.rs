//! `n` > 1 on a provider that returns one choice per call: the gateway fans out `n` upstream
//! calls and merges them (whole and streamed), passes `n` through where the provider takes it,
//! refuses with a 400 naming `n` when fan-out is off or `n` is over `switchboard.max_n`, and
//! treats one failing call as the attempt failing (retry) or, mid-stream, as the stream's end;
//! a translated `/v1/completions` prompt list is one call per prompt (times `n`), its choices
//! indexed per prompt, its stream ending with a `text_completion` usage chunk.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn config(base: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: sk-ant-test
    model_info:
      input_cost_per_token: 0.001
      output_cost_per_token: 0.002
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}/v1
      api_key: sk-test
{extra}
"#
    )
}

fn ask(n: u64) -> Value {
    json!({"model": "claude", "n": n, "messages": [{"role": "user", "content": "hi"}]})
}

/// An Anthropic answer whose text names the call (`call-0`, `call-1`, …).
fn anthropic_answer(call: usize) -> Value {
    json!({"id": format!("msg_{call}"), "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": format!("call-{call}")}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 2 + call as u64}})
}

/// An Anthropic SSE stream saying `call-N` in two deltas.
fn anthropic_stream(call: usize) -> Vec<u8> {
    anthropic_stream_saying(&format!("msg_{call}"), "call-", &call.to_string())
}

/// An Anthropic SSE stream saying `first` then `second`.
fn anthropic_stream_saying(id: &str, first: &str, second: &str) -> Vec<u8> {
    let events = [
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": first}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": second}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}}),
        json!({"type": "message_stop"}),
    ];
    let mut out = String::new();
    for ev in events {
        out.push_str(&format!(
            "event: {}\ndata: {ev}\n\n",
            ev["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

/// A mock Anthropic upstream numbering its calls from 0.
async fn anthropic_mock(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> MockUpstream {
    let calls = Arc::new(AtomicUsize::new(0));
    MockUpstream::start(move |_| reply(calls.fetch_add(1, Ordering::SeqCst))).await
}

#[tokio::test]
async fn n3_to_anthropic_makes_three_calls_and_merges_the_choices() {
    let up = anthropic_mock(|i| Reply::json(200, anthropic_answer(i))).await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw.post("/v1/chat/completions", &ask(3)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), 3, "one upstream call per choice");
    assert!(
        up.requests().iter().all(|r| r.json().get("n").is_none()),
        "no call carries n"
    );
    let v = resp.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    let mut texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "stop");
    }
    texts.sort();
    assert_eq!(texts, ["call-0", "call-1", "call-2"]);
    // Output tokens 2 + 3 + 4, input 10 each.
    assert_eq!(v["usage"]["prompt_tokens"], 30, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(v["usage"]["total_tokens"], 39);
    // Spend is the sum: 30 tokens in at 0.001, 9 out at 0.002.
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - 0.048).abs() < 1e-9, "cost {cost}");
}

#[tokio::test]
async fn n3_streamed_interleaves_three_indexed_choices_with_one_usage_chunk() {
    let up = anthropic_mock(|i| {
        let body = anthropic_stream(i);
        // Awkward splits, each call at its own pace so the chunks interleave.
        let splits: Vec<usize> = (1..body.len()).step_by(37 + 5 * i).collect();
        Reply::stream_split(
            "text/event-stream",
            &body,
            &splits,
            Duration::from_millis(2 + i as u64),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let mut body = ask(3);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = gw
        .post_stream("/v1/chat/completions", &body)
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), 3);
    let data = resp.sse_data();
    assert_eq!(
        data.iter().filter(|d| *d == "[DONE]").count(),
        1,
        "{data:?}"
    );
    let chunks = openai_chunks(&resp);
    let mut texts: BTreeMap<u64, String> = BTreeMap::new();
    let mut finishes = 0;
    for c in &chunks {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap();
            if let Some(t) = ch["delta"]["content"].as_str() {
                texts.entry(i).or_default().push_str(t);
            }
            if !ch["finish_reason"].is_null() {
                finishes += 1;
            }
        }
    }
    assert_eq!(texts.len(), 3, "{texts:?}");
    let mut said: Vec<&str> = texts.values().map(String::as_str).collect();
    said.sort();
    assert_eq!(said, ["call-0", "call-1", "call-2"]);
    assert_eq!(finishes, 3);
    let usage_chunks: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"] == json!([]))
        .collect();
    assert_eq!(usage_chunks.len(), 1, "one usage chunk: {chunks:?}");
    assert!(std::ptr::eq(usage_chunks[0], chunks.last().unwrap()));
    let usage = &usage_chunks[0]["usage"];
    assert_eq!(usage["prompt_tokens"], 30, "{usage}");
    assert_eq!(usage["completion_tokens"], 9);
    assert_eq!(usage["total_tokens"], 39);
    assert!(usage["cost"].as_f64().is_some_and(|c| c > 0.0), "{usage}");
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));
}

#[tokio::test]
async fn n2_to_openai_passes_n_through_in_one_call() {
    let up = MockUpstream::start(|_| {
        let mut v = openai::completion("one");
        v["choices"] = json!([
            {"index": 0, "message": {"role": "assistant", "content": "one"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "two"}, "finish_reason": "stop"}]);
        Reply::json(200, v)
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let mut body = ask(2);
    body["model"] = json!("gpt");
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().json()["n"], 2);
    assert_eq!(resp.json()["choices"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn fanout_switched_off_is_a_400_naming_n() {
    let up = anthropic_mock(|i| Reply::json(200, anthropic_answer(i))).await;
    let gw = Gateway::start(&config(&up.base(), "switchboard:\n  n_fanout: false\n"));
    let resp = gw.post("/v1/chat/completions", &ask(2)).await;
    let err = resp.expect_error(400);
    assert_eq!(err["param"], "n", "{err}");
    assert!(err["message"].as_str().unwrap().contains("n_fanout"));
    assert_eq!(up.count(), 0, "never one choice silently");
    // n: 1 is still served.
    assert_eq!(gw.post("/v1/chat/completions", &ask(1)).await.status, 200);
}

#[tokio::test]
async fn n_over_max_n_is_a_400_naming_n() {
    let up = anthropic_mock(|i| Reply::json(200, anthropic_answer(i))).await;
    let gw = Gateway::start(&config(&up.base(), "switchboard:\n  max_n: 4\n"));
    let err = gw
        .post("/v1/chat/completions", &ask(5))
        .await
        .expect_error(400);
    assert_eq!(err["param"], "n", "{err}");
    assert!(err["message"].as_str().unwrap().contains("max_n"));
    assert_eq!(up.count(), 0);
    let resp = gw.post("/v1/chat/completions", &ask(4)).await;
    assert_eq!(resp.json()["choices"].as_array().unwrap().len(), 4);
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn one_failing_call_fails_the_attempt_and_the_retry_answers_whole() {
    // The second call overloads; the retry's three calls all answer.
    let up = anthropic_mock(|i| match i {
        1 => Reply::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        _ => Reply::json(200, anthropic_answer(i)),
    })
    .await;
    let gw = Gateway::start(&config(
        &up.base(),
        "router_settings:\n  num_retries: 1\n  retry_after: 0\n",
    ));
    let resp = gw.post("/v1/chat/completions", &ask(3)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"].as_array().unwrap().len(), 3);
    assert_eq!(resp.header("x-litellm-attempted-retries"), Some("1"));
    assert_eq!(up.count(), 6);

    // Without retries the failure is the answer: an error, not fewer choices.
    let up = anthropic_mock(|i| match i {
        1 => Reply::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        _ => Reply::json(200, anthropic_answer(i)),
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), "router_settings:\n  num_retries: 0\n"));
    let err = gw
        .post("/v1/chat/completions", &ask(3))
        .await
        .expect_error(503);
    assert!(
        err["message"].as_str().unwrap().contains("Overloaded"),
        "{err}"
    );
}

#[tokio::test]
async fn a_call_cut_mid_stream_ends_the_merged_stream_with_an_error() {
    let up = anthropic_mock(|i| {
        let body = anthropic_stream(i);
        if i == 2 {
            // Everything up to the first delta, then the connection closes.
            let text = String::from_utf8_lossy(&body);
            let cut = text.find("event: content_block_stop").unwrap();
            Reply::stream(
                "text/event-stream",
                &body[..cut],
                50,
                Duration::from_millis(5),
            )
            .cut()
        } else {
            Reply::stream("text/event-stream", &body, 50, Duration::from_millis(1))
        }
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), "router_settings:\n  num_retries: 0\n"));
    let mut body = ask(3);
    body["stream"] = json!(true);
    let resp = gw
        .post_stream("/v1/chat/completions", &body)
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    let data = resp.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(err.get("error").is_some(), "{err}");
}

#[tokio::test]
async fn the_budget_reserves_for_all_n_calls() {
    let up = anthropic_mock(|i| Reply::json(200, anthropic_answer(i))).await;
    let db = temp_dir().join("fanout.db");
    let gw = Gateway::start(&config(
        &up.base(),
        &format!(
            "general_settings:\n  master_key: sk-master\n  database_url: \"sqlite://{}\"\n",
            db.display()
        ),
    ));
    // One call reserves 8 prompt tokens (32 bytes of messages) + 10 output: 0.028 USD; three
    // calls three times that. (The rate limiter's token reservation is multiplied the same way,
    // `limits::token_estimate`.)
    let body = |n: u64| {
        let mut b = ask(n);
        b["max_tokens"] = json!(10);
        b
    };
    let budget = gw
        .generate_key("sk-master", json!({"max_budget": 0.05}))
        .await;
    let r = gw.post_as(&budget, "/v1/chat/completions", &body(3)).await;
    assert_eq!(
        r.status,
        422,
        "three reservations exceed the budget: {}",
        r.text()
    );
    assert_eq!(up.count(), 0);
    let r = gw.post_as(&budget, "/v1/chat/completions", &body(1)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Echoes each call's prompt: Anthropic (`/v1/messages`, whole or streamed) says
/// `echo:{prompt}`; OpenAI chat (`/v1/chat/completions`) says it in each of its `n` choices.
async fn echo_mock() -> MockUpstream {
    MockUpstream::start(|r| {
        let body = r.json();
        let content = &body["messages"][0]["content"];
        let prompt = content
            .as_str()
            .or_else(|| content[0]["text"].as_str())
            .unwrap_or("?")
            .to_string();
        if r.path.ends_with("/chat/completions") {
            let n = body["n"].as_u64().unwrap_or(1);
            let mut v = openai::completion("");
            v["choices"] = (0..n)
                .map(|i| json!({"index": i, "message": {"role": "assistant", "content": format!("echo:{prompt}")}, "finish_reason": "stop"}))
                .collect();
            return Reply::json(200, v);
        }
        if body["stream"] == json!(true) {
            return Reply::stream(
                "text/event-stream",
                &anthropic_stream_saying("msg_echo", "echo:", &prompt),
                13,
                Duration::from_millis(1),
            );
        }
        let mut v = anthropic_answer(0);
        v["content"][0]["text"] = json!(format!("echo:{prompt}"));
        Reply::json(200, v)
    })
    .await
}

fn texts_by_index(choices: &[Value], text: impl Fn(&Value) -> Option<&str>) -> Vec<String> {
    let mut by_index: BTreeMap<u64, String> = BTreeMap::new();
    for ch in choices {
        if let Some(t) = text(ch) {
            by_index
                .entry(ch["index"].as_u64().unwrap())
                .or_default()
                .push_str(t);
        }
    }
    by_index.into_values().collect()
}

#[tokio::test]
async fn a_completions_prompt_list_is_one_call_per_prompt_with_choices_indexed_per_prompt() {
    let up = echo_mock().await;
    let gw = Gateway::start(&config(&up.base(), "switchboard:\n  max_n: 8\n"));
    // Anthropic answers one choice per call: prompts × n calls, each one prompt without n.
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "claude", "prompt": ["A", "B"], "n": 2, "max_tokens": 5}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), 4);
    for r in up.requests() {
        let sent = r.json();
        assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "{sent}");
        assert!(sent.get("n").is_none(), "{sent}");
    }
    let v = resp.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    let choices = v["choices"].as_array().unwrap();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
    }
    assert_eq!(
        texts_by_index(choices, |c| c["text"].as_str()),
        ["echo:A", "echo:A", "echo:B", "echo:B"]
    );
    assert_eq!(v["usage"]["prompt_tokens"], 40, "{v}");

    // OpenAI takes n itself: one call per prompt, each with n.
    let before = up.count();
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "gpt", "prompt": ["A", "B"], "n": 2}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent: Vec<Value> = up.requests()[before..].iter().map(|r| r.json()).collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|b| b["n"] == 2), "{sent:?}");
    let choices = resp.json()["choices"].as_array().unwrap().clone();
    assert_eq!(
        texts_by_index(&choices, |c| c["text"].as_str()),
        ["echo:A", "echo:A", "echo:B", "echo:B"]
    );

    // Over switchboard.max_n: refused naming the prompt, nothing sent.
    let before = up.count();
    let err = gw
        .post(
            "/v1/completions",
            &json!({"model": "claude", "prompt": ["A", "B", "C"], "n": 3}),
        )
        .await
        .expect_error(400);
    assert_eq!(err["param"], "prompt", "{err}");
    assert!(err["message"].as_str().unwrap().contains("max_n"), "{err}");
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn a_streamed_completions_fan_out_is_text_completion_chunks_to_the_usage_chunk() {
    let up = echo_mock().await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post_stream(
            "/v1/completions",
            &json!({"model": "claude", "prompt": ["A", "B"], "n": 2, "stream": true,
                    "stream_options": {"include_usage": true}}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), 4);
    let chunks = openai_chunks(&resp);
    for c in &chunks {
        assert_eq!(c["object"], "text_completion", "{c}");
        assert!(c["id"].as_str().unwrap().starts_with("cmpl-"), "{c}");
    }
    let choices: Vec<Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().clone())
        .collect();
    assert_eq!(
        texts_by_index(&choices, |c| c["text"].as_str()),
        ["echo:A", "echo:A", "echo:B", "echo:B"]
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_eq!(last["usage"]["prompt_tokens"], 40, "{last}");
    assert_eq!(last["usage"]["completion_tokens"], 12, "{last}");
    assert_eq!(
        chunks.iter().filter(|c| c["choices"] == json!([])).count(),
        1
    );
    assert_eq!(resp.sse_data().last().map(String::as_str), Some("[DONE]"));
}
