//! LiteLLM's team API: `POST /team/new`, `/team/update`, `/team/delete`, `/team/block`,
//! `/team/unblock`, `/team/member_add`, `/team/member_delete`; `GET /team/info?team_id=`,
//! `/team/list`. A team's keys go with it on delete, as in LiteLLM. Members are kept in the
//! team's `members_with_roles`, in each user's `teams`, and as a `LiteLLM_TeamMembership` row
//! (the member's spend within the team, and its budget when `max_budget_in_team` is given).

use super::{
    bad, iso, keys::key_json, not_found, opt_bool, opt_count, opt_duration, opt_float, opt_list,
    opt_object, opt_string, query_get, required_query, required_str, store_err, Query,
};
use crate::context::new_id;
use crate::error::GatewayResult;
use crate::keys::{now_ms, Keys};
use crate::store::{BudgetRow, MembershipRow, TeamRow, UserRow};
use crate::tenant::{MembershipEntry, TeamEntry};
use http::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TeamRoute {
    New,
    Update,
    Delete,
    Info,
    List,
    Block,
    Unblock,
    MemberAdd,
    MemberDelete,
}

pub fn route(path: &str) -> Option<(TeamRoute, Method)> {
    Some(match path {
        "/team/new" => (TeamRoute::New, Method::POST),
        "/team/update" => (TeamRoute::Update, Method::POST),
        "/team/delete" => (TeamRoute::Delete, Method::POST),
        "/team/info" => (TeamRoute::Info, Method::GET),
        "/team/list" => (TeamRoute::List, Method::GET),
        "/team/block" => (TeamRoute::Block, Method::POST),
        "/team/unblock" => (TeamRoute::Unblock, Method::POST),
        "/team/member_add" => (TeamRoute::MemberAdd, Method::POST),
        "/team/member_delete" => (TeamRoute::MemberDelete, Method::POST),
        _ => return None,
    })
}

pub async fn handle(
    keys: &Arc<Keys>,
    route: TeamRoute,
    query: &Query,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    match route {
        TeamRoute::New => new(keys, body).await,
        TeamRoute::Update => update(keys, body).await,
        TeamRoute::Delete => delete(keys, body).await,
        TeamRoute::Info => info(keys, query),
        TeamRoute::List => list(keys, query),
        TeamRoute::Block => set_blocked(keys, body, true).await,
        TeamRoute::Unblock => set_blocked(keys, body, false).await,
        TeamRoute::MemberAdd => member_add(keys, body).await,
        TeamRoute::MemberDelete => member_delete(keys, body).await,
    }
}

fn team_not_found(team_id: &str) -> crate::error::GatewayError {
    not_found(format!("Team not found, passed team_id={team_id}")).with_param("team_id")
}

/// A team row as LiteLLM's team API shows it.
pub(super) fn team_json(entry: &TeamEntry) -> Value {
    let r = &entry.row;
    json!({
        "team_id": r.team_id,
        "team_alias": r.team_alias,
        "organization_id": r.organization_id,
        "admins": r.admins,
        "members": r.members,
        "members_with_roles": r.members_with_roles,
        "metadata": r.metadata,
        "max_budget": r.max_budget,
        "soft_budget": r.soft_budget,
        "spend": entry.spend.get(),
        "models": r.models,
        "max_parallel_requests": r.max_parallel_requests,
        "tpm_limit": r.tpm_limit,
        "rpm_limit": r.rpm_limit,
        "budget_duration": r.budget_duration,
        "budget_reset_at": iso(r.budget_reset_at),
        "blocked": r.blocked,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "model_max_budget": r.model_max_budget,
        "model_id": r.model_id,
        "model_aliases": r.model_aliases,
    })
}

pub(super) fn membership_json(entry: &MembershipEntry) -> Value {
    json!({
        "user_id": entry.row.user_id,
        "team_id": entry.row.team_id,
        "spend": entry.spend.get(),
        "budget_id": entry.row.budget_id,
        "litellm_budget_table": entry.budget.as_ref().map(|b| super::budgets::budget_json(&b.row)),
    })
}

