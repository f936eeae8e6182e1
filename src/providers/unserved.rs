//! Deployments Switchboard loads but cannot call: a provider prefix it does not know
//! (LiteLLM loads those too and fails them when called) or one LiteLLM serves and Switchboard
//! does not yet (`sagemaker`, `auto_router`, …). The rest of the
//! config keeps working; [`load_warnings`] names each such deployment at load and in
//! `--check` (`--check --strict` fails on them), and every call to one is a 400 saying why,
//! before anything is sent anywhere.

use super::catalog;
use super::{
    Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest,
};
use crate::config::{Config, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::openai::RequestBody;
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use std::sync::Arc;

/// Stands in for the provider of a deployment that cannot be called; every request fails with
/// its message. The endpoint is a placeholder nothing connects to.
pub struct Unserved {
    message: String,
}

/// The placeholder base URL (never dialled: requests fail before a connection is asked for).
const PLACEHOLDER_BASE: &str = "http://unserved.invalid";

/// Whether the deployment loads as a stand-in: no provider module claims its prefix, or it
/// names no model (`azure/`, which LiteLLM's own example config has: LiteLLM loads it).
pub fn cannot_serve(dep: &DeploymentConfig) -> bool {
    let inferred = || {
        dep.params
            .api_base
            .as_deref()
            .and_then(catalog::infer_from_api_base)
            .is_some()
    };
    dep.model.is_empty() || !(super::is_served(&dep.provider) || inferred())
}

/// What a call to this deployment is told, and the warning at load (without the key path).
fn reason(dep: &DeploymentConfig) -> (String, String) {
    let prefix = dep.provider.as_str();
    let full = format!("{prefix}/{}", dep.model);
    if dep.model.is_empty() && super::is_served(prefix) {
        return (
            format!(
                "The model '{}' cannot be called: its deployment names no model after the \
                 provider prefix (\"{full}\"). Fix litellm_params.model in the gateway config.",
                dep.model_name
            ),
            format!("\"{full}\" names no model after the provider prefix"),
        );
    }
    if let Some(why) = catalog::unserved_reason(prefix) {
        return (
            format!("The model '{}' cannot be called: {why}", dep.model_name),
            format!("provider \"{prefix}\": {why}"),
        );
    }
    if catalog::LITELLM_PROVIDERS.contains(&prefix) {
        return (
            format!(
                "The model '{}' cannot be called: its provider \"{prefix}\" is a LiteLLM provider \
                 Switchboard does not serve yet. Providers Switchboard serves are listed in its \
                 README.",
                dep.model_name
            ),
            format!("provider \"{prefix}\" is a LiteLLM provider Switchboard does not serve yet"),
        );
    }
    // LiteLLM's own words (`get_llm_provider`), then what to fix.
    (
        format!(
            "litellm.BadRequestError: LLM Provider NOT provided. Pass in the LLM provider you are \
             trying to call. You passed model={full}. The model group '{}' names provider \
             \"{prefix}\", which is not a known provider; fix litellm_params.model in the gateway \
             config (e.g. openai/<model>, anthropic/<model>). Learn more: \
             https://docs.litellm.ai/docs/providers",
            dep.model_name
        ),
        format!("unknown provider \"{prefix}\" (LiteLLM also fails such a deployment when called)"),
    )
}

/// The stand-in for a deployment whose prefix no provider module claims.
pub fn build(dep: &DeploymentConfig) -> Arc<dyn Provider> {
    Arc::new(Unserved {
        message: reason(dep).0,
    })
}

/// One warning per deployment that loads but cannot be called, naming its key path and what a
/// call gets. Deployments answered by `mock_response` are never called upstream: no warning.
pub fn load_warnings(config: &Config) -> Vec<String> {
    config
        .deployments
        .iter()
        .filter(|d| d.params.mock_response.is_none() && cannot_serve(d))
        .map(|d| {
            format!(
                "model_list[{}].litellm_params.model: {}; calls to model group \"{}\" on this \
                 deployment fail with 400",
                d.index,
                reason(d).1.trim_end_matches('.'),
                d.model_name
            )
        })
        .collect()
}

#[async_trait]
impl Provider for Unserved {
    fn name(&self) -> &'static str {
        "unserved"
    }

    fn base_url(&self) -> &str {
        PLACEHOLDER_BASE
    }

    fn supports(&self, _op: Operation) -> bool {
        // Every operation reaches `build_request`, which says why none can be served.
        true
    }

    async fn build_request(
        &self,
        _body: &RequestBody<'_>,
        _cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        Err(GatewayError::invalid_param("model", self.message.clone()))
    }

    fn parse_response(
        &self,
        _body: &[u8],
        _cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        Err(GatewayError::bad_request(self.message.clone()))
    }

    fn stream_translator(&self, _cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        // Never reached (no request is ever sent); refuses whatever it is fed all the same.
        Box::new(Refuse(self.message.clone()))
    }
}

/// A stream translator that fails on the first bytes or at the end.
struct Refuse(String);

impl StreamTranslator for Refuse {
    fn feed(&mut self, _input: &[u8], _out: &mut bytes::BytesMut) -> GatewayResult<()> {
        Err(GatewayError::bad_request(self.0.clone()))
    }

    fn finish(&mut self, _out: &mut bytes::BytesMut) -> GatewayResult<()> {
        Err(GatewayError::bad_request(self.0.clone()))
    }

    fn feed_events(
        &mut self,
        _input: &[u8],
        _sink: &mut dyn crate::events::EventSink,
    ) -> GatewayResult<()> {
        Err(GatewayError::bad_request(self.0.clone()))
    }

    fn finish_events(&mut self, _sink: &mut dyn crate::events::EventSink) -> GatewayResult<()> {
        Err(GatewayError::bad_request(self.0.clone()))
    }

    fn usage(&self) -> Option<crate::openai::Usage> {
        None
    }
}
