//! What a validation problem looks like ([`ConfigError`], [`ConfigErrors`]) and how parsing collects them
//! ([`Errs`]); how JSON paths are spelled (`tools["get_*"].conditions[0].op`); the "did you mean" hint (edit
//! distance) and the short names of JSON types used in messages.

use serde_json::Value;
use std::fmt;

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, e.g. `tools["search_runs"].conditions[0].op` (`$` for the document itself).
    pub path: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.path, self.message, self.fix)
    }
}

/// Every problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid mcp-policy configuration ({} error{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// The problems found so far, in the order they were found (the order they are reported in).
pub(super) struct Errs(pub(super) Vec<ConfigError>);

impl Errs {
    pub(super) fn push(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// How many problems so far: a parser compares it before and after a part to know whether it was clean.
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }
}

/// The path of `field` inside the object at `prefix` (`""` for the document): `identity.headers`.
pub(super) fn join(prefix: &str, field: &str) -> String {
    let plain = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (prefix.is_empty(), plain) {
        (true, true) => field.to_owned(),
        (false, true) => format!("{prefix}.{field}"),
        // Keys that are not plain words (empty, dots, spaces) are quoted so the path stays unambiguous.
        (_, false) => at_key(prefix, field),
    }
}

/// The path of the entry `key` of the map at `prefix`, always quoted: `tools["get_*"]`.
pub(super) fn at_key(prefix: &str, key: &str) -> String {
    format!("{prefix}[{}]", Value::String(key.to_owned()))
}

/// How a message names the type of a value it did not expect.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The known word nearest to a typo (edit distance at most 2), for "did you mean" hints; the first of equals.
pub(super) fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&word.to_ascii_lowercase(), k), *k))
        // Short words are close to everything: allow one edit below 5 characters, two above.
        .filter(|(d, k)| *d <= if word.len().min(k.len()) < 5 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.last().copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
