//! The approval protocol, console side: the callout the filter POSTs (README, "Require approval"; the filter
//! writes it in `mcp_policy::approval::Ask::to_json`) and the answer the console gives.
//!
//! Arguments and the JSON-RPC id are kept as the raw JSON text the filter spliced in (the agent's own bytes), so
//! the approver sees exactly what will be forwarded: numbers beyond 2^53, key order and all.

use serde::Deserialize;
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
    /// Who is calling: the MCP session id or the client address today (the filter's `identity`).
    pub identity: String,
    /// Raw JSON text of the JSON-RPC id.
    pub jsonrpc_id: String,
    pub request_id: Option<String>,
    /// The rule's `reason`.
    pub rule_reason: Option<String>,
    /// How long the filter waits for this answer: the policy's `approval.timeout_ms`, which the filter sends; a
    /// callout without it (another sender) waits the console's own `--timeout-ms`.
    pub timeout_ms: Option<u64>,
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
    Ok(Callout {
        method: b.method,
        kind,
        name,
        arguments: b.arguments.map_or("{}", RawValue::get).to_owned(),
        identity: b.identity,
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
                 "request_id":null,"reason":null,"timeout_ms":120000,"caller":{"subject":"ana"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeout_ms, Some(120_000));
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
