//! Alerting webhooks, as LiteLLM's `general_settings.alerting`: `slack` posts
//! `{"text": …}` to `SLACK_WEBHOOK_URL`, `webhook` posts LiteLLM's `WebhookEvent` JSON to
//! `WEBHOOK_URL`. Alert types are LiteLLM's (`alert_types`; all by default): `llm_exceptions`
//! and `llm_too_slow` (over `alerting_threshold`) from the [`AlertSettle`] stage,
//! `cooldown_deployment` (cooled down / recovered) from the exchange, `outage_alerts` when a
//! whole group is unavailable, `budget_alerts` / `soft_budget_crossed` for the budget
//! ledger to raise through [`notify`], and the scheduled `daily_reports` ([`daily_report`]).
//!
//! Nothing is sent on the request path: [`notify`] is a `try_send` into a bounded queue
//! ([`QUEUE_CAPACITY`]; a full queue drops and counts). The [`AlertSender`] background service
//! drains it, drops alerts of types not configured, and takes one alert per deduplication key
//! per [`DEDUP_WINDOW`] (the same failure repeated is one alert). One storm, one message: the
//! first alert of a type waits [`STORM_GATHER`] for the rest of its storm, and everything of
//! that type arriving meanwhile (N deployments cooling down at once) is folded into the same
//! message, which names each (up to [`MAX_FOLDED_NAMED`], then counts the rest); after it, the
//! type's next message goes out no sooner than [`TYPE_INTERVAL`] later, folding whatever
//! arrived in between ([`Storms`]). Budget alerts and the daily report are per entity and
//! period already, and go out one by one. Each message goes to every destination's own
//! sender: a task per destination with its own bounded queue ([`DESTINATION_QUEUE`]), so a
//! destination that hangs delays only its own alerts. A sender tries a delivery at most
//! [`MAX_DELIVERY_ATTEMPTS`] times, each bounded by [`DELIVERY_TIMEOUT`], and every outcome is
//! counted (`/metrics`: `switchboard_alerts_total{alert_type, outcome}`: `sent`, `failed`
//! after the last try, `deduplicated`, `folded` into another alert's message, `filtered`, and
//! `dropped` when a destination's queue is full). At shutdown (SIGTERM, upgrade) the alerts
//! still queued and the storms still collecting go out at once, and the drain waits up to
//! [`SHUTDOWN_FLUSH`] for their delivery ([`wait_flushed`]).

pub mod daily_report;

use crate::config::HealthAlertSettings;
use crate::context::Context;
use crate::router::Snapshot;
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient, UpstreamRequest};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Alerts waiting to be sent; past this, new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;
/// One message per deduplication key in this window.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(60);
/// Tries per delivery (the first and two retries).
pub const MAX_DELIVERY_ATTEMPTS: u32 = 3;
/// Longest a delivery attempt may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Alerts waiting for one destination; past this, that destination's new alerts are dropped
/// (and counted) while the others still get theirs.
pub const DESTINATION_QUEUE: usize = 256;
/// Deduplication keys remembered at most (bounded whatever a storm looks like).
const MAX_DEDUP_KEYS: usize = 4096;
/// How long the first alert of a type waits for the rest of its storm.
pub const STORM_GATHER: Duration = Duration::from_secs(2);
/// Least time between two messages of one alert type; what arrives in between is folded into
/// the next one.
pub const TYPE_INTERVAL: Duration = DEDUP_WINDOW;
/// Alerts a folded message names; the rest of the storm is counted.
pub const MAX_FOLDED_NAMED: usize = 20;
/// Longest text of one alert inside a folded message.
const MAX_FOLDED_TEXT: usize = 600;

/// The alert types something in Switchboard raises; configuring any other does nothing (the
/// config reader warns about it).
pub const RAISED_ALERT_TYPES: &[&str] = &[
    "llm_exceptions",
    "llm_too_slow",
    "cooldown_deployment",
    "outage_alerts",
    "budget_alerts",
    "soft_budget_crossed",
    "daily_reports",
];

/// Types whose alerts go out one by one: each already names one entity (a budget crossing)
/// or one period (the daily report), and webhook receivers read its fields.
fn never_folded(alert_type: &str) -> bool {
    matches!(
        alert_type,
        "budget_alerts" | "soft_budget_crossed" | "daily_reports"
    )
}

/// LiteLLM's alert severities, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "Low",
            Level::Medium => "Medium",
            Level::High => "High",
        }
    }
}

