//! Every reply mcp-policy writes itself: JSON-RPC 2.0 errors and their HTTP status, in one place.

use crate::engine::Decision;
use crate::label::Label;
use crate::mcp::{Kind, RequestError};
use crate::record::Record;
use serde_json::{json, Value};

/// A tool call was denied by the policy.
pub const DENIED: i64 = -31001;
/// Reserved: a tool call was rate limited.
pub const RATE_LIMITED: i64 = -31002;
/// Reserved: a tool call was not approved.
pub const APPROVAL_NOT_GRANTED: i64 = -31003;
/// The request has no verified caller identity (`callers.required`), or one that cannot be read.
pub const UNAUTHENTICATED: i64 = -31004;
/// An MCP header (`Mcp-Method`, `Mcp-Name`) disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// An HTTP response for Envoy to send instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub body: String,
}

/// `id` is raw JSON text (as the client wrote it); `None` renders as `null`.
fn error(id: Option<&str>, code: i64, message: &str, data: Option<Value>) -> String {
    let mut err = json!({"code": code, "message": message});
    if let (Some(d), Some(obj)) = (data, err.as_object_mut()) {
        obj.insert("data".into(), d);
    }
    // The id is spliced in raw so that it is echoed byte for byte (big numbers, escapes).
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{}}}"#,
        id.unwrap_or("null"),
        err
    )
}

/// 400 for a body that is not a valid JSON-RPC message.
pub fn request_error(e: &RequestError) -> Reply {
    let (code, id) = match e {
        RequestError::Parse(_) => (PARSE_ERROR, None),
        RequestError::InvalidRequest { id, .. } => (INVALID_REQUEST, id.as_deref()),
        RequestError::InvalidParams { id, .. } => (INVALID_PARAMS, id.as_deref()),
    };
    Reply {
        status: 400,
        body: error(id, code, &e.to_string(), None),
    }
}

/// 413 for a body over `max_body_bytes`.
pub fn too_large(limit: usize) -> Reply {
    let msg = format!(
        "Request body too large: mcp-policy inspects at most {limit} bytes (max_body_bytes)"
    );
    Reply {
        status: 413,
        body: error(
            None,
            INVALID_REQUEST,
            &msg,
            Some(json!({"max_body_bytes": limit})),
        ),
    }
}

/// 415 for a body in an encoding the filter cannot inspect.
pub fn unsupported_encoding(encoding: &str) -> Reply {
    let msg = format!(
        "Unsupported Content-Encoding '{encoding}': mcp-policy inspects every request body and accepts only identity (uncompressed) bodies"
    );
    Reply {
        status: 415,
        body: error(
            None,
            INVALID_REQUEST,
            &msg,
            Some(json!({"content_encoding": encoding})),
        ),
    }
}

/// The JSON-RPC error that replaces a `tools/list` answer mcp-policy cannot filter with certainty.
pub fn list_unfilterable(id: &str, why: &str) -> String {
    let msg =
        format!("mcp-policy could not filter the tools/list answer, so it was withheld: {why}");
    error(Some(id), INTERNAL_ERROR, &msg, None)
}

/// 500 when mcp-policy itself cannot decide (fail closed).
pub fn internal(why: &str) -> Reply {
    let msg = format!("mcp-policy could not decide this request: {why}");
    Reply {
        status: 500,
        body: error(None, INVALID_REQUEST, &msg, None),
    }
}

/// 500 when the filter cannot even read the request (no policy loaded, the body unreadable): fail closed.
pub fn uninspectable(why: &str) -> Reply {
    let msg = format!("mcp-policy could not inspect the request: {why}");
    Reply {
        status: 500,
        body: error(None, INVALID_REQUEST, &msg, None),
    }
}

/// 401 for a request without a verified caller identity under `callers.required`, or with one that cannot
/// be read exactly (`why` says which). Decided from the headers, before the body and its id are known.
pub fn unauthenticated(why: &str) -> Reply {
    let msg = format!("mcp-policy refused the request: {why}");
    Reply {
        status: 401,
        body: error(
            None,
            UNAUTHENTICATED,
            &msg,
            Some(json!({"decision": "unauthenticated"})),
        ),
    }
}

/// 400 when an `Mcp-*` header disagrees with the body.
pub fn header_mismatch(id: Option<&str>, message: &str) -> Reply {
    Reply {
        status: 400,
        body: error(id, HEADER_MISMATCH, message, None),
    }
}

