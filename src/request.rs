//! One request, one pass: what the filter asks of the pure core at headers time and at end of body.
//! The Envoy glue gathers the inputs and acts on the answer; every rule about requests lives here.

use crate::engine::decide_body;
use crate::mcp::{inspect, Message};
use crate::policy::Policy;
use crate::reply::{self, Reply};

/// The request headers mcp-policy looks at.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub content_encoding: Option<String>,
    pub content_length: Option<u64>,
    /// `Mcp-Method` (MCP 2026-07-28): must agree with the body.
    pub mcp_method: Option<String>,
    /// `Mcp-Name` (MCP 2026-07-28): must agree with the body's tool, prompt or resource.
    pub mcp_name: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Forward,
    Reply(Reply),
}

/// Checks made before any body byte arrives; `Some` ends the request with that reply.
pub fn check_head(policy: &Policy, head: &Head) -> Option<Reply> {
    if let Some(enc) = &head.content_encoding {
        let bad = enc.split(',').map(str::trim).find(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        if let Some(e) = bad {
            return Some(reply::unsupported_encoding(e));
        }
    }
    match head.content_length {
        Some(n) if n > policy.max_body_bytes as u64 => Some(reply::too_large(policy.max_body_bytes)),
        _ => None,
    }
}

/// Decides a complete request body.
pub fn check_body(policy: &Policy, head: &Head, bytes: &[u8]) -> Outcome {
    if bytes.len() > policy.max_body_bytes {
        return Outcome::Reply(reply::too_large(policy.max_body_bytes));
    }
    let body = match inspect(bytes) {
        Ok(b) => b,
        Err(e) => return Outcome::Reply(reply::request_error(&e)),
    };
    if let Some(r) = check_mcp_headers(head, &body.messages, body.batch) {
        return Outcome::Reply(r);
    }
    let decisions = decide_body(policy, &body);
    match reply::denied(&body, &decisions) {
        Some(r) => Outcome::Reply(r),
        None => Outcome::Forward,
    }
}

fn check_mcp_headers(head: &Head, messages: &[Message<'_>], batch: bool) -> Option<Reply> {
    if head.mcp_method.is_none() && head.mcp_name.is_none() {
        return None;
    }
    let msg = match (batch, messages.first()) {
        (false, Some(m)) => m,
        _ => {
            return Some(reply::header_mismatch(
                None,
                "Header mismatch: Mcp-Method/Mcp-Name headers describe one message, but the body is a batch",
            ))
        }
    };
    let id = msg.id().map(|i| i.get());
    if let Some(h) = &head.mcp_method {
        if msg.method() != Some(h.as_str()) {
            let body_method = msg.method().unwrap_or("(none: a response)");
            return Some(reply::header_mismatch(
                id,
                &format!("Header mismatch: Mcp-Method is '{h}' but the body's method is '{body_method}'"),
            ));
        }
    }
    if let Some(h) = &head.mcp_name {
        let name = msg.target_name();
        if name.as_deref() != Some(h.as_str()) {
            let body_name = name.as_deref().unwrap_or("(none)");
            return Some(reply::header_mismatch(
                id,
                &format!("Header mismatch: Mcp-Name is '{h}' but the body names '{body_name}'"),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn policy() -> Policy {
        parse(br#"{"version":"1","default":"deny","tools":{"get_run":{}},"max_body_bytes":200}"#).unwrap()
    }

    fn code(o: &Outcome) -> (u32, i64) {
        match o {
            Outcome::Reply(r) => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                (r.status, v["error"]["code"].as_i64().unwrap_or(0))
            }
            Outcome::Forward => (0, 0),
        }
    }

    const GET: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}"#;

    #[test]
    fn head_checks() {
        let p = policy();
        let h = |enc: &str, len: Option<u64>| Head { content_encoding: Some(enc.into()), content_length: len, ..Head::default() };
        assert_eq!(check_head(&p, &h("gzip", None)).unwrap().status, 415);
        assert_eq!(check_head(&p, &h("identity, br", None)).unwrap().status, 415);
        assert!(check_head(&p, &h("identity", Some(200))).is_none());
        assert_eq!(check_head(&p, &h("", Some(201))).unwrap().status, 413);
    }

    #[test]
    fn body_outcomes() {
        let p = policy();
        let head = Head::default();
        assert_eq!(check_body(&p, &head, GET), Outcome::Forward);
        assert_eq!(code(&check_body(&p, &head, &[b' '; 201])), (413, -32600));
        assert_eq!(code(&check_body(&p, &head, b"nope")), (400, -32700));
        let deny = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_run"}}"#;
        assert_eq!(code(&check_body(&p, &head, deny)), (200, -31001));
    }

    #[test]
    fn mcp_headers_must_match() {
        let p = policy();
        let head = |m: Option<&str>, n: Option<&str>| Head {
            mcp_method: m.map(Into::into),
            mcp_name: n.map(Into::into),
            ..Head::default()
        };
        assert_eq!(check_body(&p, &head(Some("tools/call"), Some("get_run")), GET), Outcome::Forward);
        assert_eq!(code(&check_body(&p, &head(Some("tools/list"), None), GET)), (400, -32020));
        assert_eq!(code(&check_body(&p, &head(None, Some("get_runs")), GET)), (400, -32020));
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert_eq!(code(&check_body(&p, &head(Some("ping"), None), batch)), (400, -32020));
        let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p1"}}"#;
        assert_eq!(check_body(&p, &head(Some("prompts/get"), Some("p1")), prompt), Outcome::Forward);
        let res = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert_eq!(code(&check_body(&p, &head(None, Some("file:///b")), res)), (400, -32020));
    }
}
