//! A Messages request: checked as Anthropic checks it (a 400 naming the field), and translated
//! into the OpenAI chat body the rest of the pipeline takes (reference: ingress-formats §4.2).
//!
//! `thinking` and `output_config.effort` become `reasoning_effort`, `output_config.format`
//! becomes `response_format`, `top_k` stays `top_k`: each provider maps them on, or refuses
//! them with a 400 naming the field (dropped under `drop_params`). Server tools
//! (`web_search_*`, `bash_*`, `code_execution_*`, …: any `type` but `custom`) are a 400 naming
//! `tools[i]`: they run at Anthropic only.
//!
//! Documents and images go where the chosen provider takes them ([`Documents`]): a base64
//! document is a chat `file` part for OpenAI-compatible upstreams, an inline data part
//! (`inlineData` of its media type) for Gemini and a `document` block for Bedrock Converse;
//! providers whose chat translation has no place for documents (Cohere, Ollama, …) and URL
//! documents (only Anthropic fetches them) are a 400 naming `messages[i].content[j]` and the
//! provider. Images and
//! documents inside a `tool_result` follow the tool message, in the user message after it
//! (chat's tool messages carry text only). What chat has no place for and changes no answer is
//! dropped (the Anthropic pass-through keeps it): `cache_control`, `thinking` blocks sent back,
//! citations, `is_error` on tool results.

use crate::error::{GatewayError, GatewayResult};
use crate::openai::RequestBody;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// One content block, every field optional: which are required depends on `type`, checked by
/// hand so the error names the field. Unknown fields (`cache_control`, `signature`, …) are
/// ignored.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<Source<'a>>,
    #[serde(default, borrow)]
    title: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: &'a RawValue,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

fn invalid(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, format!("{param}: {}", message.into()))
}

fn parse<'a, T: Deserialize<'a>>(param: &str, raw: &'a RawValue) -> GatewayResult<T> {
    serde_json::from_str(raw.get()).map_err(|e| invalid(param, e.to_string()))
}

/// Content: a string, or an array of blocks.
enum Content<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

fn content<'a>(param: &str, raw: &'a RawValue) -> GatewayResult<Content<'a>> {
    let text = raw.get().trim_start();
    if text.starts_with('"') {
        return parse(param, raw).map(Content::Text);
    }
    if !text.starts_with('[') {
        return Err(invalid(
            param,
            "must be a string or an array of content blocks",
        ));
    }
    let raws: Vec<&'a RawValue> = parse(param, raw)?;
    let mut blocks = Vec::with_capacity(raws.len());
    for (j, raw) in raws.into_iter().enumerate() {
        let param = format!("{param}[{j}]");
        let block: Block<'a> = parse(&param, raw)?;
        check_block(&param, &block)?;
        blocks.push(block);
    }
    Ok(Content::Blocks(blocks))
}

/// The fields each known block type requires. Unknown types pass (new ones reach an Anthropic
/// deployment unchanged; translation drops them).
fn check_block(param: &str, b: &Block<'_>) -> GatewayResult<()> {
    let need = |present: bool, field: &str| {
        if present {
            Ok(())
        } else {
            Err(invalid(&format!("{param}.{field}"), "Field required"))
        }
    };
    match b.kind.as_ref() {
        "text" => need(b.text.is_some(), "text"),
        "image" | "document" => {
            let Some(source) = &b.source else {
                return need(false, "source");
            };
            let sp = format!("{param}.source");
            match source.kind.as_ref() {
                "base64" => {
                    need(source.media_type.is_some(), "source.media_type")?;
                    need(source.data.is_some(), "source.data")
                }
                "url" => need(source.url.is_some(), "source.url"),
                "text" if b.kind == "document" => need(source.data.is_some(), "source.data"),
                "content" if b.kind == "document" => {
                    need(source.content.is_some(), "source.content")
                }
                other => Err(invalid(
                    &format!("{sp}.type"),
                    format!("unknown source type '{other}'"),
                )),
            }
        }
        "tool_use" => {
            need(b.id.is_some(), "id")?;
            need(b.name.is_some(), "name")?;
            match b.input {
                Some(i) if i.get().trim_start().starts_with('{') => Ok(()),
                Some(_) => Err(invalid(
                    &format!("{param}.input"),
                    "Input should be a valid dictionary",
                )),
                None => need(false, "input"),
            }
        }
        "tool_result" => need(b.tool_use_id.is_some(), "tool_use_id"),
        _ => Ok(()),
    }
}

