//! `Secret`: a string (API key) whose Debug, Display and Serialize never show the value; and
//! `redact_userinfo`, which hides the credentials of URLs inside any text (config errors).

use std::borrow::Cow;
use std::fmt;

/// An upstream or client key. Formatting prints `*****`; only `expose()` reveals the value, and it is
/// called exactly where the key goes on the wire (an upstream request header), is hashed or is compared.
/// Deserializes from a plain string (`keys[].key` in the config).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("*****")
    }
}

/// `text` with the userinfo of every URL in it (`scheme://user:pass@host`) replaced by `*****`, so a
/// message that quotes a URL — valid or not — can be shown. A URL runs to the next whitespace or quote,
/// and everything between `://` and its last `@` is hidden: a password with a raw `/` or `@` (which
/// makes the URL invalid, and so quoted in an error) is hidden too.
pub(crate) fn redact_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        let end = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>'))
            .map_or(rest.len(), |end| start + end);
        match rest[start..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str(&rest[..start]);
                out.push_str("*****");
                out.push_str(&rest[start + userinfo_end..end]);
            }
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redact_userinfo;

    #[test]
    fn userinfo_is_hidden_in_any_text() {
        assert_eq!(
            redact_userinfo("backends.x.url: 'http://user:PASS@host:99999' is not a valid URL"),
            "backends.x.url: 'http://*****@host:99999' is not a valid URL"
        );
        assert_eq!(
            redact_userinfo("a http://u:p/w@h/v1 and \"https://k@h2\" then http://plain/x@"),
            "a http://*****@h/v1 and \"https://*****@h2\" then http://*****@"
        );
        assert_eq!(redact_userinfo("no url: a@b"), "no url: a@b");
        assert_eq!(redact_userinfo("http://h:1/v1"), "http://h:1/v1");
        assert_eq!(
            redact_userinfo("redis://:pw@r:6379/0"),
            "redis://*****@r:6379/0"
        );
    }

    #[test]
    fn never_prints_the_value() {
        let secret = super::Secret::new("sk-live-123");
        assert_eq!(format!("{secret:?} {secret}"), "***** *****");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"*****\"");
        assert_eq!(secret.expose(), "sk-live-123");
        let read: super::Secret = serde_json::from_str("\"sk-live-456\"").unwrap();
        assert_eq!(read.expose(), "sk-live-456");
        assert_eq!(format!("{read:?}"), "*****");
    }
}
