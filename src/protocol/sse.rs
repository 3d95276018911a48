//! Incremental Server-Sent Events decoder and encoder over raw bytes.
//!
//! Upstream bytes arrive in arbitrary pieces (inside lines, inside UTF-8 characters); the decoder buffers
//! only the current unfinished event, bounded by `max_event_bytes`, and hands out complete events as
//! `Bytes` slices without copying their payload twice.

use bytes::{BufMut, Bytes, BytesMut};

/// Default bound on one event's size: larger events are an upstream fault, not something to buffer.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One complete SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`; empty for comment-only frames.
    pub data: Bytes,
    /// The whole frame as received, terminator included, for verbatim forwarding.
    pub raw: Bytes,
}

impl SseEvent {
    /// True for the OpenAI stream terminator `data: [DONE]`.
    pub(crate) fn is_done(&self) -> bool {
        self.data.as_ref() == b"[DONE]"
    }

    /// True when the frame carried neither data nor an event name (a comment or keep-alive).
    pub(crate) fn is_comment(&self) -> bool {
        self.data.is_empty() && self.event.is_none()
    }
}

/// The stream broke the SSE framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("upstream sent an SSE event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Incremental decoder: `feed` bytes, then drain `next_event` until it returns `None`.
#[derive(Debug)]
pub struct SseDecoder {
    buffer: BytesMut,
    /// A piece given as `Bytes` while `buffer` was empty: its complete events are handed out as slices
    /// of it, and only what is left of it (an unfinished event) is copied into `buffer`.
    pending: Bytes,
    max_event_bytes: usize,
    /// How far `buffer` was already scanned for a frame end, so re-scans are linear overall.
    scanned: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            buffer: BytesMut::new(),
            pending: Bytes::new(),
            max_event_bytes,
            scanned: 0,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.spill();
        self.buffer.extend_from_slice(chunk);
    }

    /// [`feed`](Self::feed) for a piece the caller holds as `Bytes` (an upstream body frame): while no
    /// unfinished event is buffered, its events are not copied. Decodes exactly as `feed` does.
    pub fn feed_bytes(&mut self, chunk: Bytes) {
        if self.buffer.is_empty() && self.pending.is_empty() {
            self.pending = chunk;
        } else {
            self.spill();
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Moves what is left of `pending` into `buffer`, in order.
    fn spill(&mut self) {
        if !self.pending.is_empty() {
            self.buffer.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
    }

    /// Bytes held for an unfinished event.
    pub fn buffered(&self) -> usize {
        self.buffer.len() + self.pending.len()
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        // `pending` is only ever non-empty while `buffer` is empty, so it holds the next bytes.
        while !self.pending.is_empty() {
            let Some((end, terminator)) = find_frame_end(&self.pending, 0) else {
                self.spill();
                break;
            };
            let raw = self.pending.split_to(end + terminator);
            if raw[..end].iter().all(|b| *b == b'\n' || *b == b'\r') {
                continue;
            }
            return Ok(Some(parse_frame(end, raw)));
        }
        loop {
            let Some((end, terminator)) = find_frame_end(&self.buffer, self.scanned) else {
                self.scanned = self.buffer.len().saturating_sub(3);
                if self.buffer.len() > self.max_event_bytes {
                    return Err(SseError::EventTooLarge(self.max_event_bytes));
                }
                return Ok(None);
            };
            self.scanned = 0;
            let raw = self.buffer.split_to(end + terminator).freeze();
            // A leading blank line (e.g. after a BOM-less stream start) yields an empty frame: skip it.
            if raw[..end].iter().all(|b| *b == b'\n' || *b == b'\r') {
                continue;
            }
            return Ok(Some(parse_frame(end, raw)));
        }
    }

    /// Called at end of stream: a final event without its blank line is dropped (as the spec says),
    /// except that a lone complete `data:` line is accepted, since some servers omit the last blank line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.spill();
        let rest = std::mem::take(&mut self.buffer).freeze();
        let trimmed_len = rest
            .iter()
            .rposition(|b| *b != b'\n' && *b != b'\r')
            .map_or(0, |i| i + 1);
        if trimmed_len == 0 || trimmed_len == rest.len() {
            return None;
        }
        let event = parse_frame(trimmed_len, rest);
        (!event.data.is_empty()).then_some(event)
    }
}

/// Position of the first blank line at or after `from`: `(frame_len, terminator_len)`. Lines end in
/// CRLF, LF or CR (the WHATWG event-stream rules), so a blank line is two line ends in a row, whichever
/// they are (`\n\r` followed by text included). `None` as well while it cannot be told yet: a CR that
/// is the last byte so far may be the start of a CRLF.
fn find_frame_end(buffer: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buffer[i..]) {
        let at = i + offset;
        let first = line_end(buffer, at)?;
        match line_end(buffer, at + first)? {
            0 => i = at + first,
            second => return Some((at, first + second)),
        }
    }
    None
}