/// How a translated request's documents reach the provider that gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Documents {
    /// Chat's `file` part (`file_data` a data URI): OpenAI-compatible upstreams.
    FilePart(&'static str),
    /// An `image_url` data URI of the document's media type, which the Gemini translation
    /// sends as `inlineData` (Gemini reads PDFs inline) and Bedrock's as a Converse
    /// `document` block.
    InlineData(&'static str),
    /// Refused with a 400 naming the block and this provider: its chat translation has no
    /// place for documents.
    Refused(&'static str),
}

impl Documents {
    /// The way documents reach a provider (its `Provider::name`).
    pub fn for_provider(provider: &'static str) -> Documents {
        match provider {
            "gemini" | "vertex_ai" | "vertex_ai_beta" | "bedrock" | "bedrock_converse" => {
                Documents::InlineData(provider)
            }
            "cohere"
            | "cohere_chat"
            | "ollama"
            | "ollama_chat"
            | "anthropic"
            | "text-completion-openai" => Documents::Refused(provider),
            _ => Documents::FilePart(provider),
        }
    }

    /// The translations that differ only in this are kept apart (see `MessagesIngress`).
    pub fn slot(self) -> usize {
        match self {
            Documents::FilePart(_) => 0,
            Documents::InlineData(_) => 1,
            Documents::Refused(_) => 2,
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Documents::FilePart(p) | Documents::InlineData(p) | Documents::Refused(p) => p,
        }
    }
}

/// Checks a Messages request and translates it into an OpenAI chat body (JSON bytes), for an
/// OpenAI-compatible upstream (documents as `file` parts); see [`translate_for`].
pub fn translate(body: &RequestBody<'_>) -> GatewayResult<Vec<u8>> {
    translate_for(body, Documents::FilePart("openai"))
}

/// Checks a Messages request and translates it into an OpenAI chat body (JSON bytes), its
/// documents as `documents` says. Only top-level fields were parsed before; everything is read
/// once, here.
pub fn translate_for(body: &RequestBody<'_>, documents: Documents) -> GatewayResult<Vec<u8>> {
    let model = body.required_str("model")?;
    let max_tokens = match body.get("max_tokens") {
        None => return Err(invalid("max_tokens", "Field required")),
        Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
            Ok(n) if n >= 1 => n,
            _ => return Err(invalid("max_tokens", "must be an integer of at least 1")),
        },
    };
    let Some(raw_messages) = body.get("messages") else {
        return Err(invalid("messages", "Field required"));
    };
    let raws: Vec<&RawValue> = parse("messages", raw_messages)?;
    let mut out: Vec<Value> = Vec::with_capacity(raws.len() + 1);
    if let Some(system) = body.get("system") {
        let text = match content("system", system)? {
            Content::Text(t) => t.into_owned(),
            Content::Blocks(blocks) => joined_text(&blocks),
        };
        if !text.is_empty() {
            out.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, raw) in raws.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        let msg: Message<'_> = parse(&param, raw)?;
        let content = content(&format!("{param}.content"), msg.content)?;
        match msg.role.as_ref() {
            "user" => user_turn(&format!("{param}.content"), content, documents, &mut out)?,
            "assistant" => out.push(assistant_turn(content)),
            // The newest SDK allows system turns inside `messages`.
            "system" => out.push(json!({"role": "system", "content": match content {
                Content::Text(t) => t.into_owned(),
                Content::Blocks(b) => joined_text(&b),
            }})),
            other => {
                return Err(invalid(
                    &format!("{param}.role"),
                    format!("Input should be 'user' or 'assistant', not '{other}'"),
                ))
            }
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(model.into_owned()));
    chat.insert("messages".into(), Value::Array(out));
    chat.insert("max_tokens".into(), max_tokens.into());
    if let Some(stop) = body.typed::<Vec<String>>("stop_sequences")? {
        if !stop.is_empty() {
            chat.insert("stop".into(), json!(stop));
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = body.typed::<f64>(key)? {
            chat.insert(key.into(), json!(v));
        }
    }
    if let Some(k) = body.typed::<u64>("top_k")? {
        chat.insert("top_k".into(), k.into());
    }
    if let Some(effort) = reasoning_effort(body)? {
        chat.insert("reasoning_effort".into(), effort.into());
    }
    if let Some(format) = output_format(body)? {
        chat.insert("response_format".into(), format);
    }
    if body.typed::<bool>("stream")?.unwrap_or(false) {
        chat.insert("stream".into(), Value::Bool(true));
        // The closing message_delta carries usage: ask every upstream for it.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(meta) = body.typed::<Metadata<'_>>("metadata")? {
        if let Some(user) = meta.user_id.filter(|u| !u.is_empty()) {
            chat.insert("user".into(), Value::String(user.into_owned()));
        }
    }
    if let Some(raw) = body.get("tools") {
        let tools: Vec<Tool<'_>> = parse("tools", raw)?;
        let mut functions = Vec::with_capacity(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            let Some(name) = t.name else {
                return Err(invalid(&format!("tools[{i}].name"), "Field required"));
            };
            match t.kind.as_deref() {
                None | Some("custom") => {}
                // A server tool (web search, bash, …) runs at Anthropic: no chat counterpart,
                // and dropping it would answer a different question.
                Some(kind) => {
                    return Err(invalid(
                        &format!("tools[{i}]"),
                        format!("'{kind}' is an Anthropic server tool; this model is not served by Anthropic, so only custom tools (name, input_schema) can be used. Remove it, or call a Claude model."),
                    ))
                }
            }
            let Some(schema) = t.input_schema else {
                return Err(invalid(
                    &format!("tools[{i}].input_schema"),
                    "Field required",
                ));
            };
            let schema: Value = parse(&format!("tools[{i}].input_schema"), schema)?;
            let mut f = json!({"name": name, "parameters": schema});
            if let Some(d) = t.description {
                f["description"] = Value::String(d.into_owned());
            }
            functions.push(json!({"type": "function", "function": f}));
        }
        if !functions.is_empty() {
            chat.insert("tools".into(), Value::Array(functions));
        }
    }
    if let Some(choice) = body.typed::<ToolChoice<'_>>("tool_choice")? {
        let mapped = match choice.kind.as_ref() {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => match choice.name {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => return Err(invalid("tool_choice.name", "Field required")),
            },
            other => {
                return Err(invalid(
                    "tool_choice.type",
                    format!("must be 'auto', 'any', 'tool' or 'none', not '{other}'"),
                ))
            }
        };
        if chat.contains_key("tools") {
            chat.insert("tool_choice".into(), mapped);
            if choice.disable_parallel_tool_use == Some(true) {
                chat.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    serde_json::to_vec(&Value::Object(chat)).map_err(|e| GatewayError::internal(e.to_string()))
}

/// Anthropic's `thinking` and `output_config.effort` as chat's `reasoning_effort`: a thinking
/// budget of up to 1024 tokens is `low`, up to 2048 `medium`, more `high` (LiteLLM's budgets
/// for those efforts); `adaptive` takes `output_config.effort`, else `medium`; `disabled` (or
/// neither) sends none. `effort: max` is `high`, chat's highest.
fn reasoning_effort(body: &RequestBody<'_>) -> GatewayResult<Option<&'static str>> {
    #[derive(Deserialize)]
    struct Thinking<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default)]
        budget_tokens: Option<u64>,
    }
    let effort = match output_config(body)?.and_then(|c| c.effort) {
        None => None,
        Some(e) => Some(match e.as_ref() {
            "low" => "low",
            "medium" => "medium",
            "high" | "max" => "high",
            other => {
                return Err(invalid(
                    "output_config.effort",
                    format!("must be 'low', 'medium', 'high' or 'max', not '{other}'"),
                ))
            }
        }),
    };
    let Some(thinking) = body.typed::<Thinking<'_>>("thinking")? else {
        return Ok(effort);
    };
    Ok(match thinking.kind.as_ref() {
        "enabled" => match thinking.budget_tokens {
            None => return Err(invalid("thinking.budget_tokens", "Field required")),
            Some(b) if b < 1024 => {
                return Err(invalid("thinking.budget_tokens", "must be at least 1024"))
            }
            Some(b) if b <= 1024 => Some("low"),
            Some(b) if b <= 2048 => Some("medium"),
            Some(_) => Some("high"),
        },
        "adaptive" => Some(effort.unwrap_or("medium")),
        "disabled" => effort,
        other => {
            return Err(invalid(
                "thinking.type",
                format!("must be 'enabled', 'adaptive' or 'disabled', not '{other}'"),
            ))
        }
    })
}

#[derive(Deserialize)]
struct OutputConfig<'a> {
    #[serde(default, borrow)]
    effort: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    format: Option<&'a RawValue>,
}

fn output_config<'a>(body: &RequestBody<'a>) -> GatewayResult<Option<OutputConfig<'a>>> {
    match body.get("output_config") {
        None => Ok(None),
        Some(raw) => parse("output_config", raw).map(Some),
    }
}

