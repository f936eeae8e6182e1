//! Queries for teams, users, end users (customers), budgets and team memberships:
//! `LiteLLM_TeamTable`, `LiteLLM_UserTable`, `LiteLLM_EndUserTable`, `LiteLLM_BudgetTable`,
//! `LiteLLM_TeamMembership`. One generic select/upsert/delete per table, driven by a column
//! list ([`Kind`] says how a column crosses: text, number, flag, Unix-ms timestamp, JSON list or
//! JSON object), so each row type is its column list and two conversions.

use super::{arr_in, db_err, json_list, json_object, ts_in, ts_out, Db, Store, StoreResult};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

/// How a column is read and written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Text,
    Float,
    Int,
    Bool,
    /// A timestamp, as Unix ms.
    Ts,
    /// `TEXT[]` on Postgres, JSON text on SQLite; a list of strings here.
    List,
    /// `JSONB` on Postgres, JSON text on SQLite; an object here.
    Object,
}

/// One column's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Text(Option<String>),
    Float(Option<f64>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

type Cols = &'static [(&'static str, Kind)];

/// Reads a row's values in column order.
struct Cursor(std::vec::IntoIter<Val>);

impl Cursor {
    fn text(&mut self) -> Option<String> {
        match self.0.next() {
            Some(Val::Text(t)) => t,
            _ => None,
        }
    }
    fn float(&mut self) -> Option<f64> {
        match self.0.next() {
            Some(Val::Float(f)) => f,
            _ => None,
        }
    }
    fn int(&mut self) -> Option<i64> {
        match self.0.next() {
            Some(Val::Int(i)) => i,
            _ => None,
        }
    }
    fn flag(&mut self) -> Option<bool> {
        match self.0.next() {
            Some(Val::Bool(b)) => b,
            _ => None,
        }
    }
    fn list(&mut self) -> Vec<String> {
        json_list(self.text().unwrap_or_default())
    }
    fn object(&mut self) -> Map<String, Value> {
        json_object(self.text().unwrap_or_default())
    }
}

fn list_val(l: &[String]) -> Val {
    Val::Text(Some(Value::from(l.to_vec()).to_string()))
}

fn object_val(m: &Map<String, Value>) -> Val {
    Val::Text(Some(Value::Object(m.clone()).to_string()))
}

/// A `LiteLLM_TeamTable` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamRow {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub admins: Vec<String>,
    pub members: Vec<String>,
    /// `[{"role": "admin"|"user", "user_id": …, "user_email": …}]` (a JSON list, despite the
    /// column's object default).
    pub members_with_roles: Value,
    pub metadata: Map<String, Value>,
    /// USD; `None`: no budget.
    pub max_budget: Option<f64>,
    pub spend: f64,
    /// Empty: every model; `all-proxy-models` likewise.
    pub models: Vec<String>,
    pub max_parallel_requests: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    /// LiteLLM's duration (`30s`, `1d`, `1mo`…): how often `spend` resets.
    pub budget_duration: Option<String>,
    /// Unix ms of the next reset.
    pub budget_reset_at: Option<i64>,
    pub blocked: bool,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    /// `{"model": {"budget_limit": USD, "time_period": "30d"}}`.
    pub model_max_budget: Map<String, Value>,
    /// USD: crossing it alerts and counts, never blocks.
    pub soft_budget: Option<f64>,
    /// The team's `LiteLLM_ModelTable` row, which holds [`Self::model_aliases`].
    pub model_id: Option<i64>,
    /// `{"gpt-4o": "team-a-gpt-4o"}`: requested name -> model group, for this team's keys
    /// (from `LiteLLM_ModelTable.aliases`; written there by [`Store::upsert_team`]).
    pub model_aliases: Map<String, Value>,
}

