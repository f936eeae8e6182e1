//! The cost corpus: usages priced through the table lookup and LiteLLM's rules, each expected
//! value written out by hand from the table row's rates (checked against the row first, so a
//! table update that changes a price fails here instead of passing silently).

use super::*;
use crate::openai::Usage;

/// Asserts the row a deployment resolves to has these rates (input, output, cache read,
/// cache creation).
fn rates(provider: &str, model: &str) -> ModelPrice {
    Price::resolve(provider, model, None, None, None)
        .unwrap_or_else(|| panic!("{provider}/{model} is priced"))
        .rates
}

fn cost(provider: &str, model: &str, usage: Usage) -> Option<f64> {
    Price::resolve(provider, model, None, None, None).map(|p| p.cost(&usage))
}

fn close(got: Option<f64>, want: f64) {
    let got = got.expect("a cost");
    assert!(
        (got - want).abs() <= want.abs() * 1e-12 + 1e-18,
        "cost {got} != expected {want}"
    );
}

/// One case of the corpus: a name as configured, a usage, the cost LiteLLM computes.
struct Case {
    what: &'static str,
    provider: &'static str,
    model: &'static str,
    usage: Usage,
    expected: f64,
}

#[test]
fn corpus_matches_litellm_rules() {
    // The rates every case below is written from.
    let sonnet = rates("anthropic", "claude-sonnet-4-5");
    assert_eq!(
        (
            sonnet.input,
            sonnet.output,
            sonnet.cache_read,
            sonnet.cache_creation
        ),
        (Some(3e-6), Some(1.5e-5), Some(3e-7), Some(3.75e-6))
    );
    assert_eq!(sonnet.cache_creation_1h, Some(6e-6));
    let gpt4o = rates("openai", "gpt-4o");
    assert_eq!(
        (gpt4o.input, gpt4o.output, gpt4o.cache_read),
        (Some(2.5e-6), Some(1e-5), Some(1.25e-6))
    );
    let gemini_pro = rates("gemini", "gemini-2.5-pro");
    assert_eq!(
        (gemini_pro.input, gemini_pro.output, gemini_pro.cache_read),
        (Some(1.25e-6), Some(1e-5), Some(1.25e-7))
    );
    let above = &gemini_pro.thresholds[0];
    assert_eq!(
        (above.tokens, above.input, above.output, above.cache_read),
        (200_000.0, 2.5e-6, Some(1.5e-5), Some(2.5e-7))
    );
    let grok = rates("xai", "grok-4-fast-reasoning");
    assert_eq!((grok.input, grok.output), (Some(2e-7), Some(5e-7)));
    assert_eq!(
        (
            grok.thresholds[0].tokens,
            grok.thresholds[0].input,
            grok.thresholds[0].output
        ),
        (128_000.0, 4e-7, Some(1e-6))
    );
    let qwen = rates("dashscope", "qwen-turbo");
    assert_eq!(
        (qwen.input, qwen.output, qwen.reasoning),
        (Some(5e-8), Some(2e-7), Some(5e-7))
    );
    let gpt5 = rates("openai", "gpt-5");
    assert_eq!(
        (gpt5.input, gpt5.output, gpt5.reasoning),
        (Some(1.25e-6), Some(1e-5), None)
    );
    let bedrock = rates("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_eq!(
        (
            bedrock.input,
            bedrock.output,
            bedrock.cache_read,
            bedrock.cache_creation
        ),
        (Some(3e-6), Some(1.5e-5), Some(3e-7), Some(3.75e-6))
    );
    let flash = rates("gemini", "gemini-1.5-flash");
    assert_eq!((flash.input, flash.output), (Some(7.5e-8), Some(0.0)));
    assert_eq!(
        (
            flash.thresholds[0].tokens,
            flash.thresholds[0].input,
            flash.thresholds[0].output
        ),
        (128_000.0, 1.5e-7, None)
    );
    let embed = rates("openai", "text-embedding-3-small");
    assert_eq!(embed.input, Some(2e-8));

    let cases = [
        Case {
            what: "plain chat: tokens × rates",
            provider: "openai",
            model: "gpt-4o",
            usage: Usage::new(1000, 500),
            expected: 1000.0 * 2.5e-6 + 500.0 * 1e-5,
        },
        Case {
            what: "OpenAI cached prompt tokens at the cache-read rate, out of the input count",
            provider: "openai",
            model: "gpt-4o",
            usage: Usage::new(1000, 500).with_cached(400),
            expected: 600.0 * 2.5e-6 + 400.0 * 1.25e-6 + 500.0 * 1e-5,
        },
        Case {
            what: "Anthropic cache read and cache creation",
            provider: "anthropic",
            model: "claude-sonnet-4-5",
            // input_tokens 800 + cache_read 100 + cache_creation 100
            usage: Usage::new(1000, 500)
                .with_cached(100)
                .with_cache_creation(100, 0),
            expected: 800.0 * 3e-6 + 100.0 * 3e-7 + 100.0 * 3.75e-6 + 500.0 * 1.5e-5,
        },
        Case {
            what: "Anthropic one-hour cache writes at their own rate",
            provider: "anthropic",
            model: "claude-sonnet-4-5",
            usage: Usage::new(1000, 500).with_cache_creation(100, 40),
            expected: 900.0 * 3e-6 + 60.0 * 3.75e-6 + 40.0 * 6e-6 + 500.0 * 1.5e-5,
        },
        Case {
            what: "above 200k: the higher rates for every token, cache reads included",
            provider: "gemini",
            model: "gemini-2.5-pro",
            usage: Usage::new(250_000, 1000).with_cached(50_000),
            expected: 200_000.0 * 2.5e-6 + 50_000.0 * 2.5e-7 + 1000.0 * 1.5e-5,
        },
        Case {
            what: "exactly at the threshold: still the base rates (`>`)",
            provider: "gemini",
            model: "gemini-2.5-pro",
            usage: Usage::new(200_000, 1000),
            expected: 200_000.0 * 1.25e-6 + 1000.0 * 1e-5,
        },
        Case {
            what: "xAI bills the higher tier once the prompt reaches the threshold (`>=`)",
            provider: "xai",
            model: "grok-4-fast-reasoning",
            usage: Usage::new(128_000, 100),
            expected: 128_000.0 * 4e-7 + 100.0 * 1e-6,
        },
        Case {
            what: "xAI below the threshold",
            provider: "xai",
            model: "grok-4-fast-reasoning",
            usage: Usage::new(127_999, 100),
            expected: 127_999.0 * 2e-7 + 100.0 * 5e-7,
        },
        Case {
            what: "reasoning tokens at the row's reasoning rate, the rest at the output rate",
            provider: "dashscope",
            model: "qwen-turbo",
            usage: Usage::new(100, 1000).with_reasoning(600),
            expected: 100.0 * 5e-8 + 400.0 * 2e-7 + 600.0 * 5e-7,
        },
        Case {
            what: "reasoning without a reasoning rate is output",
            provider: "openai",
            model: "gpt-5",
            usage: Usage::new(100, 1000).with_reasoning(600),
            expected: 100.0 * 1.25e-6 + 1000.0 * 1e-5,
        },
        Case {
            what: "Bedrock cross-region profile behind a route prefix, stripped to the base row",
            provider: "bedrock",
            model: "converse/eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
            usage: Usage::new(1000, 10).with_cached(200),
            expected: 800.0 * 3e-6 + 200.0 * 3e-7 + 10.0 * 1.5e-5,
        },
        Case {
            what: "Gemini stable version suffix stripped (`-002`), its 128k tier (no tier \
                   output rate: the base one stays)",
            provider: "gemini",
            model: "gemini-1.5-flash-002",
            usage: Usage::new(130_000, 10),
            expected: 130_000.0 * 1.5e-7 + 10.0 * 0.0,
        },
        Case {
            what: "same model under the tier",
            provider: "gemini",
            model: "gemini-1.5-flash-002",
            usage: Usage::new(1000, 10),
            expected: 1000.0 * 7.5e-8,
        },
        Case {
            what: "provider-prefixed row (`azure/gpt-4o`)",
            provider: "azure",
            model: "gpt-4o",
            usage: Usage::new(1000, 100),
            expected: 1000.0 * 2.5e-6 + 100.0 * 1e-5,
        },
        Case {
            what: "embeddings: input only",
            provider: "openai",
            model: "text-embedding-3-small",
            usage: Usage::new(1000, 0),
            expected: 1000.0 * 2e-8,
        },
        Case {
            what: "over-reported cache counts never bill negative input",
            provider: "openai",
            model: "gpt-4o",
            usage: Usage::new(100, 0).with_cached(150),
            expected: 150.0 * 1.25e-6,
        },
    ];
    for c in &cases {
        let got = cost(c.provider, c.model, c.usage);
        let got = got.unwrap_or_else(|| panic!("{}: {}/{} is priced", c.what, c.provider, c.model));
        assert!(
            (got - c.expected).abs() <= c.expected.abs() * 1e-12 + 1e-18,
            "{}: {}/{}: cost {got} != expected {}",
            c.what,
            c.provider,
            c.model,
            c.expected
        );
    }
}

