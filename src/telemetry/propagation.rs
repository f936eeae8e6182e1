//! W3C Trace Context: reading the client's `traceparent` and writing the one sent upstream.
//! <https://www.w3.org/TR/trace-context/#traceparent-header>: `00-{32 hex}-{16 hex}-{2 hex}`.

/// A parsed `traceparent`: trace id, parent span id, sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// Parses a `traceparent` value. Rejects all-zero ids, version `ff` and malformed values (the
/// trace then starts fresh, as the spec says). A future version's longer value is read by its
/// version-00 prefix.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() < TRACEPARENT_LEN
        || (value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-')
    {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != TRACEPARENT_LEN) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Writes a version-00 `traceparent` on the stack.
pub fn format(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; TRACEPARENT_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    for (i, b) in trace_id.iter().enumerate() {
        out[3 + 2 * i] = HEX[(b >> 4) as usize];
        out[4 + 2 * i] = HEX[(b & 0xf) as usize];
    }
    for (i, b) in span_id.iter().enumerate() {
        out[36 + 2 * i] = HEX[(b >> 4) as usize];
        out[37 + 2 * i] = HEX[(b & 0xf) as usize];
    }
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

/// Lowercase hex only, as the spec requires.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(d(two[0])? << 4 | d(two[1])?)
}

/// A random non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = crate::router::rng::next_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A random non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&crate::router::rng::next_u64().to_be_bytes());
    id[8..].copy_from_slice(&new_span_id());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse(v).unwrap();
        assert!(p.sampled);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(&format(&p.trace_id, &p.span_id, true), v);
        assert!(
            !parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01".as_bytes(),
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // A later version with more fields is read by its prefix.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        assert_ne!(new_trace_id(), new_trace_id());
    }
}
