//! LiteLLM's price table (`model_prices.json`, vendored unchanged: see `LICENSE-litellm` and
//! `README.md` here), parsed once on first use into compact [`ModelPrice`] rows, and the model
//! lookup LiteLLM's `get_model_info` does: `provider/model`, the bare model, then the names with
//! a provider's version or region decoration stripped, each exact then case-insensitive, and
//! each accepted only when the row's `litellm_provider` fits the deployment's provider.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The table, embedded in the binary.
const TABLE_JSON: &str = include_str!("model_prices.json");

/// One priced model: the rates (USD) LiteLLM's generic cost rules read. `None` is a rate the
/// row does not have (LiteLLM then prices those tokens at 0, or falls back as noted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelPrice {
    /// `litellm_provider`.
    pub provider: String,
    /// `input_cost_per_token`.
    pub input: Option<f64>,
    /// `output_cost_per_token`.
    pub output: Option<f64>,
    /// `cache_read_input_token_cost`.
    pub cache_read: Option<f64>,
    /// `cache_creation_input_token_cost`.
    pub cache_creation: Option<f64>,
    /// `cache_creation_input_token_cost_above_1hr`: one-hour cache writes.
    pub cache_creation_1h: Option<f64>,
    /// `output_cost_per_reasoning_token` (absent: reasoning is priced as output).
    pub reasoning: Option<f64>,
    /// `output_cost_per_image_token`: the output rate when the row has no (or a zero) output
    /// rate (image models).
    pub output_image_token: Option<f64>,
    /// `*_above_{N}_tokens` rate sets, largest threshold first.
    pub thresholds: Vec<Threshold>,
    /// `max_input_tokens`: the context window (router pre-call checks, `/model/info`).
    pub max_input_tokens: Option<u64>,
    /// `max_output_tokens` (`/model/info`).
    pub max_output_tokens: Option<u64>,
}

/// The rates that replace the base ones for every token of a request whose prompt exceeds
/// `tokens` (LiteLLM's above-threshold pricing is not marginal).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub tokens: f64,
    /// `input_cost_per_token_above_{N}_tokens`.
    pub input: f64,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_creation: Option<f64>,
    pub cache_creation_1h: Option<f64>,
}

/// The parsed table: rows and the two indexes LiteLLM looks names up in.
pub struct Table {
    rows: Vec<ModelPrice>,
    exact: HashMap<String, usize>,
    /// Lower-cased name → row (the last row wins, as LiteLLM's lower-case map).
    folded: HashMap<String, usize>,
}

/// The table, parsed on first use. Deployments resolve their prices when a snapshot is built,
/// so the parse happens at start (or the first reload), never on a request.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::parse(TABLE_JSON).expect("the vendored price table parses"))
}

/// Service-tier variants of a rate key (`_priority`, `_flex`, `_batches`, …), which the
/// threshold scan skips as LiteLLM does.
const SERVICE_TIER_SUFFIXES: &[&str] = &["_ultrafast", "_priority", "_batches", "_flex", "_fast"];

