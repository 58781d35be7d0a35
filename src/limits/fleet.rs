//! Fleet-wide limits: what mcp-policy asks Envoy's rate limit service for one call, and how it reads the answer.
//! The same shape is counted alike by envoyproxy/ratelimit and by Kuadrant's Limitador, whose configurations
//! `mcp-policy export-limits` prints from the policy (so the limits are written once, in the policy).
//!
//! ## The descriptors
//! One descriptor per charged limit, its entries in this order:
//! - `mcp_rule`: the rule's JSON path in the policy, as validation errors spell it: `tools["search_runs"]`,
//!   `prompts["summarise"]`, `resources["file:///public/*"]` (so same-named keys of different sets differ); a
//!   caller profile's own rule is named by the profile's name instead of its place in the list,
//!   `profiles["ml-admins"].tools["search_runs"]`, as the ids of the limits this Envoy counts are: a profile's
//!   limits count apart from the top level's, and keep their counts when profiles are reordered. A top-level rule
//!   a profile inherits keeps its name (one count for the top level and the profile, as in this Envoy);
//! - `mcp_limit`: the limit's index in the rule's `rate_limit` and what it allows: `0:10/minute`. A changed limit
//!   is another descriptor, so a service still configured for the old policy does not count it silently under
//!   the old numbers (envoyproxy/ratelimit even says so: see [`read`]);
//! - `mcp_session`, for a per-session (`"scope": "session"`) limit only: the first 32 hex digits (128 bits) of the
//!   SHA-256 of the session identity ([`identity_hash`]). Hashed because the identity is often an
//!   `Mcp-Session-Id`, which is a bearer secret for the session it names, and the service keeps descriptor values
//!   in its Redis keys, logs and metrics; 128 bits so that two identities never share a count in practice;
//!   SHA-256 so that the audit line's 12-digit identity hash is a prefix of it (one caller's audit lines and
//!   counters can be matched). It hides long random values, not guessable ones: an IP address can be found by
//!   hashing every address.
//! - `mcp_caller`, for a per-caller (`"scope": "caller"`, the default with `callers`) limit only: the same hash of
//!   the caller's key, the one this Envoy counts caller-scoped limits by (`jwt:<subject>`, `peer:<principal>`,
//!   else `ip:<client address>`: [`crate::limits::Who::caller`]). Hashed because a subject is often an e-mail
//!   address, which has no place in Redis keys and the service's metrics. A session and a caller never share a
//!   count: their entries have different keys.
//!
//! Each descriptor carries the `limit` override (`requests_per_unit` = `max`, `unit` = the window) and its
//! `hits_addend` (the call's cost). envoyproxy/ratelimit honours both (the override for any descriptor of a domain
//! its configuration declares); Limitador reads only its own limits, the request-level `hits_addend`, and
//! binds descriptors by position (`descriptors[0].mcp_rule`).
//!
//! ## Requests
//! A call's fleet charges go in one `ShouldRateLimit` request, except that Limitador applies one `hits_addend`
//! to a whole request: so the rule's fleet limits are split by cost, one request for the limits without `cost`
//! and one per distinct `cost` argument path (a rule with `"10/minute"` and `{"max": 1000, "window": "day",
//! "cost": "args.amount"}` makes two requests, asked together). Which request a limit goes in and at which
//! position is fixed when the policy loads ([`FleetLimit::request`], [`FleetLimit::position`]), which is what lets
//! the exported Limitador conditions bind by position. Every descriptor of a request has the same cost, sent both
//! as the request's `hits_addend` and as each descriptor's.
//!
//! A charge of 0 units asks nothing (it cannot go over its limit; Limitador would count a `hits_addend` of 0 as
//! 1); a charge above its limit's `max` is over the limit without asking (it could never fit).

use super::rls::{self, Descriptor, Override, Request, Unit};
use super::{Scope, Who};
use crate::sha256;

/// Descriptor entry keys.
pub const RULE_KEY: &str = "mcp_rule";
pub const LIMIT_KEY: &str = "mcp_limit";
pub const SESSION_KEY: &str = "mcp_session";
pub const CALLER_KEY: &str = "mcp_caller";

