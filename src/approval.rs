//! Require approval: the callout to the operator's approval service, and how its answer is read.
//!
//! The protocol (documented in docs/approvals.md): mcp-policy `POST`s JSON to the configured path on the configured
//! Envoy cluster; only HTTP 200 with `{"approved": true}` grants. `{"approved": false, "reason": "..."}` is
//! a human (or bot) saying no; anything else (timeout, refused connection, non-200, not JSON, no boolean
//! `approved`) means the service could not decide, and the call is refused as well: fail closed.
//!
//! An approval may say how long it holds (`"remember_seconds": N`): the filter then lets the same caller make
//! the same call without asking again for that long (`crate::remember` keeps it; at most
//! [`MAX_REMEMBER_SECONDS`]).

use crate::caller::Identified;
use crate::mcp::Kind;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

/// The `approval` section of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// Envoy cluster of the approval service.
    pub cluster: String,
    /// `:authority` of the callout (default: the cluster name).
    pub authority: String,
    /// Path of the callout (default `/approve`).
    pub path: String,
    pub timeout_ms: u64,
    /// Extra request headers, e.g. `authorization`.
    pub headers: Vec<(String, String)>,
}

/// Default `approval.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default `approval.path`.
pub const DEFAULT_PATH: &str = "/approve";

/// The longest `remember_seconds` the filter honours (7 days); a longer one is cut to it.
pub const MAX_REMEMBER_SECONDS: u64 = 7 * 24 * 3600;

/// What the approval service said about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Yes; with `remember_secs`, also to the same caller's same call for that long (at most
    /// [`MAX_REMEMBER_SECONDS`]).
    Granted { remember_secs: Option<u64> },
    /// Not asked: an approval given earlier for a while still holds (see `crate::remember`).
    Remembered,
    /// A human (or bot) said no.
    Denied(String),
    /// The service could not be asked or did not answer usefully.
    Unavailable(String),
}

/// Everything the approval service is told about a call.
pub struct Ask<'a> {
    /// What is asked about: a tool call (the common case), a prompt or a resource.
    pub kind: Kind,
    /// The tool or prompt name, or the resource URI.
    pub tool: &'a str,
    /// Raw JSON of `params.arguments` (`None`: the call had none).
    pub arguments: Option<&'a RawValue>,
    pub identity: &'a str,
    /// Raw JSON of the JSON-RPC id.
    pub jsonrpc_id: &'a RawValue,
    /// `x-request-id` of the request, if any.
    pub request_id: Option<&'a str>,
    /// The rule's `reason`, if any.
    pub reason: Option<&'a str>,
    /// The verified caller and its profile (policies with `callers`: the body then has `caller`).
    pub caller: Option<Identified<'a>>,
    /// How long the filter waits for the answer (the policy's `approval.timeout_ms`), so that the service can
    /// tell the approver how long is left.
    pub timeout_ms: u64,
}

impl Ask<'_> {
    /// The callout body. Arguments and id are spliced in as the client sent them.
    pub fn to_json(&self) -> String {
        let args = self.arguments.map_or("{}", |a| a.get());
        let caller = match &self.caller {
            Some(c) => format!(r#","caller":{}"#, c.to_json()),
            None => String::new(),
        };
        format!(
            r#"{{"method":"{}","{}":{},"arguments":{},"identity":{},"jsonrpc_id":{},"request_id":{},"reason":{},"timeout_ms":{}{caller}}}"#,
            self.kind.method(),
            self.kind.noun(),
            json!(self.tool),
            args,
            json!(self.identity),
            self.jsonrpc_id.get(),
            self.request_id.map_or(Value::Null, |r| json!(r)),
            self.reason.map_or(Value::Null, |r| json!(r)),
            self.timeout_ms,
        )
    }
}

impl ApprovalConfig {
    /// Headers of the callout (pseudo-headers first).
    pub fn headers(&self, body_len: usize) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), self.path.clone()),
            (":authority".to_owned(), self.authority.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-length".to_owned(), body_len.to_string()),
        ];
        h.extend(self.headers.iter().cloned());
        h
    }
}

