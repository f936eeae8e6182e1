//! LiteLLM's `daily_reports` alert: every `alerting_args.daily_report_frequency` (default
//! 12 h), checked every `report_check_interval` (default 5 min), the top 5 deployments by
//! failed requests and the top 5 by latency per output token over the period, in LiteLLM's
//! message (`send_daily_reports`). Nothing is counted for it on the request path: the figures
//! are the differences, since the last report, of the `/metrics` series the gateway already
//! keeps (`litellm_deployment_failure_responses_total`,
//! `litellm_deployment_latency_per_output_token`), read by the alert sender's background loop.
//! As in LiteLLM, the first check only starts the period, and a period with no failures and no
//! latency sends nothing. Each instance reports its own traffic (its own metrics) on its own
//! schedule: instances sharing Redis each send theirs.

use super::{Alert, Level};
use crate::metrics::Metrics;
use prometheus::core::Collector;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many deployments each list shows (LiteLLM's top 5).
const TOP: usize = 5;

/// One deployment's running totals, as the metrics hold them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentTotals {
    /// `litellm_params.model` (LiteLLM's "Deployment").
    pub model: String,
    pub api_base: String,
    pub failed: f64,
    /// Sum and count of the latency-per-output-token observations.
    pub latency_sum: f64,
    pub latency_count: u64,
}

/// Totals by deployment id, from the metrics registry's series.
pub fn totals(metrics: &Metrics) -> HashMap<String, DeploymentTotals> {
    let mut out: HashMap<String, DeploymentTotals> = HashMap::new();
    for family in metrics.deployment_failure.collect() {
        for m in family.get_metric() {
            if let Some(t) = entry(&mut out, m) {
                t.failed += m.get_counter().get_value();
            }
        }
    }
    for family in metrics.latency_per_output_token.collect() {
        for m in family.get_metric() {
            if let Some(t) = entry(&mut out, m) {
                let h = m.get_histogram();
                t.latency_sum += h.get_sample_sum();
                t.latency_count += h.get_sample_count();
            }
        }
    }
    out
}

fn label<'m>(m: &'m prometheus::proto::Metric, name: &str) -> &'m str {
    m.get_label()
        .iter()
        .find(|l| l.get_name() == name)
        .map(|l| l.get_value())
        .unwrap_or_default()
}

/// The deployment's totals a series adds to (by its `model_id`; none without one).
fn entry<'o>(
    out: &'o mut HashMap<String, DeploymentTotals>,
    m: &prometheus::proto::Metric,
) -> Option<&'o mut DeploymentTotals> {
    let id = label(m, "model_id");
    if id.is_empty() {
        return None;
    }
    let t = out.entry(id.to_string()).or_default();
    if t.model.is_empty() {
        t.model = label(m, "litellm_model_name").to_string();
        t.api_base = label(m, "api_base").to_string();
    }
    Some(t)
}

/// The schedule and the totals at the start of the current period.
pub struct DailyReport {
    frequency: Duration,
    check_interval: Duration,
    last_check: Option<Instant>,
    period_start: Option<Instant>,
    baseline: HashMap<String, DeploymentTotals>,
}

impl DailyReport {
    pub fn new(frequency: Duration, check_interval: Duration) -> DailyReport {
        DailyReport {
            frequency,
            check_interval,
            last_check: None,
            period_start: None,
            baseline: HashMap::new(),
        }
    }

    /// Adopts reloaded settings, keeping the period under way.
    pub fn configure(&mut self, frequency: Duration, check_interval: Duration) {
        self.frequency = frequency;
        self.check_interval = check_interval;
    }

    /// Checks the schedule (at most once per check interval); `totals` is called only at a
    /// period's start or end. Returns the report when one is due and has something to say.
    pub fn poll(
        &mut self,
        now: Instant,
        totals: impl FnOnce() -> HashMap<String, DeploymentTotals>,
    ) -> Option<Alert> {
        if self
            .last_check
            .is_some_and(|t| now.duration_since(t) < self.check_interval)
        {
            return None;
        }
        self.last_check = Some(now);
        let Some(start) = self.period_start else {
            self.period_start = Some(now);
            self.baseline = totals();
            return None;
        };
        if now.duration_since(start) < self.frequency {
            return None;
        }
        let current = totals();
        let report = report(&self.baseline, &current, self.frequency);
        self.period_start = Some(now);
        self.baseline = current;
        report
    }
}

/// A row of one list: deployment, its figure, api base, id.
struct Row<'a> {
    id: &'a str,
    totals: &'a DeploymentTotals,
    value: f64,
}

fn top<'a>(mut rows: Vec<Row<'a>>) -> Vec<Row<'a>> {
    rows.retain(|r| r.value > 0.0);
    rows.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.id.cmp(b.id)));
    rows.truncate(TOP);
    rows
}

