//! A parsed client request body. The body is parsed exactly once into top-level fields whose
//! values stay raw JSON slices borrowed from the body ([`RequestBody`]): the pass-through path
//! rewrites a couple of fields and copies the rest byte for byte, never parsing `messages`.
//! Translating providers deserialize the typed view ([`ChatRequest`]) from those slices, so a
//! field is parsed at most once either way.
//!
//! Hostile bodies are refused here, before anything is routed: a top-level key given twice
//! (the gateway would read one value and the upstream another), more than
//! [`MAX_TOP_LEVEL_FIELDS`] top-level keys, and arrays/objects nested deeper than
//! [`MAX_NESTING_DEPTH`] (the pass-through path forwards values it never parses). The client's
//! `model` is checked by [`check_model_name`].

use crate::error::{GatewayError, GatewayResult};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Top-level fields of a JSON object body, in order, values unparsed.
pub struct RequestBody<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RequestBody<'a> {
    /// Parses a request body; malformed JSON or a non-object is a 400 that says so.
    pub fn parse(bytes: &'a [u8]) -> GatewayResult<Self> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(GatewayError::bad_request(
                "The request body is empty. Send a JSON object, e.g. {\"model\": ..., \"messages\": [...]}.",
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut refused = None;
        let fields = de
            .deserialize_map(FieldsVisitor {
                refused: &mut refused,
            })
            .map_err(|e| match refused.take() {
                Some(refused) => refused,
                None => GatewayError::bad_request(format!(
                    "The request body is not valid JSON ({e}). Send a JSON object with Content-Type: application/json."
                ))
                .with_code("invalid_json"),
            })?;
        de.end().map_err(|e| {
            GatewayError::bad_request(format!(
                "The request body has trailing data after the JSON object ({e})."
            ))
            .with_code("invalid_json")
        })?;
        // The body object is level 1, so its values may nest one level less.
        for (key, raw) in &fields {
            if nests_deeper_than(raw.get().as_bytes(), MAX_NESTING_DEPTH - 1) {
                return Err(GatewayError::invalid_param(
                    key,
                    format!(
                        "'{key}' nests arrays and objects deeper than the gateway's limit of {MAX_NESTING_DEPTH} levels (counting the request body itself)."
                    ),
                )
                .with_code("nesting_too_deep"));
            }
        }
        Ok(RequestBody { fields })
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get() != "null")
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Iterates the top-level fields (null values included).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Deserializes one field; a wrong type is a 400 naming the field.
    pub fn typed<T: Deserialize<'a>>(&self, key: &str) -> GatewayResult<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<T>(raw.get()).map(Some).map_err(|e| {
                GatewayError::invalid_param(key, format!("Invalid value for '{key}': {e}."))
            }),
        }
    }

    /// A required string field (`model`), 400 naming it when absent or not a string.
    pub fn required_str(&self, key: &str) -> GatewayResult<Cow<'a, str>> {
        match self.typed::<Cow<'a, str>>(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(GatewayError::missing_field(key)),
        }
    }

    pub fn bool_field(&self, key: &str) -> GatewayResult<bool> {
        Ok(self.typed::<bool>(key)?.unwrap_or(false))
    }

    /// A cheap estimate of the prompt's tokens for context-window checks: the bytes of
    /// `messages` and `tools` as sent, at 4 bytes a token (what tiktoken averages on English
    /// text; JSON punctuation stands in for the per-message overhead). No parsing: the values
    /// are raw slices already.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let bytes: usize = ["messages", "tools", "functions"]
            .iter()
            .filter_map(|k| self.get(k))
            .map(|v| v.get().len())
            .sum();
        bytes.div_ceil(4) as u64
    }

    /// The choices asked for (`n`, 1 when absent or invalid; at most 128, OpenAI's bound):
    /// what the admission stages multiply a call's reservation by.
    pub fn choices(&self) -> u64 {
        self.typed::<u64>("n")
            .ok()
            .flatten()
            .unwrap_or(1)
            .clamp(1, 128)
    }

    /// `stream_options.include_usage`
    pub fn include_usage(&self) -> GatewayResult<bool> {
        #[derive(Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        Ok(self
            .typed::<StreamOptions>("stream_options")?
            .map(|o| o.include_usage)
            .unwrap_or(false))
    }

    /// This body with a deployment's changes (see `config::CallDefaults`): fields in `remove`
    /// left out, and each `add` field appended when the body does not set it (absent or
    /// null: the request's own value wins). Values stay borrowed: nothing is parsed or copied
    /// but the field list.
    pub fn with_changes<'b>(
        &self,
        add: impl Iterator<Item = (&'b str, &'b RawValue)>,
        remove: &[String],
    ) -> RequestBody<'b>
    where
        'a: 'b,
    {
        let dropped = |k: &str| remove.iter().any(|r| r == k);
        let mut fields: Vec<(Cow<'b, str>, &'b RawValue)> =
            Vec::with_capacity(self.fields.len() + 8);
        for (k, v) in &self.fields {
            if !dropped(k) {
                fields.push((k.clone(), *v));
            }
        }
        for (k, v) in add {
            if dropped(k) {
                continue;
            }
            match fields.iter_mut().find(|(f, _)| f == k) {
                Some((_, current)) if current.get() == "null" => *current = v,
                Some(_) => {}
                None => fields.push((Cow::Borrowed(k), v)),
            }
        }
        RequestBody { fields }
    }

    /// Writes the object back out, replacing fields named in `set` (value = raw JSON text,
    /// appended when absent) and leaving out fields named in `remove`. Everything else is copied
    /// verbatim.
    pub fn write_with(&self, set: &[(&str, &str)], remove: &[&str], out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_string(out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        for (key, raw) in &self.fields {
            if remove.contains(&key.as_ref()) {
                continue;
            }
            match set.iter().find(|(k, _)| *k == key.as_ref()) {
                Some((_, value)) => push(out, key, value),
                None => push(out, key, raw.get()),
            }
        }
        for (key, value) in set {
            if !self.fields.iter().any(|(k, _)| k == key) {
                push(out, key, value);
            }
        }
        out.push(b'}');
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct and fast; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Most top-level keys a request body may have. OpenAI's chat API has about 40 parameters;
/// the bound keeps the duplicate check (a scan of the keys so far) cheap on any body.
pub const MAX_TOP_LEVEL_FIELDS: usize = 256;

/// Top-level fields a client sends for the gateway itself: LiteLLM's per-request `cache`
/// controls and its routing `tags`. They are read here and never forwarded: OpenAI and
/// Anthropic refuse unknown request fields.
pub const GATEWAY_FIELDS: &[&str] = &["cache", "tags"];

/// Deepest nesting of arrays and objects in a request body, the body object itself being
/// level 1. The same as serde_json's recursion limit, which translating providers (that do
/// parse `messages`, `tools`, …) already hit at 128; the pass-through path parses no values,
/// so without this bound any depth would reach the upstream.
pub const MAX_NESTING_DEPTH: usize = 128;

/// Reads the top-level fields. A refusal that is the client's to fix (a duplicate key, too
/// many keys) is left in `refused` and the parse aborted with a placeholder error.
struct FieldsVisitor<'r> {
    refused: &'r mut Option<GatewayError>,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Self::Value = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<MaybeBorrowed<'de>>()? {
            let key = key.0;
            // Keys compare decoded: `"\u0073tream"` is `stream` to the upstream too.
            if fields.iter().any(|(k, _)| *k == key) {
                *self.refused = Some(
                    GatewayError::invalid_param(
                        &key,
                        format!(
                            "The request body has the key '{key}' more than once. Send each parameter once."
                        ),
                    )
                    .with_code("duplicate_key"),
                );
                return Err(de::Error::custom("duplicate key"));
            }
            if fields.len() == MAX_TOP_LEVEL_FIELDS {
                *self.refused = Some(
                    GatewayError::bad_request(format!(
                        "The request body has more than {MAX_TOP_LEVEL_FIELDS} top-level keys."
                    ))
                    .with_code("too_many_fields"),
                );
                return Err(de::Error::custom("too many keys"));
            }
            let value: &'de RawValue = map.next_value()?;
            fields.push((key, value));
        }
        Ok(fields)
    }
}

