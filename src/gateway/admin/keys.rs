//! LiteLLM's key management API: `POST /key/generate`, `/key/update`, `/key/delete`,
//! `/key/regenerate` (and `/key/{key}/regenerate`), `/key/block`, `/key/unblock`; `GET
//! /key/info`, `/key/list`. Paths, bodies, defaults and response shapes follow LiteLLM
//! (`multitenant.md` §1.2–1.4). Each change is written to the database and then applied to the
//! in-memory key map, so the next request sees it.

use super::{
    bad, iso, opt_count, opt_string, parse_duration, percent_decode, query_get, store_err, Query,
};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::keys::{abbreviate, generate_key, hash_key, hex, now_ms, KeyEntry, Keys};
use crate::store::KeyRow;
use http::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum KeyRoute<'a> {
    Generate,
    Update,
    Delete,
    Info,
    List,
    /// `/key/regenerate` (key in the body) or `/key/{key}/regenerate`.
    Regenerate(Option<&'a str>),
    Block,
    Unblock,
}

/// The `/key/*` route at `path` and the one method it takes.
pub fn route(path: &str) -> Option<(KeyRoute<'_>, Method)> {
    let r = match path {
        "/key/generate" => (KeyRoute::Generate, Method::POST),
        "/key/update" => (KeyRoute::Update, Method::POST),
        "/key/delete" => (KeyRoute::Delete, Method::POST),
        "/key/info" => (KeyRoute::Info, Method::GET),
        "/key/list" => (KeyRoute::List, Method::GET),
        "/key/regenerate" => (KeyRoute::Regenerate(None), Method::POST),
        "/key/block" => (KeyRoute::Block, Method::POST),
        "/key/unblock" => (KeyRoute::Unblock, Method::POST),
        p => {
            let key = p.strip_prefix("/key/")?.strip_suffix("/regenerate")?;
            if key.is_empty() || key.contains('/') {
                return None;
            }
            (KeyRoute::Regenerate(Some(key)), Method::POST)
        }
    };
    Some(r)
}

pub async fn handle(
    keys: &Arc<Keys>,
    route: KeyRoute<'_>,
    query: &Query,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    match route {
        KeyRoute::Info => info(keys, query),
        KeyRoute::List => list(keys, query),
        KeyRoute::Generate => generate(keys, body).await,
        KeyRoute::Update => update(keys, body).await,
        KeyRoute::Delete => delete(keys, body).await,
        KeyRoute::Regenerate(path_key) => regenerate(keys, path_key, body).await,
        KeyRoute::Block => set_blocked(keys, body, true).await,
        KeyRoute::Unblock => set_blocked(keys, body, false).await,
    }
}

fn not_found(key: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!(
            "Key not found: {}. Check the key (or its hash) and try again.",
            shown(key)
        ),
    )
    .with_code("404")
}

/// A key as echoed in errors: abbreviated when it is a plaintext key.
fn shown(key: &str) -> String {
    if key.starts_with("sk-") {
        abbreviate(key)
    } else {
        key.to_string()
    }
}

/// The entry a key reference names: a plaintext key (`sk-…`) or its sha256 hex.
fn find(keys: &Keys, reference: &str) -> Option<Arc<KeyEntry>> {
    keys.get(&hash_key(reference))
        .or_else(|| keys.get_hex(reference))
}

fn required_key(body: &Map<String, Value>) -> GatewayResult<String> {
    match body.get("key") {
        Some(Value::String(k)) if !k.trim().is_empty() => Ok(k.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(GatewayError::missing_field("key"))
        }
        Some(_) => Err(bad("key", "'key' must be a string (the key or its hash).")),
    }
}

