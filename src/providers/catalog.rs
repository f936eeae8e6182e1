//! The OpenAI-compatible providers as data: one row per `litellm_params.model` prefix with its
//! default base URL, the environment variables LiteLLM reads its base URL and key from, and its
//! quirks. [`super::openai_compat`] serves every row with one implementation; adding a provider
//! that speaks OpenAI's wire format is adding a row here.
//!
//! Also here: the prefixes LiteLLM knows that Switchboard accepts at load but cannot serve
//! ([`UNSERVED`], each with the reason a call gets), and LiteLLM's own provider list
//! ([`LITELLM_PROVIDERS`]) to tell "a LiteLLM provider we do not serve" from "no provider at all".
//!
//! Values are LiteLLM's, checked against its source; the `source` column says where (paths in
//! BerriAI/litellm). `get_llm_provider_logic.py` is
//! `litellm/litellm_core_utils/get_llm_provider_logic.py`, `providers.json` is
//! `litellm/llms/openai_like/providers.json`.

/// How the API key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// Azure OpenAI: `api-key: <key>`.
    AzureApiKey,
    /// `Authorization: Bearer <key>` and the key again in this header (Sarvam).
    BearerAnd(&'static str),
}

/// Where the OpenAI routes sit below the base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    /// `<base>/chat/completions`, `<base>/embeddings`.
    Plain,
    /// Azure: `<base>/openai/deployments/<model>/chat/completions?api-version=…`.
    AzureDeployment,
    /// A base from the config or a variable (not the default) gets this suffix unless it
    /// already ends so: Hugging Face TGI endpoints serve under `/v1`, Heroku under `/v1`,
    /// DigitalOcean Gradient agents under `/api/v1`.
    SuffixOnCustomBase(&'static str),
    /// Cloudflare Workers AI: the default base carries the account id from
    /// `CLOUDFLARE_ACCOUNT_ID`, and LiteLLM's native `…/ai/run/` base is served by the
    /// OpenAI-compatible `…/ai/v1` routes of the same account.
    Cloudflare,
}

/// One OpenAI-compatible provider.
#[derive(Debug)]
pub struct Compat {
    /// The `litellm_params.model` prefix (`cerebras` in `cerebras/llama3.1-8b`).
    pub prefix: &'static str,
    /// Base URL when neither `api_base` nor a `base_env` variable gives one. `None`: the
    /// deployment must say (self-hosted servers have no canonical address).
    pub default_base: Option<&'static str>,
    /// Variables read for the base URL when `api_base` is absent, first set wins.
    pub base_env: &'static [&'static str],
    /// Variables read for the key when `api_key` is absent, first set wins.
    pub key_env: &'static [&'static str],
    /// Whether the server accepts `stream_options` (asked for so usage is always known).
    /// Mistral's family and Perplexity reject unknown parameters.
    pub stream_options: bool,
    pub auth: Auth,
    pub paths: Paths,
    /// Where the values were checked.
    pub source: &'static str,
}

const fn row(
    prefix: &'static str,
    default_base: Option<&'static str>,
    base_env: &'static [&'static str],
    key_env: &'static [&'static str],
    source: &'static str,
) -> Compat {
    Compat {
        prefix,
        default_base,
        base_env,
        key_env,
        stream_options: true,
        auth: Auth::Bearer,
        paths: Paths::Plain,
        source,
    }
}

const fn without_stream_options(mut c: Compat) -> Compat {
    c.stream_options = false;
    c
}

const fn with_auth(mut c: Compat, auth: Auth) -> Compat {
    c.auth = auth;
    c
}

const fn with_paths(mut c: Compat, paths: Paths) -> Compat {
    c.paths = paths;
    c
}

const GLPL: &str = "get_llm_provider_logic.py _get_openai_compatible_provider_info";
const JSON: &str = "providers.json";