const TEAM_COLS: Cols = &[
    ("team_id", Kind::Text),
    ("team_alias", Kind::Text),
    ("organization_id", Kind::Text),
    ("admins", Kind::List),
    ("members", Kind::List),
    ("members_with_roles", Kind::Object),
    ("metadata", Kind::Object),
    ("max_budget", Kind::Float),
    ("spend", Kind::Float),
    ("models", Kind::List),
    ("max_parallel_requests", Kind::Int),
    ("tpm_limit", Kind::Int),
    ("rpm_limit", Kind::Int),
    ("budget_duration", Kind::Text),
    ("budget_reset_at", Kind::Ts),
    ("blocked", Kind::Bool),
    ("created_at", Kind::Ts),
    ("updated_at", Kind::Ts),
    ("model_max_budget", Kind::Object),
    ("soft_budget", Kind::Float),
    ("model_id", Kind::Int),
];

const MODEL_COLS: Cols = &[("id", Kind::Int), ("aliases", Kind::Object)];

impl TeamRow {
    fn read(mut c: Cursor) -> TeamRow {
        TeamRow {
            team_id: c.text().unwrap_or_default(),
            team_alias: c.text(),
            organization_id: c.text(),
            admins: c.list(),
            members: c.list(),
            members_with_roles: serde_json::from_str(&c.text().unwrap_or_default())
                .ok()
                .filter(Value::is_array)
                .unwrap_or_else(|| Value::Array(vec![])),
            metadata: c.object(),
            max_budget: c.float(),
            spend: c.float().unwrap_or(0.0),
            models: c.list(),
            max_parallel_requests: c.int(),
            tpm_limit: c.int(),
            rpm_limit: c.int(),
            budget_duration: c.text(),
            budget_reset_at: c.int(),
            blocked: c.flag().unwrap_or(false),
            created_at: c.int(),
            updated_at: c.int(),
            model_max_budget: c.object(),
            soft_budget: c.float(),
            model_id: c.int(),
            model_aliases: Map::new(),
        }
    }

    fn vals(&self) -> Vec<Val> {
        vec![
            Val::Text(Some(self.team_id.clone())),
            Val::Text(self.team_alias.clone()),
            Val::Text(self.organization_id.clone()),
            list_val(&self.admins),
            list_val(&self.members),
            Val::Text(Some(self.members_with_roles.to_string())),
            object_val(&self.metadata),
            Val::Float(self.max_budget),
            Val::Float(Some(self.spend)),
            list_val(&self.models),
            Val::Int(self.max_parallel_requests),
            Val::Int(self.tpm_limit),
            Val::Int(self.rpm_limit),
            Val::Text(self.budget_duration.clone()),
            Val::Int(self.budget_reset_at),
            Val::Bool(Some(self.blocked)),
            Val::Int(self.created_at),
            Val::Int(self.updated_at),
            object_val(&self.model_max_budget),
            Val::Float(self.soft_budget),
            Val::Int(self.model_id),
        ]
    }
}

/// A `LiteLLM_UserTable` row (an internal user: owns keys, belongs to teams).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRow {
    pub user_id: String,
    pub user_alias: Option<String>,
    pub team_id: Option<String>,
    pub organization_id: Option<String>,
    pub teams: Vec<String>,
    pub user_role: Option<String>,
    pub max_budget: Option<f64>,
    pub spend: f64,
    pub user_email: Option<String>,
    pub models: Vec<String>,
    pub metadata: Map<String, Value>,
    pub max_parallel_requests: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub model_max_budget: Map<String, Value>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

const USER_COLS: Cols = &[
    ("user_id", Kind::Text),
    ("user_alias", Kind::Text),
    ("team_id", Kind::Text),
    ("organization_id", Kind::Text),
    ("teams", Kind::List),
    ("user_role", Kind::Text),
    ("max_budget", Kind::Float),
    ("spend", Kind::Float),
    ("user_email", Kind::Text),
    ("models", Kind::List),
    ("metadata", Kind::Object),
    ("max_parallel_requests", Kind::Int),
    ("tpm_limit", Kind::Int),
    ("rpm_limit", Kind::Int),
    ("budget_duration", Kind::Text),
    ("budget_reset_at", Kind::Ts),
    ("model_max_budget", Kind::Object),
    ("created_at", Kind::Ts),
    ("updated_at", Kind::Ts),
];

