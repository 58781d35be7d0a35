//! `callers`: where the verified caller identity comes from: `jwt` (the payload Envoy's `jwt_authn` verified,
//! with the claim paths of the subject and the groups) and `peer_certificate` (the client certificate's URI
//! SAN); `required` refuses requests without one.

use super::errors::{kind, Errs};
use super::fields::{open_object, CALLERS, JWT};
use crate::policy::{Callers, ClaimPath, Jwt};
use serde_json::Value;

/// Most segments in a claim path.
const MAX_CLAIM_DEPTH: usize = 16;

pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Option<Callers> {
    let fix = "write {\"jwt\": {\"metadata\": \"jwt_payload\"}} or {\"peer_certificate\": true}";
    let o = open_object(errs, path, v, &CALLERS, "an object", fix)?;
    let before = errs.count();
    let jwt = o.get("jwt").and_then(|j| jwt(errs, &o.at("jwt"), j));
    let peer_certificate = o
        .boolean(
            errs,
            "peer_certificate",
            "true reads the verified client certificate's URI SAN",
        )
        .unwrap_or(false);
    let required = o
        .boolean(
            errs,
            "required",
            "true refuses requests without a verified identity (HTTP 401)",
        )
        .unwrap_or(false);
    if errs.count() != before {
        return None;
    }
    if jwt.is_none() && !peer_certificate {
        errs.push(
            path,
            "no identity source: without `jwt` or `peer_certificate: true` no caller is ever known",
            fix,
        );
        return None;
    }
    Some(Callers {
        jwt,
        peer_certificate,
        required,
    })
}

fn jwt(errs: &mut Errs, path: &str, v: &Value) -> Option<Jwt> {
    let fix = "write {\"metadata\": \"jwt_payload\", \"subject\": \"sub\", \"groups\": \"groups\"}";
    let o = open_object(errs, path, v, &JWT, "an object", fix)?;
    let metadata = match o.get("metadata") {
        Some(Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_control) => {
            Some(s.clone())
        }
        Some(m) => {
            errs.push(
                &o.at("metadata"),
                format!("expected a non-empty one-line string, got {m}"),
                "the `payload_in_metadata` of your jwt_authn provider (under Istio: the token's issuer)",
            );
            None
        }
        None => {
            errs.push(
                &o.at("metadata"),
                "missing required field",
                "add \"metadata\": \"jwt_payload\", the `payload_in_metadata` of your jwt_authn provider (under Istio: the issuer)",
            );
            None
        }
    };
    let subject = match o.get("subject") {
        None => Some(ClaimPath {
            text: "sub".into(),
            segments: vec!["sub".into()],
        }),
        Some(s) => claim_path(errs, &o.at("subject"), s),
    };
    let groups = match o.get("groups") {
        None => Some(None),
        Some(g) => claim_path(errs, &o.at("groups"), g).map(Some),
    };
    Some(Jwt {
        metadata: metadata?,
        subject: subject?,
        groups: groups?,
    })
}

