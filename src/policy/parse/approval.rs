//! `approval`: where `require_approval` calls are sent (an Envoy cluster, the callout's authority, path,
//! timeout and extra headers). Whether a policy needs this section is checked with the rule sets
//! ([`super::rules::Sets::check_approval`]).

use super::errors::{at_key, kind, Errs};
use super::fields::{open_object, APPROVAL};
use super::{cluster, one_line, valid_header_name};
use crate::approval::{ApprovalConfig, DEFAULT_PATH, DEFAULT_TIMEOUT_MS};
use serde_json::Value;

/// The section at `path`; `None` when it has an error.
pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Option<ApprovalConfig> {
    let before = errs.count();
    let fix = "write {\"cluster\": \"approvals\"}";
    let o = open_object(errs, path, v, &APPROVAL, "an object", fix)?;
    let cluster = cluster(errs, &o, "approval service");
    let authority = one_line(errs, &o, "authority", "e.g. \"approvals.internal\"");
    let callout_path = one_line(errs, &o, "path", "e.g. \"/v1/approve\"");
    if let Some(p) = &callout_path {
        if !p.starts_with('/') {
            errs.push(
                &o.at("path"),
                format!("\"{p}\" does not start with /"),
                "e.g. \"/v1/approve\"",
            );
        }
    }
    let timeout_ms = match o.get("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => match t.as_u64().filter(|n| (1..=3_600_000).contains(n)) {
            Some(n) => n,
            None => {
                errs.push(
                    &o.at("timeout_ms"),
                    format!("expected milliseconds from 1 to 3600000, got {t}"),
                    "e.g. 30000",
                );
                DEFAULT_TIMEOUT_MS
            }
        },
    };
    let mut headers = Vec::new();
    match o.get("headers") {
        None => {}
        Some(Value::Object(h)) => {
            for (k, val) in h {
                match (valid_header_name(k), val.as_str()) {
                    (true, Some(s)) if !s.contains(['\r', '\n']) => {
                        headers.push((k.to_ascii_lowercase(), s.to_owned()))
                    }
                    _ => errs.push(
                        &at_key(&o.at("headers"), k),
                        format!("invalid header {k}: {val}"),
                        "use a plain header name and a one-line string value",
                    ),
                }
            }
        }
        Some(h) => errs.push(
            &o.at("headers"),
            format!(
                "expected an object of header names to values, got {}",
                kind(h)
            ),
            "e.g. {\"authorization\": \"Bearer ...\"}",
        ),
    }
    if errs.count() != before {
        return None;
    }
    let cluster = cluster?;
    Some(ApprovalConfig {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        path: callout_path.unwrap_or_else(|| DEFAULT_PATH.to_owned()),
        cluster,
        timeout_ms,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};
    use crate::policy::Action;

    #[test]
    fn approval_section() {
        let p = ok(r#"{"version":"1","default":"deny",
          "approval": {"cluster": "approvals", "authority": "approvals.internal", "path": "/v1/approve",
                       "timeout_ms": 5000, "headers": {"Authorization": "Bearer x"}},
          "tools": {"get_*": {}, "create_experiment": {"action": "require_approval", "reason": "Creating experiments needs a human"}}}"#);
        let a = p.approval.clone().unwrap();
        assert_eq!(
            (
                a.cluster.as_str(),
                a.authority.as_str(),
                a.path.as_str(),
                a.timeout_ms
            ),
            ("approvals", "approvals.internal", "/v1/approve", 5000)
        );
        assert_eq!(
            a.headers,
            vec![("authorization".to_string(), "Bearer x".to_string())]
        );
        assert_eq!(
            p.rule_for("create_experiment").unwrap().action,
            Action::RequireApproval
        );
        let d = ok(r#"{"version":"1","default":"require_approval","approval":{"cluster":"c"}}"#);
        let a = d.approval.unwrap();
        assert_eq!(
            (a.authority.as_str(), a.path.as_str(), a.timeout_ms),
            ("c", "/approve", 30_000)
        );
    }

    #[test]
    fn approval_errors() {
        let e =
            one_error(r#"{"version":"1","tools":{"create_run":{"action":"require_approval"}}}"#);
        assert_eq!(e.path, r#"tools["create_run"].action"#);
        assert!(e.message.contains("needs an `approval` section"));
        assert_eq!(
            one_error(r#"{"version":"1","default":"require_approval"}"#).path,
            "default"
        );
        for (a, path) in [
            (r#"{}"#, "approval.cluster"),
            (r#"{"cluster": ""}"#, "approval.cluster"),
            (r#"{"cluster": "c", "path": "approve"}"#, "approval.path"),
            (
                r#"{"cluster": "c", "timeout_ms": 0}"#,
                "approval.timeout_ms",
            ),
            (
                r#"{"cluster": "c", "headers": {"a b": "x"}}"#,
                r#"approval.headers["a b"]"#,
            ),
            (
                r#"{"cluster": "c", "headers": {":path": "x"}}"#,
                r#"approval.headers[":path"]"#,
            ),
            (r#"{"cluster": "c", "headers": []}"#, "approval.headers"),
            (r#"{"cluster": "c", "url": "x"}"#, "approval.url"),
            (r#""c""#, "approval"),
        ] {
            let e = one_error(&format!(r#"{{"version":"1","approval":{a}}}"#));
            assert_eq!(e.path, path, "{a}: {e}");
        }
    }
}