impl UserRow {
    fn read(mut c: Cursor) -> UserRow {
        UserRow {
            user_id: c.text().unwrap_or_default(),
            user_alias: c.text(),
            team_id: c.text(),
            organization_id: c.text(),
            teams: c.list(),
            user_role: c.text(),
            max_budget: c.float(),
            spend: c.float().unwrap_or(0.0),
            user_email: c.text(),
            models: c.list(),
            metadata: c.object(),
            max_parallel_requests: c.int(),
            tpm_limit: c.int(),
            rpm_limit: c.int(),
            budget_duration: c.text(),
            budget_reset_at: c.int(),
            model_max_budget: c.object(),
            created_at: c.int(),
            updated_at: c.int(),
        }
    }

    fn vals(&self) -> Vec<Val> {
        vec![
            Val::Text(Some(self.user_id.clone())),
            Val::Text(self.user_alias.clone()),
            Val::Text(self.team_id.clone()),
            Val::Text(self.organization_id.clone()),
            list_val(&self.teams),
            Val::Text(self.user_role.clone()),
            Val::Float(self.max_budget),
            Val::Float(Some(self.spend)),
            Val::Text(self.user_email.clone()),
            list_val(&self.models),
            object_val(&self.metadata),
            Val::Int(self.max_parallel_requests),
            Val::Int(self.tpm_limit),
            Val::Int(self.rpm_limit),
            Val::Text(self.budget_duration.clone()),
            Val::Int(self.budget_reset_at),
            object_val(&self.model_max_budget),
            Val::Int(self.created_at),
            Val::Int(self.updated_at),
        ]
    }
}

/// A `LiteLLM_EndUserTable` row: a customer, the OpenAI `user` of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndUserRow {
    pub user_id: String,
    pub alias: Option<String>,
    pub spend: f64,
    /// `eu` or `us` (routing, issue 17).
    pub allowed_model_region: Option<String>,
    pub default_model: Option<String>,
    /// The end user's limits live in this `LiteLLM_BudgetTable` row.
    pub budget_id: Option<String>,
    pub blocked: bool,
}

const END_USER_COLS: Cols = &[
    ("user_id", Kind::Text),
    ("alias", Kind::Text),
    ("spend", Kind::Float),
    ("allowed_model_region", Kind::Text),
    ("default_model", Kind::Text),
    ("budget_id", Kind::Text),
    ("blocked", Kind::Bool),
];

impl EndUserRow {
    fn read(mut c: Cursor) -> EndUserRow {
        EndUserRow {
            user_id: c.text().unwrap_or_default(),
            alias: c.text(),
            spend: c.float().unwrap_or(0.0),
            allowed_model_region: c.text(),
            default_model: c.text(),
            budget_id: c.text(),
            blocked: c.flag().unwrap_or(false),
        }
    }

    fn vals(&self) -> Vec<Val> {
        vec![
            Val::Text(Some(self.user_id.clone())),
            Val::Text(self.alias.clone()),
            Val::Float(Some(self.spend)),
            Val::Text(self.allowed_model_region.clone()),
            Val::Text(self.default_model.clone()),
            Val::Text(self.budget_id.clone()),
            Val::Bool(Some(self.blocked)),
        ]
    }
}

/// A `LiteLLM_BudgetTable` row: limits shared by end users and team memberships.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetRow {
    pub budget_id: String,
    pub max_budget: Option<f64>,
    /// Alert threshold (USD): crossing it logs and counts, never blocks.
    pub soft_budget: Option<f64>,
    pub max_parallel_requests: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub model_max_budget: Map<String, Value>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub created_at: Option<i64>,
    pub created_by: String,
    pub updated_at: Option<i64>,
    pub updated_by: String,
}