/// `"realm_access.roles"` (dots between nested claims) or `["https://example.com/roles"]` (one segment per
/// element, for claim names that hold dots).
fn claim_path(errs: &mut Errs, path: &str, v: &Value) -> Option<ClaimPath> {
    let fix = "a claim name such as \"groups\", a dotted path such as \"realm_access.roles\", or a list of names such as [\"https://example.com/roles\"] for names that hold dots";
    let segments: Vec<String> = match v {
        Value::String(s) => s.split('.').map(str::to_owned).collect(),
        Value::Array(list) => list
            .iter()
            .map(|x| x.as_str().map(str::to_owned).unwrap_or_default())
            .collect(),
        other => {
            errs.push(
                path,
                format!("expected a claim path, got {}", kind(other)),
                fix,
            );
            return None;
        }
    };
    let bad = segments.is_empty()
        || segments.len() > MAX_CLAIM_DEPTH
        || segments
            .iter()
            .any(|s| s.is_empty() || s.chars().any(char::is_control));
    if bad {
        errs.push(
            path,
            format!("invalid claim path {v} (empty names, control characters or more than {MAX_CLAIM_DEPTH} levels)"),
            fix,
        );
        return None;
    }
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(ClaimPath { text, segments })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};

    #[test]
    fn sources_and_claim_paths() {
        let p = ok(
            r#"{"version":"1","callers":{"jwt":{"metadata":"https://issuer.example","subject":"email",
            "groups":"realm_access.roles"},"peer_certificate":true,"required":true}}"#,
        );
        let c = p.callers.unwrap();
        let jwt = c.jwt.unwrap();
        assert_eq!(jwt.metadata, "https://issuer.example");
        assert_eq!(jwt.subject.segments, ["email"]);
        let groups = jwt.groups.unwrap();
        assert_eq!(groups.segments, ["realm_access", "roles"]);
        assert_eq!(groups.text, "realm_access.roles");
        assert!(c.peer_certificate && c.required);
        let p = ok(
            r#"{"version":"1","callers":{"jwt":{"metadata":"m","groups":["https://x.example/roles"]}}}"#,
        );
        let jwt = p.callers.unwrap().jwt.unwrap();
        assert_eq!(jwt.subject.segments, ["sub"]);
        assert_eq!(jwt.groups.unwrap().segments, ["https://x.example/roles"]);
        let p = ok(r#"{"version":"1","callers":{"peer_certificate":true}}"#);
        let c = p.callers.unwrap();
        assert!(c.jwt.is_none() && !c.required);
        assert!(ok(r#"{"version":"1"}"#).callers.is_none());
    }

    #[test]
    fn callers_errors() {
        for (doc, path, text) in [
            (r#""jwt""#, "callers", "expected an object"),
            (r#"{}"#, "callers", "no identity source"),
            (
                r#"{"peer_certificate":false}"#,
                "callers",
                "no identity source",
            ),
            (r#"{"required":true}"#, "callers", "no identity source"),
            (
                r#"{"peer_certificate":"yes"}"#,
                "callers.peer_certificate",
                "true or false",
            ),
            (
                r#"{"peer_certificate":true,"required":1}"#,
                "callers.required",
                "true or false",
            ),
            (
                r#"{"jwt":{}}"#,
                "callers.jwt.metadata",
                "missing required field",
            ),
            (
                r#"{"jwt":{"metadata":""}}"#,
                "callers.jwt.metadata",
                "non-empty",
            ),
            (
                r#"{"jwt":{"metadata":"a\nb"}}"#,
                "callers.jwt.metadata",
                "one-line",
            ),
            (
                r#"{"jwt":{"metadata":"m","subject":""}}"#,
                "callers.jwt.subject",
                "invalid claim path",
            ),
            (
                r#"{"jwt":{"metadata":"m","subject":"a..b"}}"#,
                "callers.jwt.subject",
                "invalid claim path",
            ),
            (
                r#"{"jwt":{"metadata":"m","groups":[]}}"#,
                "callers.jwt.groups",
                "invalid claim path",
            ),
            (
                r#"{"jwt":{"metadata":"m","groups":[1]}}"#,
                "callers.jwt.groups",
                "invalid claim path",
            ),
            (
                r#"{"jwt":{"metadata":"m","groups":5}}"#,
                "callers.jwt.groups",
                "expected a claim path",
            ),
            (
                r#"{"jwt":{"metadata":"m","group":"g"}}"#,
                "callers.jwt.group",
                "unknown field",
            ),
            (r#"{"jwt":[]}"#, "callers.jwt", "expected an object"),
            (
                r#"{"mtls":true,"peer_certificate":true}"#,
                "callers.mtls",
                "unknown field",
            ),
        ] {
            let e = one_error(&format!(r#"{{"version":"1","callers":{doc}}}"#));
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(e.message.contains(text), "{doc}: {e}");
            assert!(!e.fix.is_empty());
        }
        let deep = vec!["a"; 17].join(".");
        let e = one_error(&format!(
            r#"{{"version":"1","callers":{{"jwt":{{"metadata":"m","subject":"{deep}"}}}}}}"#
        ));
        assert_eq!(e.path, "callers.jwt.subject");
        assert!(
            one_error(r#"{"version":"1","callers":{"jwt":{"metadata":"m","groups":"g"},"peer_certificat":true}}"#)
                .fix
                .contains("did you mean `peer_certificate`")
        );
    }
}