/// Applies the settable fields of a new/update body.
fn apply(row: &mut TeamRow, body: &Map<String, Value>) -> GatewayResult<()> {
    if let Some(v) = opt_string(body, "team_alias")? {
        row.team_alias = v;
    }
    if let Some(v) = opt_string(body, "organization_id")? {
        row.organization_id = v;
    }
    if let Some(v) = opt_object(body, "metadata")? {
        row.metadata = v;
    }
    if let Some(v) = opt_float(body, "max_budget")? {
        row.max_budget = v;
    }
    if let Some(v) = opt_float(body, "soft_budget")? {
        row.soft_budget = v;
    }
    if let Some(v) = opt_duration(body, "budget_duration")? {
        row.budget_duration = v;
    }
    if let Some(v) = opt_list(body, "models")? {
        row.models = v;
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
    if let Some(v) = opt_bool(body, "blocked")? {
        row.blocked = v;
    }
    if let Some(v) = opt_object(body, "model_max_budget")? {
        row.model_max_budget = v;
    }
    if let Some(v) = opt_object(body, "model_aliases")? {
        if !v.values().all(Value::is_string) {
            return Err(bad(
                "model_aliases",
                "'model_aliases' must map requested model names to model group names (strings).",
            ));
        }
        row.model_aliases = v;
    }
    row.updated_at = Some(now_ms());
    Ok(())
}

/// A member as LiteLLM takes it: `{"role": "admin"|"user", "user_id", "user_email"}`.
struct Member {
    role: String,
    user_id: Option<String>,
    user_email: Option<String>,
}

fn parse_member(v: &Value, field: &str) -> GatewayResult<Member> {
    let m = v.as_object().ok_or_else(|| {
        bad(
            field,
            format!("'{field}' must hold members: {{\"role\": \"user\", \"user_id\": \"…\"}}."),
        )
    })?;
    let role = match m.get("role") {
        None | Some(Value::Null) => "user".to_string(),
        Some(Value::String(r)) if r == "admin" || r == "user" => r.clone(),
        Some(_) => {
            return Err(bad(
                field,
                format!("A member's 'role' in '{field}' must be \"admin\" or \"user\"."),
            ))
        }
    };
    let user_id = opt_string(m, "user_id")?.flatten();
    let user_email = opt_string(m, "user_email")?.flatten();
    if user_id.is_none() && user_email.is_none() {
        return Err(bad(
            field,
            format!("Each member in '{field}' needs a 'user_id' or a 'user_email'."),
        ));
    }
    Ok(Member {
        role,
        user_id,
        user_email,
    })
}

fn parse_members(body: &Map<String, Value>, field: &str) -> GatewayResult<Vec<Member>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items.iter().map(|v| parse_member(v, field)).collect(),
        Some(v @ Value::Object(_)) => Ok(vec![parse_member(v, field)?]),
        Some(_) => Err(bad(
            field,
            format!("'{field}' must be a member or a list of members."),
        )),
    }
}

/// Adds members to a team: its `members_with_roles`, each user's row (made when missing, the
/// team added to `teams`) and a membership row. Returns the users and memberships touched.
async fn add_members(
    keys: &Arc<Keys>,
    team: &mut TeamRow,
    members: Vec<Member>,
    max_budget_in_team: Option<f64>,
) -> GatewayResult<(Vec<Value>, Vec<Value>)> {
    let tenants = &keys.tenants;
    let (mut users, mut memberships) = (Vec::new(), Vec::new());
    let now = now_ms();
    for m in members {
        // By email when no id: the user with that email, or a new one.
        let existing = match (&m.user_id, &m.user_email) {
            (Some(id), _) => tenants.user(id),
            (None, Some(email)) => tenants
                .maps()
                .users
                .values()
                .find(|u| u.row.user_email.as_deref() == Some(email.as_str()))
                .cloned(),
            (None, None) => None,
        };
        let mut user = match existing {
            Some(u) => u.current_row(),
            None => UserRow {
                user_id: m.user_id.clone().unwrap_or_else(new_id),
                user_email: m.user_email.clone(),
                user_role: Some("internal_user".into()),
                created_at: Some(now),
                ..Default::default()
            },
        };
        if !user.teams.contains(&team.team_id) {
            user.teams.push(team.team_id.clone());
        }
        user.updated_at = Some(now);
        let user = tenants.put_user(user).await.map_err(store_err)?;
        let user_id = user.row.user_id.clone();
        let mut roles: Vec<Value> = team
            .members_with_roles
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()))
            .collect();
        roles.push(json!({"role": m.role, "user_id": user_id, "user_email": user.row.user_email}));
        team.members_with_roles = Value::Array(roles);
        if m.role == "admin" && !team.admins.contains(&user_id) {
            team.admins.push(user_id.clone());
        }
        if !team.members.contains(&user_id) {
            team.members.push(user_id.clone());
        }
        let budget_id = match max_budget_in_team {
            Some(max) => {
                let budget = BudgetRow {
                    budget_id: new_id(),
                    max_budget: Some(max),
                    created_at: Some(now),
                    updated_at: Some(now),
                    created_by: "litellm_proxy_admin_name".into(),
                    updated_by: "litellm_proxy_admin_name".into(),
                    ..Default::default()
                };
                let b = tenants.put_budget(budget).await.map_err(store_err)?;
                Some(b.row.budget_id.clone())
            }
            None => tenants
                .maps()
                .membership(&team.team_id, &user_id)
                .and_then(|m| m.row.budget_id.clone()),
        };
        let membership = tenants
            .put_membership(MembershipRow {
                user_id: user_id.clone(),
                team_id: team.team_id.clone(),
                spend: 0.0,
                budget_id,
            })
            .await
            .map_err(store_err)?;
        users.push(super::users::user_json(&user));
        memberships.push(membership_json(&membership));
    }
    Ok((users, memberships))
}