/// Applies the settable fields of a generate/update/regenerate body to `row`.
fn apply(row: &mut KeyRow, body: &Map<String, Value>, now: i64, update: bool) -> GatewayResult<()> {
    if let Some(v) = opt_string(body, "key_alias")? {
        row.key_alias = v;
    }
    if let Some(v) = opt_string(body, "duration")? {
        row.expires = match v.as_deref() {
            None => row.expires.filter(|_| update),
            Some("-1") if update => None,
            Some(d) => Some(
                now + parse_duration(d).ok_or_else(|| {
                    bad(
                        "duration",
                        format!("'duration' {d:?} is not a duration: use e.g. \"30s\", \"30m\", \"30h\", \"30d\", \"2w\", \"1mo\"."),
                    )
                })?,
            ),
        };
    }
    match body.get("models") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            row.models = items
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("models", "'models' must be a list of model names."))?;
        }
        Some(_) => return Err(bad("models", "'models' must be a list of model names.")),
    }
    match body.get("allowed_cache_controls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            row.allowed_cache_controls = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
        }
        Some(_) => {
            return Err(bad(
                "allowed_cache_controls",
                "'allowed_cache_controls' must be a list of cache control names, e.g. [\"no-cache\", \"ttl\"].",
            ))
        }
    }
    match body.get("aliases") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.values().all(Value::is_string) => row.aliases = m.clone(),
        Some(_) => {
            return Err(bad(
                "aliases",
                "'aliases' must map requested model names to model group names (strings).",
            ))
        }
    }
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => row.metadata = m.clone(),
        Some(_) => return Err(bad("metadata", "'metadata' must be a JSON object.")),
    }
    match body.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(t)) if t.iter().all(Value::is_string) => {
            // LiteLLM keeps a key's tags in its metadata.
            row.metadata.insert("tags".into(), Value::Array(t.clone()));
        }
        Some(_) => return Err(bad("tags", "'tags' must be a list of strings.")),
    }
    // LiteLLM keeps per-model limits in the key's metadata too: {"model": limit}.
    for name in ["model_rpm_limit", "model_tpm_limit"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(|v| v.as_u64().is_some()) => {
                row.metadata.insert(name.into(), Value::Object(m.clone()));
            }
            Some(_) => {
                return Err(bad(
                    name,
                    format!("'{name}' must map model names to whole numbers ≥ 0."),
                ))
            }
        }
    }
    match body.get("max_budget") {
        None => {}
        Some(Value::Null) => row.max_budget = None,
        Some(v) => {
            row.max_budget = Some(v.as_f64().filter(|b| *b >= 0.0).ok_or_else(|| {
                bad(
                    "max_budget",
                    "'max_budget' must be a number ≥ 0 (USD) or null.",
                )
            })?)
        }
    }
    if let Some(v) = opt_string(body, "budget_duration")? {
        if let Some(d) = &v {
            if parse_duration(d).is_none() {
                return Err(bad(
                    "budget_duration",
                    format!("'budget_duration' {d:?} is not a duration: use e.g. \"1d\", \"30d\", \"1mo\"."),
                ));
            }
        }
        row.budget_duration = v;
    }
    if let Some(v) = opt_count(body, "tpm_limit")? {
        row.tpm_limit = v;
    }
    if let Some(v) = opt_count(body, "rpm_limit")? {
        row.rpm_limit = v;
    }
    if let Some(v) = opt_count(body, "max_parallel_requests")? {
        row.max_parallel_requests = v;
    }
    if let Some(v) = opt_string(body, "team_id")? {
        row.team_id = v;
    }
    if let Some(v) = opt_string(body, "user_id")? {
        row.user_id = v;
    }
    match body.get("blocked") {
        None => {}
        Some(Value::Null) => row.blocked = None,
        Some(Value::Bool(b)) => row.blocked = Some(*b),
        Some(_) => return Err(bad("blocked", "'blocked' must be true, false or null.")),
    }
    row.updated_at = Some(now);
    Ok(())
}

/// A key row as LiteLLM's admin API shows it.
pub(super) fn key_json(entry: &KeyEntry) -> Value {
    let r = &entry.row;
    json!({
        "token": r.token,
        "key_name": r.key_name,
        "key_alias": r.key_alias,
        "spend": entry.spend(),
        "expires": iso(r.expires),
        "models": r.models,
        "aliases": r.aliases,
        "config": {},
        "permissions": {},
        "metadata": r.metadata,
        "user_id": r.user_id,
        "team_id": r.team_id,
        "max_parallel_requests": r.max_parallel_requests,
        "blocked": r.blocked,
        "tpm_limit": r.tpm_limit,
        "rpm_limit": r.rpm_limit,
        "max_budget": r.max_budget,
        "budget_duration": r.budget_duration,
        "allowed_cache_controls": r.allowed_cache_controls,
        "created_by": r.created_by,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    })
}

