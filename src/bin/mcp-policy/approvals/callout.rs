//! The approval protocol, console side: the callout the filter POSTs (docs/approvals.md, "Require approval"; the filter
//! writes it in `mcp_policy::approval::Ask::to_json`) and the answer the console gives.
//!
//! Arguments and the JSON-RPC id are kept as the raw JSON text the filter spliced in (the agent's own bytes), so
//! the approver sees exactly what will be forwarded: numbers beyond 2^53, key order and all.
//!
//! Strictness: a known field of the wrong type, a duplicate field or an empty name refuses the whole callout
//! (the filter then refuses the call); fields this console does not know are ignored, at the top level and inside
//! `caller` alike, so that a newer filter may add some.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// One call waiting for a decision, as the filter described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// `tools/call`, `prompts/get` or `resources/read`.
    pub method: String,
    /// `tool`, `prompt` or `resource` (the body's field naming the thing).
    pub kind: &'static str,
    /// The tool or prompt name, or the resource URI.
    pub name: String,
    /// Raw JSON text of the arguments (`{}` when the call had none).
    pub arguments: String,
    /// The filter's `identity`: the MCP session id (or another identity header), else the client address.
    pub identity: String,
    /// The caller Envoy verified, and its profile: policies with `callers` only.
    pub caller: Option<Caller>,
    /// Raw JSON text of the JSON-RPC id.
    pub jsonrpc_id: String,
    pub request_id: Option<String>,
    /// The rule's `reason`.
    pub rule_reason: Option<String>,
    /// How long the filter waits for this answer: the policy's `approval.timeout_ms`, which the filter sends; a
    /// callout without it (another sender) waits the console's own `--timeout-ms`.
    pub timeout_ms: Option<u64>,
}

/// Who calls, as the filter says for a policy with `callers` (`mcp_policy::caller::Identified::to_json`). All
/// empty: an anonymous caller (maybe with a profile, e.g. one matching `"authenticated": false`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The verified JWT subject.
    pub subject: Option<String>,
    /// The verified JWT groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The URI SAN of the verified client certificate.
    pub principal: Option<String>,
    /// The profile that applied; `None`: the top-level rules.
    pub profile: Option<String>,
}

impl Caller {
    /// The verified caller a remembered approval is for: `jwt:<subject>`, else `peer:<principal>`; `None` when
    /// anonymous. The filter's own rule (`mcp_policy::caller::Caller::limit_key`), so that the console and the
    /// filter remember an approval for the same caller.
    pub fn verified_key(&self) -> Option<String> {
        mcp_policy::caller::Caller {
            subject: self.subject.clone(),
            groups: Vec::new(),
            principal: self.principal.clone(),
        }
        .limit_key()
    }