/// Hex digits of the SHA-256 of an identity in `mcp_session` and `mcp_caller` (128 bits).
pub const IDENTITY_HEX_CHARS: usize = 32;

/// Default `rate_limit_service.domain`.
pub const DEFAULT_DOMAIN: &str = "mcp-policy";
/// Default `rate_limit_service.timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// Largest `rate_limit_service.timeout_ms` (one minute: a call waits that long at most).
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// What happens to a call when the service cannot say (timeout, unreachable, an error status, garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse the call (-31002, `data.decision` `rate_limit_unavailable`).
    Deny,
    /// Forward it uncounted.
    Allow,
}

/// The policy's `rate_limit_service` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    /// Envoy cluster of the service (HTTP/2).
    pub cluster: String,
    /// The `domain` of every request (Limitador's namespace).
    pub domain: String,
    pub timeout_ms: u64,
    pub on_error: OnError,
}

/// What the service is told about one fleet-counted limit; fixed when the policy loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLimit {
    /// The limit's JSON path in the policy (`tools["search_runs"].rate_limit[0]`): names it in exported configs.
    pub path: String,
    /// The `mcp_rule` value: the rule's JSON path.
    pub rule: String,
    /// The `mcp_limit` value: `{index}:{max}/{unit}`.
    pub limit: String,
    pub max: u32,
    pub unit: Unit,
    /// Counted per session identity (`mcp_session` entry), per caller (`mcp_caller`), or for all callers
    /// together (neither).
    pub scope: Scope,
    /// Which of the call's requests carries it (0 for the limits without `cost`, if any, then one per `cost`
    /// argument path in the order the rule's limits first name it).
    pub request: usize,
    /// Its descriptor's index in that request.
    pub position: usize,
}

impl FleetLimit {
    /// A limit of the rule at `rule_path`, at `index` in its `rate_limit` list, at `path`; `request` and
    /// `position` are set by [`place`] once the rule's limits are known.
    pub fn new(
        path: String,
        rule_path: String,
        index: usize,
        max: u32,
        unit: Unit,
        scope: Scope,
    ) -> FleetLimit {
        FleetLimit {
            path,
            limit: format!("{index}:{max}/{}", unit.name()),
            rule: rule_path,
            max,
            unit,
            scope,
            request: 0,
            position: 0,
        }
    }
}

/// Sets `request` and `position` of one rule's fleet limits, given in the rule's order with their cost argument
/// path (`None`: no cost): one request per distinct cost, the limits without cost first.
pub fn place<'f>(limits: impl IntoIterator<Item = (&'f mut FleetLimit, Option<&'f str>)>) {
    let mut limits: Vec<(&mut FleetLimit, Option<&str>)> = limits.into_iter().collect();
    let mut costs: Vec<Option<&str>> = Vec::new();
    if limits.iter().any(|(_, c)| c.is_none()) {
        costs.push(None);
    }
    for (_, c) in &limits {
        if !costs.contains(c) {
            costs.push(*c);
        }
    }
    let mut next = vec![0usize; costs.len()];
    for (l, c) in &mut limits {
        let request = costs.iter().position(|x| x == c).unwrap_or(0);
        l.request = request;
        if let Some(n) = next.get_mut(request) {
            l.position = *n;
            *n += 1;
        }
    }
}

impl FleetLimit {
    /// The key of the descriptor entry naming whom the limit counts (`None`: everyone together).
    pub fn identity_key(&self) -> Option<&'static str> {
        match self.scope {
            Scope::Session => Some(SESSION_KEY),
            Scope::Caller => Some(CALLER_KEY),
            Scope::Global => None,
        }
    }
}

/// The value of `mcp_session` or `mcp_caller`: the first [`IDENTITY_HEX_CHARS`] hex digits of the SHA-256 of
/// the identity.
pub fn identity_hash(identity: &str) -> String {
    let mut h = sha256::hex_digest(identity.as_bytes());
    h.truncate(IDENTITY_HEX_CHARS);
    h
}

/// One fleet-counted charge of a call: the limit and the units it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet<'p> {
    pub limit: &'p FleetLimit,
    pub units: u64,
}