/// The length of the line end at `at` (`0`: the byte there is not one); `None` when it cannot be
/// told yet (nothing there, or a CR that is the last byte).
fn line_end(buffer: &[u8], at: usize) -> Option<usize> {
    match buffer.get(at)? {
        b'\n' => Some(1),
        b'\r' => match buffer.get(at + 1)? {
            b'\n' => Some(2),
            _ => Some(1),
        },
        _ => Some(0),
    }
}

/// Parses the frame `raw[..len]` (lines of `field: value`); `raw` is the frame with its terminator. Works
/// on byte ranges and makes one `Bytes` slice for the data, so a frame costs no reference-count traffic
/// per line.
fn parse_frame(len: usize, raw: Bytes) -> SseEvent {
    let frame = &raw[..len];
    let mut event = None;
    let mut joined: Option<BytesMut> = None;
    let mut single: Option<(usize, usize)> = None;
    let mut start = 0;
    while start <= len {
        let end = memchr::memchr2(b'\n', b'\r', &frame[start..]).map_or(len, |i| start + i);
        let line = &frame[start..end];
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => (&b""[..], (end, end)),
            Some(colon) => {
                let mut value_start = start + colon + 1;
                if value_start < end && frame[value_start] == b' ' {
                    value_start += 1;
                }
                (&line[..colon], (value_start, end))
            }
            None => (line, (end, end)),
        };
        match field {
            b"data" => match (&mut joined, single) {
                (Some(joined), _) => {
                    joined.put_u8(b'\n');
                    joined.extend_from_slice(&frame[value.0..value.1]);
                }
                (None, Some(first)) => {
                    let mut both = BytesMut::from(&frame[first.0..first.1]);
                    both.put_u8(b'\n');
                    both.extend_from_slice(&frame[value.0..value.1]);
                    joined = Some(both);
                    single = None;
                }
                (None, None) => single = Some(value),
            },
            b"event" => {
                event = Some(String::from_utf8_lossy(&frame[value.0..value.1]).into_owned())
            }
            _ => {}
        }
        // Skip the line terminator (\r\n counts as one).
        start = end + 1;
        if end < len && frame[end] == b'\r' && frame.get(end + 1) == Some(&b'\n') {
            start += 1;
        }
        if end == len {
            break;
        }
    }
    let data = match (joined, single) {
        (Some(joined), _) => joined.freeze(),
        (None, Some((from, to))) => raw.slice(from..to),
        (None, None) => Bytes::new(),
    };
    SseEvent { event, data, raw }
}

