//! Newline-delimited JSON (Ollama's streaming format): one JSON value per `\n`-terminated line.

#[derive(Default)]
pub struct NdjsonDecoder {
    pending: Vec<u8>,
}

impl NdjsonDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_line` with each complete, non-blank line (without the newline).
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        on_line: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(pos) = input.iter().position(|&b| b == b'\n') {
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
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish<E>(&mut self, on_line: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let line = std::mem::take(&mut self.pending);
        emit(&line, on_line)
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
            let mut cb = |l: &[u8]| -> Result<(), ()> {
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
}
