//! One request body, one pass: the decisions the pure core makes at headers time ([`check_head`]), at end
//! of body ([`check_body`]) and when approval answers are in ([`Awaiting::conclude`]). Every rule about
//! requests lives here; the per-request state machine that calls these and talks to Envoy is
//! [`crate::flow`].
//!
//! A body is inspected once ([`crate::mcp::inspect`]) and judged once: each message becomes one
//! [`Record`], and the reply, the rate-limit charges, the approval asks, the audit lines and the metrics
//! are all read from the records. A request that waits for approval keeps an [`Awaiting`] (the records in
//! owned form, `awaiting.rs`), so the answers are applied without reading the body again. Tests:
//! `tests.rs`.

use crate::approval::Ask;
use crate::audit::AuditEvent;
use crate::engine::{judge, Decision};
use crate::label::Label;
use crate::limits::{Charge, Limiter, Refusal, Reservation, Store};
use crate::mcp::{inspect, Message};
use crate::pins;
use crate::policy::{Mode, Pins, Policy};
use crate::record::Record;
use crate::reply::{self, Reply};

mod awaiting;
pub use awaiting::{conclude, Awaiting};

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
    if let Some(pins) = &policy.pins {
        refuse_changed_tools(pins, env.store, &mut records);
    }
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

/// Calls of a pinned tool that a tools/list answer last showed with another definition than its pin are
/// refused (`tool_changed`, [`crate::pins`]), before any rate-limit unit is taken; so are they when that memory
/// cannot be read (fail closed).
fn refuse_changed_tools<S: Store>(pins: &Pins, store: &S, records: &mut [Record<'_>]) {
    for r in records.iter_mut() {
        let (Some(tool), Some(d)) = (r.tool(), &r.decision) else {
            continue;
        };
        if d.is_refusal() {
            continue;
        }
        let Some(pin) = pins.get(tool) else {
            continue;
        };
        let reason = match pins::changed(store, pin) {
            Ok(None) => continue,
            Ok(Some(seen)) => format!(
                "the server lists another definition of '{tool}' than the one pinned (pinned {}, listed {}): \
                 review it (mcp-policy pin URL POLICY) before its calls are allowed again",
                pins::short(pin),
                pins::short(&seen)
            ),
            Err(e) => format!(
                "whether the definition of '{tool}' changed could not be read ({})",
                e.0
            ),
        };
        r.decision = Some(Decision::ToolChanged {
            rule: d.rule(),
            reason,
        });
        r.charges.clear();
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
mod tests;
