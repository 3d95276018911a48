//! Body framing (RFC 9112 §6, §7.1): how a message body is delimited — a length, the chunked coding, or
//! the end of the connection — and the reader that takes a body's data out of a read buffer as its bytes
//! arrive, the same for requests (`server::h1`) and responses (`upstream::h1`).
//!
//! The chunked coding is read strictly: RFC 9112 §7.1's grammar with CRLF wherever it says CRLF — a bare
//! LF, an empty chunk-size line, a control character in a chunk extension, a size past 64 bits or a
//! malformed trailer field is an error, never a guess at where the body ends (the guess is what request
//! smuggling and response mixing live on).

use bytes::{Buf, Bytes, BytesMut};

use super::MAX_HEADERS;

/// Bound on one chunk-size line, extensions included (they carry nothing we use).
pub(crate) const MAX_CHUNK_LINE: usize = 16 * 1024;
/// Bound on a chunked body's trailer section (hyper's; it fits in a `u16`): its fields are read and
/// dropped, at most [`MAX_HEADERS`] of them.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

/// How a message body is delimited, as it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// No length: the body ends when the server closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// The last chunk was read: trailer field lines, then an empty line. So many bytes and fields of
    /// them were read (and dropped) so far.
    Trailers { bytes: u16, fields: u8 },
}

/// Why a body's framing cannot be read: where the body ends is not known, so neither the message nor
/// the connection can be trusted after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Chunk data not followed by CRLF.
    DataWithoutCrlf,
    /// A chunk size that does not fit in 64 bits.
    SizeTooLarge,
    /// A chunk-size line that does not start with a hex digit (this byte instead).
    NotHexDigit(u8),
    /// A CR in a chunk-size line not followed by LF.
    CrWithoutLf,
    /// A chunk-size line ended by LF alone.
    BareLfInSizeLine,
    /// A control character in a chunk extension.
    ControlInExtension(u8),
    /// Something after the size that is neither whitespace, an extension nor the line's end.
    AfterSize(u8),
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    SizeLineTooLong,
    /// More than [`MAX_HEADERS`] trailer fields.
    TooManyTrailers,
    /// A trailer section longer than [`MAX_TRAILERS`].
    TrailersTooLong,
    /// A trailer line ended by LF alone.
    BareLfInTrailers,
    /// A trailer line that is not `name: value`.
    InvalidTrailerField,
    /// The bytes ended (the peer closed the connection) before the framing said the body ends.
    Truncated,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const INVALID: &str = "invalid chunked body";
        const SIZE_LINE: &str = "invalid chunked body: invalid chunk size line";
        match *self {
            FramingError::DataWithoutCrlf => {
                write!(f, "{INVALID}: chunk data is not followed by CRLF")
            }
            FramingError::SizeTooLarge => {
                write!(f, "{INVALID}: invalid chunk size: larger than 64 bits")
            }
            FramingError::NotHexDigit(byte) => {
                write!(
                    f,
                    "{SIZE_LINE}: expected a hex digit, found {}",
                    shown(byte)
                )
            }
            FramingError::CrWithoutLf => write!(f, "{SIZE_LINE}: CR without LF"),
            FramingError::BareLfInSizeLine => write!(f, "{SIZE_LINE}: bare LF (expected CRLF)"),
            FramingError::ControlInExtension(byte) => {
                write!(f, "{SIZE_LINE}: {} in a chunk extension", shown(byte))
            }
            FramingError::AfterSize(byte) => {
                write!(f, "{SIZE_LINE}: {} after the size", shown(byte))
            }
            FramingError::SizeLineTooLong => write!(
                f,
                "{INVALID}: chunk size line longer than {} KiB",
                MAX_CHUNK_LINE / 1024
            ),
            FramingError::TooManyTrailers => {
                write!(f, "{INVALID}: more than {MAX_HEADERS} trailer fields")
            }
            FramingError::TrailersTooLong => write!(
                f,
                "{INVALID}: trailer section longer than {} KiB",
                MAX_TRAILERS / 1024
            ),
            FramingError::BareLfInTrailers => {
                write!(
                    f,
                    "{INVALID}: bare LF in the trailer section (expected CRLF)"
                )
            }
            FramingError::InvalidTrailerField => write!(f, "{INVALID}: invalid trailer field"),
            FramingError::Truncated => f.write_str("connection closed before the body ended"),
        }
    }
}

impl std::error::Error for FramingError {}