/// The generate/regenerate answer: the key row, the plaintext key (shown only here) and
/// LiteLLM's `token_id`.
pub(super) fn generated_json(entry: &KeyEntry, key: &str) -> Value {
    let mut v = key_json(entry);
    v["key"] = key.into();
    v["token_id"] = entry.row.token.clone().into();
    v["tags"] = entry
        .row
        .metadata
        .get("tags")
        .cloned()
        .unwrap_or(Value::Null);
    v
}

fn alias_taken(keys: &Keys, alias: Option<&str>, except: Option<&str>) -> GatewayResult<()> {
    let Some(alias) = alias else { return Ok(()) };
    let taken = keys
        .all()
        .iter()
        .any(|e| e.row.key_alias.as_deref() == Some(alias) && Some(e.row.token.as_str()) != except);
    if taken {
        return Err(bad(
            "key_alias",
            format!("Unique key aliases across all keys are required. key_alias={alias} already exists."),
        ));
    }
    Ok(())
}

async fn generate(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let (entry, key) = create_key(keys, &body).await?;
    Ok((200, generated_json(&entry, &key)))
}

/// Makes a key from a `/key/generate` body (also `/user/new`'s key): the plaintext key and its
/// entry.
pub(super) async fn create_key(
    keys: &Arc<Keys>,
    body: &Map<String, Value>,
) -> GatewayResult<(Arc<KeyEntry>, String)> {
    let key = match opt_string(body, "key")?.flatten() {
        Some(k) if !k.starts_with("sk-") || k.len() < 4 => return Err(bad(
            "key",
            "A caller-chosen 'key' must start with 'sk-' (or leave it out to get a generated one).",
        )),
        Some(k) => k,
        None => generate_key(),
    };
    let hash = hash_key(&key);
    if keys.get(&hash).is_some() {
        return Err(bad("key", "This key already exists; choose another 'key'.").with_status(400));
    }
    let now = now_ms();
    let mut row = KeyRow {
        token: hex(&hash),
        key_name: Some(abbreviate(&key)),
        created_by: Some("litellm_proxy_admin_name".into()),
        created_at: Some(now),
        ..Default::default()
    };
    apply(&mut row, body, now, false)?;
    team_exists(keys, row.team_id.as_deref())?;
    alias_taken(keys, row.key_alias.as_deref(), None)?;
    let entry = keys.put(row).await.map_err(store_err)?;
    Ok((entry, key))
}

/// A key's `team_id` must name a team (LiteLLM looks it up and refuses an unknown one).
fn team_exists(keys: &Keys, team_id: Option<&str>) -> GatewayResult<()> {
    match team_id {
        Some(t) if keys.tenants.team(t).is_none() => Err(super::not_found(format!(
            "Team doesn't exist in db. Team={t}. Create team via `/team/new` call."
        ))
        .with_param("team_id")),
        _ => Ok(()),
    }
}

async fn update(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let key = required_key(&body)?;
    let entry = find(keys, &key).ok_or_else(|| not_found(&key))?;
    let mut row = entry.current_row();
    apply(&mut row, &body, now_ms(), true)?;
    if matches!(body.get("team_id"), Some(Value::String(_))) {
        team_exists(keys, row.team_id.as_deref())?;
    }
    alias_taken(keys, row.key_alias.as_deref(), Some(&row.token))?;
    let entry = keys.put(row).await.map_err(store_err)?;
    let mut v = key_json(&entry);
    v["key"] = key.into();
    Ok((200, v))
}

async fn delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let list = |field: &str| -> GatewayResult<Vec<String>> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(field, format!("'{field}' must be a list of strings."))),
            Some(_) => Err(bad(field, format!("'{field}' must be a list of strings."))),
        }
    };
    let (refs, aliases) = (list("keys")?, list("key_aliases")?);
    if refs.is_empty() && aliases.is_empty() {
        return Err(GatewayError::missing_field("keys"));
    }
    let mut tokens = Vec::new();
    for r in &refs {
        tokens.push(find(keys, r).ok_or_else(|| not_found(r))?.row.token.clone());
    }
    for alias in &aliases {
        let entry = keys
            .all()
            .into_iter()
            .find(|e| e.row.key_alias.as_deref() == Some(alias.as_str()))
            .ok_or_else(|| not_found(alias))?;
        tokens.push(entry.row.token.clone());
    }
    keys.remove(tokens).await.map_err(store_err)?;
    let mut deleted: Vec<String> = refs;
    deleted.extend(aliases);
    Ok((200, json!({ "deleted_keys": deleted })))
}