    /// An empty string anywhere: never what the filter sends (it reads an empty claim as none), and an empty
    /// subject would name one remembered approval for every such caller.
    fn check(&self) -> Result<(), String> {
        let named = [
            ("subject", self.subject.as_deref()),
            ("principal", self.principal.as_deref()),
            ("profile", self.profile.as_deref()),
        ];
        for (field, value) in named {
            if value == Some("") {
                return Err(format!("caller.{field} is empty"));
            }
        }
        if self.groups.iter().any(String::is_empty) {
            return Err("caller.groups holds an empty name".into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Body<'a> {
    method: String,
    tool: Option<String>,
    prompt: Option<String>,
    resource: Option<String>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    identity: String,
    #[serde(borrow)]
    jsonrpc_id: &'a RawValue,
    request_id: Option<String>,
    reason: Option<String>,
    timeout_ms: Option<u64>,
    caller: Option<Caller>,
}

/// The largest `timeout_ms` a callout may ask for (the policy's own upper bound: one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Reads a callout body. Anything else is an error: the console then answers 400 and the filter refuses the call.
pub fn parse(body: &[u8]) -> Result<Callout, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let b: Body =
        serde_json::from_str(text).map_err(|e| format!("not an approval request: {e}"))?;
    let (kind, name) = match (b.method.as_str(), b.tool, b.prompt, b.resource) {
        ("tools/call", Some(n), None, None) => ("tool", n),
        ("prompts/get", None, Some(n), None) => ("prompt", n),
        ("resources/read", None, None, Some(n)) => ("resource", n),
        (m, ..) => {
            return Err(format!(
                "method \"{m}\" with its name field (tool, prompt or resource) expected"
            ))
        }
    };
    if name.is_empty() {
        return Err("empty name".into());
    }
    if let Some(t) = b.timeout_ms {
        if !(1..=MAX_TIMEOUT_MS).contains(&t) {
            return Err(format!(
                "timeout_ms {t} is not between 1 and {MAX_TIMEOUT_MS}"
            ));
        }
    }
    if let Some(c) = &b.caller {
        c.check()?;
    }
    Ok(Callout {
        method: b.method,
        kind,
        name,
        arguments: b.arguments.map_or("{}", RawValue::get).to_owned(),
        identity: b.identity,
        caller: b.caller,
        jsonrpc_id: b.jsonrpc_id.get().to_owned(),
        request_id: b.request_id,
        rule_reason: b.reason,
        timeout_ms: b.timeout_ms,
    })
}

/// What the console answers once decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub approved: bool,
    /// The approver's reason (shown to the agent on a denial).
    pub reason: Option<String>,
    /// Who decided: an approver's login name.
    pub by: String,
    /// "Approve for N minutes": the filter may grant this caller and tool without asking for this long.
    pub remember_seconds: Option<u64>,
}

impl Verdict {
    /// The answer body (HTTP 200). A denial without a reason leaves `reason` out: the filter then tells the agent
    /// "the approver declined".
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::Map::new();
        v.insert("approved".into(), json!(self.approved));
        v.insert("by".into(), json!(self.by));
        if let Some(r) = self.reason.as_deref().filter(|r| !r.trim().is_empty()) {
            v.insert("reason".into(), json!(r));
        }
        if let Some(s) = self.remember_seconds.filter(|_| self.approved) {
            v.insert("remember_seconds".into(), json!(s));
        }
        Value::Object(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_policy::approval::{read_answer, Answer, Ask};
    use mcp_policy::caller::Identified;
    use mcp_policy::mcp::Kind;

    /// The console reads exactly what the filter sends.
    #[test]
    fn parses_the_filters_callout() {
        let id = RawValue::from_string(r#""call-7""#.into()).unwrap();
        let args =
            RawValue::from_string(r#"{"n": 12345678901234567890, "s": "a\"b"}"#.into()).unwrap();
        let ask = Ask {
            kind: Kind::Tool,
            tool: "create_experiment",
            arguments: Some(&args),
            identity: "sess-1",
            jsonrpc_id: &id,
            request_id: Some("req-9"),
            reason: Some("needs a human"),
            caller: None,
            timeout_ms: 120_000,
        };
        let c = parse(ask.to_json().as_bytes()).unwrap();
        assert_eq!(
            c,
            Callout {
                method: "tools/call".into(),
                kind: "tool",
                name: "create_experiment".into(),
                arguments: r#"{"n": 12345678901234567890, "s": "a\"b"}"#.into(),
                identity: "sess-1".into(),
                caller: None,
                jsonrpc_id: r#""call-7""#.into(),
                request_id: Some("req-9".into()),
                rule_reason: Some("needs a human".into()),
                timeout_ms: Some(120_000),
            }
        );
        let bare = Ask {
            kind: Kind::Resource,
            tool: "file:///x",
            arguments: None,
            request_id: None,
            reason: None,
            ..ask
        };
        let c = parse(bare.to_json().as_bytes()).unwrap();
        assert_eq!(
            (c.kind, c.name.as_str(), c.arguments.as_str(), c.rule_reason),
            ("resource", "file:///x", "{}", None)
        );
    }

    #[test]
    fn timeout_ms_and_unknown_fields() {
        let c = parse(
            br#"{"method":"tools/call","tool":"t","arguments":{},"identity":"i","jsonrpc_id":1,
                 "request_id":null,"reason":null,"timeout_ms":120000,"later":{"x":1},
                 "caller":{"subject":"ana","since":"a newer filter"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeout_ms, Some(120_000));
        assert_eq!(
            c.caller,
            Some(Caller {
                subject: Some("ana".into()),
                ..Caller::default()
            }),
            "fields a newer filter may add are ignored, inside caller too"
        );
    }

    /// The caller the filter describes for a policy with `callers`, as `Identified::to_json` writes it.
    #[test]
    fn parses_the_filters_caller() {
        fn body(caller: Option<Identified<'_>>) -> String {
            let id = RawValue::from_string("7".into()).unwrap();
            Ask {
                kind: Kind::Tool,
                tool: "set_run_tag",
                arguments: None,
                identity: "sess-1",
                jsonrpc_id: &id,
                request_id: None,
                reason: None,
                caller,
                timeout_ms: 30_000,
            }
            .to_json()
        }
        let parsed = |caller: &mcp_policy::caller::Caller, profile: Option<&str>| {
            let body = body(Some(Identified { caller, profile }));
            parse(body.as_bytes()).unwrap().caller.unwrap()
        };
        let verified = mcp_policy::caller::Caller {
            subject: Some("alice <a&b>".into()),
            groups: vec!["ml-admins".into(), "readers".into()],
            principal: Some("spiffe://cluster.local/ns/ml/sa/admin".into()),
        };
        let caller = parsed(&verified, Some("ml-admins"));
        assert_eq!(
            caller,
            Caller {
                subject: Some("alice <a&b>".into()),
                groups: vec!["ml-admins".into(), "readers".into()],
                principal: Some("spiffe://cluster.local/ns/ml/sa/admin".into()),
                profile: Some("ml-admins".into()),
            }
        );
        assert_eq!(caller.verified_key().as_deref(), Some("jwt:alice <a&b>"));
        // An anonymous caller with a profile; a certificate only.
        let c = parsed(&mcp_policy::caller::Caller::ANONYMOUS, Some("anonymous"));
        assert_eq!(
            (c.profile.as_deref(), c.groups.len(), c.verified_key()),
            (Some("anonymous"), 0, None)
        );
        let workload = mcp_policy::caller::Caller {
            principal: Some("spiffe://cluster.local/ns/ci/sa/builder".into()),
            ..mcp_policy::caller::Caller::default()
        };
        assert_eq!(
            parsed(&workload, None).verified_key().as_deref(),
            Some("peer:spiffe://cluster.local/ns/ci/sa/builder")
        );
        // A policy without callers: no caller at all.
        assert_eq!(parse(body(None).as_bytes()).unwrap().caller, None);
        let null =
            br#"{"method":"tools/call","tool":"t","identity":"i","jsonrpc_id":1,"caller":null}"#;
        assert_eq!(parse(null).unwrap().caller, None);
    }

    #[test]
    fn refuses_a_caller_of_the_wrong_shape() {
        for caller in [
            r#""alice""#,
            r#"["alice"]"#,
            r#"true"#,
            r#"{"subject":7}"#,
            r#"{"subject":["alice"]}"#,
            r#"{"subject":""}"#,
            r#"{"subject":"a","subject":"b"}"#,
            r#"{"groups":"ml-admins"}"#,
            r#"{"groups":null}"#,
            r#"{"groups":["ml-admins",7]}"#,
            r#"{"groups":[""]}"#,
            r#"{"principal":{"uri":"spiffe://x"}}"#,
            r#"{"principal":""}"#,
            r#"{"profile":1}"#,
            r#"{"profile":""}"#,
        ] {
            let body = format!(
                r#"{{"method":"tools/call","tool":"t","identity":"i","jsonrpc_id":1,"caller":{caller}}}"#
            );
            assert!(parse(body.as_bytes()).is_err(), "{caller}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_callout() {
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"tool":"t","identity":"i","jsonrpc_id":1}"#,
            br#"{"method":"tools/call","identity":"i","jsonrpc_id":1}"#,
            br#"{"method":"tools/call","prompt":"p","identity":"i","jsonrpc_id":1}"#,
            br#"{"method":"tools/call","tool":"","identity":"i","jsonrpc_id":1}"#,
            br#"{"method":"tools/call","tool":"t","identity":"i"}"#,
            br#"{"method":"tools/call","tool":"t","tool":"u","identity":"i","jsonrpc_id":1}"#,
            br#"{"method":"tools/call","tool":"t","identity":"i","jsonrpc_id":1,"timeout_ms":0}"#,
            br#"{"method":"tools/call","tool":"t","identity":"i","jsonrpc_id":1,"timeout_ms":3600001}"#,
            b"\xff",
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// The filter reads the console's answers as meant.
    #[test]
    fn answers_are_read_by_the_filter() {
        let yes = Verdict {
            approved: true,
            reason: None,
            by: "ana".into(),
            remember_seconds: Some(900),
        };
        let body = yes.to_json().to_string();
        assert_eq!(
            read_answer(Some(200), body.as_bytes()),
            Answer::Granted {
                remember_secs: Some(900)
            }
        );
        assert_eq!(
            yes.to_json(),
            json!({"approved": true, "by": "ana", "remember_seconds": 900})
        );
        let no = Verdict {
            approved: false,
            reason: Some("not on a Friday".into()),
            by: "ana".into(),
            remember_seconds: Some(900),
        };
        let body = no.to_json().to_string();
        assert_eq!(
            read_answer(Some(200), body.as_bytes()),
            Answer::Denied("not on a Friday".into())
        );
        assert!(no.to_json().get("remember_seconds").is_none());
        let bare_no = Verdict {
            reason: Some("  ".into()),
            ..no
        };
        assert_eq!(
            read_answer(Some(200), bare_no.to_json().to_string().as_bytes()),
            Answer::Denied("the approver declined".into())
        );
    }
}