const BUDGET_COLS: Cols = &[
    ("budget_id", Kind::Text),
    ("max_budget", Kind::Float),
    ("soft_budget", Kind::Float),
    ("max_parallel_requests", Kind::Int),
    ("tpm_limit", Kind::Int),
    ("rpm_limit", Kind::Int),
    ("model_max_budget", Kind::Object),
    ("budget_duration", Kind::Text),
    ("budget_reset_at", Kind::Ts),
    ("created_at", Kind::Ts),
    ("created_by", Kind::Text),
    ("updated_at", Kind::Ts),
    ("updated_by", Kind::Text),
];

impl BudgetRow {
    fn read(mut c: Cursor) -> BudgetRow {
        BudgetRow {
            budget_id: c.text().unwrap_or_default(),
            max_budget: c.float(),
            soft_budget: c.float(),
            max_parallel_requests: c.int(),
            tpm_limit: c.int(),
            rpm_limit: c.int(),
            model_max_budget: c.object(),
            budget_duration: c.text(),
            budget_reset_at: c.int(),
            created_at: c.int(),
            created_by: c.text().unwrap_or_default(),
            updated_at: c.int(),
            updated_by: c.text().unwrap_or_default(),
        }
    }

    fn vals(&self) -> Vec<Val> {
        vec![
            Val::Text(Some(self.budget_id.clone())),
            Val::Float(self.max_budget),
            Val::Float(self.soft_budget),
            Val::Int(self.max_parallel_requests),
            Val::Int(self.tpm_limit),
            Val::Int(self.rpm_limit),
            object_val(&self.model_max_budget),
            Val::Text(self.budget_duration.clone()),
            Val::Int(self.budget_reset_at),
            Val::Int(self.created_at),
            Val::Text(Some(self.created_by.clone())),
            Val::Int(self.updated_at),
            Val::Text(Some(self.updated_by.clone())),
        ]
    }
}

/// A `LiteLLM_TeamMembership` row: a user's spend (and optional budget) within one team.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembershipRow {
    pub user_id: String,
    pub team_id: String,
    pub spend: f64,
    pub budget_id: Option<String>,
}

const MEMBERSHIP_COLS: Cols = &[
    ("user_id", Kind::Text),
    ("team_id", Kind::Text),
    ("spend", Kind::Float),
    ("budget_id", Kind::Text),
];

impl MembershipRow {
    fn read(mut c: Cursor) -> MembershipRow {
        MembershipRow {
            user_id: c.text().unwrap_or_default(),
            team_id: c.text().unwrap_or_default(),
            spend: c.float().unwrap_or(0.0),
            budget_id: c.text(),
        }
    }

    fn vals(&self) -> Vec<Val> {
        vec![
            Val::Text(Some(self.user_id.clone())),
            Val::Text(Some(self.team_id.clone())),
            Val::Float(Some(self.spend)),
            Val::Text(self.budget_id.clone()),
        ]
    }
}

/// Every tenant row, as loaded together.
#[derive(Debug, Default)]
pub struct TenantRows {
    pub teams: Vec<TeamRow>,
    pub users: Vec<UserRow>,
    pub end_users: Vec<EndUserRow>,
    pub budgets: Vec<BudgetRow>,
    pub memberships: Vec<MembershipRow>,
}

const TEAM: &str = "LiteLLM_TeamTable";
const MODEL: &str = "LiteLLM_ModelTable";
const USER: &str = "LiteLLM_UserTable";
const END_USER: &str = "LiteLLM_EndUserTable";
const BUDGET: &str = "LiteLLM_BudgetTable";
const MEMBERSHIP: &str = "LiteLLM_TeamMembership";

