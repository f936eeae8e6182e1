//! Default call parameters of a deployment: the OpenAI parameters written in its
//! `litellm_params` (`temperature`, `max_tokens`, `thinking`, …), `extra_body` (merged into the
//! body's top level, as LiteLLM and the OpenAI SDK do), `extra_headers` (sent as headers) and
//! `additional_drop_params` (parameters removed before the call). LiteLLM passes a deployment's
//! `litellm_params` as keyword arguments under the request's own, so a request that sets a
//! parameter wins. Everything is validated and turned into raw JSON / header values here, once
//! per config load; the request path only splices them in.

use super::yaml::{yaml11_number, Section};
use super::ConfigError;
use crate::openai::RequestBody;
use http::{HeaderName, HeaderValue};
use serde_json::value::RawValue;
use serde_json::Value;

/// LiteLLM's `OPENAI_CHAT_COMPLETION_PARAMS` that are call parameters (not client settings
/// such as `api_key` or `timeout`): sent with every chat call unless the request sets them.
pub const CHAT_DEFAULT_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "user",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "modalities",
    "prediction",
    "audio",
    "reasoning_effort",
    "thinking",
    "web_search_options",
    "service_tier",
];

/// Parameters that must be numbers; a numeric string (an `os.environ/` value, `4_096`) is
/// converted, anything else is a config error rather than a 400 on every call.
const NUMERIC_PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "seed",
];

/// `litellm_params` keys whose mappings are sent as HTTP headers.
pub const HEADER_PARAMS: &[&str] = &["extra_headers", "headers", "default_headers"];

/// Headers a deployment may not set: the gateway owns the framing and the body.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "content-type",
];

/// One body field added when the request does not set it.
#[derive(Debug, Clone)]
pub struct DefaultField {
    pub name: String,
    pub value: Box<RawValue>,
    /// A chat parameter (not sent to embeddings); `extra_body` fields go to both.
    pub chat_only: bool,
}

/// What a deployment adds to, and removes from, every request it is sent.
#[derive(Debug, Clone, Default)]
pub struct CallDefaults {
    /// Body fields, in config order (`extra_body` after the named parameters; a parameter
    /// named both ways keeps its named value).
    pub fields: Vec<DefaultField>,
    /// Sent as headers, replacing any the provider set under the same name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Top-level request fields removed before the call (`additional_drop_params`, or
    /// `drop_params` given as a list).
    pub drop: Vec<String>,
}

impl CallDefaults {
    /// Nothing to add or remove: the request goes out as the client sent it.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.headers.is_empty() && self.drop.is_empty()
    }

    /// The default value of a body field.
    pub fn field(&self, name: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &*f.value)
    }

    /// Whether a body needs rewriting for this operation.
    pub fn touches_body(&self, chat: bool) -> bool {
        !self.drop.is_empty() || self.fields.iter().any(|f| chat || !f.chat_only)
    }

    /// `body` as this deployment is sent it: its default fields added where the request does
    /// not set them (chat parameters for chat calls only), its dropped fields removed. `None`
    /// when nothing changes, which costs nothing.
    pub fn apply<'b>(&'b self, body: &RequestBody<'b>, chat: bool) -> Option<RequestBody<'b>> {
        if !self.touches_body(chat) {
            return None;
        }
        let add = self
            .fields
            .iter()
            .filter(|f| chat || !f.chat_only)
            .map(|f| (f.name.as_str(), &*f.value));
        Some(body.with_changes(add, &self.drop))
    }

    /// Sets the configured headers on an upstream request, replacing any the provider set
    /// under the same name (as LiteLLM's `extra_headers` do).
    pub fn apply_headers(&self, headers: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.headers.is_empty() {
            return;
        }
        headers.retain(|(name, _)| !self.headers.iter().any(|(n, _)| n == name));
        headers.extend(self.headers.iter().cloned());
    }

    /// Reads the call parameters of one `litellm_params` section (marking their keys read).
    pub fn read(lp: &mut Section<'_>) -> Result<CallDefaults, ConfigError> {
        let mut out = CallDefaults::default();
        for key in lp.keys() {
            if !CHAT_DEFAULT_PARAMS.contains(&key) {
                continue;
            }
            let path = lp.key_path(key);
            let Some(value) = lp.json(key)? else { continue };
            let value = typed_value(&path, key, value)?;
            out.fields.push(DefaultField {
                name: key.to_string(),
                value: to_raw(&path, &value)?,
                chat_only: true,
            });
        }
        let path = lp.key_path("extra_body");
        match lp.json("extra_body")? {
            None => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let item = format!("{path}.{name}");
                    if out.fields.iter().any(|f| f.name == name) {
                        continue;
                    }
                    if matches!(name.as_str(), "model" | "messages" | "input" | "stream") {
                        return Err(ConfigError::new(
                            item,
                            "the request's own field cannot be given a default",
                        ));
                    }
                    out.fields.push(DefaultField {
                        value: to_raw(&item, &value)?,
                        name,
                        chat_only: false,
                    });
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "expected a mapping of body fields, found {}",
                        json_type(&other)
                    ),
                ))
            }
        }
        for key in HEADER_PARAMS {
            let path = lp.key_path(key);
            match lp.json(key)? {
                None => {}
                Some(Value::Object(map)) => {
                    for (name, value) in map {
                        let item = format!("{path}.{name}");
                        out.headers.push(header(&item, &name, &value)?);
                    }
                }
                Some(other) => {
                    return Err(ConfigError::new(
                        path,
                        format!(
                            "expected a mapping of header names to values, found {}",
                            json_type(&other)
                        ),
                    ))
                }
            }
        }
        let path = lp.key_path("additional_drop_params");
        if let Some(names) = lp.string_list("additional_drop_params")? {
            out.drop.extend(drop_names(&path, names)?);
        }
        Ok(out)
    }
}

