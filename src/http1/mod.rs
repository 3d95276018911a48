//! The HTTP/1.1 codec both sides share, with no I/O: bytes in a buffer in, heads and body pieces out,
//! and requests encoded into bytes. `server::h1` (our server connection) and `upstream::h1` (our client
//! connection) do the reading and writing; what they read is framed here, the same way for both.
//!
//! - `framing.rs`: how a body is delimited ([`Framing`]) and the strict chunked-coding reader
//!   ([`take_data`]); [`FramingError`] says why a body's end cannot be trusted.
//! - `head.rs`: what both sides read from a head (field ranges, `Content-Length`, keep-alive, tokens).
//! - `request.rs`: a request as the server reads it (head, body framing, body) and [`Rejection`], what a
//!   malformed one is answered with; [`decode_requests`].
//! - `response.rs`: a response head as the client reads it, and its framing; [`decode_response`].
//! - `encode.rs`: a request's bytes (request line, `Host`, headers, `Content-Length`) and
//!   [`HeaderSink`], where the upstream call writes its headers; [`HeadLines`], through which the
//!   application served adds header lines to a response head the server writes.

mod encode;
mod framing;
mod head;
mod request;
mod response;

pub(crate) use encode::{
    HeaderSink, WireHeaders, encode_head_end, encode_request, encode_request_end,
    encode_request_line, header_safe,
};
pub use framing::FramingError;
pub(crate) use framing::{Chunk, Framing, advance, take_data};
pub(crate) use head::{content_length, field_ranges, keeps_alive};
pub(crate) use request::{BodyReader, ReadBody, Rejection, RequestHead, body_framing, parse_head};
pub use request::{DecodedEnd, DecodedRequest, decode_requests};
pub use response::{DecodedResponse, ResponseHeadError, decode_response};
pub(crate) use response::{ResponseHead, final_head};

/// Room made in the read buffer before each read.
pub(crate) const READ_SIZE: usize = 8 * 1024;
/// Bound on a head, request or response.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Bound on the number of header fields in a head (hyper's default), and on a chunked body's trailer
/// fields.
pub(crate) const MAX_HEADERS: usize = 100;

/// What our HTTP/1.1 server asks of the application it serves, besides answers: header lines it renders into a
/// response head itself, from what it left in the response's extensions (values kept as numbers until
/// the head is written, e.g. the rate-limit headers), after the header map's lines. The server knows
/// nothing of what they say.
pub(crate) trait HeadLines {
    /// Append `name: value\r\n` lines for the response whose extensions are `extensions`.
    fn write_head_lines(&self, extensions: &http::Extensions, out: &mut Vec<u8>);
}