/// A rate as LiteLLM reads one: a number, or a string holding one (`"3e-7"`).
fn rate(row: &Map<String, Value>, key: &str) -> Option<f64> {
    match row.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `input_cost_per_token_above_128k_tokens` → 128000; `..._above_1000_tokens` → 1000.
fn threshold_of(key: &str) -> Option<(f64, &str)> {
    let tail = key.strip_prefix("input_cost_per_token_above_")?;
    let n = tail.strip_suffix("_tokens")?;
    let tokens = match n.strip_suffix('k') {
        Some(k) => k.parse::<f64>().ok()? * 1000.0,
        None => n.parse::<f64>().ok()?,
    };
    Some((tokens, n))
}

impl ModelPrice {
    fn from_row(row: &Map<String, Value>) -> ModelPrice {
        let mut thresholds = Vec::new();
        for key in row.keys() {
            if SERVICE_TIER_SUFFIXES.iter().any(|s| key.ends_with(s)) {
                continue;
            }
            let Some((tokens, n)) = threshold_of(key) else {
                continue;
            };
            let Some(input) = rate(row, key) else {
                continue;
            };
            thresholds.push(Threshold {
                tokens,
                input,
                output: rate(row, &format!("output_cost_per_token_above_{n}_tokens")),
                cache_read: rate(
                    row,
                    &format!("cache_read_input_token_cost_above_{n}_tokens"),
                ),
                cache_creation: rate(
                    row,
                    &format!("cache_creation_input_token_cost_above_{n}_tokens"),
                ),
                cache_creation_1h: rate(
                    row,
                    &format!("cache_creation_input_token_cost_above_1hr_above_{n}_tokens"),
                ),
            });
        }
        thresholds.sort_by(|a, b| b.tokens.total_cmp(&a.tokens));
        ModelPrice {
            provider: row
                .get("litellm_provider")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            input: rate(row, "input_cost_per_token"),
            output: rate(row, "output_cost_per_token"),
            cache_read: rate(row, "cache_read_input_token_cost"),
            cache_creation: rate(row, "cache_creation_input_token_cost"),
            cache_creation_1h: rate(row, "cache_creation_input_token_cost_above_1hr"),
            reasoning: rate(row, "output_cost_per_reasoning_token"),
            output_image_token: rate(row, "output_cost_per_image_token"),
            thresholds,
            max_input_tokens: rate(row, "max_input_tokens").map(|n| n as u64),
            max_output_tokens: rate(row, "max_output_tokens").map(|n| n as u64),
        }
    }
}

impl Table {
    /// Parses a LiteLLM price table. Entries that are not model rows (`sample_spec`, and
    /// metadata such as `last_updated` or rule lists without a `litellm_provider`) are skipped.
    pub fn parse(json: &str) -> Result<Table, serde_json::Error> {
        let all: Map<String, Value> = serde_json::from_str(json)?;
        let mut rows = Vec::with_capacity(all.len());
        let mut exact = HashMap::with_capacity(all.len());
        let mut folded = HashMap::with_capacity(all.len());
        for (name, row) in &all {
            let Value::Object(row) = row else { continue };
            if name == "sample_spec" || !row.contains_key("litellm_provider") {
                continue;
            }
            exact.insert(name.clone(), rows.len());
            folded.insert(name.to_lowercase(), rows.len());
            rows.push(ModelPrice::from_row(row));
        }
        Ok(Table {
            rows,
            exact,
            folded,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A row by its exact name.
    pub fn get(&self, name: &str) -> Option<&ModelPrice> {
        self.exact.get(name).map(|&i| &self.rows[i])
    }

    /// LiteLLM's `_get_model_cost_key`: the exact name, else the name case-insensitively.
    fn key(&self, name: &str) -> Option<&ModelPrice> {
        self.get(name).or_else(|| {
            self.folded
                .get(&name.to_lowercase())
                .map(|&i| &self.rows[i])
        })
    }

    /// The row LiteLLM's `get_model_info(model, custom_llm_provider)` finds, or `None` when
    /// the model is not in the table ("This model isn't mapped yet").
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&ModelPrice> {
        let provider = if provider == "vertex_ai_beta" {
            "vertex_ai"
        } else {
            provider
        };
        let names = potential_names(provider, model);
        names
            .iter()
            .filter_map(|name| self.key(name))
            .find(|row| provider_matches(&row.provider, provider))
    }
}

/// LiteLLM's `_get_potential_model_names` with a provider given, in lookup order:
/// `provider/model`, `model`, `provider/stripped`, `stripped`, the model without its prefix.
fn potential_names(provider: &str, model: &str) -> [String; 5] {
    match model
        .strip_prefix(provider)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(split) => {
            let stripped = strip_model_name(provider, split);
            [
                model.to_string(),
                model.to_string(),
                format!("{provider}/{stripped}"),
                stripped,
                split.to_string(),
            ]
        }
        None => {
            let stripped = strip_model_name(provider, model);
            [
                format!("{provider}/{model}"),
                model.to_string(),
                format!("{provider}/{stripped}"),
                stripped,
                model.to_string(),
            ]
        }
    }
}

/// Bedrock cross-region inference profile prefixes (`us.anthropic.claude-…`).
const BEDROCK_GEO_PREFIXES: &[&str] = &["us", "eu", "apac", "global", "jp", "au", "ca", "us-gov"];

/// LiteLLM's `_strip_model_name`: Bedrock's route and region decorations, Vertex/Gemini/
/// Databricks stable-version suffixes (`-001`), OpenAI fine-tune ids.
fn strip_model_name(provider: &str, model: &str) -> String {
    match provider {
        "bedrock" | "bedrock_converse" => bedrock_base_model(model).to_string(),
        "vertex_ai" | "gemini" | "databricks" => strip_version_suffix(model).to_string(),
        _ if model.contains("ft:") => strip_finetune(model).to_string(),
        _ => model.to_string(),
    }
}

/// `converse/us.anthropic.claude-…` → `anthropic.claude-…`; `us-east-1/model` → `model`.
fn bedrock_base_model(model: &str) -> &str {
    let mut m = model;
    for route in [
        "bedrock/",
        "converse/",
        "invoke/",
        "openai/",
        "llama/",
        "deepseek_r1/",
    ] {
        if let Some(rest) = m.strip_prefix(route) {
            m = rest;
        }
    }
    if let Some((geo, rest)) = m.split_once('.') {
        if BEDROCK_GEO_PREFIXES.contains(&geo) {
            return rest;
        }
    }
    if let Some((region, rest)) = m.split_once('/') {
        let looks_like_region = region.split('-').count() >= 3
            && region.ends_with(|c: char| c.is_ascii_digit())
            && region.starts_with(|c: char| c.is_ascii_lowercase());
        if looks_like_region {
            return rest;
        }
    }
    m
}

/// `gemini-1.5-pro-002` → `gemini-1.5-pro` (LiteLLM's `re.sub(r"-\d+$", "", name)`).
fn strip_version_suffix(model: &str) -> &str {
    let trimmed = model.trim_end_matches(|c: char| c.is_ascii_digit());
    match trimmed.strip_suffix('-') {
        Some(base) if trimmed.len() < model.len() => base,
        _ => model,
    }
}

/// `ft:gpt-3.5-turbo:my-org:custom_suffix:id` → `ft:gpt-3.5-turbo` (drops the last three
/// `:`-separated parts).
fn strip_finetune(model: &str) -> &str {
    let mut end = model.len();
    for _ in 0..3 {
        match model[..end].rfind(':') {
            Some(i) if i + 1 < end => end = i,
            _ => return model,
        }
    }
    &model[..end]
}

/// LiteLLM's `_check_provider_match`.
fn provider_matches(row_provider: &str, provider: &str) -> bool {
    if row_provider.is_empty() || row_provider == provider {
        return true;
    }
    (provider == "vertex_ai" && row_provider.starts_with("vertex_ai"))
        || (provider == "fireworks_ai" && row_provider.starts_with("fireworks_ai"))
        || (provider.starts_with("bedrock") && row_provider.starts_with("bedrock"))
        || provider == "litellm_proxy"
        || (provider == "azure_ai" && matches!(row_provider, "azure" | "openai"))
        || provider == "github"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_table_parses_into_model_rows() {
        let t = table();
        assert!(t.len() > 2000, "{} rows", t.len());
        assert!(t.get("sample_spec").is_none());
        assert!(t.get("last_updated").is_none());
        let row = t.get("claude-sonnet-4-5").expect("row");
        assert_eq!(row.provider, "anthropic");
        assert_eq!(row.input, Some(3e-6));
        assert_eq!(row.thresholds[0].tokens, 200_000.0);
    }

    #[test]
    fn names_are_stripped_as_litellm_strips_them() {
        assert_eq!(strip_version_suffix("gemini-1.5-pro-002"), "gemini-1.5-pro");
        assert_eq!(strip_version_suffix("gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(strip_version_suffix("12"), "12");
        assert_eq!(
            strip_finetune("ft:gpt-3.5-turbo:my-org:custom_suffix:id"),
            "ft:gpt-3.5-turbo"
        );
        assert_eq!(strip_finetune("ft:gpt-4o"), "ft:gpt-4o");
        assert_eq!(
            bedrock_base_model("converse/us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1:0"
        );
        assert_eq!(
            bedrock_base_model("us-east-1/amazon.titan-embed-text-v2:0"),
            "amazon.titan-embed-text-v2:0"
        );
        assert_eq!(
            threshold_of("input_cost_per_token_above_128k_tokens")
                .unwrap()
                .0,
            128_000.0
        );
        assert_eq!(
            threshold_of("input_cost_per_token_above_1000_tokens")
                .unwrap()
                .0,
            1000.0
        );
    }

    #[test]
    fn lookups_check_the_rows_provider() {
        let t = table();
        // `openai/gpt-4o` is not a row: the bare name is, and it is OpenAI's.
        assert_eq!(t.lookup("openai", "gpt-4o").unwrap().provider, "openai");
        // A bare name priced for another provider is not taken.
        assert!(t.lookup("groq", "gpt-4o").is_none());
        // Case-insensitive, as LiteLLM.
        assert!(t.lookup("anthropic", "Claude-Sonnet-4-5").is_some());
        assert!(t.lookup("openai", "no-such-model-anywhere").is_none());
    }
}
