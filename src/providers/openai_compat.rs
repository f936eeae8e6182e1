//! OpenAI and every provider that speaks its wire format (Azure, vLLM, Groq, xAI, Mistral,
//! DeepSeek, OpenRouter, Together, Fireworks, Perplexity, Hugging Face TGI, LM Studio, any
//! `openai_like` server). Requests go through nearly untouched: the model name is replaced and,
//! for streams, `stream_options.include_usage` is asked for so usage is always known; the usage
//! chunk is stripped again when the client did not ask for it. Responses are forwarded byte for
//! byte; they are only scanned for usage.

use super::framed::{EventTranslator, Framed};
use super::{
    Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::openai::request::write_json_string;
use crate::openai::{RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use bytes::BytesMut;
use http::HeaderName;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::sync::Arc;

/// Static facts about one OpenAI-compatible provider.
struct Flavor {
    name: &'static str,
    /// Documented default base URL (ending in the API version path), if it has one.
    default_base: Option<&'static str>,
    /// Environment variable LiteLLM reads the key from when `api_key` is absent.
    key_env: &'static str,
    /// Whether the server accepts `stream_options` (Mistral and Perplexity reject unknown params).
    stream_options: bool,
}

const FLAVORS: &[Flavor] = &[
    Flavor {
        name: "openai",
        default_base: Some("https://api.openai.com/v1"),
        key_env: "OPENAI_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "azure",
        default_base: None,
        key_env: "AZURE_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "hosted_vllm",
        default_base: None,
        key_env: "HOSTED_VLLM_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "vllm",
        default_base: None,
        key_env: "HOSTED_VLLM_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "groq",
        default_base: Some("https://api.groq.com/openai/v1"),
        key_env: "GROQ_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "xai",
        default_base: Some("https://api.x.ai/v1"),
        key_env: "XAI_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "mistral",
        default_base: Some("https://api.mistral.ai/v1"),
        key_env: "MISTRAL_API_KEY",
        stream_options: false,
    },
    Flavor {
        name: "deepseek",
        default_base: Some("https://api.deepseek.com/v1"),
        key_env: "DEEPSEEK_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "openrouter",
        default_base: Some("https://openrouter.ai/api/v1"),
        key_env: "OPENROUTER_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "together_ai",
        default_base: Some("https://api.together.xyz/v1"),
        key_env: "TOGETHERAI_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "fireworks_ai",
        default_base: Some("https://api.fireworks.ai/inference/v1"),
        key_env: "FIREWORKS_AI_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "perplexity",
        default_base: Some("https://api.perplexity.ai"),
        key_env: "PERPLEXITYAI_API_KEY",
        stream_options: false,
    },
    Flavor {
        name: "huggingface",
        default_base: Some("https://router.huggingface.co/v1"),
        key_env: "HUGGINGFACE_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "lm_studio",
        default_base: Some("http://localhost:1234/v1"),
        key_env: "LM_STUDIO_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "openai_like",
        default_base: None,
        key_env: "OPENAI_LIKE_API_KEY",
        stream_options: true,
    },
    Flavor {
        name: "custom_openai",
        default_base: None,
        key_env: "OPENAI_LIKE_API_KEY",
        stream_options: true,
    },
];

/// Azure's default `api-version` when neither the config nor `AZURE_API_VERSION` gives one.
const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

pub struct OpenAiCompat {
    flavor: &'static Flavor,
    /// `scheme://host[:port]`
    origin: String,
    /// Path prefix from the base URL (`/v1`), no trailing slash.
    base_path: String,
    auth: Option<(HeaderName, String)>,
    organization: Option<String>,
    /// Azure: the `api-version` (the deployment name is the model).
    azure_api_version: Option<String>,
}

/// Builds the provider if `dep.provider` is an OpenAI-compatible prefix.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn super::Provider>>, ConfigError> {
    let Some(flavor) = FLAVORS.iter().find(|f| f.name == dep.provider) else {
        return Ok(None);
    };
    let path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let env_base = match flavor.name {
        "azure" => std::env::var("AZURE_API_BASE").ok(),
        "hosted_vllm" | "vllm" => std::env::var("HOSTED_VLLM_API_BASE").ok(),
        _ => None,
    };
    let base = dep
        .params
        .api_base
        .clone()
        .or(env_base)
        .or(flavor.default_base.map(str::to_string))
        .ok_or_else(|| {
            ConfigError::new(
                path("api_base"),
                format!(
                    "required for {} deployments (the server's base URL, e.g. http://host:8000/v1)",
                    flavor.name
                ),
            )
        })?;
    let base = base.trim_end_matches('/');
    let (origin, base_path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            path("api_base"),
            format!("\"{base}\" must be an http:// or https:// URL"),
        )
    })?;
    let mut base_path = base_path.to_string();
    if flavor.name == "huggingface" && dep.params.api_base.is_some() && !base_path.ends_with("/v1")
    {
        // TGI serves the OpenAI route under /v1.
        base_path.push_str("/v1");
    }
    let api_key = dep
        .params
        .api_key
        .clone()
        .or_else(|| std::env::var(flavor.key_env).ok())
        .filter(|k| !k.is_empty());
    let auth = api_key.map(|k| {
        if flavor.name == "azure" {
            (HeaderName::from_static("api-key"), k)
        } else {
            (http::header::AUTHORIZATION, format!("Bearer {k}"))
        }
    });
    if let Some((_, v)) = &auth {
        http::HeaderValue::from_str(v).map_err(|_| {
            ConfigError::new(
                path("api_key"),
                "contains characters not allowed in an HTTP header",
            )
        })?;
    }
    let azure_api_version = (flavor.name == "azure").then(|| {
        dep.params
            .api_version
            .clone()
            .or_else(|| std::env::var("AZURE_API_VERSION").ok())
            .unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_string())
    });
    Ok(Some(Arc::new(OpenAiCompat {
        flavor,
        origin: origin.to_string(),
        base_path,
        auth,
        organization: dep.params.organization.clone(),
        azure_api_version,
    })))
}

