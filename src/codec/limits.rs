//! The bound on how much of one upstream stream event the gateway holds in memory, and counts of
//! the streams cut for exceeding it. An upstream controls event sizes (an NDJSON line that never
//! ends, SSE `data:` lines with no blank line, a huge declared eventstream frame), so every
//! decoder checks this bound before it buffers a byte more.
//!
//! The bound is process-wide (`switchboard.max_stream_event_bytes`, set at start and on each
//! reload) so that decoders can be built anywhere without threading a setting through every
//! provider; decoders built with an explicit bound (tests) ignore it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Default bound on one upstream stream event: 16 MiB, AWS's own event-stream message cap and far
/// above any real event (a chunk of text, a tool-call fragment).
pub const DEFAULT_MAX_STREAM_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Smallest and largest values `switchboard.max_stream_event_bytes` accepts.
pub const MAX_STREAM_EVENT_BYTES_RANGE: (usize, usize) = (1024, 1024 * 1024 * 1024);

/// Most tool calls one streamed response may start. Translators that remember each call (to
/// match later fragments to it) refuse more, so an upstream cannot grow that list, or the time
/// spent searching it, without end.
pub const MAX_STREAM_TOOL_CALLS: usize = 1024;

static MAX_STREAM_EVENT_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_STREAM_EVENT_BYTES);

/// The bound in force for decoders built from now on.
pub fn max_stream_event_bytes() -> usize {
    MAX_STREAM_EVENT_BYTES.load(Ordering::Relaxed)
}

/// Sets the bound for decoders built from now on (streams already running keep theirs).
pub fn set_max_stream_event_bytes(bytes: usize) {
    MAX_STREAM_EVENT_BYTES.store(bytes, Ordering::Relaxed);
}

/// Where an oversized event was caught: the `framing` label of
/// `switchboard_stream_event_too_large_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
    EventStream,
}

impl Framing {
    pub const ALL: [Framing; 3] = [Framing::Sse, Framing::Ndjson, Framing::EventStream];

    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Sse => "sse",
            Framing::Ndjson => "ndjson",
            Framing::EventStream => "eventstream",
        }
    }
}

static TOO_LARGE: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one stream cut because an event exceeded the bound.
pub fn record_too_large(framing: Framing) {
    TOO_LARGE[framing as usize].fetch_add(1, Ordering::Relaxed);
}

/// Streams cut so far for an oversized event in `framing` (monotonic, for `/metrics`).
pub fn too_large_count(framing: Framing) -> u64 {
    TOO_LARGE[framing as usize].load(Ordering::Relaxed)
}

/// The message every decoder gives for an oversized event: what happened and what to change.
pub fn too_large_message(what: &str, limit: usize) -> String {
    format!(
        "{what} exceeded {} (switchboard.max_stream_event_bytes); the stream was cut",
        human_bytes(limit)
    )
}

fn human_bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}
