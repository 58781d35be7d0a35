//! Limits counted by the rate limit service (`rate_limit_service`): what a body asks it ([`plan`]), and what
//! its answers make of the body ([`Counting::conclude`]). The wire format and the descriptors are
//! `crate::limits::fleet`; this file puts them on the records of one body.
//!
//! Order and what a refusal means for the other side: the limits this Envoy counts (`"counted": "proxy"`) are
//! taken first ([`super::check_body`]), all or nothing, as without a service; only when they have room is the
//! service asked. A call refused here is never shown to the service (so it consumes nothing there); a call the
//! service refuses (or cannot answer for, under `on_error: deny`) gives back what it took here. What the service
//! counted is never given back: the service has no refunds (an upstream 5xx or approval not granted gives back
//! only the units counted here).

use super::awaiting::Awaiting;
use super::{events, Env, Event, Head};
use crate::engine::Decision;
use crate::limits::fleet::{self, Fleet, FleetLimit, OnError, Outcome, Plan};
use crate::limits::rls;
use crate::limits::{Charge, Store};
use crate::policy::{Mode, Policy};
use crate::record::Record;
use crate::reply::{self, Reply};

/// One `ShouldRateLimit` request of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    /// The record (message) whose call it counts.
    record: usize,
    /// Every fleet charge of that call, in the order given to [`fleet::plan`] (`ask.charges` index them).
    charges: Vec<Charge>,
    ask: fleet::Ask,
}

/// A charge the service need not be asked about: over its limit in any window (`fleet::Plan::Over`).
pub(super) struct Over {
    pub record: usize,
    pub charge: Charge,
    pub retry_after_secs: u64,
}

/// The requests for every call of `records` that has fleet-counted charges, in body order.
fn requests(policy: &Policy, head: &Head, records: &[Record<'_>]) -> Result<Vec<Sent>, Over> {
    let mut sent = Vec::new();
    let Some(service) = &policy.rate_limit_service else {
        return Ok(sent);
    };
    for (record, r) in records.iter().enumerate() {
        let (charges, limits): (Vec<Charge>, Vec<&FleetLimit>) = r
            .charges
            .iter()
            .filter_map(|c| Some((*c, policy.fleet_limit(c.limit.id)?)))
            .unzip();
        if charges.is_empty() {
            continue;
        }
        let fleets: Vec<Fleet> = limits
            .iter()
            .zip(&charges)
            .map(|(limit, c)| Fleet {
                limit,
                units: c.units,
            })
            .collect();
        match fleet::plan(&service.domain, &fleets, head.who()) {
            Plan::Nothing => {}
            Plan::Over {
                charge,
                retry_after_secs,
            } => {
                // `charge` indexes `charges`, which is not empty here.
                if let Some(&charge) = charges.get(charge).or(charges.first()) {
                    return Err(Over {
                        record,
                        charge,
                        retry_after_secs,
                    });
                }
            }
            Plan::Ask(asks) => sent.extend(asks.into_iter().map(|ask| Sent {
                record,
                charges: charges.clone(),
                ask,
            })),
        }
    }
    Ok(sent)
}

/// What [`plan`] found.
pub(super) enum Planned {
    /// Ask the service first.
    Count(Counting),
    /// Nothing to ask: go on with these approval asks (as given).
    Nothing(Vec<String>),
}

/// What to do with a body (`records`, once what this Envoy counts had room) for its fleet-counted limits.
/// `approval`: the approval asks of the body, made once the service has said yes.
pub(super) fn plan(
    policy: &Policy,
    head: &Head,
    batch: bool,
    records: &[Record<'_>],
    approval: Vec<String>,
) -> Result<Planned, Over> {
    let sent = requests(policy, head, records)?;
    if sent.is_empty() {
        return Ok(Planned::Nothing(approval));
    }
    Ok(Planned::Count(Counting {
        awaiting: Awaiting::keep(batch, records),
        approval,
        sent,
    }))
}

/// A body waiting for the rate limit service: its records (kept without the body, as for approval), the
/// requests sent, and the approval asks to make once the service has said yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counting {
    awaiting: Awaiting,
    approval: Vec<String>,
    sent: Vec<Sent>,
}

/// What becomes of a body once the service has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Forward it.
    Forward,
    /// Refuse it; the caller gives back the units counted here.
    Reply(Reply),
    /// Ask the approval service (as [`super::Outcome::Approve`]).
    Approve {
        asks: Vec<String>,
        awaiting: Awaiting,
    },
}

