//! One request, one pass: what the filter asks of the pure core at headers time and at end of body.
//! The Envoy glue gathers the inputs and acts on the answer; every rule about requests lives here.

use crate::approval::{Answer, Ask};
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
    /// `x-request-id`, passed to the approval service.
    pub request_id: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it; the rate-limit units it took are given back if the upstream answers 5xx.
    Forward(Vec<Reservation>),
    Reply(Reply),
    /// Ask the approval service once per body in `asks` (in order), then call [`conclude`] with the answers.
    /// The reservations are the caller's to give back if the answer is not a full yes.
    Approve { reservations: Vec<Reservation>, asks: Vec<String> },
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
    let limiter = Limiter { store: env.store, max_tracked: policy.identity.max_tracked, hold_secs: policy.hold_secs() };
    let reserved = if charges.is_empty() { Ok(Vec::new()) } else { limiter.reserve(&head.identity, &charges, env.now) };
    let (index, retry_after_secs, why) = match reserved {
        Ok(reservations) => {
            let asks = approval_asks(head, &body.messages, &decisions);
            if asks.is_empty() {
                return Outcome::Forward(reservations);
            }
            return Outcome::Approve { reservations, asks };
        }
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

fn approval_asks(head: &Head, messages: &[Message<'_>], decisions: &[Option<Decision<'_>>]) -> Vec<String> {
    messages
        .iter()
        .zip(decisions)
        .filter_map(|(m, d)| match (m, d) {
            (Message::Request { id, call: Some(call), .. }, Some(Decision::NeedsApproval { reason, .. })) => Some(
                Ask {
                    tool: &call.name,
                    arguments: call.arguments,
                    identity: &head.identity,
                    jsonrpc_id: id,
                    request_id: head.request_id.as_deref(),
                    reason: *reason,
                }
                .to_json(),
            ),
            _ => None,
        })
        .collect()
}

/// Finishes a request that waited for approval: `answers` are in the order of [`Outcome::Approve`]'s asks.
/// `Ok` forwards the request; `Err` is the reply (and the caller gives the rate-limit units back).
pub fn conclude(policy: &Policy, bytes: &[u8], answers: &[Answer]) -> Result<(), Reply> {
    let body = inspect(bytes).map_err(|e| reply::request_error(&e))?;
    let mut answers = answers.iter();
    let mut decisions: Vec<Option<Decision<'_>>> = Vec::with_capacity(body.messages.len());
    for verdict in judge_body(policy, &body) {
        decisions.push(verdict.map(|v| match v.decision {
            Decision::NeedsApproval { rule, .. } => match answers.next() {
                Some(Answer::Granted) => Decision::Allow { rule },
                Some(Answer::Denied(reason)) => Decision::NotApproved { rule, reason: reason.clone(), unavailable: false },
                Some(Answer::Unavailable(reason)) => Decision::NotApproved { rule, reason: reason.clone(), unavailable: true },
                None => Decision::NotApproved { rule, reason: "no answer was recorded".into(), unavailable: true },
            },
            d => d,
        }));
    }
    match reply::refused(&body, &decisions) {
        Some(r) => Err(r),
        None => Ok(()),
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
            Outcome::Forward(_) | Outcome::Approve { .. } => (0, 0),
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
    fn approval_round_trip() {
        let p = parse(br#"{"version":"1","approval":{"cluster":"a"},"tools":{
            "c":{"action":"require_approval","reason":"human","rate_limit":"1/minute"},"g":{}}}"#).unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = Env { store: &store, now: 0 };
        let head = Head { identity: "s1".into(), request_id: Some("r1".into()), ..Head::default() };
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"g"}},
                        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"c","arguments":{"x":1}}}]"#;
        let Outcome::Approve { reservations, asks } = super::check_body(&p, &head, batch, &env) else { panic!() };
        assert_eq!(reservations.len(), 1);
        assert_eq!(asks.len(), 1);
        let ask: serde_json::Value = serde_json::from_str(&asks[0]).unwrap();
        assert_eq!(ask["tool"], "c");
        assert_eq!(ask["jsonrpc_id"], 2);
        assert_eq!(ask["identity"], "s1");
        assert_eq!(ask["request_id"], "r1");
        assert_eq!(ask["reason"], "human");
        assert_eq!(ask["arguments"]["x"], 1);
        assert_eq!(conclude(&p, batch, &[Answer::Granted]), Ok(()));
        let r = conclude(&p, batch, &[Answer::Denied("no".into())]).unwrap_err();
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["error"]["code"], -31001);
        assert_eq!(v[1]["error"]["code"], -31003);
        assert_eq!(v[1]["error"]["data"]["decision"], "approval_denied");
        let r = conclude(&p, batch, &[Answer::Unavailable("timeout".into())]).unwrap_err();
        assert!(r.body.contains("approval_unavailable"));
        // The one unit is taken while approval is pending: a second call is rate limited before asking.
        let one = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"c"}}"#;
        assert_eq!(code(&super::check_body(&p, &head, one, &env)), (200, -31002));
        // Given back (approval not granted), the unit is available again.
        Limiter { store: &store, max_tracked: p.identity.max_tracked, hold_secs: p.hold_secs() }.release(&reservations);
        assert!(matches!(super::check_body(&p, &head, one, &env), Outcome::Approve { .. }));
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