/// One `ShouldRateLimit` request of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The serialized `RateLimitRequest` (bare: `dispatch_grpc_call` frames it).
    pub message: Vec<u8>,
    /// For each descriptor, in order, the index of its charge in the slice given to [`plan`].
    pub charges: Vec<usize>,
}

/// What to do for one call's fleet charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to ask: no charge takes any unit.
    Nothing,
    /// Send these requests (together) and [`read`] each answer.
    Ask(Vec<Ask>),
    /// The charge at this index takes more than its limit allows in any window: over the limit without asking.
    Over {
        charge: usize,
        retry_after_secs: u64,
    },
}

/// The requests for one call's fleet charges (every fleet-counted limit of the call's rule, as the engine charges
/// them), counted for `who` (its session identity for per-session limits, its caller for per-caller ones).
pub fn plan(domain: &str, charges: &[Fleet], who: Who<'_>) -> Plan {
    if let Some((i, c)) = charges
        .iter()
        .enumerate()
        .find(|(_, c)| c.units > u64::from(c.limit.max))
    {
        return Plan::Over {
            charge: i,
            retry_after_secs: c.limit.unit.secs(),
        };
    }
    // Each hashed once, and only when a limit counts by it.
    let hashed = |scope: Scope, identity: &str| {
        charges
            .iter()
            .any(|c| c.limit.scope == scope)
            .then(|| identity_hash(identity))
    };
    let session = hashed(Scope::Session, who.session);
    let caller = hashed(Scope::Caller, who.caller);
    let requests = charges.iter().map(|c| c.limit.request).max();
    let mut asks = Vec::new();
    for request in 0..requests.map_or(0, |n| n + 1) {
        let mut members: Vec<(usize, &Fleet)> = charges
            .iter()
            .enumerate()
            .filter(|(_, c)| c.limit.request == request)
            .collect();
        // A request's limits share their cost: all take 0 units, or none does.
        if members.iter().all(|(_, c)| c.units == 0) {
            continue;
        }
        members.sort_by_key(|(_, c)| c.limit.position);
        let units = members.iter().map(|(_, c)| c.units).max().unwrap_or(1);
        let descriptors = members
            .iter()
            .map(|(_, c)| {
                let mut entries = vec![
                    (RULE_KEY, c.limit.rule.as_str()),
                    (LIMIT_KEY, c.limit.limit.as_str()),
                ];
                let value = match c.limit.scope {
                    Scope::Session => session.as_deref(),
                    Scope::Caller => caller.as_deref(),
                    Scope::Global => None,
                };
                if let Some(key) = c.limit.identity_key() {
                    entries.push((key, value.unwrap_or_default()));
                }
                Descriptor {
                    entries,
                    limit: Some(Override {
                        requests_per_unit: c.limit.max,
                        unit: c.limit.unit,
                    }),
                    hits_addend: Some(c.units),
                }
            })
            .collect();
        let message = Request {
            domain,
            descriptors,
            // `units` is at most the largest `max`, a u32.
            hits_addend: u32::try_from(units).unwrap_or(u32::MAX),
        }
        .encode();
        asks.push(Ask {
            message,
            charges: members.iter().map(|(i, _)| *i).collect(),
        });
    }
    if asks.is_empty() {
        Plan::Nothing
    } else {
        Plan::Ask(asks)
    }
}

/// What the service said about one request (or all of a call's: [`combine`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Over the limit of the charge at this index (into the slice given to [`plan`]).
    Limited {
        charge: usize,
        retry_after_secs: u64,
    },
    /// No usable answer: the policy's `on_error` decides. The reason says what went wrong.
    Unavailable(String),
}

