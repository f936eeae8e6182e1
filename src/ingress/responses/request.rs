//! A Responses API request (`POST /v1/responses`) as a Chat Completions body, and the request
//! fields the Response object echoes back. Mapping: `ingress-formats.md` §4.1.
//!
//! Refused with a 400 naming the field: `previous_response_id` and `conversation` (Switchboard
//! stores no responses, so there is nothing to continue from: replay the earlier items in
//! `input` instead), `background: true`, `prompt` (stored prompt templates), built-in (hosted)
//! tools and their items, and `item_reference` items. Accepted and not sent upstream: `store`
//! (answered as `store: false`), `include`, `truncation`, `service_tier`, `prompt_cache_key`,
//! `safety_identifier`, `metadata` (echoed back), `reasoning` (echoed; its effort is not sent,
//! as not every provider takes `reasoning_effort`), `text.verbosity`.

use crate::error::{GatewayError, GatewayResult};
use serde_json::{json, Map, Value};

/// What the Response object repeats from the request.
pub struct Echo {
    pub model: String,
    pub stream: bool,
    /// Request fields shown in every Response object (`instructions`, `tools`, `metadata`, …).
    pub fields: Map<String, Value>,
}

/// The chat body for a Responses request, and what the answer echoes.
pub fn to_chat(body: &[u8]) -> GatewayResult<(Vec<u8>, Echo)> {
    let req: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(GatewayError::bad_request(
                "The request body must be a JSON object.",
            ))
        }
        Err(e) => {
            return Err(GatewayError::bad_request(format!(
                "The request body is not valid JSON: {e}"
            )))
        }
    };
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "model",
                "'model' must be a non-empty string.",
            ))
        }
        None => return Err(GatewayError::missing_field("model")),
    };
    refuse_unsupported(&req)?;
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "stream",
                "'stream' must be a boolean.",
            ))
        }
    };

    let mut messages = Vec::new();
    let instructions = match req.get("instructions") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => {
            messages.push(json!({"role": "system", "content": s}));
            Value::String(s.clone())
        }
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "instructions",
                "'instructions' must be a string.",
            ))
        }
    };
    match req.get("input") {
        None | Some(Value::Null) => return Err(GatewayError::missing_field("input")),
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "input",
                "'input' must be a string or an array of input items.",
            ))
        }
    }
    if messages.is_empty() {
        return Err(GatewayError::invalid_param(
            "input",
            "'input' has no message to send: give a string or at least one message item.",
        ));
    }

    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(model.clone()));
    chat.insert("messages".into(), Value::Array(messages));
    if stream {
        chat.insert("stream".into(), Value::Bool(true));
        // Usage is needed for `response.completed`, whatever the client asked.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (from, to) in [
        ("max_output_tokens", "max_completion_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    let tools = match req.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.clone(),
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "tools",
                "'tools' must be an array.",
            ))
        }
    };
    if !tools.is_empty() {
        let chat_tools = tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<GatewayResult<Vec<_>>>()?;
        chat.insert("tools".into(), Value::Array(chat_tools));
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        chat.insert("tool_choice".into(), tool_choice(choice)?);
    }
    let text = req.get("text").cloned().unwrap_or(Value::Null);
    if let Some(format) = text.get("format").filter(|v| !v.is_null()) {
        if let Some(rf) = response_format(format)? {
            chat.insert("response_format".into(), rf);
        }
    }

    let mut fields = Map::new();
    fields.insert("instructions".into(), instructions);
    let get = |k: &str| req.get(k).cloned().unwrap_or(Value::Null);
    fields.insert("max_output_tokens".into(), get("max_output_tokens"));
    fields.insert(
        "parallel_tool_calls".into(),
        req.get("parallel_tool_calls")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or(Value::Bool(true)),
    );
    fields.insert("previous_response_id".into(), Value::Null);
    fields.insert(
        "reasoning".into(),
        req.get("reasoning")
            .cloned()
            .filter(|v| v.is_object())
            .unwrap_or_else(|| json!({"effort": null, "summary": null})),
    );
    fields.insert("store".into(), Value::Bool(false));
    fields.insert(
        "temperature".into(),
        req.get("temperature")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or(json!(1.0)),
    );
    fields.insert(
        "text".into(),
        if text.get("format").is_some_and(|f| f.is_object()) {
            text.clone()
        } else {
            json!({"format": {"type": "text"}})
        },
    );
    fields.insert(
        "tool_choice".into(),
        req.get("tool_choice")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or(json!("auto")),
    );
    fields.insert("tools".into(), Value::Array(tools));
    fields.insert(
        "top_p".into(),
        req.get("top_p")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or(json!(1.0)),
    );
    fields.insert("truncation".into(), json!("disabled"));
    fields.insert("user".into(), get("user"));
    fields.insert(
        "metadata".into(),
        req.get("metadata")
            .cloned()
            .filter(|v| v.is_object())
            .unwrap_or_else(|| json!({})),
    );
    let chat = serde_json::to_vec(&Value::Object(chat))
        .map_err(|e| GatewayError::internal(format!("could not write the chat body: {e}")))?;
    Ok((
        chat,
        Echo {
            model,
            stream,
            fields,
        },
    ))
}

