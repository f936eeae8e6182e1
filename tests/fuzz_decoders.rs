//! Property-based fuzzing of the stream framings an upstream controls: the SSE, NDJSON and AWS
//! eventstream decoders (the request side and the translators are in `fuzz_translators.rs`).
//!
//! Properties: arbitrary bytes never panic; a decoder never holds more than its bound; and a
//! decoder's verdict (events, then error or not) is the same however the bytes are split.
//! CI runs a few hundred cases per property; a long campaign sets `PROPTEST_CASES` (README).

use proptest::prelude::*;
use proptest::sample::Index;
use switchboard::codec::eventstream::{encode_message, EventStreamDecoder, HeaderValue, Message};
use switchboard::codec::ndjson::NdjsonDecoder;
use switchboard::codec::sse::{SseDecoder, SseEvent};
use switchboard::error::GatewayError;

/// `default` cases unless `PROPTEST_CASES` asks for more (a long campaign).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// Cut points into a buffer of `len` bytes, ascending.
fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// `input` in pieces at `cuts` (some possibly empty).
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &c in cuts {
        out.push(&input[start..c]);
        start = c;
    }
    out.push(&input[start..]);
    out
}

/// Bytes mostly made of the framing's own tokens, so random input reaches deep states.
fn token_soup(tokens: &'static [&'static [u8]], max_tokens: usize) -> BoxedStrategy<Vec<u8>> {
    let token = prop_oneof![
        4 => prop::sample::select(tokens).prop_map(|t| t.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => "\\PC{0,16}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(token, 0..max_tokens)
        .prop_map(|ts| ts.concat())
        .boxed()
}

const SSE_TOKENS: &[&[u8]] = &[
    b"data:",
    b"data: ",
    b"event: ",
    b"event:x",
    b": comment",
    b"id: 1",
    b"retry: 5",
    b"\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"{\"a\":1}",
    b"[DONE]",
    b"\xff",
    b"\xe2\x82",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

// ---------------------------------------------------------------------------------------------
// SSE

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<(String, String)>,
    failed: bool,
}

/// Decodes `input` cut at `cuts` with bound `max`, checking the bound after every piece.
fn sse_decode(input: &[u8], cuts: &[usize], max: usize) -> Decoded {
    let mut d = SseDecoder::with_max_event_bytes(max);
    let mut events = Vec::new();
    let mut on_event = |e: SseEvent<'_>| -> Result<(), GatewayError> {
        events.push((e.event.to_string(), e.data.to_string()));
        Ok(())
    };
    let mut failed = false;
    for piece in pieces(input, cuts) {
        let r = d.feed(piece, &mut on_event);
        assert!(
            d.buffered_bytes() <= max,
            "SSE decoder holds {} bytes, bound {max}",
            d.buffered_bytes()
        );
        if r.is_err() {
            failed = true;
            break;
        }
    }
    if !failed {
        failed = d.finish(&mut on_event).is_err();
    }
    Decoded { events, failed }
}

/// A valid SSE stream from (event name, data lines) pairs, with mixed line endings.
fn sse_stream() -> impl Strategy<Value = (Vec<u8>, Vec<(String, String)>)> {
    let event = (
        prop::option::of("[a-z_]{1,12}"),
        prop::collection::vec("[^\r\n]{0,40}", 1..4),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
        any::<bool>(),
    );
    prop::collection::vec(event, 0..12).prop_map(|events| {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (name, lines, eol, comment) in events {
            if comment {
                bytes.extend_from_slice(format!(": keep-alive{eol}").as_bytes());
            }
            if let Some(n) = &name {
                bytes.extend_from_slice(format!("event: {n}{eol}").as_bytes());
            }
            for l in &lines {
                // "data:" then an optional single space that is not part of the value.
                bytes.extend_from_slice(format!("data: {l}{eol}").as_bytes());
            }
            bytes.extend_from_slice(eol.as_bytes());
            expected.push((name.unwrap_or_default(), lines.join("\n")));
        }
        (bytes, expected)
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn sse_arbitrary_bytes_are_bounded_and_split_invariant(
        input in token_soup(SSE_TOKENS, 64),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        max in 16usize..512,
    ) {
        let whole = sse_decode(&input, &[], max);
        let split = sse_decode(&input, &cut_points(input.len(), &picks), max);
        prop_assert_eq!(&split, &whole);
        // Byte by byte is the most adversarial split.
        let every: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(sse_decode(&input, &every, max), whole);
    }

    #[test]
    fn sse_valid_streams_decode_exactly_under_any_split(
        (input, expected) in sse_stream(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let got = sse_decode(&input, &cut_points(input.len(), &picks), 1 << 20);
        prop_assert!(!got.failed);
        prop_assert_eq!(got.events, expected);
    }

    #[test]
    fn sse_endless_data_lines_fail_at_the_bound(
        line in "[a-z]{1,64}",
        max in 64usize..2048,
        picks in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        // An event that never ends: data lines without a blank line, past the bound.
        let per_line = format!("data: {line}\n");
        let input = per_line.repeat(max / (line.len() + 1) + 2).into_bytes();
        let got = sse_decode(&input, &cut_points(input.len(), &picks), max);
        prop_assert!(got.failed);
        prop_assert!(got.events.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// NDJSON

const NDJSON_TOKENS: &[&[u8]] = &[
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"{\"done\":false}",
    b"{\"message\":{\"content\":\"hi\"}}",
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"\xff\xfe",
];

/// The lines a correct NDJSON decoder with bound `max` gives for `input`, written the simple way.
fn ndjson_reference(input: &[u8], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut lines = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        if line.len() > max {
            return (lines, true);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line.to_vec());
        }
    }
    (lines, false)
}

fn ndjson_decode(input: &[u8], cuts: &[usize], max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut d = NdjsonDecoder::with_max_line_bytes(max);
    let mut lines = Vec::new();
    let mut on_line = |l: &[u8]| -> Result<(), GatewayError> {
        lines.push(l.to_vec());
        Ok(())
    };
    for piece in pieces(input, cuts) {
        let r = d.feed(piece, &mut on_line);
        assert!(d.buffered_bytes() <= max, "NDJSON decoder over its bound");
        if r.is_err() {
            return (lines, true);
        }
    }
    let failed = d.finish(&mut on_line).is_err();
    (lines, failed)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn ndjson_matches_the_reference_under_any_split(
        input in token_soup(NDJSON_TOKENS, 64),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        max in 8usize..256,
    ) {
        let expected = ndjson_reference(&input, max);
        prop_assert_eq!(ndjson_decode(&input, &cut_points(input.len(), &picks), max), expected.clone());
        let every: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(ndjson_decode(&input, &every, max), expected);
    }

    #[test]
    fn ndjson_without_newlines_fails_at_the_bound(
        max in 16usize..4096,
        chunk in 1usize..512,
    ) {
        // An upstream that never sends a newline, in chunks of `chunk` bytes.
        let input = vec![b'x'; max + 1 + chunk];
        let cuts: Vec<usize> = (chunk..input.len()).step_by(chunk).collect();
        let (lines, failed) = ndjson_decode(&input, &cuts, max);
        prop_assert!(failed);
        prop_assert!(lines.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// AWS eventstream

/// A header value of every type the format has.
fn header_value() -> impl Strategy<Value = OwnedHeader> {
    prop_oneof![
        any::<bool>().prop_map(OwnedHeader::Bool),
        any::<i8>().prop_map(OwnedHeader::Byte),
        any::<i16>().prop_map(OwnedHeader::Short),
        any::<i32>().prop_map(OwnedHeader::Int),
        any::<i64>().prop_map(OwnedHeader::Long),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(OwnedHeader::Bytes),
        "\\PC{0,24}".prop_map(OwnedHeader::Str),
        any::<i64>().prop_map(OwnedHeader::Timestamp),
        any::<[u8; 16]>().prop_map(OwnedHeader::Uuid),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum OwnedHeader {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    Str(String),
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl OwnedHeader {
    fn borrow(&self) -> HeaderValue<'_> {
        match self {
            OwnedHeader::Bool(v) => HeaderValue::Bool(*v),
            OwnedHeader::Byte(v) => HeaderValue::Byte(*v),
            OwnedHeader::Short(v) => HeaderValue::Short(*v),
            OwnedHeader::Int(v) => HeaderValue::Int(*v),
            OwnedHeader::Long(v) => HeaderValue::Long(*v),
            OwnedHeader::Bytes(v) => HeaderValue::Bytes(v),
            OwnedHeader::Str(v) => HeaderValue::Str(v),
            OwnedHeader::Timestamp(v) => HeaderValue::Timestamp(*v),
            OwnedHeader::Uuid(v) => HeaderValue::Uuid(v),
        }
    }

    fn own(v: HeaderValue<'_>) -> Self {
        match v {
            HeaderValue::Bool(v) => OwnedHeader::Bool(v),
            HeaderValue::Byte(v) => OwnedHeader::Byte(v),
            HeaderValue::Short(v) => OwnedHeader::Short(v),
            HeaderValue::Int(v) => OwnedHeader::Int(v),
            HeaderValue::Long(v) => OwnedHeader::Long(v),
            HeaderValue::Bytes(v) => OwnedHeader::Bytes(v.to_vec()),
            HeaderValue::Str(v) => OwnedHeader::Str(v.to_string()),
            HeaderValue::Timestamp(v) => OwnedHeader::Timestamp(v),
            HeaderValue::Uuid(v) => OwnedHeader::Uuid(*v),
        }
    }
}

type OwnedMessage = (Vec<(String, OwnedHeader)>, Vec<u8>);

fn message() -> impl Strategy<Value = OwnedMessage> {
    (
        prop::collection::vec(("[:a-z-]{1,16}", header_value()), 0..4),
        prop::collection::vec(any::<u8>(), 0..96),
    )
}

fn encode(messages: &[OwnedMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for (headers, payload) in messages {
        let hs: Vec<(&str, HeaderValue<'_>)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.borrow()))
            .collect();
        encode_message(&hs, payload, &mut out);
    }
    out
}

fn eventstream_decode(input: &[u8], cuts: &[usize], max: usize) -> (Vec<OwnedMessage>, bool) {
    let mut d = EventStreamDecoder::with_max_len(max);
    let mut got = Vec::new();
    let mut on_message = |m: Message<'_>| -> Result<(), GatewayError> {
        let headers = m
            .headers()
            .map(|h| {
                let (n, v) = h.expect("the decoder validated the header block");
                (n.to_string(), OwnedHeader::own(v))
            })
            .collect();
        got.push((headers, m.payload.to_vec()));
        Ok(())
    };
    for piece in pieces(input, cuts) {
        let r = d.feed(piece, &mut on_message);
        assert!(
            d.buffered_bytes() <= max,
            "eventstream decoder over its bound"
        );
        if r.is_err() {
            return (got, true);
        }
    }
    let failed = d.finish().is_err();
    (got, failed)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn eventstream_round_trips_under_any_split(
        messages in prop::collection::vec(message(), 0..6),
        picks in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let input = encode(&messages);
        let (got, failed) = eventstream_decode(&input, &cut_points(input.len(), &picks), 1 << 20);
        prop_assert!(!failed);
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn eventstream_corruption_is_bounded_and_split_invariant(
        messages in prop::collection::vec(message(), 1..4),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        truncate in any::<Index>(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        max in 16usize..1024,
    ) {
        let mut input = encode(&messages);
        for (at, byte) in &flips {
            let i = at.index(input.len());
            input[i] ^= byte;
        }
        input.truncate(truncate.index(input.len() + 1));
        let whole = eventstream_decode(&input, &[], max);
        let split = eventstream_decode(&input, &cut_points(input.len(), &picks), max);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn eventstream_arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..512),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        max in 16usize..1024,
    ) {
        let whole = eventstream_decode(&input, &[], max);
        let split = eventstream_decode(&input, &cut_points(input.len(), &picks), max);
        prop_assert_eq!(split, whole);
    }
}
