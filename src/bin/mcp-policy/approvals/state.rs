//! The console's state: calls waiting for a person, approvals remembered for a while ("approve for N minutes"),
//! and the recent decisions. Every change is written to the decision log first, then announced to the pages
//! (a version number on a `watch` channel).
//!
//! Time is passed in (milliseconds since the epoch), so the transitions are tested without waiting.

use super::callout::{Caller, Callout, Verdict};
use super::random_id;
use super::store::{DecisionLog, Outcome, Record};
use crate::pretty::pretty;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

/// How many decisions the console keeps in memory and shows (the log file keeps them all).
pub const RECENT: usize = 200;
/// Arguments longer than this are cut in the page (the whole text is still what the filter forwards).
pub const MAX_SHOWN_ARGUMENTS: usize = 100_000;

/// One call waiting for a person.
struct Pending {
    callout: Callout,
    shown_arguments: String,
    arguments_truncated: bool,
    received_ms: u64,
    deadline_ms: u64,
    reply: oneshot::Sender<Verdict>,
}

/// Whom an "approve for N minutes" is for: the verified caller when the filter names one (across all its
/// sessions), else the filter's identity (that session, or that client address). The same rule as the filter's
/// own remembered approvals (`mcp_policy::flow`, `verified_caller`). The two kinds never match each other: a
/// session id that spells `jwt:alice` is still a session id. In JSON: `{"caller": "jwt:alice"}` or
/// `{"identity": "<session id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// `jwt:<subject>`, else `peer:<principal>`.
    Caller(String),
    /// The session id or client address.
    Identity(String),
}

impl Grantee {
    pub fn of(caller: Option<&Caller>, identity: &str) -> Grantee {
        match caller.and_then(Caller::verified_key) {
            Some(key) => Grantee::Caller(key),
            None => Grantee::Identity(identity.to_owned()),
        }
    }
}

/// A remembered approval: this caller may call this tool without asking until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The id of the call whose approval is remembered.
    pub id: String,
    pub method: String,
    pub name: String,
    /// Whom it is for.
    pub grantee: Grantee,
    /// The caller of the call that was approved (policies with `callers`).
    pub caller: Option<Caller>,
    /// The identity of the call that was approved.
    pub identity: String,
    pub by: String,
    pub since_ms: u64,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    grantee: Grantee,
    method: String,
    name: String,
}

impl Key {
    fn new(caller: Option<&Caller>, identity: &str, method: &str, name: &str) -> Key {
        Key {
            grantee: Grantee::of(caller, identity),
            method: method.to_owned(),
            name: name.to_owned(),
        }
    }

    fn of(c: &Callout) -> Key {
        Key::new(c.caller.as_ref(), &c.identity, &c.method, &c.name)
    }
}

struct Inner {
    pending: HashMap<String, Pending>,
    remembered: HashMap<Key, Grant>,
    /// Newest first.
    recent: VecDeque<Record>,
    closed: bool,
}

/// What became of a callout when it arrived.
#[derive(Debug)]
pub enum Submitted {
    /// Answered at once (a remembered approval).
    Answered(Verdict),
    /// Waiting for a person: the answer comes on `reply`, unless `deadline_ms` passes first.
    Waiting {
        id: String,
        deadline_ms: u64,
        reply: oneshot::Receiver<Verdict>,
    },
}