async fn regenerate(
    keys: &Arc<Keys>,
    path_key: Option<&str>,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    let old = match path_key {
        Some(k) => percent_decode(k),
        None => required_key(&body)?,
    };
    let entry = find(keys, &old).ok_or_else(|| not_found(&old))?;
    let new_key = match opt_string(&body, "new_key")?.flatten() {
        Some(k) if !k.starts_with("sk-") => {
            return Err(bad("new_key", "'new_key' must start with 'sk-'."))
        }
        Some(k) => k,
        None => generate_key(),
    };
    let hash = hash_key(&new_key);
    if keys.get(&hash).is_some() {
        return Err(bad(
            "new_key",
            "This key already exists; choose another 'new_key'.",
        ));
    }
    let now = now_ms();
    let mut row = entry.current_row();
    let mut settable = body.clone();
    settable.remove("key");
    apply(&mut row, &settable, now, true)?;
    row.token = hex(&hash);
    row.key_name = Some(abbreviate(&new_key));
    let old_token = entry.row.token.clone();
    let entry = keys.replace(old_token, row).await.map_err(store_err)?;
    Ok((200, generated_json(&entry, &new_key)))
}

async fn set_blocked(
    keys: &Arc<Keys>,
    body: Map<String, Value>,
    blocked: bool,
) -> GatewayResult<(u16, Value)> {
    let key = required_key(&body)?;
    let entry = find(keys, &key).ok_or_else(|| not_found(&key))?;
    let mut row = entry.current_row();
    row.blocked = Some(blocked);
    row.updated_at = Some(now_ms());
    let entry = keys.put(row).await.map_err(store_err)?;
    Ok((200, key_json(&entry)))
}

fn info(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let key = query_get(query, "key").ok_or_else(|| {
        bad(
            "key",
            "Pass the key to look up: GET /key/info?key=sk-… (or its hash).",
        )
    })?;
    let entry = find(keys, key).ok_or_else(|| not_found(key))?;
    Ok((200, json!({ "key": key, "info": key_json(&entry) })))
}

fn list(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let number = |name: &str, default: usize, max: usize| -> GatewayResult<usize> {
        match query_get(query, name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    bad(
                        name,
                        format!("'{name}' must be a whole number from 1 to {max}."),
                    )
                }),
        }
    };
    let page = number("page", 1, 1_000_000)?;
    let size = number("size", 10, 100)?;
    let full = query_get(query, "return_full_object") == Some("true");
    let filter = |name: &str| query_get(query, name);
    let mut matching: Vec<Arc<KeyEntry>> = keys
        .all()
        .into_iter()
        .filter(|e| {
            let r = &e.row;
            filter("user_id").is_none_or(|u| r.user_id.as_deref() == Some(u))
                && filter("team_id").is_none_or(|t| r.team_id.as_deref() == Some(t))
                && filter("key_alias").is_none_or(|a| r.key_alias.as_deref() == Some(a))
                && filter("key_hash").is_none_or(|h| r.token == h)
        })
        .collect();
    // Newest first (LiteLLM's default sort_order=desc on created_at), then by hash.
    matching.sort_by(|a, b| {
        b.row
            .created_at
            .cmp(&a.row.created_at)
            .then_with(|| a.row.token.cmp(&b.row.token))
    });
    let total = matching.len();
    let shown: Vec<Value> = matching
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|e| {
            if full {
                key_json(e)
            } else {
                Value::String(e.row.token.clone())
            }
        })
        .collect();
    Ok((
        200,
        json!({
            "keys": shown,
            "total_count": total,
            "current_page": page,
            "total_pages": total.div_ceil(size),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_durations() {
        assert_eq!(
            route("/key/generate"),
            Some((KeyRoute::Generate, Method::POST))
        );
        assert_eq!(
            route("/key/sk-abc/regenerate"),
            Some((KeyRoute::Regenerate(Some("sk-abc")), Method::POST))
        );
        assert_eq!(route("/key/a/b/regenerate"), None);
        assert_eq!(route("/key/nope"), None);
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("1mo"), Some(30 * 86_400_000));
        assert_eq!(parse_duration("5"), Some(5_000));
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration("99999999999999d"), None);
        assert_eq!(percent_decode("a%2Bb+c%zz"), "a+b c%zz");
    }
}
