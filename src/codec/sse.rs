//! Server-sent events (WHATWG HTML §9.2): lines end in CRLF, LF or CR; `data:` lines of one
//! event are joined with `\n`; a blank line dispatches; `:` lines are comments (OpenRouter's
//! `: OPENROUTER PROCESSING` keep-alives); `event:` names the event. An event larger than the
//! decoder's bound (an upstream sending `data:` lines with no blank line) fails the stream.

use super::limits;

/// One dispatched event. `data` is the joined data lines.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a str,
    pub data: &'a str,
}

/// Incremental SSE decoder. Holds one event's bytes at most: the event name, the data lines so
/// far and the partial line, together never more than its bound.
pub struct SseDecoder {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next chunk belongs to it.
    skip_lf: bool,
    event: String,
    data: String,
    has_data: bool,
    /// Most bytes one event (name, data and the line being read) may hold.
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder bounded by the process-wide [`limits::max_stream_event_bytes`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(limits::max_stream_event_bytes())
    }

    /// A decoder that fails an event holding more than `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        SseDecoder {
            pending: Vec::new(),
            skip_lf: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Bytes held for the event being read (for tests and diagnostics).
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len() + self.event.len() + self.data.len()
    }

    /// Fails, dropping what is held, when the event being read plus a line of `line_len` bytes
    /// would exceed the bound. The line's length counts in full (field name included), so the
    /// verdict does not depend on how the bytes were split.
    fn check_size(&mut self, line_len: usize) -> Result<(), SseError> {
        let held = self.event.len() + self.data.len();
        if held.saturating_add(line_len) <= self.max_event_bytes {
            return Ok(());
        }
        self.pending = Vec::new();
        self.event = String::new();
        self.data = String::new();
        self.has_data = false;
        limits::record_too_large(limits::Framing::Sse);
        Err(SseError(limits::too_large_message(
            "an SSE event",
            self.max_event_bytes,
        )))
    }

    /// Feeds bytes; calls `on_event` for every event completed by them.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        on_event: &mut dyn FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        // Only the very next byte may be the LF of a CRLF split across chunks; an empty chunk
        // leaves the question open.
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        loop {
            if let Some(rest) = self.whole_event(input, on_event)? {
                input = rest;
                continue;
            }
            let Some(pos) = memchr::memchr2(b'\n', b'\r', input) else {
                break;
            };
            let line_end = pos;
            let mut next = pos + 1;
            if input[pos] == b'\r' {
                if next < input.len() {
                    if input[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            self.check_size(self.pending.len() + line_end)?;
            if self.pending.is_empty() {
                self.line(&input[..line_end], on_event)?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&input[..line_end]);
                self.line(&line, on_event)?;
                line.clear();
                self.pending = line;
            }
            input = &input[next..];
        }
        self.check_size(self.pending.len() + input.len())?;
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// The common case without a copy: nothing is held and `input` starts with a whole
    /// one-line event (`data: …` then a blank line, LF or CRLF), as OpenAI-style servers send
    /// them. Dispatches it straight from `input` and returns the bytes after it; `None` leaves
    /// everything else (other fields, comments, several data lines, CR endings, splits, lines
    /// over the bound, invalid UTF-8) to the line-by-line path, which decides them the same way.
    fn whole_event<'i, E>(
        &mut self,
        input: &'i [u8],
        on_event: &mut dyn FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<Option<&'i [u8]>, E> {
        if !self.pending.is_empty() || self.has_data || !self.event.is_empty() {
            return Ok(None);
        }
        let Some(value) = input.strip_prefix(b"data:") else {
            return Ok(None);
        };
        let Some(end) = memchr::memchr2(b'\n', b'\r', value) else {
            return Ok(None);
        };
        let line_len = 5 + end;
        let after = &value[end..];
        let rest = if let Some(rest) = after.strip_prefix(b"\n\n") {
            rest
        } else if let Some(rest) = after.strip_prefix(b"\r\n\r\n") {
            rest
        } else {
            return Ok(None);
        };
        if line_len > self.max_event_bytes {
            return Ok(None);
        }
        let value = &value[..end];
        let Ok(data) = std::str::from_utf8(value.strip_prefix(b" ").unwrap_or(value)) else {
            return Ok(None);
        };
        on_event(SseEvent { event: "", data })?;
        Ok(Some(rest))
    }

    /// The stream ended: an event still open (no trailing blank line) is dispatched, as Gemini
    /// and some servers end their last event with the body.
    pub fn finish<E>(
        &mut self,
        on_event: &mut dyn FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line, on_event)?;
        }
        self.dispatch(on_event)
    }

    fn line<E>(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| SseError("an SSE line is not valid UTF-8".into()))?;
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {} // id, retry and unknown fields carry nothing we use
        }
        Ok(())
    }

    fn dispatch<E>(
        &mut self,
        on_event: &mut dyn FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if self.has_data {
            let result = on_event(SseEvent {
                event: &self.event,
                data: &self.data,
            });
            self.data.clear();
            self.has_data = false;
            self.event.clear();
            result
        } else {
            self.event.clear();
            Ok(())
        }
    }
}