async fn new(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let team_id = opt_string(&body, "team_id")?
        .flatten()
        .unwrap_or_else(new_id);
    if keys.tenants.team(&team_id).is_some() {
        return Err(bad(
            "team_id",
            format!("Team id = {team_id} already exists. Please use a different team id."),
        ));
    }
    let members = parse_members(&body, "members_with_roles")?;
    let now = now_ms();
    let mut row = TeamRow {
        team_id,
        members_with_roles: Value::Array(vec![]),
        created_at: Some(now),
        ..Default::default()
    };
    apply(&mut row, &body)?;
    // The team first, so its members' rows never point at a missing team.
    keys.tenants
        .put_team(row.clone())
        .await
        .map_err(store_err)?;
    if !members.is_empty() {
        add_members(keys, &mut row, members, None).await?;
    }
    let entry = keys.tenants.put_team(row).await.map_err(store_err)?;
    Ok((200, team_json(&entry)))
}

async fn update(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let team_id = required_str(&body, "team_id")?;
    let entry = keys
        .tenants
        .team(&team_id)
        .ok_or_else(|| team_not_found(&team_id))?;
    let mut row = entry.current_row();
    apply(&mut row, &body)?;
    let entry = keys.tenants.put_team(row).await.map_err(store_err)?;
    Ok((200, json!({"team_id": team_id, "data": team_json(&entry)})))
}

async fn delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let ids = opt_list(&body, "team_ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(crate::error::GatewayError::missing_field("team_ids"));
    }
    for id in &ids {
        keys.tenants.team(id).ok_or_else(|| team_not_found(id))?;
    }
    for id in &ids {
        // The team's keys go with it (database and key map), then the team and memberships.
        let tokens: Vec<String> = keys
            .all()
            .iter()
            .filter(|k| k.row.team_id.as_deref() == Some(id.as_str()))
            .map(|k| k.row.token.clone())
            .collect();
        keys.remove(tokens).await.map_err(store_err)?;
        keys.tenants
            .remove_team(id.clone())
            .await
            .map_err(store_err)?;
    }
    Ok((200, json!({ "deleted_teams": ids })))
}

async fn set_blocked(
    keys: &Arc<Keys>,
    body: Map<String, Value>,
    blocked: bool,
) -> GatewayResult<(u16, Value)> {
    let team_id = required_str(&body, "team_id")?;
    let entry = keys
        .tenants
        .team(&team_id)
        .ok_or_else(|| team_not_found(&team_id))?;
    let mut row = entry.current_row();
    row.blocked = blocked;
    row.updated_at = Some(now_ms());
    let entry = keys.tenants.put_team(row).await.map_err(store_err)?;
    Ok((200, team_json(&entry)))
}

