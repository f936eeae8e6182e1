//! LiteLLM's internal-user API: `POST /user/new` (which also makes a key for the user unless
//! `auto_create_key: false`), `/user/update`, `/user/delete`; `GET /user/info?user_id=`,
//! `/user/list`. A user's keys and memberships go with them on delete, as in LiteLLM.

use super::{
    bad, iso, keys::create_key, keys::key_json, not_found, opt_bool, opt_count, opt_duration,
    opt_float, opt_list, opt_object, opt_string, paging, query_get, required_query, store_err,
    teams::team_json, Query,
};
use crate::context::new_id;
use crate::error::{GatewayError, GatewayResult};
use crate::keys::{now_ms, Keys};
use crate::store::UserRow;
use crate::tenant::UserEntry;
use http::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum UserRoute {
    New,
    Update,
    Delete,
    Info,
    List,
}

pub fn route(path: &str) -> Option<(UserRoute, Method)> {
    Some(match path {
        "/user/new" => (UserRoute::New, Method::POST),
        "/user/update" => (UserRoute::Update, Method::POST),
        "/user/delete" => (UserRoute::Delete, Method::POST),
        "/user/info" => (UserRoute::Info, Method::GET),
        "/user/list" => (UserRoute::List, Method::GET),
        _ => return None,
    })
}

pub async fn handle(
    keys: &Arc<Keys>,
    route: UserRoute,
    query: &Query,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    match route {
        UserRoute::New => new(keys, body).await,
        UserRoute::Update => update(keys, body).await,
        UserRoute::Delete => delete(keys, body).await,
        UserRoute::Info => info(keys, query),
        UserRoute::List => list(keys, query),
    }
}

/// LiteLLM's user roles.
const ROLES: [&str; 6] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
    "team",
    "customer",
];

fn user_not_found(user_id: &str) -> GatewayError {
    not_found(format!("User not found, passed user_id={user_id}")).with_param("user_id")
}

/// A user row as LiteLLM's user API shows it.
pub(super) fn user_json(entry: &UserEntry) -> Value {
    let r = &entry.row;
    json!({
        "user_id": r.user_id,
        "user_alias": r.user_alias,
        "team_id": r.team_id,
        "organization_id": r.organization_id,
        "teams": r.teams,
        "user_role": r.user_role,
        "max_budget": r.max_budget,
        "spend": entry.spend.get(),
        "user_email": r.user_email,
        "models": r.models,
        "metadata": r.metadata,
        "max_parallel_requests": r.max_parallel_requests,
        "tpm_limit": r.tpm_limit,
        "rpm_limit": r.rpm_limit,
        "budget_duration": r.budget_duration,
        "budget_reset_at": iso(r.budget_reset_at),
        "model_max_budget": r.model_max_budget,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    })
}

