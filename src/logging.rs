//! Logs. One JSON line per request on stdout (for journald and log shippers), written by a
//! dedicated thread so workers never block on the pipe; diagnostics from Switchboard and Pingora
//! through the `log` facade on stderr, as JSON or plain text.

use crate::gateway::RequestLog;
use pingora_proxy::Session;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

static ACCESS: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(String),
    /// Answered once every line sent before it is written.
    Flush(SyncSender<()>),
}
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Longest an access-log line waits for the writer after a flush (the channel holds 65 536).
const ACCESS_BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Access-log lines dropped because stdout could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Waits (up to `timeout`) until every access-log line logged so far is written to stdout.
pub fn flush(timeout: std::time::Duration) {
    let Some(tx) = ACCESS.get() else { return };
    let (ack_tx, ack_rx) = sync_channel(1);
    if tx.send(Msg::Flush(ack_tx)).is_ok() {
        let _ = ack_rx.recv_timeout(timeout);
    }
}

/// Starts the access-log writer and installs the diagnostic logger. Idempotent.
pub fn init(json: bool, level: log::LevelFilter) {
    ACCESS.get_or_init(|| {
        let (tx, rx) = sync_channel::<Msg>(65_536);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let mut acks = Vec::new();
                while let Ok(msg) = rx.recv() {
                    let mut next = Some(msg);
                    while let Some(m) = next {
                        match m {
                            Msg::Line(line) => {
                                let _ = out.write_all(line.as_bytes());
                            }
                            Msg::Flush(ack) => acks.push(ack),
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                    // Under load, let lines gather instead of being woken for each one (a futex
                    // wake on the worker plus a context switch per request: ~20% of the gateway's
                    // CPU per request in benches/load.rs). Idle, the next line is written at once.
                    std::thread::sleep(ACCESS_BATCH_PAUSE);
                }
            })
            .expect("spawn access-log thread");
        tx
    });
    let _ = log::set_boxed_logger(Box::new(StderrLogger { json, level }));
    log::set_max_level(level);
}

struct StderrLogger {
    json: bool,
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = if self.json {
            let mut s = serde_json::json!({
                "ts": timestamp(),
                "level": r.level().as_str(),
                "target": r.target(),
                "msg": r.args().to_string(),
            })
            .to_string();
            s.push('\n');
            s
        } else {
            format!(
                "{} {:5} {}: {}\n",
                timestamp(),
                r.level(),
                r.target(),
                r.args()
            )
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Emits the access-log line for a finished request.
pub fn access(session: &Session, ctx: &RequestLog) {
    let Some(tx) = ACCESS.get() else { return };
    let req = session.req_header();
    let latency_ms = ctx.start.elapsed().as_secs_f64() * 1000.0;
    let mut line = serde_json::json!({
        "ts": timestamp(),
        "request_id": ctx.request_id,
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "route": ctx.route,
        "status": ctx.status,
        "latency_ms": (latency_ms * 1000.0).round() / 1000.0,
        "stream": ctx.stream,
    });
    let obj = line.as_object_mut().expect("object");
    if let Some(m) = &ctx.model {
        obj.insert("model".into(), m.as_str().into());
    }
    if let Some(d) = &ctx.deployment {
        obj.insert("model_group".into(), d.config.model_name.as_str().into());
        obj.insert("deployment".into(), d.id().into());
        obj.insert("provider".into(), d.provider_name().into());
        obj.insert("attempts".into(), ctx.attempts.into());
        if let Some(f) = &ctx.fallback {
            obj.insert("fallback".into(), f.as_str().into());
        }
        obj.insert(
            "upstream_ms".into(),
            ((ctx.upstream_time.as_secs_f64() * 1e6).round() / 1000.0).into(),
        );
    }
    if let Some(t) = ctx.ttft {
        obj.insert(
            "ttft_ms".into(),
            ((t.as_secs_f64() * 1e6).round() / 1000.0).into(),
        );
    }
    if let Some(u) = &ctx.usage {
        obj.insert("prompt_tokens".into(), u.prompt_tokens.into());
        obj.insert("completion_tokens".into(), u.completion_tokens.into());
        obj.insert("total_tokens".into(), u.total_tokens.into());
    }
    if ctx.client_disconnected {
        obj.insert("client_disconnected".into(), true.into());
    }
    if let Some(e) = &ctx.error {
        obj.insert("error".into(), e.as_str().into());
    }
    let mut s = line.to_string();
    s.push('\n');
    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(s)) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