/// Append one event in SSE framing.
pub fn encode(event: Option<&str>, data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 16 + event.map_or(0, |name| name.len() + 8));
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        rest = &rest[end + 1..];
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for piece in pieces {
            decoder.feed(piece);
            while let Some(event) = decoder.next_event().unwrap() {
                out.push((event.event, String::from_utf8(event.data.to_vec()).unwrap()));
            }
        }
        out
    }

    #[test]
    fn decodes_across_arbitrary_splits() {
        let stream = "event: message_start\ndata: {\"a\":\"é\"}\n\n: ping\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let whole = decode_all(&[stream.as_bytes()]);
        assert_eq!(
            whole,
            vec![
                (Some("message_start".into()), "{\"a\":\"é\"}".into()),
                (None, String::new()),
                (None, "x\ny".into()),
                (None, "[DONE]".into()),
            ]
        );
        let bytes = stream.as_bytes();
        for split in 1..bytes.len() {
            assert_eq!(
                decode_all(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&singles), whole);
    }

    /// Pieces given as `Bytes` (and mixed with slices) decode exactly as slices do, wherever they split.
    #[test]
    fn bytes_pieces_decode_as_slices_do() {
        let stream = "event: message_start\ndata: {\"a\":\"é\"}\n\n: ping\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        let whole = decode_all(&[bytes]);
        let decode = |pieces: &[&[u8]], as_bytes: &dyn Fn(usize) -> bool| {
            let mut decoder = SseDecoder::default();
            let mut out = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                if as_bytes(i) {
                    decoder.feed_bytes(Bytes::copy_from_slice(piece));
                } else {
                    decoder.feed(piece);
                }
                while let Some(event) = decoder.next_event().unwrap() {
                    out.push((event.event, String::from_utf8(event.data.to_vec()).unwrap()));
                }
            }
            out.extend(
                decoder
                    .finish()
                    .map(|e| (e.event, String::from_utf8(e.data.to_vec()).unwrap())),
            );
            out
        };
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let pieces = [&bytes[..a], &bytes[a..b], &bytes[b..]];
                assert_eq!(decode(&pieces, &|_| true), whole, "split at {a}, {b}");
                assert_eq!(decode(&pieces, &|i| i == 1), whole, "split at {a}, {b}");
            }
        }
        // A last event without its blank line is still read at the end, as from a slice.
        let mut decoder = SseDecoder::default();
        decoder.feed_bytes(Bytes::from_static(b"data: {\"a\":1}\n\ndata: tail\n"));
        assert_eq!(
            decoder.next_event().unwrap().unwrap().data.as_ref(),
            b"{\"a\":1}"
        );
        assert_eq!(decoder.next_event(), Ok(None));
        assert_eq!(decoder.buffered(), 11);
        assert_eq!(decoder.finish().unwrap().data.as_ref(), b"tail");
    }

    /// Found by the fuzz target `sse_decoder` (issue 23): `\n\r` before text (a line ended by LF, then a
    /// blank line ended by CR) ends an event; it was read as part of the next one. Every pair of line
    /// ends, at once or split anywhere, ends an event the same way.
    #[test]
    fn any_two_line_ends_end_an_event() {
        for ends in [
            "\n\n", "\n\r", "\n\r\n", "\r\n\n", "\r\n\r", "\r\n\r\n", "\r\r", "\r\r\n",
        ] {
            let stream = format!("data: a{ends}data: b\n\n");
            let bytes = stream.as_bytes();
            let expected = vec![(None, "a".to_owned()), (None, "b".to_owned())];
            assert_eq!(decode_all(&[bytes]), expected, "{ends:?}");
            for split in 1..bytes.len() {
                let pieces = [&bytes[..split], &bytes[split..]];
                assert_eq!(decode_all(&pieces), expected, "{ends:?} split at {split}");
            }
            let mut decoder = SseDecoder::default();
            decoder.feed(bytes);
            let first = decoder.next_event().unwrap().unwrap();
            assert_eq!(first.raw.as_ref(), format!("data: a{ends}").as_bytes());
        }
    }

    #[test]
    fn bounds_the_buffer() {
        let mut decoder = SseDecoder::new(8);
        decoder.feed(b"data: 0123456789");
        assert_eq!(decoder.next_event(), Err(SseError::EventTooLarge(8)));
        let mut decoder = SseDecoder::new(8);
        decoder.feed_bytes(Bytes::from_static(b"data: 0123456789"));
        assert_eq!(decoder.next_event(), Err(SseError::EventTooLarge(8)));
    }

    #[test]
    fn raw_keeps_the_frame_verbatim() {
        let mut decoder = SseDecoder::default();
        decoder.feed(b"data: {\"id\":1}\n\ndata: [DONE]\n\n");
        let first = decoder.next_event().unwrap().unwrap();
        assert_eq!(first.raw.as_ref(), b"data: {\"id\":1}\n\n");
        assert!(decoder.next_event().unwrap().unwrap().is_done());
    }

    #[test]
    fn encodes_multiline_data() {
        let mut out = BytesMut::new();
        encode(Some("ping"), b"a\nb", &mut out);
        assert_eq!(out.as_ref(), b"event: ping\ndata: a\ndata: b\n\n");
    }
}