fn refusal(id: &str, target: Option<(Kind, &str)>, d: &Decision<'_>) -> Option<String> {
    let mut data = serde_json::Map::new();
    if let Some((kind, t)) = target {
        data.insert(kind.noun().into(), json!(t));
    }
    let what = match target.map(|(k, _)| k) {
        Some(Kind::Prompt) => "Prompt",
        Some(Kind::Resource) => "Resource",
        _ => "Tool",
    };
    let tool = target.map(|(_, t)| t);
    let (code, message) = match d {
        Decision::Allow { .. } | Decision::NeedsApproval { .. } => return None,
        Decision::NotApproved {
            reason,
            unavailable,
            ..
        } => {
            let (decision, msg) = if *unavailable {
                (Label::ApprovalUnavailable, format!("{what} '{}' not approved: the approval service could not be reached or gave no usable answer ({reason})", tool.unwrap_or("")))
            } else {
                (
                    Label::ApprovalDenied,
                    format!(
                        "{what} '{}' not approved: the approver said no: {reason}",
                        tool.unwrap_or("")
                    ),
                )
            };
            data.insert("decision".into(), json!(decision.as_str()));
            data.insert("reason".into(), json!(reason));
            (APPROVAL_NOT_GRANTED, msg)
        }
        Decision::ToolChanged { reason, .. } => {
            data.insert("decision".into(), json!(Label::ToolChanged.as_str()));
            data.insert("reason".into(), json!(reason));
            (
                DENIED,
                format!(
                    "{what} '{}' refused: its definition changed since it was reviewed: {reason}",
                    tool.unwrap_or("")
                ),
            )
        }
        Decision::Deny { reason, .. } => {
            data.insert("decision".into(), json!(Label::Deny.as_str()));
            data.insert("reason".into(), json!(reason));
            (
                DENIED,
                format!("{what} '{}' denied by policy: {reason}", tool.unwrap_or("")),
            )
        }
        Decision::RateLimited {
            reason,
            limit,
            window_secs,
            retry_after_secs,
            ..
        } => {
            data.insert("decision".into(), json!(Label::RateLimited.as_str()));
            data.insert("reason".into(), json!(reason));
            data.insert("limit".into(), json!(limit));
            data.insert("window_seconds".into(), json!(window_secs));
            data.insert("retry_after_seconds".into(), json!(retry_after_secs));
            let msg = format!(
                "{what} '{}' rate limited: {reason}; retry in {retry_after_secs}s",
                tool.unwrap_or("")
            );
            (RATE_LIMITED, msg)
        }
        Decision::RateLimitUnavailable { reason, .. } => {
            data.insert(
                "decision".into(),
                json!(Label::RateLimitUnavailable.as_str()),
            );
            data.insert("reason".into(), json!(reason));
            let msg = format!(
                "{what} '{}' not forwarded: its rate limits could not be checked ({reason})",
                tool.unwrap_or("")
            );
            (RATE_LIMITED, msg)
        }
    };
    Some(error(Some(id), code, &message, Some(Value::Object(data))))
}

/// Why an allowed request of a refused batch was not forwarded either.
const BATCH_REASON: &str =
    "not forwarded: the batch held a refused call, and a batch is forwarded whole or not at all";