/// Every OpenAI-compatible provider Switchboard serves, in `--check`/error-message order.
pub const OPENAI_COMPATIBLE: &[Compat] = &[
    row(
        "openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_BASE_URL", "OPENAI_API_BASE"],
        &["OPENAI_API_KEY"],
        "litellm/main.py openai branch",
    ),
    with_paths(
        with_auth(
            row(
                "azure",
                None,
                &["AZURE_API_BASE"],
                &["AZURE_API_KEY"],
                "litellm/llms/azure/azure.py",
            ),
            Auth::AzureApiKey,
        ),
        Paths::AzureDeployment,
    ),
    row(
        "hosted_vllm",
        None,
        &["HOSTED_VLLM_API_BASE"],
        &["HOSTED_VLLM_API_KEY"],
        "litellm/llms/hosted_vllm/chat/transformation.py",
    ),
    row(
        "vllm",
        None,
        &["HOSTED_VLLM_API_BASE"],
        &["HOSTED_VLLM_API_KEY"],
        "served as hosted_vllm (LiteLLM's local vllm SDK mode has no HTTP form)",
    ),
    row(
        "groq",
        Some("https://api.groq.com/openai/v1"),
        &["GROQ_API_BASE"],
        &["GROQ_API_KEY"],
        "litellm/llms/groq/chat/transformation.py",
    ),
    row(
        "xai",
        Some("https://api.x.ai/v1"),
        &["XAI_API_BASE"],
        &["XAI_API_KEY"],
        "litellm/llms/xai/chat/transformation.py",
    ),
    without_stream_options(row(
        "mistral",
        Some("https://api.mistral.ai/v1"),
        &["MISTRAL_API_BASE"],
        &["MISTRAL_API_KEY"],
        "litellm/llms/mistral/chat/transformation.py",
    )),
    without_stream_options(row(
        "codestral",
        Some("https://codestral.mistral.ai/v1"),
        &["CODESTRAL_API_BASE"],
        &["CODESTRAL_API_KEY"],
        GLPL,
    )),
    row(
        "deepseek",
        Some("https://api.deepseek.com/beta"),
        &["DEEPSEEK_API_BASE"],
        &["DEEPSEEK_API_KEY"],
        GLPL,
    ),
    row(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_BASE"],
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
        "litellm/main.py openrouter branch",
    ),
    row(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &["TOGETHER_AI_API_BASE"],
        &[
            "TOGETHER_API_KEY",
            "TOGETHER_AI_API_KEY",
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_TOKEN",
        ],
        GLPL,
    ),
    row(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_API_BASE"],
        &[
            "FIREWORKS_API_KEY",
            "FIREWORKS_AI_API_KEY",
            "FIREWORKSAI_API_KEY",
            "FIREWORKS_AI_TOKEN",
        ],
        "litellm/llms/fireworks_ai/chat/transformation.py",
    ),
    without_stream_options(row(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITY_API_BASE"],
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
        "litellm/llms/perplexity/chat/transformation.py",
    )),
    with_paths(
        row(
            "huggingface",
            Some("https://router.huggingface.co/v1"),
            &[],
            &["HUGGINGFACE_API_KEY", "HF_TOKEN"],
            "litellm/llms/huggingface/chat/transformation.py",
        ),
        Paths::SuffixOnCustomBase("/v1"),
    ),
    row(
        "lm_studio",
        Some("http://localhost:1234/v1"),
        &["LM_STUDIO_API_BASE"],
        &["LM_STUDIO_API_KEY"],
        "litellm/llms/lm_studio/chat/transformation.py",
    ),
    row(
        "openai_like",
        None,
        &[],
        &["OPENAI_LIKE_API_KEY"],
        "litellm/llms/openai_like/chat/handler.py",
    ),
    row(
        "custom_openai",
        None,
        &[],
        &["OPENAI_LIKE_API_KEY"],
        "served as openai_like",
    ),
    row(
        "cerebras",
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_BASE"],
        &["CEREBRAS_API_KEY"],
        GLPL,
    ),
    row(
        "nvidia_nim",
        Some("https://integrate.api.nvidia.com/v1"),
        &["NVIDIA_NIM_API_BASE"],
        &["NVIDIA_NIM_API_KEY"],
        GLPL,
    ),
    row(
        "github",
        Some("https://models.inference.ai.azure.com"),
        &["GITHUB_API_BASE"],
        &["GITHUB_API_KEY"],
        GLPL,
    ),
    row(
        "zai",
        Some("https://api.z.ai/api/paas/v4"),
        &["ZAI_API_BASE"],
        &["ZAI_API_KEY"],
        "litellm/llms/zai/chat/transformation.py",
    ),
    row(
        "sambanova",
        Some("https://api.sambanova.ai/v1"),
        &["SAMBANOVA_API_BASE"],
        &["SAMBANOVA_API_KEY"],
        GLPL,
    ),
    row(
        "deepinfra",
        Some("https://api.deepinfra.com/v1/openai"),
        &["DEEPINFRA_API_BASE"],
        &["DEEPINFRA_API_KEY"],
        "get_llm_provider_logic.py openai_compatible_endpoints; deepinfra/chat/transformation.py",
    ),
    row(
        "nebius",
        Some("https://api.studio.nebius.ai/v1"),
        &["NEBIUS_API_BASE"],
        &["NEBIUS_API_KEY"],
        GLPL,
    ),
    row(
        "novita",
        Some("https://api.novita.ai/v3/openai"),
        &["NOVITA_API_BASE"],
        &["NOVITA_API_KEY"],
        GLPL,
    ),
    row(
        "hyperbolic",
        Some("https://api.hyperbolic.xyz/v1"),
        &["HYPERBOLIC_API_BASE"],
        &["HYPERBOLIC_API_KEY"],
        "litellm/llms/hyperbolic/chat/transformation.py",
    ),
    row(
        "lambda_ai",
        Some("https://api.lambda.ai/v1"),
        &["LAMBDA_API_BASE"],
        &["LAMBDA_API_KEY"],
        "litellm/llms/lambda_ai/chat/transformation.py",
    ),
    row(
        "moonshot",
        Some("https://api.moonshot.ai/v1"),
        &["MOONSHOT_API_BASE"],
        &["MOONSHOT_API_KEY"],
        "litellm/llms/moonshot/chat/transformation.py",
    ),
    row(
        "dashscope",
        Some("https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        &["DASHSCOPE_API_BASE"],
        &["DASHSCOPE_API_KEY"],
        "litellm/llms/dashscope/chat/transformation.py",
    ),
    row(
        "featherless_ai",
        Some("https://api.featherless.ai/v1"),
        &["FEATHERLESS_API_BASE"],
        &["FEATHERLESS_API_KEY"],
        "litellm/llms/featherless_ai/chat/transformation.py",
    ),
    row(
        "nscale",
        Some("https://inference.api.nscale.com/v1"),
        &["NSCALE_API_BASE"],
        &["NSCALE_API_KEY"],
        "litellm/llms/nscale/chat/transformation.py",
    ),
    row(
        "meta_llama",
        Some("https://api.llama.com/compat/v1"),
        &["LLAMA_API_BASE"],
        &["LLAMA_API_KEY"],
        GLPL,
    ),
    row(
        "volcengine",
        Some("https://ark.cn-beijing.volces.com/api/v3"),
        &["VOLCENGINE_API_BASE"],
        &["VOLCENGINE_API_KEY"],
        GLPL,
    ),
    row(
        "ai21_chat",
        Some("https://api.ai21.com/studio/v1"),
        &["AI21_API_BASE"],
        &["AI21_API_KEY"],
        GLPL,
    ),
    row(
        "empower",
        Some("https://app.empower.dev/api/v1"),
        &["EMPOWER_API_BASE"],
        &["EMPOWER_API_KEY"],
        GLPL,
    ),
    row(
        "friendliai",
        Some("https://api.friendli.ai/serverless/v1"),
        &["FRIENDLI_API_BASE"],
        &["FRIENDLIAI_API_KEY", "FRIENDLI_TOKEN"],
        GLPL,
    ),
    row(
        "galadriel",
        Some("https://api.galadriel.com/v1"),
        &["GALADRIEL_API_BASE"],
        &["GALADRIEL_API_KEY"],
        GLPL,
    ),
    row(
        "wandb",
        Some("https://api.inference.wandb.ai/v1"),
        &["WANDB_API_BASE"],
        &["WANDB_API_KEY"],
        GLPL,
    ),
    row(
        "baseten",
        Some("https://inference.baseten.co/v1"),
        &["BASETEN_API_BASE"],
        &["BASETEN_API_KEY"],
        GLPL,
    ),
    row(
        "vercel_ai_gateway",
        Some("https://ai-gateway.vercel.sh/v1"),
        &["VERCEL_AI_GATEWAY_API_BASE"],
        &["VERCEL_AI_GATEWAY_API_KEY", "VERCEL_OIDC_TOKEN"],
        "litellm/llms/vercel_ai_gateway/chat/transformation.py",
    ),
    row(
        "aiml",
        Some("https://api.aimlapi.com/v1"),
        &["AIML_API_BASE"],
        &["AIML_API_KEY"],
        "litellm/llms/aiml/chat/transformation.py",
    ),
    row(
        "v0",
        Some("https://api.v0.dev/v1"),
        &["V0_API_BASE"],
        &["V0_API_KEY"],
        "litellm/llms/v0/chat/transformation.py",
    ),
    row(
        "morph",
        Some("https://api.morphllm.com/v1"),
        &["MORPH_API_BASE"],
        &["MORPH_API_KEY"],
        "litellm/llms/morph/chat/transformation.py",
    ),
    with_paths(
        row(
            "gradient_ai",
            Some("https://inference.do-ai.run/v1"),
            &["GRADIENT_AI_AGENT_ENDPOINT"],
            &["GRADIENT_AI_API_KEY"],
            "litellm/llms/gradient_ai/chat/transformation.py (agents: <endpoint>/api/v1)",
        ),
        Paths::SuffixOnCustomBase("/api/v1"),
    ),
    with_paths(
        row(
            "heroku",
            None,
            &["HEROKU_API_BASE"],
            &["HEROKU_API_KEY"],
            "litellm/llms/heroku/chat/transformation.py (<base>/v1/chat/completions)",
        ),
        Paths::SuffixOnCustomBase("/v1"),
    ),
    row(
        "ovhcloud",
        Some("https://oai.endpoints.kepler.ai.cloud.ovh.net/v1"),
        &[],
        &["OVHCLOUD_API_KEY"],
        "litellm/llms/ovhcloud/chat/transformation.py (key variable: LiteLLM's OVHcloud docs)",
    ),
    row(
        "aiohttp_openai",
        Some("https://api.openai.com/v1"),
        &[],
        &["OPENAI_API_KEY"],
        "OpenAI through LiteLLM's aiohttp transport: the same API",
    ),
    row(
        "ai21",
        Some("https://api.ai21.com/studio/v1"),
        &["AI21_API_BASE"],
        &["AI21_API_KEY"],
        "served as ai21_chat, as get_llm_provider maps ai21 chat models",
    ),
    with_paths(
        row(
            "cloudflare",
            None,
            &["CLOUDFLARE_API_BASE"],
            &["CLOUDFLARE_API_KEY"],
            "litellm/llms/cloudflare/chat/transformation.py (account id in the URL)",
        ),
        Paths::Cloudflare,
    ),
    row(
        "litellm_proxy",
        None,
        &["LITELLM_PROXY_API_BASE"],
        &["LITELLM_PROXY_API_KEY"],
        GLPL,
    ),
    row(
        "llamafile",
        None,
        &["LLAMAFILE_API_BASE"],
        &["LLAMAFILE_API_KEY"],
        "litellm/llms/llamafile/chat/transformation.py (self-hosted: api_base required)",
    ),
    row(
        "xinference",
        None,
        &["XINFERENCE_API_BASE"],
        &["XINFERENCE_API_KEY"],
        "self-hosted OpenAI-compatible server: api_base required",
    ),
    row(
        "docker_model_runner",
        None,
        &["DOCKER_MODEL_RUNNER_API_BASE"],
        &["DOCKER_MODEL_RUNNER_API_KEY"],
        "self-hosted OpenAI-compatible server: api_base required",
    ),
    row(
        "lemonade",
        None,
        &["LEMONADE_API_BASE"],
        &["LEMONADE_API_KEY"],
        "self-hosted OpenAI-compatible server: api_base required",
    ),
    row(
        "publicai",
        Some("https://api.publicai.co/v1"),
        &["PUBLICAI_API_BASE"],
        &["PUBLICAI_API_KEY"],
        JSON,
    ),
    row(
        "helicone",
        Some("https://ai-gateway.helicone.ai"),
        &[],
        &["HELICONE_API_KEY"],
        JSON,
    ),
    row(
        "veniceai",
        Some("https://api.venice.ai/api/v1"),
        &[],
        &["VENICE_AI_API_KEY"],
        JSON,
    ),
    row(
        "xiaomi_mimo",
        Some("https://api.xiaomimimo.com/v1"),
        &[],
        &["XIAOMI_MIMO_API_KEY"],
        JSON,
    ),
    row(
        "scaleway",
        Some("https://api.scaleway.ai/v1"),
        &[],
        &["SCW_SECRET_KEY"],
        JSON,
    ),
    row(
        "synthetic",
        Some("https://api.synthetic.new/openai/v1"),
        &[],
        &["SYNTHETIC_API_KEY"],
        JSON,
    ),
    row(
        "apertis",
        Some("https://api.stima.tech/v1"),
        &[],
        &["STIMA_API_KEY"],
        JSON,
    ),
    row(
        "nano-gpt",
        Some("https://nano-gpt.com/api/v1"),
        &[],
        &["NANOGPT_API_KEY"],
        JSON,
    ),
    row(
        "poe",
        Some("https://api.poe.com/v1"),
        &[],
        &["POE_API_KEY"],
        JSON,
    ),
    row(
        "chutes",
        Some("https://llm.chutes.ai/v1"),
        &[],
        &["CHUTES_API_KEY"],
        JSON,
    ),
    row(
        "abliteration",
        Some("https://api.abliteration.ai/v1"),
        &[],
        &["ABLITERATION_API_KEY"],
        JSON,
    ),
    row(
        "llamagate",
        Some("https://api.llamagate.dev/v1"),
        &[],
        &["LLAMAGATE_API_KEY"],
        JSON,
    ),
    row(
        "gmi",
        Some("https://api.gmi-serving.com/v1"),
        &[],
        &["GMI_API_KEY"],
        JSON,
    ),
    with_auth(
        row(
            "sarvam",
            Some("https://api.sarvam.ai/v1"),
            &[],
            &["SARVAM_API_KEY"],
            JSON,
        ),
        Auth::BearerAnd("api-subscription-key"),
    ),
    row(
        "assemblyai",
        Some("https://llm-gateway.assemblyai.com/v1"),
        &[],
        &["ASSEMBLYAI_API_KEY"],
        JSON,
    ),
    row(
        "charity_engine",
        Some("https://api.charityengine.services/remotejobs/v2/inference"),
        &[],
        &["CHARITY_ENGINE_API_KEY"],
        JSON,
    ),
    row(
        "aihubmix",
        Some("https://aihubmix.com/v1"),
        &["AIHUBMIX_API_BASE"],
        &["AIHUBMIX_API_KEY"],
        JSON,
    ),
];