fn apply(row: &mut UserRow, body: &Map<String, Value>) -> GatewayResult<()> {
    if let Some(v) = opt_string(body, "user_alias")? {
        row.user_alias = v;
    }
    if let Some(v) = opt_string(body, "user_email")? {
        row.user_email = v;
    }
    if let Some(v) = opt_string(body, "user_role")? {
        if let Some(role) = &v {
            if !ROLES.contains(&role.as_str()) {
                return Err(bad(
                    "user_role",
                    format!("'user_role' {role:?} is not a role: use one of {ROLES:?}."),
                ));
            }
        }
        row.user_role = v;
    }
    if let Some(v) = opt_string(body, "team_id")? {
        row.team_id = v;
    }
    if let Some(v) = opt_string(body, "organization_id")? {
        row.organization_id = v;
    }
    if let Some(v) = opt_float(body, "max_budget")? {
        row.max_budget = v;
    }
    if let Some(v) = opt_duration(body, "budget_duration")? {
        row.budget_duration = v;
    }
    if let Some(v) = opt_list(body, "models")? {
        row.models = v;
    }
    if let Some(v) = opt_object(body, "metadata")? {
        row.metadata = v;
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
    if let Some(v) = opt_object(body, "model_max_budget")? {
        row.model_max_budget = v;
    }
    row.updated_at = Some(now_ms());
    Ok(())
}

async fn new(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let user_id = opt_string(&body, "user_id")?
        .flatten()
        .unwrap_or_else(new_id);
    if keys.tenants.user(&user_id).is_some() {
        return Err(bad(
            "user_id",
            format!("User with id={user_id} already exists. Use /user/update to change it."),
        ));
    }
    let teams = opt_list(&body, "teams")?.unwrap_or_default();
    for t in &teams {
        if keys.tenants.team(t).is_none() {
            return Err(not_found(format!(
                "Team doesn't exist in db. Team={t}. Create team via `/team/new` call."
            ))
            .with_param("teams"));
        }
    }
    let auto_create_key = opt_bool(&body, "auto_create_key")?.unwrap_or(true);
    let now = now_ms();
    let mut row = UserRow {
        user_id: user_id.clone(),
        user_role: Some("internal_user".into()),
        teams: teams.clone(),
        created_at: Some(now),
        ..Default::default()
    };
    apply(&mut row, &body)?;
    let user = keys.tenants.put_user(row).await.map_err(store_err)?;
    for t in &teams {
        if let Some(team) = keys.tenants.team(t) {
            let mut trow = team.current_row();
            if !trow.members.contains(&user_id) {
                trow.members.push(user_id.clone());
                if let Some(roles) = trow.members_with_roles.as_array_mut() {
                    roles.push(json!({"role": "user", "user_id": user_id, "user_email": user.row.user_email}));
                }
                keys.tenants.put_team(trow).await.map_err(store_err)?;
            }
            keys.tenants
                .put_membership(crate::store::MembershipRow {
                    user_id: user_id.clone(),
                    team_id: t.clone(),
                    ..Default::default()
                })
                .await
                .map_err(store_err)?;
        }
    }
    let mut out = user_json(&user);
    if auto_create_key {
        // The key takes the user's id and the key fields of the body (models, duration,
        // key_alias, aliases, limits…), as LiteLLM's /user/new does.
        let mut key_body = body.clone();
        key_body.insert("user_id".into(), Value::String(user_id.clone()));
        // The user's budget is the user's (LiteLLM gives the key `key_max_budget`, unset here).
        for user_only in [
            "user_alias",
            "user_email",
            "user_role",
            "teams",
            "auto_create_key",
            "organization_id",
            "model_max_budget",
            "send_invite_email",
            "max_budget",
            "budget_duration",
        ] {
            key_body.remove(user_only);
        }
        let (entry, key) = create_key(keys, &key_body).await?;
        let k = key_json(&entry);
        out["key"] = Value::String(key);
        out["token"] = k["token"].clone();
        out["key_name"] = k["key_name"].clone();
        out["key_alias"] = k["key_alias"].clone();
        out["expires"] = k["expires"].clone();
    } else {
        out["key"] = Value::Null;
    }
    Ok((200, out))
}

async fn update(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let user = match opt_string(&body, "user_id")?.flatten() {
        Some(id) => keys.tenants.user(&id).ok_or_else(|| user_not_found(&id))?,
        None => {
            let email = opt_string(&body, "user_email")?
                .flatten()
                .ok_or_else(|| GatewayError::missing_field("user_id"))?;
            keys.tenants
                .maps()
                .users
                .values()
                .find(|u| u.row.user_email.as_deref() == Some(email.as_str()))
                .cloned()
                .ok_or_else(|| {
                    not_found(format!("User not found, passed user_email={email}"))
                        .with_param("user_email")
                })?
        }
    };
    let mut row = user.current_row();
    apply(&mut row, &body)?;
    let entry = keys.tenants.put_user(row).await.map_err(store_err)?;
    Ok((
        200,
        json!({"user_id": entry.row.user_id, "data": user_json(&entry)}),
    ))
}

async fn delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let ids = opt_list(&body, "user_ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(GatewayError::missing_field("user_ids"));
    }
    for id in &ids {
        keys.tenants.user(id).ok_or_else(|| user_not_found(id))?;
    }
    for id in &ids {
        let tokens: Vec<String> = keys
            .all()
            .iter()
            .filter(|k| k.row.user_id.as_deref() == Some(id.as_str()))
            .map(|k| k.row.token.clone())
            .collect();
        keys.remove(tokens).await.map_err(store_err)?;
        keys.tenants
            .remove_user(id.clone())
            .await
            .map_err(store_err)?;
    }
    Ok((200, json!({ "deleted_users": ids })))
}

fn info(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let user_id = required_query(query, "user_id", "GET /user/info?user_id=…")?;
    let entry = keys
        .tenants
        .user(user_id)
        .ok_or_else(|| user_not_found(user_id))?;
    let user_keys: Vec<Value> = keys
        .all()
        .iter()
        .filter(|k| k.row.user_id.as_deref() == Some(user_id))
        .map(|k| key_json(k))
        .collect();
    let teams: Vec<Value> = entry
        .row
        .teams
        .iter()
        .filter_map(|t| keys.tenants.team(t))
        .map(|t| team_json(&t))
        .collect();
    Ok((
        200,
        json!({
            "user_id": user_id,
            "user_info": user_json(&entry),
            "keys": user_keys,
            "teams": teams,
        }),
    ))
}

fn list(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let (page, size) = paging(query, "page_size", 25)?;
    let ids: Option<Vec<&str>> =
        query_get(query, "user_ids").map(|s| s.split(',').map(str::trim).collect());
    let role = query_get(query, "role");
    let team = query_get(query, "team");
    let maps = keys.tenants.maps();
    let mut users: Vec<&Arc<UserEntry>> = maps
        .users
        .values()
        .filter(|u| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&u.row.user_id.as_str()))
                && role.is_none_or(|r| u.row.user_role.as_deref() == Some(r))
                && team.is_none_or(|t| u.row.teams.iter().any(|x| x == t))
        })
        .collect();
    users.sort_by(|a, b| {
        b.row
            .created_at
            .cmp(&a.row.created_at)
            .then_with(|| a.row.user_id.cmp(&b.row.user_id))
    });
    let total = users.len();
    let shown: Vec<Value> = users
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|u| user_json(u))
        .collect();
    Ok((
        200,
        json!({
            "users": shown,
            "total": total,
            "page": page,
            "page_size": size,
            "total_pages": total.div_ceil(size),
        }),
    ))
}
