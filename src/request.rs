//! One request body, one pass: the decisions the pure core makes at headers time ([`check_head`]), at end
//! of body ([`check_body`]) and when approval answers are in ([`Awaiting::conclude`]). Every rule about
//! requests lives here; the per-request state machine that calls these and talks to Envoy is
//! [`crate::flow`].
//!
//! A body is inspected once ([`crate::mcp::inspect`]) and judged once: each message becomes one
//! [`Record`], and the reply, the rate-limit charges, the approval asks, the audit lines and the metrics
//! are all read from the records. A request that waits for approval keeps an [`Awaiting`] (the records in
//! owned form), so the answers are applied without reading the body again.

use crate::approval::{Answer, Ask};
use crate::audit::AuditEvent;
use crate::engine::{judge, Decision};
use crate::label::Label;
use crate::limits::{Charge, Limiter, Refusal, Reservation, Store};
use crate::mcp::{inspect, Kind, Message};
use crate::policy::{Mode, Policy};
use crate::record::{Record, Target};
use crate::reply::{self, Reply};
use serde_json::value::RawValue;

/// The request headers mcp-policy looks at.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub content_encoding: Option<String>,
    pub content_length: Option<u64>,
    /// `Mcp-Method` (MCP 2026-07-28): must agree with the body.
    pub mcp_method: Option<String>,
    /// `Mcp-Name` (MCP 2026-07-28): must agree with the body's tool, prompt or resource.
    pub mcp_name: Option<String>,
    /// `mcp-method` or `mcp-name` when the request carries that header on more than one line: the fields above
    /// hold the first line only, a server may read another, so the request is refused.
    pub repeated_mcp_header: Option<&'static str>,
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
    /// Ask the approval service once per body in `asks` (in order), then call [`Awaiting::conclude`] with
    /// the answers. The reservations are the caller's to give back if the answer is not a full yes.
    Approve {
        reservations: Vec<Reservation>,
        asks: Vec<String>,
        awaiting: Awaiting,
    },
}

/// The world outside the pure core: the rate-limit store and the clock.
pub struct Env<'a, S: Store> {
    pub store: &'a S,
    /// Nanoseconds since the Unix epoch.
    pub now_nanos: u64,
    /// Build audit lines (the filter sets this when its log level lets `info` through; building a line that
    /// nobody will read costs a hash of the identity and of the arguments).
    pub audit: bool,
}

impl<S: Store> Env<'_, S> {
    fn now_secs(&self) -> u64 {
        self.now_nanos / 1_000_000_000
    }
}

/// One decision, for metrics and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub decision: Label,
    pub method: String,
    /// The tool of a `tools/call` (per-tool counters); `None` for other messages.
    pub tool: Option<String>,
    /// The audit line (one JSON object); empty when audit lines are off.
    pub audit: String,
}

/// What the filter needs to know about an inspected body besides the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Distinct methods, comma-separated (the value of the exported method header).
    pub methods: String,
    /// Called tools, comma-separated (the value of the exported tool header; empty when none).
    pub tools: String,
    /// The JSON-RPC id (raw) of a `tools/list` request in the body, whose answer must be filtered.
    pub tools_list_id: Option<String>,
}

/// The result of [`check_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub outcome: Outcome,
    /// One per message decided now (none while approval is pending: [`Awaiting::conclude`] reports those).
    pub events: Vec<Event>,
    pub summary: Summary,
}

