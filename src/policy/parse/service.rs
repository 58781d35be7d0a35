//! `rate_limit_service`: Envoy's rate limit service that counts the policy's limits for the whole fleet (its
//! cluster, the `domain` of its requests, how long a call waits for it, and what happens when it cannot say).
//! Which limits it counts, and the windows it can count, are checked with each limit (`limits.rs`).

use super::errors::Errs;
use super::fields::{open_object, RATE_LIMIT_SERVICE};
use super::{cluster, one_line};
use crate::limits::fleet::{
    OnError, RateLimitService, DEFAULT_DOMAIN, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};
use crate::limits::rls;
use serde_json::Value;

/// The section at `path`; `None` when it has an error.
pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Option<RateLimitService> {
    let before = errs.count();
    let fix = "write {\"cluster\": \"ratelimit\"}";
    let o = open_object(errs, path, v, &RATE_LIMIT_SERVICE, "an object", fix)?;
    let cluster = cluster(errs, &o, "rate limit service");
    if let Some(c) = &cluster {
        if rls::is_wire_format(c.as_bytes()) {
            errs.push(
                &o.at("cluster"),
                format!("Envoy would read the cluster name \"{c}\" as a serialized gRPC service description, not as a name (proxy-wasm's gRPC call takes either, and tries the description first)"),
                "rename the cluster in Envoy and here (names such as \"ratelimit\" are read as names)",
            );
        }
    }
    let domain = one_line(
        errs,
        &o,
        "domain",
        "e.g. \"mcp-policy\": the domain the service's configuration declares (Limitador: the namespace)",
    );
    let timeout_ms = match o.get("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => match t.as_u64().filter(|n| (1..=MAX_TIMEOUT_MS).contains(n)) {
            Some(n) => n,
            None => {
                errs.push(
                    &o.at("timeout_ms"),
                    format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}, got {t}"),
                    "e.g. 100: a call waits this long for the service at most",
                );
                DEFAULT_TIMEOUT_MS
            }
        },
    };
    let on_error = match o.get("on_error") {
        None => OnError::Deny,
        Some(e) => match e.as_str() {
            Some("deny") => OnError::Deny,
            Some("allow") => OnError::Allow,
            _ => {
                errs.push(
                    &o.at("on_error"),
                    format!("invalid on_error {e}"),
                    "use \"deny\" (refuse calls while the service cannot answer, the default) or \"allow\" (forward them uncounted)",
                );
                OnError::Deny
            }
        },
    };
    if errs.count() != before {
        return None;
    }
    Some(RateLimitService {
        cluster: cluster?,
        domain: domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned()),
        timeout_ms,
        on_error,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};
    use crate::limits::fleet::{OnError, RateLimitService};

    #[test]
    fn section_and_defaults() {
        let p = ok(
            r#"{"version":"1","rate_limit_service":{"cluster":"ratelimit","domain":"mcp-prod",
                      "timeout_ms":250,"on_error":"allow"}}"#,
        );
        assert_eq!(
            p.rate_limit_service,
            Some(RateLimitService {
                cluster: "ratelimit".into(),
                domain: "mcp-prod".into(),
                timeout_ms: 250,
                on_error: OnError::Allow
            })
        );
        let d = ok(r#"{"version":"1","rate_limit_service":{"cluster":"rl"}}"#)
            .rate_limit_service
            .unwrap();
        assert_eq!(
            (d.domain.as_str(), d.timeout_ms, d.on_error),
            ("mcp-policy", 100, OnError::Deny)
        );
        assert!(ok(r#"{"version":"1"}"#).rate_limit_service.is_none());
    }

    #[test]
    fn section_errors() {
        for (s, path) in [
            (r#""rl""#, "rate_limit_service"),
            (r#"{}"#, "rate_limit_service.cluster"),
            (r#"{"cluster": " "}"#, "rate_limit_service.cluster"),
            (r#"{"cluster": "a\nb"}"#, "rate_limit_service.cluster"),
            (
                r#"{"cluster": "c", "domain": ""}"#,
                "rate_limit_service.domain",
            ),
            (
                r#"{"cluster": "c", "domain": 7}"#,
                "rate_limit_service.domain",
            ),
            (
                r#"{"cluster": "c", "timeout_ms": 0}"#,
                "rate_limit_service.timeout_ms",
            ),
            (
                r#"{"cluster": "c", "timeout_ms": 60001}"#,
                "rate_limit_service.timeout_ms",
            ),
            (
                r#"{"cluster": "c", "on_error": "fail"}"#,
                "rate_limit_service.on_error",
            ),
            (
                r#"{"cluster": "c", "on_eror": "deny"}"#,
                "rate_limit_service.on_eror",
            ),
            (r#"{"cluster": "H0"}"#, "rate_limit_service.cluster"),
        ] {
            let e = one_error(&format!(r#"{{"version":"1","rate_limit_service":{s}}}"#));
            assert_eq!(e.path, path, "{s}: {e}");
        }
        let e =
            one_error(r#"{"version":"1","rate_limit_service":{"cluster":"c","on_eror":"deny"}}"#);
        assert!(e.fix.contains("did you mean `on_error`"), "{e}");
    }
}
