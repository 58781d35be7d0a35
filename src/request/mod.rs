//! One request body, one pass: the decisions the pure core makes at headers time ([`check_head`]), at end
//! of body ([`check_body`]) and when approval answers are in ([`Awaiting::conclude`]). Every rule about
//! requests lives here; the per-request state machine that calls these and talks to Envoy is
//! [`crate::flow`].
//!
//! A body is inspected once ([`crate::mcp::inspect`]) and judged once: each message becomes one
//! [`Record`], and the reply, the rate-limit charges, the approval asks, the audit lines and the metrics
//! are all read from the records. A request that waits for approval keeps an [`Awaiting`] (the records in
//! owned form, `awaiting.rs`), so the answers are applied without reading the body again; so does a request
//! waiting for the rate limit service (`fleet.rs`, fleet-wide limits). Tests: `tests.rs`.

use crate::approval::Ask;
use crate::audit::AuditEvent;
use crate::caller::{Caller, Identified};
use crate::engine::{judge, Decision};
use crate::label::Label;
use crate::limits::{Charge, Limiter, Refusal, Reservation, Store, Who};
use crate::mcp::{inspect, Message};
use crate::pins;
use crate::policy::{Mode, Pins, Policy, View};
use crate::record::Record;
use crate::reply::{self, Reply};

mod awaiting;
mod fleet;
pub use awaiting::{conclude, Awaiting};
use fleet::Planned;
pub use fleet::{Counted, Counting, Next};

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
    /// The verified caller, for a policy with `callers` (`None` without: nothing is read).
    pub caller: Option<Caller>,
    /// The caller's profile (`None`: the top-level rules apply).
    pub profile: Option<ProfileRef>,
    /// Whom caller-scoped rate limits count: the caller's [`Caller::limit_key`], else the client IP.
    pub caller_identity: String,
}

/// The profile a request's caller got: its place in `Policy::profiles`, and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRef {
    pub index: usize,
    pub name: String,
}

impl Head {
    /// The index of the caller's profile, for [`Policy::view_of`].
    pub fn profile_index(&self) -> Option<usize> {
        self.profile.as_ref().map(|p| p.index)
    }

    /// The caller and its profile, as audit lines and approval callouts report them.
    pub fn identified(&self) -> Option<Identified<'_>> {
        self.caller.as_ref().map(|caller| Identified {
            caller,
            profile: self.profile.as_ref().map(|p| p.name.as_str()),
        })
    }

    /// Who the request's rate-limit charges count for.
    pub fn who(&self) -> Who<'_> {
        Who {
            session: &self.identity,
            caller: &self.caller_identity,
        }
    }
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
    /// Send each of [`Counting::messages`] to the rate limit service, then call [`Counting::conclude`] with
    /// the answers. The reservations (the limits counted here) are the caller's to give back if the body is
    /// then refused.
    Count {
        reservations: Vec<Reservation>,
        counting: Counting,
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
    /// The caller's profile (the decision counters' `profile` label); `None`: the top-level rules.
    pub profile: Option<String>,
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
    // The caller's rules: its profile's (merged with the top level's when the policy loaded), or the top level's.
    let view = policy.view_of(head.profile_index());
    let mut records: Vec<Record<'_>> = body
        .messages
        .iter()
        .map(|m| Record::new(m, m.call().map(|c| judge(view, c))))
        .collect();
    if let Some(pins) = &policy.pins {
        refuse_changed_tools(pins, env.store, &mut records);
    }
    let summary = summarize(&records);
    let audit_mode = policy.mode == Mode::Audit;
    // The summary is moved into the result, not copied: every path ends in one `finish` (or returns it itself).
    let finish = |outcome: Outcome, records: &[Record<'_>], summary: Summary| {
        let refused = matches!(outcome, Outcome::Reply(_));
        let events = events(env, head, records, refused, audit_mode);
        Checked {
            outcome,
            events,
            summary,
        }
    };
    if let Some(r) = reply::refused(body.batch, &records) {
        let outcome = if audit_mode {
            Outcome::Forward(Vec::new())
        } else {
            Outcome::Reply(r)
        };
        return finish(outcome, &records, summary);
    }
    let bookkeeping = "rate-limit bookkeeping failed";
    // The limits this Envoy counts first; the rate limit service is asked only if they have room (`fleet.rs`).
    let refused = match reserve(policy, head, env, &records) {
        Err(refused) => refused,
        Ok(reservations) => {
            let asks = if audit_mode {
                Vec::new()
            } else {
                approval_asks(policy, head, &records)
            };
            match fleet::plan(policy, head, body.batch, &records, asks) {
                Ok(Planned::Count(counting)) => {
                    return Checked {
                        outcome: Outcome::Count {
                            reservations,
                            counting,
                        },
                        events: Vec::new(),
                        summary,
                    };
                }
                Ok(Planned::Nothing(asks)) if asks.is_empty() => {
                    return finish(Outcome::Forward(reservations), &records, summary);
                }
                Ok(Planned::Nothing(asks)) => {
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
                Err(over) => {
                    // What was counted here goes back: the call is refused.
                    limiter(policy, env).release(&reservations);
                    Refused {
                        record: over.record,
                        charge: over.charge,
                        retry_after_secs: over.retry_after_secs,
                        why: None,
                    }
                }
            }
        }
    };
    let Some(record) = records.get_mut(refused.record) else {
        return invalid(env, head, reply::internal(bookkeeping), bookkeeping);
    };
    record.decision = Some(limited(
        view,
        record,
        refused.charge,
        refused.retry_after_secs,
        refused.why,
    ));
    match reply::refused(body.batch, &records) {
        Some(_) if audit_mode => finish(Outcome::Forward(Vec::new()), &records, summary),
        Some(r) => finish(Outcome::Reply(r), &records, summary),
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

/// The decision of a call over a limit (`charge` is the one refused, a limit of the caller's rules `view`; `why`
/// replaces the usual reason when the count could not be kept at all).
fn limited<'r>(
    view: View<'_>,
    record: &Record<'r>,
    charge: Charge,
    retry_after_secs: u64,
    why: Option<String>,
) -> Decision<'r> {
    let limit = record
        .target
        .and_then(|t| view.set(t.kind).rule_for(t.name))
        .and_then(|r| r.limits.iter().find(|l| l.spec == charge.limit));
    let reason = why.unwrap_or_else(|| {
        limit.map_or_else(
            || "rate limit reached".into(),
            |l| format!("rate limit of {} reached", l.describe()),
        )
    });
    Decision::RateLimited {
        rule: record.rule(),
        reason,
        limit: charge.limit.max,
        window_secs: charge.limit.window_secs,
        retry_after_secs,
    }
}

/// A request refused before any message could be judged: one `invalid` event.
fn invalid<S: Store>(env: &Env<'_, S>, head: &Head, r: Reply, why: &str) -> Checked {
    Checked {
        outcome: Outcome::Reply(r),
        events: vec![refused_event(env, head, Label::Invalid, why)],
        summary: Summary::default(),
    }
}

/// The one event of a request refused before any message was judged (`invalid`, or `unauthenticated` at the
/// request headers).
pub fn refused_event<S: Store>(env: &Env<'_, S>, head: &Head, label: Label, why: &str) -> Event {
    let audit = if !env.audit {
        String::new()
    } else {
        AuditEvent {
            unix_nanos: env.now_nanos,
            decision: label,
            method: "",
            target: None,
            rule: None,
            reason: Some(why),
            identity: Some(&head.identity),
            caller: head.identified(),
            request_id: head.request_id.as_deref(),
            jsonrpc_id: None,
            arguments: None,
        }
        .to_json_line()
    };
    Event {
        decision: label,
        method: String::new(),
        tool: None,
        profile: head.profile.as_ref().map(|p| p.name.clone()),
        audit,
    }
}

/// Why a body's rate limits refused it: the record whose charge was refused, that charge, when to retry, and
/// (when the count could not be kept at all: fail closed) why.
struct Refused {
    record: usize,
    charge: Charge,
    retry_after_secs: u64,
    why: Option<String>,
}

fn limiter<'s, S: Store>(policy: &Policy, env: &Env<'s, S>) -> Limiter<'s, S> {
    Limiter {
        store: env.store,
        max_tracked: policy.identity.max_tracked,
        hold_secs: policy.hold_secs(),
    }
}

