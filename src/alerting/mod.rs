//! Alerting webhooks, as LiteLLM's `general_settings.alerting`: `slack` posts
//! `{"text": …}` to `SLACK_WEBHOOK_URL`, `webhook` posts LiteLLM's `WebhookEvent` JSON to
//! `WEBHOOK_URL`. Alert types are LiteLLM's (`alert_types`; all by default): `llm_exceptions`
//! and `llm_too_slow` (over `alerting_threshold`) from the [`AlertSettle`] stage,
//! `cooldown_deployment` (cooled down / recovered) from the exchange, `outage_alerts` when a
//! whole group is unavailable, and `budget_alerts` / `soft_budget_crossed` for the budget
//! ledger to raise through [`notify`].
//!
//! Nothing is sent on the request path: [`notify`] is a `try_send` into a bounded queue
//! ([`QUEUE_CAPACITY`]; a full queue drops and counts). The [`AlertSender`] background service
//! drains it, drops alerts of types not configured, sends one message per deduplication key
//! per [`DEDUP_WINDOW`] (a storm of cooldowns is one message), and hands each alert to every
//! destination's own sender: a task per destination with its own bounded queue
//! ([`DESTINATION_QUEUE`]), so a destination that hangs delays only its own alerts. A sender
//! retries a failed delivery at most [`MAX_DELIVERY_ATTEMPTS`] times, each bounded by
//! [`DELIVERY_TIMEOUT`], and every outcome is counted (`/metrics`:
//! `switchboard_alerts_total{alert_type, outcome}`; `dropped` when a destination's queue is
//! full).

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

/// LiteLLM's alert severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Worker {
    /// Starts the task; it ends once the `Worker` is dropped and its queue is drained.
    fn spawn(client: Arc<UpstreamClient>, d: Destination) -> Worker {
        let (tx, mut rx) = mpsc::channel::<Arc<Alert>>(DESTINATION_QUEUE);
        let (url, slack) = (d.url.clone(), d.slack);
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let ok = deliver(&client, &d, &alert).await;
                count(alert.alert_type, if ok { "sent" } else { "failed" });
            }
        });
        Worker { url, slack, tx }
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

/// The background service that sends queued alerts (see the module doc).
pub struct AlertSender<F> {
    pub snapshot: F,
    pub client: Arc<UpstreamClient>,
}

#[async_trait]
impl<F> BackgroundService for AlertSender<F>
where
    F: Fn() -> Arc<Snapshot> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = queue().rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut last_sent: HashMap<String, Instant> = HashMap::new();
        let mut generation = u64::MAX;
        let mut senders: Vec<Worker> = Vec::new();
        let mut settings = HealthAlertSettings::default();
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
            }
            drop(snapshot);
            let alert = tokio::select! {
                _ = shutdown.changed() => {
                    ENABLED.store(false, Ordering::Relaxed);
                    return;
                }
                // Wakes now and then to see a reload's settings.
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                a = rx.recv() => match a {
                    Some(a) => a,
                    None => return,
                },
            };
            if let Some(types) = &settings.alert_types {
                if !types.iter().any(|t| t == alert.alert_type) {
                    count(alert.alert_type, "filtered");
                    continue;
                }
            }
            let now = Instant::now();
            if last_sent
                .get(&alert.dedup_key)
                .is_some_and(|t| now.duration_since(*t) < DEDUP_WINDOW)
            {
                count(alert.alert_type, "deduplicated");
                continue;
            }
            if last_sent.len() >= MAX_DEDUP_KEYS {
                last_sent.retain(|_, t| now.duration_since(*t) < DEDUP_WINDOW);
                if last_sent.len() >= MAX_DEDUP_KEYS {
                    last_sent.clear();
                }
            }
            last_sent.insert(alert.dedup_key.clone(), now);
            let alert = Arc::new(alert);
            for w in &senders {
                w.offer(&alert);
            }
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
