//! LiteLLM's end-user (customer) API, each path also under `/end_user/`: `POST /customer/new`,
//! `/customer/update`, `/customer/delete`, `/customer/block`, `/customer/unblock`; `GET
//! /customer/info?end_user_id=`, `/customer/list`. An end user is the OpenAI `user` of a
//! request (or `x-litellm-end-user-id`); its limits live in a budget row, made here when the
//! body carries budget fields without a `budget_id`.

use super::{
    bad, budgets, not_found, opt_bool, opt_list, opt_string, required_query, required_str,
    store_err, Query,
};
use crate::error::{GatewayError, GatewayResult};
use crate::keys::Keys;
use crate::store::EndUserRow;
use crate::tenant::EndUserEntry;
use http::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum CustomerRoute {
    New,
    Info,
    Update,
    Delete,
    List,
    Block,
    Unblock,
}

pub fn route(path: &str) -> Option<(CustomerRoute, Method)> {
    let rest = path
        .strip_prefix("/customer/")
        .or_else(|| path.strip_prefix("/end_user/"))?;
    Some(match rest {
        "new" => (CustomerRoute::New, Method::POST),
        "info" => (CustomerRoute::Info, Method::GET),
        "update" => (CustomerRoute::Update, Method::POST),
        "delete" => (CustomerRoute::Delete, Method::POST),
        "list" => (CustomerRoute::List, Method::GET),
        "block" => (CustomerRoute::Block, Method::POST),
        "unblock" => (CustomerRoute::Unblock, Method::POST),
        _ => return None,
    })
}

pub async fn handle(
    keys: &Arc<Keys>,
    route: CustomerRoute,
    query: &Query,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    match route {
        CustomerRoute::New => new(keys, body).await,
        CustomerRoute::Info => info(keys, query),
        CustomerRoute::Update => update(keys, body).await,
        CustomerRoute::Delete => delete(keys, body).await,
        CustomerRoute::List => list(keys),
        CustomerRoute::Block => set_blocked(keys, body, true).await,
        CustomerRoute::Unblock => set_blocked(keys, body, false).await,
    }
}

fn end_user_not_found(id: &str) -> GatewayError {
    not_found(format!("End User Id={id} does not exist in db")).with_param("user_id")
}

/// An end user as LiteLLM shows it, with its budget row.
fn end_user_json(entry: &EndUserEntry) -> Value {
    let r = &entry.row;
    json!({
        "user_id": r.user_id,
        "alias": r.alias,
        "spend": entry.spend.get(),
        "allowed_model_region": r.allowed_model_region,
        "default_model": r.default_model,
        "budget_id": r.budget_id,
        "blocked": r.blocked,
        "litellm_budget_table": entry.budget.as_ref().map(|b| budgets::budget_json(&b.row)),
    })
}

/// The end-user fields of a body; budget fields go to the end user's budget row (a new one
/// when it has none).
async fn apply(
    keys: &Arc<Keys>,
    row: &mut EndUserRow,
    body: &Map<String, Value>,
) -> GatewayResult<()> {
    if let Some(v) = opt_string(body, "alias")? {
        row.alias = v;
    }
    if let Some(v) = opt_bool(body, "blocked")? {
        row.blocked = v;
    }
    if let Some(v) = opt_string(body, "allowed_model_region")? {
        if let Some(region) = &v {
            if region != "eu" && region != "us" {
                return Err(bad(
                    "allowed_model_region",
                    "'allowed_model_region' must be \"eu\" or \"us\".",
                ));
            }
        }
        row.allowed_model_region = v;
    }
    if let Some(v) = opt_string(body, "default_model")? {
        row.default_model = v;
    }
    if let Some(v) = opt_string(body, "budget_id")? {
        if let Some(id) = &v {
            if keys.tenants.budget(id).is_none() {
                return Err(
                    not_found(format!("Budget id = {id} not found")).with_param("budget_id")
                );
            }
        }
        row.budget_id = v;
    }
    // Budget fields without a budget_id: the end user's own budget, made or updated.
    if body.get("budget_id").is_none() {
        let mut budget = match row
            .budget_id
            .as_deref()
            .and_then(|b| keys.tenants.budget(b))
        {
            Some(b) => b.row.clone(),
            None => budgets::fresh(None),
        };
        if budgets::apply(&mut budget, body)? {
            let b = keys.tenants.put_budget(budget).await.map_err(store_err)?;
            row.budget_id = Some(b.row.budget_id.clone());
        }
    }
    Ok(())
}

async fn new(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let user_id = required_str(&body, "user_id")?;
    if keys.tenants.end_user(&user_id).is_some() {
        return Err(bad(
            "user_id",
            format!(
                "Customer already exists, passed user_id={user_id}. Please pass a new user_id."
            ),
        ));
    }
    let mut row = EndUserRow {
        user_id,
        ..Default::default()
    };
    apply(keys, &mut row, &body).await?;
    let entry = keys.tenants.put_end_user(row).await.map_err(store_err)?;
    Ok((200, end_user_json(&entry)))
}

async fn update(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let user_id = required_str(&body, "user_id")?;
    let entry = keys
        .tenants
        .end_user(&user_id)
        .ok_or_else(|| end_user_not_found(&user_id))?;
    let mut row = entry.current_row();
    apply(keys, &mut row, &body).await?;
    let entry = keys.tenants.put_end_user(row).await.map_err(store_err)?;
    Ok((200, end_user_json(&entry)))
}

async fn delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let ids = opt_list(&body, "user_ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(GatewayError::missing_field("user_ids"));
    }
    for id in &ids {
        keys.tenants
            .end_user(id)
            .ok_or_else(|| end_user_not_found(id))?;
    }
    for id in &ids {
        keys.tenants
            .remove_end_user(id.clone())
            .await
            .map_err(store_err)?;
    }
    Ok((
        200,
        json!({
            "deleted_customers": ids.len(),
            "message": format!("Successfully deleted customers with ids: {ids:?}"),
        }),
    ))
}

/// Blocks or unblocks end users by id, making the rows of ids not seen yet (a block applies
/// before an end user's first call).
async fn set_blocked(
    keys: &Arc<Keys>,
    body: Map<String, Value>,
    blocked: bool,
) -> GatewayResult<(u16, Value)> {
    let ids = opt_list(&body, "user_ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(GatewayError::missing_field("user_ids"));
    }
    for id in &ids {
        let mut row = match keys.tenants.end_user(id) {
            Some(e) => e.current_row(),
            None => EndUserRow {
                user_id: id.clone(),
                ..Default::default()
            },
        };
        row.blocked = blocked;
        keys.tenants.put_end_user(row).await.map_err(store_err)?;
    }
    let field = if blocked {
        "blocked_users"
    } else {
        "unblocked_users"
    };
    Ok((200, json!({ field: ids })))
}

fn info(keys: &Keys, query: &Query) -> GatewayResult<(u16, Value)> {
    let id = required_query(query, "end_user_id", "GET /customer/info?end_user_id=…")?;
    let entry = keys
        .tenants
        .end_user(id)
        .ok_or_else(|| end_user_not_found(id))?;
    Ok((200, end_user_json(&entry)))
}

fn list(keys: &Keys) -> GatewayResult<(u16, Value)> {
    let maps = keys.tenants.maps();
    let mut all: Vec<&Arc<EndUserEntry>> = maps.end_users.values().collect();
    all.sort_by(|a, b| a.row.user_id.cmp(&b.row.user_id));
    Ok((
        200,
        Value::Array(all.into_iter().map(|e| end_user_json(e)).collect()),
    ))
}
