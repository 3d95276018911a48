//! Config errors: `Invalid` (one refused value: where it sits in the file and what is wrong) and
//! `ConfigError` (a config that could not be loaded: which source, where inside it, what was expected).
//!
//! A leaf beside `config/`: the modules that own a config section (`auth`, `limits`, `routing::health`,
//! …) return `Invalid` from their validators, and `config/` reads those modules, so the type lives in
//! neither (no import cycle).

use std::fmt;

/// A refused config value: the path of its section inside the file (`backends.a.health`, `keys`) and
/// what is wrong, in words that name the offending field and value. Section validators return it
/// located at their own section name (`health`); the caller that knows where the section sits moves it
/// there with [`Invalid::under`]. An empty path means "not located yet" (or the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A refusal the caller will locate (its message names the field already).
    pub(crate) fn unlocated(message: impl Into<String>) -> Invalid {
        Invalid::new(String::new(), message)
    }

    /// The same refusal one level down: `health` under `backends.a` is `backends.a.health`; an
    /// unlocated one is placed at `parent`.
    pub(crate) fn under(self, parent: &str) -> Invalid {
        let path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_owned(),
            (false, false) => format!("{parent}.{}", self.path),
        };
        Invalid { path, ..self }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_str() {
            "" => f.write_str(&self.message),
            path => write!(f, "{path}: {}", self.message),
        }
    }
}

impl std::error::Error for Invalid {}

/// A config that could not be loaded: which file, where inside it, and what was expected.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source: String,
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) if !path.is_empty() => {
                write!(f, "{}: {}: {}", self.source, path, self.message)
            }
            _ => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use crate::config_error::Invalid;

    #[test]
    fn under_places_a_section_below_its_parent() {
        let health = Invalid::new("health", "health.error_threshold is 0");
        assert_eq!(
            health.clone().under("backends.a").to_string(),
            "backends.a.health: health.error_threshold is 0"
        );
        assert_eq!(health.clone().under(""), health);
        assert_eq!(
            Invalid::unlocated("keys[0]: name must not be empty")
                .under("keys")
                .path,
            "keys"
        );
        assert_eq!(Invalid::unlocated("m").to_string(), "m");
    }
}