/// Reads the answer to `ask`: `Ok(body)` when the call ended with gRPC status 0, else `Err(reason)` (a non-zero
/// status, a timeout, a failed dispatch). `charges` is the slice given to [`plan`].
///
/// - `OK` is allowed, unless the service sent statuses and one has no `current_limit`: it then applied no limit to
///   that descriptor, which envoyproxy/ratelimit does when the request's domain is not in its configuration (the
///   override is ignored then): unavailable, so that a misconfigured service fails as `on_error` says instead of
///   letting everything through. Limitador sends no statuses; a limit its configuration lacks goes uncounted.
/// - `OVER_LIMIT` names the first descriptor whose status is `OVER_LIMIT` and its `duration_until_reset` (rounded
///   up, at least 1 s) when given, else its window. Without statuses (Limitador) the service does not say which
///   limit: the one with the shortest window is named (retrying after it costs one refused call if another limit
///   refused; naming a longer one could make a client wait a day for nothing).
/// - Any other code, statuses that do not match the descriptors one for one, or bytes that are not a
///   `RateLimitResponse` are unavailable.
pub fn read(ask: &Ask, charges: &[Fleet], answer: Result<&[u8], String>) -> Outcome {
    let body = match answer {
        Ok(b) => b,
        Err(reason) => return Outcome::Unavailable(reason),
    };
    let resp = match rls::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Unavailable(format!(
                "the rate limit service's answer is not a RateLimitResponse ({})",
                e.0
            ))
        }
    };
    if !resp.statuses.is_empty() && resp.statuses.len() != ask.charges.len() {
        return Outcome::Unavailable(format!(
            "the rate limit service answered {} statuses for {} descriptors",
            resp.statuses.len(),
            ask.charges.len()
        ));
    }
    let limit_of = |i: usize| charges.get(i).map(|c| c.limit);
    match resp.overall_code {
        rls::CODE_OK => {
            let unlimited = resp
                .statuses
                .iter()
                .zip(&ask.charges)
                .find(|(s, _)| s.current_limit.is_none());
            match unlimited.and_then(|(_, i)| limit_of(*i)) {
                None => Outcome::Allowed,
                Some(l) => Outcome::Unavailable(format!(
                    "the rate limit service applied no limit to {} (is its domain in the service's configuration? `mcp-policy export-limits` prints it)",
                    l.path
                )),
            }
        }
        rls::CODE_OVER_LIMIT => {
            let named = resp
                .statuses
                .iter()
                .zip(&ask.charges)
                .find(|(s, _)| s.code == rls::CODE_OVER_LIMIT);
            let (charge, reset) = match named {
                Some((s, i)) => (*i, s.duration_until_reset.map(|d| d.ceil_secs().max(1))),
                None => {
                    let shortest = ask
                        .charges
                        .iter()
                        .copied()
                        .min_by_key(|i| limit_of(*i).map_or(u64::MAX, |l| l.unit.secs()));
                    (shortest.unwrap_or(0), None)
                }
            };
            let window = limit_of(charge).map_or(1, |l| l.unit.secs());
            Outcome::Limited {
                charge,
                retry_after_secs: reset.unwrap_or(window),
            }
        }
        code => Outcome::Unavailable(format!(
            "the rate limit service answered code {code} (neither OK nor OVER_LIMIT)"
        )),
    }
}