#[test]
fn configured_prices_replace_the_tables() {
    // litellm_params input/output prices win; the row's cache-read rate still applies.
    let p = Price::resolve("openai", "gpt-4o", None, Some(1e-6), Some(2e-6)).unwrap();
    close(
        Some(p.cost(&Usage::new(1000, 100).with_cached(400))),
        600.0 * 1e-6 + 400.0 * 1.25e-6 + 100.0 * 2e-6,
    );
    // One price configured: the other is the table's.
    let p = Price::resolve("openai", "gpt-4o", None, None, Some(2e-6)).unwrap();
    close(
        Some(p.cost(&Usage::new(1000, 100))),
        1000.0 * 2.5e-6 + 100.0 * 2e-6,
    );
    // A model the table does not know is priced by its configuration alone.
    let p = Price::resolve("hosted_vllm", "my-llama", None, Some(1e-7), Some(3e-7)).unwrap();
    close(
        Some(p.cost(&Usage::new(1000, 100))),
        1000.0 * 1e-7 + 100.0 * 3e-7,
    );
    // `model_info.base_model` names the row (Azure deployments named by the customer).
    let p = Price::resolve("azure", "my-deployment", Some("gpt-4o"), None, None).unwrap();
    close(Some(p.cost(&Usage::new(1000, 0))), 1000.0 * 2.5e-6);
}

