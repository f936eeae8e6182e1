//! The virtual-key `authenticate` stage and the per-key model check, with LiteLLM's rejections
//! (status, `type`, message prefix; see `multitenant.md` §1.5).
//!
//! The key is read from the headers LiteLLM accepts, in its order: `Authorization: Bearer`,
//! `api-key`, `x-api-key`, `x-goog-api-key`, `Ocp-Apim-Subscription-Key`, `x-litellm-api-key`,
//! then `general_settings.litellm_key_header_name`. The master key is compared in constant time;
//! a virtual key is hashed (sha256) and looked up in memory, so how long a lookup takes does not
//! depend on how much of a stored key the presented one matches.

use super::{abbreviate, hash_key, hex, now_ms, Keys};
use crate::civil_time::iso_ms;
use crate::context::{Context, Principal};
use crate::error::{ErrorKind, GatewayError};
use crate::pipeline::Authenticate;
use crate::tenant::{KeyEntry, TeamEntry};
use pingora_http::RequestHeader;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// Header names (after `Authorization`) that may carry a key.
const KEY_HEADERS: [&str; 5] = [
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "x-litellm-api-key",
];

/// Authenticates the master key and virtual keys; refuses everything else.
pub struct VirtualKeys {
    pub keys: Arc<Keys>,
    pub master_key: String,
    /// `general_settings.litellm_key_header_name`, lower-cased.
    pub custom_header: Option<String>,
}

fn auth_error(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::Authentication, message).with_type("auth_error")
}

/// The key presented, if any. `Err` for an `Authorization` header without `Bearer `.
fn presented<'r>(
    req: &'r RequestHeader,
    custom: Option<&str>,
) -> Result<Option<&'r str>, GatewayError> {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(v) = header("authorization") {
        return match v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            Some(key) => Ok(Some(key.trim())),
            None => Err(auth_error(
                "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix."
                    .into(),
            )),
        };
    }
    for name in KEY_HEADERS.iter().copied().chain(custom) {
        if let Some(v) = header(name) {
            return Ok(Some(v.strip_prefix("Bearer ").unwrap_or(v).trim()));
        }
    }
    Ok(None)
}

impl Authenticate for VirtualKeys {
    fn authenticate(
        &self,
        req: &RequestHeader,
        _ctx: &Context,
    ) -> Result<Option<Principal>, GatewayError> {
        let key = presented(req, self.custom_header.as_deref())?
            .ok_or_else(|| auth_error("Authentication Error, No api key passed in.".into()))?;
        if crate::auth::constant_time_eq(key.as_bytes(), self.master_key.as_bytes()) {
            return Ok(Some(Principal::MasterKey));
        }
        let hash = hash_key(key);
        let Some(entry) = self.keys.get(&hash) else {
            return Err(auth_error(format!(
                "Authentication Error, Invalid proxy server token passed. Received API Key = {}, Key Hash (Token) = {}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
                abbreviate(key),
                hex(&hash)
            )));
        };
        check_usable(&entry, now_ms())?;
        if let Some(team) = entry
            .row
            .team_id
            .as_deref()
            .and_then(|t| self.keys.tenants.team(t))
        {
            check_team_usable(&team)?;
        }
        Ok(Some(Principal::VirtualKey(entry)))
    }
}

/// Refuses a blocked or expired key.
pub fn check_usable(entry: &KeyEntry, now_ms: i64) -> Result<(), GatewayError> {
    if entry.row.blocked == Some(true) {
        return Err(auth_error(
            "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
                .into(),
        ));
    }
    if let Some(expires) = entry.row.expires {
        if expires <= now_ms {
            return Err(auth_error(format!(
                "Authentication Error - Expired Key. Key Expiry time {} and current time {}",
                iso_ms(expires),
                iso_ms(now_ms)
            ))
            .with_type("expired_key"));
        }
    }
    Ok(())
}

/// Refuses a blocked team's keys, as LiteLLM's `common_checks` does (an auth error).
pub fn check_team_usable(team: &TeamEntry) -> Result<(), GatewayError> {
    if team.row.blocked {
        return Err(auth_error(format!(
            "Authentication Error, Team={} is blocked. Update via `/team/unblock` if you're an admin.",
            team.row.team_id
        )));
    }
    Ok(())
}

