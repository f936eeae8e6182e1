//! LiteLLM's budget API: `POST /budget/new`, `/budget/update`, `/budget/info` (body
//! `{"budgets": [ids]}`), `/budget/delete` (body `{"id"}`); `GET /budget/list`. Budgets are
//! `LiteLLM_BudgetTable` rows that end users and team memberships point at.

use super::{
    bad, iso, not_found, opt_count, opt_duration, opt_float, opt_list, opt_object, opt_string,
    required_str, store_err, Query,
};
use crate::context::new_id;
use crate::error::{GatewayError, GatewayResult};
use crate::keys::{now_ms, Keys};
use crate::store::BudgetRow;
use http::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum BudgetRoute {
    New,
    Update,
    Info,
    List,
    Delete,
}

pub fn route(path: &str) -> Option<(BudgetRoute, Method)> {
    Some(match path {
        "/budget/new" => (BudgetRoute::New, Method::POST),
        "/budget/update" => (BudgetRoute::Update, Method::POST),
        "/budget/info" => (BudgetRoute::Info, Method::POST),
        "/budget/list" => (BudgetRoute::List, Method::GET),
        "/budget/delete" => (BudgetRoute::Delete, Method::POST),
        _ => return None,
    })
}

pub async fn handle(
    keys: &Arc<Keys>,
    route: BudgetRoute,
    _query: &Query,
    body: Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    match route {
        BudgetRoute::New => new(keys, body).await,
        BudgetRoute::Update => update(keys, body).await,
        BudgetRoute::Info => info(keys, body),
        BudgetRoute::List => list(keys),
        BudgetRoute::Delete => delete(keys, body).await,
    }
}

fn budget_not_found(id: &str) -> GatewayError {
    not_found(format!("Budget id = {id} not found")).with_param("budget_id")
}

/// A budget row as LiteLLM shows it.
pub(super) fn budget_json(r: &BudgetRow) -> Value {
    json!({
        "budget_id": r.budget_id,
        "max_budget": r.max_budget,
        "soft_budget": r.soft_budget,
        "max_parallel_requests": r.max_parallel_requests,
        "tpm_limit": r.tpm_limit,
        "rpm_limit": r.rpm_limit,
        "model_max_budget": r.model_max_budget,
        "budget_duration": r.budget_duration,
        "budget_reset_at": iso(r.budget_reset_at),
        "created_at": iso(r.created_at),
        "created_by": r.created_by,
        "updated_at": iso(r.updated_at),
        "updated_by": r.updated_by,
    })
}

/// The budget fields of a body (`/budget/*`, and `/customer/*`, whose bodies carry them too).
/// Returns whether any was present.
pub(super) fn apply(row: &mut BudgetRow, body: &Map<String, Value>) -> GatewayResult<bool> {
    let mut any = false;
    if let Some(v) = opt_float(body, "max_budget")? {
        row.max_budget = v;
        any = true;
    }
    if let Some(v) = opt_float(body, "soft_budget")? {
        row.soft_budget = v;
        any = true;
    }
    if let Some(v) = opt_count(body, "max_parallel_requests")? {
        row.max_parallel_requests = v;
        any = true;
    }
    if let Some(v) = opt_count(body, "tpm_limit")? {
        row.tpm_limit = v;
        any = true;
    }
    if let Some(v) = opt_count(body, "rpm_limit")? {
        row.rpm_limit = v;
        any = true;
    }
    if let Some(v) = opt_duration(body, "budget_duration")? {
        row.budget_duration = v;
        any = true;
    }
    if let Some(v) = opt_object(body, "model_max_budget")? {
        row.model_max_budget = v;
        any = true;
    }
    row.updated_at = Some(now_ms());
    row.updated_by = "litellm_proxy_admin_name".into();
    Ok(any)
}

/// A new budget row with a fresh id (or `budget_id`).
pub(super) fn fresh(budget_id: Option<String>) -> BudgetRow {
    let now = now_ms();
    BudgetRow {
        budget_id: budget_id.unwrap_or_else(new_id),
        created_at: Some(now),
        created_by: "litellm_proxy_admin_name".into(),
        ..Default::default()
    }
}

async fn new(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let id = opt_string(&body, "budget_id")?.flatten();
    if let Some(id) = &id {
        if keys.tenants.budget(id).is_some() {
            return Err(bad(
                "budget_id",
                format!("Budget id = {id} already exists. Please use a different budget_id."),
            ));
        }
    }
    let mut row = fresh(id);
    apply(&mut row, &body)?;
    let entry = keys.tenants.put_budget(row).await.map_err(store_err)?;
    Ok((200, budget_json(&entry.row)))
}

async fn update(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let id = required_str(&body, "budget_id")?;
    let entry = keys
        .tenants
        .budget(&id)
        .ok_or_else(|| budget_not_found(&id))?;
    let mut row = entry.row.clone();
    apply(&mut row, &body)?;
    let entry = keys.tenants.put_budget(row).await.map_err(store_err)?;
    Ok((200, budget_json(&entry.row)))
}

fn info(keys: &Keys, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let ids = opt_list(&body, "budgets")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(GatewayError::missing_field("budgets"));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let entry = keys
            .tenants
            .budget(id)
            .ok_or_else(|| budget_not_found(id))?;
        out.push(budget_json(&entry.row));
    }
    Ok((200, Value::Array(out)))
}

fn list(keys: &Keys) -> GatewayResult<(u16, Value)> {
    let maps = keys.tenants.maps();
    let mut rows: Vec<&BudgetRow> = maps.budgets.values().map(|b| &b.row).collect();
    rows.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.budget_id.cmp(&b.budget_id))
    });
    Ok((
        200,
        Value::Array(rows.into_iter().map(budget_json).collect()),
    ))
}

async fn delete(keys: &Arc<Keys>, body: Map<String, Value>) -> GatewayResult<(u16, Value)> {
    let id = required_str(&body, "id")?;
    let entry = keys
        .tenants
        .budget(&id)
        .ok_or_else(|| budget_not_found(&id))?;
    keys.tenants.remove_budget(id).await.map_err(store_err)?;
    Ok((200, budget_json(&entry.row)))
}
