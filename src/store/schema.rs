//! The tables Switchboard uses, with LiteLLM's names and column types (its `schema.prisma`, as
//! Prisma creates them on Postgres; SQLite equivalents with JSON as TEXT). Missing tables are
//! created and missing columns added; LiteLLM's existing columns are never dropped or altered.

/// One column: name, Postgres type (as Prisma makes it), SQLite type.
pub struct Column {
    pub name: &'static str,
    pub pg: &'static str,
    pub sqlite: &'static str,
}

pub struct Table {
    pub name: &'static str,
    /// The primary key's columns.
    pub key: &'static [&'static str],
    pub columns: &'static [Column],
}

const fn col(name: &'static str, pg: &'static str, sqlite: &'static str) -> Column {
    Column { name, pg, sqlite }
}

const TEXT: &str = "TEXT";
const TEXT_NN: &str = "TEXT NOT NULL";
const FLOAT: &str = "DOUBLE PRECISION";
const SPEND_PG: &str = "DOUBLE PRECISION NOT NULL DEFAULT 0.0";
const SPEND_SQ: &str = "REAL NOT NULL DEFAULT 0.0";
const TS: &str = "TIMESTAMP(3)";
const TS_NOW: &str = "TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP";
const TS_NOW_NN: &str = "TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP";
const ARR: &str = "TEXT[]";
const ARR_EMPTY: &str = "TEXT[] DEFAULT ARRAY[]::TEXT[]";
const JSON_OBJ_PG: &str = "JSONB NOT NULL DEFAULT '{}'";
const JSON_OBJ_SQ: &str = "TEXT NOT NULL DEFAULT '{}'";
const JSON_OPT_PG: &str = "JSONB DEFAULT '{}'";
const JSON_OPT_SQ: &str = "TEXT DEFAULT '{}'";