/// Puts the request's [`crate::tenant::Tenancy`] on the context (from memory: the key's team,
/// user and membership, and the end user) and applies LiteLLM's checks on them for `model`
/// (`requested`, and the model group it resolved to): a blocked end user (400, as LiteLLM's blocked-user
/// check), the team's `models`, and a personal key's user `models`. Call after the end user is
/// known (header or body `user`) and before admission, which reads the tenancy.
pub fn resolve_tenancy(
    keys: &Keys,
    ctx: &mut Context,
    requested: &str,
    model: &str,
) -> Result<(), GatewayError> {
    let tenancy = keys
        .tenants
        .resolve(ctx.principal.key().map(|k| &**k), ctx.end_user.as_deref());
    if let Some(end_user) = &tenancy.end_user {
        if end_user.row.blocked {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                format!(
                    "User blocked from making LLM API Calls. User={}",
                    end_user.row.user_id
                ),
            )
            .with_code("400"));
        }
    }
    if let Some(team) = &tenancy.team {
        check_team_usable(team)?;
        check_models("team", &team.row.models, requested, model)?;
    } else if let Some(user) = &tenancy.user {
        check_models("user", &user.row.models, requested, model)?;
    }
    ctx.tenancy = tenancy;
    Ok(())
}

/// LiteLLM's `_can_object_call_model`: an empty list, `all-proxy-models` or `*` allow every
/// model; otherwise the model must be listed.
fn check_models(
    object: &str,
    models: &[String],
    requested: &str,
    model: &str,
) -> Result<(), GatewayError> {
    if may_call(models, requested, model) {
        return Ok(());
    }
    Err(auth_error(format!(
        "{object} not allowed to access model. This {object} can only access models={}. Tried to access {requested}",
        python_list(models)
    ))
    .with_type(if object == "team" {
        "team_model_access_denied"
    } else {
        "user_model_access_denied"
    })
    .with_param("model"))
}

/// A list of strings as Python prints it (`['a', 'b']`), as LiteLLM's messages show lists.
fn python_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|m| format!("'{m}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// The model group a key's request goes to, in LiteLLM's order (`add_litellm_data_to_request`):
/// the key's team's `model_aliases` rewrite the requested name, then the key's `aliases`
/// rewrite the result. A key with `models` may call a model when the requested name or the
/// group it resolved to is listed (LiteLLM's `_can_object_call_model` accepts the alias or its
/// target); `all-proxy-models` and `*` mean every one.
pub fn resolve_model<'a>(
    entry: &KeyEntry,
    team: Option<&TeamEntry>,
    requested: Cow<'a, str>,
) -> Result<Cow<'a, str>, GatewayError> {
    let alias = |aliases: &Map<String, Value>, name: &str| {
        aliases
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut model = requested.clone();
    if let Some(target) = team.and_then(|t| alias(&t.row.model_aliases, &model)) {
        model = Cow::Owned(target);
    }
    if let Some(target) = alias(&entry.row.aliases, &model) {
        model = Cow::Owned(target);
    }
    let models = &entry.row.models;
    if !may_call(models, &requested, &model) {
        return Err(auth_error(format!(
            "Authentication Error, API Key not allowed to access model. This key can only access models={models:?}. Tried to access {requested}"
        ))
        .with_type("key_model_access_denied")
        .with_param("model"));
    }
    Ok(model)
}

/// The team of a key, from memory.
pub fn key_team(keys: &Keys, entry: &KeyEntry) -> Option<Arc<TeamEntry>> {
    keys.tenants.team(entry.row.team_id.as_deref()?)
}

