//! Client API keys: configured secrets → `Principal`, with constant-time comparison and model allow-lists.
//!
//! Keys are stored only as SHA-256 digests: `key:` values are hashed at load, `key_sha256:` entries
//! are digests already. A presented key is hashed and looked up by digest; the final comparison is
//! constant-time. Looking up by digest leaks at most timing about the digest, which reveals nothing
//! about the secret, and keeps authentication O(1) for any number of keys.

use hashbrown::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config_error::Invalid;
use crate::limit_rules::{KeyRateLimitConfig, QuotaConfig};
use crate::secret::Secret;

/// One `keys:` entry. `key` arrives with `${ENV}` already interpolated by the config loader.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name used in logs, metrics, usage and error messages (never the secret).
    pub name: String,
    /// The plaintext key; hidden from Debug.
    #[serde(default)]
    pub key: Option<Secret>,
    /// Hex SHA-256 of the key, so no plaintext key needs to sit in a file.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Models this key may use; absent means all. An entry ending in `*` matches a prefix.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Grants access to admin endpoints.
    #[serde(default)]
    pub admin: bool,
    /// Overrides `rate_limit.per_key` for this key.
    #[serde(default)]
    pub rate_limit: Option<KeyRateLimitConfig>,
    /// Requests/tokens allowed per period for this key.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
}

/// An authenticated client key and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub admin: bool,
    /// `None` means every model is allowed.
    pub models: Option<Arc<[String]>>,
}

/// Why a request could not be authenticated or authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing api key; send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")]
    Missing,
    #[error("invalid api key")]
    Invalid,
    #[error("model '{model}' is not allowed for key '{key}'; allowed models: {allowed}")]
    Forbidden {
        model: String,
        key: Arc<str>,
        allowed: String,
    },
}

impl AuthError {
    /// 401 for missing/invalid keys, 403 for a model outside the key's allow-list.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid => http::StatusCode::UNAUTHORIZED,
            AuthError::Forbidden { .. } => http::StatusCode::FORBIDDEN,
        }
    }
}

/// All configured keys of one config snapshot.
#[derive(Default)]
pub struct KeyStore {
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
    /// The same principals in config order (listings such as `GET /admin/keys` follow the config).
    ordered: Vec<Arc<Principal>>,
}

/// Lists key names only: even digests of weak keys could be brute-forced offline.
impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.ordered.iter().map(|p| &p.name))
            .finish()
    }
}