/// The upstream's bytes are not SSE.
#[derive(Debug)]
pub struct SseError(pub String);

impl From<SseError> for crate::error::GatewayError {
    fn from(e: SseError) -> Self {
        crate::error::GatewayError::bad_gateway(format!(
            "The upstream sent a malformed event stream: {}",
            e.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GatewayError;

    fn decode_split(input: &[u8], split: &[usize]) -> Vec<(String, String)> {
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        let mut cb = |e: SseEvent<'_>| -> Result<(), GatewayError> {
            got.push((e.event.to_string(), e.data.to_string()));
            Ok(())
        };
        let mut start = 0;
        for &s in split.iter().chain(std::iter::once(&input.len())) {
            d.feed(&input[start..s], &mut cb).unwrap();
            start = s;
        }
        d.finish(&mut cb).unwrap();
        got
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\n\ndata: l1\ndata: l2\n\ndata:[DONE]\r\rdata: tail";
        let expected = vec![
            ("a".to_string(), "{\"x\":1}".to_string()),
            (String::new(), "l1\nl2".to_string()),
            (String::new(), "[DONE]".to_string()),
            (String::new(), "tail".to_string()),
        ];
        assert_eq!(decode_split(input, &[]), expected);
        for i in 0..input.len() {
            assert_eq!(decode_split(input, &[i]), expected, "split at {i}");
            for j in i..input.len() {
                assert_eq!(decode_split(input, &[i, j]), expected, "split at {i},{j}");
            }
        }
        // One byte at a time.
        let all: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_split(input, &all), expected);
    }

    #[test]
    fn a_whole_one_line_event_is_handed_out_from_the_input_without_a_copy() {
        let input = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\nevent: x\ndata: y\n\n";
        let range = input.as_ptr_range();
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        d.feed(input, &mut |e: SseEvent<'_>| -> Result<(), GatewayError> {
            let borrowed = range.contains(&e.data.as_ptr());
            got.push((e.event.to_string(), e.data.to_string(), borrowed));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (String::new(), "{\"a\":1}".into(), true),
                (String::new(), "{\"b\":2}".into(), true),
                // A named event takes the line-by-line path.
                ("x".into(), "y".into(), false),
            ]
        );
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn a_crlf_split_before_its_lf_does_not_swallow_the_next_lf() {
        // Found by tests/fuzz_decoders.rs: CR | LF | LF in separate chunks. The first LF ends
        // the CRLF; the second is a blank line that must dispatch the event. The decoder used
        // to keep waiting for the CRLF's LF after consuming it, and swallowed the blank line,
        // merging two events into one.
        let input = b"data: a\r\n\ndata: b\r\n\n";
        let expected = vec![(String::new(), "a".into()), (String::new(), "b".into())];
        let all: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_split(input, &all), expected);
        assert_eq!(decode_split(input, &[8, 9]), expected);
        assert_eq!(
            decode_split(input, &[8, 8, 9]),
            expected,
            "an empty chunk in between"
        );
    }

    fn feed_all(d: &mut SseDecoder, input: &[u8], chunk: usize) -> Result<usize, GatewayError> {
        let mut events = 0;
        for piece in input.chunks(chunk) {
            d.feed(piece, &mut |_e: SseEvent<'_>| -> Result<(), GatewayError> {
                events += 1;
                Ok(())
            })?;
            assert!(d.buffered_bytes() <= 1024);
        }
        Ok(events)
    }

    #[test]
    fn an_event_of_endless_data_lines_is_cut_at_the_bound() {
        // Each line is short; the event never ends. The bound is on the event, not the line.
        let input = b"data: 0123456789\n".repeat(200);
        for chunk in [1, 7, 64, input.len()] {
            let mut d = SseDecoder::with_max_event_bytes(1024);
            let err = feed_all(&mut d, &input, chunk).unwrap_err();
            assert_eq!(err.status, 502);
            assert!(
                err.message.contains("max_stream_event_bytes"),
                "{}",
                err.message
            );
            assert_eq!(d.buffered_bytes(), 0, "what was held is released");
        }
        // One endless line, and an endless comment, too.
        for input in [
            vec![b'x'; 4096],
            [b": ".to_vec(), vec![b'x'; 4096]].concat(),
        ] {
            let mut d = SseDecoder::with_max_event_bytes(1024);
            assert!(feed_all(&mut d, &input, 100).is_err());
        }
    }

    #[test]
    fn events_within_the_bound_pass_and_reset_it() {
        // Many events, each under the bound, total far over it.
        let input = b"data: 0123456789\ndata: 0123456789\n\n".repeat(200);
        let mut d = SseDecoder::with_max_event_bytes(64);
        assert_eq!(feed_all(&mut d, &input, 13).unwrap(), 200);
        // An event exactly at the bound: "data: " + 64 bytes of data.
        let mut exact = b"data: ".to_vec();
        exact.extend_from_slice(&[b'a'; 58]);
        exact.extend_from_slice(b"\n\n");
        let mut d = SseDecoder::with_max_event_bytes(64);
        assert_eq!(feed_all(&mut d, &exact, 5).unwrap(), 1);
    }
}
