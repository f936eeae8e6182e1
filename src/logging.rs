//! Logs. One JSON line per request on stdout (for journald and log shippers), written by a
//! dedicated thread so workers never block on the pipe; diagnostics from Switchboard and Pingora
//! through the `log` facade on stderr, as JSON or plain text.

use crate::context::Context;
use pingora_http::RequestHeader;
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
    let mut out = Vec::with_capacity(24);
    write_timestamp(&mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes [`timestamp`]'s text into `out` (the access log writes it in place, no `String`).
fn write_timestamp(out: &mut Vec<u8>) {
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
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    );
}

/// Emits the access-log line for a finished request.
pub fn access(req: &RequestHeader, ctx: &Context) {
    let Some(tx) = ACCESS.get() else { return };
    // Written field by field into one buffer: no intermediate JSON tree per request.
    let mut line = JsonLine::with_capacity(320 + ctx.error.as_ref().map_or(0, |e| e.len()));
    line.key("ts");
    line.0.push(b'"');
    write_timestamp(&mut line.0);
    line.0.push(b'"');
    line.str("request_id", ctx.request_id.as_str());
    line.str("method", req.method.as_str());
    line.str("path", req.uri.path());
    line.str("route", ctx.route);
    if let Some(ip) = ctx.client_addr {
        line.quoted("client_addr", ip);
    }
    line.num("status", ctx.status);
    line.millis("latency_ms", ctx.start.elapsed());
    line.bool("stream", ctx.stream);
    if let Some(m) = &ctx.model {
        line.str("model", m);
    }
    if let Some(d) = &ctx.deployment {
        line.str("model_group", &d.config.model_name);
        line.str("deployment", d.id());
        line.str("provider", d.provider_name());
        line.num("attempts", ctx.attempts);
        if let Some(f) = &ctx.fallback {
            line.str("fallback", f);
        }
        line.millis("upstream_ms", ctx.upstream_time);
    }
    if let Some(t) = ctx.ttft {
        line.millis("ttft_ms", t);
    }
    if let Some(u) = &ctx.usage {
        line.num("prompt_tokens", u.prompt_tokens);
        line.num("completion_tokens", u.completion_tokens);
        line.num("total_tokens", u.total_tokens);
        if ctx.usage_estimated {
            line.bool("usage_estimated", true);
        }
    }
    if let Some(cost) = ctx.cost {
        line.num("cost", crate::cost::JsonNumber(cost));
    }
    if ctx.client_disconnected {
        line.bool("client_disconnected", true);
    }
    if let Some(e) = &ctx.error {
        line.str("error", e);
    }
    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line.finish())) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A one-line JSON object built in place.
struct JsonLine(Vec<u8>);

impl JsonLine {
    fn with_capacity(n: usize) -> Self {
        let mut v = Vec::with_capacity(n);
        v.push(b'{');
        JsonLine(v)
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.0, value);
    }

    /// A value whose text needs no JSON escaping (an IP address), as a string, without an
    /// intermediate `String`.
    fn quoted(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.0, "\"{value}\"");
    }

    fn num(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.0, "{value}");
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A duration in milliseconds, to the microsecond.
    fn millis(&mut self, key: &str, d: std::time::Duration) {
        self.key(key);
        let _ = write!(self.0, "{:.3}", d.as_secs_f64() * 1000.0);
    }

    fn finish(mut self) -> String {
        self.0.extend_from_slice(b"}\n");
        // Only valid UTF-8 was written (serde_json escapes strings; numbers are ASCII).
        String::from_utf8(self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_line_is_valid_json() {
        let mut l = super::JsonLine::with_capacity(8);
        l.str("a", "quote \" and \n newline");
        l.num("n", 42u16);
        l.bool("b", true);
        l.millis("ms", std::time::Duration::from_micros(1500));
        let line = l.finish();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], "quote \" and \n newline");
        assert_eq!(v["n"], 42);
        assert_eq!(v["b"], true);
        assert_eq!(v["ms"], 1.5);
    }

    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