/// `output_config.format` (`{type: json_schema, schema}`, Anthropic's structured outputs) as
/// chat's `response_format`.
fn output_format(body: &RequestBody<'_>) -> GatewayResult<Option<Value>> {
    #[derive(Deserialize)]
    struct Format<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(default, borrow)]
        schema: Option<&'a RawValue>,
    }
    let Some(raw) = output_config(body)?.and_then(|c| c.format) else {
        return Ok(None);
    };
    let format: Format<'_> = parse("output_config.format", raw)?;
    if format.kind != "json_schema" {
        return Err(invalid(
            "output_config.format.type",
            format!("must be 'json_schema', not '{}'", format.kind),
        ));
    }
    let Some(schema) = format.schema else {
        return Err(invalid("output_config.format.schema", "Field required"));
    };
    let schema: Value = parse("output_config.format.schema", schema)?;
    Ok(Some(json!({"type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": true}})))
}

/// The text blocks' text, joined by newlines (system prompts, tool results).
fn joined_text(blocks: &[Block<'_>]) -> String {
    let mut text = String::new();
    for b in blocks.iter().filter(|b| b.kind == "text") {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(b.text.as_deref().unwrap_or(""));
    }
    text
}

/// A user turn: each `tool_result` becomes a `tool` message, ahead of the turn's other content
/// (chat wants tool answers right after the assistant's calls); the images and documents a
/// tool result holds join that other content. `param` names the turn's content.
fn user_turn(
    param: &str,
    content: Content<'_>,
    documents: Documents,
    out: &mut Vec<Value>,
) -> GatewayResult<()> {
    let blocks = match content {
        Content::Text(t) => {
            out.push(json!({"role": "user", "content": t}));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let param = format!("{param}[{j}]");
        match b.kind.as_ref() {
            "tool_result" => {
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b.tool_use_id.as_deref().unwrap_or(""),
                    "content": tool_result_text(b.content),
                }));
                tool_result_media(&param, b.content, documents, &mut parts)?;
            }
            "text" => parts.push(json!({"type": "text", "text": b.text.as_deref().unwrap_or("")})),
            "image" | "document" => media_part(&param, b, documents, &mut parts)?,
            // thinking, redacted_thinking, search results, unknown: nothing in chat.
            _ => {}
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    // Plain text stays a string: every provider takes that.
    if parts.len() == 1 && parts[0]["type"] == "text" {
        let text = parts.pop().map(|mut p| p["text"].take());
        out.push(json!({"role": "user", "content": text}));
    } else {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// The images and documents inside a tool result's content, as parts of the user message
/// that follows the tool messages. `param` names the tool result.
fn tool_result_media(
    param: &str,
    content: Option<&RawValue>,
    documents: Documents,
    parts: &mut Vec<Value>,
) -> GatewayResult<()> {
    let Some(raw) = content.filter(|c| c.get().trim_start().starts_with('[')) else {
        return Ok(());
    };
    let raws: Vec<&RawValue> = parse(&format!("{param}.content"), raw)?;
    for (k, raw) in raws.into_iter().enumerate() {
        let param = format!("{param}.content[{k}]");
        let block: Block<'_> = parse(&param, raw)?;
        if matches!(block.kind.as_ref(), "image" | "document") {
            check_block(&param, &block)?;
            media_part(&param, &block, documents, parts)?;
        }
    }
    Ok(())
}

/// An `image` or `document` block as chat content parts (see [`Documents`]); a 400 naming
/// `param` when the provider cannot take it.
fn media_part(
    param: &str,
    b: &Block<'_>,
    documents: Documents,
    parts: &mut Vec<Value>,
) -> GatewayResult<()> {
    let Some(s) = b.source.as_ref() else {
        return Ok(());
    };
    if b.kind == "image" {
        if let Some(url) = source_url(s) {
            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
        }
        return Ok(());
    }
    match s.kind.as_ref() {
        "text" => parts.push(json!({"type": "text", "text": s.data.as_deref().unwrap_or("")})),
        "content" => parts.push(json!({"type": "text", "text": tool_result_text(s.content)})),
        "url" => {
            return Err(invalid(
                param,
                format!("a document given by URL cannot be sent to {}: only Anthropic fetches document URLs. Send the document inline (source.type \"base64\"), or call a Claude model.", documents.provider()),
            ))
        }
        _ => {
            let Some(data_uri) = source_url(s) else {
                return Ok(());
            };
            match documents {
                Documents::FilePart(_) => parts.push(json!({"type": "file", "file": {
                    "file_data": data_uri,
                    "filename": b.title.as_deref().unwrap_or("document.pdf"),
                }})),
                Documents::InlineData(_) => {
                    parts.push(json!({"type": "image_url", "image_url": {"url": data_uri}}))
                }
                Documents::Refused(provider) => {
                    return Err(invalid(
                        param,
                        format!("{provider} cannot take documents through Switchboard's translation; send the document's text (source.type \"text\"), or call a Claude or Gemini model."),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn source_url(s: &Source<'_>) -> Option<String> {
    match s.kind.as_ref() {
        "base64" => Some(format!(
            "data:{};base64,{}",
            s.media_type.as_deref()?,
            s.data.as_deref()?
        )),
        "url" => s.url.as_deref().map(str::to_string),
        _ => None,
    }
}

/// A tool result's (or content document's) content as text: a string, or its text blocks.
fn tool_result_text(content: Option<&RawValue>) -> String {
    let Some(raw) = content else {
        return String::new();
    };
    if let Ok(s) = serde_json::from_str::<Cow<'_, str>>(raw.get()) {
        return s.into_owned();
    }
    serde_json::from_str::<Vec<Block<'_>>>(raw.get())
        .map(|b| joined_text(&b))
        .unwrap_or_default()
}

/// An assistant turn: text joined, `tool_use` blocks as tool calls; thinking dropped.
fn assistant_turn(content: Content<'_>) -> Value {
    let blocks = match content {
        Content::Text(t) => return json!({"role": "assistant", "content": t}),
        Content::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in &blocks {
        match b.kind.as_ref() {
            "text" => text.push_str(b.text.as_deref().unwrap_or("")),
            "tool_use" => calls.push(json!({
                "id": b.id.as_deref().unwrap_or(""),
                "type": "function",
                "function": {
                    "name": b.name.as_deref().unwrap_or(""),
                    "arguments": b.input.map(|i| i.get()).unwrap_or("{}"),
                },
            })),
            _ => {}
        }
    }
    let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> GatewayResult<Value> {
        let bytes = serde_json::to_vec(&body).unwrap();
        let parsed = RequestBody::parse(&bytes)?;
        translate(&parsed).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn documents_take_each_providers_form_or_are_refused_by_name() {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let raw = RequestBody::parse(&bytes).unwrap();
        let part = |provider: &'static str| -> GatewayResult<Value> {
            let chat = translate_for(&raw, Documents::for_provider(provider))?;
            let v: Value = serde_json::from_slice(&chat).unwrap();
            Ok(v["messages"][0]["content"][1].clone())
        };
        assert_eq!(
            part("openai").unwrap(),
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"}})
        );
        assert_eq!(
            part("gemini").unwrap(),
            json!({"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBE"}})
        );
        // Bedrock's Converse translation makes the data URI a document block.
        assert_eq!(part("bedrock").unwrap(), part("gemini").unwrap());
        let e = part("cohere").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1]"));
        assert!(e.message.contains("cohere"), "{}", e.message);
    }

    #[test]
    fn full_conversation_translates_to_chat() {
        let out = chat(json!({
            "model": "m", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ],
            "tools": [
                {"name": "get_weather", "description": "d", "input_schema": {"type": "object", "properties": {}}}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "temperature": 0.5, "top_k": 5,
            "metadata": {"user_id": "u-1"}, "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "model": "m", "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
                    {"role": "user", "content": "And tomorrow?"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {}}}}],
                "tool_choice": "required", "parallel_tool_calls": false,
                "stop": ["END"], "temperature": 0.5, "top_k": 5, "reasoning_effort": "low", "user": "u-1",
                "stream": true, "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn thinking_effort_and_output_format_map_to_chat() {
        let base = json!({"model": "m", "max_tokens": 9000, "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            chat(b).unwrap()
        };
        let effort = |out: Value| out.get("reasoning_effort").cloned();
        let thinking = |budget: u64| {
            effort(with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": budget}),
            ))
        };
        assert_eq!(thinking(1024), Some(json!("low")));
        assert_eq!(thinking(2048), Some(json!("medium")));
        assert_eq!(thinking(8000), Some(json!("high")));
        assert_eq!(
            effort(with("thinking", json!({"type": "adaptive"}))),
            Some(json!("medium"))
        );
        assert_eq!(effort(with("thinking", json!({"type": "disabled"}))), None);
        assert_eq!(
            effort(with("output_config", json!({"effort": "max"}))),
            Some(json!("high"))
        );
        let mut b = base.clone();
        b["thinking"] = json!({"type": "adaptive"});
        b["output_config"] = json!({"effort": "low", "format": {"type": "json_schema", "schema": {"type": "object"}}});
        let out = chat(b).unwrap();
        assert_eq!(out["reasoning_effort"], "low");
        assert_eq!(
            out["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(with("top_k", json!(40))["top_k"], 40);
    }

    #[test]
    fn bad_input_is_a_400_naming_the_field() {
        let cases = [
            (json!({"model": "m", "messages": []}), "max_tokens"),
            (
                json!({"model": "m", "max_tokens": 0, "messages": []}),
                "max_tokens",
            ),
            (json!({"model": "m", "max_tokens": 5}), "messages"),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "x"}]}]}),
                "messages[0].content[0].input",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
                "messages[0].content[0].source.media_type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "t"}]}),
                "tools[0].input_schema",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "tool_choice": {"type": "maybe"}}),
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [
                    {"name": "f", "input_schema": {"type": "object"}},
                    {"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[1]",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}]}),
                "tools[0]",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled"}}),
                "thinking.budget_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "sometimes"}}),
                "thinking.type",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "output_config": {"effort": "extreme"}}),
                "output_config.effort",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "top_k": -1}),
                "top_k",
            ),
        ];
        for (body, field) in cases {
            let e = chat(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {}", e.message);
        }
    }
}