impl KeyStore {
    /// Validates and indexes the keys; the error names the entry (by name or position) and the problem.
    pub(crate) fn new(keys: &[KeyConfig]) -> Result<KeyStore, Invalid> {
        let mut by_digest = HashMap::with_capacity(keys.len());
        let mut ordered = Vec::with_capacity(keys.len());
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, entry) in keys.iter().enumerate() {
            let label = format!("keys[{i}] '{}'", entry.name);
            if entry.name.trim().is_empty() {
                return Err(Invalid::new(
                    "keys",
                    format!("keys[{i}]: name must not be empty"),
                ));
            }
            if let Some(first) = names.insert(&entry.name, i) {
                return Err(Invalid::new(
                    "keys",
                    format!("{label}: duplicate key name, first used by keys[{first}]"),
                ));
            }
            let digest = match (&entry.key, &entry.key_sha256) {
                (Some(_), Some(_)) => {
                    return Err(Invalid::new(
                        "keys",
                        format!("{label}: set either key or key_sha256, not both"),
                    ));
                }
                (None, None) => {
                    return Err(Invalid::new(
                        "keys",
                        format!("{label}: needs key or key_sha256"),
                    ));
                }
                (Some(secret), None) => {
                    let value = secret.expose();
                    if value.is_empty() {
                        return Err(Invalid::new(
                            "keys",
                            format!("{label}: key is empty (is its environment variable set?)"),
                        ));
                    }
                    if value.contains("${") {
                        return Err(Invalid::new(
                            "keys",
                            format!(
                                "{label}: key still contains an uninterpolated ${{...}} variable"
                            ),
                        ));
                    }
                    sha256(value.as_bytes())
                }
                (None, Some(hex_digest)) => parse_digest(hex_digest).ok_or_else(|| {
                    Invalid::new(
                        "keys",
                        format!("{label}: key_sha256 '{hex_digest}' must be 64 hex characters"),
                    )
                })?,
            };
            if let Some(models) = &entry.models
                && models.is_empty()
            {
                return Err(Invalid::new(
                    "keys",
                    format!(
                        "{label}: models is empty, so the key could use nothing; remove it to allow all"
                    ),
                ));
            }
            let principal = Principal {
                name: Arc::from(entry.name.as_str()),
                admin: entry.admin,
                models: entry.models.as_ref().map(|m| Arc::from(m.as_slice())),
            };
            let principal = Arc::new(principal);
            if let Some(other) = by_digest.insert(digest, Arc::clone(&principal)) {
                return Err(Invalid::new(
                    "keys",
                    format!("{label}: same key as '{}'", other.name),
                ));
            }
            ordered.push(principal);
        }
        Ok(KeyStore { by_digest, ordered })
    }

    /// True when no keys are configured: the gateway is open and requests carry no principal.
    pub(crate) fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Finds the principal for the key in `Authorization: Bearer` or `x-api-key`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, AuthError> {
        if self.is_open() {
            return Ok(None);
        }
        let presented = presented_key(headers).ok_or(AuthError::Missing)?;
        let digest = sha256(presented.as_bytes());
        match self.by_digest.get_key_value(&digest) {
            Some((stored, principal)) if bool::from(stored.ct_eq(&digest)) => {
                Ok(Some(Arc::clone(principal)))
            }
            _ => Err(AuthError::Invalid),
        }
    }

    /// Checks the key's model allow-list.
    pub(crate) fn check_model(principal: &Principal, model: &str) -> Result<(), AuthError> {
        let Some(models) = &principal.models else {
            return Ok(());
        };
        let allowed = models.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => m == model,
        });
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                model: model.to_owned(),
                key: Arc::clone(&principal.name),
                allowed: models.join(", "),
            })
        }
    }

    /// Looks up a principal by key name (for admin endpoints and usage queries).
    pub fn by_name(&self, name: &str) -> Option<Arc<Principal>> {
        self.ordered.iter().find(|p| &*p.name == name).cloned()
    }

    /// All principals, in config order.
    pub(crate) fn principals(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.ordered.iter()
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|k| !k.is_empty());
    bearer.or_else(|| {
        headers
            .get(crate::http::names::X_API_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<KeyConfig> {
        serde_json::from_str(&format!(
            r#"[
              {{"name": "team-a", "key": "sk-team-a", "models": ["deepseek-r1", "gpt-*"]}},
              {{"name": "team-b", "key_sha256": "{}", "admin": true}}
            ]"#,
            hex::encode(sha256(b"sk-team-b"))
        ))
        .unwrap()
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn principals_follow_config_order() {
        let mut cfg = keys();
        cfg.extend(keys().into_iter().map(|mut k| {
            k.name = format!("{}-2", k.name);
            k.key = k.key.map(|_| Secret::new(format!("sk-other-{}", k.name)));
            k.key_sha256 = k.key_sha256.map(|_| hex::encode(sha256(k.name.as_bytes())));
            k
        }));
        let store = KeyStore::new(&cfg).unwrap();
        let names: Vec<&str> = store.principals().map(|p| &*p.name).collect();
        assert_eq!(names, ["team-a", "team-b", "team-a-2", "team-b-2"]);
    }

    #[test]
    fn open_when_no_keys() {
        let store = KeyStore::new(&[]).unwrap();
        assert!(store.is_open());
        assert!(store.authenticate(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn bearer_and_x_api_key_and_sha256_entries_authenticate() {
        let store = KeyStore::new(&keys()).unwrap();
        assert!(!store.is_open());
        let a = store
            .authenticate(&headers("authorization", "Bearer sk-team-a"))
            .unwrap()
            .unwrap();
        assert_eq!(&*a.name, "team-a");
        assert!(!a.admin);
        let a2 = store
            .authenticate(&headers("authorization", "bearer  sk-team-a "))
            .unwrap()
            .unwrap();
        assert_eq!(&*a2.name, "team-a");
        let b = store
            .authenticate(&headers("x-api-key", "sk-team-b"))
            .unwrap()
            .unwrap();
        assert_eq!(&*b.name, "team-b");
        assert!(b.admin);
        assert!(store.by_name("team-b").is_some());
    }

    #[test]
    fn missing_and_invalid_keys_are_401() {
        let store = KeyStore::new(&keys()).unwrap();
        assert_eq!(
            store.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            store
                .authenticate(&headers("authorization", "Basic abc"))
                .unwrap_err(),
            AuthError::Missing
        );
        let err = store
            .authenticate(&headers("authorization", "Bearer sk-team-c"))
            .unwrap_err();
        assert_eq!(err, AuthError::Invalid);
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn model_allow_list_names_model_and_key() {
        let store = KeyStore::new(&keys()).unwrap();
        let a = store.by_name("team-a").unwrap();
        assert!(KeyStore::check_model(&a, "deepseek-r1").is_ok());
        assert!(KeyStore::check_model(&a, "gpt-4o").is_ok());
        let err = KeyStore::check_model(&a, "claude").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        let text = err.to_string();
        assert!(
            text.contains("'claude'") && text.contains("'team-a'"),
            "{text}"
        );
        assert!(KeyStore::check_model(&store.by_name("team-b").unwrap(), "anything").is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let cfg = keys();
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("sk-team-a") && text.contains("*****"),
            "{text}"
        );
        let store = KeyStore::new(&cfg).unwrap();
        let text = format!("{store:?}");
        assert!(
            text.contains("team-a") && !text.contains(&format!("{:?}", sha256(b"sk-team-a"))),
            "{text}"
        );
    }

    #[test]
    fn invalid_entries_are_named() {
        let cases = [
            (r#"[{"name": "x"}]"#, "keys[0] 'x': needs key"),
            (
                r#"[{"name": "x", "key": "a", "key_sha256": "00"}]"#,
                "not both",
            ),
            (r#"[{"name": "x", "key": ""}]"#, "key is empty"),
            (r#"[{"name": "x", "key_sha256": "zz"}]"#, "key_sha256 'zz'"),
            (
                r#"[{"name": "x", "key": "a"}, {"name": "x", "key": "b"}]"#,
                "keys[1] 'x': duplicate key name",
            ),
            (
                r#"[{"name": "x", "key": "a"}, {"name": "y", "key": "a"}]"#,
                "keys[1] 'y': same key as 'x'",
            ),
            (
                r#"[{"name": "x", "key": "a", "models": []}]"#,
                "models is empty",
            ),
        ];
        for (json, expected) in cases {
            let cfg: Vec<KeyConfig> = serde_json::from_str(json).unwrap();
            let err = KeyStore::new(&cfg).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
        assert!(
            serde_json::from_str::<Vec<KeyConfig>>(r#"[{"name": "x", "key": "a", "role": 1}]"#)
                .is_err()
        );
    }
}
