//! A strict parser of the classic Prometheus text exposition, plus lookups for assertions. The unit tests
//! in `src/telemetry/metrics/tests.rs` include this same file with `#[path]`.

use std::collections::{BTreeMap, BTreeSet};

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

/// A strict parser of the classic Prometheus text format, with promtool's lint rules: every sample
/// belongs to a declared family of a fitting type, every family has help text, counters end in
/// `_total`, label syntax and values are valid.
pub fn parse_prometheus_text(
    text: &str,
) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    if !text.ends_with('\n') {
        return Err("exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts
                .next()
                .ok_or(format!("line {n}: descriptor without name"))?;
            let arg = parts
                .next()
                .ok_or(format!("line {n}: descriptor without text"))?;
            if !is_name(name) {
                return Err(format!("line {n}: bad metric name {name:?}"));
            }
            match kind {
                "HELP" => {
                    if !helps.insert(name.to_owned()) {
                        return Err(format!("line {n}: duplicate HELP for {name}"));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(format!("line {n}: bad type {arg:?}"));
                    }
                    if arg == "counter" && !name.ends_with("_total") {
                        return Err(format!("line {n}: counter {name} lacks _total"));
                    }
                    if types.insert(name.to_owned(), arg.to_owned()).is_some() {
                        return Err(format!("line {n}: duplicate TYPE for {name}"));
                    }
                }
                other => return Err(format!("line {n}: unknown descriptor {other:?}")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or(format!("line {n}: sample without value: {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {n}: bad value {v:?}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("line {n}: unterminated labels"))?;
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest
                        .split_once("=\"")
                        .ok_or(format!("line {n}: bad label in {body:?}"))?;
                    if !is_label_name(key) {
                        return Err(format!("line {n}: bad label name {key:?}"));
                    }
                    let end = after
                        .find('"')
                        .ok_or(format!("line {n}: unterminated label value"))?;
                    let val = &after[..end];
                    if val.contains('\\') || val.contains('\n') {
                        return Err(format!("line {n}: unexpected escape in {val:?}"));
                    }
                    if labels.insert(key.to_owned(), val.to_owned()).is_some() {
                        return Err(format!("line {n}: duplicate label {key}"));
                    }
                    rest = &after[end + 1..];
                    if !rest.is_empty() {
                        rest = rest
                            .strip_prefix(',')
                            .ok_or(format!("line {n}: labels not comma-separated"))?;
                    }
                }
                (name, labels)
            }
        };
        if !is_name(name) {
            return Err(format!("line {n}: bad sample name {name:?}"));
        }
        let family_ok = types.iter().any(|(family, ty)| {
            let suffixes: &[&str] = match ty.as_str() {
                "histogram" => &["_bucket", "_count", "_sum"],
                "summary" => &["", "_count", "_sum"],
                _ => &[""],
            };
            suffixes
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family.as_str()))
        });
        if !family_ok {
            return Err(format!(
                "line {n}: sample {name} belongs to no declared family"
            ));
        }
        if name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(format!("line {n}: bucket without le"));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    if let Some(missing) = types.keys().find(|t| !helps.contains(*t)) {
        return Err(format!("{missing} has no help text"));
    }
    Ok((types, samples))
}

/// A parsed scrape.
pub struct Scrape {
    pub text: String,
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parse `text`, panicking with the parser's message and the whole exposition on error.
    pub fn parse(text: String) -> Scrape {
        let (types, samples) =
            parse_prometheus_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Scrape {
            text,
            types,
            samples,
        }
    }

    /// The value of the series `name` with exactly these labels, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Scrape::get`], failing the test with the family's series when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let family: Vec<String> = self
                .samples
                .iter()
                .filter(|s| s.name == name)
                .map(|s| format!("{:?} = {}", s.labels, s.value))
                .collect();
            panic!("no series {name}{labels:?}; present: {family:#?}")
        })
    }

    /// Every series of `name` whose labels include these pairs.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }
}
