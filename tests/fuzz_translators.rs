//! Property-based fuzzing of translation, through public behaviour only: every provider's
//! stream translator (upstream bytes in with `feed`, any split, OpenAI SSE bytes out, then
//! `finish`), its request building and whole-response parsing, and the client request parser.
//!
//! For each provider (OpenAI-compatible pass-through, Anthropic, Gemini, Cohere, Ollama,
//! Bedrock): a generated valid stream gives the client exactly the text and tool calls it
//! carried, under any split; a corrupted or arbitrary stream never panics, gives the same output
//! and verdict under any split, and never balloons the output; an event past
//! `max_stream_event_bytes` fails the stream instead of being buffered. Requests: arbitrary
//! bytes and JSON never panic the body parser or its typed views; any chat request is built into
//! a JSON body or refused with a 4xx; arbitrary response bodies never panic a parser.
//! CI runs a bounded number of cases; a long campaign sets `PROPTEST_CASES` (README).

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use switchboard::codec::eventstream::{encode_message, HeaderValue};
use switchboard::codec::limits;
use switchboard::openai::request::EmbeddingsRequest;
use switchboard::openai::{ChatRequest, RequestBody};
use switchboard::providers::{
    build_provider, BuildContext, Operation, Provider, RequestContext, StreamTranslator,
};
use switchboard::upstream::UpstreamClient;

/// The bound every test in this binary runs under (small, so oversized events are cheap).
const EVENT_BOUND: usize = 64 * 1024;

fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenAi,
    Anthropic,
    Gemini,
    Cohere,
    Ollama,
    Bedrock,
}

const KINDS: [Kind; 6] = [
    Kind::OpenAi,
    Kind::Anthropic,
    Kind::Gemini,
    Kind::Cohere,
    Kind::Ollama,
    Kind::Bedrock,
];

const CONFIG: &str = r#"
model_list:
  - model_name: openai
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9", api_key: k}
  - model_name: anthropic
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_base: "http://127.0.0.1:9", api_key: k}
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.0-flash, api_base: "http://127.0.0.1:9", api_key: k}
  - model_name: cohere
    litellm_params: {model: cohere_chat/command-r-plus, api_base: "http://127.0.0.1:9", api_key: k}
  - model_name: ollama
    litellm_params: {model: ollama_chat/llama3.1, api_base: "http://127.0.0.1:9"}
  - model_name: bedrock
    litellm_params:
      model: bedrock/anthropic.claude-3-haiku-20240307-v1:0
      api_base: "http://127.0.0.1:9"
      aws_access_key_id: AKIDEXAMPLE
      aws_secret_access_key: secret
      aws_region_name: us-west-2
"#;

/// One provider per kind, in [`KINDS`] order, built from a LiteLLM config like any deployment.
fn providers() -> &'static [Arc<dyn Provider>] {
    static PROVIDERS: OnceLock<Vec<Arc<dyn Provider>>> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        let config = switchboard::config::litellm::parse(CONFIG).expect("test config");
        let cx = BuildContext {
            client: Arc::new(UpstreamClient::new(1)),
        };
        config
            .deployments
            .iter()
            .map(|d| build_provider(d, &cx).expect("provider"))
            .collect()
    })
}

fn translator(kind: Kind) -> Box<dyn StreamTranslator> {
    limits::set_max_stream_event_bytes(EVENT_BOUND);
    let index = KINDS.iter().position(|k| *k == kind).unwrap();
    let cx = RequestContext {
        op: Operation::Chat,
        model: "m",
        stream: true,
        include_usage: true,
        response_id: "chatcmpl-fuzz",
        created: 1,
        drop_params: false,
        embeddings_base64: false,
    };
    providers()[index].stream_translator(&cx)
}

/// What a translator made of a byte stream: the client's bytes, and the error that ended it.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    error: Option<String>,
}