/// One alert. `alert_type` is LiteLLM's name (`llm_exceptions`, `cooldown_deployment`, …).
#[derive(Debug, Clone)]
pub struct Alert {
    pub alert_type: &'static str,
    pub level: Level,
    pub message: String,
    /// Alerts with the same key within [`DEDUP_WINDOW`] are sent once.
    pub dedup_key: String,
    /// Extra `WebhookEvent` fields (`spend`, `max_budget`, `token`, `event`, `event_group`, …),
    /// merged into the webhook payload.
    pub fields: serde_json::Map<String, Value>,
}

impl Alert {
    pub fn new(
        alert_type: &'static str,
        level: Level,
        dedup_key: String,
        message: String,
    ) -> Alert {
        Alert {
            alert_type,
            level,
            message,
            dedup_key,
            fields: serde_json::Map::new(),
        }
    }
}

struct Queue {
    tx: mpsc::Sender<Alert>,
    rx: Mutex<Option<mpsc::Receiver<Alert>>>,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    })
}

/// Set while the running config has alerting destinations: [`notify`] is a load and a return
/// otherwise.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Counts by (alert type, outcome).
fn counts() -> &'static Mutex<HashMap<(&'static str, &'static str), u64>> {
    static COUNTS: OnceLock<Mutex<HashMap<(&'static str, &'static str), u64>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

fn count(alert_type: &'static str, outcome: &'static str) {
    let mut c = counts().lock().unwrap_or_else(|p| p.into_inner());
    *c.entry((alert_type, outcome)).or_default() += 1;
}

