//! Require approval: one callout per call that needs it, unless the same caller's same call was approved
//! earlier for a while that still runs (`crate::remember`); the request waits (other requests carry on) until
//! every answer is in, in whatever order Envoy delivers them.

use super::{env, env_at, resume_after, Action, Flow, Host, Pending};
use crate::approval::{read_answer, Answer};
use crate::policy::Policy;
use crate::remember::{self, For, Key};
use crate::request::{Awaiting, Head};
use log::Level;
use std::time::Duration;

fn is_approval(p: &Pending) -> bool {
    matches!(p, Pending::Approval(_))
}

/// A request waiting for its approval answers.
pub(super) struct Approval {
    /// What is kept of the body to apply the answers (the body itself stays in Envoy, to be forwarded).
    awaiting: Awaiting,
    /// One per ask, in body order; `None` until answered.
    answers: Vec<Option<Answer>>,
    /// One per ask: what an approval of it is remembered as (`None` without an approval service).
    keys: Vec<Option<Key>>,
    /// The id of a tools/list request in the body (its answer is filtered once the request goes on).
    tools_list_id: Option<String>,
}

/// The verified caller whose approvals a request's remembered approvals are: `jwt:<subject>` or
/// `peer:<principal>` for a policy with `callers`, so that a verified caller's approvals hold across its sessions
/// (`None`: anonymous, or no `callers`; they are then its rate-limit identity's, a session id or the client
/// address). A caller key and a session id never name the same slot.
fn verified_caller(head: &Head) -> Option<String> {
    head.caller
        .as_ref()
        .and_then(crate::caller::Caller::limit_key)
}

/// Whether a remembered approval answers the ask of `key` at `now_nanos`. A store that cannot say is logged,
/// and the call is asked about (fail closed: asking is what the policy says).
fn remembered<H: Host>(host: &mut H, key: &Key, now_nanos: u64) -> bool {
    match remember::holds(host.store(), key, now_nanos / 1_000_000_000) {
        Ok(held) => held,
        Err(e) => {
            host.log(
                Level::Warn,
                &format!("mcp-policy: cannot read remembered approvals ({e}); asking the approval service"),
            );
            false
        }
    }
}

