//! `identity`: which request headers identify the caller that session-scoped rate limits count, and how many
//! distinct identities the rate-limit state tracks.

use super::errors::Errs;
use super::fields::{open_object, IDENTITY};
use super::valid_header_name;
use crate::policy::Identity;
use serde_json::Value;

/// Largest `identity.max_tracked`.
pub(super) const MAX_TRACKED_LIMIT: u64 = 1 << 20;

pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Identity {
    let mut id = Identity::default();
    let fix = "write {\"headers\": [\"mcp-session-id\"]}";
    let Some(o) = open_object(errs, path, v, &IDENTITY, "an object", fix) else {
        return id;
    };
    if let Some(h) = o.get("headers") {
        match h.as_array() {
            Some(list) if !list.is_empty() => {
                let mut names = Vec::new();
                for (i, n) in list.iter().enumerate() {
                    match n.as_str() {
                        Some(s) if valid_header_name(s) => names.push(s.to_ascii_lowercase()),
                        _ => errs.push(
                            &format!("{}[{i}]", o.at("headers")),
                            format!("invalid header name {n}"),
                            "use a header name such as \"x-agent-id\"",
                        ),
                    }
                }
                id.headers = names;
            }
            _ => errs.push(
                &o.at("headers"),
                format!("expected a non-empty list of header names, got {h}"),
                "e.g. [\"x-agent-id\", \"mcp-session-id\"]",
            ),
        }
    }
    if let Some(m) = o.get("max_tracked") {
        match m
            .as_u64()
            .filter(|n| (1..=MAX_TRACKED_LIMIT).contains(n))
            .and_then(|n| u32::try_from(n).ok())
        {
            Some(n) => id.max_tracked = n,
            None => errs.push(
                &o.at("max_tracked"),
                format!("expected a whole number from 1 to {MAX_TRACKED_LIMIT}, got {m}"),
                "e.g. 65536 (each tracked identity costs about 160 bytes of shared memory)",
            ),
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::super::testing::one_error;

    #[test]
    fn identity_errors() {
        assert_eq!(
            one_error(r#"{"version":"1","identity":[]}"#).path,
            "identity"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"headers":[]}}"#).path,
            "identity.headers"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"headers":["bad header"]}}"#).path,
            "identity.headers[0]"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"max_tracked":0}}"#).path,
            "identity.max_tracked"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"header":["a"]}}"#).path,
            "identity.header"
        );
    }
}
