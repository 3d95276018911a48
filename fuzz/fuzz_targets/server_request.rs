//! Fuzz target: our server side's request reader (`ai_gateway::http1::decode_requests`: the head
//! parser, body framing and body reader `server/h1.rs` serves connections with) on arbitrary bytes.
//! Whatever they are, it must not panic, must read the same requests whether the bytes arrive at once
//! or in pieces of any size, and must never hand on a body longer than the limit.
//!
//! Input: one byte for the piece size, one for the body limit (×16 bytes), then the client's bytes.

#![no_main]

use ai_gateway::http1::{DecodedEnd, decode_requests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [piece, limit, wire @ ..] = input else {
        return;
    };
    let max_body = usize::from(*limit) * 16;
    let piece = usize::from(*piece).max(1);
    let (whole, whole_end) = decode_requests(&[wire], max_body);
    let pieces: Vec<&[u8]> = wire.chunks(piece).collect();
    let (split, split_end) = decode_requests(&pieces, max_body);
    assert_eq!(
        whole, split,
        "requests read differ in pieces of {piece} bytes"
    );
    // The status is the same; its message may name another bound first (a head over 64 KiB in
    // pieces is "larger than 64 KiB" before it is "more than 100 header fields").
    assert_eq!(
        end_kind(&whole_end),
        end_kind(&split_end),
        "{whole_end:?} whole, {split_end:?} in pieces of {piece} bytes"
    );
    for request in &whole {
        if let Some(body) = &request.body {
            assert!(body.len() <= max_body, "a body over the limit was read");
        }
    }
});

fn end_kind(end: &DecodedEnd) -> (u8, u16) {
    match end {
        DecodedEnd::Closed => (0, 0),
        DecodedEnd::Truncated => (1, 0),
        DecodedEnd::Stopped => (2, 0),
        DecodedEnd::Rejected(status, _) => (3, status.as_u16()),
    }
}