impl Flow {
    /// Sends one callout per ask (but for those a remembered approval answers) and waits; concludes at once
    /// if none was sent. `now_nanos`: the clock of the request's decision.
    pub(super) fn ask_approval<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        asks: Vec<String>,
        awaiting: Awaiting,
        tools_list_id: Option<String>,
        now_nanos: u64,
    ) -> Action {
        let mut answers = vec![None; asks.len()];
        let mut keys = vec![None; asks.len()];
        match &policy.approval {
            None => {
                for a in &mut answers {
                    *a = Some(Answer::Unavailable(
                        "no approval service is configured".into(),
                    ));
                }
            }
            Some(cfg) => {
                let timeout = Duration::from_millis(cfg.timeout_ms);
                let verified = verified_caller(&self.head);
                let who = verified
                    .as_deref()
                    .map_or(For::Session(&self.head.identity), For::Caller);
                for (k, call) in keys.iter_mut().zip(awaiting.asked()) {
                    *k = call.map(|(method, name)| Key::new(cfg, who, method, name));
                }
                for (i, body) in asks.iter().enumerate() {
                    let key = keys.get(i).and_then(Option::as_ref);
                    if key.is_some_and(|k| remembered(host, k, now_nanos)) {
                        if let Some(a) = answers.get_mut(i) {
                            *a = Some(Answer::Remembered);
                        }
                        continue;
                    }
                    let headers = cfg.headers(body.len());
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    match host.http_callout(&cfg.cluster, &headers, body.as_bytes(), timeout) {
                        Ok(token) => self.pending.push((token, Pending::Approval(i))),
                        Err(e) => {
                            host.log(
                                Level::Warn,
                                &format!(
                                    "mcp-policy: approval callout to cluster '{}' failed: {e}",
                                    cfg.cluster
                                ),
                            );
                            if let Some(a) = answers.get_mut(i) {
                                *a = Some(Answer::Unavailable(format!(
                                    "the approval callout to Envoy cluster '{}' was refused ({e}); is the cluster defined?",
                                    cfg.cluster
                                )));
                            }
                        }
                    }
                }
            }
        }
        self.approval = Some(Approval {
            awaiting,
            answers,
            keys,
            tools_list_id,
        });
        if self.waiting_for(is_approval) {
            Action::Pause
        } else {
            self.conclude(host, Some(now_nanos))
        }
    }

    /// The answer of an HTTP callout (Envoy's `on_http_call_response`). Tokens that are not this request's
    /// approval callouts are ignored (nothing is read for them).
    pub fn on_http_callout_response<H: Host>(
        &mut self,
        host: &mut H,
        token: u32,
        body_size: usize,
    ) {
        let Some(Pending::Approval(index)) = self.take_pending(token, is_approval) else {
            return;
        };
        let (status, body) = host.callout_response(body_size);
        let answer = read_answer(status, &body);
        let now_nanos = match answer {
            Answer::Granted {
                remember_secs: Some(secs),
            } => self.remember(host, index, secs),
            _ => None,
        };
        if let Some(a) = self
            .approval
            .as_mut()
            .and_then(|a| a.answers.get_mut(index))
        {
            *a = Some(answer);
        }
        if !self.waiting_for(is_approval) {
            let concluded = self.conclude(host, now_nanos);
            resume_after(host, concluded, "approval");
        }
    }

    /// The approval of the ask at `index` holds for `secs`: later calls of the same caller's same call are not
    /// asked about until then, whatever happens to this request (a batch is refused whole if another call is).
    /// Returns the clock it read.
    fn remember<H: Host>(&self, host: &mut H, index: usize, secs: u64) -> Option<u64> {
        let key = self
            .approval
            .as_ref()
            .and_then(|a| a.keys.get(index))
            .and_then(Option::as_ref)?;
        let now_nanos = host.now_nanos();
        if let Err(e) = remember::remember(host.store(), key, now_nanos / 1_000_000_000, secs) {
            host.log(
                Level::Warn,
                &format!("mcp-policy: cannot remember an approval for {secs}s ({e}); the next call is asked about"),
            );
        }
        Some(now_nanos)
    }

    /// Every answer is in: forward, or reply and give the rate-limit units back. `now_nanos`: the clock, if
    /// read already in this callback.
    fn conclude<H: Host>(&mut self, host: &mut H, now_nanos: Option<u64>) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed(host, "no policy is loaded");
        };
        let Some(approval) = self.approval.take() else {
            return self.fail_closed(host, "the approval state was lost");
        };
        let answers: Vec<Answer> = approval
            .answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Answer::Unavailable("no answer".into())))
            .collect();
        let env = match now_nanos {
            Some(now) => env_at(host, now),
            None => env(host),
        };
        let (result, events) = approval.awaiting.conclude(&self.head, &answers, &env);
        for e in &events {
            host.record(e);
        }
        match result {
            Ok(()) => {
                self.forward(host, &policy, approval.tools_list_id);
                Action::Continue
            }
            Err(r) => {
                self.give_back(host);
                self.respond(host, &r)
            }
        }
    }

    /// The stream is over (Envoy's `on_done`). If the client went away while approval (or the rate limit
    /// service) was asked, the call was never forwarded: the rate-limit units counted here go back (the service
    /// has no refunds), and late answers are ignored.
    pub fn on_done<H: Host>(&mut self, host: &mut H) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.approval = None;
            self.fleet = None;
            self.give_back(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{load, send, tools_call, FakeHost, FakeStore};
    use super::*;
    use crate::limits::Store;

    const POLICY: &str = r#"{"version":"1","approval":{"cluster":"approvals","timeout_ms":5000},
        "tools":{"get_run":{},"tag":{"action":"require_approval","reason":"human","rate_limit":"1/minute"},
                 "stage":{"action":"require_approval"}}}"#;

    const BATCH: &str = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tag","arguments":{"k":"v"}}},
        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stage"}},
        {"jsonrpc":"2.0","id":4,"method":"tools/list"}]"#;

    /// A batch with two calls that need approval: two callouts, the request waits.
    fn asked() -> (Flow, FakeHost) {
        let mut host = FakeHost::request(&[("mcp-session-id", "s-1")], BATCH);
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host), (Action::Pause, Action::Pause));
        assert_eq!(
            host.calls[host.calls.len() - 2..],
            [
                "http_callout approvals 5000ms",
                "http_callout approvals 5000ms"
            ]
        );
        assert!(
            host.events.is_empty(),
            "decisions are reported once answered"
        );
        let asks: Vec<serde_json::Value> = host
            .callouts
            .iter()
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect();
        assert_eq!(
            (asks[0]["tool"].as_str(), asks[0]["jsonrpc_id"].as_i64()),
            (Some("tag"), Some(2))
        );
        assert_eq!(asks[0]["reason"], "human");
        assert_eq!(asks[0]["identity"], "s-1");
        assert_eq!(asks[1]["tool"], "stage");
        host.clear_calls();
        (flow, host)
    }

    #[test]
    fn answers_in_any_order_then_the_request_goes_on() {
        let (mut flow, mut host) = asked();
        // The second callout answers first: the request still waits for the other.
        flow.on_http_callout_response(&mut host, 2, 18);
        assert_eq!(host.calls, ["callout_response 18"]);
        flow.on_http_callout_response(&mut host, 1, 18);
        assert_eq!(
            host.calls[1..],
            [
                "callout_response 18",
                "now",
                "record allow",
                "record approval_granted",
                "record approval_granted",
                "record allow",
                "request_header -accept-encoding",
                "resume_request",
            ]
        );
        assert!(host.replies.is_empty());
        // The batch's tools/list answer is filtered once the request goes on.
        host.respond_with(200, &[("content-type", "application/json")], "{}");
        assert_eq!(flow.on_response_headers(&mut host), Action::Pause);
        // A late or foreign token is ignored: nothing is read for it.
        host.clear_calls();
        flow.on_http_callout_response(&mut host, 1, 18);
        flow.on_http_callout_response(&mut host, 99, 18);
        assert!(host.calls.is_empty());
    }

    #[test]
    fn one_no_refuses_the_whole_batch_and_gives_the_units_back() {
        let (mut flow, mut host) = asked();
        flow.on_http_callout_response(&mut host, 1, 0);
        host.callout_answer = (
            Some(200),
            br#"{"approved": false, "reason": "not today"}"#.to_vec(),
        );
        flow.on_http_callout_response(&mut host, 2, 0);
        // The granted call is not forwarded either: a batch goes whole or not at all.
        assert_eq!(host.labels(), ["deny", "deny", "approval_denied", "deny"]);
        let (status, v) = host.reply_json();
        assert_eq!(status, 200);
        assert_eq!(v[1]["error"]["code"], -31001);
        assert!(v[1]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("the batch held a refused call"));
        assert_eq!(v[2]["error"]["code"], -31003);
        assert_eq!(v[2]["error"]["data"]["reason"], "not today");
        assert!(!host.calls.contains(&"resume_request".to_owned()));
        // The unit `tag` took while waiting is back: the same call is asked about again, not rate limited.
        let mut again = FakeHost {
            store: std::mem::take(&mut host.store),
            ..FakeHost::request(&[("mcp-session-id", "s-1")], &tools_call(5, "tag"))
        };
        let mut flow = Flow::new(load(&again, POLICY));
        assert_eq!(send(&mut flow, &mut again).1, Action::Pause);
        assert_eq!(again.callouts.len(), 1);
        assert!(again.replies.is_empty());
    }

    #[test]
    fn no_usable_answer_is_unavailable() {
        let (mut flow, mut host) = asked();
        host.callout_answer = (None, Vec::new()); // timeout, connection failure
        flow.on_http_callout_response(&mut host, 1, 0);
        host.callout_answer = (Some(503), Vec::new());
        flow.on_http_callout_response(&mut host, 2, 0);
        assert_eq!(
            host.labels(),
            [
                "deny",
                "approval_unavailable",
                "approval_unavailable",
                "deny"
            ]
        );
        let v = host.reply_json().1;
        assert!(v[1]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer"));
        assert!(v[2]["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"));
    }

    #[test]
    fn a_callout_that_cannot_be_sent_is_answered_at_once() {
        let mut host = FakeHost {
            callout_fails: true,
            ..FakeHost::request(&[], &tools_call(1, "stage"))
        };
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host).1, Action::Pause);
        assert_eq!(host.labels(), ["approval_unavailable"]);
        assert_eq!(
            host.reply_json().1["error"]["data"]["reason"],
            "the approval callout to Envoy cluster 'approvals' was refused (BadArgument); is the cluster defined?"
        );
        assert!(host.logs[0]
            .1
            .contains("approval callout to cluster 'approvals' failed"));
        // Without an approval service (a policy built by hand: the parser requires one).
        let mut host = FakeHost::request(&[], &tools_call(1, "stage"));
        let mut p = (*load(&host, POLICY).unwrap()).clone();
        p.approval = None;
        let mut flow = Flow::new(Some(std::rc::Rc::new(p)));
        send(&mut flow, &mut host);
        assert_eq!(
            host.reply_json().1["error"]["data"]["reason"],
            "no approval service is configured"
        );
        assert!(host.callouts.is_empty());
    }

    #[test]
    fn the_client_leaving_while_asked_gives_the_units_back() {
        let (mut flow, mut host) = asked();
        flow.on_done(&mut host);
        assert!(host.replies.is_empty() && host.events.is_empty());
        // Late answers find nothing to do.
        host.clear_calls();
        flow.on_http_callout_response(&mut host, 1, 0);
        assert!(host.calls.is_empty());
        let mut again = FakeHost {
            store: std::mem::take(&mut host.store),
            ..FakeHost::request(&[("mcp-session-id", "s-1")], &tools_call(5, "tag"))
        };
        let mut flow = Flow::new(load(&again, POLICY));
        send(&mut flow, &mut again);
        assert_eq!(
            again.callouts.len(),
            1,
            "not rate limited: the unit came back"
        );
    }

    #[test]
    fn a_granted_request_that_cannot_resume_is_logged() {
        let mut host = FakeHost {
            resume_fails: true,
            ..FakeHost::request(&[], &tools_call(1, "stage"))
        };
        let mut flow = Flow::new(load(&host, POLICY));
        send(&mut flow, &mut host);
        flow.on_http_callout_response(&mut host, 1, 0);
        assert_eq!(host.labels(), ["approval_granted"]);
        assert!(host.logs[0]
            .1
            .contains("could not resume the request after approval (BadArgument)"));
    }

    // ------------------------------------------------------------------------------------ remembered approvals

    const REMEMBERING: &str = r#"{"version":"1","approval":{"cluster":"approvals","timeout_ms":5000},
        "tools":{"tag":{"action":"require_approval","rate_limit":"2/minute"},"stage":{"action":"require_approval"},
                 "alias":{"action":"require_approval","conditions":[{"path":"args.alias","op":"eq","value":"staging"}]}}}"#;

    const T0: u64 = 1_700_000_000_000_000_000; // FakeHost's clock: a minute boundary
    const SECOND: u64 = 1_000_000_000;

    /// One request of session `session` calling `body`, at `now`, over `store` (the shared data of earlier
    /// requests), sent up to the end of its body.
    fn request(store: FakeStore, session: &str, body: &str, now: u64) -> (Flow, FakeHost, Action) {
        let mut host = FakeHost {
            store,
            now_nanos: now,
            ..FakeHost::request(&[("mcp-session-id", session)], body)
        };
        let mut flow = Flow::new(load(&host, REMEMBERING));
        let (_, action) = send(&mut flow, &mut host);
        (flow, host, action)
    }

    /// The approval service answers the callout `token` with `body` (HTTP 200).
    fn answer(flow: &mut Flow, host: &mut FakeHost, token: u32, body: &[u8]) {
        host.callout_answer = (Some(200), body.to_vec());
        flow.on_http_callout_response(host, token, 0);
    }

    /// `tag` called by session s-1 at T0, approved for `remember`.
    fn approved_for(remember: &str) -> FakeStore {
        let (mut flow, mut host, action) =
            request(FakeStore::default(), "s-1", &tools_call(1, "tag"), T0);
        assert_eq!((action, host.callouts.len()), (Action::Pause, 1));
        host.callout_answer = (Some(200), remember.as_bytes().to_vec());
        host.clear_calls();
        flow.on_http_callout_response(&mut host, 1, 0);
        assert_eq!(
            host.calls,
            [
                "callout_response 0",
                "now",
                "record approval_granted",
                "resume_request"
            ]
        );
        host.store
    }

    #[test]
    fn a_remembered_approval_answers_without_a_callout() {
        let store = approved_for(r#"{"approved": true, "remember_seconds": 600}"#);
        // The same caller and tool a minute later (a new rate-limit window): forwarded at once, not asked.
        let (_, host, action) = request(store, "s-1", &tools_call(2, "tag"), T0 + 60 * SECOND);
        assert_eq!(action, Action::Continue);
        assert!(host.callouts.is_empty() && host.replies.is_empty());
        assert_eq!(host.labels(), ["approval_remembered"]);
        let line: serde_json::Value = serde_json::from_str(&host.events[0].audit).unwrap();
        assert_eq!(
            (
                &line["decision"],
                &line["tool"],
                &line["identity"].is_string()
            ),
            (&"approval_remembered".into(), &"tag".into(), &true)
        );
        assert_eq!(
            host.calls[2..],
            [
                "now",
                "request_header x-mcp-method=tools/call",
                "request_header x-mcp-tool=tag",
                "record approval_remembered",
            ]
        );
    }

    #[test]
    fn rate_limits_and_conditions_still_apply_to_a_remembered_call() {
        let store = approved_for(r#"{"approved": true, "remember_seconds": 600}"#);
        // `tag` allows 2 a minute: the approved call took one, the remembered one the other, the third is refused
        // without asking.
        let (_, host, _) = request(store, "s-1", &tools_call(2, "tag"), T0 + SECOND);
        assert_eq!(host.labels(), ["approval_remembered"]);
        let (_, host, action) = request(host.store, "s-1", &tools_call(3, "tag"), T0 + 2 * SECOND);
        assert_eq!(
            (action, host.labels()),
            (Action::Pause, vec!["rate_limited"])
        );
        assert!(host.callouts.is_empty());
        // A call whose conditions fail is denied, remembered or not.
        let alias = |id: u32, value: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"alias","arguments":{{"alias":"{value}"}}}}}}"#
            )
        };
        let (mut flow, mut host, _) = request(host.store, "s-1", &alias(4, "staging"), T0);
        answer(
            &mut flow,
            &mut host,
            1,
            br#"{"approved": true, "remember_seconds": 600}"#,
        );
        assert_eq!(host.labels(), ["approval_granted"]);
        let (_, host, _) = request(host.store, "s-1", &alias(5, "production"), T0 + SECOND);
        assert_eq!(host.labels(), ["deny"]);
        assert!(host.callouts.is_empty());
        let (_, host, _) = request(host.store, "s-1", &alias(6, "staging"), T0 + SECOND);
        assert_eq!(host.labels(), ["approval_remembered"]);
    }

    #[test]
    fn an_ended_approval_is_asked_about_again() {
        let store = approved_for(r#"{"approved": true, "remember_seconds": 90}"#);
        let (_, host, _) = request(store, "s-1", &tools_call(2, "tag"), T0 + 89 * SECOND);
        assert_eq!(host.labels(), ["approval_remembered"]);
        let (_, host, action) = request(host.store, "s-1", &tools_call(3, "tag"), T0 + 90 * SECOND);
        assert_eq!((action, host.callouts.len()), (Action::Pause, 1));
        assert!(host.events.is_empty(), "waits for the answer");
        // An approval without remember_seconds (or 0) is for its call only.
        for answer in [
            r#"{"approved": true}"#,
            r#"{"approved": true, "remember_seconds": 0}"#,
        ] {
            let store = approved_for(answer);
            let (_, host, _) = request(store, "s-1", &tools_call(2, "tag"), T0 + SECOND);
            assert_eq!(host.callouts.len(), 1, "{answer}");
        }
    }

    #[test]
    fn another_caller_or_another_call_is_asked_about() {
        let store = approved_for(r#"{"approved": true, "remember_seconds": 600}"#);
        let (_, host, _) = request(store, "s-2", &tools_call(2, "tag"), T0 + SECOND);
        assert_eq!(host.callouts.len(), 1, "another session");
        let (_, host, _) = request(host.store, "s-1", &tools_call(3, "stage"), T0 + SECOND);
        assert_eq!(host.callouts.len(), 1, "another tool");
        let prompt = r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"tag"}}"#;
        let mut host = FakeHost {
            store: host.store,
            now_nanos: T0 + SECOND,
            ..FakeHost::request(&[("mcp-session-id", "s-1")], prompt)
        };
        let p = r#"{"version":"1","approval":{"cluster":"approvals"},"prompts_default":"require_approval",
            "tools":{"tag":{"action":"require_approval"}}}"#;
        let mut flow = Flow::new(load(&host, p));
        send(&mut flow, &mut host);
        assert_eq!(host.callouts.len(), 1, "a prompt of the same name");
        // The same caller and tool: remembered (the store still holds it).
        let (_, host, _) = request(host.store, "s-1", &tools_call(5, "tag"), T0 + SECOND);
        assert_eq!(host.labels(), ["approval_remembered"]);
    }

    #[test]
    fn a_batch_asks_only_about_what_is_not_remembered() {
        let store = approved_for(r#"{"approved": true, "remember_seconds": 600}"#);
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stage"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tag"}}]"#;
        let (mut flow, mut host, action) = request(store, "s-1", batch, T0 + SECOND);
        assert_eq!((action, host.callouts.len()), (Action::Pause, 1));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&host.callouts[0].2).unwrap()["tool"],
            "stage"
        );
        answer(
            &mut flow,
            &mut host,
            1,
            br#"{"approved": false, "reason": "no"}"#,
        );
        // Refused whole: the remembered call is not forwarded either.
        assert_eq!(host.labels(), ["approval_denied", "deny"]);
        // Every call remembered: forwarded without a callout.
        let approve_stage = {
            let (mut flow, mut host, _) = request(host.store, "s-1", &tools_call(3, "stage"), T0);
            answer(
                &mut flow,
                &mut host,
                1,
                br#"{"approved": true, "remember_seconds": 600}"#,
            );
            host.store
        };
        let (_, host, action) = request(approve_stage, "s-1", batch, T0 + 61 * SECOND);
        assert_eq!(action, Action::Continue);
        assert!(host.callouts.is_empty());
        assert_eq!(
            host.labels(),
            ["approval_remembered", "approval_remembered"]
        );
    }

    #[test]
    fn a_remembered_approval_granted_within_a_refused_batch_still_holds() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stage"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tag"}}]"#;
        let (mut flow, mut host, _) = request(FakeStore::default(), "s-1", batch, T0);
        answer(&mut flow, &mut host, 1, br#"{"approved": false}"#);
        answer(
            &mut flow,
            &mut host,
            2,
            br#"{"approved": true, "remember_seconds": 600}"#,
        );
        assert_eq!(host.labels(), ["approval_denied", "deny"]);
        let (_, host, _) = request(host.store, "s-1", &tools_call(3, "tag"), T0 + SECOND);
        assert_eq!(host.labels(), ["approval_remembered"]);
    }

    #[test]
    fn a_failing_store_asks_the_approval_service() {
        // Reading fails: a normal callout, never an approval.
        let mut store = approved_for(r#"{"approved": true, "remember_seconds": 600}"#);
        store.failing = Some(crate::remember::PREFIX);
        let (mut flow, mut host, action) =
            request(store, "s-1", &tools_call(2, "tag"), T0 + SECOND);
        assert_eq!((action, host.callouts.len()), (Action::Pause, 1));
        assert!(host.events.is_empty());
        assert_eq!(host.logs.len(), 1);
        assert!(
            host.logs[0]
                .1
                .contains("cannot read remembered approvals (get_shared_data(mcp_policy/ra/"),
            "{:?}",
            host.logs
        );
        assert!(host.logs[0].1.ends_with("asking the approval service"));
        answer(
            &mut flow,
            &mut host,
            1,
            br#"{"approved": false, "reason": "no"}"#,
        );
        assert_eq!(host.labels(), ["approval_denied"]);
        // A slot holding something else than the filter writes: the same.
        let mut store = std::mem::take(&mut host.store);
        store.failing = None;
        let keys: Vec<String> = store
            .map
            .borrow()
            .keys()
            .filter(|k| k.starts_with(crate::remember::PREFIX))
            .cloned()
            .collect();
        for k in keys {
            store.set(&k, b"not an approval", None).unwrap();
        }
        let (_, host, _) = request(store, "s-1", &tools_call(3, "tag"), T0 + 2 * SECOND);
        assert_eq!(host.callouts.len(), 1);
        assert!(
            host.logs[0]
                .1
                .contains("holds 15 bytes, not a remembered approval"),
            "{:?}",
            host.logs
        );
        // Writing fails: the call is approved (the service said yes) but not remembered; the next one is asked.
        let (mut flow, mut host, _) =
            request(FakeStore::default(), "s-9", &tools_call(1, "tag"), T0);
        host.store.failing = Some(crate::remember::PREFIX);
        host.callout_answer = (
            Some(200),
            br#"{"approved": true, "remember_seconds": 600}"#.to_vec(),
        );
        host.clear_calls();
        flow.on_http_callout_response(&mut host, 1, 0);
        assert_eq!(host.labels(), ["approval_granted"]);
        assert!(host.calls.contains(&"resume_request".to_owned()));
        assert!(
            host.logs
                .iter()
                .any(|(_, m)| m.contains("cannot remember an approval for 600s")),
            "{:?}",
            host.logs
        );
        host.store.failing = None;
        let (_, host, _) = request(host.store, "s-9", &tools_call(2, "tag"), T0 + SECOND);
        assert_eq!(host.callouts.len(), 1);
    }
}