/// Turns [`notify`] on as soon as a config with `alerting` is loaded (the queue holds alerts
/// until the sender runs); the sender turns it off again when no destination has a URL.
pub fn arm(config: &crate::config::Config) {
    if !config.general.health.alerting.is_empty() {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Whether alerts are being sent (alerting configured and the sender running).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Queues an alert for sending; never blocks, never fails the caller. Dropped (and counted)
/// when alerting is off or the queue is full.
pub fn notify(alert: Alert) {
    if !enabled() {
        return;
    }
    if queue().tx.try_send(alert).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends the alert counters to a `/metrics` scrape.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let c = counts().lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(
        out,
        "# HELP switchboard_alerts_total Alerts by type and outcome (sent, deduplicated, filtered, failed).\n# TYPE switchboard_alerts_total counter"
    );
    let mut rows: Vec<_> = c.iter().collect();
    rows.sort();
    for ((t, o), n) in rows {
        let _ = writeln!(
            out,
            "switchboard_alerts_total{{alert_type=\"{t}\",outcome=\"{o}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_alerts_dropped_total Alerts dropped because the alert queue was full.\n# TYPE switchboard_alerts_dropped_total counter\nswitchboard_alerts_dropped_total {}",
        DROPPED.load(Ordering::Relaxed)
    );
}

/// The `Settle` stage raising `llm_exceptions` (a failed LLM call) and `llm_too_slow` (an
/// answer slower than `alerting_threshold`). Registered only when alerting is configured.
pub struct AlertSettle {
    pub threshold: Duration,
}

impl crate::pipeline::Settle for AlertSettle {
    fn settle(&self, ctx: &Context) {
        if !enabled() || ctx.client_disconnected {
            return;
        }
        let Some(model) = ctx.model.as_deref() else {
            return;
        };
        let group = ctx
            .deployment
            .as_ref()
            .map(|d| d.config.model_name.as_str())
            .unwrap_or(model);
        let api_base = ctx.deployment.as_ref().map(|d| d.api_base()).unwrap_or("");
        if ctx.status >= 500 || ctx.status == 429 {
            let error = ctx.error.as_deref().unwrap_or("no detail");
            notify(Alert::new(
                "llm_exceptions",
                Level::High,
                format!("llm_exceptions:{group}:{}", ctx.status),
                format!(
                    "LLM API call failed: `{error}`\nModel: `{group}`\nAPI Base: `{api_base}`\nStatus: `{}`\nRequest id: `{}`",
                    ctx.status, ctx.request_id
                ),
            ));
        } else if ctx.status < 300 {
            let took = ctx.start.elapsed();
            if took > self.threshold {
                notify(Alert::new(
                    "llm_too_slow",
                    Level::Low,
                    format!("llm_too_slow:{group}"),
                    format!(
                        "Responses are slow - {:.2}s response time > Alerting threshold: {:.2}s\nModel: `{group}`\nAPI Base: `{api_base}`\nRequest id: `{}`",
                        took.as_secs_f64(),
                        self.threshold.as_secs_f64(),
                        ctx.request_id
                    ),
                ));
            }
        }
    }
}

/// A deployment entered cooldown (`cooldown_deployment`).
pub fn cooled_down(group: &str, deployment_id: &str, api_base: &str, for_: Duration, why: &str) {
    if !enabled() {
        return;
    }
    notify(Alert::new(
        "cooldown_deployment",
        Level::Low,
        format!("cooldown_deployment:{deployment_id}"),
        format!(
            "Deployment cooled down for {:.1}s: `{why}`\nModel: `{group}`\nDeployment id: `{deployment_id}`\nAPI Base: `{api_base}`",
            for_.as_secs_f64()
        ),
    ));
}

/// A cooled-down deployment answered its probe and takes requests again (sent as a
/// `cooldown_deployment` alert, as LiteLLM reports both directions under that type).
pub fn recovered(group: &str, deployment_id: &str) {
    if !enabled() {
        return;
    }
    notify(Alert::new(
        "cooldown_deployment",
        Level::Low,
        format!("recovered:{deployment_id}"),
        format!("Deployment recovered after its cooldown\nModel: `{group}`\nDeployment id: `{deployment_id}`"),
    ));
}

/// Every deployment of a group is unavailable (`outage_alerts`).
pub fn outage(group: &str, detail: &str) {
    if !enabled() {
        return;
    }
    notify(Alert::new(
        "outage_alerts",
        Level::High,
        format!("outage_alerts:{group}"),
        format!("Outage: no deployment of `{group}` can take requests: {detail}"),
    ));
}

/// A budget crossed (`budget_alerts`; `soft_budget_crossed` when `soft`), for the budget
/// ledger to call: `event_group` is LiteLLM's (`key`, `team`, `user`, `customer`), `id` the
/// entity's id (a key's hash, a team id, …). One message per entity and kind per
/// [`DEDUP_WINDOW`].
pub fn budget_crossed(event_group: &'static str, id: &str, spend: f64, budget: f64, soft: bool) {
    if enabled() {
        notify(budget_alert(event_group, id, spend, budget, soft));
    }
}

fn budget_alert(event_group: &'static str, id: &str, spend: f64, budget: f64, soft: bool) -> Alert {
    let (alert_type, event, what) = if soft {
        ("soft_budget_crossed", "soft_budget_crossed", "soft budget")
    } else {
        ("budget_alerts", "budget_crossed", "budget")
    };
    let mut a = Alert::new(
        alert_type,
        if soft { Level::Medium } else { Level::High },
        format!("{alert_type}:{event_group}:{id}"),
        format!(
            "Budget crossed: {event_group} `{id}` spent ${spend:.4} of its {what} ${budget:.4}"
        ),
    );
    a.fields.insert("spend".into(), json!(spend));
    a.fields.insert(
        if soft { "soft_budget" } else { "max_budget" }.into(),
        json!(budget),
    );
    a.fields.insert("event".into(), json!(event));
    a.fields.insert("event_group".into(), json!(event_group));
    let id_field = match event_group {
        "key" => "token",
        "team" => "team_id",
        "user" | "internal_user" => "user_id",
        _ => "customer_id",
    };
    a.fields.insert(id_field.into(), json!(id));
    a
}

/// One alert type's storm: the alerts waiting to go out as one message.
struct Storm {
    opened: Instant,
    due: Instant,
    first: Alert,
    /// The texts of the alerts after the first, at most [`MAX_FOLDED_NAMED`] - 1.
    named: Vec<String>,
    /// Alerts past those named.
    unnamed: u64,
    level: Level,
}

/// The storms open per alert type, and when each type's last message went out: one entry per
/// type at most (types are the fixed set Switchboard raises), so memory is bounded whatever
/// the storm.
#[derive(Default)]
struct Storms {
    open: HashMap<&'static str, Storm>,
    last_message: HashMap<&'static str, Instant>,
}

impl Storms {
    /// Takes an alert: opens its type's storm (due after [`STORM_GATHER`], and no sooner than
    /// [`TYPE_INTERVAL`] after the type's last message), or folds it into the open one
    /// (`true`).
    fn take(&mut self, alert: Alert, now: Instant) -> bool {
        if let Some(storm) = self.open.get_mut(alert.alert_type) {
            if storm.level < alert.level {
                storm.level = alert.level;
            }
            if storm.named.len() + 1 < MAX_FOLDED_NAMED {
                storm.named.push(clipped(&alert.message));
            } else {
                storm.unnamed += 1;
            }
            return true;
        }
        let mut due = now + STORM_GATHER;
        if let Some(last) = self.last_message.get(alert.alert_type) {
            due = due.max(*last + TYPE_INTERVAL);
        }
        self.open.insert(
            alert.alert_type,
            Storm {
                opened: now,
                due,
                level: alert.level,
                first: alert,
                named: Vec::new(),
                unnamed: 0,
            },
        );
        false
    }

    /// When the next storm is due.
    fn next_due(&self) -> Option<Instant> {
        self.open.values().map(|s| s.due).min()
    }

    /// The messages of the storms due by `now`: a lone alert as it came, a storm as one
    /// message naming its alerts.
    fn due(&mut self, now: Instant) -> Vec<Alert> {
        let due: Vec<&'static str> = self
            .open
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for alert_type in due {
            if let Some(storm) = self.open.remove(alert_type) {
                self.last_message.insert(alert_type, now);
                out.push(storm.into_message(now));
            }
        }
        out
    }
}

impl Storm {
    fn into_message(self, now: Instant) -> Alert {
        if self.named.is_empty() {
            return self.first;
        }
        let total = 1 + self.named.len() as u64 + self.unnamed;
        let alert_type = self.first.alert_type;
        let mut text = format!(
            "{total} `{alert_type}` alerts in {:.1}s (one message for the storm):",
            now.duration_since(self.opened).as_secs_f64()
        );
        let first = clipped(&self.first.message);
        for (i, m) in std::iter::once(&first).chain(&self.named).enumerate() {
            text.push_str(&format!("\n\n{}. {m}", i + 1));
        }
        if self.unnamed > 0 {
            text.push_str(&format!("\n\n… and {} more", self.unnamed));
        }
        let mut alert = Alert::new(alert_type, self.level, self.first.dedup_key, text);
        alert.fields.insert("alert_count".into(), json!(total));
        alert
    }
}

/// `text` cut to [`MAX_FOLDED_TEXT`] bytes (at a character boundary).
fn clipped(text: &str) -> String {
    if text.len() <= MAX_FOLDED_TEXT {
        return text.to_string();
    }
    let mut end = MAX_FOLDED_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Where one destination posts: the endpoint and the path (with its query).
struct Destination {
    endpoint: Arc<Endpoint>,
    path: String,
    slack: bool,
    url: String,
}

fn destination(url: &str, slack: bool) -> Option<Destination> {
    let settings = PeerSettings {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    };
    let endpoint = Endpoint::parse(url, settings).ok()?;
    let rest = url.split_once("://")?.1;
    let path = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_string(),
    };
    Some(Destination {
        endpoint: Arc::new(endpoint),
        path,
        slack,
        url: url.to_string(),
    })
}

fn destinations(s: &HealthAlertSettings) -> Vec<Destination> {
    let mut out = Vec::new();
    for name in &s.alerting {
        let (url, slack) = match name.as_str() {
            "slack" => (s.slack_webhook_url.as_deref(), true),
            "webhook" => (s.webhook_url.as_deref(), false),
            _ => continue,
        };
        match url.and_then(|u| destination(u, slack)) {
            Some(d) => out.push(d),
            None => log::warn!(
                "general_settings.alerting: {name} needs {} set to an http(s) URL; its alerts are not sent",
                if slack { "SLACK_WEBHOOK_URL" } else { "WEBHOOK_URL" }
            ),
        }
    }
    out
}

/// The Slack message, as LiteLLM formats it.
fn slack_body(a: &Alert) -> Value {
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    json!({
        "text": format!(
            "Level: `{}`\nTimestamp: `{now}`\n\nMessage: {}",
            a.level.as_str(),
            a.message
        )
    })
}

/// LiteLLM's `WebhookEvent` (its `CallInfo` fields, `event`, `event_group`, `event_message`).
fn webhook_body(a: &Alert) -> Value {
    let mut v = json!({
        "spend": 0.0,
        "max_budget": null,
        "soft_budget": null,
        "token": null,
        "customer_id": null,
        "user_id": null,
        "team_id": null,
        "team_alias": null,
        "user_email": null,
        "key_alias": null,
        "projected_exceeded_date": null,
        "projected_spend": null,
        "event": a.alert_type,
        "event_group": "proxy",
        "event_message": a.message,
        "alert_type": a.alert_type,
        "level": a.level.as_str(),
    });
    for (k, val) in &a.fields {
        v[k] = val.clone();
    }
    v
}

/// Sends one alert to one destination, retrying a failure with a short backoff.
async fn deliver(client: &UpstreamClient, d: &Destination, a: &Alert) -> bool {
    let body = if d.slack {
        slack_body(a)
    } else {
        webhook_body(a)
    };
    let req = UpstreamRequest::post_json(d.path.clone(), body.to_string().into_bytes());
    for attempt in 0..MAX_DELIVERY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        let sent = tokio::time::timeout(DELIVERY_TIMEOUT, async {
            let mut r = client.send(&d.endpoint, &req, None).await?;
            let _ = r.body(64 * 1024).await;
            Ok::<u16, crate::error::GatewayError>(r.status)
        })
        .await;
        match sent {
            Ok(Ok(status)) if (200..300).contains(&status) => return true,
            Ok(Ok(status)) => log::warn!("alert to {} answered {status}", d.url),
            Ok(Err(e)) => log::warn!("alert to {} failed: {e}", d.url),
            Err(_) => log::warn!("alert to {} timed out", d.url),
        }
    }
    false
}

/// One destination's sender: a bounded queue drained by its own task.
struct Worker {
    url: String,
    slack: bool,
    tx: mpsc::Sender<Arc<Alert>>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts the task; it ends once the `Worker` is dropped and its queue is drained.
    fn spawn(client: Arc<UpstreamClient>, d: Destination) -> Worker {
        let (tx, mut rx) = mpsc::channel::<Arc<Alert>>(DESTINATION_QUEUE);
        let (url, slack) = (d.url.clone(), d.slack);
        let task = tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let ok = deliver(&client, &d, &alert).await;
                count(alert.alert_type, if ok { "sent" } else { "failed" });
            }
        });
        Worker {
            url,
            slack,
            tx,
            task,
        }
    }

    fn offer(&self, alert: &Arc<Alert>) {
        if self.tx.try_send(alert.clone()).is_err() {
            log::warn!("alert queue for {} is full; alert dropped", self.url);
            count(alert.alert_type, "dropped");
        }
    }
}