pub const VERIFICATION_TOKEN: Table = Table {
    name: "LiteLLM_VerificationToken",
    key: &["token"],
    columns: &[
        col("token", TEXT_NN, TEXT_NN),
        col("key_name", TEXT, TEXT),
        col("key_alias", TEXT, TEXT),
        col(
            "soft_budget_cooldown",
            "BOOLEAN NOT NULL DEFAULT false",
            "BOOLEAN NOT NULL DEFAULT 0",
        ),
        col("spend", SPEND_PG, SPEND_SQ),
        col("expires", TS, TEXT),
        col("models", ARR, TEXT),
        col("aliases", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("config", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("user_id", TEXT, TEXT),
        col("team_id", TEXT, TEXT),
        col("permissions", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("max_parallel_requests", "INTEGER", "INTEGER"),
        col("metadata", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("blocked", "BOOLEAN", "BOOLEAN"),
        col("tpm_limit", "BIGINT", "INTEGER"),
        col("rpm_limit", "BIGINT", "INTEGER"),
        col("max_budget", FLOAT, "REAL"),
        col("budget_duration", TEXT, TEXT),
        col("budget_reset_at", TS, TEXT),
        col("allowed_cache_controls", ARR_EMPTY, "TEXT DEFAULT '[]'"),
        col("allowed_routes", ARR_EMPTY, "TEXT DEFAULT '[]'"),
        col("model_spend", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("model_max_budget", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("budget_id", TEXT, TEXT),
        col("organization_id", TEXT, TEXT),
        col("created_at", TS_NOW, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col("created_by", TEXT, TEXT),
        col("updated_at", TS_NOW, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col("updated_by", TEXT, TEXT),
    ],
};

pub const TEAM: Table = Table {
    name: "LiteLLM_TeamTable",
    key: &["team_id"],
    columns: &[
        col("team_id", TEXT_NN, TEXT_NN),
        col("team_alias", TEXT, TEXT),
        col("organization_id", TEXT, TEXT),
        col("admins", ARR, TEXT),
        col("members", ARR, TEXT),
        col("members_with_roles", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("metadata", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("max_budget", FLOAT, "REAL"),
        col("soft_budget", FLOAT, "REAL"),
        col("spend", SPEND_PG, SPEND_SQ),
        col("models", ARR, TEXT),
        col("max_parallel_requests", "INTEGER", "INTEGER"),
        col("tpm_limit", "BIGINT", "INTEGER"),
        col("rpm_limit", "BIGINT", "INTEGER"),
        col("budget_duration", TEXT, TEXT),
        col("budget_reset_at", TS, TEXT),
        col(
            "blocked",
            "BOOLEAN NOT NULL DEFAULT false",
            "BOOLEAN NOT NULL DEFAULT 0",
        ),
        col("created_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col("updated_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col("model_spend", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("model_max_budget", JSON_OBJ_PG, JSON_OBJ_SQ),
        // The team's row in `LiteLLM_ModelTable` (its model aliases).
        col("model_id", "INTEGER", "INTEGER"),
    ],
};

/// A team's model aliases (`model_aliases` in Prisma, the `aliases` column), linked from
/// `LiteLLM_TeamTable.model_id`.
pub const MODEL: Table = Table {
    name: "LiteLLM_ModelTable",
    key: &["id"],
    columns: &[
        col("id", "SERIAL NOT NULL", "INTEGER NOT NULL"),
        col("aliases", "JSONB", "TEXT"),
        col("created_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col(
            "created_by",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
        col("updated_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col(
            "updated_by",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
    ],
};

pub const USER: Table = Table {
    name: "LiteLLM_UserTable",
    key: &["user_id"],
    columns: &[
        col("user_id", TEXT_NN, TEXT_NN),
        col("user_alias", TEXT, TEXT),
        col("team_id", TEXT, TEXT),
        col("organization_id", TEXT, TEXT),
        col("teams", ARR_EMPTY, "TEXT DEFAULT '[]'"),
        col("user_role", TEXT, TEXT),
        col("max_budget", FLOAT, "REAL"),
        col("spend", SPEND_PG, SPEND_SQ),
        col("user_email", TEXT, TEXT),
        col("models", ARR, TEXT),
        col("metadata", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("max_parallel_requests", "INTEGER", "INTEGER"),
        col("tpm_limit", "BIGINT", "INTEGER"),
        col("rpm_limit", "BIGINT", "INTEGER"),
        col("budget_duration", TEXT, TEXT),
        col("budget_reset_at", TS, TEXT),
        col("model_spend", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("model_max_budget", JSON_OBJ_PG, JSON_OBJ_SQ),
        col("created_at", TS_NOW, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col("updated_at", TS_NOW, "TEXT DEFAULT CURRENT_TIMESTAMP"),
    ],
};

pub const END_USER: Table = Table {
    name: "LiteLLM_EndUserTable",
    key: &["user_id"],
    columns: &[
        col("user_id", TEXT_NN, TEXT_NN),
        col("alias", TEXT, TEXT),
        col("spend", SPEND_PG, SPEND_SQ),
        col("allowed_model_region", TEXT, TEXT),
        col("default_model", TEXT, TEXT),
        col("budget_id", TEXT, TEXT),
        col(
            "blocked",
            "BOOLEAN NOT NULL DEFAULT false",
            "BOOLEAN NOT NULL DEFAULT 0",
        ),
    ],
};

pub const BUDGET: Table = Table {
    name: "LiteLLM_BudgetTable",
    key: &["budget_id"],
    columns: &[
        col("budget_id", TEXT_NN, TEXT_NN),
        col("max_budget", FLOAT, "REAL"),
        col("soft_budget", FLOAT, "REAL"),
        col("max_parallel_requests", "INTEGER", "INTEGER"),
        col("tpm_limit", "BIGINT", "INTEGER"),
        col("rpm_limit", "BIGINT", "INTEGER"),
        col("model_max_budget", "JSONB", TEXT),
        col("budget_duration", TEXT, TEXT),
        col("budget_reset_at", TS, TEXT),
        col("created_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col(
            "created_by",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
        col("updated_at", TS_NOW_NN, "TEXT DEFAULT CURRENT_TIMESTAMP"),
        col(
            "updated_by",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
    ],
};

pub const TEAM_MEMBERSHIP: Table = Table {
    name: "LiteLLM_TeamMembership",
    key: &["user_id", "team_id"],
    columns: &[
        col("user_id", TEXT_NN, TEXT_NN),
        col("team_id", TEXT_NN, TEXT_NN),
        col("spend", SPEND_PG, SPEND_SQ),
        col("budget_id", TEXT, TEXT),
    ],
};

pub const SPEND_LOGS: Table = Table {
    name: "LiteLLM_SpendLogs",
    key: &["request_id"],
    columns: &[
        col("request_id", TEXT_NN, TEXT_NN),
        col("call_type", TEXT_NN, TEXT_NN),
        col(
            "api_key",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
        col("spend", SPEND_PG, SPEND_SQ),
        col(
            "total_tokens",
            "INTEGER NOT NULL DEFAULT 0",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        col(
            "prompt_tokens",
            "INTEGER NOT NULL DEFAULT 0",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        col(
            "completion_tokens",
            "INTEGER NOT NULL DEFAULT 0",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        col("startTime", "TIMESTAMP(3) NOT NULL", TEXT_NN),
        col("endTime", "TIMESTAMP(3) NOT NULL", TEXT_NN),
        col("request_duration_ms", "INTEGER", "INTEGER"),
        col("completionStartTime", TS, TEXT),
        col(
            "model",
            "TEXT NOT NULL DEFAULT ''",
            "TEXT NOT NULL DEFAULT ''",
        ),
        col("model_id", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("model_group", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("custom_llm_provider", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("api_base", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("user", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("metadata", JSON_OPT_PG, JSON_OPT_SQ),
        col("cache_hit", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("cache_key", "TEXT DEFAULT ''", "TEXT DEFAULT ''"),
        col("request_tags", "JSONB DEFAULT '[]'", "TEXT DEFAULT '[]'"),
        col("team_id", TEXT, TEXT),
        col("organization_id", TEXT, TEXT),
        col("end_user", TEXT, TEXT),
        col("requester_ip_address", TEXT, TEXT),
        col("messages", JSON_OPT_PG, JSON_OPT_SQ),
        col("response", JSON_OPT_PG, JSON_OPT_SQ),
        col("session_id", TEXT, TEXT),
        col("status", TEXT, TEXT),
    ],
};

pub const TABLES: &[&Table] = &[
    &BUDGET,
    &VERIFICATION_TOKEN,
    &MODEL,
    &TEAM,
    &USER,
    &END_USER,
    &TEAM_MEMBERSHIP,
    &SPEND_LOGS,
];

/// `CREATE TABLE IF NOT EXISTS` for `table`, with Prisma's primary-key constraint name.
pub fn create_table(table: &Table, postgres: bool) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS \"{}\" (", table.name);
    for c in table.columns {
        let ty = if postgres { c.pg } else { c.sqlite };
        sql.push_str(&format!("\"{}\" {ty}, ", c.name));
    }
    let key: Vec<String> = table.key.iter().map(|k| format!("\"{k}\"")).collect();
    sql.push_str(&format!(
        "CONSTRAINT \"{}_pkey\" PRIMARY KEY ({}))",
        table.name,
        key.join(", ")
    ));
    sql
}

/// `ALTER TABLE … ADD COLUMN` for a column an existing (older or LiteLLM-made) table lacks.
pub fn add_column(table: &Table, column: &Column, postgres: bool) -> String {
    let ty = if postgres { column.pg } else { column.sqlite };
    format!(
        "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {ty}",
        table.name, column.name
    )
}

/// The indexes Prisma makes that our queries use.
pub const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS \"LiteLLM_SpendLogs_startTime_idx\" ON \"LiteLLM_SpendLogs\"(\"startTime\")",
    "CREATE INDEX IF NOT EXISTS \"LiteLLM_VerificationToken_team_id_idx\" ON \"LiteLLM_VerificationToken\"(\"team_id\")",
];
