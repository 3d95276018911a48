//! Fuzz target: `blank_long_strings`, the SIMD scan that checks a large body's long texts and blanks
//! them before a typed reading that keeps none of them, against serde_json. On any bytes it must not
//! panic; when it gives a copy, the copy must read (as a `Value`) exactly when the body reads (but for
//! serde_json's `RawValue` token as a key, below), with the same shape, the members not named
//! unchanged, and every string inside them the body's or empty.
//!
//! Input: the body.

#![no_main]

use ai_gateway::protocol::blank_long_strings;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MEMBERS: [&str; 2] = ["messages", "input"];

const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `blanked` is `body` with some strings emptied.
fn same_or_emptied(body: &Value, blanked: &Value) -> bool {
    match (body, blanked) {
        (Value::String(body), Value::String(blanked)) => blanked.is_empty() || body == blanked,
        (Value::Array(body), Value::Array(blanked)) => {
            body.len() == blanked.len() && body.iter().zip(blanked).all(|(a, b)| same_or_emptied(a, b))
        }
        (Value::Object(body), Value::Object(blanked)) => {
            body.len() == blanked.len()
                && body
                    .iter()
                    .zip(blanked)
                    .all(|((k, a), (l, b))| k == l && same_or_emptied(a, b))
        }
        (body, blanked) => body == blanked,
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Some(copy) = blank_long_strings(text, &MEMBERS) else {
        return;
    };
    assert!(copy.len() < text.len());
    match (serde_json::from_str::<Value>(text), serde_json::from_str::<Value>(&copy)) {
        (Ok(body), Ok(blanked)) => {
            assert!(same_or_emptied(&body, &blanked), "{text:?} / {copy:?}");
            if let (Value::Object(body), Value::Object(blanked)) = (&body, &blanked) {
                for (key, value) in body {
                    if !MEMBERS.contains(&key.as_str()) {
                        assert_eq!(Some(value), blanked.get(key), "{key:?} in {text:?}");
                    }
                }
            }
        }
        (Err(_), Err(_)) => {}
        // serde_json reads a map whose key is its `RawValue` token by parsing the value's text as
        // JSON, which an emptied text is not: the copy is refused and the caller reads the body.
        (Ok(_), Err(_)) if text.contains(RAW_VALUE_TOKEN) => {}
        (body, blanked) => panic!(
            "body read {}, copy read {}: {text:?} / {copy:?}",
            body.is_ok(),
            blanked.is_ok()
        ),
    }
});