/// Whether the JSON value `json` (already validated) nests arrays/objects deeper than `limit`
/// levels, without parsing it. Most values have no more than `limit` `[`/`{` bytes at all,
/// which one SIMD `memchr` pass shows (a few µs for 100 KB); only the others are walked byte by
/// byte outside strings, whose contents are skipped with `memchr` (brackets in them do not
/// count).
fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    if !matches!(json.first(), Some(b'[' | b'{'))
        || memchr::memchr2_iter(b'[', b'{', json).nth(limit).is_none()
    {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        match b {
            b'"' => {
                // To the closing quote: the next quote not escaped by a backslash.
                i += 1;
                loop {
                    let Some(rest) = json.get(i..) else {
                        return false;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(j) if rest[j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                        None => return false,
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Longest `model` a client may send (bytes). Real model ids, Bedrock ARNs included, are far
/// shorter; wildcard groups keep what clients send, so it is bounded.
pub const MAX_MODEL_NAME_LEN: usize = 256;

/// Checks the client's `model` before it is routed. A wildcard group puts the client's text
/// into the upstream model id (and so into URLs, see [`crate::providers::url`]), so what could
/// never be a model id is refused as the client's error (400 naming `model`): control
/// characters (CR/LF would break the request line), a `.` or `..` path segment, more than
/// [`MAX_MODEL_NAME_LEN`] bytes, and whitespace unless the name is a configured group or alias
/// (`is_configured`, asked only then: configs may name a group "my model").
pub fn check_model_name(model: &str, is_configured: impl FnOnce() -> bool) -> GatewayResult<()> {
    let refuse = |what: &str| {
        Err(GatewayError::invalid_param(
            "model",
            format!("Invalid model name: {what}. Send a model name from GET /v1/models."),
        )
        .with_code("invalid_model_name"))
    };
    if model.len() > MAX_MODEL_NAME_LEN {
        return refuse(&format!("longer than {MAX_MODEL_NAME_LEN} bytes"));
    }
    if model.chars().any(char::is_control) {
        return refuse("it contains control characters (CR, LF, tab, NUL, ...)");
    }
    if model.split('/').any(|s| s == "." || s == "..") {
        return refuse("it contains a '.' or '..' path segment");
    }
    if model.contains(char::is_whitespace) && !is_configured() {
        return refuse("it contains whitespace");
    }
    Ok(())
}

/// A string that borrows from the input when it has no escapes.
pub struct MaybeBorrowed<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------------------
// The typed view used by translating providers.

/// The Chat Completions parameters translators understand, borrowed from the body.
/// Built with [`ChatRequest::from_body`]; `messages` is required and non-empty.
#[derive(Default)]
pub struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    pub messages: Vec<ChatMessage<'a>>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u32>,
    pub stop: Option<Vec<Cow<'a, str>>>,
    pub seed: Option<i64>,
    pub user: Option<Cow<'a, str>>,
    pub tools: Option<Vec<Tool<'a>>>,
    pub tool_choice: Option<ToolChoice<'a>>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat<'a>>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

/// Every field [`ChatRequest`] reads; translators compare a body's fields against their own
/// supported list to apply `drop_params` or reject what they cannot send.
pub const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
];

impl<'a> ChatRequest<'a> {
    pub fn from_body(body: &RequestBody<'a>) -> GatewayResult<Self> {
        let messages: Vec<ChatMessage<'a>> = body
            .typed("messages")?
            .ok_or_else(|| GatewayError::missing_field("messages"))?;
        if messages.is_empty() {
            return Err(GatewayError::invalid_param(
                "messages",
                "'messages' must contain at least one message.",
            ));
        }
        let stop = match body.typed::<StopField<'a>>("stop")? {
            None => None,
            Some(StopField::One(s)) => Some(vec![s]),
            Some(StopField::Many(v)) => Some(v),
        };
        Ok(ChatRequest {
            model: body.required_str("model")?,
            messages,
            stream: body.bool_field("stream")?,
            include_usage: body.include_usage()?,
            max_tokens: body.typed("max_tokens")?,
            max_completion_tokens: body.typed("max_completion_tokens")?,
            temperature: body.typed("temperature")?,
            top_p: body.typed("top_p")?,
            n: body.typed("n")?,
            stop,
            seed: body.typed("seed")?,
            user: body.typed("user")?,
            tools: body.typed("tools")?,
            tool_choice: body.typed("tool_choice")?,
            parallel_tool_calls: body.typed("parallel_tool_calls")?,
            response_format: body.typed("response_format")?,
            presence_penalty: body.typed("presence_penalty")?,
            frequency_penalty: body.typed("frequency_penalty")?,
        })
    }

    /// `max_completion_tokens` wins over the deprecated `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopField<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    #[serde(borrow)]
    Many(Vec<Cow<'a, str>>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ChatMessage<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(default, borrow)]
    pub content: Option<MessageContent<'a>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(default, borrow)]
    pub tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum MessageContent<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Parts(Vec<ContentPart<'a>>),
}

impl<'a> MessageContent<'a> {
    /// The text of the content, parts joined; non-text parts are skipped.
    pub fn joined_text(&self) -> Cow<'_, str> {
        match self {
            MessageContent::Text(t) => Cow::Borrowed(t.as_ref()),
            MessageContent::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_ref()),
                        _ => None,
                    })
                    .collect();
                if texts.len() == 1 {
                    Cow::Borrowed(texts[0])
                } else {
                    Cow::Owned(texts.concat())
                }
            }
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    ImageUrl {
        #[serde(borrow)]
        image_url: ImageUrl<'a>,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    #[serde(default, borrow)]
    pub detail: Option<Cow<'a, str>>,
}

/// An image reference split into what providers need.
pub enum ImageSource<'s> {
    /// `data:<mime>;base64,<data>`
    Base64 {
        media_type: &'s str,
        data: &'s str,
    },
    Url(&'s str),
}

impl<'a> ImageUrl<'a> {
    /// Splits a data URI or returns the http(s) URL; anything else is a 400.
    pub fn source(&self) -> GatewayResult<ImageSource<'_>> {
        let url = self.url.as_ref();
        if let Some(rest) = url.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').ok_or_else(|| {
                GatewayError::invalid_param(
                    "messages",
                    "Malformed data URI in image_url.url: expected data:<mime>;base64,<data>.",
                )
            })?;
            let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
                GatewayError::invalid_param(
                    "messages",
                    "image_url.url data URIs must be base64-encoded (data:<mime>;base64,<data>).",
                )
            })?;
            return Ok(ImageSource::Base64 { media_type, data });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(ImageSource::Url(url));
        }
        Err(GatewayError::invalid_param(
            "messages",
            "image_url.url must be an http(s) URL or a data:<mime>;base64,<data> URI.",
        ))
    }
}