/// The period's report (LiteLLM's message), or `None` when nothing failed and nothing was
/// timed.
fn report(
    before: &HashMap<String, DeploymentTotals>,
    now: &HashMap<String, DeploymentTotals>,
    frequency: Duration,
) -> Option<Alert> {
    let zero = DeploymentTotals::default();
    let mut failed = Vec::new();
    let mut slow = Vec::new();
    for (id, t) in now {
        let b = before.get(id).unwrap_or(&zero);
        failed.push(Row {
            id,
            totals: t,
            value: t.failed - b.failed,
        });
        let count = t.latency_count.saturating_sub(b.latency_count);
        if count > 0 {
            slow.push(Row {
                id,
                totals: t,
                value: (t.latency_sum - b.latency_sum) / count as f64,
            });
        }
    }
    let (failed, slow) = (top(failed), top(slow));
    if failed.is_empty() && slow.is_empty() {
        return None;
    }
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut message = format!("\n\nTime: `{unix}`s\nHere are today's key metrics 📈: \n\n");
    message.push_str("\n\n*❗️ Top Deployments with Most Failed Requests:*\n\n");
    if failed.is_empty() {
        message.push_str("\tNone\n");
    }
    for (i, r) in failed.iter().enumerate() {
        message.push_str(&format!(
            "\t{}. Deployment: `{}`, Failed Requests: `{}`,  API Base: `{}`\n",
            i + 1,
            r.totals.model,
            r.value.round() as u64,
            r.totals.api_base
        ));
    }
    message.push_str("\n\n*😅 Top Slowest Deployments:*\n\n");
    if slow.is_empty() {
        message.push_str("\tNone\n");
    }
    for (i, r) in slow.iter().enumerate() {
        message.push_str(&format!(
            "\t{}. Deployment: `{}`, Latency per output token: `{:.3}s/token`,  API Base: `{}`\n\n",
            i + 1,
            r.totals.model,
            r.value,
            r.totals.api_base
        ));
    }
    message.push_str(&format!(
        "\n\nNext Run is at: `{}`s",
        unix + frequency.as_secs_f64()
    ));
    let mut alert = Alert::new(
        "daily_reports",
        Level::Low,
        format!("daily_reports:{unix}"),
        message,
    );
    let rows = |rows: &[Row], field: &str| {
        rows.iter()
            .map(|r| {
                json!({"model_id": r.id, "model": r.totals.model, "api_base": r.totals.api_base, field: r.value})
            })
            .collect::<Vec<_>>()
    };
    alert.fields.insert(
        "top_failed_deployments".into(),
        rows(&failed, "failed_requests").into(),
    );
    alert.fields.insert(
        "top_slowest_deployments".into(),
        rows(&slow, "latency_per_output_token").into(),
    );
    Some(alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(model: &str, failed: f64, sum: f64, count: u64) -> DeploymentTotals {
        DeploymentTotals {
            model: model.into(),
            api_base: format!("https://{model}"),
            failed,
            latency_sum: sum,
            latency_count: count,
        }
    }

    #[test]
    fn first_check_starts_the_period_and_reports_are_differences() {
        let mut r = DailyReport::new(Duration::from_secs(10), Duration::from_secs(1));
        let t0 = Instant::now();
        let base: HashMap<String, DeploymentTotals> =
            [("a".to_string(), t("m-a", 3.0, 1.0, 10))].into();
        assert!(r.poll(t0, || base.clone()).is_none());
        // Within the check interval, and within the period: nothing, totals not read.
        assert!(r
            .poll(t0 + Duration::from_millis(500), || unreachable!())
            .is_none());
        assert!(r
            .poll(t0 + Duration::from_secs(5), || unreachable!())
            .is_none());
        let now: HashMap<String, DeploymentTotals> = [
            ("a".to_string(), t("m-a", 5.0, 1.0, 10)),
            ("b".to_string(), t("m-b", 0.0, 2.0, 4)),
        ]
        .into();
        let alert = r
            .poll(t0 + Duration::from_secs(11), || now.clone())
            .unwrap();
        assert_eq!(alert.alert_type, "daily_reports");
        assert!(
            alert
                .message
                .contains("1. Deployment: `m-a`, Failed Requests: `2`"),
            "{}",
            alert.message
        );
        assert!(
            alert
                .message
                .contains("1. Deployment: `m-b`, Latency per output token: `0.500s/token`"),
            "{}",
            alert.message
        );
        // The next period, with no new traffic: nothing to send.
        assert!(r
            .poll(t0 + Duration::from_secs(22), || now.clone())
            .is_none());
    }
}
