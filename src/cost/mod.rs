//! What a call cost, in USD, computed from its usage as LiteLLM's `completion_cost` does.
//!
//! - [`table`]: LiteLLM's price table, vendored and parsed once, and its model lookup.
//! - [`Price`]: one deployment's effective rates, resolved when a snapshot is built (the
//!   table row for its model, with `litellm_params`/`model_info` prices over it), so a request
//!   only multiplies: no lookup, no hashing.
//! - [`Price::cost`]: LiteLLM's `generic_cost_per_token` rules: cached prompt tokens at the
//!   cache-read rate and cache writes at the cache-creation rate (one-hour writes at theirs),
//!   both taken out of the regular input count; reasoning tokens at the reasoning rate (the
//!   output rate when there is none); and above a prompt-size threshold
//!   (`*_above_200k_tokens`) that threshold's rates for every token of the request. A rate
//!   the row lacks prices its tokens at 0, as LiteLLM does; a model the table does not know
//!   (and no configured price) has no [`Price`]: its cost is `None`, never a silent 0.
//! - [`stamp_stream_usage`]: writes the cost into a stream's final usage chunk
//!   (`usage.cost`, as LiteLLM's `include_cost_in_streaming_usage`).
//!
//! Not modelled (LiteLLM prices them from fields our usage does not carry): service tiers
//! (`_priority`/`_flex`), audio/image/video token and per-second/per-character prices,
//! `tiered_pricing` tables (dashscope rows only), regional uplifts, web-search and tool fees.

pub mod table;

use crate::config::DeploymentConfig;
use crate::openai::Usage;
use bytes::BytesMut;
use std::sync::Arc;
pub use table::{table, ModelPrice};

/// A deployment's effective rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub rates: ModelPrice,
    /// xAI bills the higher tier once the prompt *reaches* the threshold (`>=`); everyone
    /// else once it exceeds it.
    pub inclusive_thresholds: bool,
}

impl Price {
    /// The rates for a deployment: `model_info.base_model` (LiteLLM prices Azure deployments
    /// by it) or `litellm_params.model`, looked up in the table with the deployment's
    /// provider; the configured `input_cost_per_token`/`output_cost_per_token`
    /// (`litellm_params`, else `model_info`) replace the table's. `None`: nothing prices it.
    pub fn for_deployment(dep: &DeploymentConfig) -> Option<Arc<Price>> {
        Self::resolve(
            &dep.provider,
            &dep.model,
            dep.model_info.base_model.as_deref(),
            dep.params.input_cost_per_token,
            dep.params.output_cost_per_token,
        )
        .map(Arc::new)
    }

    /// [`Price::for_deployment`] from its parts.
    pub fn resolve(
        provider: &str,
        model: &str,
        base_model: Option<&str>,
        input_override: Option<f64>,
        output_override: Option<f64>,
    ) -> Option<Price> {
        let t = table();
        let row = base_model
            .and_then(|b| t.lookup(provider, b))
            .or_else(|| t.lookup(provider, model));
        let mut rates = match (row, input_override, output_override) {
            (Some(row), _, _) => row.clone(),
            (None, None, None) => return None,
            (None, _, _) => ModelPrice {
                provider: provider.to_string(),
                ..ModelPrice::default()
            },
        };
        if let Some(p) = input_override {
            rates.input = Some(p);
        }
        if let Some(p) = output_override {
            rates.output = Some(p);
        }
        Some(Price {
            rates,
            inclusive_thresholds: provider == "xai",
        })
    }