/// Feeds `input` cut at `cuts`, then finishes; stops at the first error, as the gateway does.
fn run(kind: Kind, input: &[u8], cuts: &[usize]) -> Run {
    let mut t = translator(kind);
    let mut out = BytesMut::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        if let Err(e) = t.feed(&input[start..c], &mut out) {
            return Run {
                out: out.to_vec(),
                error: Some(e.message),
            };
        }
        start = c;
    }
    let error = t.finish(&mut out).err().map(|e| e.message);
    Run {
        out: out.to_vec(),
        error,
    }
}

fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

// ---------------------------------------------------------------------------------------------
// Valid streams: a script of text and tool calls, written in each provider's wire format.

#[derive(Debug, Clone)]
enum Item {
    Text(String),
    /// A tool call: its name and its argument text in fragments.
    Tool(String, Vec<String>),
}

fn script() -> impl Strategy<Value = Vec<Item>> {
    let item = prop_oneof![
        3 => "\\PC{0,24}".prop_map(Item::Text),
        1 => ("fn_[a-z]{1,8}", prop::collection::vec("\\PC{1,12}", 1..4))
            .prop_map(|(n, a)| Item::Tool(n, a)),
    ];
    prop::collection::vec(item, 0..10)
}

/// The text and tool calls (name, arguments) a client should see for `items` from `kind`.
fn expected(kind: Kind, items: &[Item]) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut tools = Vec::new();
    for item in items {
        match item {
            Item::Text(t) => text.push_str(t),
            Item::Tool(name, args) => {
                let args = args.concat();
                // Gemini and Ollama send arguments as a JSON object, not as text.
                let args = match kind {
                    Kind::Gemini | Kind::Ollama => json!({ "q": args }).to_string(),
                    _ => args,
                };
                tools.push((name.clone(), args));
            }
        }
    }
    (text, tools)
}

fn sse(out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
    if let Some(e) = event {
        out.extend_from_slice(format!("event: {e}\n").as_bytes());
    }
    out.extend_from_slice(format!("data: {data}\n\n").as_bytes());
}

fn bedrock_event(out: &mut Vec<u8>, event_type: &str, payload: &Value) {
    encode_message(
        &[
            (":event-type", HeaderValue::Str(event_type)),
            (":content-type", HeaderValue::Str("application/json")),
            (":message-type", HeaderValue::Str("event")),
        ],
        payload.to_string().as_bytes(),
        out,
    );
}