/// The senders for `wanted`, keeping the running ones whose destination is unchanged.
fn workers(
    client: &Arc<UpstreamClient>,
    old: Vec<Worker>,
    wanted: Vec<Destination>,
) -> Vec<Worker> {
    let mut old = old;
    wanted
        .into_iter()
        .map(|d| {
            match old
                .iter()
                .position(|w| w.url == d.url && w.slack == d.slack)
            {
                Some(i) => old.swap_remove(i),
                None => Worker::spawn(client.clone(), d),
            }
        })
        .collect()
}

/// How long shutdown waits for the alerts still queued, collecting or being delivered.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// The sender service is running (it took the queue): shutdown waits for its flush.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// The sender's shutdown flush is over.
static FLUSHED: AtomicBool = AtomicBool::new(false);

/// Waits (bounded) until the sender has flushed at shutdown (see [`flush_on_shutdown`]);
/// returns at once when no sender runs. Called by the drain before the process exits.
pub async fn wait_flushed(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while RUNNING.load(Ordering::Relaxed)
        && !FLUSHED.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the sender remembers between alerts: deduplication and the open storms.
#[derive(Default)]
struct Intake {
    last_sent: HashMap<String, Instant>,
    storms: Storms,
}

impl Intake {
    /// Takes one queued alert: filtered by type, deduplicated, then sent (budget alerts, the
    /// daily report) or folded into its type's storm.
    fn take(&mut self, alert: Alert, settings: &HealthAlertSettings, senders: &[Worker]) {
        if let Some(types) = &settings.alert_types {
            if !types.iter().any(|t| t == alert.alert_type) {
                count(alert.alert_type, "filtered");
                return;
            }
        }
        let now = Instant::now();
        let last_sent = &mut self.last_sent;
        if last_sent
            .get(&alert.dedup_key)
            .is_some_and(|t| now.duration_since(*t) < DEDUP_WINDOW)
        {
            count(alert.alert_type, "deduplicated");
            return;
        }
        if last_sent.len() >= MAX_DEDUP_KEYS {
            last_sent.retain(|_, t| now.duration_since(*t) < DEDUP_WINDOW);
            if last_sent.len() >= MAX_DEDUP_KEYS {
                last_sent.clear();
            }
        }
        last_sent.insert(alert.dedup_key.clone(), now);
        if never_folded(alert.alert_type) {
            let alert = Arc::new(alert);
            for w in senders {
                w.offer(&alert);
            }
        } else {
            let alert_type = alert.alert_type;
            if self.storms.take(alert, now) {
                count(alert_type, "folded");
            }
        }
    }

    /// Offers the messages of the storms due by `now`.
    fn send_due(&mut self, now: Instant, senders: &[Worker]) {
        for message in self.storms.due(now) {
            let message = Arc::new(message);
            for w in senders {
                w.offer(&message);
            }
        }
    }
}

/// Shutdown: the alerts still queued and every storm still collecting go out now, and the
/// destinations' senders get until [`SHUTDOWN_FLUSH`] to deliver what they hold.
async fn flush_on_shutdown(
    mut intake: Intake,
    rx: &mut mpsc::Receiver<Alert>,
    settings: &HealthAlertSettings,
    senders: Vec<Worker>,
) {
    while let Ok(alert) = rx.try_recv() {
        intake.take(alert, settings, &senders);
    }
    // Every storm is due now: one far enough ahead that none is left waiting.
    intake.send_due(Instant::now() + TYPE_INTERVAL + STORM_GATHER, &senders);
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|w| {
            drop(w.tx);
            w.task
        })
        .collect();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_FLUSH, all).await.is_err() {
        log::warn!(
            "alerts still being delivered at shutdown after {SHUTDOWN_FLUSH:?} were dropped"
        );
    }
}

