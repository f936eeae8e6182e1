//! `litellm_settings.cache` and `cache_params`: the response cache's settings, read as LiteLLM
//! reads them (`type`, `ttl`, `namespace`, `mode`, `supported_call_types`, the Redis connection
//! keys and `REDIS_*` variables, the semantic keys) plus two of Switchboard's own in the same
//! mapping (LiteLLM passes unknown `cache_params` keys through as keyword arguments and ignores
//! them): `max_bytes` (the local cache's bound), `scope` (`global|key|team`), and for
//! `redis-semantic` `semantic_cache_scope` (`key` by default) and `semantic_max_entries`.

use super::yaml::Section;
use super::ConfigError;
use std::time::Duration;

/// Where cached answers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// In this process: an LRU bounded in bytes.
    Local,
    /// A Redis server (or cluster) shared by every instance.
    Redis,
    /// Semantic: a hit is a prompt whose embedding is close enough (`similarity_threshold`).
    RedisSemantic,
}

/// `cache_params.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Every cacheable request uses the cache unless it opts out (`no-cache`, `no-store`).
    DefaultOn,
    /// Only requests that send `cache: {use-cache: true}` use it.
    DefaultOff,
}

/// Who shares an exact-match entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Every caller (LiteLLM's behaviour).
    Global,
    /// Callers with the same virtual key.
    Key,
    /// Callers of the same team (keys without a team are scoped to the key).
    Team,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub kind: CacheType,
    /// Default entry lifetime (`ttl`). `None`: entries live until evicted (local) or forever
    /// (Redis).
    pub ttl: Option<Duration>,
    /// `namespace`: keys become `{namespace}:{hash}`.
    pub namespace: Option<String>,
    pub mode: CacheMode,
    /// `supported_call_types` includes chat completions (`completion`/`acompletion`).
    pub chat: bool,
    /// … and embeddings (`embedding`/`aembedding`).
    pub embeddings: bool,
    /// … and `/v1/completions` (`text_completion`/`atext_completion`).
    pub text_completion: bool,
    /// … and `/v1/responses` (`responses`/`aresponses`).
    pub responses: bool,
    /// … and `/v1/messages` (`anthropic_messages`; not in LiteLLM's default list).
    pub messages: bool,
    /// The local cache's bound on stored answer bytes.
    pub max_bytes: usize,
    pub scope: CacheScope,
    /// `similarity_threshold` (semantic).
    pub similarity_threshold: f64,
    /// `redis_semantic_cache_embedding_model`: a `model_name` of `model_list`.
    pub embedding_model: Option<String>,
    /// `semantic_cache_scope`: who shares semantic entries (`key` by default).
    pub semantic_scope: CacheScope,
    /// `semantic_max_entries`: prompts kept per semantic scope (the newest; default 256).
    pub semantic_max_entries: usize,
}

/// Default and largest `semantic_max_entries`: a lookup compares the query with every entry
/// of its scope (entries × dimensions multiply-adds, the vectors fetched in one round trip).
pub const DEFAULT_SEMANTIC_ENTRIES: usize = 256;
pub const MAX_SEMANTIC_ENTRIES: usize = 4096;

/// Default bound of the local cache: 64 MiB of answers.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Largest `ttl` accepted (a year): anything a client or config sets is bounded.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// LiteLLM's in-memory cache keeps entries 600 s unless told otherwise.
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(600);

/// LiteLLM's cache types Switchboard does not implement: accepted with a warning, cache off.
const UNSUPPORTED_TYPES: &[&str] = &[
    "s3",
    "gcs",
    "disk",
    "azure-blob",
    "qdrant-semantic",
    "valkey-semantic",
];