/// The OpenAI-compatible prefixes, for the provider registry (derived from the table).
pub const OPENAI_COMPATIBLE_PREFIXES: &[&str] = &{
    let mut out = [""; OPENAI_COMPATIBLE.len()];
    let mut i = 0;
    while i < OPENAI_COMPATIBLE.len() {
        out[i] = OPENAI_COMPATIBLE[i].prefix;
        i += 1;
    }
    out
};

/// LiteLLM's provider inference from `api_base` (`get_llm_provider`: a prefix that is no
/// provider, e.g. `meta-llama/Llama-3.3-70B-Instruct`, with an `api_base` containing one of these
/// endpoints is sent to that provider, the whole `model` string as the model name). Only the
/// endpoints both its `openai_compatible_endpoints` list and its matching branch name.
pub const INFERRED_FROM_API_BASE: &[(&str, &str)] = &[
    ("api.perplexity.ai", "perplexity"),
    ("api.deepinfra.com/v1/openai", "deepinfra"),
    ("api.mistral.ai/v1", "mistral"),
    ("api.groq.com/openai/v1", "groq"),
    ("https://integrate.api.nvidia.com/v1", "nvidia_nim"),
    ("api.deepseek.com/v1", "deepseek"),
    ("app.empower.dev/api/v1", "empower"),
    ("https://api.friendli.ai/serverless/v1", "friendliai"),
];