/// 200 with in-line JSON-RPC errors when any call of the body is refused (denied, rate limited, not
/// approved): one error per request of a batch (`batch`), or the one error of a single message. `None` when
/// nothing is refused.
pub fn refused(batch: bool, records: &[Record<'_>]) -> Option<Reply> {
    if !records.iter().any(Record::is_refusal) {
        return None;
    }
    let one = |r: &Record<'_>| -> Option<String> {
        let id = r.id?.get();
        match &r.decision {
            Some(d) if d.is_refusal() => refusal(id, r.target.map(|t| (t.kind, t.name)), d),
            _ if batch => {
                let tool = r.tool();
                let deny = Label::Deny.as_str();
                let data = match tool {
                    Some(t) => json!({"tool": t, "decision": deny, "reason": BATCH_REASON}),
                    None => json!({"decision": deny, "reason": BATCH_REASON}),
                };
                let msg = match tool {
                    Some(t) => format!("Tool '{t}' denied by policy: {BATCH_REASON}"),
                    None => format!("Request {BATCH_REASON}"),
                };
                Some(error(Some(id), DENIED, &msg, Some(data)))
            }
            _ => None,
        }
    };
    let text = if batch {
        let parts: Vec<String> = records.iter().filter_map(one).collect();
        format!("[{}]", parts.join(","))
    } else {
        one(records.first()?)?
    };
    Some(Reply {
        status: 200,
        body: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decide_body;
    use crate::mcp::{inspect, Body};
    use crate::policy::parse;

    fn parse_json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    /// [`refused`] on the records of `b`, each with its decision.
    fn refused_in<'a>(b: &'a Body<'a>, decisions: Vec<Option<Decision<'a>>>) -> Option<Reply> {
        let records: Vec<Record<'_>> = b
            .messages
            .iter()
            .zip(decisions)
            .map(|(m, decision)| Record {
                decision,
                ..Record::new(m, None)
            })
            .collect();
        refused(b.batch, &records)
    }

    #[test]
    fn single_denial_shape() {
        let p = parse(
            br#"{"version":"1","tools":{"delete_*":{"action":"deny","reason":"no deletes"}}}"#,
        )
        .unwrap();
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"delete_run"}}"#,
        )
        .unwrap();
        let r = refused_in(&b, decide_body(&p, &b)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            parse_json(&r.body),
            json!({"jsonrpc":"2.0","id":"abc","error":{"code":-31001,
                "message":"Tool 'delete_run' denied by policy: no deletes",
                "data":{"tool":"delete_run","decision":"deny","reason":"no deletes"}}})
        );
    }

    #[test]
    fn allowed_bodies_have_no_reply() {
        let p = parse(br#"{"version":"1","tools":{"get_run":{}}}"#).unwrap();
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}"#,
        )
        .unwrap();
        assert!(refused_in(&b, decide_body(&p, &b)).is_none());
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        let p = parse(br#"{"version":"1"}"#).unwrap();
        let b = inspect(br#"{"jsonrpc":"2.0","id":12345678901234567890123,"method":"tools/call","params":{"name":"x"}}"#).unwrap();
        let r = refused_in(&b, decide_body(&p, &b)).unwrap();
        assert!(
            r.body.contains(r#""id":12345678901234567890123,"#),
            "{}",
            r.body
        );
    }

    #[test]
    fn batch_denial_shape() {
        let p = parse(br#"{"version":"1","tools":{"get_run":{}}}"#).unwrap();
        let b = inspect(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":2,"method":"tools/list"},
            {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_run"}}]"#,
        )
        .unwrap();
        let r = refused_in(&b, decide_body(&p, &b)).unwrap();
        let v = parse_json(&r.body);
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[0]["id"], 1);
        assert_eq!(arr[0]["error"]["code"], -31001);
        assert!(arr[0]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("batch held a refused call"));
        assert_eq!(arr[1]["id"], 2);
        assert!(arr[1]["error"]["data"].get("tool").is_none());
        assert_eq!(arr[2]["id"], 3);
        assert_eq!(arr[2]["error"]["data"]["tool"], "delete_run");
        assert!(arr[2]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("default deny"));
    }

    #[test]
    fn rate_limited_shape() {
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"search_runs"}}"#,
        )
        .unwrap();
        let d = Decision::RateLimited {
            rule: Some("search_runs"),
            reason: "10 calls per 60s".into(),
            limit: 10,
            window_secs: 60,
            retry_after_secs: 7,
        };
        let r = refused_in(&b, vec![Some(d)]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            parse_json(&r.body),
            json!({"jsonrpc":"2.0","id":4,"error":{"code":-31002,
                "message":"Tool 'search_runs' rate limited: 10 calls per 60s; retry in 7s",
                "data":{"tool":"search_runs","decision":"rate_limited","reason":"10 calls per 60s",
                        "limit":10,"window_seconds":60,"retry_after_seconds":7}}})
        );
    }

    #[test]
    fn not_approved_shapes() {
        let b = inspect(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_experiment"}}"#).unwrap();
        let r = |unavailable: bool| {
            let d = Decision::NotApproved {
                rule: None,
                reason: "nope".into(),
                unavailable,
            };
            parse_json(&refused_in(&b, vec![Some(d)]).unwrap().body)
        };
        let v = r(false);
        assert_eq!(v["error"]["code"], -31003);
        assert_eq!(
            v["error"]["data"],
            json!({"tool":"create_experiment","decision":"approval_denied","reason":"nope"})
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approver said no"));
        let v = r(true);
        assert_eq!(v["error"]["data"]["decision"], "approval_unavailable");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"));
    }

    #[test]
    fn fail_closed_replies_are_json_whatever_the_reason_says() {
        let r = uninspectable(r#"a "quoted" \ reason"#);
        assert_eq!(r.status, 500);
        let v = parse_json(&r.body);
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,
                "message":"mcp-policy could not inspect the request: a \"quoted\" \\ reason"}})
        );
        // The same bytes as the filter always wrote for its fixed reasons.
        assert_eq!(
            uninspectable("no policy is loaded").body,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"mcp-policy could not inspect the request: no policy is loaded"}}"#
        );
    }

    #[test]
    fn error_replies() {
        let r = request_error(&inspect(b"{oops").unwrap_err());
        assert_eq!(r.status, 400);
        let v = parse_json(&r.body);
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["id"], Value::Null);
        let r = request_error(
            &inspect(br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{}}"#).unwrap_err(),
        );
        let v = parse_json(&r.body);
        assert_eq!(
            (v["id"].clone(), v["error"]["code"].clone()),
            (json!(5), json!(-32602))
        );
        let r = too_large(10);
        assert_eq!(r.status, 413);
        assert_eq!(parse_json(&r.body)["error"]["data"]["max_body_bytes"], 10);
        let r = unsupported_encoding("gzip");
        assert_eq!(r.status, 415);
        assert!(parse_json(&r.body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gzip"));
        let r = header_mismatch(Some("7"), "Mcp-Method says x");
        assert_eq!(parse_json(&r.body)["error"]["code"], -32020);
        assert_eq!(parse_json(&r.body)["id"], 7);
        let r = unauthenticated("the JWT claim `sub` is not \"valid\"");
        assert_eq!(r.status, 401);
        assert_eq!(
            parse_json(&r.body),
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -31004,
                "message": "mcp-policy refused the request: the JWT claim `sub` is not \"valid\"",
                "data": {"decision": "unauthenticated"}}})
        );
    }
}
