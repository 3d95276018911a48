//! `Secret`: a string (API key) whose Debug, Display and Serialize never show the value.

use std::fmt;

/// An upstream or client key. Formatting prints `*****`; only `expose()` reveals the value, and it is
/// called exactly where the key goes on the wire (an upstream request header) or is compared.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
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

#[cfg(test)]
mod tests {
    #[test]
    fn never_prints_the_value() {
        let secret = super::Secret::new("sk-live-123");
        assert_eq!(format!("{secret:?} {secret}"), "***** *****");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"*****\"");
        assert_eq!(secret.expose(), "sk-live-123");
    }
}