/// The provider LiteLLM infers from a deployment's `api_base`, if any.
pub fn infer_from_api_base(api_base: &str) -> Option<&'static Compat> {
    INFERRED_FROM_API_BASE
        .iter()
        .find(|(endpoint, _)| api_base.contains(endpoint))
        .and_then(|(_, prefix)| compat(prefix))
}

/// The table row for a prefix.
pub fn compat(prefix: &str) -> Option<&'static Compat> {
    OPENAI_COMPATIBLE.iter().find(|c| c.prefix == prefix)
}

/// Prefixes LiteLLM serves that Switchboard accepts at load but cannot call yet, with what a
/// call is told (a 400: the request is fine, this gateway cannot serve the deployment).
pub const UNSERVED: &[(&str, &str)] = &[
    (
        "sagemaker",
        "SageMaker endpoints (sagemaker/…) are not supported yet: Switchboard does not sign \
         SageMaker runtime invocations.",
    ),
    (
        "sagemaker_chat",
        "SageMaker endpoints (sagemaker_chat/…) are not supported yet: Switchboard does not sign \
         SageMaker runtime invocations.",
    ),
    (
        "auto_router",
        "auto_router deployments (LiteLLM's semantic auto-routing, which picks a model by \
         embedding the prompt) are not supported yet. Call a concrete model group instead.",
    ),
];