/// The result of [`Counting::conclude`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub next: Next,
    /// One per message (none when the body goes on to approval: its conclusion reports them).
    pub events: Vec<Event>,
    /// Requests the service gave no usable answer to (`mcp_policy.rate_limit_service_errors_total`).
    pub errors: usize,
}

impl Counting {
    /// The serialized `RateLimitRequest`s to send, in order; their answers go to [`Counting::conclude`] in
    /// the same order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.sent.iter().map(|s| s.ask.message.as_slice())
    }

    /// The answers envoyproxy/ratelimit would give if every fleet limit of the body had room, or (`spent`: a
    /// charge's `limit.id`) if that limit were spent: for `mcp-policy explain`, which has no service to ask,
    /// and the tests.
    pub fn simulated(&self, policy: &Policy, spent: Option<u64>) -> Vec<Result<Vec<u8>, String>> {
        self.sent
            .iter()
            .map(|s| {
                let statuses: Vec<rls::Status> = s
                    .ask
                    .charges
                    .iter()
                    .map(|&i| {
                        let charge = s.charges.get(i);
                        let limit = charge.and_then(|c| policy.fleet_limit(c.limit.id));
                        let over = charge.is_some_and(|c| Some(c.limit.id) == spent);
                        let (max, unit) = limit.map_or((0, rls::Unit::Second), |f| (f.max, f.unit));
                        let units = charge.map_or(0, |c| c.units);
                        rls::Status {
                            code: if over {
                                rls::CODE_OVER_LIMIT
                            } else {
                                rls::CODE_OK
                            },
                            current_limit: Some(rls::CurrentLimit {
                                requests_per_unit: max,
                                unit: unit as i32,
                            }),
                            limit_remaining: if over {
                                0
                            } else {
                                max.saturating_sub(u32::try_from(units).unwrap_or(u32::MAX))
                            },
                            duration_until_reset: Some(rls::Duration {
                                seconds: i64::try_from(unit.secs()).unwrap_or(1),
                                nanos: 0,
                            }),
                        }
                    })
                    .collect();
                let overall_code = if statuses.iter().any(|s| s.code == rls::CODE_OVER_LIMIT) {
                    rls::CODE_OVER_LIMIT
                } else {
                    rls::CODE_OK
                };
                Ok(rls::Response {
                    overall_code,
                    statuses,
                }
                .encode())
            })
            .collect()
    }

    /// Applies the answers (`Ok(message)` for gRPC status 0, else `Err(reason)`), in the order of
    /// [`Counting::messages`]. A call over a fleet limit is refused (-31002 `rate_limited`), the first in body
    /// order; a call the service gave no usable answer for is refused under `on_error: deny` (-31002
    /// `rate_limit_unavailable`) and forwarded uncounted under `allow` (its audit line says so). A batch goes
    /// whole or not at all, as always.
    pub fn conclude<S: Store>(
        self,
        policy: &Policy,
        head: &Head,
        answers: &[Result<Vec<u8>, String>],
        env: &Env<'_, S>,
    ) -> Counted {
        let mut records = self.awaiting.records();
        let mut errors = 0;
        let mut limited: Option<(usize, Charge, u64)> = None;
        let mut unavailable: Vec<(usize, String)> = Vec::new();
        for (i, s) in self.sent.iter().enumerate() {
            let answer = match answers.get(i) {
                Some(Ok(bytes)) => Ok(bytes.as_slice()),
                Some(Err(e)) => Err(e.clone()),
                None => Err("no answer was recorded".to_owned()),
            };
            let limits: Option<Vec<Fleet>> = s
                .charges
                .iter()
                .map(|c| {
                    Some(Fleet {
                        limit: policy.fleet_limit(c.limit.id)?,
                        units: c.units,
                    })
                })
                .collect();
            let outcome = match &limits {
                Some(fleets) => fleet::read(&s.ask, fleets, answer),
                None => {
                    Outcome::Unavailable("the policy changed while the service was asked".into())
                }
            };
            match outcome {
                Outcome::Allowed => {}
                Outcome::Limited {
                    charge,
                    retry_after_secs,
                } => {
                    if limited.is_none() {
                        if let Some(c) = s.charges.get(charge) {
                            limited = Some((s.record, *c, retry_after_secs));
                        }
                    }
                }
                Outcome::Unavailable(reason) => {
                    errors += 1;
                    if !unavailable.iter().any(|(r, _)| *r == s.record) {
                        unavailable.push((s.record, reason));
                    }
                }
            }
        }
        let on_error = policy
            .rate_limit_service
            .as_ref()
            .map_or(OnError::Deny, |s| s.on_error);
        let mut refused = false;
        if let Some((record, charge, retry)) = limited {
            if let Some(r) = records.get_mut(record) {
                let view = policy.view_of(head.profile_index());
                r.decision = Some(super::limited(view, r, charge, retry, None));
                refused = true;
            }
        }
        for (record, reason) in unavailable {
            let Some(r) = records.get_mut(record) else {
                continue;
            };
            match on_error {
                OnError::Deny if !r.is_refusal() => {
                    r.decision = Some(Decision::RateLimitUnavailable {
                        rule: r.rule(),
                        reason,
                    });
                    refused = true;
                }
                OnError::Deny => {}
                OnError::Allow => {
                    r.note = Some(format!(
                        "forwarded without counting its fleet limits (rate_limit_service.on_error: allow): {reason}"
                    ));
                }
            }
        }
        let audit_mode = policy.mode == Mode::Audit;
        if refused {
            return match reply::refused(self.awaiting.batch(), &records) {
                Some(r) if !audit_mode => Counted {
                    events: events(env, head, &records, true, false),
                    next: Next::Reply(r),
                    errors,
                },
                _ => Counted {
                    events: events(env, head, &records, false, audit_mode),
                    next: Next::Forward,
                    errors,
                },
            };
        }
        if self.approval.is_empty() || audit_mode {
            return Counted {
                events: events(env, head, &records, false, audit_mode),
                next: Next::Forward,
                errors,
            };
        }
        let notes: Vec<Option<String>> = records.iter().map(|r| r.note.clone()).collect();
        drop(records);
        let mut awaiting = self.awaiting;
        for (i, note) in notes.into_iter().enumerate() {
            if let Some(note) = note {
                awaiting.note(i, note);
            }
        }
        Counted {
            events: Vec::new(),
            next: Next::Approve {
                asks: self.approval,
                awaiting,
            },
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{check_body, Checked, Outcome};
    use super::*;
    use crate::limits::init_store;
    use crate::limits::memory::MemoryStore;
    use crate::limits::rls::{CurrentLimit, Duration, Response, Status};
    use crate::policy::parse;

    const POLICY: &str = r#"{"version":"1","rate_limit_service":{"cluster":"rl","domain":"d"},
        "approval":{"cluster":"approvals"},
        "tools":{"t":{"rate_limit":["3/minute",{"max":1,"window":60,"counted":"proxy"}]},
                 "g":{"rate_limit":{"max":10,"window":"hour","scope":"global"}},
                 "c":{"rate_limit":["5/minute",{"max":100,"window":"day","cost":"args.n"}]},
                 "a":{"action":"require_approval","rate_limit":"2/minute"},
                 "u":{}}}"#;

    fn call(id: u32, tool: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    }

    fn head() -> Head {
        Head {
            identity: "s-1".into(),
            ..Head::default()
        }
    }

    fn env(store: &MemoryStore) -> Env<'_, MemoryStore> {
        Env {
            store,
            now_nanos: 1_800_000_000_000_000_000,
            audit: true,
        }
    }

    fn store() -> MemoryStore {
        let s = MemoryStore::default();
        init_store(&s).unwrap();
        s
    }

    /// The body's `Count` outcome (panics otherwise).
    fn counting(c: Checked) -> (Vec<crate::limits::Reservation>, Counting) {
        match c.outcome {
            Outcome::Count {
                reservations,
                counting,
            } => (reservations, counting),
            other => panic!("{other:?}"),
        }
    }

    fn reply_json(n: &Next) -> serde_json::Value {
        let Next::Reply(r) = n else { panic!("{n:?}") };
        serde_json::from_str(&r.body).unwrap()
    }

    fn over(statuses: Vec<(i32, Option<i64>)>) -> Vec<Result<Vec<u8>, String>> {
        let statuses = statuses
            .into_iter()
            .map(|(code, reset)| Status {
                code,
                current_limit: Some(CurrentLimit {
                    requests_per_unit: 3,
                    unit: 2,
                }),
                limit_remaining: 0,
                duration_until_reset: reset.map(|seconds| Duration { seconds, nanos: 0 }),
            })
            .collect();
        vec![Ok(Response {
            overall_code: rls::CODE_OVER_LIMIT,
            statuses,
        }
        .encode())]
    }

    #[test]
    fn local_limits_first_then_one_request_per_call() {
        let p = parse(POLICY.as_bytes()).unwrap();
        let s = store();
        let (held, c) = counting(check_body(
            &p,
            &head(),
            call(1, "t", "{}").as_bytes(),
            &env(&s),
        ));
        // The proxy-counted limit was taken here; the fleet one is asked.
        assert_eq!(held.len(), 1);
        let messages: Vec<&[u8]> = c.messages().collect();
        assert_eq!(messages.len(), 1);
        let text = String::from_utf8_lossy(messages[0]);
        assert!(
            text.contains("mcp_rule")
                && text.contains(r#"tools["t"]"#)
                && text.contains("0:3/minute")
        );
        assert!(text.contains(&fleet::identity_hash("s-1")));
        // A second call is refused here (1/minute counted by this Envoy): the service is not asked.
        let Checked {
            outcome, events, ..
        } = check_body(&p, &head(), call(2, "t", "{}").as_bytes(), &env(&s));
        let Outcome::Reply(r) = outcome else { panic!() };
        assert!(
            r.body.contains("rate limit of 1 calls per 60s reached"),
            "{}",
            r.body
        );
        assert_eq!(events[0].decision, "rate_limited");
        // Mixed costs: two requests; a call without fleet limits asks nothing.
        let (_, c) = counting(check_body(
            &p,
            &head(),
            call(3, "c", r#"{"n":7}"#).as_bytes(),
            &env(&s),
        ));
        assert_eq!(c.messages().count(), 2);
        assert!(matches!(
            check_body(&p, &head(), call(4, "u", "{}").as_bytes(), &env(&s)).outcome,
            Outcome::Forward(_)
        ));
        // A cost over the limit's max: refused without asking, and what was counted here goes back.
        let Outcome::Reply(r) = check_body(
            &p,
            &head(),
            call(5, "c", r#"{"n":101}"#).as_bytes(),
            &env(&s),
        )
        .outcome
        else {
            panic!()
        };
        assert!(
            r.body
                .contains("rate limit of 100 units per 86400s reached"),
            "{}",
            r.body
        );
        let (_, c) = counting(check_body(
            &p,
            &head(),
            call(6, "c", r#"{"n":1}"#).as_bytes(),
            &env(&s),
        ));
        assert_eq!(
            c.messages().count(),
            2,
            "5/minute still had room: the refused call gave its unit back"
        );
    }

    #[test]
    fn answers_allow_refuse_or_fail_as_on_error_says() {
        let p = parse(POLICY.as_bytes()).unwrap();
        let s = store();
        let body = call(1, "t", "{}");
        // A store each: the proxy-counted 1/minute would refuse the second call before the service is asked.
        let fresh = || counting(check_body(&p, &head(), body.as_bytes(), &env(&store()))).1;
        // Room: forwarded, one allow event.
        let c = fresh();
        let room = c.simulated(&p, None);
        let done = c.conclude(&p, &head(), &room, &env(&s));
        assert_eq!((done.next.clone(), done.errors), (Next::Forward, 0));
        assert_eq!(done.events[0].decision, "allow");
        // Over: -31002 with the service's duration_until_reset.
        let done = fresh().conclude(&p, &head(), &over(vec![(2, Some(17))]), &env(&s));
        let v = reply_json(&done.next);
        assert_eq!(v["error"]["code"], -31002);
        assert_eq!(v["error"]["data"]["decision"], "rate_limited");
        assert_eq!(v["error"]["data"]["retry_after_seconds"], 17);
        assert_eq!(v["error"]["data"]["limit"], 3);
        assert_eq!(v["error"]["data"]["window_seconds"], 60);
        assert_eq!(done.events[0].decision, "rate_limited");
        // No usable answer, on_error deny (the default): -31002 rate_limit_unavailable, counted as an error.
        for answer in [
            Err("the rate limit service answered gRPC status 14 (UNAVAILABLE)".to_owned()),
            Ok(b"\xff\xff garbage".to_vec()),
            Ok(vec![0x08, 0x00]),
        ] {
            let done = fresh().conclude(&p, &head(), &[answer], &env(&s));
            assert_eq!(done.errors, 1);
            let v = reply_json(&done.next);
            assert_eq!(v["error"]["code"], -31002);
            assert_eq!(v["error"]["data"]["decision"], "rate_limit_unavailable");
            assert!(
                v["error"]["data"]["reason"].as_str().unwrap().len() > 10,
                "{v}"
            );
            assert_eq!(done.events[0].decision, "rate_limit_unavailable");
            assert!(done.events[0].audit.contains("rate_limit_unavailable"));
        }
        // on_error allow: forwarded, and the audit line says it went uncounted.
        let allow = parse(
            POLICY
                .replace(r#""domain":"d""#, r#""domain":"d","on_error":"allow""#)
                .as_bytes(),
        )
        .unwrap();
        let c = counting(check_body(&allow, &head(), body.as_bytes(), &env(&store()))).1;
        let done = c.conclude(&allow, &head(), &[Err("timeout".into())], &env(&s));
        assert_eq!((done.next, done.errors), (Next::Forward, 1));
        assert_eq!(done.events[0].decision, "allow");
        assert!(
            done.events[0].audit.contains("forwarded without counting"),
            "{}",
            done.events[0].audit
        );
        // Audit mode: reported as would_*, forwarded.
        let audit = parse(
            POLICY
                .replace(r#""version":"1","#, r#""version":"1","mode":"audit","#)
                .as_bytes(),
        )
        .unwrap();
        let c = counting(check_body(&audit, &head(), body.as_bytes(), &env(&store()))).1;
        let done = c.conclude(&audit, &head(), &[Err("timeout".into())], &env(&s));
        assert_eq!(done.next, Next::Forward);
        assert_eq!(done.events[0].decision, "would_rate_limit_unavailable");
        let c = counting(check_body(&audit, &head(), body.as_bytes(), &env(&store()))).1;
        let done = c.conclude(&audit, &head(), &over(vec![(2, None)]), &env(&s));
        assert_eq!(
            (done.next, done.events[0].decision.as_str()),
            (Next::Forward, "would_rate_limit")
        );
    }

    #[test]
    fn a_batch_goes_whole_or_not_at_all_and_approval_comes_after_the_service() {
        let p = parse(POLICY.as_bytes()).unwrap();
        let s = store();
        let batch = format!(
            "[{},{},{}]",
            call(1, "g", "{}"),
            call(2, "u", "{}"),
            call(3, "a", "{}")
        );
        let (_, c) = counting(check_body(&p, &head(), batch.as_bytes(), &env(&s)));
        assert_eq!(
            c.messages().count(),
            2,
            "one request per call with fleet limits"
        );
        // The second request (the call needing approval) over: the whole batch refused, nobody asked.
        let answers = vec![
            c.simulated(&p, None)[0].clone(),
            over(vec![(2, Some(5))]).remove(0),
        ];
        let done = c.clone().conclude(&p, &head(), &answers, &env(&s));
        let Next::Reply(r) = &done.next else { panic!() };
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v[0]["error"]["data"]["decision"], "deny");
        assert_eq!(v[2]["error"]["data"]["decision"], "rate_limited");
        let labels: Vec<&str> = done.events.iter().map(|e| e.decision.as_str()).collect();
        assert_eq!(labels, ["deny", "deny", "rate_limited"]);
        // Room everywhere: on to approval, with the ask made before (the rule's reason and all).
        let room = c.simulated(&p, None);
        let done = c.conclude(&p, &head(), &room, &env(&s));
        let Next::Approve { asks, awaiting } = done.next else {
            panic!()
        };
        assert_eq!(asks.len(), 1);
        assert!(asks[0].contains(r#""tool":"a""#));
        assert!(done.events.is_empty(), "reported once approval is answered");
        let (res, events) = awaiting.conclude(
            &head(),
            &[crate::approval::Answer::Granted {
                remember_secs: None,
            }],
            &env(&s),
        );
        assert!(res.is_ok());
        assert_eq!(events.len(), 3);
    }
}