/// Fields whose meaning the chat pipeline cannot honour.
fn refuse_unsupported(req: &Map<String, Value>) -> GatewayResult<()> {
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if set("previous_response_id") {
        return Err(GatewayError::invalid_param(
            "previous_response_id",
            "Switchboard does not store responses, so 'previous_response_id' cannot be \
             continued. Send the earlier turns in 'input' instead (the previous input items, \
             then the previous response's output items).",
        ));
    }
    if set("conversation") {
        return Err(GatewayError::invalid_param(
            "conversation",
            "Switchboard does not store conversations. Send the earlier turns in 'input' instead.",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(GatewayError::invalid_param(
            "background",
            "Background responses are not supported: Switchboard does not store responses. \
             Omit 'background' (or set it to false).",
        ));
    }
    if set("prompt") {
        return Err(GatewayError::invalid_param(
            "prompt",
            "Stored prompt templates ('prompt') are not supported. Send the prompt's text in \
             'instructions' and 'input'.",
        ));
    }
    Ok(())
}

/// One input item, appended to the chat messages.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> GatewayResult<()> {
    let param = format!("input[{i}]");
    let obj = item.as_object().ok_or_else(|| {
        GatewayError::invalid_param(&param, format!("'{param}' must be an object."))
    })?;
    let kind = obj
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = obj.get("role").and_then(|r| r.as_str()).ok_or_else(|| {
                GatewayError::invalid_param(
                    &format!("{param}.role"),
                    format!("'{param}.role' must be one of user, assistant, system, developer."),
                )
            })?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(GatewayError::invalid_param(
                    &format!("{param}.role"),
                    format!(
                        "'{param}.role' is '{role}'; use user, assistant, system or developer."
                    ),
                ));
            }
            let content = message_content(obj.get("content"), role, &param)?;
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let field = |k: &str| {
                obj.get(k).and_then(|v| v.as_str()).ok_or_else(|| {
                    GatewayError::invalid_param(
                        &format!("{param}.{k}"),
                        format!("'{param}.{k}' must be a string in a function_call item."),
                    )
                })
            };
            let call = json!({
                "id": field("call_id")?,
                "type": "function",
                "function": {"name": field("name")?, "arguments": field("arguments")?},
            });
            // Adjacent calls are one assistant turn in chat.
            match messages.last_mut() {
                Some(last)
                    if last["role"] == "assistant"
                        && (last.get("tool_calls").is_some() || last["content"].is_string()) =>
                {
                    match last.get_mut("tool_calls").and_then(|t| t.as_array_mut()) {
                        Some(calls) => calls.push(call),
                        None => {
                            last["tool_calls"] = Value::Array(vec![call]);
                        }
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let call_id = obj.get("call_id").and_then(|v| v.as_str()).ok_or_else(|| {
                GatewayError::invalid_param(
                    &format!("{param}.call_id"),
                    format!("'{param}.call_id' must be a string in a function_call_output item."),
                )
            })?;
            let output = match obj.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => {
                    return Err(GatewayError::invalid_param(
                        &format!("{param}.output"),
                        format!("'{param}.output' must be a string or a list of input_text parts."),
                    ))
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // Reasoning carries no meaning for another model; chat has no slot for it.
        "reasoning" => {}
        "item_reference" => {
            return Err(GatewayError::invalid_param(
                &param,
                "'item_reference' items refer to stored items, and Switchboard stores none: send \
                 the item itself.",
            ))
        }
        other => {
            return Err(GatewayError::invalid_param(
                &format!("{param}.type"),
                format!(
                    "Input items of type '{other}' (built-in tool calls) cannot be sent through \
                     Switchboard; use message, function_call and function_call_output items."
                ),
            ))
        }
    }
    Ok(())
}

/// A message item's content as chat content: a string stays one; parts become chat parts (an
/// assistant's text parts are joined into a string, as chat expects).
fn message_content(content: Option<&Value>, role: &str, param: &str) -> GatewayResult<Value> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(GatewayError::invalid_param(
                &format!("{param}.content"),
                format!("'{param}.content' must be a string or an array of content parts."),
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{param}.content[{j}]");
        let kind = part.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let text = |k: &str| {
            part.get(k).and_then(|t| t.as_str()).ok_or_else(|| {
                GatewayError::invalid_param(
                    &format!("{p}.{k}"),
                    format!("'{p}.{k}' must be a string."),
                )
            })
        };
        out.push(match kind {
            "input_text" | "output_text" | "text" => json!({"type": "text", "text": text("text")?}),
            "refusal" => json!({"type": "text", "text": text("refusal")?}),
            "input_image" => {
                let url = part.get("image_url").and_then(|u| u.as_str()).ok_or_else(|| {
                    GatewayError::invalid_param(
                        &format!("{p}.image_url"),
                        format!(
                            "'{p}' has no image_url: images by file_id need OpenAI's file store, \
                             which Switchboard does not have. Send the image as an https or data: URL."
                        ),
                    )
                })?;
                let mut image = json!({"url": url});
                if let Some(d) = part.get("detail").and_then(|d| d.as_str()).filter(|d| *d != "original") {
                    image["detail"] = json!(d);
                }
                json!({"type": "image_url", "image_url": image})
            }
            "input_file" => {
                let mut file = Map::new();
                for k in ["file_data", "file_id", "filename"] {
                    if let Some(v) = part.get(k).filter(|v| v.is_string()) {
                        file.insert(k.into(), v.clone());
                    }
                }
                if !file.contains_key("file_data") && !file.contains_key("file_id") {
                    return Err(GatewayError::invalid_param(
                        &p,
                        format!("'{p}' needs file_data (a base64 data URL); file_url is not supported."),
                    ));
                }
                json!({"type": "file", "file": file})
            }
            other => {
                return Err(GatewayError::invalid_param(
                    &format!("{p}.type"),
                    format!("Content parts of type '{other}' are not supported; use input_text, input_image or input_file."),
                ))
            }
        });
    }
    if role == "assistant" || role == "system" || role == "developer" {
        // Chat assistant (and, for many providers, system) content is text.
        if out.iter().all(|p| p["type"] == "text") {
            let joined: String = out.iter().filter_map(|p| p["text"].as_str()).collect();
            return Ok(Value::String(joined));
        }
    }
    Ok(Value::Array(out))
}

/// A Responses tool as a chat tool. Only function tools translate.
fn tool(t: &Value, i: usize) -> GatewayResult<Value> {
    let kind = t.get("type").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "function" {
        return Err(GatewayError::invalid_param(
            &format!("tools[{i}].type"),
            format!(
                "Built-in tool '{kind}' is run by OpenAI's hosted Responses API and cannot be \
                 served through Switchboard; only tools of type 'function' are supported."
            ),
        ));
    }
    let name = t.get("name").and_then(|n| n.as_str()).ok_or_else(|| {
        GatewayError::invalid_param(
            &format!("tools[{i}].name"),
            format!("'tools[{i}].name' must be a string."),
        )
    })?;
    let mut function = Map::new();
    function.insert("name".into(), json!(name));
    for k in ["description", "parameters", "strict"] {
        if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
            function.insert(k.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> GatewayResult<Value> {
    let bad = |msg: String| GatewayError::invalid_param("tool_choice", msg);
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::String(s) => Err(bad(format!("'tool_choice' '{s}' is not one of auto, none, required."))),
        Value::Object(o) => match o.get("type").and_then(|t| t.as_str()) {
            Some("function") => {
                let name = o.get("name").and_then(|n| n.as_str()).ok_or_else(|| {
                    bad("'tool_choice' of type function needs a 'name'.".into())
                })?;
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            Some("allowed_tools") => Ok(json!({
                "type": "allowed_tools",
                "allowed_tools": {"mode": o.get("mode").cloned().unwrap_or(json!("auto")), "tools": o.get("tools").cloned().unwrap_or(json!([]))},
            })),
            other => Err(bad(format!(
                "'tool_choice' of type '{}' names a built-in tool, which Switchboard cannot serve; use auto, none, required or a function.",
                other.unwrap_or("?")
            ))),
        },
        _ => Err(bad("'tool_choice' must be a string or an object.".into())),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn response_format(format: &Value) -> GatewayResult<Option<Value>> {
    match format.get("type").and_then(|t| t.as_str()) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    schema.insert(k.into(), v.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err(GatewayError::invalid_param(
                    "text.format.schema",
                    "'text.format' of type json_schema needs a 'schema'.",
                ));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(GatewayError::invalid_param(
            "text.format.type",
            format!(
                "'text.format.type' '{}' is not one of text, json_object, json_schema.",
                other.unwrap_or("?")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        let (bytes, _) = to_chat(body.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn items_become_chat_messages() {
        let c = chat(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50, "stream": true,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "r1"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": null}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}},
        }));
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            c["messages"][1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}})
        );
        assert_eq!(c["messages"][2]["content"], "hello");
        let calls = c["messages"][2]["tool_calls"].as_array().unwrap();
        assert_eq!((calls.len(), calls[1]["id"].as_str()), (2, Some("call_2")));
        assert_eq!(
            c["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "r1"})
        );
        assert_eq!(c["messages"].as_array().unwrap().len(), 4);
        assert_eq!(c["max_completion_tokens"], 50);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            c["tools"][0],
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})
        );
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(c["response_format"]["json_schema"]["name"], "s");
    }

    #[test]
    fn refusals_name_the_field() {
        for (body, param) in [
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "web_search_call", "id": "w"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "w"}]}),
                "input[0]",
            ),
            (json!({"model": "m"}), "input"),
            (json!({"input": "x"}), "model"),
            (
                json!({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
        ] {
            let e = to_chat(body.to_string().as_bytes()).err().expect("refused");
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
        assert_eq!(to_chat(b"[1]").err().unwrap().status, 400);
        assert_eq!(to_chat(b"{").err().unwrap().status, 400);
    }
}