/// Checks made before any body byte arrives; `Some` ends the request with that reply.
pub fn check_head(policy: &Policy, head: &Head) -> Option<Reply> {
    if let Some(enc) = &head.content_encoding {
        let bad = enc
            .split(',')
            .map(str::trim)
            .find(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        if let Some(e) = bad {
            return Some(reply::unsupported_encoding(e));
        }
    }
    match head.content_length {
        Some(n) if n > policy.max_body_bytes as u64 => {
            Some(reply::too_large(policy.max_body_bytes))
        }
        _ => None,
    }
}

/// Decides a complete request body: inspect, check `Mcp-*` headers, judge each message, then take every
/// allowed call's rate-limit units (all or nothing). In audit mode refusals are reported but forwarded.
pub fn check_body<S: Store>(
    policy: &Policy,
    head: &Head,
    bytes: &[u8],
    env: &Env<'_, S>,
) -> Checked {
    if bytes.len() > policy.max_body_bytes {
        let why = format!("body over max_body_bytes ({})", policy.max_body_bytes);
        return invalid(env, head, reply::too_large(policy.max_body_bytes), &why);
    }
    let body = match inspect(bytes) {
        Ok(b) => b,
        Err(e) => return invalid(env, head, reply::request_error(&e), &e.to_string()),
    };
    if let Some(r) = check_mcp_headers(head, &body.messages, body.batch) {
        let why = "Mcp-Method/Mcp-Name header does not match the body";
        return invalid(env, head, r, why);
    }
    let mut records: Vec<Record<'_>> = body
        .messages
        .iter()
        .map(|m| Record::new(m, m.call().map(|c| judge(policy, c))))
        .collect();
    let summary = summarize(&records);
    let audit_mode = policy.mode == Mode::Audit;
    let finish = |outcome: Outcome, records: &[Record<'_>]| {
        let refused = matches!(outcome, Outcome::Reply(_));
        let events = events(env, head, records, refused, audit_mode);
        Checked {
            outcome,
            events,
            summary: summary.clone(),
        }
    };
    if let Some(r) = reply::refused(body.batch, &records) {
        let outcome = if audit_mode {
            Outcome::Forward(Vec::new())
        } else {
            Outcome::Reply(r)
        };
        return finish(outcome, &records);
    }
    let (index, retry_after_secs, why) = match reserve(policy, head, env, &records) {
        Ok(reservations) => {
            let asks = if audit_mode {
                Vec::new()
            } else {
                approval_asks(head, &records)
            };
            if asks.is_empty() {
                return finish(Outcome::Forward(reservations), &records);
            }
            let awaiting = Awaiting::keep(body.batch, &records);
            return Checked {
                outcome: Outcome::Approve {
                    reservations,
                    asks,
                    awaiting,
                },
                events: Vec::new(),
                summary,
            };
        }
        Err(Refusal::Limited {
            index,
            retry_after_secs,
        }) => (index, retry_after_secs, None),
        // Fail closed: a call whose count cannot be kept is not forwarded.
        Err(e @ Refusal::Unavailable(_)) => (0, 1, Some(e.to_string())),
    };
    let bookkeeping = "rate-limit bookkeeping failed";
    let Some((owner, charge)) = owner_of(&records, index) else {
        return invalid(env, head, reply::internal(bookkeeping), bookkeeping);
    };
    let Some(record) = records.get_mut(owner) else {
        return invalid(env, head, reply::internal(bookkeeping), bookkeeping);
    };
    let limit = record
        .target
        .and_then(|t| policy.set(t.kind).rule_for(t.name))
        .and_then(|r| r.limits.iter().find(|l| l.spec == charge.limit));
    let reason = why.unwrap_or_else(|| {
        limit.map_or_else(
            || "rate limit reached".into(),
            |l| format!("rate limit of {} reached", l.describe()),
        )
    });
    record.decision = Some(Decision::RateLimited {
        rule: record.rule(),
        reason,
        limit: charge.limit.max,
        window_secs: charge.limit.window_secs,
        retry_after_secs,
    });
    match reply::refused(body.batch, &records) {
        Some(_) if audit_mode => finish(Outcome::Forward(Vec::new()), &records),
        Some(r) => finish(Outcome::Reply(r), &records),
        None => invalid(env, head, reply::internal(bookkeeping), bookkeeping),
    }
}

/// A request refused before any message could be judged: one `invalid` event.
fn invalid<S: Store>(env: &Env<'_, S>, head: &Head, r: Reply, why: &str) -> Checked {
    let audit = if !env.audit {
        String::new()
    } else {
        AuditEvent {
            unix_nanos: env.now_nanos,
            decision: Label::Invalid,
            method: "",
            tool: None,
            rule: None,
            reason: Some(why),
            identity: Some(&head.identity),
            request_id: head.request_id.as_deref(),
            jsonrpc_id: None,
            arguments: None,
        }
        .to_json_line()
    };
    Checked {
        outcome: Outcome::Reply(r),
        events: vec![Event {
            decision: Label::Invalid,
            method: String::new(),
            tool: None,
            audit,
        }],
        summary: Summary::default(),
    }
}

/// Takes the units of every charge of every record, in body order, all or nothing. A refusal's index counts
/// charges in that order (see [`owner_of`]).
fn reserve<S: Store>(
    policy: &Policy,
    head: &Head,
    env: &Env<'_, S>,
    records: &[Record<'_>],
) -> Result<Vec<Reservation>, Refusal> {
    let mut charged = records.iter().filter(|r| !r.charges.is_empty());
    let Some(first) = charged.next() else {
        return Ok(Vec::new());
    };
    let limiter = Limiter {
        store: env.store,
        max_tracked: policy.identity.max_tracked,
        hold_secs: policy.hold_secs(),
    };
    if charged.next().is_none() {
        // One charged call (the common case): its charges are all the charges, no copy.
        return limiter.reserve(&head.identity, &first.charges, env.now_secs());
    }
    let all: Vec<Charge> = records
        .iter()
        .flat_map(|r| r.charges.iter().copied())
        .collect();
    limiter.reserve(&head.identity, &all, env.now_secs())
}

/// The record holding the `index`th charge of the body (counted over every record's charges in order), and
/// that charge.
fn owner_of(records: &[Record<'_>], index: usize) -> Option<(usize, Charge)> {
    let mut left = index;
    for (i, r) in records.iter().enumerate() {
        match r.charges.get(left) {
            Some(c) => return Some((i, *c)),
            None => left -= r.charges.len(),
        }
    }
    None
}

fn summarize(records: &[Record<'_>]) -> Summary {
    let mut methods: Vec<&str> = Vec::new();
    let mut tools: Vec<&str> = Vec::new();
    let mut tools_list_id = None;
    for r in records {
        if let Some(method) = r.method {
            if !methods.contains(&method) {
                methods.push(method);
            }
            if method == "tools/list" && tools_list_id.is_none() {
                tools_list_id = r.id.map(|i| i.get().to_owned());
            }
        }
        if let Some(tool) = r.tool() {
            tools.push(tool);
        }
    }
    Summary {
        methods: methods.join(","),
        tools: tools.join(","),
        tools_list_id,
    }
}

/// One event per message that has a method (a client's responses are not decisions).
fn events<S: Store>(
    env: &Env<'_, S>,
    head: &Head,
    records: &[Record<'_>],
    refused: bool,
    audit_mode: bool,
) -> Vec<Event> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(method) = r.method else { continue };
        let (label, reason) = r.label(refused, audit_mode);
        let audit = if !env.audit {
            String::new()
        } else {
            AuditEvent {
                unix_nanos: env.now_nanos,
                decision: label,
                method,
                // The audit line names prompts and resources too; per-tool metrics are for tools only.
                tool: r.target.map(|t| t.name),
                rule: r.rule(),
                reason,
                identity: Some(&head.identity),
                request_id: head.request_id.as_deref(),
                jsonrpc_id: r.id,
                arguments: r.target.and_then(|t| t.arguments),
            }
            .to_json_line()
        };
        out.push(Event {
            decision: label,
            method: method.to_owned(),
            tool: r.tool().map(str::to_owned),
            audit,
        });
    }
    out
}

/// The approval callout bodies, one per call that needs approval, in body order.
fn approval_asks(head: &Head, records: &[Record<'_>]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match (r.id, r.target, &r.decision) {
            (Some(id), Some(t), Some(Decision::NeedsApproval { reason, .. })) => Some(
                Ask {
                    kind: t.kind,
                    tool: t.name,
                    arguments: t.arguments,
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

/// What is kept of a body while its approval callouts are out: each message's envelope and call, and the
/// rule that allowed it or asked for approval. Enough to answer, audit and count every message once the
/// answers are in, without reading the body again (Envoy still holds the body itself, to forward it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaiting {
    batch: bool,
    messages: Vec<Kept>,
}

/// One message of an [`Awaiting`] body.
#[derive(Debug, Clone)]
struct Kept {
    method: Option<String>,
    id: Option<Box<RawValue>>,
    target: Option<(Kind, String, Option<Box<RawValue>>)>,
    rule: Option<String>,
    /// The call waits for approval; otherwise it is allowed (or not a governed call).
    asked: bool,
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        let raw = |r: &Option<Box<RawValue>>| r.as_ref().map(|v| v.get().to_owned());
        let target = |k: &Kept| {
            k.target
                .as_ref()
                .map(|(kind, name, args)| (*kind, name.clone(), raw(args)))
        };
        self.method == other.method
            && raw(&self.id) == raw(&other.id)
            && target(self) == target(other)
            && self.rule == other.rule
            && self.asked == other.asked
    }
}

impl Eq for Kept {}

impl Awaiting {
    /// Keeps `records` (none refused: a refused body is answered, never held for approval).
    fn keep(batch: bool, records: &[Record<'_>]) -> Self {
        let messages = records
            .iter()
            .map(|r| Kept {
                method: r.method.map(str::to_owned),
                id: r.id.map(RawValue::to_owned),
                target: r.target.map(|t| {
                    (
                        t.kind,
                        t.name.to_owned(),
                        t.arguments.map(RawValue::to_owned),
                    )
                }),
                rule: r.rule().map(str::to_owned),
                asked: matches!(r.decision, Some(Decision::NeedsApproval { .. })),
            })
            .collect();
        Awaiting { batch, messages }
    }

    /// The records again, as they were when the asks went out.
    fn records(&self) -> Vec<Record<'_>> {
        self.messages
            .iter()
            .map(|k| {
                let rule = k.rule.as_deref();
                let target = k.target.as_ref().map(|(kind, name, args)| Target {
                    kind: *kind,
                    name,
                    arguments: args.as_deref(),
                });
                Record {
                    method: k.method.as_deref(),
                    id: k.id.as_deref(),
                    decision: target.map(|_| {
                        if k.asked {
                            Decision::NeedsApproval { rule, reason: None }
                        } else {
                            Decision::Allow { rule }
                        }
                    }),
                    target,
                    charges: Vec::new(),
                    granted: false,
                }
            })
            .collect()
    }

    /// Applies the approval answers (in the order of [`Outcome::Approve`]'s asks): `Ok` forwards the request;
    /// `Err` is the reply (and the caller gives the rate-limit units back). The events report every message.
    pub fn conclude<S: Store>(
        &self,
        head: &Head,
        answers: &[Answer],
        env: &Env<'_, S>,
    ) -> (Result<(), Reply>, Vec<Event>) {
        let mut records = self.records();
        let mut answers = answers.iter();
        for r in &mut records {
            let Some(Decision::NeedsApproval { rule, .. }) = r.decision else {
                continue;
            };
            let (reason, unavailable) = match answers.next() {
                Some(Answer::Granted) => {
                    r.granted = true;
                    r.decision = Some(Decision::Allow { rule });
                    continue;
                }
                Some(Answer::Denied(reason)) => (reason.clone(), false),
                Some(Answer::Unavailable(reason)) => (reason.clone(), true),
                None => ("no answer was recorded".to_owned(), true),
            };
            r.decision = Some(Decision::NotApproved {
                rule,
                reason,
                unavailable,
            });
        }
        let result = match reply::refused(self.batch, &records) {
            Some(r) => Err(r),
            None => Ok(()),
        };
        let events = events(env, head, &records, result.is_err(), false);
        (result, events)
    }
}

/// [`check_body`], then [`Awaiting::conclude`] with `answers` if the body asks for approval: the whole life
/// of a request body for the native CLI (`explain`), which has nothing but the body. It takes rate-limit
/// units in `env.store` as [`check_body`] does. The filter keeps the [`Awaiting`] instead and never reads a
/// body twice.
pub fn conclude<S: Store>(
    policy: &Policy,
    head: &Head,
    bytes: &[u8],
    answers: &[Answer],
    env: &Env<'_, S>,
) -> (Result<(), Reply>, Vec<Event>) {
    let checked = check_body(policy, head, bytes, env);
    match checked.outcome {
        Outcome::Approve { awaiting, .. } => awaiting.conclude(head, answers, env),
        Outcome::Forward(_) => (Ok(()), checked.events),
        Outcome::Reply(r) => (Err(r), checked.events),
    }
}

fn check_mcp_headers(head: &Head, messages: &[Message<'_>], batch: bool) -> Option<Reply> {
    if let Some(name) = head.repeated_mcp_header {
        let id = messages.first().filter(|_| !batch).and_then(Message::id);
        return Some(reply::header_mismatch(
            id.map(|i| i.get()),
            &format!("Header mismatch: {name} is sent on more than one header line; ambiguous and refused"),
        ));
    }
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
                &format!(
                    "Header mismatch: Mcp-Method is '{h}' but the body's method is '{body_method}'"
                ),
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
        super::check_body(
            p,
            head,
            bytes,
            &Env {
                store: &store,
                now_nanos: 0,
                audit: true,
            },
        )
        .outcome
    }

    fn policy() -> Policy {
        parse(br#"{"version":"1","default":"deny","tools":{"get_run":{}},"max_body_bytes":200}"#)
            .unwrap()
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

    const GET: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}"#;

    #[test]
    fn head_checks() {
        let p = policy();
        let h = |enc: &str, len: Option<u64>| Head {
            content_encoding: Some(enc.into()),
            content_length: len,
            ..Head::default()
        };
        assert_eq!(check_head(&p, &h("gzip", None)).unwrap().status, 415);
        assert_eq!(
            check_head(&p, &h("identity, br", None)).unwrap().status,
            415
        );
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
        let deny =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_run"}}"#;
        assert_eq!(code(&check_body(&p, &head, deny)), (200, -31001));
    }

    #[test]
    fn rate_limits_count_forwarded_calls_and_batches_are_all_or_nothing() {
        let p =
            parse(br#"{"version":"1","tools":{"t":{"rate_limit":"3/minute"},"u":{}}}"#).unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = Env {
            store: &store,
            now_nanos: 61_000_000_000,
            audit: true,
        };
        let head = Head {
            identity: "h:mcp-session-id:s1".into(),
            ..Head::default()
        };
        let t = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        let batch3 = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}},
                         {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"u"}},
                         {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t"}},
                         {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t"}}]"#;
        assert!(
            matches!(super::check_body(&p, &head, t, &env).outcome, Outcome::Forward(r) if r.len() == 1)
        );
        // 1 + 3 > 3: the batch is refused whole, and takes nothing.
        let Outcome::Reply(r) = super::check_body(&p, &head, batch3, &env).outcome else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 4);
        assert_eq!(v[0]["error"]["code"], -31001);
        assert_eq!(v[3]["error"]["code"], -31002);
        assert_eq!(v[3]["error"]["data"]["retry_after_seconds"], 59);
        assert_eq!(v[3]["error"]["data"]["limit"], 3);
        assert!(matches!(
            super::check_body(&p, &head, t, &env).outcome,
            Outcome::Forward(_)
        ));
        assert!(matches!(
            super::check_body(&p, &head, t, &env).outcome,
            Outcome::Forward(_)
        ));
        assert_eq!(
            code(&super::check_body(&p, &head, t, &env).outcome),
            (200, -31002)
        );
        // Another session has its own count.
        let other = Head {
            identity: "h:mcp-session-id:s2".into(),
            ..Head::default()
        };
        assert!(matches!(
            super::check_body(&p, &other, t, &env).outcome,
            Outcome::Forward(_)
        ));
    }

    #[test]
    fn approval_round_trip() {
        let p = parse(
            br#"{"version":"1","approval":{"cluster":"a"},"tools":{
            "c":{"action":"require_approval","reason":"human","rate_limit":"1/minute"},"g":{}}}"#,
        )
        .unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = Env {
            store: &store,
            now_nanos: 0,
            audit: true,
        };
        let head = Head {
            identity: "s1".into(),
            request_id: Some("r1".into()),
            ..Head::default()
        };
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"g"}},
                        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"c","arguments":{"x":1}}}]"#;
        let Outcome::Approve {
            reservations,
            asks,
            awaiting,
        } = super::check_body(&p, &head, batch, &env).outcome
        else {
            panic!()
        };
        assert_eq!(reservations.len(), 1);
        assert_eq!(asks.len(), 1);
        let ask: serde_json::Value = serde_json::from_str(&asks[0]).unwrap();
        assert_eq!(ask["tool"], "c");
        assert_eq!(ask["jsonrpc_id"], 2);
        assert_eq!(ask["identity"], "s1");
        assert_eq!(ask["request_id"], "r1");
        assert_eq!(ask["reason"], "human");
        assert_eq!(ask["arguments"]["x"], 1);
        let (ok, events) = awaiting.conclude(&head, &[Answer::Granted], &env);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            events.iter().map(|e| e.decision).collect::<Vec<_>>(),
            vec!["allow", "approval_granted"]
        );
        let (r, events) = awaiting.conclude(&head, &[Answer::Denied("no".into())], &env);
        let r = r.unwrap_err();
        assert_eq!(
            events.iter().map(|e| e.decision).collect::<Vec<_>>(),
            vec!["deny", "approval_denied"]
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["error"]["code"], -31001);
        assert_eq!(v[1]["error"]["code"], -31003);
        assert_eq!(v[1]["error"]["data"]["decision"], "approval_denied");
        let r = awaiting
            .conclude(&head, &[Answer::Unavailable("timeout".into())], &env)
            .0
            .unwrap_err();
        assert!(r.body.contains("approval_unavailable"));
        // The one unit is taken while approval is pending: a second call is rate limited before asking.
        let one = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"c"}}"#;
        assert_eq!(
            code(&super::check_body(&p, &head, one, &env).outcome),
            (200, -31002)
        );
        // Given back (approval not granted), the unit is available again.
        Limiter {
            store: &store,
            max_tracked: p.identity.max_tracked,
            hold_secs: p.hold_secs(),
        }
        .release(&reservations);
        assert!(matches!(
            super::check_body(&p, &head, one, &env).outcome,
            Outcome::Approve { .. }
        ));
    }

    #[test]
    fn a_refused_charge_is_pinned_on_the_call_that_made_it() {
        // Three charged calls in a batch; the third's second limit is spent: the reply names that call.
        let p = parse(
            br#"{"version":"1","tools":{"a":{"rate_limit":"5/minute"},
            "b":{"rate_limit":["5/minute",{"max":1,"window":"hour","scope":"global"}]},"c":{}}}"#,
        )
        .unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = at_zero(&store);
        let head = Head::default();
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"c"}},
            {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}},
            {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"b"}}]"#;
        let Outcome::Reply(r) = super::check_body(&p, &head, batch, &env).outcome else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let codes: Vec<i64> = (0..4)
            .map(|i| v[i]["error"]["code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, [-31001, -31001, -31001, -31002]);
        assert_eq!(v[3]["id"], 4);
        assert_eq!(v[3]["error"]["data"]["limit"], 1);
        assert_eq!(v[3]["error"]["data"]["window_seconds"], 3600);
        assert_eq!(
            v[3]["error"]["data"]["reason"],
            "rate limit of 1 calls per 3600s (global) reached"
        );
        // A store that cannot count (never set up): fail closed on the first charged call.
        let broken = MemoryStore::default();
        let env = Env {
            store: &broken,
            ..env
        };
        let Outcome::Reply(r) = super::check_body(&p, &head, batch, &env).outcome else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["error"]["code"], -31002);
        assert_eq!(v[0]["error"]["data"]["retry_after_seconds"], 1);
        assert!(v[0]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("rate-limit state unavailable"));
    }

    #[test]
    fn what_waits_for_approval_is_kept_without_the_body() {
        let p = parse(
            br#"{"version":"1","approval":{"cluster":"a"},"tools":{"c":{"action":"require_approval"},"g":{}}}"#,
        )
        .unwrap();
        let store = MemoryStore::default();
        let env = at_zero(&store);
        let head = Head {
            identity: "s1".into(),
            ..Head::default()
        };
        let batch = br#"[{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"c","arguments":{"k":[1, 2]}}},
                        {"jsonrpc":"2.0","method":"notifications/initialized"},
                        {"jsonrpc":"2.0","id":7,"result":{}}]"#
            .to_vec();
        let Outcome::Approve { awaiting, .. } = super::check_body(&p, &head, &batch, &env).outcome
        else {
            panic!()
        };
        drop(batch);
        let (ok, events) = awaiting.conclude(&head, &[Answer::Granted], &env);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            events.iter().map(|e| e.decision).collect::<Vec<_>>(),
            vec!["approval_granted", "allow"]
        );
        let line: serde_json::Value = serde_json::from_str(&events[0].audit).unwrap();
        assert_eq!(line["jsonrpc_id"], "x");
        assert_eq!(line["tool"], "c");
        assert_eq!(
            line["args_sha256"],
            crate::sha256::hex_digest(br#"{"k":[1, 2]}"#)
        );
        // No answer recorded for an ask: unavailable.
        let (r, _) = awaiting.conclude(&head, &[], &env);
        assert!(r.unwrap_err().body.contains("no answer was recorded"));
        // The CLI's one-call form checks, then concludes.
        let (r, events) = conclude(
            &p,
            &head,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"c"}}"#,
            &[Answer::Denied("no".into())],
            &env,
        );
        assert!(r.unwrap_err().body.contains("approval_denied"));
        assert_eq!(events[0].decision, "approval_denied");
        let (r, events) = conclude(&p, &head, GET_G, &[], &env);
        assert_eq!((r, events[0].decision), (Ok(()), Label::Allow));
    }

    /// The clock at 0, audit lines on.
    fn at_zero(store: &MemoryStore) -> Env<'_, MemoryStore> {
        Env {
            store,
            now_nanos: 0,
            audit: true,
        }
    }

    const GET_G: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"g"}}"#;

    #[test]
    fn events_and_summary() {
        let p = parse(br#"{"version":"1","tools":{"get_run":{}}}"#).unwrap();
        let store = MemoryStore::default();
        let env = Env {
            store: &store,
            now_nanos: 1_700_000_000_000_000_000,
            audit: true,
        };
        let head = Head {
            identity: "s1".into(),
            request_id: Some("r-1".into()),
            ..Head::default()
        };
        let c = super::check_body(&p, &head, br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_run","arguments":{"secret":"x"}}}"#, &env);
        assert_eq!(
            c.summary,
            Summary {
                methods: "tools/call".into(),
                tools: "delete_run".into(),
                tools_list_id: None
            }
        );
        assert_eq!(c.events.len(), 1);
        let e = &c.events[0];
        assert_eq!(
            (e.decision.as_str(), e.method.as_str(), e.tool.as_deref()),
            ("deny", "tools/call", Some("delete_run"))
        );
        let line: serde_json::Value = serde_json::from_str(&e.audit).unwrap();
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["jsonrpc_id"], 3);
        assert_eq!(line["request_id"], "r-1");
        assert!(
            !e.audit.contains("secret"),
            "arguments never in clear: {}",
            e.audit
        );
        assert_eq!(line["args_sha256"].as_str().unwrap().len(), 64);
        let c = super::check_body(&p, &head, b"{", &env);
        assert_eq!(c.events[0].decision, "invalid");
        let c = super::check_body(&p, &head, br#"[{"jsonrpc":"2.0","id":"L","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":9,"result":{}}]"#, &env);
        assert_eq!(c.summary.methods, "tools/list,notifications/initialized");
        assert_eq!(c.summary.tools_list_id.as_deref(), Some("\"L\""));
        assert_eq!(
            c.events.iter().map(|e| e.decision).collect::<Vec<_>>(),
            vec!["allow", "allow"]
        );
    }

    #[test]
    fn audit_mode_forwards_and_says_would() {
        let p = parse(br#"{"version":"1","mode":"audit","approval":{"cluster":"a"},"tools":{"r":{"rate_limit":"1/hour"},"a":{"action":"require_approval"}}}"#).unwrap();
        let store = MemoryStore::default();
        init_store(&store).unwrap();
        let env = Env {
            store: &store,
            now_nanos: 0,
            audit: true,
        };
        let head = Head {
            identity: "s".into(),
            ..Head::default()
        };
        let call = |name: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
            )
        };
        let run = |name: &str| super::check_body(&p, &head, call(name).as_bytes(), &env);
        let c = run("x");
        assert!(matches!(c.outcome, Outcome::Forward(_)));
        assert_eq!(c.events[0].decision, "would_deny");
        assert_eq!(run("r").events[0].decision, "allow");
        let c = run("r");
        assert!(matches!(c.outcome, Outcome::Forward(_)));
        assert_eq!(c.events[0].decision, "would_rate_limit");
        let c = run("a");
        assert!(matches!(c.outcome, Outcome::Forward(_)));
        assert_eq!(c.events[0].decision, "would_require_approval");
    }

    #[test]
    fn prompt_and_resource_denials_name_their_target() {
        let p = parse(br#"{"version":"1","prompts":{"secret":{"action":"deny","reason":"private"}},"resources_default":"deny"}"#).unwrap();
        let head = Head::default();
        let body = |b: &[u8]| match check_body(&p, &head, b) {
            Outcome::Reply(r) => serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
            other => panic!("{other:?}"),
        };
        let v =
            body(br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret"}}"#);
        assert_eq!(v["error"]["code"], -31001);
        assert_eq!(
            v["error"]["data"],
            serde_json::json!({"prompt":"secret","decision":"deny","reason":"private"})
        );
        assert_eq!(
            v["error"]["message"],
            "Prompt 'secret' denied by policy: private"
        );
        let v = body(br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#);
        assert_eq!(v["error"]["data"]["resource"], "file:///etc/passwd");
        assert_eq!(
            check_body(
                &p,
                &head,
                br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ok"}}"#
            ),
            Outcome::Forward(vec![])
        );
    }

    #[test]
    fn mcp_headers_must_match() {
        let p = policy();
        let head = |m: Option<&str>, n: Option<&str>| Head {
            mcp_method: m.map(Into::into),
            mcp_name: n.map(Into::into),
            ..Head::default()
        };
        assert_eq!(
            check_body(&p, &head(Some("tools/call"), Some("get_run")), GET),
            Outcome::Forward(vec![])
        );
        assert_eq!(
            code(&check_body(&p, &head(Some("tools/list"), None), GET)),
            (400, -32020)
        );
        assert_eq!(
            code(&check_body(&p, &head(None, Some("get_runs")), GET)),
            (400, -32020)
        );
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert_eq!(
            code(&check_body(&p, &head(Some("ping"), None), batch)),
            (400, -32020)
        );
        // A header on two lines: the first agrees with the body, but a server may read the other one.
        let repeated = Head {
            repeated_mcp_header: Some("mcp-name"),
            ..head(Some("tools/call"), Some("get_run"))
        };
        let Outcome::Reply(r) = check_body(&p, &repeated, GET) else {
            panic!("a repeated Mcp-Name header must be refused")
        };
        assert_eq!(r.status, 400);
        assert!(
            r.body
                .starts_with(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"#),
            "{}",
            r.body
        );
        assert!(r
            .body
            .contains("mcp-name is sent on more than one header line"));
        let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p1"}}"#;
        assert_eq!(
            check_body(&p, &head(Some("prompts/get"), Some("p1")), prompt),
            Outcome::Forward(vec![])
        );
        let res =
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert_eq!(
            code(&check_body(&p, &head(None, Some("file:///b")), res)),
            (400, -32020)
        );
    }
}