/// Why a call to a deployment with this unserved prefix fails, if it is one.
pub fn unserved_reason(prefix: &str) -> Option<&'static str> {
    UNSERVED
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, why)| *why)
}

/// LiteLLM's provider list (`LlmProviders` in `litellm/types/utils.py`), the yardstick for
/// "how many of LiteLLM's providers Switchboard serves" and for telling a LiteLLM provider we
/// do not serve from a prefix no one knows.
pub const LITELLM_PROVIDERS: &[&str] = &[
    "openai",
    "chatgpt",
    "openai_like",
    "jina_ai",
    "xai",
    "zai",
    "custom_openai",
    "text-completion-openai",
    "cohere",
    "cohere_chat",
    "clarifai",
    "anthropic",
    "anthropic_text",
    "bytez",
    "replicate",
    "reducto",
    "runwayml",
    "aws_polly",
    "huggingface",
    "together_ai",
    "openrouter",
    "datarobot",
    "vertex_ai",
    "vertex_ai_beta",
    "gemini",
    "ai21",
    "baseten",
    "black_forest_labs",
    "azure",
    "azure_text",
    "azure_ai",
    "sagemaker",
    "sagemaker_chat",
    "sagemaker_nova",
    "bedrock",
    "vllm",
    "nlp_cloud",
    "petals",
    "oobabooga",
    "ollama",
    "ollama_chat",
    "deepinfra",
    "perplexity",
    "mistral",
    "milvus",
    "groq",
    "a2a",
    "gigachat",
    "nvidia_nim",
    "nvidia_riva",
    "soniox",
    "cerebras",
    "ai21_chat",
    "volcengine",
    "codestral",
    "text-completion-codestral",
    "dashscope",
    "modelscope",
    "moonshot",
    "publicai",
    "v0",
    "morph",
    "lambda_ai",
    "inception",
    "text-completion-inception",
    "deepseek",
    "sambanova",
    "maritalk",
    "voyage",
    "cloudflare",
    "xinference",
    "fireworks_ai",
    "friendliai",
    "featherless_ai",
    "watsonx",
    "watsonx_text",
    "triton",
    "predibase",
    "databricks",
    "empower",
    "github",
    "ragflow",
    "compactifai",
    "docker_model_runner",
    "custom",
    "litellm_proxy",
    "hosted_vllm",
    "tencent",
    "llamafile",
    "lm_studio",
    "galadriel",
    "nebius",
    "infinity",
    "deepgram",
    "elevenlabs",
    "novita",
    "aiohttp_openai",
    "langfuse",
    "humanloop",
    "topaz",
    "sap",
    "assemblyai",
    "charity_engine",
    "github_copilot",
    "snowflake",
    "gradient_ai",
    "meta_llama",
    "nscale",
    "pg_vector",
    "s3_vectors",
    "helicone",
    "hyperbolic",
    "recraft",
    "fal_ai",
    "stability",
    "heroku",
    "aiml",
    "cometapi",
    "oci",
    "auto_router",
    "vercel_ai_gateway",
    "dotprompt",
    "manus",
    "wandb",
    "ovhcloud",
    "scaleway",
    "lemonade",
    "amazon_nova",
    "a2a_agent",
    "langgraph",
    "langflow",
    "minimax",
    "synthetic",
    "apertis",
    "nano-gpt",
    "poe",
    "chutes",
    "neosantara",
    "parasail",
    "xiaomi_mimo",
    "tensormesh",
    "libertai",
    "pinstripes",
    "darkbloom",
    "meta",
    "litellm_agent",
    "cursor",
    "bedrock_mantle",
    "gdc",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_every_default_base_is_an_http_url() {
        let mut seen = std::collections::HashSet::new();
        for c in OPENAI_COMPATIBLE {
            assert!(seen.insert(c.prefix), "{} twice", c.prefix);
            assert!(!c.key_env.is_empty(), "{}: no key variable", c.prefix);
            if let Some(base) = c.default_base {
                assert!(
                    base.starts_with("https://") || base.starts_with("http://localhost"),
                    "{}: {base}",
                    c.prefix
                );
                assert!(!base.ends_with('/'), "{}: {base}", c.prefix);
            }
        }
        for (p, _) in UNSERVED {
            assert!(compat(p).is_none(), "{p} is both served and unserved");
        }
        for (_, p) in INFERRED_FROM_API_BASE {
            assert!(compat(p).is_some(), "{p} is inferred but not in the table");
        }
        assert_eq!(OPENAI_COMPATIBLE_PREFIXES.len(), OPENAI_COMPATIBLE.len());
        assert!(OPENAI_COMPATIBLE_PREFIXES
            .iter()
            .zip(OPENAI_COMPATIBLE)
            .all(|(p, c)| *p == c.prefix));
    }

    /// The README's coverage figure and list of unserved providers are this table's.
    #[test]
    fn readme_coverage_matches_the_tables() {
        let served: Vec<&str> = LITELLM_PROVIDERS
            .iter()
            .copied()
            .filter(|p| crate::providers::is_served(p))
            .collect();
        let readme = include_str!("../../README.md");
        let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        let figure = format!(
            "Of the {} providers in LiteLLM's provider list (`LlmProviders`), Switchboard serves {}.",
            LITELLM_PROVIDERS.len(),
            served.len()
        );
        assert!(flat.contains(&figure), "README lacks {figure:?}");
        let list_start = flat.find("Not served (load with a warning").unwrap();
        let list = &flat[list_start..];
        for p in LITELLM_PROVIDERS.iter().filter(|p| !served.contains(p)) {
            assert!(
                list.contains(&format!("`{p}`")),
                "README does not list {p} as not served"
            );
        }
    }

    #[test]
    fn litellm_provider_list_has_no_duplicates() {
        let set: std::collections::HashSet<_> = LITELLM_PROVIDERS.iter().collect();
        assert_eq!(set.len(), LITELLM_PROVIDERS.len());
    }
}