/// `https://host:port/path` → (`https://host:port`, `/path`).
pub fn split_origin(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return None;
    }
    match url[scheme_end..].find('/') {
        Some(i) => Some((&url[..scheme_end + i], &url[scheme_end + i..])),
        None => Some((url, "")),
    }
}

#[async_trait]
impl Provider for OpenAiCompat {
    fn name(&self) -> &'static str {
        self.flavor.name
    }

    fn base_url(&self) -> &str {
        &self.origin
    }

    fn supports(&self, _op: Operation) -> bool {
        true
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let op_path = match cx.op {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
        };
        let path = match &self.azure_api_version {
            Some(version) => format!(
                "{}/openai/deployments/{}/{op_path}?api-version={version}",
                self.base_path, cx.model
            ),
            None => format!("{}/{op_path}", self.base_path),
        };
        let mut model_json = Vec::with_capacity(cx.model.len() + 2);
        write_json_string(&mut model_json, cx.model);
        let model_json = std::str::from_utf8(&model_json).unwrap_or("\"\"");
        let mut out = Vec::with_capacity(body_len_hint(body) + 64);
        if cx.stream && self.flavor.stream_options {
            body.write_with(
                &[
                    ("model", model_json),
                    ("stream_options", "{\"include_usage\":true}"),
                ],
                &[],
                &mut out,
            );
        } else {
            body.write_with(&[("model", model_json)], &[], &mut out);
        }
        let mut req = UpstreamRequest::post_json(path, out);
        if let Some((name, value)) = &self.auth {
            req.header(name.clone(), value)?;
        }
        if let Some(org) = &self.organization {
            req.header(HeaderName::from_static("openai-organization"), org)?;
        }
        if cx.stream {
            req.header(http::header::ACCEPT, "text/event-stream")?;
        }
        Ok(req)
    }

    fn parse_response(
        &self,
        body: &[u8],
        _cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default)]
            usage: Option<Usage>,
        }
        let peek: Peek = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "{}: the upstream answered 2xx with a body that is not JSON ({e}).",
                self.flavor.name
            ))
        })?;
        Ok(TranslatedResponse {
            body: bytes::Bytes::copy_from_slice(body),
            usage: peek.usage,
        })
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(Framed::<SseDecoder, _>::new(PassThroughStream {
            provider: self.flavor.name,
            client_wants_usage: cx.include_usage,
            usage: None,
            done: false,
        }))
    }
}

fn body_len_hint(body: &RequestBody<'_>) -> usize {
    body.fields()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum()
}

/// Forwards OpenAI SSE events as they are, noting usage and dropping the usage-only chunk
/// the gateway asked for on the client's behalf.
struct PassThroughStream {
    provider: &'static str,
    client_wants_usage: bool,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl EventTranslator<SseDecoder> for PassThroughStream {
    fn on_event(&mut self, ev: SseEvent<'_>, out: &mut BytesMut) -> GatewayResult<()> {
        if self.done {
            return Ok(());
        }
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        let peek: ChunkPeek = serde_json::from_str(ev.data).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "{}: the upstream sent a stream event that is not JSON ({e}).",
                self.provider
            ))
        })?;
        if let Some(u) = peek.usage {
            self.usage = Some(u);
        }
        let usage_only =
            peek.choices.as_ref().is_some_and(|c| c.is_empty()) && peek.usage.is_some();
        if usage_only && !self.client_wants_usage {
            return Ok(());
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(ev.data.as_bytes());
        out.extend_from_slice(b"\n\n");
        if peek.error.is_some() {
            // OpenAI's mid-stream error event ends the stream.
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Ok(())
    }

    fn on_end(&mut self, _out: &mut BytesMut) -> GatewayResult<()> {
        if !self.done {
            return Err(GatewayError::bad_gateway(format!(
                "{}: the upstream ended the stream before [DONE].",
                self.provider
            )));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