/// LiteLLM's `_can_object_call_model` on a list: empty, `all-proxy-models` or `*` allow every
/// model; otherwise the requested name or the group it resolved to must be listed.
fn may_call(models: &[String], requested: &str, resolved: &str) -> bool {
    models.is_empty()
        || models
            .iter()
            .any(|m| m == requested || m == resolved || m == "all-proxy-models" || m == "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyRow;

    fn req(h: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in h {
            r.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        r
    }

    #[test]
    fn key_headers_in_litellm_order() {
        assert_eq!(
            presented(
                &req(&[("authorization", "Bearer sk-a"), ("x-api-key", "sk-b")]),
                None
            )
            .unwrap(),
            Some("sk-a")
        );
        assert_eq!(
            presented(&req(&[("x-goog-api-key", "sk-g")]), None).unwrap(),
            Some("sk-g")
        );
        assert_eq!(
            presented(&req(&[("x-my-key", "sk-c")]), Some("x-my-key")).unwrap(),
            Some("sk-c")
        );
        assert_eq!(
            presented(&req(&[("x-my-key", "sk-c")]), None).unwrap(),
            None
        );
        let e = presented(&req(&[("authorization", "sk-a")]), None).unwrap_err();
        assert!(e.message.contains("Malformed API Key"), "{}", e.message);
    }

    #[test]
    fn aliases_then_models() {
        let mut row = KeyRow {
            models: vec!["gpt-4o".into()],
            ..Default::default()
        };
        row.aliases.insert("smart".into(), "gpt-4o".into());
        let entry = KeyEntry::new(row);
        assert_eq!(
            resolve_model(&entry, None, "smart".into()).unwrap(),
            "gpt-4o"
        );
        assert_eq!(
            resolve_model(&entry, None, "gpt-4o".into()).unwrap(),
            "gpt-4o"
        );
        let e = resolve_model(&entry, None, "other".into()).unwrap_err();
        assert_eq!(e.status, 401);
        assert!(String::from_utf8_lossy(&e.body()).contains("key_model_access_denied"));
    }

    #[test]
    fn team_aliases_then_key_aliases() {
        let mut team = crate::store::TeamRow::default();
        team.model_aliases
            .insert("gpt-4o".into(), "team-a-gpt-4o".into());
        team.model_aliases
            .insert("mini".into(), "team-a-mini".into());
        let team = TeamEntry::new(team);
        let mut row = KeyRow {
            models: vec!["gpt-4o".into(), "fast".into(), "key-mini".into()],
            ..Default::default()
        };
        row.aliases.insert("fast".into(), "key-fast".into());
        row.aliases.insert("team-a-mini".into(), "key-mini".into());
        let entry = KeyEntry::new(row);
        // The team's alias, allowed because the requested name is listed.
        assert_eq!(
            resolve_model(&entry, Some(&team), "gpt-4o".into()).unwrap(),
            "team-a-gpt-4o"
        );
        // A name the team does not alias: the key's own alias.
        assert_eq!(
            resolve_model(&entry, Some(&team), "fast".into()).unwrap(),
            "key-fast"
        );
        // The key's aliases apply to what the team's produced (LiteLLM's order); the target is
        // listed though "mini" is not.
        assert_eq!(
            resolve_model(&entry, Some(&team), "mini".into()).unwrap(),
            "key-mini"
        );
        assert!(resolve_model(&entry, Some(&team), "team-a-gpt-4o".into()).is_err());
    }

    #[test]
    fn team_and_user_model_lists() {
        assert!(check_models("team", &[], "gpt-4o", "gpt-4o").is_ok());
        assert!(check_models("team", &["all-proxy-models".into()], "x", "x").is_ok());
        let e = check_models("team", &["a".into(), "b".into()], "gpt-4o", "gpt-4o").unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(
            e.message,
            "team not allowed to access model. This team can only access models=['a', 'b']. Tried to access gpt-4o"
        );
        assert!(String::from_utf8_lossy(&e.body()).contains("team_model_access_denied"));
        let e = check_models("user", &["a".into()], "b", "b").unwrap_err();
        assert!(String::from_utf8_lossy(&e.body()).contains("user_model_access_denied"));
    }

    #[test]
    fn blocked_and_expired() {
        let blocked = KeyEntry::new(KeyRow {
            blocked: Some(true),
            ..Default::default()
        });
        let e = check_usable(&blocked, 0).unwrap_err();
        assert!(e
            .message
            .starts_with("Authentication Error, Key is blocked."));
        let expired = KeyEntry::new(KeyRow {
            expires: Some(1_000),
            ..Default::default()
        });
        assert!(check_usable(&expired, 999).is_ok());
        let e = check_usable(&expired, 1_000).unwrap_err();
        assert!(String::from_utf8_lossy(&e.body()).contains("\"expired_key\""));
    }
}