/// Consume framing that carries no data while the buffer holds it; stops at data or missing bytes.
pub(crate) fn advance(framing: &mut Framing, buf: &mut BytesMut) -> Result<(), FramingError> {
    loop {
        match *framing {
            Framing::Length(0) | Framing::Chunked(Chunk::Data(0)) => {
                *framing = match *framing {
                    Framing::Length(_) => Framing::Done,
                    _ => Framing::Chunked(Chunk::DataEnd),
                };
            }
            Framing::Chunked(Chunk::DataEnd) => match buf.get(..2) {
                Some(b"\r\n") => {
                    buf.advance(2);
                    *framing = Framing::Chunked(Chunk::Size);
                }
                None if buf.first().is_none_or(|&byte| byte == b'\r') => return Ok(()),
                _ => {
                    return Err(FramingError::DataWithoutCrlf);
                }
            },
            Framing::Chunked(Chunk::Size) => match chunk_size_line(buf)? {
                Some((used, size)) => {
                    buf.advance(used);
                    *framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers {
                            bytes: 0,
                            fields: 0,
                        }
                    } else {
                        Chunk::Data(size)
                    });
                }
                None => return Ok(()),
            },
            Framing::Chunked(Chunk::Trailers { bytes, fields }) => {
                match trailer_line(buf, bytes)? {
                    Some(0) => {
                        buf.advance(2);
                        *framing = Framing::Done;
                    }
                    Some(_) if usize::from(fields) >= MAX_HEADERS => {
                        return Err(FramingError::TooManyTrailers);
                    }
                    Some(used) => {
                        buf.advance(used);
                        // `trailer_line` bounds `bytes + used` by MAX_TRAILERS (16 KiB), and fields
                        // are at most MAX_HEADERS (100).
                        *framing = Framing::Chunked(Chunk::Trailers {
                            bytes: bytes + used as u16,
                            fields: fields + 1,
                        });
                    }
                    None => return Ok(()),
                }
            }
            Framing::Length(_)
            | Framing::Chunked(Chunk::Data(_))
            | Framing::UntilClose
            | Framing::Done => return Ok(()),
        }
    }
}

/// A chunk-size line at the start of `buf` (RFC 9112 §7.1: `1*HEXDIG [ BWS ";" chunk-ext ] CRLF`; like
/// hyper, whitespace after the size is taken without an extension too): its length and the size;
/// `None` while incomplete. Checked as far as it has arrived, so a bad line fails before its end.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, FramingError> {
    let line = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let mut size = 0u64;
    let mut at = 0;
    while let Some(&byte) = line.get(at) {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => break,
        };
        if size >> 60 != 0 {
            return Err(FramingError::SizeTooLarge);
        }
        size = size << 4 | u64::from(digit);
        at += 1;
    }
    // The usual line: the size, then CRLF.
    if at > 0 && line.get(at..at + 2) == Some(b"\r\n") {
        return Ok(Some((at + 2, size)));
    }
    chunk_size_line_rest(buf, line, at, size)
}

/// [`chunk_size_line`] from `at`, after the size's digits, when CRLF does not follow them at once.
#[cold]
fn chunk_size_line_rest(
    buf: &[u8],
    line: &[u8],
    mut at: usize,
    size: u64,
) -> Result<Option<(usize, u64)>, FramingError> {
    if let Some(&byte) = line.get(at)
        && at == 0
    {
        return Err(FramingError::NotHexDigit(byte));
    }
    while line
        .get(at)
        .is_some_and(|&byte| byte == b' ' || byte == b'\t')
    {
        at += 1;
    }
    let mut extension = false;
    while let Some(&byte) = line.get(at) {
        match byte {
            b'\r' => {
                return match line.get(at + 1) {
                    Some(b'\n') => Ok(Some((at + 2, size))),
                    Some(_) => Err(FramingError::CrWithoutLf),
                    None => incomplete(buf),
                };
            }
            b'\n' => {
                return Err(FramingError::BareLfInSizeLine);
            }
            b';' => extension = true,
            // RFC 9112 §7.1.1: tokens and quoted strings, no control characters.
            b'\t' if extension => {}
            _ if extension && !byte.is_ascii_control() => {}
            _ if extension => {
                return Err(FramingError::ControlInExtension(byte));
            }
            _ => {
                return Err(FramingError::AfterSize(byte));
            }
        }
        at += 1;
    }
    incomplete(buf)
}

/// One line of a trailer section at the start of `buf`, after `seen` bytes of earlier ones: `Some(0)`
/// for the empty line that ends the section, else the field line's length (CRLF included); `None`
/// while incomplete. Each line must end in CRLF and be `name: value` (RFC 9112 §7.1.2, §5).
fn trailer_line(buf: &[u8], seen: u16) -> Result<Option<usize>, FramingError> {
    let room = MAX_TRAILERS.saturating_sub(usize::from(seen));
    let line = &buf[..buf.len().min(room)];
    let Some(end) = memchr::memchr(b'\n', line) else {
        // What has arrived is checked already, so a bad line fails before its end.
        check_field_line(line, false)?;
        if buf.len() >= room {
            return Err(FramingError::TrailersTooLong);
        }
        return Ok(None);
    };
    if end == 0 || line[end - 1] != b'\r' {
        return Err(FramingError::BareLfInTrailers);
    }
    if end == 1 {
        return Ok(Some(0));
    }
    check_field_line(&line[..end - 1], true)?;
    Ok(Some(end + 1))
}