/// Reads `cache_params` (`enabled`: `litellm_settings.cache`). The Redis connection keys are
/// read by [`super::redis::read_cache_params`] into `LitellmSettings::cache_redis`; the caller
/// finishes the section. `None`: no cache (not enabled, or a type Switchboard does not
/// implement, which is warned about).
pub fn read(
    enabled: bool,
    p: &mut Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<CacheSettings>, ConfigError> {
    if !enabled {
        // Read nothing: an unused cache_params is LiteLLM's to ignore as well.
        p.accept(&p.keys());
        return Ok(None);
    }
    let type_path = p.key_path("type");
    let kind = match p.string("type")?.as_deref() {
        None | Some("local") => CacheType::Local,
        Some("redis") => CacheType::Redis,
        Some("redis-semantic") => CacheType::RedisSemantic,
        Some(other) if UNSUPPORTED_TYPES.contains(&other) => {
            warnings.push(format!(
                "{type_path}: cache type \"{other}\" is not implemented by Switchboard; the response cache is off (use local, redis or redis-semantic)"
            ));
            p.accept(&p.keys());
            return Ok(None);
        }
        Some(other) => {
            return Err(ConfigError::new(
                type_path,
                format!("unknown cache type \"{other}\"; expected local, redis or redis-semantic"),
            ))
        }
    };
    let ttl = match p.f64_in("ttl", 0.0, MAX_TTL.as_secs_f64())? {
        Some(v) if v > 0.0 => Some(Duration::from_secs_f64(v)),
        _ if kind == CacheType::Local => Some(DEFAULT_LOCAL_TTL),
        _ => None,
    };
    // LiteLLM's per-layer TTLs: the in-memory one applies to the local type.
    let ttl = match (
        kind,
        p.f64_in("default_in_memory_ttl", 0.0, MAX_TTL.as_secs_f64())?,
    ) {
        (CacheType::Local, Some(v)) if v > 0.0 => Some(Duration::from_secs_f64(v)),
        _ => ttl,
    };
    let ttl = match (
        kind,
        p.f64_in("default_in_redis_ttl", 0.0, MAX_TTL.as_secs_f64())?,
    ) {
        (CacheType::Redis | CacheType::RedisSemantic, Some(v)) if v > 0.0 => {
            Some(Duration::from_secs_f64(v))
        }
        _ => ttl,
    };
    let namespace = p.string("namespace")?.filter(|n| !n.is_empty());
    let mode_path = p.key_path("mode");
    let mode = match p.string("mode")?.as_deref() {
        None | Some("default_on") => CacheMode::DefaultOn,
        Some("default_off") => CacheMode::DefaultOff,
        Some(other) => {
            return Err(ConfigError::new(
                mode_path,
                format!("unknown mode \"{other}\"; expected default_on or default_off"),
            ))
        }
    };
    // LiteLLM's default list (`Cache.__init__`) has every type below but anthropic_messages.
    let (mut chat, mut embeddings, mut text_completion, mut responses, mut messages) =
        (true, true, true, true, false);
    if let Some(types) = p.string_list("supported_call_types")? {
        (chat, embeddings, text_completion, responses) = (false, false, false, false);
        for t in types {
            match t.as_str() {
                "completion" | "acompletion" => chat = true,
                "embedding" | "aembedding" => embeddings = true,
                "text_completion" | "atext_completion" => text_completion = true,
                "responses" | "aresponses" => responses = true,
                "anthropic_messages" => messages = true,
                _ => {}
            }
        }
    }
    let max_bytes_path = p.key_path("max_bytes");
    let max_bytes = match p.u64("max_bytes")? {
        None => DEFAULT_MAX_BYTES,
        Some(n) if (1024..=1 << 40).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                max_bytes_path,
                format!("{n} is out of range (1024 to 1 TiB of answers)"),
            ))
        }
    };
    let scope = read_scope(p, "scope", CacheScope::Global)?;
    let semantic_scope = read_scope(p, "semantic_cache_scope", CacheScope::Key)?;
    let semantic_max_entries_path = p.key_path("semantic_max_entries");
    let semantic_max_entries = match p.u64("semantic_max_entries")? {
        None => DEFAULT_SEMANTIC_ENTRIES,
        Some(n) if (1..=MAX_SEMANTIC_ENTRIES as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                semantic_max_entries_path,
                format!("{n} is out of range (1 to {MAX_SEMANTIC_ENTRIES} prompts per scope)"),
            ))
        }
    };
    let similarity_threshold = p.f64_in("similarity_threshold", 0.0, 1.0)?.unwrap_or(0.8);
    let embedding_model = p.string("redis_semantic_cache_embedding_model")?;
    if kind == CacheType::RedisSemantic && embedding_model.is_none() {
        return Err(ConfigError::new(
            p.key_path("redis_semantic_cache_embedding_model"),
            "type redis-semantic needs the model_name of an embedding model from model_list",
        ));
    }
    Ok(Some(CacheSettings {
        kind,
        ttl,
        namespace,
        mode,
        chat,
        embeddings,
        text_completion,
        responses,
        messages,
        max_bytes,
        scope,
        similarity_threshold,
        embedding_model,
        semantic_scope,
        semantic_max_entries,
    }))
}

