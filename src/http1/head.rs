//! What both sides read from a message head: where each field's value sits in the head's bytes, the
//! `Content-Length`, whether the connection persists, and the tokens of list-valued fields
//! (`Connection`, `Transfer-Encoding`).

use std::ops::Range;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Version};

/// The fields of a head parsed from `head`: each name, and where its value sits in `head` (so the value
/// can be a slice of the head's bytes once they are frozen). `Err` carries a name that is not valid.
pub(crate) fn field_ranges<'a>(
    fields: &[httparse::Header<'a>],
    head: &[u8],
) -> Result<Vec<(HeaderName, Range<usize>)>, &'a str> {
    let base = head.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| field.name)?;
        let start = field.value.as_ptr() as usize - base;
        ranges.push((name, start..start + field.value.len()));
    }
    Ok(ranges)
}

/// Whether the connection persists after a message (RFC 9112 §9.3): not when it says `close`;
/// HTTP/1.1 by default, HTTP/1.0 only when it says `keep-alive`.
pub(crate) fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    !has_token(headers, CONNECTION, "close")
        && (version != Version::HTTP_10 || has_token(headers, CONNECTION, "keep-alive"))
}

/// The `Content-Length` of a head: `Err` when a value is not digits only (`u64::from_str` would also
/// take a sign) or two values disagree.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = std::str::from_utf8(value.as_bytes())
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok());
        match (length, parsed) {
            (_, None) => return Err(()),
            (Some(seen), Some(this)) if seen != this => return Err(()),
            _ => length = parsed,
        }
    }
    Ok(length)
}

/// The last transfer coding named is `chunked`.
pub(crate) fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}