#[derive(Deserialize)]
struct Verdict {
    approved: Option<Value>,
    reason: Option<Value>,
    remember_seconds: Option<Value>,
}

/// Reads the service's answer. `status` is `None` when there was no HTTP answer (timeout, connection
/// refused or reset: Envoy then reports no headers).
pub fn read_answer(status: Option<u32>, body: &[u8]) -> Answer {
    let Some(status) = status else {
        return Answer::Unavailable(
            "the approval service did not answer (timeout or connection failure)".into(),
        );
    };
    match status {
        200 => {}
        504 => return Answer::Unavailable("the approval service did not answer within timeout_ms (HTTP 504, from Envoy or from the service itself)".into()),
        503 => {
            return Answer::Unavailable(
                "the approval service could not be reached (HTTP 503: connection refused or no healthy endpoint, or the service itself answered 503)".into(),
            )
        }
        s => return Answer::Unavailable(format!("the approval service answered HTTP {s}")),
    }
    if crate::json::check_strict(body).is_err() {
        return Answer::Unavailable("the approval service's answer is not valid JSON".into());
    }
    // `check_strict` accepted it, so it is UTF-8; `from_str` shares serde_json's `StrRead` code with the
    // request path (no second deserializer for `SliceRead`).
    let verdict = std::str::from_utf8(body).map(serde_json::from_str::<Verdict>);
    let Ok(Ok(v)) = verdict else {
        return Answer::Unavailable("the approval service's answer is not a JSON object".into());
    };
    match v.approved {
        Some(Value::Bool(true)) => match remember_secs(v.remember_seconds.as_ref()) {
            Ok(remember_secs) => Answer::Granted { remember_secs },
            Err(why) => Answer::Unavailable(why.into()),
        },
        Some(Value::Bool(false)) => {
            let reason = match v.reason {
                Some(Value::String(r)) if !r.trim().is_empty() => r,
                _ => "the approver declined".into(),
            };
            Answer::Denied(reason)
        }
        _ => {
            Answer::Unavailable("the approval service's answer has no boolean \"approved\"".into())
        }
    }
}

