//! One request, one pass: what the filter asks of the pure core at headers time and at end of body.
//! The Envoy glue gathers the inputs and acts on the answer; every rule about requests lives here.

use crate::engine::{judge_body, Decision};
use crate::limits::{Limiter, Refusal, Reservation, Store};
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
    /// Who session-scoped rate limits count (see [`crate::policy::Identity::resolve`]).
    pub identity: String,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it; the rate-limit units it took are given back if the upstream answers 5xx.
    Forward(Vec<Reservation>),
    Reply(Reply),
}

/// The world outside the pure core: the rate-limit store and the clock (unix seconds).
pub struct Env<'a, S: Store> {
    pub store: &'a S,
    pub now: u64,
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

/// Decides a complete request body: inspect, check `Mcp-*` headers, decide each call, then take every
/// allowed call's rate-limit units (all or nothing).
pub fn check_body<S: Store>(policy: &Policy, head: &Head, bytes: &[u8], env: &Env<'_, S>) -> Outcome {
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
    let verdicts = judge_body(policy, &body);
    let mut decisions: Vec<Option<Decision<'_>>> = Vec::with_capacity(verdicts.len());
    let mut charges = Vec::new();
    let mut owner = Vec::new();
    for (i, v) in verdicts.into_iter().enumerate() {
        decisions.push(v.map(|v| {
            for c in v.charges {
                charges.push(c);
                owner.push(i);
            }
            v.decision
        }));
    }
    if let Some(r) = reply::refused(&body, &decisions) {
        return Outcome::Reply(r);
    }
    if charges.is_empty() {
        return Outcome::Forward(Vec::new());
    }
    let limiter = Limiter { store: env.store, max_tracked: policy.identity.max_tracked, hold_secs: policy.hold_secs() };
    let (index, retry_after_secs, why) = match limiter.reserve(&head.identity, &charges, env.now) {
        Ok(reservations) => return Outcome::Forward(reservations),
        Err(Refusal::Limited { index, retry_after_secs }) => (index, retry_after_secs, None),
        // Fail closed: a call whose count cannot be kept is not forwarded.
        Err(e @ Refusal::Unavailable(_)) => (0, 1, Some(e.to_string())),
    };
    let (Some(charge), Some(elem)) = (charges.get(index), owner.get(index)) else {
        return Outcome::Reply(reply::internal("rate-limit bookkeeping failed"));
    };
    let rule = decisions.get(*elem).and_then(|d| d.as_ref()).and_then(Decision::rule);
    let limit = policy
        .rule_for(body.messages.get(*elem).and_then(|m| m.tool_call()).map_or("", |c| c.name.as_ref()))
        .and_then(|r| r.limits.iter().find(|l| l.spec == charge.limit));
    let reason = why.unwrap_or_else(|| limit.map_or_else(|| "rate limit reached".into(), |l| format!("rate limit of {} reached", l.describe())));
    let limited = Decision::RateLimited {
        rule,
        reason,
        limit: charge.limit.max,
        window_secs: charge.limit.window_secs,
        retry_after_secs,
    };
    if let Some(slot) = decisions.get_mut(*elem) {
        *slot = Some(limited);
    }
    match reply::refused(&body, &decisions) {
        Some(r) => Outcome::Reply(r),
        None => Outcome::Reply(reply::internal("rate-limit bookkeeping failed")),
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
    use crate::limits::{init_store, memory::MemoryStore};
    use crate::policy::parse;

    fn check_body(p: &Policy, head: &Head, bytes: &[u8]) -> Outcome {
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        super::check_body(p, head, bytes, &Env { store: &store, now: 0 })
    }

    fn policy() -> Policy {
        parse(br#"{"version":"1","default":"deny","tools":{"get_run":{}},"max_body_bytes":200}"#).unwrap()
    }

    fn code(o: &Outcome) -> (u32, i64) {
        match o {
            Outcome::Reply(r) => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                (r.status, v["error"]["code"].as_i64().unwrap_or(0))
            }
            Outcome::Forward(_) => (0, 0),
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
        assert_eq!(check_body(&p, &head, GET), Outcome::Forward(vec![]));
        assert_eq!(code(&check_body(&p, &head, &[b' '; 201])), (413, -32600));
        assert_eq!(code(&check_body(&p, &head, b"nope")), (400, -32700));
        let deny = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_run"}}"#;
        assert_eq!(code(&check_body(&p, &head, deny)), (200, -31001));
    }

    #[test]
    fn rate_limits_count_forwarded_calls_and_batches_are_all_or_nothing() {
        let p = parse(br#"{"version":"1","tools":{"t":{"rate_limit":"3/minute"},"u":{}}}"#).unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = Env { store: &store, now: 61 };
        let head = Head { identity: "h:mcp-session-id:s1".into(), ..Head::default() };
        let t = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        let batch3 = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}},
                         {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"u"}},
                         {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t"}},
                         {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t"}}]"#;
        assert!(matches!(super::check_body(&p, &head, t, &env), Outcome::Forward(r) if r.len() == 1));
        // 1 + 3 > 3: the batch is refused whole, and takes nothing.
        let Outcome::Reply(r) = super::check_body(&p, &head, batch3, &env) else { panic!() };
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 4);
        assert_eq!(v[0]["error"]["code"], -31001);
        assert_eq!(v[3]["error"]["code"], -31002);
        assert_eq!(v[3]["error"]["data"]["retry_after_seconds"], 59);
        assert_eq!(v[3]["error"]["data"]["limit"], 3);
        assert!(matches!(super::check_body(&p, &head, t, &env), Outcome::Forward(_)));
        assert!(matches!(super::check_body(&p, &head, t, &env), Outcome::Forward(_)));
        assert_eq!(code(&super::check_body(&p, &head, t, &env)), (200, -31002));
        // Another session has its own count.
        let other = Head { identity: "h:mcp-session-id:s2".into(), ..Head::default() };
        assert!(matches!(super::check_body(&p, &other, t, &env), Outcome::Forward(_)));
    }

    #[test]
    fn mcp_headers_must_match() {
        let p = policy();
        let head = |m: Option<&str>, n: Option<&str>| Head {
            mcp_method: m.map(Into::into),
            mcp_name: n.map(Into::into),
            ..Head::default()
        };
        assert_eq!(check_body(&p, &head(Some("tools/call"), Some("get_run")), GET), Outcome::Forward(vec![]));
        assert_eq!(code(&check_body(&p, &head(Some("tools/list"), None), GET)), (400, -32020));
        assert_eq!(code(&check_body(&p, &head(None, Some("get_runs")), GET)), (400, -32020));
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert_eq!(code(&check_body(&p, &head(Some("ping"), None), batch)), (400, -32020));
        let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p1"}}"#;
        assert_eq!(check_body(&p, &head(Some("prompts/get"), Some("p1")), prompt), Outcome::Forward(vec![]));
        let res = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert_eq!(code(&check_body(&p, &head(None, Some("file:///b")), res)), (400, -32020));
    }
}
