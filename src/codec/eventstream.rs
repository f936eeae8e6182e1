//! AWS event stream (`application/vnd.amazon.eventstream`), the binary framing of Bedrock's
//! ConverseStream. A message is: total length (u32 BE), headers length (u32 BE), CRC32 of those
//! 8 bytes, headers, payload, CRC32 of everything before it. A header is a name (u8 length +
//! bytes), a type byte and a typed value. [`EventStreamDecoder`] yields messages as they
//! complete under any split of the bytes, checks both CRCs and bounds the frame size;
//! [`encode_message`] writes frames (used by tests and mock upstreams).

/// Prelude: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// Prelude plus the trailing message CRC: the smallest possible message.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

/// A typed header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(&'a [u8]),
    Str(&'a str),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    Uuid(&'a [u8; 16]),
}

/// One decoded message, borrowing its bytes from the decoder.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The header block, already validated.
    headers: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Iterates the headers in order.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { rest: self.headers }
    }

    /// A string header by name (`:event-type`, `:message-type`, `:exception-type`, …).
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.headers().find_map(|h| match h {
            Ok((n, HeaderValue::Str(v))) if n == name => Some(v),
            _ => None,
        })
    }
}

/// Iterator over a header block; yields an error for a malformed header (never for a header
/// block that came out of [`EventStreamDecoder`], which validates it first).
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, HeaderValue<'a>), EventStreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = parse_header(self.rest);
        match r {
            Ok((name, value, used)) => {
                self.rest = &self.rest[used..];
                Some(Ok((name, value)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_header(b: &[u8]) -> Result<(&str, HeaderValue<'_>, usize), EventStreamError> {
    let short = || EventStreamError("a header runs past the header block".into());
    let name_len = *b.first().ok_or_else(short)? as usize;
    let name = b.get(1..1 + name_len).ok_or_else(short)?;
    let name = std::str::from_utf8(name)
        .map_err(|_| EventStreamError("a header name is not UTF-8".into()))?;
    let mut at = 1 + name_len;
    let kind = *b.get(at).ok_or_else(short)?;
    at += 1;
    let mut take = |n: usize| -> Result<&[u8], EventStreamError> {
        let v = b.get(at..at + n).ok_or_else(short)?;
        at += n;
        Ok(v)
    };
    let value =
        match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(1)?[0] as i8),
            3 => HeaderValue::Short(i16::from_be_bytes(
                take(2)?.try_into().map_err(|_| short())?,
            )),
            4 => HeaderValue::Int(i32::from_be_bytes(
                take(4)?.try_into().map_err(|_| short())?,
            )),
            5 => HeaderValue::Long(i64::from_be_bytes(
                take(8)?.try_into().map_err(|_| short())?,
            )),
            6 | 7 => {
                let len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| short())?) as usize;
                let v = take(len)?;
                if kind == 6 {
                    HeaderValue::Bytes(v)
                } else {
                    HeaderValue::Str(std::str::from_utf8(v).map_err(|_| {
                        EventStreamError(format!("header '{name}' is not valid UTF-8"))
                    })?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(
                take(8)?.try_into().map_err(|_| short())?,
            )),
            9 => HeaderValue::Uuid(take(16)?.try_into().map_err(|_| short())?),
            other => {
                return Err(EventStreamError(format!(
                    "header '{name}' has unknown value type {other}"
                )))
            }
        };
    Ok((name, value, at))
}

/// The upstream's bytes are not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamError(pub String);

impl From<EventStreamError> for crate::error::GatewayError {
    fn from(e: EventStreamError) -> Self {
        crate::error::GatewayError::bad_gateway(format!(
            "The upstream sent a malformed event stream: {}",
            e.0
        ))
    }
}

/// Incremental decoder. Holds at most one partial message.
pub struct EventStreamDecoder {
    pending: Vec<u8>,
    max_len: usize,
}

impl Default for EventStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamDecoder {
    /// A decoder bounded by the process-wide [`super::limits::max_stream_event_bytes`].
    pub fn new() -> Self {
        Self::with_max_len(super::limits::max_stream_event_bytes())
    }

    /// A decoder that fails a message declaring more than `max_len` bytes (before reading it).
    pub fn with_max_len(max_len: usize) -> Self {
        EventStreamDecoder {
            pending: Vec::new(),
            max_len,
        }
    }

    /// Feeds bytes; calls `on_message` for every message they complete. Complete messages in
    /// `input` are decoded in place; only a trailing partial message is copied.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        on_message: &mut dyn FnMut(Message<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<EventStreamError>,
    {
        // Finish the message started by earlier input.
        while !self.pending.is_empty() {
            if self.pending.len() < PRELUDE_LEN {
                let take = (PRELUDE_LEN - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < PRELUDE_LEN {
                    return Ok(());
                }
            }
            let total = check_prelude(&self.pending[..PRELUDE_LEN], self.max_len)?;
            let take = (total - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < total {
                return Ok(());
            }
            let mut frame = std::mem::take(&mut self.pending);
            let result = match decode_message(&frame) {
                Ok(m) => on_message(m),
                Err(e) => Err(e.into()),
            };
            frame.clear();
            self.pending = frame;
            result?;
        }
        while input.len() >= PRELUDE_LEN {
            let total = check_prelude(&input[..PRELUDE_LEN], self.max_len)?;
            if input.len() < total {
                break;
            }
            on_message(decode_message(&input[..total])?)?;
            input = &input[total..];
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Bytes held for the message being read (for tests and diagnostics).
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The body ended: a partial message left over is an error.
    pub fn finish(&mut self) -> Result<(), EventStreamError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(EventStreamError(format!(
                "the stream ended inside a message ({} bytes of it received)",
                self.pending.len()
            )))
        }
    }
}

/// Validates the prelude CRC and lengths; returns the total message length.
fn check_prelude(prelude: &[u8], max_len: usize) -> Result<usize, EventStreamError> {
    let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
    let headers_len = u32::from_be_bytes([prelude[4], prelude[5], prelude[6], prelude[7]]) as usize;
    let crc = u32::from_be_bytes([prelude[8], prelude[9], prelude[10], prelude[11]]);
    if crc32fast::hash(&prelude[..8]) != crc {
        return Err(EventStreamError("prelude CRC mismatch".into()));
    }
    if total > max_len {
        super::limits::record_too_large(super::limits::Framing::EventStream);
        return Err(EventStreamError(super::limits::too_large_message(
            &format!("a message declaring {total} bytes"),
            max_len,
        )));
    }
    if total < MIN_MESSAGE_LEN {
        return Err(EventStreamError(format!(
            "message length {total} is below the minimum of {MIN_MESSAGE_LEN}"
        )));
    }
    if headers_len > total - MIN_MESSAGE_LEN {
        return Err(EventStreamError(format!(
            "headers length {headers_len} does not fit in a {total}-byte message"
        )));
    }
    Ok(total)
}

/// Decodes one whole message (prelude already checked): message CRC, then the headers.
fn decode_message(frame: &[u8]) -> Result<Message<'_>, EventStreamError> {
    let body_end = frame.len() - 4;
    let crc = u32::from_be_bytes([
        frame[body_end],
        frame[body_end + 1],
        frame[body_end + 2],
        frame[body_end + 3],
    ]);
    if crc32fast::hash(&frame[..body_end]) != crc {
        return Err(EventStreamError("message CRC mismatch".into()));
    }
    let headers_len = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    let headers = &frame[PRELUDE_LEN..PRELUDE_LEN + headers_len];
    let message = Message {
        headers,
        payload: &frame[PRELUDE_LEN + headers_len..body_end],
    };
    for h in message.headers() {
        h?;
    }
    Ok(message)
}

/// Appends one encoded message to `out`.
pub fn encode_message(headers: &[(&str, HeaderValue<'_>)], payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; PRELUDE_LEN]);
    for (name, value) in headers {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => out.push(0),
            HeaderValue::Bool(false) => out.push(1),
            HeaderValue::Byte(v) => {
                out.push(2);
                out.push(*v as u8);
            }
            HeaderValue::Short(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                out.push(4);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                out.push(5);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                out.push(6);
                out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                out.extend_from_slice(v);
            }
            HeaderValue::Str(v) => {
                out.push(7);
                out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                out.push(8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                out.push(9);
                out.extend_from_slice(&v[..]);
            }
        }
    }
    let headers_len = out.len() - start - PRELUDE_LEN;
    out.extend_from_slice(payload);
    let total = out.len() - start + 4;
    out[start..start + 4].copy_from_slice(&(total as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out[start..start + 8]);
    out[start + 8..start + 12].copy_from_slice(&prelude_crc.to_be_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes an event message the way AWS services send them (`:message-type: event`).
pub fn encode_event(event_type: &str, payload: &[u8], out: &mut Vec<u8>) {
    encode_message(
        &[
            (":event-type", HeaderValue::Str(event_type)),
            (":content-type", HeaderValue::Str("application/json")),
            (":message-type", HeaderValue::Str("event")),
        ],
        payload,
        out,
    );
}

/// Encodes an exception message (`:message-type: exception`).
pub fn encode_exception(exception_type: &str, payload: &[u8], out: &mut Vec<u8>) {
    encode_message(
        &[
            (":exception-type", HeaderValue::Str(exception_type)),
            (":content-type", HeaderValue::Str("application/json")),
            (":message-type", HeaderValue::Str("exception")),
        ],
        payload,
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded = Vec<(Vec<(String, String)>, Vec<u8>)>;

    fn decode_split(input: &[u8], splits: &[usize]) -> Result<Decoded, EventStreamError> {
        let mut d = EventStreamDecoder::new();
        let mut got = Vec::new();
        let mut cb = |m: Message<'_>| -> Result<(), EventStreamError> {
            let headers = m
                .headers()
                .map(|h| {
                    let (n, v) = h.unwrap();
                    (n.to_string(), format!("{v:?}"))
                })
                .collect();
            got.push((headers, m.payload.to_vec()));
            Ok(())
        };
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            d.feed(&input[start..s], &mut cb)?;
            start = s;
        }
        d.finish()?;
        Ok(got)
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode_event("messageStart", br#"{"role":"assistant"}"#, &mut out);
        let uuid = [7u8; 16];
        encode_message(
            &[
                ("t", HeaderValue::Bool(true)),
                ("f", HeaderValue::Bool(false)),
                ("b", HeaderValue::Byte(-3)),
                ("s", HeaderValue::Short(-300)),
                ("i", HeaderValue::Int(70_000)),
                ("l", HeaderValue::Long(-5_000_000_000)),
                ("bytes", HeaderValue::Bytes(&[0, 1, 2])),
                ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
                ("id", HeaderValue::Uuid(&uuid)),
                (":event-type", HeaderValue::Str("contentBlockDelta")),
            ],
            "{\"delta\":{\"text\":\"héllo\"}}".as_bytes(),
            &mut out,
        );
        encode_message(&[], b"", &mut out);
        encode_exception(
            "throttlingException",
            br#"{"message":"slow down"}"#,
            &mut out,
        );
        out
    }

    #[test]
    fn round_trips_every_header_type() {
        let bytes = sample();
        let got = decode_split(&bytes, &[]).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].1, br#"{"role":"assistant"}"#);
        assert_eq!(
            got[0].0[0],
            (":event-type".into(), "Str(\"messageStart\")".into())
        );
        let h = &got[1].0;
        assert_eq!(h.len(), 10);
        assert_eq!(h[2].1, "Byte(-3)");
        assert_eq!(h[5].1, "Long(-5000000000)");
        assert_eq!(h[6].1, "Bytes([0, 1, 2])");
        assert_eq!(h[9].1, "Str(\"contentBlockDelta\")");
        assert!(got[2].0.is_empty() && got[2].1.is_empty());
        let mut d = EventStreamDecoder::new();
        let mut types = Vec::new();
        d.feed(
            &bytes,
            &mut |m: Message<'_>| -> Result<(), EventStreamError> {
                types.push((
                    m.header_str(":event-type").map(str::to_string),
                    m.header_str(":exception-type").map(str::to_string),
                ));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(types[1].0.as_deref(), Some("contentBlockDelta"));
        assert_eq!(types[3].1.as_deref(), Some("throttlingException"));
    }

    #[test]
    fn every_split_gives_the_same_messages() {
        let bytes = sample();
        let expected = decode_split(&bytes, &[]).unwrap();
        for i in 0..=bytes.len() {
            assert_eq!(
                decode_split(&bytes, &[i]).unwrap(),
                expected,
                "split at {i}"
            );
        }
        for i in (0..bytes.len()).step_by(7) {
            for j in i..bytes.len() {
                assert_eq!(decode_split(&bytes, &[i, j]).unwrap(), expected);
            }
        }
        let all: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode_split(&bytes, &all).unwrap(), expected);
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let bytes = sample();
        // Flip every byte in turn: a CRC or length check must catch it.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            assert!(
                decode_split(&bad, &[]).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        // Truncation is reported at the end.
        let err = decode_split(&bytes[..bytes.len() - 3], &[]).unwrap_err();
        assert!(err.0.contains("ended inside a message"));
    }

    #[test]
    fn oversized_messages_are_refused_from_the_prelude() {
        let mut out = Vec::new();
        encode_event("x", &[b'a'; 200], &mut out);
        let mut d = EventStreamDecoder::with_max_len(100);
        let err = d
            .feed(
                &out[..12],
                &mut |_m: Message<'_>| -> Result<(), EventStreamError> { Ok(()) },
            )
            .unwrap_err();
        assert!(err.0.contains("max_stream_event_bytes"), "{}", err.0);
    }

    #[test]
    fn malformed_header_block_is_an_error() {
        // A string header whose length runs past the header block, with valid CRCs.
        let mut out = Vec::new();
        encode_message(&[("x", HeaderValue::Str("abc"))], b"{}", &mut out);
        // headers: [1]['x'][7][0,3]['a','b','c'] -> claim length 9.
        out[12 + 3] = 0;
        out[12 + 4] = 9;
        let body_end = out.len() - 4;
        let prelude_ok = out[..12].to_vec();
        let crc = crc32fast::hash(&out[..body_end]);
        out[body_end..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(&out[..12], &prelude_ok[..]);
        assert!(decode_split(&out, &[]).is_err());
    }
}