/// `drop_params` / `additional_drop_params` names: top-level parameters only.
pub fn drop_names(path: &str, names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (i, name) in names.iter().enumerate() {
        if matches!(
            name.as_str(),
            "model" | "messages" | "input" | "stream" | ""
        ) {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!("\"{name}\" cannot be dropped: the request needs it"),
            ));
        }
    }
    Ok(names)
}

fn typed_value(path: &str, key: &str, value: Value) -> Result<Value, ConfigError> {
    if !NUMERIC_PARAMS.contains(&key) {
        return Ok(value);
    }
    let whole = !matches!(
        key,
        "temperature" | "top_p" | "presence_penalty" | "frequency_penalty"
    );
    let number = match &value {
        Value::Number(n) if !whole || n.is_i64() || n.is_u64() => return Ok(value),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => yaml11_number(s),
        _ => None,
    };
    match number {
        Some(n) if whole && n.fract() == 0.0 && n.abs() < 9.0e15 => Ok(Value::from(n as i64)),
        Some(n) if !whole => Ok(Value::from(n)),
        _ => Err(ConfigError::new(
            path,
            format!(
                "expected {}, found {value}",
                if whole { "a whole number" } else { "a number" }
            ),
        )),
    }
}

fn to_raw(path: &str, value: &Value) -> Result<Box<RawValue>, ConfigError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| ConfigError::new(path, format!("cannot be sent as JSON: {e}")))
}

fn header(path: &str, name: &str, value: &Value) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(ConfigError::new(
                path,
                format!("expected a header value, found {}", json_type(other)),
            ))
        }
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(path, format!("\"{name}\" is not a valid header name")))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(ConfigError::new(
            path,
            format!("the gateway sets {name} itself; it cannot be configured"),
        ));
    }
    let value = HeaderValue::from_str(&text)
        .map_err(|_| ConfigError::new(path, "contains characters not allowed in an HTTP header"))?;
    Ok((name, value))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use crate::config::litellm::parse;

    fn written(body: &crate::openai::RequestBody<'_>) -> String {
        let mut out = Vec::new();
        body.write_with(&[], &[], &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn chat_parameters_stay_off_embeddings_calls() {
        let c = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, temperature: 0.5, extra_body: {truncate: END}, drop_params: [user]}\n",
        )
        .unwrap();
        let d = &c.deployments[0].params.call_defaults;
        let body =
            crate::openai::RequestBody::parse(br#"{"model":"a","input":"hi","user":"u"}"#).unwrap();
        let chat = d.apply(&body, true).unwrap();
        assert_eq!(
            written(&chat),
            r#"{"model":"a","input":"hi","temperature":0.5,"truncate":"END"}"#
        );
        let embed = d.apply(&body, false).unwrap();
        assert_eq!(
            written(&embed),
            r#"{"model":"a","input":"hi","truncate":"END"}"#
        );
    }

    #[test]
    fn nothing_configured_costs_nothing() {
        let c = parse("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n")
            .unwrap();
        let d = &c.deployments[0].params.call_defaults;
        assert!(d.is_empty());
        let body = crate::openai::RequestBody::parse(br#"{"model":"a","messages":[]}"#).unwrap();
        assert!(d.apply(&body, true).is_none());
        let mut headers = vec![(http::header::AUTHORIZATION, "Bearer k".parse().unwrap())];
        d.apply_headers(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
