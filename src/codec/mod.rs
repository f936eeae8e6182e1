//! Incremental decoders for upstream stream framings. Each keeps only the bytes of the event it
//! is in the middle of, so a stream is never buffered whole, and each yields the same events
//! however the byte stream is split. No event may exceed [`limits::max_stream_event_bytes`].

pub mod eventstream;
pub mod limits;
pub mod ndjson;
pub mod sse;