#[derive(Deserialize, Debug, Clone)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(default, borrow, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// A JSON-encoded string, as OpenAI sends it.
    #[serde(default, borrow)]
    pub arguments: Cow<'a, str>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Tool<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionDef<'a>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub description: Option<Cow<'a, str>>,
    /// The JSON schema, unparsed.
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    Function(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for ToolChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Obj<'a> {
            #[serde(borrow)]
            function: Named<'a>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            #[serde(borrow)]
            Mode(Cow<'a, str>),
            #[serde(borrow)]
            Obj(Obj<'a>),
        }
        match Raw::deserialize(d)? {
            Raw::Mode(m) => match m.as_ref() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" | "any" => Ok(ToolChoice::Required),
                other => Err(de::Error::custom(format!(
                    "unknown tool_choice \"{other}\"; expected \"auto\", \"none\", \"required\" or {{\"type\":\"function\",\"function\":{{\"name\":...}}}}"
                ))),
            },
            Raw::Obj(o) => Ok(ToolChoice::Function(o.function.name)),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat<'a> },
}

// Parsed through a plain struct: serde cannot fill a borrowed `RawValue` (the schema) inside an
// internally tagged enum.
impl<'de: 'a, 'a> Deserialize<'de> for ResponseFormat<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default, borrow)]
            json_schema: Option<JsonSchemaFormat<'a>>,
        }
        let raw = Raw::deserialize(d)?;
        match raw.kind.as_ref() {
            "text" => Ok(ResponseFormat::Text),
            "json_object" => Ok(ResponseFormat::JsonObject),
            "json_schema" => match raw.json_schema {
                Some(json_schema) => Ok(ResponseFormat::JsonSchema { json_schema }),
                None => Err(de::Error::custom("type \"json_schema\" needs a \"json_schema\" object")),
            },
            other => Err(de::Error::custom(format!(
                "unknown response_format type \"{other}\"; expected \"text\", \"json_object\" or \"json_schema\""
            ))),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
pub struct JsonSchemaFormat<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub schema: Option<&'a RawValue>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// Embeddings `input`: a string, strings, or token arrays.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum EmbeddingInput<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    #[serde(borrow)]
    Many(Vec<Cow<'a, str>>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl<'a> EmbeddingInput<'a> {
    /// The inputs as texts; token inputs are a 400 for providers that take only text.
    pub fn texts(&self, provider: &str) -> GatewayResult<Vec<&str>> {
        match self {
            EmbeddingInput::One(s) => Ok(vec![s.as_ref()]),
            EmbeddingInput::Many(v) => Ok(v.iter().map(|s| s.as_ref()).collect()),
            _ => Err(GatewayError::invalid_param(
                "input",
                format!("{provider} embeddings take text input; token arrays are not supported."),
            )),
        }
    }
}

/// The embeddings request fields translators use.
pub struct EmbeddingsRequest<'a> {
    pub model: Cow<'a, str>,
    pub input: EmbeddingInput<'a>,
    pub dimensions: Option<u32>,
    /// `base64` or `float` (default).
    pub base64: bool,
    pub user: Option<Cow<'a, str>>,
    pub input_type: Option<Cow<'a, str>>,
}