/// An approval's `remember_seconds`: absent, `null` or 0 is "this call only"; a positive integer is cut to
/// [`MAX_REMEMBER_SECONDS`]. Anything else is an error: a service that means something the filter cannot read
/// gets no approval at all (fail closed), rather than one remembered for a length it did not say.
fn remember_secs(v: Option<&Value>) -> Result<Option<u64>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(None),
            Some(s) => Ok(Some(s.min(MAX_REMEMBER_SECONDS))),
            None => {
                Err("the approval service's \"remember_seconds\" is not a whole number of seconds")
            }
        },
        Some(_) => Err("the approval service's \"remember_seconds\" is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callout_body() {
        let id = RawValue::from_string("7".into()).unwrap();
        let args = RawValue::from_string(r#"{"name":"exp","n":1.50}"#.into()).unwrap();
        let ask = Ask {
            kind: Kind::Tool,
            tool: "create_experiment",
            arguments: Some(&args),
            identity: "sess-1",
            jsonrpc_id: &id,
            request_id: Some("req-9"),
            reason: Some("needs a human"),
            caller: None,
            timeout_ms: 300_000,
        };
        let body = ask.to_json();
        assert!(
            body.contains(r#""arguments":{"name":"exp","n":1.50}"#),
            "{body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"method":"tools/call","tool":"create_experiment","arguments":{"name":"exp","n":1.50},
                   "identity":"sess-1","jsonrpc_id":7,"request_id":"req-9","reason":"needs a human",
                   "timeout_ms":300000})
        );
        let bare = Ask {
            arguments: None,
            request_id: None,
            reason: None,
            ..ask
        };
        let v: Value = serde_json::from_str(&bare.to_json()).unwrap();
        assert_eq!(
            (
                v["arguments"].clone(),
                v["request_id"].clone(),
                v["reason"].clone()
            ),
            (json!({}), Value::Null, Value::Null)
        );
        let prompt = Ask {
            kind: Kind::Prompt,
            tool: "p",
            arguments: None,
            request_id: None,
            reason: None,
            ..ask
        };
        let v: Value = serde_json::from_str(&prompt.to_json()).unwrap();
        assert_eq!(
            (v["method"].as_str(), v["prompt"].as_str()),
            (Some("prompts/get"), Some("p"))
        );
        // With `callers`: who asks, so the approver can judge.
        let bob = crate::caller::Caller {
            subject: Some("bob".into()),
            groups: vec!["ml-admins".into(), "readers".into()],
            principal: Some("spiffe://cluster.local/ns/ml/sa/agent".into()),
        };
        let asked = Ask {
            caller: Some(Identified {
                caller: &bob,
                profile: Some("ml-admins"),
            }),
            ..ask
        };
        let v: Value = serde_json::from_str(&asked.to_json()).unwrap();
        assert_eq!(
            v["caller"],
            json!({"subject": "bob", "groups": ["ml-admins", "readers"],
                   "principal": "spiffe://cluster.local/ns/ml/sa/agent", "profile": "ml-admins"})
        );
    }

    #[test]
    fn answers() {
        let yes = Answer::Granted {
            remember_secs: None,
        };
        assert_eq!(read_answer(Some(200), br#"{"approved": true}"#), yes);
        assert_eq!(
            read_answer(Some(200), br#"{"approved": true, "by": "ana"}"#),
            yes
        );
        // Remembered for a while: a whole number of seconds, cut to 7 days; 0 or null is this call only.
        for (body, remember_secs) in [
            (
                &br#"{"approved": true, "remember_seconds": 900}"#[..],
                Some(900),
            ),
            (
                br#"{"approved": true, "remember_seconds": 604800}"#,
                Some(604_800),
            ),
            (
                br#"{"approved": true, "remember_seconds": 604801}"#,
                Some(604_800),
            ),
            (
                br#"{"approved": true, "remember_seconds": 18446744073709551615}"#,
                Some(MAX_REMEMBER_SECONDS),
            ),
            (br#"{"approved": true, "remember_seconds": 0}"#, None),
            (br#"{"approved": true, "remember_seconds": null}"#, None),
        ] {
            assert_eq!(
                read_answer(Some(200), body),
                Answer::Granted { remember_secs },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A denial is never remembered.
        assert_eq!(
            read_answer(Some(200), br#"{"approved": false, "remember_seconds": 60}"#),
            Answer::Denied("the approver declined".into())
        );
        assert_eq!(
            read_answer(Some(200), br#"{"approved": false, "reason": "not today"}"#),
            Answer::Denied("not today".into())
        );
        assert_eq!(
            read_answer(Some(200), br#"{"approved": false}"#),
            Answer::Denied("the approver declined".into())
        );
        for (status, body) in [
            (None, &b""[..]),
            (Some(500), br#"{"approved": true}"#),
            (Some(201), br#"{"approved": true}"#),
            (Some(200), b"yes"),
            (Some(200), b""),
            (Some(200), br#"{"approved": "true"}"#),
            (Some(200), br#"{"approved": 1}"#),
            (Some(200), br#"{}"#),
            (Some(200), br#"[true]"#),
            (Some(200), br#"{"approved": false, "approved": true}"#),
            (Some(200), br#"{"approved": true, "remember_seconds": -1}"#),
            (Some(200), br#"{"approved": true, "remember_seconds": 1.5}"#),
            (Some(200), br#"{"approved": true, "remember_seconds": 1e3}"#),
            (
                Some(200),
                br#"{"approved": true, "remember_seconds": 18446744073709551616}"#,
            ),
            (
                Some(200),
                br#"{"approved": true, "remember_seconds": "60"}"#,
            ),
            (
                Some(200),
                br#"{"approved": true, "remember_seconds": true}"#,
            ),
            (
                Some(200),
                br#"{"approved": true, "remember_seconds": 1, "remember_seconds": 2}"#,
            ),
        ] {
            assert!(
                matches!(read_answer(status, body), Answer::Unavailable(_)),
                "{status:?} {body:?}"
            );
        }
    }
}