#[test]
fn unpriced_models_have_no_cost_not_zero() {
    assert!(Price::resolve("openai", "my-private-model", None, None, None).is_none());
    assert!(Price::resolve("hosted_vllm", "llama", None, None, None).is_none());
    // A bare name priced under another provider is not borrowed.
    assert!(Price::resolve("groq", "claude-sonnet-4-5", None, None, None).is_none());
}

#[test]
fn stream_usage_chunks_get_the_cost() {
    let mut out = BytesMut::from(
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\"}}],\"usage\":null}\n\ndata: {\"id\":\"x\",\"choices\":[],\"usage\": {\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n"[..],
    );
    assert!(stamp_stream_usage(&mut out, || 0.00025));
    let text = std::str::from_utf8(&out).unwrap();
    let chunk = text.split("\n\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(chunk.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["usage"]["cost"], 0.00025);
    assert_eq!(v["usage"]["total_tokens"], 7);
    // The escaped text in the first chunk was left alone.
    let first: serde_json::Value = serde_json::from_str(
        text.split("\n\n")
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "\"usage\":{");

    let mut none = BytesMut::from(&b"data: {\"usage\":null}\n\n"[..]);
    assert!(!stamp_stream_usage(&mut none, || unreachable!()));
    assert_eq!(&none[..], b"data: {\"usage\":null}\n\n");
}

#[test]
fn estimates_for_streams_without_final_usage() {
    assert_eq!(estimate_usage(None, 400, 7), Usage::new(100, 7));
    // Anthropic's message_start counts are kept; the output count grows to what was sent.
    let known = Usage::new(30, 1).with_cached(5);
    let u = estimate_usage(Some(known), 400, 12);
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
        (30, 12, 5)
    );
}