/// Takes the units of every charge this Envoy counts (all but those of the rate limit service), in body
/// order, all or nothing.
fn reserve<S: Store>(
    policy: &Policy,
    head: &Head,
    env: &Env<'_, S>,
    records: &[Record<'_>],
) -> Result<Vec<Reservation>, Refused> {
    let here = |c: &Charge| {
        policy.rate_limit_service.is_none() || policy.fleet_limit(c.limit.id).is_none()
    };
    let mut charged = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.charges.iter().any(here));
    let Some((first_index, first)) = charged.next() else {
        return Ok(Vec::new());
    };
    let limiter = limiter(policy, env);
    let now = env.now_secs();
    if charged.next().is_none() && first.charges.iter().all(here) {
        // One charged call, all counted here (the common case): its charges are all the charges, no copy.
        return limiter
            .reserve_for(head.who(), &first.charges, now)
            .map_err(|e| refused(e, |i| Some((first_index, *first.charges.get(i)?))));
    }
    let (owners, all): (Vec<usize>, Vec<Charge>) = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.charges.iter().filter(|c| here(c)).map(move |c| (i, *c)))
        .unzip();
    limiter
        .reserve_for(head.who(), &all, now)
        .map_err(|e| refused(e, |i| Some((*owners.get(i)?, *all.get(i)?))))
}

/// The [`Refused`] of a refusal, `owner(i)` being the record and the charge at index `i` of what was reserved.
fn refused(e: Refusal, owner: impl Fn(usize) -> Option<(usize, Charge)>) -> Refused {
    let (index, retry_after_secs, why) = match e {
        Refusal::Limited {
            index,
            retry_after_secs,
        } => (index, retry_after_secs, None),
        Refusal::Unavailable(_) => (0, 1, Some(e.to_string())),
    };
    match owner(index) {
        Some((record, charge)) => Refused {
            record,
            charge,
            retry_after_secs,
            why,
        },
        // Not a record: the caller answers that the bookkeeping failed.
        None => Refused {
            record: usize::MAX,
            charge: Charge {
                limit: crate::limits::LimitSpec {
                    id: 0,
                    max: 0,
                    window_secs: 1,
                    scope: crate::limits::Scope::Global,
                },
                units: 0,
            },
            retry_after_secs,
            why,
        },
    }
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
                target: r.target.map(|t| (t.kind, t.name)),
                rule: r.rule(),
                reason,
                identity: Some(&head.identity),
                caller: head.identified(),
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
            profile: head.profile.as_ref().map(|p| p.name.clone()),
            audit,
        });
    }
    out
}

/// The approval callout bodies, one per call that needs approval, in body order.
fn approval_asks(policy: &Policy, head: &Head, records: &[Record<'_>]) -> Vec<String> {
    let timeout_ms = policy
        .approval
        .as_ref()
        .map_or(crate::approval::DEFAULT_TIMEOUT_MS, |a| a.timeout_ms);
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
                    caller: head.identified(),
                    timeout_ms,
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