impl<'a> EmbeddingsRequest<'a> {
    pub fn from_body(body: &RequestBody<'a>) -> GatewayResult<Self> {
        let input = body
            .typed::<EmbeddingInput<'a>>("input")?
            .ok_or_else(|| GatewayError::missing_field("input"))?;
        let format: Option<Cow<'a, str>> = body.typed("encoding_format")?;
        let base64 = match format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(GatewayError::invalid_param(
                    "encoding_format",
                    format!("Invalid encoding_format \"{other}\": use \"float\" or \"base64\"."),
                ))
            }
        };
        Ok(EmbeddingsRequest {
            model: body.required_str("model")?,
            input,
            dimensions: body.typed("dimensions")?,
            base64,
            user: body.typed("user")?,
            input_type: body.typed("input_type")?,
        })
    }
}

/// Checks a body against the fields a provider supports. Unsupported fields are dropped
/// silently when `drop_params` is on; otherwise the first one is a 400 naming it and the provider.
/// Returns the names of the dropped fields.
pub fn check_supported<'b>(
    body: &'b RequestBody<'_>,
    supported: &[&str],
    drop_params: bool,
    provider: &str,
) -> GatewayResult<Vec<&'b str>> {
    let mut dropped = Vec::new();
    for (key, raw) in body.fields() {
        if raw.get() == "null" || supported.contains(&key) || IGNORED_FIELDS.contains(&key) {
            continue;
        }
        if drop_params {
            dropped.push(key);
        } else {
            return Err(GatewayError::invalid_param(
                key,
                format!(
                    "{provider} does not support parameter '{key}'. Remove it, or set drop_params: true (litellm_settings or the deployment's litellm_params) to drop it."
                ),
            )
            .with_code("unsupported_parameter"));
        }
    }
    Ok(dropped)
}