/// The outcome of a call from those of its requests: over a limit if any request is (the first such, in request
/// order), else unavailable if any is, else allowed.
pub fn combine(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    let mut unavailable = None;
    for o in outcomes {
        match o {
            Outcome::Limited { .. } => return o,
            Outcome::Unavailable(_) => {
                unavailable.get_or_insert(o);
            }
            Outcome::Allowed => {}
        }
    }
    unavailable.unwrap_or(Outcome::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::rls::{CurrentLimit, Duration, Response, Status};

    fn limit(index: usize, max: u32, unit: Unit, scope: Scope) -> FleetLimit {
        FleetLimit::new(
            format!("tools[\"t\"].rate_limit[{index}]"),
            "tools[\"t\"]".into(),
            index,
            max,
            unit,
            scope,
        )
    }

    /// Who a call counts for: `session`, and a caller of its own.
    fn who(session: &str) -> Who<'_> {
        Who {
            session,
            caller: "jwt:alice",
        }
    }

    /// One descriptor as read back: entries, the override (requests_per_unit, unit), hits_addend.
    type SeenDescriptor = (Vec<(String, String)>, Option<(u64, u64)>, Option<u64>);

    /// Decodes a request the way the services read it (a test-only decoder: entries, override, hits).
    #[derive(Debug, PartialEq)]
    struct Seen {
        domain: String,
        hits: u64,
        descriptors: Vec<SeenDescriptor>,
    }

    fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        // (field, varint value, bytes) for varint and length-delimited fields only.
        let mut out = Vec::new();
        let mut i = 0;
        let varint = |i: &mut usize| {
            let mut v = 0u64;
            let mut s = 0;
            loop {
                let b = b[*i];
                *i += 1;
                v |= u64::from(b & 0x7f) << s;
                s += 7;
                if b < 0x80 {
                    return v;
                }
            }
        };
        while i < b.len() {
            let k = varint(&mut i);
            if k & 7 == 0 {
                out.push((k >> 3, varint(&mut i), vec![]));
            } else {
                let n = varint(&mut i) as usize;
                out.push((k >> 3, 0, b[i..i + n].to_vec()));
                i += n;
            }
        }
        out
    }

    fn seen(message: &[u8]) -> Seen {
        let mut s = Seen {
            domain: String::new(),
            hits: 0,
            descriptors: vec![],
        };
        for (f, v, bytes) in fields(message) {
            match f {
                1 => s.domain = String::from_utf8(bytes).unwrap(),
                3 => s.hits = v,
                2 => {
                    let mut d = (vec![], None, None);
                    for (f, _, bytes) in fields(&bytes) {
                        match f {
                            1 => {
                                let e = fields(&bytes);
                                let text = |n: u64| {
                                    e.iter()
                                        .find(|x| x.0 == n)
                                        .map(|x| String::from_utf8(x.2.clone()).unwrap())
                                        .unwrap_or_default()
                                };
                                d.0.push((text(1), text(2)));
                            }
                            2 => {
                                let o = fields(&bytes);
                                let num = |n: u64| o.iter().find(|x| x.0 == n).map_or(0, |x| x.1);
                                d.1 = Some((num(1), num(2)));
                            }
                            3 => d.2 = Some(fields(&bytes).first().map_or(0, |x| x.1)),
                            _ => panic!("descriptor field {f}"),
                        }
                    }
                    s.descriptors.push(d);
                }
                _ => panic!("request field {f}"),
            }
        }
        s
    }

    /// Each limit charged one unit.
    fn once_each<'l>(a: &'l FleetLimit, b: &'l FleetLimit) -> [Fleet<'l>; 2] {
        [a, b].map(|limit| Fleet { limit, units: 1 })
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn one_request_per_call_one_descriptor_per_limit() {
        let mut a = limit(0, 10, Unit::Minute, Scope::Session);
        let mut b = limit(1, 1000, Unit::Day, Scope::Global);
        place([(&mut a, None), (&mut b, None)]);
        assert_eq!((a.request, a.position, b.request, b.position), (0, 0, 0, 1));
        assert_eq!(a.limit, "0:10/minute");
        let charges = once_each(&a, &b);
        let Plan::Ask(asks) = plan("mcp-policy", &charges, who("session-1")) else {
            panic!()
        };
        assert_eq!(asks.len(), 1);
        assert_eq!(asks[0].charges, vec![0, 1]);
        let hash = identity_hash("session-1");
        assert_eq!(hash.len(), 32);
        assert!(crate::sha256::hex_digest(b"session-1").starts_with(&hash));
        assert_eq!(
            seen(&asks[0].message),
            Seen {
                domain: "mcp-policy".into(),
                hits: 1,
                descriptors: vec![
                    (
                        vec![
                            pair("mcp_rule", "tools[\"t\"]"),
                            pair("mcp_limit", "0:10/minute"),
                            pair("mcp_session", &hash)
                        ],
                        Some((10, 2)),
                        Some(1)
                    ),
                    (
                        vec![
                            pair("mcp_rule", "tools[\"t\"]"),
                            pair("mcp_limit", "1:1000/day")
                        ],
                        Some((1000, 4)),
                        Some(1)
                    ),
                ]
            }
        );
    }

    /// A per-caller limit names the caller (hashed), not the session: every session of the caller shares one
    /// count, and a session and a caller spelled alike never share one (their entries' keys differ).
    #[test]
    fn per_caller_limits_name_the_caller_and_per_session_ones_the_session() {
        let mut a = limit(0, 5, Unit::Minute, Scope::Caller);
        let mut b = limit(1, 10, Unit::Minute, Scope::Session);
        let mut c = limit(2, 100, Unit::Hour, Scope::Global);
        place([(&mut a, None), (&mut b, None), (&mut c, None)]);
        let entries = |session: &str, caller: &str| {
            let charges = [&a, &b, &c].map(|limit| Fleet { limit, units: 1 });
            let Plan::Ask(asks) = plan("d", &charges, Who { session, caller }) else {
                panic!()
            };
            assert_eq!(asks.len(), 1);
            seen(&asks[0].message)
                .descriptors
                .into_iter()
                .map(|d| d.0)
                .collect::<Vec<_>>()
        };
        let alice = identity_hash("jwt:alice");
        assert!(crate::sha256::hex_digest(b"jwt:alice").starts_with(&alice));
        let one = entries("s-1", "jwt:alice");
        assert_eq!(
            one,
            [
                vec![
                    pair("mcp_rule", "tools[\"t\"]"),
                    pair("mcp_limit", "0:5/minute"),
                    pair("mcp_caller", &alice)
                ],
                vec![
                    pair("mcp_rule", "tools[\"t\"]"),
                    pair("mcp_limit", "1:10/minute"),
                    pair("mcp_session", &identity_hash("s-1"))
                ],
                vec![
                    pair("mcp_rule", "tools[\"t\"]"),
                    pair("mcp_limit", "2:100/hour")
                ],
            ]
        );
        // Another session of alice: the same caller entry, another session entry.
        let two = entries("s-2", "jwt:alice");
        assert_eq!(two[0], one[0]);
        assert_ne!(two[1], one[1]);
        // Bob in alice's session: his own caller entry.
        assert_ne!(entries("s-1", "jwt:bob")[0], one[0]);
        // A session identity spelled like alice's key: the same hash, under another key.
        let same = entries("jwt:alice", "ip:10.0.0.1");
        assert_eq!(same[1][2], pair("mcp_session", &alice));
        assert_ne!(same[1][2], one[0][2]);
        assert_eq!(
            (a.identity_key(), b.identity_key(), c.identity_key()),
            (Some(CALLER_KEY), Some(SESSION_KEY), None)
        );
    }

    #[test]
    fn mixed_costs_split_into_one_request_per_cost_with_fixed_positions() {
        // Rule order: cost args.a, no cost, cost args.b, no cost, cost args.a.
        let mut ls: Vec<FleetLimit> = (0..5)
            .map(|i| limit(i, 100, Unit::Hour, Scope::Global))
            .collect();
        let costs = [Some("args.a"), None, Some("args.b"), None, Some("args.a")];
        place(ls.iter_mut().zip(costs));
        let placed: Vec<(usize, usize)> = ls.iter().map(|l| (l.request, l.position)).collect();
        assert_eq!(placed, vec![(1, 0), (0, 0), (2, 0), (0, 1), (1, 1)]);
        let units = [7, 1, 0, 1, 7];
        let charges: Vec<Fleet> = ls
            .iter()
            .zip(units)
            .map(|(limit, units)| Fleet { limit, units })
            .collect();
        let Plan::Ask(asks) = plan("d", &charges, who("x")) else {
            panic!()
        };
        // args.b costs 0: its request is not sent; the others keep their positions.
        assert_eq!(asks.len(), 2);
        assert_eq!(asks[0].charges, vec![1, 3]);
        assert_eq!(asks[1].charges, vec![0, 4]);
        let s = seen(&asks[1].message);
        assert_eq!(s.hits, 7);
        assert!(s.descriptors.iter().all(|d| d.2 == Some(7)));
        assert_eq!(s.descriptors[1].0[1], pair("mcp_limit", "4:100/hour"));
        assert_eq!(seen(&asks[0].message).hits, 1);
    }

    #[test]
    fn zero_units_ask_nothing_and_too_many_units_are_over_at_once() {
        let l = limit(0, 5, Unit::Second, Scope::Session);
        assert_eq!(
            plan(
                "d",
                &[Fleet {
                    limit: &l,
                    units: 0
                }],
                who("x")
            ),
            Plan::Nothing
        );
        assert_eq!(plan("d", &[], who("x")), Plan::Nothing);
        assert_eq!(
            plan(
                "d",
                &[Fleet {
                    limit: &l,
                    units: 6
                }],
                who("x")
            ),
            Plan::Over {
                charge: 0,
                retry_after_secs: 1
            }
        );
        let Plan::Ask(asks) = plan(
            "d",
            &[Fleet {
                limit: &l,
                units: 5,
            }],
            who("x"),
        ) else {
            panic!()
        };
        assert_eq!(seen(&asks[0].message).hits, 5);
    }

    fn status(code: i32, reset: Option<i64>) -> Status {
        Status {
            code,
            current_limit: Some(CurrentLimit {
                requests_per_unit: 10,
                unit: 2,
            }),
            limit_remaining: 0,
            duration_until_reset: reset.map(|seconds| Duration { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn answers_are_read_as_the_engines_send_them() {
        let a = limit(0, 10, Unit::Minute, Scope::Session);
        let b = limit(1, 1000, Unit::Second, Scope::Global);
        let charges = once_each(&a, &b);
        let ask = Ask {
            message: vec![],
            charges: vec![0, 1],
        };
        let read_resp = |r: Response| read(&ask, &charges, Ok(&r.encode()));
        let resp = |code, statuses| Response {
            overall_code: code,
            statuses,
        };
        // envoyproxy/ratelimit: one status per descriptor.
        assert_eq!(
            read_resp(resp(
                rls::CODE_OK,
                vec![status(1, Some(3)), status(1, Some(1))]
            )),
            Outcome::Allowed
        );
        assert_eq!(
            read_resp(resp(
                rls::CODE_OVER_LIMIT,
                vec![status(1, Some(3)), status(2, Some(0))]
            )),
            Outcome::Limited {
                charge: 1,
                retry_after_secs: 1
            }
        );
        assert_eq!(
            read_resp(resp(
                rls::CODE_OVER_LIMIT,
                vec![status(2, Some(42)), status(2, None)]
            )),
            Outcome::Limited {
                charge: 0,
                retry_after_secs: 42
            }
        );
        assert_eq!(
            read_resp(resp(
                rls::CODE_OVER_LIMIT,
                vec![status(2, None), status(1, None)]
            )),
            Outcome::Limited {
                charge: 0,
                retry_after_secs: 60
            }
        );
        // Limitador: no statuses. The shortest window is named.
        assert_eq!(read_resp(resp(rls::CODE_OK, vec![])), Outcome::Allowed);
        assert_eq!(
            read_resp(resp(rls::CODE_OVER_LIMIT, vec![])),
            Outcome::Limited {
                charge: 1,
                retry_after_secs: 1
            }
        );
        // A domain the service does not know: OK with no current_limit.
        let mut unknown = status(1, None);
        unknown.current_limit = None;
        let o = read_resp(resp(rls::CODE_OK, vec![status(1, None), unknown]));
        assert!(
            matches!(&o, Outcome::Unavailable(r) if r.contains("tools[\"t\"].rate_limit[1]")),
            "{o:?}"
        );
        // Codes other than OK and OVER_LIMIT, status counts that do not match, garbage, errors.
        for bad in [
            resp(rls::CODE_UNKNOWN, vec![]),
            resp(7, vec![]),
            resp(rls::CODE_OK, vec![status(1, None)]),
        ] {
            assert!(matches!(read_resp(bad), Outcome::Unavailable(_)));
        }
        assert!(matches!(
            read(&ask, &charges, Ok(&[0xff, 0xff])),
            Outcome::Unavailable(r) if r.contains("not a RateLimitResponse")
        ));
        assert_eq!(
            read(&ask, &charges, Err("grpc status 14".into())),
            Outcome::Unavailable("grpc status 14".into())
        );
    }

    #[test]
    fn combine_prefers_a_refusal_then_an_error() {
        let lim = |c| Outcome::Limited {
            charge: c,
            retry_after_secs: 1,
        };
        let down = |r: &str| Outcome::Unavailable(r.into());
        assert_eq!(combine([]), Outcome::Allowed);
        assert_eq!(
            combine([Outcome::Allowed, Outcome::Allowed]),
            Outcome::Allowed
        );
        assert_eq!(combine([Outcome::Allowed, down("a"), down("b")]), down("a"));
        assert_eq!(combine([down("a"), lim(3), lim(4)]), lim(3));
    }
}