    /// The cost of a call with this usage, in USD (LiteLLM's `generic_cost_per_token`:
    /// prompt cost plus completion cost).
    pub fn cost(&self, usage: &Usage) -> f64 {
        let r = &self.rates;
        let prompt = usage.prompt_tokens;
        let cache_hit = usage.cached_tokens();
        let cache_creation = usage.cache_creation_tokens();
        let one_hour = usage
            .prompt_tokens_details
            .map_or(0, |d| d.cache_creation_1h_tokens);
        // Cached tokens and cache writes are inside prompt_tokens: what is left is billed at
        // the input rate (never below zero when a provider over-reports).
        let text = prompt.saturating_sub(cache_hit + cache_creation);

        let mut input = r.input.unwrap_or(0.0);
        let mut output = r.output.unwrap_or(0.0);
        if output == 0.0 {
            if let Some(image) = r.output_image_token {
                output = image;
            }
        }
        let mut cache_creation_rate = r.cache_creation.unwrap_or(0.0);
        let mut cache_creation_1h_rate = r.cache_creation_1h.unwrap_or(0.0);
        let mut cache_read_rate = r.cache_read.unwrap_or(0.0);
        let prompt_f = prompt as f64;
        if let Some(t) = r
            .thresholds
            .iter()
            .find(|t| prompt_f > t.tokens || (self.inclusive_thresholds && prompt_f == t.tokens))
        {
            input = t.input;
            output = t.output.unwrap_or(output);
            cache_creation_rate = t.cache_creation.unwrap_or(cache_creation_rate);
            cache_creation_1h_rate = t.cache_creation_1h.unwrap_or(cache_creation_1h_rate);
            cache_read_rate = t.cache_read.unwrap_or(cache_read_rate);
        }

        let mut prompt_cost = text as f64 * input + cache_hit as f64 * cache_read_rate;
        if one_hour > 0 {
            let five_minutes = cache_creation.saturating_sub(one_hour);
            prompt_cost += five_minutes as f64 * cache_creation_rate;
            prompt_cost += one_hour as f64 * cache_creation_1h_rate;
        } else {
            prompt_cost += cache_creation as f64 * cache_creation_rate;
        }

        let reasoning = usage.reasoning_tokens();
        let completion_cost = if reasoning > 0 {
            let text_out = usage.completion_tokens.saturating_sub(reasoning);
            text_out as f64 * output + reasoning as f64 * r.reasoning.unwrap_or(output)
        } else {
            usage.completion_tokens as f64 * output
        };
        prompt_cost + completion_cost
    }
}

/// A usage estimate for a stream that ended without the provider's final usage (the client
/// hung up, or the upstream cut the stream): the prompt at ~4 bytes per token of the request
/// body, and one completion token per content event the client was sent (each delta carries
/// at least one). A known usage's counts are kept where they are larger.
pub fn estimate_usage(known: Option<Usage>, request_bytes: usize, events_sent: u64) -> Usage {
    let prompt_estimate = (request_bytes / 4) as u64;
    match known {
        Some(mut u) => {
            if u.prompt_tokens == 0 {
                u.prompt_tokens = prompt_estimate;
            }
            u.completion_tokens = u.completion_tokens.max(events_sent);
            u.total_tokens = u.prompt_tokens + u.completion_tokens;
            u
        }
        None => Usage::new(prompt_estimate, events_sent),
    }
}

/// Writes `"cost":<usd>` as the first member of the last `"usage":{…}` object in `out` (a
/// stream's final usage chunk); `cost` is only computed when there is one. `false` when `out`
/// has no usage object. JSON string contents cannot match: a quote inside a string is always
/// escaped.
pub fn stamp_stream_usage(out: &mut BytesMut, cost: impl FnOnce() -> f64) -> bool {
    let Some(at) = usage_object_start(out) else {
        return false;
    };
    let member = format!("\"cost\":{},", JsonNumber(cost()));
    let tail = out.split_off(at);
    out.extend_from_slice(member.as_bytes());
    out.unsplit(tail);
    true
}

/// The index just after the `{` of the last `"usage":{` (whitespace allowed around `:`).
fn usage_object_start(buf: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"usage\"";
    let mut found = None;
    for at in memchr::memmem::find_iter(buf, KEY) {
        let mut i = at + KEY.len();
        while buf.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if buf.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while buf.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if buf.get(i) == Some(&b'{') {
            found = Some(i + 1);
        }
    }
    found
}

/// An `f64` as a JSON number (finite values only reach here; anything else is written as 0).
pub struct JsonNumber(pub f64);

impl std::fmt::Display for JsonNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_finite() {
            write!(f, "{}", self.0)
        } else {
            f.write_str("0")
        }
    }
}

#[cfg(test)]
mod tests;