fn read_scope(
    p: &mut Section<'_>,
    key: &'static str,
    default: CacheScope,
) -> Result<CacheScope, ConfigError> {
    let path = p.key_path(key);
    match p.string(key)?.as_deref() {
        None => Ok(default),
        Some("global") => Ok(CacheScope::Global),
        Some("key") => Ok(CacheScope::Key),
        Some("team") => Ok(CacheScope::Team),
        Some(other) => Err(ConfigError::new(
            path,
            format!("unknown scope \"{other}\"; expected global, key or team"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::litellm::parse;
    use crate::config::CacheType;

    #[test]
    fn cache_settings_are_read_with_litellm_names_and_defaults() {
        let c = parse("litellm_settings: {cache: true}\n").unwrap();
        let cache = c.litellm.cache.unwrap();
        assert_eq!(cache.kind, CacheType::Local);
        assert_eq!(cache.ttl, Some(super::DEFAULT_LOCAL_TTL));
        assert!(cache.chat && cache.embeddings && cache.text_completion && cache.responses);
        assert!(
            !cache.messages,
            "anthropic_messages is not in LiteLLM's default list"
        );

        let c = parse("litellm_settings:\n  cache: true\n  cache_params: {type: redis, host: h, port: 7000, ttl: 30, namespace: ns, mode: default_off, supported_call_types: [acompletion], max_bytes: 4096, scope: key}\n").unwrap();
        let cache = c.litellm.cache.unwrap();
        assert_eq!(cache.kind, CacheType::Redis);
        assert_eq!(c.litellm.cache_redis.unwrap().nodes, ["redis://h:7000"]);
        assert_eq!(cache.ttl, Some(std::time::Duration::from_secs(30)));
        assert_eq!(cache.namespace.as_deref(), Some("ns"));
        assert_eq!(cache.mode, super::CacheMode::DefaultOff);
        assert!(cache.chat && !cache.embeddings);
        assert!(!cache.text_completion && !cache.responses && !cache.messages);
        assert_eq!(cache.scope, super::CacheScope::Key);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = parse("litellm_settings: {cache: true, cache_params: {supported_call_types: [atext_completion, responses, anthropic_messages]}}\n").unwrap();
        let cache = c.litellm.cache.unwrap();
        assert!(!cache.chat && !cache.embeddings);
        assert!(cache.text_completion && cache.responses && cache.messages);

        // Not enabled: nothing read, nothing warned.
        let c = parse("litellm_settings: {cache_params: {type: redis}}\n").unwrap();
        assert!(c.litellm.cache.is_none() && c.warnings.is_empty());
    }

    #[test]
    fn unsupported_types_warn_and_turn_the_cache_off_bad_values_name_the_key() {
        let c =
            parse("litellm_settings: {cache: true, cache_params: {type: s3, s3_bucket_name: b}}\n")
                .unwrap();
        assert!(c.litellm.cache.is_none());
        assert!(c.warnings[0].starts_with("litellm_settings.cache_params.type: "));
        for (yaml, path) in [
            ("{type: memcached}", "litellm_settings.cache_params.type"),
            ("{mode: sometimes}", "litellm_settings.cache_params.mode"),
            ("{ttl: -1}", "litellm_settings.cache_params.ttl"),
            ("{max_bytes: 10}", "litellm_settings.cache_params.max_bytes"),
            ("{scope: org}", "litellm_settings.cache_params.scope"),
            (
                "{type: redis-semantic}",
                "litellm_settings.cache_params.redis_semantic_cache_embedding_model",
            ),
        ] {
            let err = parse(&format!(
                "litellm_settings: {{cache: true, cache_params: {yaml}}}\n"
            ))
            .unwrap_err();
            assert_eq!(err.path, path, "{yaml}");
        }
    }
}