/// A trailer field line without its CRLF (`whole`) or the part of it that has arrived: a token, `:`,
/// then a value without control characters but HTAB (no obs-fold, no whitespace before the colon).
fn check_field_line(line: &[u8], whole: bool) -> Result<(), FramingError> {
    let invalid = || Err(FramingError::InvalidTrailerField);
    let name_end = line.iter().position(|&byte| !is_token(byte));
    match name_end {
        // The CR of the empty line that ends the section, its LF still to come.
        Some(0) if !whole && line == b"\r" => Ok(()),
        Some(0) => invalid(),
        Some(colon) if line[colon] != b':' => invalid(),
        Some(colon) => {
            let value = &line[colon + 1..];
            let value = if whole {
                value
            } else {
                value.strip_suffix(b"\r").unwrap_or(value)
            };
            if value
                .iter()
                .any(|&byte| byte != b'\t' && byte.is_ascii_control())
            {
                return invalid();
            }
            Ok(())
        }
        None if whole => invalid(),
        None => Ok(()),
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A chunk-size line not complete yet: `None` unless [`MAX_CHUNK_LINE`] bytes arrived without its end.
fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, FramingError> {
    if buf.len() >= MAX_CHUNK_LINE {
        return Err(FramingError::SizeLineTooLong);
    }
    Ok(None)
}

/// A byte for an error message: `'z'`, or `0x0b` when it is not printable.
fn shown(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", char::from(byte))
    } else {
        format!("0x{byte:02x}")
    }
}

/// The next data the buffer holds, after any framing before it.
pub(crate) fn take_data(
    framing: &mut Framing,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, FramingError> {
    advance(framing, buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    let data = match framing {
        Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
            let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
            *left -= take as u64;
            buf.split_to(take).freeze()
        }
        Framing::UntilClose => buf.split().freeze(),
        _ => return Ok(None),
    };
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `wire` (a body after its head) delivered in the given pieces: the data, and whether
    /// the end was recognised.
    fn decode(mut framing: Framing, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while let Some(bytes) = take_data(&mut framing, &mut buf).map_err(|e| e.to_string())? {
                data.extend_from_slice(&bytes);
            }
        }
        Ok((data, framing == Framing::Done && buf.is_empty()))
    }

    const CHUNKED: &[u8] =
        b"5;ext=1\r\nhello\r\n1A\r\n, world of chunked bodies!\r\n0\r\nx-trailer: 1\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_split() {
        let whole = decode(Framing::Chunked(Chunk::Size), &[CHUNKED]).unwrap();
        assert_eq!(
            whole,
            (b"hello, world of chunked bodies!".to_vec(), true),
            "{whole:?}"
        );
        for one in 0..=CHUNKED.len() {
            for two in one..=CHUNKED.len() {
                let pieces = [&CHUNKED[..one], &CHUNKED[one..two], &CHUNKED[two..]];
                assert_eq!(
                    decode(Framing::Chunked(Chunk::Size), &pieces).unwrap(),
                    whole,
                    "split at {one} and {two}"
                );
            }
        }
        let plain_end = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            decode(Framing::Chunked(Chunk::Size), &[plain_end]).unwrap(),
            (b"abc".to_vec(), true)
        );
        let unfinished = decode(Framing::Chunked(Chunk::Size), &[&CHUNKED[..40]]).unwrap();
        assert!(!unfinished.1);
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [&b"zz\r\nabc\r\n"[..], b"3\r\nabcX\r\n0\r\n\r\n"] {
            let error = decode(Framing::Chunked(Chunk::Size), &[wire]).unwrap_err();
            assert!(error.starts_with("invalid chunked body"), "{error}");
        }
    }

    /// Issue 23: chunked framing read as RFC 9112 §7.1 writes it — every case here was taken before
    /// (httparse's chunk-size parser and a search for CRLFCRLF), and the first one let a request's head
    /// be read as trailers and its body as the next request.
    #[test]
    fn lenient_chunked_framing_is_an_error() {
        let cases: [(&[u8], &str); 18] = [
            (b"3\r\nabc\r\n0\r\n\nPOST / HTTP/1.1\r\n\r\n", "bare LF"),
            (b"3\r\nabc\r\n0\r\nx: 1\n\r\n", "bare LF"),
            (b"3\nabc\r\n0\r\n\r\n", "bare LF"),
            (b"3;a\nabc\r\n0\r\n\r\n", "bare LF"),
            (b"3\r\nabc\n0\r\n\r\n", "not followed by CRLF"),
            (
                b"\r\n3\r\nabc\r\n0\r\n\r\n",
                "expected a hex digit, found 0x0d",
            ),
            (b";a\r\nabc\r\n0\r\n\r\n", "expected a hex digit, found ';'"),
            (b" 3\r\nabc\r\n", "expected a hex digit"),
            (b"3 4\r\nabcd\r\n", "'4' after the size"),
            (b"3x\r\nabc\r\n", "'x' after the size"),
            (b"3;a=\x01\r\nabc\r\n", "0x01 in a chunk extension"),
            (b"3\rabc", "CR without LF"),
            (b"10000000000000000\r\n", "larger than 64 bits"),
            (b"3\r\nabc\r\n0\r\nx : 1\r\n\r\n", "invalid trailer field"),
            (
                b"3\r\nabc\r\n0\r\nx: 1\r\n folded\r\n\r\n",
                "invalid trailer field",
            ),
            (
                b"3\r\nabc\r\n0\r\nx: a\x00b\r\n\r\n",
                "invalid trailer field",
            ),
            (b"3\r\nabc\r\n0\r\n: 1\r\n\r\n", "invalid trailer field"),
            // Found by the fuzz target `server_request`: a bare CR taken as a trailer field line
            // when the whole section had arrived (in pieces it was refused).
            (b"3\r\nabc\r\n0\r\n\r\r\n\r\n", "invalid trailer field"),
        ];
        for (wire, expected) in cases {
            // Whole, and byte by byte: a bad line fails before its end has arrived.
            let whole = decode(Framing::Chunked(Chunk::Size), &[wire]).unwrap_err();
            assert!(
                whole.starts_with("invalid chunked body") && whole.contains(expected),
                "{:?}: {whole}",
                String::from_utf8_lossy(wire)
            );
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            let split = decode(Framing::Chunked(Chunk::Size), &bytes).unwrap_err();
            assert_eq!(split, whole, "{:?}", String::from_utf8_lossy(wire));
        }

        let long_extension = [&b"3;"[..], &[b'a'; MAX_CHUNK_LINE], b"\r\nabc\r\n"].concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&long_extension]).unwrap_err();
        assert!(
            error.contains("chunk size line longer than 16 KiB"),
            "{error}"
        );
        let many_trailers = [
            &b"0\r\n"[..],
            &b"x-trailer: 0123456789\r\n".repeat(MAX_TRAILERS / 20),
            b"\r\n",
        ]
        .concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&many_trailers]).unwrap_err();
        assert!(error.contains("more than 100 trailer fields"), "{error}");
        let long_trailers = [
            &b"0\r\n"[..],
            &[&b"x-trailer: "[..], &[b'a'; 1000], b"\r\n"]
                .concat()
                .repeat(17),
            b"\r\n",
        ]
        .concat();
        let error = decode(Framing::Chunked(Chunk::Size), &[&long_trailers]).unwrap_err();
        assert!(
            error.contains("trailer section longer than 16 KiB"),
            "{error}"
        );
    }

    #[test]
    fn strict_chunked_framing_still_takes_what_rfc_9112_allows() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"0000000000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
            (
                b"A\r\n0123456789\r\nb\r\n0123456789a\r\n00\r\n\r\n",
                b"01234567890123456789a",
            ),
            (b"3 ;name=value;q=\"a b\"\r\nabc\r\n0;last\r\n\r\n", b"abc"),
            (b"3\t\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"3;\xff\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"3\r\nabc\r\n0\r\nx-a: 1\r\nX-B:\t2 \r\n\r\n", b"abc"),
        ];
        for (wire, body) in cases {
            let bytes: Vec<&[u8]> = wire.chunks(1).collect();
            for pieces in [&[wire][..], &bytes] {
                let decoded = decode(Framing::Chunked(Chunk::Size), pieces)
                    .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(wire)));
                assert_eq!(
                    decoded,
                    (body.to_vec(), true),
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
        // The largest size there is: valid, its data still to come.
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\n"[..]);
        assert_eq!(take_data(&mut framing, &mut buf).unwrap(), None);
        assert_eq!(framing, Framing::Chunked(Chunk::Data(u64::MAX)));
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (data, done) = decode(Framing::Length(3), &[b"a", b"bc"]).unwrap();
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
        // Bytes after the body are not part of it (and keep the connection from being reused).
        let mut framing = Framing::Length(2);
        let mut buf = BytesMut::from(&b"abEXTRA"[..]);
        assert_eq!(take_data(&mut framing, &mut buf).unwrap().unwrap(), "ab");
        assert_eq!(take_data(&mut framing, &mut buf).unwrap(), None);
        assert_eq!((framing, &buf[..]), (Framing::Done, &b"EXTRA"[..]));
    }
}