async fn member_add(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let team_id = required_str(&body, "team_id")?;
    let entry = keys
        .tenants
        .team(&team_id)
        .ok_or_else(|| team_not_found(&team_id))?;
    let members = parse_members(&body, "member")?;
    if members.is_empty() {
        return Err(crate::error::GatewayError::missing_field("member"));
    }
    let max_budget_in_team = opt_float(&body, "max_budget_in_team")?.flatten();
    let mut row = entry.current_row();
    let (users, memberships) = add_members(keys, &mut row, members, max_budget_in_team).await?;
    row.updated_at = Some(now_ms());
    let entry = keys.tenants.put_team(row).await.map_err(store_err)?;
    let mut v = team_json(&entry);
    v["updated_users"] = Value::Array(users);
    v["updated_team_memberships"] = Value::Array(memberships);
    Ok((200, v))
}

async fn member_delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let team_id = required_str(&body, "team_id")?;
    let entry = keys
        .tenants
        .team(&team_id)
        .ok_or_else(|| team_not_found(&team_id))?;
    let by_id = opt_string(&body, "user_id")?.flatten();
    let by_email = opt_string(&body, "user_email")?.flatten();
    let user = match (&by_id, &by_email) {
        (Some(id), _) => keys.tenants.user(id),
        (None, Some(email)) => keys
            .tenants
            .maps()
            .users
            .values()
            .find(|u| u.row.user_email.as_deref() == Some(email.as_str()))
            .cloned(),
        (None, None) => return Err(crate::error::GatewayError::missing_field("user_id")),
    };
    let mut row = entry.current_row();
    let user_id = match user {
        Some(u) => u.row.user_id.clone(),
        None => by_id.clone().unwrap_or_default(),
    };
    let in_team = row.members.contains(&user_id)
        || row.members_with_roles.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m.get("user_id").and_then(Value::as_str) == Some(user_id.as_str()))
        });
    if !in_team {
        return Err(not_found(format!(
            "User={} not found in team={team_id}",
            by_id.or(by_email).unwrap_or_default()
        ))
        .with_param("user_id"));
    }
    if let Some(roles) = row.members_with_roles.as_array_mut() {
        roles.retain(|m| m.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()));
    }
    row.members.retain(|m| m != &user_id);
    row.admins.retain(|m| m != &user_id);
    row.updated_at = Some(now_ms());
    let entry = keys.tenants.put_team(row).await.map_err(store_err)?;
    if let Some(u) = keys.tenants.user(&user_id) {
        let mut urow = u.current_row();
        urow.teams.retain(|t| t != &team_id);
        urow.updated_at = Some(now_ms());
        keys.tenants.put_user(urow).await.map_err(store_err)?;
    }
    keys.tenants
        .remove_membership(team_id, user_id)
        .await
        .map_err(store_err)?;
    Ok((200, team_json(&entry)))
}

fn info(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let team_id = required_query(query, "team_id", "GET /team/info?team_id=…")?;
    let entry = keys
        .tenants
        .team(team_id)
        .ok_or_else(|| team_not_found(team_id))?;
    let team_keys: Vec<Value> = keys
        .all()
        .iter()
        .filter(|k| k.row.team_id.as_deref() == Some(team_id))
        .map(|k| key_json(k))
        .collect();
    let maps = keys.tenants.maps();
    let memberships: Vec<Value> = maps
        .memberships
        .get(team_id)
        .map(|m| m.values().map(|e| membership_json(e)).collect())
        .unwrap_or_default();
    Ok((
        200,
        json!({
            "team_id": team_id,
            "team_info": team_json(&entry),
            "keys": team_keys,
            "team_memberships": memberships,
        }),
    ))
}

fn list(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let user_filter = query_get(query, "user_id");
    let maps = keys.tenants.maps();
    let mut teams: Vec<&Arc<TeamEntry>> = maps
        .teams
        .values()
        .filter(|t| {
            user_filter.is_none_or(|u| {
                t.row.members.iter().any(|m| m == u) || maps.membership(&t.row.team_id, u).is_some()
            })
        })
        .collect();
    teams.sort_by(|a, b| {
        a.row
            .created_at
            .cmp(&b.row.created_at)
            .then_with(|| a.row.team_id.cmp(&b.row.team_id))
    });
    let all_keys = keys.all();
    let out: Vec<Value> = teams
        .into_iter()
        .map(|t| {
            let mut v = team_json(t);
            v["keys"] = Value::Array(
                all_keys
                    .iter()
                    .filter(|k| k.row.team_id.as_deref() == Some(t.row.team_id.as_str()))
                    .map(|k| key_json(k))
                    .collect(),
            );
            v
        })
        .collect();
    Ok((200, Value::Array(out)))
}