/// `items` as `kind`'s upstream would stream them, ending normally.
fn wire(kind: Kind, items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    let has_tools = items.iter().any(|i| matches!(i, Item::Tool(..)));
    match kind {
        Kind::OpenAi => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            sse(
                &mut out,
                None,
                &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            );
            let mut calls = 0;
            for item in items {
                match item {
                    Item::Text(t) => {
                        sse(&mut out, None, &chunk(json!({"content": t}), Value::Null))
                    }
                    Item::Tool(name, args) => {
                        let head = json!({"tool_calls": [{"index": calls, "id": format!("call_{calls}"),
                            "type": "function", "function": {"name": name, "arguments": ""}}]});
                        sse(&mut out, None, &chunk(head, Value::Null));
                        for a in args {
                            let d = json!({"tool_calls": [{"index": calls, "function": {"arguments": a}}]});
                            sse(&mut out, None, &chunk(d, Value::Null));
                        }
                        calls += 1;
                    }
                }
            }
            let finish = if has_tools { "tool_calls" } else { "stop" };
            sse(&mut out, None, &chunk(json!({}), json!(finish)));
            sse(
                &mut out,
                None,
                &json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
            );
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Kind::Anthropic => {
            sse(
                &mut out,
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "c",
                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            );
            for (i, item) in items.iter().enumerate() {
                match item {
                    Item::Text(t) => {
                        sse(
                            &mut out,
                            Some("content_block_start"),
                            &json!({"type": "content_block_start",
                            "index": i, "content_block": {"type": "text", "text": ""}}),
                        );
                        sse(
                            &mut out,
                            Some("content_block_delta"),
                            &json!({"type": "content_block_delta",
                            "index": i, "delta": {"type": "text_delta", "text": t}}),
                        );
                    }
                    Item::Tool(name, args) => {
                        sse(
                            &mut out,
                            Some("content_block_start"),
                            &json!({"type": "content_block_start",
                            "index": i, "content_block": {"type": "tool_use", "id": format!("toolu_{i}"),
                            "name": name, "input": {}}}),
                        );
                        for a in args {
                            sse(
                                &mut out,
                                Some("content_block_delta"),
                                &json!({"type": "content_block_delta",
                                "index": i, "delta": {"type": "input_json_delta", "partial_json": a}}),
                            );
                        }
                    }
                }
                sse(
                    &mut out,
                    Some("content_block_stop"),
                    &json!({"type": "content_block_stop", "index": i}),
                );
                sse(&mut out, Some("ping"), &json!({"type": "ping"}));
            }
            let reason = if has_tools { "tool_use" } else { "end_turn" };
            sse(
                &mut out,
                Some("message_delta"),
                &json!({"type": "message_delta",
                "delta": {"stop_reason": reason}, "usage": {"output_tokens": 5}}),
            );
            sse(
                &mut out,
                Some("message_stop"),
                &json!({"type": "message_stop"}),
            );
        }
        Kind::Gemini => {
            for item in items {
                let part = match item {
                    Item::Text(t) => json!({"text": t}),
                    Item::Tool(name, args) => {
                        json!({"functionCall": {"name": name, "args": {"q": args.concat()}}})
                    }
                };
                let ev = json!({"candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}]});
                out.extend_from_slice(format!("data: {ev}\r\n\r\n").as_bytes());
            }
            let ev = json!({"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8}});
            out.extend_from_slice(format!("data: {ev}\r\n\r\n").as_bytes());
        }
        Kind::Cohere => {
            sse(
                &mut out,
                Some("message-start"),
                &json!({"id": "abc", "type": "message-start",
                "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
            );
            let mut calls = 0;
            for item in items {
                match item {
                    Item::Text(t) => sse(
                        &mut out,
                        Some("content-delta"),
                        &json!({"type": "content-delta",
                        "index": 0, "delta": {"message": {"content": {"text": t}}}}),
                    ),
                    Item::Tool(name, args) => {
                        sse(
                            &mut out,
                            Some("tool-call-start"),
                            &json!({"type": "tool-call-start", "index": calls,
                            "delta": {"message": {"tool_calls": {"id": format!("call_{calls}"), "type": "function",
                            "function": {"name": name, "arguments": ""}}}}}),
                        );
                        for a in args {
                            sse(
                                &mut out,
                                Some("tool-call-delta"),
                                &json!({"type": "tool-call-delta", "index": calls,
                                "delta": {"message": {"tool_calls": {"function": {"arguments": a}}}}}),
                            );
                        }
                        sse(
                            &mut out,
                            Some("tool-call-end"),
                            &json!({"type": "tool-call-end", "index": calls}),
                        );
                        calls += 1;
                    }
                }
            }
            let reason = if has_tools { "TOOL_CALL" } else { "COMPLETE" };
            sse(
                &mut out,
                Some("message-end"),
                &json!({"type": "message-end", "delta": {"finish_reason": reason,
                "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 5}, "tokens": {"input_tokens": 3, "output_tokens": 5}}}}),
            );
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Kind::Ollama => {
            for item in items {
                let message = match item {
                    Item::Text(t) => json!({"role": "assistant", "content": t}),
                    Item::Tool(name, args) => json!({"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": name, "arguments": {"q": args.concat()}}}]}),
                };
                let line = json!({"model": "llama3.1", "created_at": "t", "message": message, "done": false});
                out.extend_from_slice(format!("{line}\n").as_bytes());
            }
            let line = json!({"model": "llama3.1", "created_at": "t", "message": {"role": "assistant", "content": ""},
                "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 5});
            out.extend_from_slice(format!("{line}\n").as_bytes());
        }
        Kind::Bedrock => {
            bedrock_event(&mut out, "messageStart", &json!({"role": "assistant"}));
            for (i, item) in items.iter().enumerate() {
                match item {
                    Item::Text(t) => bedrock_event(
                        &mut out,
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": i, "delta": {"text": t}}),
                    ),
                    Item::Tool(name, args) => {
                        bedrock_event(
                            &mut out,
                            "contentBlockStart",
                            &json!({"contentBlockIndex": i,
                            "start": {"toolUse": {"toolUseId": format!("tooluse_{i}"), "name": name}}}),
                        );
                        for a in args {
                            bedrock_event(
                                &mut out,
                                "contentBlockDelta",
                                &json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": a}}}),
                            );
                        }
                    }
                }
                bedrock_event(
                    &mut out,
                    "contentBlockStop",
                    &json!({"contentBlockIndex": i}),
                );
            }
            let reason = if has_tools { "tool_use" } else { "end_turn" };
            bedrock_event(&mut out, "messageStop", &json!({"stopReason": reason}));
            bedrock_event(
                &mut out,
                "metadata",
                &json!({"usage": {"inputTokens": 3, "outputTokens": 5,
                "totalTokens": 8}, "metrics": {"latencyMs": 5}}),
            );
        }
    }
    out
}

/// The client's view of translated output: its text, its tool calls (name, arguments), and
/// whether it ended with `[DONE]`. Panics on output that is not OpenAI chunk SSE.
fn client_view(out: &[u8]) -> (String, Vec<(String, String)>, bool) {
    let text = std::str::from_utf8(out).expect("the client's stream is UTF-8");
    let mut content = String::new();
    let mut tools: Vec<(String, String)> = Vec::new();
    let mut done = false;
    for event in text.split_terminator("\n\n") {
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data event: {event:?}"));
        assert!(!done, "an event after [DONE]");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("each chunk is JSON");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{data}");
        let Some(delta) = chunk["choices"].get(0).map(|c| &c["delta"]) else {
            continue;
        };
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if index == tools.len() {
                tools.push((String::new(), String::new()));
            }
            let entry = tools.get_mut(index).expect("tool calls numbered in order");
            if let Some(n) = call["function"]["name"].as_str() {
                entry.0.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                entry.1.push_str(a);
            }
        }
    }
    (content, tools, done)
}

/// Gemini and Ollama arguments are JSON text whose formatting is the translator's: compare
/// them as values.
fn same_tools(kind: Kind, got: &[(String, String)], want: &[(String, String)]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            g.0 == w.0
                && match kind {
                    Kind::Gemini | Kind::Ollama => {
                        serde_json::from_str::<Value>(&g.1).ok()
                            == serde_json::from_str::<Value>(&w.1).ok()
                    }
                    _ => g.1 == w.1,
                }
        })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(&KINDS[..])
}

proptest! {
    #![proptest_config(cases(256))]

    /// A valid stream reaches the client whole and in order, however the upstream's bytes
    /// were split.
    #[test]
    fn valid_streams_translate_exactly_under_any_split(
        kind in kind(),
        items in script(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let input = wire(kind, &items);
        let whole = run(kind, &input, &[]);
        prop_assert!(whole.error.is_none(), "{kind:?} failed on a valid stream: {:?}", whole.error);
        let (text, tools, done) = client_view(&whole.out);
        let (want_text, want_tools) = expected(kind, &items);
        prop_assert_eq!(text, want_text);
        prop_assert!(same_tools(kind, &tools, &want_tools), "{kind:?}: {tools:?} != {want_tools:?}");
        prop_assert!(done, "{kind:?} did not end with [DONE]");
        let split = run(kind, &input, &cut_points(input.len(), &picks));
        prop_assert_eq!(split, whole);
    }

    /// A corrupted stream (bytes flipped, inserted, cut short) never panics, gives the same
    /// output and verdict under any split, and never expands out of proportion to its input.
    #[test]
    fn corrupted_streams_are_split_invariant_and_bounded(
        kind in kind(),
        items in script(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 0..6),
        truncate in any::<Index>(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut input = wire(kind, &items);
        for (at, byte, op) in &edits {
            let i = at.index(input.len() + 1);
            match op {
                0 if i < input.len() => input[i] ^= byte.max(&1),
                1 => input.insert(i, *byte),
                _ if i < input.len() => { input.remove(i); }
                _ => {}
            }
        }
        input.truncate(truncate.index(input.len() + 1).max(input.len() / 2));
        let whole = run(kind, &input, &[]);
        prop_assert!(whole.out.len() <= 32 * input.len() + 4096, "{kind:?}: {} bytes out of {}", whole.out.len(), input.len());
        let split = run(kind, &input, &cut_points(input.len(), &picks));
        prop_assert_eq!(split, whole);
    }

    /// Arbitrary bytes never panic and give the same verdict under any split.
    #[test]
    fn arbitrary_bytes_never_panic(
        kind in kind(),
        input in prop::collection::vec(any::<u8>(), 0..512),
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let whole = run(kind, &input, &[]);
        let split = run(kind, &input, &cut_points(input.len(), &picks));
        prop_assert_eq!(split, whole);
    }
}

/// An event larger than the bound, starting after a valid prefix: SSE `data:` lines with no
/// blank line, an NDJSON line with no newline, an eventstream message declaring too many bytes.
fn oversized_tail(kind: Kind, line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match kind {
        Kind::Ollama => {
            while out.len() <= EVENT_BOUND {
                out.extend_from_slice(line.as_bytes());
            }
        }
        Kind::Bedrock => {
            let payload = line.repeat(EVENT_BOUND / line.len() + 1);
            bedrock_event(
                &mut out,
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"text": payload}}),
            );
        }
        _ => {
            // The event's data grows by the line and a joining newline per `data:` line.
            for _ in 0..EVENT_BOUND / (line.len() + 1) + 2 {
                out.extend_from_slice(format!("data: {line}\n").as_bytes());
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(cases(32))]

    /// No translator buffers an event past the bound: the stream fails instead, before the
    /// oversized event is read whole.
    #[test]
    fn oversized_events_fail_the_stream(
        kind in kind(),
        items in script(),
        line in "[a-z]{1,64}",
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        // A complete stream, then the oversized event: decoders check the bound even after
        // the translator has seen the end.
        let mut input = wire(kind, &items);
        input.extend_from_slice(&oversized_tail(kind, &line));
        let got = run(kind, &input, &cut_points(input.len(), &picks));
        let error = got.error.unwrap_or_default();
        prop_assert!(error.contains("max_stream_event_bytes"), "{kind:?}: {error}");
    }
}

/// Translators that remember every tool call (to route later fragments) refuse to remember
/// more than `MAX_STREAM_TOOL_CALLS`, instead of growing a list and searching it per event.
#[test]
fn endless_tool_calls_are_refused_where_they_are_remembered() {
    let items: Vec<Item> = (0..limits::MAX_STREAM_TOOL_CALLS + 1)
        .map(|i| Item::Tool(format!("fn_{i}"), vec!["{}".into()]))
        .collect();
    for kind in [Kind::Bedrock, Kind::Cohere] {
        let got = run(kind, &wire(kind, &items), &[]);
        let error = got.error.unwrap_or_default();
        assert!(error.contains("tool calls"), "{kind:?}: {error}");
    }
    // At the cap, the stream is fine.
    let at_cap = &items[..limits::MAX_STREAM_TOOL_CALLS];
    for kind in [Kind::Bedrock, Kind::Cohere] {
        let got = run(kind, &wire(kind, at_cap), &[]);
        assert_eq!(got.error, None, "{kind:?}");
        assert_eq!(client_view(&got.out).1.len(), at_cap.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// Arbitrary JSON, biased towards the shapes of chat and embeddings requests.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let key = prop::sample::select(
        &[
            "model",
            "messages",
            "role",
            "content",
            "type",
            "text",
            "image_url",
            "url",
            "tools",
            "tool_calls",
            "tool_call_id",
            "function",
            "name",
            "arguments",
            "parameters",
            "tool_choice",
            "response_format",
            "json_schema",
            "schema",
            "stream",
            "stream_options",
            "include_usage",
            "stop",
            "max_tokens",
            "temperature",
            "n",
            "input",
            "encoding_format",
            "dimensions",
            "user",
            // Response shapes, for the whole-response parsers.
            "choices",
            "candidates",
            "parts",
            "message",
            "usage",
            "finishReason",
            "stop_reason",
            "tool_use",
            "output",
            "functionCall",
            "args",
            "done",
            "id",
        ][..],
    )
    .prop_map(str::to_string);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(
            &[
                "user",
                "assistant",
                "system",
                "tool",
                "developer",
                "text",
                "image_url",
                "function",
                "auto",
                "none",
                "required",
                "json_object",
                "json_schema",
                "base64",
                "float",
                "data:image/png;base64,AAAA",
                "https://example.com/a.png",
            ][..]
        )
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(6, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A top-level object with the request fields set to arbitrary values.
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            prop::sample::select(
                &[
                    "model",
                    "messages",
                    "stream",
                    "stream_options",
                    "tools",
                    "tool_choice",
                    "response_format",
                    "stop",
                    "max_tokens",
                    "n",
                    "input",
                    "encoding_format",
                    "dimensions",
                ][..],
            ),
            json_value(),
        ),
        0..8,
    )
    .prop_map(|fields| {
        let map: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        serde_json::to_vec(&map).unwrap()
    })
}

/// Runs every parser over a body; none may panic, and a parsed body rewrites to valid JSON.
fn exercise_request(bytes: &[u8]) {
    let Ok(body) = RequestBody::parse(bytes) else {
        return;
    };
    let _ = body.include_usage();
    let _ = body.bool_field("stream");
    let _ = body.required_str("model");
    if let Ok(chat) = ChatRequest::from_body(&body) {
        let _ = chat.max_output_tokens();
        for m in &chat.messages {
            if let Some(c) = &m.content {
                let _ = c.joined_text();
            }
        }
    }
    if let Ok(e) = EmbeddingsRequest::from_body(&body) {
        let _ = e.input.texts("fuzz");
    }
    let mut out = Vec::new();
    body.write_with(&[("model", "\"m\"")], &["stream"], &mut out);
    let rewritten = RequestBody::parse(&out).expect("a rewritten body parses again");
    assert_eq!(rewritten.get("model").map(|v| v.get()), Some("\"m\""));
    assert!(rewritten.fields().all(|(k, _)| k != "stream"));
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn request_parsers_never_panic_on_arbitrary_bytes(
        bytes in json_soup(),
    ) {
        exercise_request(&bytes);
    }

    #[test]
    fn request_parsers_never_panic_on_arbitrary_json(bytes in request_body()) {
        exercise_request(&bytes);
    }
}

/// Bytes made mostly of JSON tokens, so random input gets past the first byte.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\"model\"",
        "\"messages\"",
        "\"role\"",
        "\"content\"",
        "null",
        "true",
        "1",
        "-0.5",
        "1e999",
        "\\u0000",
        "\\ud800",
        " ",
    ];
    let token = prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(token, 0..48).prop_map(|ts| ts.concat())
}

/// A chat request shaped enough to get past the typed parser, with arbitrary values inside.
fn chat_body() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        4 => "\\PC{0,16}".prop_map(|t| json!({"type": "text", "text": t})),
        2 => prop::sample::select(&[
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/jpeg;base64,",
            "data:;base64,@@",
            "https://example.com/a.png",
            "",
        ][..])
        .prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
        1 => json_value(),
    ];
    let content = prop_oneof![
        3 => "\\PC{0,24}".prop_map(Value::String),
        2 => prop::collection::vec(part, 0..3).prop_map(Value::Array),
        1 => Just(Value::Null),
    ];
    let call = ("fn_[a-z]{0,6}", "\\PC{0,16}", any::<bool>()).prop_map(|(n, a, object)| {
        // Arguments as OpenAI sends them (JSON text), or as arbitrary text.
        let a = if object {
            json!({ "q": a }).to_string()
        } else {
            a
        };
        json!({"id": "call_1", "type": "function", "function": {"name": n, "arguments": a}})
    });
    let role = prop_oneof![
        8 => prop::sample::select(&["system", "user", "assistant", "tool", "developer"][..]),
        1 => Just("x"),
    ];
    let message = (
        role,
        content,
        prop::option::weighted(0.3, prop::collection::vec(call, 0..3)),
        prop::option::weighted(0.3, prop::sample::select(&["call_1", "", "other"][..])),
    )
        .prop_map(|(role, content, calls, tool_call_id)| {
            let mut m = json!({"role": role, "content": content});
            if let Some(c) = calls {
                m["tool_calls"] = Value::Array(c);
            }
            if let Some(id) = tool_call_id {
                m["tool_call_id"] = json!(id);
            }
            m
        });
    let tool = ("fn_[a-z]{0,6}", json_value()).prop_map(
        |(n, params)| json!({"type": "function", "function": {"name": n, "parameters": params}}),
    );
    let tool_choice = prop_oneof![
        3 => prop::sample::select(&["auto", "none", "required"][..]).prop_map(|c| json!(c)),
        2 => "fn_[a-z]{0,6}".prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        1 => json_value(),
    ];
    let response_format = prop_oneof![
        2 => prop::sample::select(&["text", "json_object"][..]).prop_map(|t| json!({"type": t})),
        2 => json_value().prop_map(|schema| json!({"type": "json_schema",
            "json_schema": {"name": "out", "schema": schema, "strict": true}})),
        1 => json_value(),
    ];
    let stop = prop_oneof![
        "\\PC{0,6}".prop_map(Value::String),
        prop::collection::vec("\\PC{0,6}", 0..5).prop_map(|v| json!(v)),
    ];
    (
        prop::collection::vec(message, 1..5),
        prop::option::weighted(0.4, prop::collection::vec(tool, 0..3)),
        prop::option::weighted(0.3, tool_choice),
        prop::option::weighted(0.3, response_format),
        any::<bool>(),
        prop::option::weighted(0.2, stop),
    )
        .prop_map(
            |(messages, tools, tool_choice, response_format, stream, stop)| {
                let mut body = json!({"model": "m", "messages": messages, "stream": stream});
                for (k, v) in [
                    ("tools", tools.map(Value::Array)),
                    ("tool_choice", tool_choice),
                    ("response_format", response_format),
                    ("stop", stop),
                ] {
                    if let Some(v) = v {
                        body[k] = v;
                    }
                }
                serde_json::to_vec(&body).unwrap()
            },
        )
}

fn request_context(stream: bool) -> RequestContext<'static> {
    RequestContext {
        op: Operation::Chat,
        model: "m",
        stream,
        include_usage: stream,
        response_id: "chatcmpl-fuzz",
        created: 1,
        drop_params: true,
        embeddings_base64: false,
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Every provider turns any chat request into its native request without panicking: a
    /// request it builds carries a JSON body that parses, a request it refuses gets a 4xx.
    #[test]
    fn request_translation_never_panics(kind in kind(), body in chat_body()) {
        static CLIENT: OnceLock<UpstreamClient> = OnceLock::new();
        let client = CLIENT.get_or_init(|| UpstreamClient::new(1));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let index = KINDS.iter().position(|k| *k == kind).unwrap();
        let parsed = RequestBody::parse(&body).expect("the generator writes JSON objects");
        let stream = parsed.bool_field("stream").unwrap_or(false);
        let built = runtime.block_on(providers()[index].build_request(
            &parsed,
            &request_context(stream),
            client,
        ));
        match built {
            // The request is the client's: anything wrong with it is a 4xx that says so.
            Err(e) => prop_assert!(
                (400..500).contains(&e.status) && !e.message.is_empty(),
                "{kind:?} answered a client request with {}: {}",
                e.status,
                e.message
            ),
            Ok(request) => prop_assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(&request.body).is_ok(),
                "{kind:?} built a body that is not JSON: {}",
                String::from_utf8_lossy(&request.body)
            ),
        }
    }

    /// Every provider's whole-response parser survives arbitrary JSON and arbitrary bytes.
    #[test]
    fn response_parsing_never_panics(
        kind in kind(),
        body in prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            json_soup(),
        ],
    ) {
        let index = KINDS.iter().position(|k| *k == kind).unwrap();
        let _ = providers()[index].parse_response(&body, &request_context(false));
    }
}