/// The background service that sends queued alerts and the daily report (see the module
/// doc).
pub struct AlertSender<F, T> {
    pub snapshot: F,
    pub client: Arc<UpstreamClient>,
    /// The deployments' running totals for the daily report ([`daily_report::totals`]).
    pub totals: T,
}

#[async_trait]
impl<F, T> BackgroundService for AlertSender<F, T>
where
    F: Fn() -> Arc<Snapshot> + Send + Sync + 'static,
    T: Fn() -> HashMap<String, daily_report::DeploymentTotals> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = queue().rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        RUNNING.store(true, Ordering::Relaxed);
        let mut intake = Intake::default();
        let mut generation = u64::MAX;
        let mut senders: Vec<Worker> = Vec::new();
        let mut settings = HealthAlertSettings::default();
        let mut report = daily_report::DailyReport::new(
            settings.daily_report_frequency,
            settings.report_check_interval,
        );
        loop {
            let snapshot = (self.snapshot)();
            if snapshot.generation != generation {
                generation = snapshot.generation;
                settings = snapshot.config.general.health.clone();
                senders = workers(
                    &self.client,
                    std::mem::take(&mut senders),
                    destinations(&settings),
                );
                ENABLED.store(!senders.is_empty(), Ordering::Relaxed);
                report.configure(
                    settings.daily_report_frequency,
                    settings.report_check_interval,
                );
            }
            drop(snapshot);
            let reports_wanted = settings
                .alert_types
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| t == "daily_reports"));
            if reports_wanted && !senders.is_empty() {
                if let Some(alert) = report.poll(Instant::now(), &self.totals) {
                    let alert = Arc::new(alert);
                    for w in &senders {
                        w.offer(&alert);
                    }
                }
            }
            intake.send_due(Instant::now(), &senders);
            // Wakes now and then to see a reload's settings and the report's schedule, and
            // when a storm's message is due.
            let tick = settings.report_check_interval.min(Duration::from_secs(1));
            let wake = intake
                .storms
                .next_due()
                .map_or(Instant::now() + tick, |due| due.min(Instant::now() + tick));
            let alert = tokio::select! {
                _ = shutdown.changed() => {
                    ENABLED.store(false, Ordering::Relaxed);
                    flush_on_shutdown(intake, &mut rx, &settings, senders).await;
                    FLUSHED.store(true, Ordering::Relaxed);
                    return;
                }
                _ = tokio::time::sleep_until(wake.into()) => continue,
                a = rx.recv() => match a {
                    Some(a) => a,
                    None => return,
                },
            };
            intake.take(alert, &settings, &senders);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_keep_path_and_query() {
        let d = destination("http://127.0.0.1:9/services/T/B?x=1", true).unwrap();
        assert_eq!(d.path, "/services/T/B?x=1");
        assert_eq!(
            destination("https://hooks.example", false).unwrap().path,
            "/"
        );
        assert!(destination("ftp://x", false).is_none());
    }

    fn cooldown(id: &str) -> Alert {
        Alert::new(
            "cooldown_deployment",
            Level::Low,
            format!("cooldown_deployment:{id}"),
            format!("Deployment cooled down\nDeployment id: `{id}`"),
        )
    }

    #[test]
    fn a_storm_is_one_message_naming_or_counting_each_alert() {
        let t0 = Instant::now();
        let mut storms = Storms::default();
        assert!(!storms.take(cooldown("d0"), t0));
        for i in 1..30 {
            assert!(storms.take(cooldown(&format!("d{i}")), t0));
        }
        let mut outage = Alert::new("outage_alerts", Level::High, "o".into(), "out".into());
        outage.fields.insert("x".into(), json!(1));
        assert!(!storms.take(outage, t0 + Duration::from_millis(500)));
        assert_eq!(storms.next_due(), Some(t0 + STORM_GATHER));
        assert!(storms
            .due(t0 + STORM_GATHER - Duration::from_millis(1))
            .is_empty());
        let mut sent = storms.due(t0 + STORM_GATHER);
        assert_eq!(sent.len(), 1, "the outage's storm opened later");
        let m = sent.pop().unwrap();
        assert_eq!(m.alert_type, "cooldown_deployment");
        assert_eq!(m.fields["alert_count"], 30);
        for i in 0..MAX_FOLDED_NAMED {
            assert!(m.message.contains(&format!("`d{i}`")), "{}", m.message);
        }
        assert!(!m.message.contains("`d20`"));
        assert!(m.message.contains("… and 10 more"), "{}", m.message);
        // A lone alert goes out as it came.
        let lone = storms.due(t0 + STORM_GATHER + Duration::from_millis(500));
        assert_eq!((lone.len(), lone[0].message.as_str()), (1, "out"));
        assert_eq!(lone[0].fields["x"], 1);
        assert!(storms.open.is_empty());

        // The type's next message waits out TYPE_INTERVAL, folding what comes meanwhile.
        let t1 = t0 + STORM_GATHER + Duration::from_secs(5);
        assert!(!storms.take(cooldown("late1"), t1));
        assert!(storms.take(cooldown("late2"), t1 + Duration::from_secs(20)));
        assert!(storms.due(t1 + STORM_GATHER).is_empty());
        assert_eq!(storms.next_due(), Some(t0 + STORM_GATHER + TYPE_INTERVAL));
        let m = storms.due(t0 + STORM_GATHER + TYPE_INTERVAL);
        assert!(m[0].message.contains("late1") && m[0].message.contains("late2"));
        assert_eq!(m[0].fields["alert_count"], 2);
    }

    #[test]
    fn folded_texts_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(MAX_FOLDED_TEXT);
        let c = clipped(&long);
        assert!(c.len() <= MAX_FOLDED_TEXT + "…".len());
        assert!(c.ends_with('…'));
        assert_eq!(clipped("short"), "short");
    }

    #[test]
    fn webhook_payload_is_litellms_webhook_event() {
        let a = budget_alert("team", "t-1", 12.5, 10.0, false);
        assert_eq!(a.alert_type, "budget_alerts");
        assert_eq!(
            a.dedup_key,
            budget_alert("team", "t-1", 13.0, 10.0, false).dedup_key
        );
        let v = webhook_body(&a);
        assert_eq!(v["spend"], 12.5);
        assert_eq!(v["max_budget"], 10.0);
        assert_eq!(v["team_id"], "t-1");
        assert_eq!(v["event"], "budget_crossed");
        assert_eq!(v["event_group"], "team");
        assert!(v["event_message"].as_str().unwrap().contains("t-1"));
        let soft = webhook_body(&budget_alert("key", "abc", 5.0, 4.0, true));
        assert_eq!(
            (&soft["event"], &soft["soft_budget"], &soft["token"]),
            (&json!("soft_budget_crossed"), &json!(4.0), &json!("abc"))
        );
        assert!(v.get("token").is_some() && v.get("max_budget").is_some());
        let s = slack_body(&a);
        assert!(s["text"].as_str().unwrap().contains("Level: `High`"));
    }
}
