//! The label sets of the metric families, their borrowed forms (lookups in the handle caches without
//! allocating) and the bounded request-method label.

use hashbrown::Equivalent;
use prometheus_client::encoding::EncodeLabelSet;

use crate::telemetry::handles::LabelKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HttpLabels {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InFlightLabels {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamLabels {
    pub(super) upstream: String,
    pub(super) provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamStatusLabels {
    pub(super) upstream: String,
    pub(super) provider: &'static str,
    pub(super) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamErrorLabels {
    pub(super) upstream: String,
    pub(super) error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProviderLabels {
    pub(super) provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KeyLabels {
    pub(super) key_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendLabels {
    pub(super) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TokenLabels {
    pub(super) backend: String,
    pub(super) model: String,
    pub(super) direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InstanceLabels {
    pub(super) backend: String,
    pub(super) instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AffinityLabels {
    pub(super) backend: String,
    pub(super) decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct QueueRefusalLabels {
    pub(super) backend: String,
    pub(super) reason: &'static str,
}

/// Cache key of the token counters: both directions of one backend and model in one entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct BackendModel {
    pub(super) backend: String,
    pub(super) model: String,
}

/// Maps a request method onto a bounded set, so a client cannot mint new series with made-up methods.
pub(super) fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// A borrowed label value as its owned key holds it: a borrowed name is copied into a `String`;
/// `&'static str` kinds and status codes are taken as they are.
trait ToOwnedLabel<T> {
    fn to_owned_label(self) -> T;
}

impl ToOwnedLabel<String> for &str {
    fn to_owned_label(self) -> String {
        self.to_owned()
    }
}

impl<T: Copy> ToOwnedLabel<T> for T {
    fn to_owned_label(self) -> T {
        self
    }
}

// `borrowed_labels!(Ref<'a> => Owned { fields })` declares the borrowed form of a label set with owned
// strings, for cache lookups without allocating: it derives `Hash` over the same fields in the same order
// as its owned form, so both hash alike; it is `Equivalent` to the owned form field by field; and it
// builds the owned form on a cache miss (`LabelKey`).
macro_rules! borrowed_labels {
    ($name:ident<$lt:lifetime> => $owned:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        #[derive(Hash)]
        pub(super) struct $name<$lt> {
            $(pub(super) $field: $ty,)+
        }

        impl Equivalent<$owned> for $name<'_> {
            fn equivalent(&self, key: &$owned) -> bool {
                $(self.$field == key.$field)&&+
            }
        }

        impl LabelKey<$owned> for $name<'_> {
            fn to_key(&self) -> $owned {
                $owned {
                    $($field: ToOwnedLabel::to_owned_label(self.$field),)+
                }
            }
        }
    };
}

borrowed_labels!(UpstreamStatusRef<'a> => UpstreamStatusLabels {
    upstream: &'a str,
    provider: &'static str,
    status: u16,
});
borrowed_labels!(UpstreamErrorRef<'a> => UpstreamErrorLabels {
    upstream: &'a str,
    error_type: &'static str,
});
borrowed_labels!(KeyRef<'a> => KeyLabels { key_name: &'a str });
borrowed_labels!(BackendRef<'a> => BackendLabels { backend: &'a str });
borrowed_labels!(AffinityRef<'a> => AffinityLabels {
    backend: &'a str,
    decision: &'static str,
});
borrowed_labels!(BackendModelRef<'a> => BackendModel {
    backend: &'a str,
    model: &'a str,
});

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup with borrowed labels only hits when the borrowed form hashes like the owned key.
    #[test]
    fn borrowed_label_forms_hash_and_compare_like_their_owned_keys() {
        use std::hash::BuildHasher;
        let hasher = hashbrown::DefaultHashBuilder::default();
        fn same<Q: LabelKey<K>, K: Hash + Eq>(hasher: &hashbrown::DefaultHashBuilder, q: &Q) {
            let key = q.to_key();
            assert_eq!(hasher.hash_one(q), hasher.hash_one(&key));
            assert!(q.equivalent(&key));
        }
        use std::hash::Hash;
        same(
            &hasher,
            &UpstreamStatusRef {
                upstream: "vllm",
                provider: "openai",
                status: 200,
            },
        );
        same(
            &hasher,
            &UpstreamErrorRef {
                upstream: "vllm",
                error_type: "timeout",
            },
        );
        same(&hasher, &KeyRef { key_name: "team-a" });
        same(&hasher, &BackendRef { backend: "vllm" });
        same(
            &hasher,
            &BackendModelRef {
                backend: "vllm",
                model: "deepseek-r1",
            },
        );
        let other = KeyLabels {
            key_name: "team-b".to_owned(),
        };
        assert!(!KeyRef { key_name: "team-a" }.equivalent(&other));
    }
}
