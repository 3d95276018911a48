//! Fuzz target: the SSE decoder (`ai_gateway::protocol::sse::SseDecoder`) on arbitrary bytes. It must
//! not panic; it must decode the same events (and the same final event at the end of the stream)
//! whether the bytes come at once or in pieces, through `feed` or `feed_bytes`; and the events that
//! carry data must be the ones the WHATWG event-stream rules give ([`reference`]).
//!
//! Input: one byte for the piece size, one whose bits choose `feed_bytes` over `feed` per piece, then
//! the stream.

#![no_main]

use ai_gateway::protocol::sse::{DEFAULT_MAX_EVENT_BYTES, SseDecoder, SseEvent};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [piece, mode, stream @ ..] = input else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    let whole = decode(&[stream], *mode, DEFAULT_MAX_EVENT_BYTES);
    let pieces: Vec<&[u8]> = stream.chunks(piece).collect();
    let split = decode(&pieces, *mode, DEFAULT_MAX_EVENT_BYTES);
    assert_eq!(whole, split, "in pieces of {piece} bytes");
    let (events, _) = whole;
    let ours: Vec<(Option<String>, Vec<u8>)> = events
        .iter()
        .filter(|event| !event.data.is_empty())
        .map(|event| (event.event.clone(), event.data.to_vec()))
        .collect();
    assert_eq!(ours, reference(stream));
    // A small bound: events up to the first error, no panic.
    let _ = decode(&pieces, *mode, 64);
});

/// The events decoded from `pieces` (until an error), and the one `finish` gives.
fn decode(pieces: &[&[u8]], mode: u8, max: usize) -> (Vec<SseEvent>, Option<SseEvent>) {
    let mut decoder = SseDecoder::new(max);
    let mut events = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        if mode >> (index % 8) & 1 == 1 {
            decoder.feed_bytes(Bytes::copy_from_slice(piece));
        } else {
            decoder.feed(piece);
        }
        loop {
            match decoder.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(_) => return (events, None),
            }
        }
    }
    let last = decoder.finish();
    (events, last)
}

/// The data-carrying events of `stream` by the WHATWG HTML "event stream interpretation": lines end in
/// CRLF, LF or CR; a blank line dispatches; `data` lines join with LF; `event` names the event; lines
/// starting with `:` are comments. What a decoder cannot know before the stream ends is left out: the
/// unterminated last event (our `finish` takes a lone `data:` line there, on purpose) and a CR as the
/// very last byte (a CRLF may be arriving). A leading byte-order mark is not stripped (upstreams send
/// none; the decoder keeps it as part of the first field name).
fn reference(stream: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    let mut event: Option<String> = None;
    let mut start = 0;
    while let Some(offset) = stream[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
    {
        let end = start + offset;
        let terminator = match (stream[end], stream.get(end + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => break,
            _ => 1,
        };
        let line = &stream[start..end];
        start = end + terminator;
        if line.is_empty() {
            if let Some(data) = data.take().filter(|data| !data.is_empty()) {
                events.push((event.take(), data));
            }
            event = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => match &mut data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            },
            b"event" => event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
    events
}