/// `SELECT` of `cols`, each cast so both backends hand back the same types.
fn select_sql(table: &str, cols: Cols, pg: bool) -> String {
    let list: Vec<String> = cols
        .iter()
        .map(|(c, kind)| match kind {
            Kind::Text | Kind::Float | Kind::Bool => format!("\"{c}\""),
            Kind::Int if pg => format!("\"{c}\"::BIGINT AS \"{c}\""),
            Kind::Int => format!("\"{c}\""),
            Kind::Ts => format!("{} AS \"{c}\"", ts_out(pg, c)),
            Kind::List if pg => format!("array_to_json(\"{c}\")::text AS \"{c}\""),
            Kind::Object if pg => format!("\"{c}\"::text AS \"{c}\""),
            Kind::List | Kind::Object => format!("\"{c}\""),
        })
        .collect();
    format!("SELECT {} FROM \"{table}\"", list.join(", "))
}

/// `INSERT … ON CONFLICT (key) DO UPDATE` of every column but the key and `keep`.
fn upsert_sql(table: &str, key: &[&str], cols: Cols, keep: &[&str], pg: bool) -> String {
    let values: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            let p = format!("${}", i + 1);
            match kind {
                Kind::Ts => ts_in(pg, &p),
                Kind::List => arr_in(pg, &p),
                Kind::Object if pg => format!("{p}::jsonb"),
                _ => p,
            }
        })
        .collect();
    let updates: Vec<String> = cols
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !key.contains(c) && !keep.contains(c))
        .map(|c| format!("\"{c}\" = excluded.\"{c}\""))
        .collect();
    let quoted = |l: &mut dyn Iterator<Item = &str>| {
        l.map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
    };
    let conflict = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO \"{table}\" ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
        quoted(&mut cols.iter().map(|(c, _)| *c)),
        values.join(", "),
        quoted(&mut key.iter().copied()),
    )
}