/// Fields no provider receives and no client should be refused for (LiteLLM/OpenAI metadata).
pub const IGNORED_FIELDS: &[&str] = &["metadata", "store", "service_tier", "drop_params"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_changes_adds_defaults_the_request_lacks_and_drops_names() {
        let body = RequestBody::parse(
            br#"{"model":"m","temperature":0.9,"max_tokens":null,"user":"u","messages":[]}"#,
        )
        .unwrap();
        let t = RawValue::from_string("0.2".into()).unwrap();
        let m = RawValue::from_string("100".into()).unwrap();
        let k = RawValue::from_string("{\"a\":1}".into()).unwrap();
        let add = [
            ("temperature", &*t),
            ("max_tokens", &*m),
            ("chat_template_kwargs", &*k),
            ("user", &*t),
        ];
        let out = body.with_changes(add.into_iter(), &["user".to_string()]);
        let mut bytes = Vec::new();
        out.write_with(&[], &[], &mut bytes);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"model":"m","temperature":0.9,"max_tokens":100,"messages":[],"chat_template_kwargs":{"a":1}}"#
        );
    }

    #[test]
    fn estimated_prompt_tokens_counts_messages_and_tools_bytes() {
        let body = RequestBody::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hello"}],"tools":[]}"#,
        )
        .unwrap();
        // 35 bytes of messages + 2 of tools, 4 a token, rounded up.
        assert_eq!(body.estimated_prompt_tokens(), 10);
    }

    #[test]
    fn parses_fields_without_touching_messages() {
        let body =
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let req = RequestBody::parse(body).unwrap();
        assert_eq!(req.required_str("model").unwrap(), "gpt-4o");
        assert!(req.bool_field("stream").unwrap());
        assert_eq!(
            req.get("messages").unwrap().get(),
            r#"[{"role":"user","content":"hi"}]"#
        );
    }

    #[test]
    fn rewrites_fields_verbatim() {
        let body = br#"{"model":"a","messages":[1, 2],"x":null}"#;
        let req = RequestBody::parse(body).unwrap();
        let mut out = Vec::new();
        req.write_with(
            &[
                ("model", "\"b\""),
                ("stream_options", "{\"include_usage\":true}"),
            ],
            &["x"],
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"b","messages":[1, 2],"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn malformed_bodies_are_400s() {
        for bad in [&b"{"[..], b"[1,2]", b"", b"{\"a\":1} x", b"nope"] {
            let err = RequestBody::parse(bad).err().expect("must fail");
            assert_eq!(err.status, 400);
        }
    }

    #[test]
    fn typed_view_reads_tools_and_parts() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a\nb"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]},
          {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}],
          "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
          "tool_choice":{"type":"function","function":{"name":"f"}},"stop":"END","max_tokens":5}"#;
        let body = RequestBody::parse(body).unwrap();
        let req = ChatRequest::from_body(&body).unwrap();
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.tool_choice, Some(ToolChoice::Function("f".into())));
        assert_eq!(req.stop.as_ref().unwrap()[0], "END");
        match &req.messages[0].content {
            Some(MessageContent::Parts(p)) => match &p[1] {
                ContentPart::ImageUrl { image_url } => match image_url.source().unwrap() {
                    ImageSource::Base64 { media_type, data } => {
                        assert_eq!((media_type, data), ("image/png", "AAA"))
                    }
                    _ => panic!("expected base64"),
                },
                _ => panic!("expected image"),
            },
            _ => panic!("expected parts"),
        }
    }

    #[test]
    fn response_format_with_a_schema() {
        let body = RequestBody::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"r","schema":{"type":"object"},"strict":true}}}"#,
        )
        .unwrap();
        match ChatRequest::from_body(&body).unwrap().response_format {
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                assert_eq!(json_schema.name, "r");
                assert_eq!(json_schema.schema.unwrap().get(), r#"{"type":"object"}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        let body = RequestBody::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#).unwrap();
        assert_eq!(
            ChatRequest::from_body(&body)
                .err()
                .unwrap()
                .param
                .as_deref(),
            Some("response_format")
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let body = RequestBody::parse(br#"{"model":"m","messages":"hi"}"#).unwrap();
        let err = ChatRequest::from_body(&body).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("messages"));
        let body = RequestBody::parse(br#"{"model":"m","messages":[]}"#).unwrap();
        assert!(ChatRequest::from_body(&body).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_naming_the_key() {
        for (body, key) in [
            (
                &br#"{"stream":false,"model":"m","stream":true}"#[..],
                "stream",
            ),
            (br#"{"model":"a","\u006dodel":"b"}"#, "model"),
            (br#"{"x":null,"x":null}"#, "x"),
        ] {
            let err = RequestBody::parse(body).err().expect("must fail");
            assert_eq!(err.status, 400);
            assert_eq!(err.param.as_deref(), Some(key));
            assert_eq!(err.code.as_deref(), Some("duplicate_key"));
        }
        let mut many = String::from("{");
        for i in 0..=MAX_TOP_LEVEL_FIELDS {
            many.push_str(&format!("\"k{i}\":1,"));
        }
        many.pop();
        many.push('}');
        let err = RequestBody::parse(many.as_bytes()).err().unwrap();
        assert_eq!(err.code.as_deref(), Some("too_many_fields"));
        // A repeated key is refused as soon as it is read; other malformed JSON is invalid_json.
        let err = RequestBody::parse(br#"{"a":1,"a""#).err().unwrap();
        assert_eq!(err.code.as_deref(), Some("duplicate_key"));
        let err = RequestBody::parse(br#"{"a":1,"b""#).err().unwrap();
        assert_eq!(err.code.as_deref(), Some("invalid_json"));
    }

    #[test]
    fn nesting_depth_is_bounded_outside_strings() {
        assert!(!nests_deeper_than(b"[[1],{\"a\":[2]}]", 3));
        assert!(nests_deeper_than(b"[[1],{\"a\":[2]}]", 2));
        // Brackets in strings, escaped quotes and backslashes do not count or confuse it.
        assert!(!nests_deeper_than(
            br#"["[[[[", "\"[[[", "\\", {"[": "]]]"}]"#,
            2
        ));
        assert!(nests_deeper_than(br#"["\\", [[1]]]"#, 2));
        // Truncated input ends the scan without a panic.
        assert!(!nests_deeper_than(br#"["abc\"#, 5));
        let deep = |n: usize| {
            let mut b = br#"{"model":"m","messages":"#.to_vec();
            b.extend(std::iter::repeat_n(b'[', n));
            b.extend(std::iter::repeat_n(b']', n));
            b.push(b'}');
            b
        };
        assert!(RequestBody::parse(&deep(MAX_NESTING_DEPTH - 1)).is_ok());
        let err = RequestBody::parse(&deep(MAX_NESTING_DEPTH)).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert!(RequestBody::parse(&deep(100_000)).is_err());
    }

    #[test]
    fn model_names_that_cannot_be_model_ids_are_400s() {
        let configured = || true;
        let wildcard = || false;
        for ok in [
            "gpt-4o",
            "bedrock/arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0",
            "a@b",
            "...",
        ] {
            assert!(check_model_name(ok, wildcard).is_ok(), "{ok}");
        }
        assert!(check_model_name("my model", configured).is_ok());
        for bad in [
            "gemini/a b",
            "a\r\nb",
            "a\tb",
            "x\u{0}",
            "gemini/..",
            "./x",
            "a/../b",
        ] {
            let err = check_model_name(bad, wildcard).expect_err(bad);
            assert_eq!(err.param.as_deref(), Some("model"), "{bad:?}");
            assert_eq!(err.status, 400);
        }
        assert!(check_model_name("a\nb", configured).is_err());
        assert!(check_model_name(&"m".repeat(MAX_MODEL_NAME_LEN + 1), configured).is_err());
    }

    #[test]
    fn unsupported_params_rejected_or_dropped() {
        let body = RequestBody::parse(br#"{"model":"m","messages":[],"logit_bias":{}}"#).unwrap();
        let err = check_supported(&body, CHAT_FIELDS, false, "anthropic").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logit_bias"));
        assert!(err.message.contains("anthropic"));
        assert_eq!(
            check_supported(&body, CHAT_FIELDS, true, "anthropic").unwrap(),
            vec!["logit_bias"]
        );
    }
}