/// A person's decision about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approve: bool,
    pub reason: Option<String>,
    /// Approve for this many seconds (approvals only).
    pub remember_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecideError {
    /// No such call is waiting: decided by someone else, expired, withdrawn, or never there.
    NotWaiting,
    /// The call stopped waiting just now (the filter gave up): nothing was decided.
    TooLate,
    /// The decision could not be written to the log, so it was not given.
    Log(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingView {
    pub id: String,
    pub method: String,
    pub kind: &'static str,
    pub name: String,
    /// Pretty-printed, as the agent wrote them.
    pub arguments: String,
    pub arguments_truncated: bool,
    pub identity: String,
    /// The verified caller and its profile (policies with `callers`).
    pub caller: Option<Caller>,
    /// Whom "approve for N minutes" would be for.
    pub grantee: Grantee,
    pub jsonrpc_id: String,
    pub request_id: Option<String>,
    pub rule_reason: Option<String>,
    pub received_ms: u64,
    pub deadline_ms: u64,
}

/// Everything the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub now_ms: u64,
    /// Newest first.
    pub pending: Vec<PendingView>,
    /// Soonest to end first.
    pub remembered: Vec<Grant>,
    /// Newest first.
    pub recent: Vec<Record>,
}

pub struct Console {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    log: DecisionLog,
    default_timeout_ms: u64,
    /// The longest `remember_seconds` told to the filter (see [`Console::for_the_filter`]).
    revoke_within_s: u64,
}

fn record(c: &Callout, id: &str, outcome: Outcome, by: Option<&str>, now_ms: u64) -> Record {
    Record {
        time: mcp_policy::audit::rfc3339_millis(now_ms.saturating_mul(1_000_000)),
        unix_ms: now_ms,
        outcome,
        by: by.map(str::to_owned),
        id: id.to_owned(),
        method: c.method.clone(),
        name: c.name.clone(),
        identity: c.identity.clone(),
        caller: c.caller.clone(),
        rule_reason: c.rule_reason.clone(),
        reason: None,
        remember_seconds: None,
        waited_ms: None,
        jsonrpc_id: Some(c.jsonrpc_id.clone()),
        request_id: c.request_id.clone(),
        args_sha256: Some(mcp_policy::sha256::hex_digest(c.arguments.as_bytes())),
    }
}

impl Console {
    /// A console writing to `log`, restoring the recent decisions and the remembered approvals still running
    /// from `records` (the log's lines, oldest first). `revoke_within_s`: see [`Console::for_the_filter`].
    pub fn new(
        log: DecisionLog,
        records: Vec<Record>,
        default_timeout_ms: u64,
        revoke_within_s: u64,
        now_ms: u64,
    ) -> Console {
        let mut remembered: HashMap<Key, Grant> = HashMap::new();
        let mut recent = VecDeque::with_capacity(RECENT);
        for r in records {
            match (r.outcome, r.remember_seconds, r.by.as_deref()) {
                (Outcome::Approved, Some(s), Some(by)) => {
                    let until_ms = r.unix_ms.saturating_add(s.saturating_mul(1000));
                    // A line written before callers existed has no `caller`: its approval is its identity's.
                    let key = Key::new(r.caller.as_ref(), &r.identity, &r.method, &r.name);
                    remembered.insert(
                        key.clone(),
                        Grant {
                            id: r.id.clone(),
                            method: r.method.clone(),
                            name: r.name.clone(),
                            grantee: key.grantee,
                            caller: r.caller.clone(),
                            identity: r.identity.clone(),
                            by: by.to_owned(),
                            since_ms: r.unix_ms,
                            until_ms,
                        },
                    );
                }
                (Outcome::Revoked, ..) => remembered.retain(|_, g| g.id != r.id),
                _ => {}
            }
            if recent.len() == RECENT {
                recent.pop_back();
            }
            recent.push_front(r);
        }
        remembered.retain(|_, g| g.until_ms > now_ms);
        Console {
            inner: Mutex::new(Inner {
                pending: HashMap::new(),
                remembered,
                recent,
                closed: false,
            }),
            changed: watch::Sender::new(0),
            log,
            default_timeout_ms,
            revoke_within_s,
        }
    }

    /// The `remember_seconds` the filter is told when `left_s` of an approval for a while remain: at most
    /// `--revoke-within`. The filter then lets the caller's calls through without asking for that long, beyond
    /// the reach of a revocation; after it, its next callout is answered here at once from the approval (while
    /// it runs and was not revoked), with the next stretch. `None`: the filter asks every time.
    fn for_the_filter(&self, left_s: u64) -> Option<u64> {
        Some(left_s.min(self.revoke_within_s)).filter(|s| *s > 0)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that matters more than
        // refusing every call would: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn announce(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Announces every change (a version number) to the pages.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn log_path(&self) -> &std::path::Path {
        self.log.path()
    }

    fn remember(inner: &mut Inner, r: Record) {
        if inner.recent.len() == RECENT {
            inner.recent.pop_back();
        }
        inner.recent.push_front(r);
    }

    /// A callout arrived: answered at once from a remembered approval, or waiting for a person. `Err`: the
    /// console cannot take it (shutting down, no randomness, the log cannot be written): the caller answers an
    /// HTTP error and the filter refuses the call.
    pub fn submit(&self, callout: Callout, now_ms: u64) -> Result<Submitted, String> {
        let id = random_id()?;
        let mut inner = self.lock();
        if inner.closed {
            return Err("the console is shutting down".into());
        }
        let key = Key::of(&callout);
        let granted = inner
            .remembered
            .get(&key)
            .filter(|g| g.until_ms > now_ms)
            .cloned();
        if let Some(g) = granted {
            let left_s = (g.until_ms - now_ms).div_ceil(1000);
            let mut r = record(&callout, &id, Outcome::Remembered, Some(&g.by), now_ms);
            r.remember_seconds = Some(left_s);
            r.waited_ms = Some(0);
            self.log.append(&r)?;
            Self::remember(&mut inner, r);
            drop(inner);
            self.announce();
            return Ok(Submitted::Answered(Verdict {
                approved: true,
                reason: None,
                by: g.by,
                remember_seconds: self.for_the_filter(left_s),
            }));
        }
        inner.remembered.retain(|_, g| g.until_ms > now_ms);
        let timeout_ms = callout.timeout_ms.unwrap_or(self.default_timeout_ms);
        let deadline_ms = now_ms.saturating_add(timeout_ms);
        let mut shown: String = pretty(&callout.arguments);
        let truncated = shown.len() > MAX_SHOWN_ARGUMENTS;
        if truncated {
            let mut end = MAX_SHOWN_ARGUMENTS;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
        }
        let (tx, rx) = oneshot::channel();
        inner.pending.insert(
            id.clone(),
            Pending {
                callout,
                shown_arguments: shown,
                arguments_truncated: truncated,
                received_ms: now_ms,
                deadline_ms,
                reply: tx,
            },
        );
        drop(inner);
        self.announce();
        Ok(Submitted::Waiting {
            id,
            deadline_ms,
            reply: rx,
        })
    }

    /// A person decided about the call `id`. The decision is logged, then sent to the waiting callout.
    pub fn decide(
        &self,
        id: &str,
        decision: Decision,
        by: &str,
        now_ms: u64,
    ) -> Result<Record, DecideError> {
        let mut inner = self.lock();
        let Some(p) = inner.pending.get(id) else {
            return Err(DecideError::NotWaiting);
        };
        if p.reply.is_closed() {
            return Err(DecideError::TooLate);
        }
        let remember_seconds = decision.remember_seconds.filter(|_| decision.approve);
        let outcome = if decision.approve {
            Outcome::Approved
        } else {
            Outcome::Denied
        };
        let mut r = record(&p.callout, id, outcome, Some(by), now_ms);
        r.reason = decision.reason.clone();
        r.remember_seconds = remember_seconds;
        r.waited_ms = Some(now_ms.saturating_sub(p.received_ms));
        self.log.append(&r).map_err(DecideError::Log)?;
        let Some(p) = inner.pending.remove(id) else {
            return Err(DecideError::NotWaiting);
        };
        let verdict = Verdict {
            approved: decision.approve,
            reason: decision.reason,
            by: by.to_owned(),
            remember_seconds: remember_seconds.and_then(|s| self.for_the_filter(s)),
        };
        if p.reply.send(verdict).is_err() {
            // The callout went away between the check above and now: say so in the log too.
            let w = record(&p.callout, id, Outcome::Withdrawn, None, now_ms);
            if let Err(e) = self.log.append(&w) {
                eprintln!("mcp-policy approvals: {e}");
            }
            Self::remember(&mut inner, w);
            drop(inner);
            self.announce();
            return Err(DecideError::TooLate);
        }
        if let Some(s) = remember_seconds {
            let key = Key::of(&p.callout);
            inner.remembered.insert(
                key.clone(),
                Grant {
                    id: id.to_owned(),
                    method: p.callout.method.clone(),
                    name: p.callout.name.clone(),
                    grantee: key.grantee,
                    caller: p.callout.caller.clone(),
                    identity: p.callout.identity.clone(),
                    by: by.to_owned(),
                    since_ms: now_ms,
                    until_ms: now_ms.saturating_add(s.saturating_mul(1000)),
                },
            );
        }
        Self::remember(&mut inner, r.clone());
        drop(inner);
        self.announce();
        Ok(r)
    }

    /// The callout `id` stopped waiting without a decision: its time ran out (`expired`) or the filter went
    /// away. Nothing happens if it was decided meanwhile.
    pub fn end(&self, id: &str, expired: bool, now_ms: u64) -> Option<Record> {
        let mut inner = self.lock();
        let p = inner.pending.remove(id)?;
        let outcome = if expired {
            Outcome::Expired
        } else {
            Outcome::Withdrawn
        };
        let mut r = record(&p.callout, id, outcome, None, now_ms);
        r.waited_ms = Some(now_ms.saturating_sub(p.received_ms));
        if let Err(e) = self.log.append(&r) {
            eprintln!("mcp-policy approvals: {e}");
        }
        Self::remember(&mut inner, r.clone());
        drop(inner);
        self.announce();
        Some(r)
    }

    /// Ends the remembered approval created by the call `id`.
    pub fn revoke(&self, id: &str, by: &str, now_ms: u64) -> Result<Record, DecideError> {
        let mut inner = self.lock();
        let Some(key) = inner
            .remembered
            .iter()
            .find(|(_, g)| g.id == id && g.until_ms > now_ms)
            .map(|(k, _)| k.clone())
        else {
            return Err(DecideError::NotWaiting);
        };
        let Some(g) = inner.remembered.get(&key) else {
            return Err(DecideError::NotWaiting);
        };
        let r = Record {
            time: mcp_policy::audit::rfc3339_millis(now_ms.saturating_mul(1_000_000)),
            unix_ms: now_ms,
            outcome: Outcome::Revoked,
            by: Some(by.to_owned()),
            id: g.id.clone(),
            method: g.method.clone(),
            name: g.name.clone(),
            identity: g.identity.clone(),
            caller: g.caller.clone(),
            rule_reason: None,
            reason: None,
            remember_seconds: None,
            waited_ms: None,
            jsonrpc_id: None,
            request_id: None,
            args_sha256: None,
        };
        self.log.append(&r).map_err(DecideError::Log)?;
        inner.remembered.remove(&key);
        Self::remember(&mut inner, r.clone());
        drop(inner);
        self.announce();
        Ok(r)
    }

    /// Shutting down: every waiting callout is answered with an error (the filter refuses the call: fail
    /// closed) and new ones are refused.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.pending.clear();
    }

    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let inner = self.lock();
        let mut pending: Vec<PendingView> = inner
            .pending
            .iter()
            .map(|(id, p)| PendingView {
                id: id.clone(),
                method: p.callout.method.clone(),
                kind: p.callout.kind,
                name: p.callout.name.clone(),
                arguments: p.shown_arguments.clone(),
                arguments_truncated: p.arguments_truncated,
                identity: p.callout.identity.clone(),
                caller: p.callout.caller.clone(),
                grantee: Grantee::of(p.callout.caller.as_ref(), &p.callout.identity),
                jsonrpc_id: p.callout.jsonrpc_id.clone(),
                request_id: p.callout.request_id.clone(),
                rule_reason: p.callout.rule_reason.clone(),
                received_ms: p.received_ms,
                deadline_ms: p.deadline_ms,
            })
            .collect();
        pending.sort_by(|a, b| (b.received_ms, &b.id).cmp(&(a.received_ms, &a.id)));
        let mut remembered: Vec<Grant> = inner
            .remembered
            .values()
            .filter(|g| g.until_ms > now_ms)
            .cloned()
            .collect();
        remembered.sort_by(|a, b| (a.until_ms, &a.id).cmp(&(b.until_ms, &b.id)));
        Snapshot {
            now_ms,
            pending,
            remembered,
            recent: inner.recent.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::callout::parse;
    use crate::approvals::store::tests::temp_path;

    const T0: u64 = 1_700_000_000_000;

    fn callout(tool: &str, identity: &str) -> Callout {
        parse(
            format!(
                r#"{{"method":"tools/call","tool":"{tool}","arguments":{{"n":1}},"identity":"{identity}",
                    "jsonrpc_id":7,"request_id":"r","reason":"needs a human"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn console() -> (Console, std::path::PathBuf) {
        let path = temp_path("decisions.jsonl");
        let (log, loaded) = DecisionLog::open(&path).unwrap();
        (Console::new(log, loaded.records, 30_000, 3600, T0), path)
    }

    fn reopen(path: &std::path::Path, now_ms: u64) -> Console {
        let (log, loaded) = DecisionLog::open(path).unwrap();
        Console::new(log, loaded.records, 30_000, 3600, now_ms)
    }

    fn wait(
        c: &Console,
        callout: Callout,
        now_ms: u64,
    ) -> (String, u64, oneshot::Receiver<Verdict>) {
        match c.submit(callout, now_ms).unwrap() {
            Submitted::Waiting {
                id,
                deadline_ms,
                reply,
            } => (id, deadline_ms, reply),
            other => panic!("want a waiting call, got {other:?}"),
        }
    }

    fn yes(remember_seconds: Option<u64>) -> Decision {
        Decision {
            approve: true,
            reason: None,
            remember_seconds,
        }
    }

    #[test]
    fn a_call_waits_then_a_person_approves_it() {
        let (c, _) = console();
        let mut changes = c.subscribe();
        let (id, deadline, mut reply) = wait(&c, callout("set_run_tag", "a"), T0);
        assert_eq!(deadline, T0 + 30_000);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let snap = c.snapshot(T0 + 5);
        assert_eq!(snap.pending.len(), 1);
        let p = &snap.pending[0];
        assert_eq!(
            (
                p.name.as_str(),
                p.identity.as_str(),
                p.arguments.as_str(),
                p.rule_reason.as_deref()
            ),
            (
                "set_run_tag",
                "a",
                "{\n  \"n\": 1\n}",
                Some("needs a human")
            )
        );
        assert!(reply.try_recv().is_err(), "no answer before a decision");
        let r = c.decide(&id, yes(None), "ana", T0 + 1500).unwrap();
        assert_eq!(
            (r.outcome, r.by.as_deref(), r.waited_ms),
            (Outcome::Approved, Some("ana"), Some(1500))
        );
        assert_eq!(
            reply.try_recv().unwrap(),
            Verdict {
                approved: true,
                reason: None,
                by: "ana".into(),
                remember_seconds: None
            }
        );
        assert!(changes.has_changed().unwrap());
        let snap = c.snapshot(T0 + 1600);
        assert!(snap.pending.is_empty());
        assert_eq!(snap.recent[0].outcome, Outcome::Approved);
        // Decided once only.
        assert_eq!(
            c.decide(&id, yes(None), "bob", T0 + 1700),
            Err(DecideError::NotWaiting)
        );
    }

    #[test]
    fn a_denial_carries_the_reason() {
        let (c, _) = console();
        let (id, _, mut reply) = wait(&c, callout("t", "a"), T0);
        let no = Decision {
            approve: false,
            reason: Some("not on a Friday".into()),
            remember_seconds: Some(60),
        };
        let r = c.decide(&id, no, "ana", T0 + 10).unwrap();
        assert_eq!(
            (r.outcome, r.reason.as_deref(), r.remember_seconds),
            (Outcome::Denied, Some("not on a Friday"), None)
        );
        let v = reply.try_recv().unwrap();
        assert_eq!(
            (v.approved, v.reason.as_deref(), v.remember_seconds),
            (false, Some("not on a Friday"), None)
        );
        assert!(
            c.snapshot(T0 + 20).remembered.is_empty(),
            "a denial is never remembered"
        );
    }

    #[test]
    fn pending_calls_newest_first() {
        let (c, _) = console();
        let (a, ..) = wait(&c, callout("t1", "a"), T0);
        let (b, ..) = wait(&c, callout("t2", "b"), T0 + 10);
        let (d, ..) = wait(&c, callout("t3", "a"), T0 + 20);
        let ids: Vec<String> = c
            .snapshot(T0 + 30)
            .pending
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec![d, b, a]);
    }

    #[test]
    fn a_callout_without_a_decision_expires_or_is_withdrawn() {
        let (c, _) = console();
        let mut long = callout("t", "a");
        long.timeout_ms = Some(180_000);
        let (id, deadline, _reply) = wait(&c, long, T0);
        assert_eq!(deadline, T0 + 180_000, "the callout's own timeout_ms wins");
        let r = c.end(&id, true, T0 + 180_000).unwrap();
        assert_eq!(
            (r.outcome, r.by, r.waited_ms),
            (Outcome::Expired, None, Some(180_000))
        );
        assert_eq!(
            c.decide(&id, yes(None), "ana", T0 + 180_001),
            Err(DecideError::NotWaiting)
        );
        assert!(c.end(&id, true, T0 + 180_002).is_none());

        let (id, _, reply) = wait(&c, callout("t", "a"), T0);
        drop(reply); // the filter went away
        assert_eq!(
            c.decide(&id, yes(None), "ana", T0 + 5),
            Err(DecideError::TooLate)
        );
        assert_eq!(
            c.end(&id, false, T0 + 6).unwrap().outcome,
            Outcome::Withdrawn
        );
        assert!(c.snapshot(T0 + 7).pending.is_empty());
    }

    #[test]
    fn approve_for_n_minutes_answers_the_same_caller_and_tool() {
        let (c, path) = console();
        let (id, _, mut reply) = wait(&c, callout("set_run_tag", "a"), T0);
        c.decide(&id, yes(Some(600)), "ana", T0 + 1000).unwrap();
        assert_eq!(reply.try_recv().unwrap().remember_seconds, Some(600));
        // Same caller and tool within the window: answered at once, with what is left of it.
        match c.submit(callout("set_run_tag", "a"), T0 + 61_000).unwrap() {
            Submitted::Answered(v) => assert_eq!(
                v,
                Verdict {
                    approved: true,
                    reason: None,
                    by: "ana".into(),
                    remember_seconds: Some(540)
                }
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.snapshot(T0 + 61_000).recent[0].outcome,
            Outcome::Remembered
        );
        // Another caller, another tool: asked.
        wait(&c, callout("set_run_tag", "b"), T0 + 62_000);
        wait(&c, callout("set_experiment_tag", "a"), T0 + 62_000);
        // The window survives a restart ...
        let c2 = reopen(&path, T0 + 100_000);
        assert!(matches!(
            c2.submit(callout("set_run_tag", "a"), T0 + 100_000)
                .unwrap(),
            Submitted::Answered(_)
        ));
        // ... and ends.
        wait(&c2, callout("set_run_tag", "a"), T0 + 601_000);
        assert!(c2.snapshot(T0 + 601_000).remembered.is_empty());
    }

    /// A callout of a policy with `callers`: `caller` is the JSON of the filter's `caller` object.
    fn callout_by(tool: &str, identity: &str, caller: &str) -> Callout {
        parse(
            format!(
                r#"{{"method":"tools/call","tool":"{tool}","arguments":{{}},"identity":"{identity}",
                    "jsonrpc_id":7,"caller":{caller}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const ALICE: &str =
        r#"{"subject":"alice","groups":["ml-admins"],"principal":null,"profile":"ml-admins"}"#;
    const BOB: &str = r#"{"subject":"bob","groups":[],"principal":null,"profile":null}"#;
    const ANONYMOUS: &str =
        r#"{"subject":null,"groups":[],"principal":null,"profile":"anonymous"}"#;
    const WORKLOAD: &str =
        r#"{"subject":null,"groups":[],"principal":"spiffe://x/ns/ci/sa/b","profile":"ci"}"#;

    fn answered(c: &Console, callout: Callout, now_ms: u64) -> bool {
        match c.submit(callout, now_ms).unwrap() {
            Submitted::Answered(v) => v.approved,
            Submitted::Waiting { .. } => false,
        }
    }

    #[test]
    fn approve_for_n_minutes_is_for_the_verified_caller_across_its_sessions() {
        let (c, path) = console();
        let (id, _, _reply) = wait(&c, callout_by("set_run_tag", "s-1", ALICE), T0);
        let p = &c.snapshot(T0).pending[0];
        assert_eq!(p.grantee, Grantee::Caller("jwt:alice".into()));
        assert_eq!(
            p.caller.as_ref().and_then(|c| c.profile.as_deref()),
            Some("ml-admins")
        );
        c.decide(&id, yes(Some(600)), "ana", T0).unwrap();
        let g = &c.snapshot(T0).remembered[0];
        assert_eq!(
            (&g.grantee, g.identity.as_str()),
            (&Grantee::Caller("jwt:alice".into()), "s-1")
        );
        // Alice in another session, or with other groups: hers.
        assert!(answered(
            &c,
            callout_by("set_run_tag", "s-2", ALICE),
            T0 + 1000
        ));
        assert!(answered(
            &c,
            callout_by(
                "set_run_tag",
                "10.0.0.9",
                r#"{"subject":"alice","groups":[]}"#
            ),
            T0 + 1000
        ));
        // Bob, even in alice's session; anyone whose session id spells alice's key; an anonymous caller; a
        // workload: asked.
        for (identity, caller) in [
            ("s-1", BOB),
            ("jwt:alice", ANONYMOUS),
            ("s-1", ANONYMOUS),
            ("s-1", WORKLOAD),
        ] {
            assert!(
                !answered(&c, callout_by("set_run_tag", identity, caller), T0 + 2000),
                "{identity} {caller}"
            );
        }
        assert!(!answered(
            &c,
            callout("set_run_tag", "jwt:alice"),
            T0 + 2000
        ));
        assert!(!answered(&c, callout("set_run_tag", "s-1"), T0 + 2000));
        // The remembered answer is logged with the caller that got it.
        let r = &c.snapshot(T0 + 2000).recent;
        let remembered: Vec<&str> = r
            .iter()
            .filter(|r| r.outcome == Outcome::Remembered)
            .map(|r| r.identity.as_str())
            .collect();
        assert_eq!(remembered, vec!["10.0.0.9", "s-2"]);
        // After a restart, still alice's, not her first session's.
        let c2 = reopen(&path, T0 + 3000);
        assert_eq!(
            c2.snapshot(T0 + 3000).remembered[0].grantee,
            Grantee::Caller("jwt:alice".into())
        );
        assert!(answered(
            &c2,
            callout_by("set_run_tag", "s-3", ALICE),
            T0 + 3000
        ));
        assert!(!answered(
            &c2,
            callout_by("set_run_tag", "s-1", BOB),
            T0 + 3000
        ));
    }

    #[test]
    fn without_a_verified_caller_approve_for_n_minutes_is_for_the_identity() {
        for (caller, grantee) in [
            (ANONYMOUS, Grantee::Identity("s-1".into())),
            (
                WORKLOAD,
                Grantee::Caller("peer:spiffe://x/ns/ci/sa/b".into()),
            ),
        ] {
            let (c, _) = console();
            let (id, _, _reply) = wait(&c, callout_by("t", "s-1", caller), T0);
            c.decide(&id, yes(Some(600)), "ana", T0).unwrap();
            assert_eq!(c.snapshot(T0).remembered[0].grantee, grantee);
            assert!(answered(&c, callout_by("t", "s-1", caller), T0 + 1));
            let other_session = answered(&c, callout_by("t", "s-2", caller), T0 + 1);
            assert_eq!(
                other_session,
                matches!(grantee, Grantee::Caller(_)),
                "{caller}"
            );
        }
    }

    /// Lines written before the console knew callers (no `caller`) load, and their approvals stay their
    /// identity's; new lines carry the caller.
    #[test]
    fn decision_logs_from_before_callers_still_load() {
        let path = temp_path("decisions.jsonl");
        std::fs::write(
            &path,
            format!(
                concat!(
                    r#"{{"time":"2023-11-14T22:13:20.000Z","unix_ms":{},"outcome":"approved","by":"ana","id":"old-1","#,
                    r#""method":"tools/call","name":"t","identity":"jwt:alice","rule_reason":null,"reason":null,"#,
                    r#""remember_seconds":600,"waited_ms":1500,"jsonrpc_id":"7"}}"#,
                    "\n"
                ),
                T0
            ),
        )
        .unwrap();
        let c = reopen(&path, T0 + 1000);
        let snap = c.snapshot(T0 + 1000);
        assert_eq!(
            (snap.recent.len(), snap.recent[0].caller.as_ref()),
            (1, None)
        );
        assert_eq!(
            snap.remembered[0].grantee,
            Grantee::Identity("jwt:alice".into())
        );
        assert!(answered(&c, callout("t", "jwt:alice"), T0 + 1000));
        assert!(!answered(&c, callout_by("t", "s-9", ALICE), T0 + 1000));
        // A new decision writes the caller; revoking it too.
        let (id, _, _reply) = wait(&c, callout_by("u", "s-9", ALICE), T0 + 2000);
        c.decide(&id, yes(Some(60)), "ana", T0 + 2000).unwrap();
        c.revoke(&id, "ana", T0 + 3000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].get("caller").is_none());
        for l in &lines[2..] {
            assert_eq!(
                (
                    l["caller"]["subject"].as_str(),
                    l["caller"]["profile"].as_str()
                ),
                (Some("alice"), Some("ml-admins")),
                "{l}"
            );
        }
        assert_eq!(lines[3]["outcome"], "revoked");
    }

    #[test]
    fn the_filter_is_told_to_remember_for_revoke_within_at_most() {
        let path = temp_path("decisions.jsonl");
        let (log, loaded) = DecisionLog::open(&path).unwrap();
        let c = Console::new(log, loaded.records, 30_000, 60, T0);
        let (id, _, mut reply) = wait(&c, callout("t", "a"), T0);
        let r = c.decide(&id, yes(Some(600)), "ana", T0).unwrap();
        assert_eq!(r.remember_seconds, Some(600), "the approval is for 600 s");
        assert_eq!(reply.try_recv().unwrap().remember_seconds, Some(60));
        // The filter asks again after 60 s: answered here, another 60 s; then what is left.
        for (at, told) in [(T0 + 61_000, 60), (T0 + 570_000, 30)] {
            match c.submit(callout("t", "a"), at).unwrap() {
                Submitted::Answered(v) => assert_eq!(v.remember_seconds, Some(told)),
                other => panic!("{other:?}"),
            }
        }
        // --revoke-within 0: the filter asks every time.
        let (log, loaded) = DecisionLog::open(&temp_path("decisions.jsonl")).unwrap();
        let c = Console::new(log, loaded.records, 30_000, 0, T0);
        let (id, _, mut reply) = wait(&c, callout("t", "a"), T0);
        c.decide(&id, yes(Some(600)), "ana", T0).unwrap();
        assert_eq!(reply.try_recv().unwrap().remember_seconds, None);
        match c.submit(callout("t", "a"), T0 + 1000).unwrap() {
            Submitted::Answered(v) => assert_eq!((v.approved, v.remember_seconds), (true, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_remembered_approval_can_be_revoked_and_stays_revoked() {
        let (c, path) = console();
        let (id, _, _reply) = wait(&c, callout("t", "a"), T0);
        c.decide(&id, yes(Some(600)), "ana", T0).unwrap();
        assert_eq!(c.snapshot(T0).remembered.len(), 1);
        let r = c.revoke(&id, "bob", T0 + 10).unwrap();
        assert_eq!(
            (r.outcome, r.by.as_deref()),
            (Outcome::Revoked, Some("bob"))
        );
        assert_eq!(c.revoke(&id, "bob", T0 + 11), Err(DecideError::NotWaiting));
        wait(&c, callout("t", "a"), T0 + 20);
        let c2 = reopen(&path, T0 + 30);
        assert!(c2.snapshot(T0 + 30).remembered.is_empty());
        wait(&c2, callout("t", "a"), T0 + 30);
    }

    #[test]
    fn recent_decisions_survive_a_restart() {
        let (c, path) = console();
        for n in 0..3u64 {
            let (id, _, _reply) = wait(&c, callout(&format!("t{n}"), "a"), T0 + n);
            c.decide(&id, yes(None), "ana", T0 + n + 1).unwrap();
        }
        let c2 = reopen(&path, T0 + 10);
        let names: Vec<String> = c2
            .snapshot(T0 + 10)
            .recent
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["t2", "t1", "t0"]);
    }

    #[test]
    fn shutting_down_answers_every_waiting_call_with_an_error() {
        let (c, _) = console();
        let (_, _, mut reply) = wait(&c, callout("t", "a"), T0);
        c.close();
        assert!(matches!(
            reply.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(c.submit(callout("t", "a"), T0).is_err());
    }

    #[test]
    fn large_arguments_are_cut_in_the_page_only() {
        let (c, _) = console();
        let mut big = callout("t", "a");
        big.arguments = format!(r#"{{"s":"{}"}}"#, "é".repeat(MAX_SHOWN_ARGUMENTS));
        wait(&c, big, T0);
        let p = &c.snapshot(T0).pending[0];
        assert!(p.arguments_truncated && p.arguments.len() <= MAX_SHOWN_ARGUMENTS);
    }
}
