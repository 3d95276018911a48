//! Fuzz target: our client's response reader (`ai_gateway::http1::decode_response`: the head parser,
//! interim answers and body framing `upstream/h1.rs` reads upstream answers with) on arbitrary
//! bytes. Whatever they are, it must not panic, and must read the same answer — status, headers, body,
//! whether the connection could be reused — whether the bytes arrive at once or in pieces.
//!
//! Input: one byte for the piece size, then the upstream's bytes (the upstream closes after them).

#![no_main]

use ai_gateway::http1::decode_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [piece, wire @ ..] = input else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    let whole = decode_response(&[wire]);
    let pieces: Vec<&[u8]> = wire.chunks(piece).collect();
    let split = decode_response(&pieces);
    match (&whole, &split) {
        (Ok(whole), Ok(split)) => {
            assert_eq!(whole.status, split.status);
            assert_eq!(whole.version, split.version);
            assert_eq!(whole.headers, split.headers);
            assert_eq!(
                whole.body.as_ref().ok(),
                split.body.as_ref().ok(),
                "{:?} whole, {:?} in pieces of {piece} bytes",
                whole.body,
                split.body
            );
            assert_eq!(whole.reusable, split.reusable);
            assert!(!whole.reusable || whole.body.is_ok());
        }
        (Err(_), Err(_)) => {}
        _ => panic!("{whole:?} whole, {split:?} in pieces of {piece} bytes"),
    }
});
