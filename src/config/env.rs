//! The environment a config is loaded in: process variables plus an optional `.env` file.
//!
//! Loading never mutates the process environment (`set_var` races with other threads); the `.env`
//! values sit in this map instead, under the real environment, which wins.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment, plus `.env` in the working directory when present.
    pub fn from_process() -> Env {
        let mut env = Env::default();
        env.merge_dotenv(Path::new(".env"));
        for (key, value) in std::env::vars() {
            env.vars.insert(key, value);
        }
        env
    }

    /// An environment made of exactly these variables (tests, `check`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn merge_dotenv(&mut self, path: &Path) {
        let Ok(iter) = dotenvy::from_path_iter(path) else {
            return;
        };
        for (key, value) in iter.flatten() {
            self.vars.insert(key, value);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Variables whose name starts with `prefix`.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.vars
            .iter()
            .filter(move |(key, _)| key.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
