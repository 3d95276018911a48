//! The `x-ratelimit-*` response headers (OpenAI's names): the tightest bucket of each unit, rendered
//! as HTTP/1.1 field lines or header pairs, with Go-style reset durations.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::engine::Outcome;
use super::rules::Spec;
use super::rules::Unit;

/// OpenAI's rate-limit header names: limit, remaining, reset — for requests, then tokens.
const RATE_HEADER_NAMES: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

/// The `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers (OpenAI's names) of the tightest
/// rate bucket of each unit. Kept as numbers until the response is written: an admitted request holds
/// them through its upstream call, and header values held that long were separate allocations read
/// back cold under many connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Requests, then tokens.
    pub(super) units: [Option<Tightest>; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tightest {
    pub(super) limit: u64,
    pub(super) remaining: u64,
    pub(super) reset_us: u64,
}

impl RateHeaders {
    pub(super) fn of(specs: &[Spec<'_>], outcomes: &[Outcome]) -> RateHeaders {
        let tightest = |unit| {
            specs
                .iter()
                .zip(outcomes)
                .filter(|(s, _)| s.unit == unit && !s.quota)
                .min_by_key(|(s, o)| (o.remaining, std::cmp::Reverse(s.limit)))
                .map(|(spec, outcome)| Tightest {
                    limit: spec.limit,
                    remaining: outcome.remaining,
                    reset_us: outcome.reset_us,
                })
        };
        RateHeaders {
            units: [tightest(Unit::Requests), tightest(Unit::Tokens)],
        }
    }

    /// No limit applies (nothing to send).
    pub fn is_empty(&self) -> bool {
        self.units.iter().all(Option::is_none)
    }

    /// The headers as HTTP/1.1 field lines (`name: value\r\n`), requests first — the one place they are
    /// rendered: an HTTP/1.1 head takes the lines as they are (no header value allocated, no map
    /// insert), a header map takes them through [`pairs`](Self::pairs).
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        for (unit, [limit, remaining, reset]) in self.units.iter().zip(&RATE_HEADER_NAMES) {
            let Some(unit) = unit else {
                continue;
            };
            for (name, value) in [(limit, unit.limit), (remaining, unit.remaining)] {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(digits.format(value).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(reset.as_bytes());
            out.extend_from_slice(b": ");
            write_go_duration(out, unit.reset_us);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The headers as name and value, requests first: [`write_fields`](Self::write_fields) split up (the
    /// values share one buffer).
    pub fn pairs(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + use<> {
        const fn names(unit: usize) -> [HeaderName; 3] {
            let [limit, remaining, reset] = RATE_HEADER_NAMES[unit];
            [
                HeaderName::from_static(limit),
                HeaderName::from_static(remaining),
                HeaderName::from_static(reset),
            ]
        }
        static NAMES: [[HeaderName; 3]; 2] = [names(0), names(1)];
        let mut lines = Vec::with_capacity(192);
        self.write_fields(&mut lines);
        let mut rest = Bytes::from(lines);
        std::iter::from_fn(move || {
            let end = memchr::memmem::find(&rest, b"\r\n")?;
            let line = rest.split_to(end + 2);
            let colon = memchr::memchr(b':', &line)?;
            let name = NAMES
                .as_flattened()
                .iter()
                .find(|name| name.as_str().as_bytes() == &line[..colon])?;
            let value = HeaderValue::from_maybe_shared(line.slice(colon + 2..end)).ok()?;
            Some((name.clone(), value))
        })
    }

    /// The headers as a list.
    pub fn to_vec(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.pairs().collect()
    }
}

/// Formats a duration like OpenAI's reset headers (Go style): `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub(super) fn go_duration(us: u64) -> String {
    let mut out = Vec::with_capacity(12);
    write_go_duration(&mut out, us);
    // Only ASCII digits and unit letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`go_duration`] appended to `out`.
fn write_go_duration(out: &mut Vec<u8>, us: u64) {
    let mut digits = itoa::Buffer::new();
    let ms = us.div_ceil(1000);
    if ms < 1000 {
        out.extend_from_slice(digits.format(ms).as_bytes());
        out.extend_from_slice(b"ms");
        return;
    }
    let hours = ms / 3_600_000;
    let minutes = ms % 3_600_000 / 60_000;
    let secs_ms = ms % 60_000;
    if hours > 0 {
        out.extend_from_slice(digits.format(hours).as_bytes());
        out.push(b'h');
    }
    if hours > 0 || minutes > 0 {
        out.extend_from_slice(digits.format(minutes).as_bytes());
        out.push(b'm');
    }
    out.extend_from_slice(digits.format(secs_ms / 1000).as_bytes());
    let millis = secs_ms % 1000;
    if millis > 0 {
        // Milliseconds without trailing zeros: 500 → ".5", 250 → ".25", 7 → ".007".
        out.push(b'.');
        let text = digits.format(millis + 1000);
        out.extend_from_slice(text[1..].trim_end_matches('0').as_bytes());
    }
    out.push(b's');
}