impl Store {
    async fn select_rows(&self, table: &str, cols: Cols) -> StoreResult<Vec<Cursor>> {
        self.count(1);
        let sql = select_sql(table, cols, self.is_postgres());
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql.as_str())).fetch_all(pool).await.map_err(db_err)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut vals = Vec::with_capacity(cols.len());
                for (c, kind) in cols {
                    let c = *c;
                    vals.push(match kind {
                        Kind::Float => Val::Float(r.try_get(c).map_err(db_err)?),
                        Kind::Int | Kind::Ts => Val::Int(r.try_get(c).map_err(db_err)?),
                        Kind::Bool => Val::Bool(r.try_get(c).map_err(db_err)?),
                        Kind::Text | Kind::List | Kind::Object => Val::Text(r.try_get(c).map_err(db_err)?),
                    });
                }
                out.push(Cursor(vals.into_iter()));
            }
            Ok(out)
        })
    }

    async fn upsert_row(
        &self,
        table: &str,
        key: &[&str],
        cols: Cols,
        keep: &[&str],
        vals: Vec<Val>,
    ) -> StoreResult<()> {
        self.count(1);
        let sql = upsert_sql(table, key, cols, keep, self.is_postgres());
        with_pool!(&self.db, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for v in vals {
                q = match v {
                    Val::Text(t) => q.bind(t),
                    Val::Float(f) => q.bind(f),
                    Val::Int(i) => q.bind(i),
                    Val::Bool(b) => q.bind(b),
                };
            }
            q.execute(pool).await.map_err(db_err)?;
        });
        Ok(())
    }

    /// `DELETE FROM table WHERE column = value`; how many rows went.
    async fn delete_where(&self, table: &str, column: &str, value: &str) -> StoreResult<u64> {
        self.count(1);
        let sql = format!("DELETE FROM \"{table}\" WHERE \"{column}\" = $1");
        with_pool!(&self.db, pool => Ok(sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(value)
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected()))
    }

    /// Every team, user, end user, budget and membership row.
    pub async fn load_tenants(&self) -> StoreResult<TenantRows> {
        let mut model_aliases: std::collections::HashMap<i64, Map<String, Value>> = self
            .select_rows(MODEL, MODEL_COLS)
            .await?
            .into_iter()
            .filter_map(|mut c| Some((c.int()?, c.object())))
            .collect();
        Ok(TenantRows {
            teams: self
                .select_rows(TEAM, TEAM_COLS)
                .await?
                .into_iter()
                .map(|c| {
                    let mut team = TeamRow::read(c);
                    if let Some(aliases) = team.model_id.and_then(|id| model_aliases.remove(&id)) {
                        team.model_aliases = aliases;
                    }
                    team
                })
                .collect(),
            users: self
                .select_rows(USER, USER_COLS)
                .await?
                .into_iter()
                .map(UserRow::read)
                .collect(),
            end_users: self
                .select_rows(END_USER, END_USER_COLS)
                .await?
                .into_iter()
                .map(EndUserRow::read)
                .collect(),
            budgets: self
                .select_rows(BUDGET, BUDGET_COLS)
                .await?
                .into_iter()
                .map(BudgetRow::read)
                .collect(),
            memberships: self
                .select_rows(MEMBERSHIP, MEMBERSHIP_COLS)
                .await?
                .into_iter()
                .map(MembershipRow::read)
                .collect(),
        })
    }

    /// A cheap fingerprint of the five tenant tables, in one query: row counts, latest
    /// `updated_at` where the table has one, and for end users and memberships (which have no
    /// `updated_at`) the number blocked and the length of their budget links. When it changes,
    /// someone else changed a tenant and the tables are reloaded.
    pub async fn tenants_marker(&self) -> StoreResult<Vec<i64>> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pg = self.is_postgres();
        let exprs = [
            format!("(SELECT CAST(COUNT(*) AS BIGINT) FROM \"{TEAM}\")"),
            format!(
                "(SELECT CAST(COALESCE(MAX({}), 0) AS BIGINT) FROM \"{TEAM}\")",
                ts_out(pg, "updated_at")
            ),
            format!("(SELECT CAST(COUNT(*) AS BIGINT) FROM \"{USER}\")"),
            format!(
                "(SELECT CAST(COALESCE(MAX({}), 0) AS BIGINT) FROM \"{USER}\")",
                ts_out(pg, "updated_at")
            ),
            format!("(SELECT CAST(COUNT(*) AS BIGINT) FROM \"{BUDGET}\")"),
            format!(
                "(SELECT CAST(COALESCE(MAX({}), 0) AS BIGINT) FROM \"{BUDGET}\")",
                ts_out(pg, "updated_at")
            ),
            format!("(SELECT CAST(COUNT(*) AS BIGINT) FROM \"{END_USER}\")"),
            format!("(SELECT CAST(COALESCE(SUM(CASE WHEN \"blocked\" THEN 1 ELSE 0 END), 0) AS BIGINT) FROM \"{END_USER}\")"),
            format!("(SELECT CAST(COALESCE(SUM(LENGTH(COALESCE(\"budget_id\", '')) + LENGTH(COALESCE(\"alias\", ''))), 0) AS BIGINT) FROM \"{END_USER}\")"),
            format!("(SELECT CAST(COUNT(*) AS BIGINT) FROM \"{MEMBERSHIP}\")"),
            format!("(SELECT CAST(COALESCE(SUM(LENGTH(COALESCE(\"budget_id\", ''))), 0) AS BIGINT) FROM \"{MEMBERSHIP}\")"),
        ];
        let sql = format!("SELECT {}", exprs.join(", "));
        with_pool!(&self.db, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.as_str())).fetch_one(pool).await.map_err(db_err)?;
            (0..exprs.len()).map(|i| row.try_get::<i64, _>(i).map_err(db_err)).collect()
        })
    }

    /// Inserts the team or replaces its settings (never `spend` or `created_at`). Its model
    /// aliases go to its `LiteLLM_ModelTable` row, as LiteLLM keeps them: updated in place, or
    /// (the first time a team has any) inserted, `row.model_id` then naming the new row.
    pub async fn upsert_team(&self, row: &mut TeamRow) -> StoreResult<()> {
        let aliases = Value::Object(row.model_aliases.clone()).to_string();
        let pg = self.is_postgres();
        let json_in = if pg { "$1::jsonb" } else { "$1" };
        if let Some(id) = row.model_id {
            self.count(1);
            let sql = format!(
                "UPDATE \"{MODEL}\" SET \"aliases\" = {json_in}, \"updated_at\" = CURRENT_TIMESTAMP, \"updated_by\" = 'switchboard' WHERE \"id\" = $2"
            );
            with_pool!(&self.db, pool => {
                sqlx::query(AssertSqlSafe(sql.as_str())).bind(&aliases).bind(id).execute(pool).await.map_err(db_err)?;
            });
        } else if !row.model_aliases.is_empty() {
            self.count(1);
            let id_out = if pg { "\"id\"::BIGINT" } else { "\"id\"" };
            let sql = format!(
                "INSERT INTO \"{MODEL}\" (\"aliases\", \"created_by\", \"updated_by\") VALUES ({json_in}, 'switchboard', 'switchboard') RETURNING {id_out}"
            );
            let id: i64 = with_pool!(&self.db, pool => {
                sqlx::query(AssertSqlSafe(sql.as_str())).bind(&aliases).fetch_one(pool).await.map_err(db_err)?.try_get(0).map_err(db_err)?
            });
            row.model_id = Some(id);
        }
        self.upsert_row(
            TEAM,
            &["team_id"],
            TEAM_COLS,
            &["spend", "created_at"],
            row.vals(),
        )
        .await
    }

    pub async fn upsert_user(&self, row: &UserRow) -> StoreResult<()> {
        self.upsert_row(
            USER,
            &["user_id"],
            USER_COLS,
            &["spend", "created_at"],
            row.vals(),
        )
        .await
    }

    pub async fn upsert_end_user(&self, row: &EndUserRow) -> StoreResult<()> {
        self.upsert_row(
            END_USER,
            &["user_id"],
            END_USER_COLS,
            &["spend"],
            row.vals(),
        )
        .await
    }

    pub async fn upsert_budget(&self, row: &BudgetRow) -> StoreResult<()> {
        self.upsert_row(
            BUDGET,
            &["budget_id"],
            BUDGET_COLS,
            &["created_at", "created_by"],
            row.vals(),
        )
        .await
    }

    pub async fn upsert_membership(&self, row: &MembershipRow) -> StoreResult<()> {
        self.upsert_row(
            MEMBERSHIP,
            &["user_id", "team_id"],
            MEMBERSHIP_COLS,
            &["spend"],
            row.vals(),
        )
        .await
    }

    /// Deletes a team, its memberships and its keys (LiteLLM's `/team/delete` takes the
    /// team's keys with it).
    pub async fn delete_team(&self, team_id: &str) -> StoreResult<u64> {
        self.delete_where(MEMBERSHIP, "team_id", team_id).await?;
        self.delete_where("LiteLLM_VerificationToken", "team_id", team_id)
            .await?;
        self.delete_where(TEAM, "team_id", team_id).await
    }

    /// Deletes a user, their memberships and their keys (as LiteLLM's `/user/delete`).
    pub async fn delete_user(&self, user_id: &str) -> StoreResult<u64> {
        self.delete_where(MEMBERSHIP, "user_id", user_id).await?;
        self.delete_where("LiteLLM_VerificationToken", "user_id", user_id)
            .await?;
        self.delete_where(USER, "user_id", user_id).await
    }

    pub async fn delete_end_user(&self, user_id: &str) -> StoreResult<u64> {
        self.delete_where(END_USER, "user_id", user_id).await
    }

    pub async fn delete_budget(&self, budget_id: &str) -> StoreResult<u64> {
        self.delete_where(BUDGET, "budget_id", budget_id).await
    }

    /// Deletes one membership (`/team/member_delete`).
    pub async fn delete_membership(&self, user_id: &str, team_id: &str) -> StoreResult<u64> {
        self.count(1);
        let sql =
            format!("DELETE FROM \"{MEMBERSHIP}\" WHERE \"user_id\" = $1 AND \"team_id\" = $2");
        with_pool!(&self.db, pool => Ok(sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(user_id)
            .bind(team_id)
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_tenant_round_trip() {
        let dir = std::env::temp_dir().join(format!("sb-tenants-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = super::super::resolve_url(None, Some(&dir));
        let store = Store::open(&url).await.unwrap();
        let before = store.tenants_marker().await.unwrap();
        let mut meta = Map::new();
        meta.insert("cost_center".into(), "42".into());
        let mut aliases = Map::new();
        aliases.insert("gpt-4o".into(), "team-one-gpt-4o".into());
        let mut team = TeamRow {
            team_id: "t1".into(),
            team_alias: Some("Team One".into()),
            model_aliases: aliases,
            members_with_roles: serde_json::json!([{"role": "admin", "user_id": "u1"}]),
            metadata: meta,
            models: vec!["gpt-4o".into()],
            max_budget: Some(10.0),
            tpm_limit: Some(1000),
            blocked: true,
            budget_reset_at: Some(1_900_000_000_000),
            created_at: Some(1_800_000_000_000),
            updated_at: Some(1_800_000_000_000),
            ..Default::default()
        };
        store.upsert_team(&mut team).await.unwrap();
        // The aliases went to a LiteLLM_ModelTable row the team now names; updating them
        // keeps that row.
        let model_id = team.model_id.expect("a model row");
        team.model_aliases
            .insert("fast".into(), "team-one-mini".into());
        store.upsert_team(&mut team).await.unwrap();
        assert_eq!(team.model_id, Some(model_id));
        let user = UserRow {
            user_id: "u1".into(),
            teams: vec!["t1".into()],
            user_role: Some("internal_user".into()),
            updated_at: Some(5),
            ..Default::default()
        };
        store.upsert_user(&user).await.unwrap();
        let budget = BudgetRow {
            budget_id: "b1".into(),
            max_budget: Some(1.5),
            soft_budget: Some(1.0),
            budget_duration: Some("1d".into()),
            ..Default::default()
        };
        store.upsert_budget(&budget).await.unwrap();
        let end_user = EndUserRow {
            user_id: "c1".into(),
            budget_id: Some("b1".into()),
            blocked: true,
            ..Default::default()
        };
        store.upsert_end_user(&end_user).await.unwrap();
        let membership = MembershipRow {
            user_id: "u1".into(),
            team_id: "t1".into(),
            budget_id: Some("b1".into()),
            ..Default::default()
        };
        store.upsert_membership(&membership).await.unwrap();
        let rows = store.load_tenants().await.unwrap();
        assert_eq!(rows.teams, vec![team.clone()]);
        assert_eq!(rows.users, vec![user]);
        assert_eq!(rows.end_users, vec![end_user.clone()]);
        assert_eq!(rows.budgets, vec![budget]);
        assert_eq!(rows.memberships, vec![membership]);
        let after = store.tenants_marker().await.unwrap();
        assert_ne!(before, after);
        // Unblocking an end user (no updated_at column) still changes the fingerprint.
        store
            .upsert_end_user(&EndUserRow {
                blocked: false,
                ..end_user
            })
            .await
            .unwrap();
        assert_ne!(store.tenants_marker().await.unwrap(), after);
        assert_eq!(store.delete_team("t1").await.unwrap(), 1);
        assert!(store.load_tenants().await.unwrap().memberships.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
