//! Newline-delimited JSON (Ollama's streaming format): one JSON value per `\n`-terminated line.
//! A line longer than the decoder's bound (an upstream that never sends a newline) fails the
//! stream.

use super::limits;

/// Incremental NDJSON decoder. Holds at most one partial line, never more than its bound.
pub struct NdjsonDecoder {
    pending: Vec<u8>,
    /// Longest line accepted, newline excluded.
    max_line_bytes: usize,
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl NdjsonDecoder {
    /// A decoder bounded by the process-wide [`limits::max_stream_event_bytes`].
    pub fn new() -> Self {
        Self::with_max_line_bytes(limits::max_stream_event_bytes())
    }

    /// A decoder that fails a line longer than `max_line_bytes`.
    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        NdjsonDecoder {
            pending: Vec::new(),
            max_line_bytes,
        }
    }

    /// Bytes held for the line being read (for tests and diagnostics).
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Feeds bytes; calls `on_line` with each complete, non-blank line (without the newline).
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        on_line: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<NdjsonError>,
    {
        while let Some(pos) = input.iter().position(|&b| b == b'\n') {
            self.check_size(self.pending.len() + pos)?;
            if self.pending.is_empty() {
                emit(&input[..pos], on_line)?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&input[..pos]);
                emit(&line, on_line)?;
                line.clear();
                self.pending = line;
            }
            input = &input[pos + 1..];
        }
        self.check_size(self.pending.len() + input.len())?;
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish<E>(&mut self, on_line: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let line = std::mem::take(&mut self.pending);
        emit(&line, on_line)
    }

    /// Fails, dropping the partial line, when a line of `line_len` bytes exceeds the bound.
    fn check_size(&mut self, line_len: usize) -> Result<(), NdjsonError> {
        if line_len <= self.max_line_bytes {
            return Ok(());
        }
        self.pending = Vec::new();
        limits::record_too_large(limits::Framing::Ndjson);
        Err(NdjsonError(limits::too_large_message(
            "an NDJSON line",
            self.max_line_bytes,
        )))
    }
}

/// The upstream's bytes are not acceptable NDJSON.
#[derive(Debug)]
pub struct NdjsonError(pub String);

impl From<NdjsonError> for crate::error::GatewayError {
    fn from(e: NdjsonError) -> Self {
        crate::error::GatewayError::bad_gateway(format!(
            "The upstream sent a malformed line-delimited stream: {}",
            e.0
        ))
    }
}

fn emit<E>(line: &[u8], on_line: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    on_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_any_split() {
        let input = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
        for i in 0..=input.len() {
            let mut d = NdjsonDecoder::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut cb = |l: &[u8]| -> Result<(), NdjsonError> {
                got.push(l.to_vec());
                Ok(())
            };
            d.feed(&input[..i], &mut cb).unwrap();
            d.feed(&input[i..], &mut cb).unwrap();
            d.finish(&mut cb).unwrap();
            assert_eq!(
                got,
                vec![
                    b"{\"a\":1}".to_vec(),
                    b"{\"b\":2}".to_vec(),
                    b"{\"c\":3}".to_vec()
                ],
                "split {i}"
            );
        }
    }

    #[test]
    fn a_line_without_a_newline_is_cut_at_the_bound() {
        let mut cb = |_l: &[u8]| -> Result<(), NdjsonError> { Ok(()) };
        for chunk in [1, 100, 5000] {
            let mut d = NdjsonDecoder::with_max_line_bytes(1000);
            let input = vec![b'x'; 5000];
            let err = input
                .chunks(chunk)
                .try_for_each(|piece| d.feed(piece, &mut cb))
                .unwrap_err();
            assert!(err.0.contains("max_stream_event_bytes"), "{}", err.0);
            assert_eq!(d.buffered_bytes(), 0);
        }
        // Lines up to the bound pass, however many there are.
        let mut d = NdjsonDecoder::with_max_line_bytes(10);
        let input = b"0123456789\n".repeat(1000);
        for piece in input.chunks(7) {
            d.feed(piece, &mut cb).unwrap();
        }
    }
}
