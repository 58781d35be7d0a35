//! Require approval: one callout per call that needs it; the request waits (other requests carry on) until
//! every answer is in, in whatever order Envoy delivers them.

use super::{env, Action, Flow, Host, Pending};
use crate::approval::{read_answer, Answer};
use crate::policy::Policy;
use crate::request::Awaiting;
use log::Level;
use std::time::Duration;

/// A request waiting for its approval answers.
pub(super) struct Approval {
    /// What is kept of the body to apply the answers (the body itself stays in Envoy, to be forwarded).
    awaiting: Awaiting,
    /// One per ask, in body order; `None` until answered.
    answers: Vec<Option<Answer>>,
    /// The id of a tools/list request in the body (its answer is filtered once the request goes on).
    tools_list_id: Option<String>,
}

impl Flow {
    /// Sends one callout per ask and waits; concludes at once if none could be sent.
    pub(super) fn ask_approval<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        asks: Vec<String>,
        awaiting: Awaiting,
        tools_list_id: Option<String>,
    ) -> Action {
        let mut answers = vec![None; asks.len()];
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
                for (i, body) in asks.iter().enumerate() {
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
            tools_list_id,
        });
        if self.asking() {
            Action::Pause
        } else {
            self.conclude(host)
        }
    }

    /// True while approval callouts are out.
    fn asking(&self) -> bool {
        self.pending
            .iter()
            .any(|(_, p)| matches!(p, Pending::Approval(_)))
    }

    /// The answer of a callout (Envoy's `on_http_call_response`). Tokens that are not this request's are
    /// ignored (nothing is read for them).
    pub fn on_http_callout_response<H: Host>(
        &mut self,
        host: &mut H,
        token: u32,
        body_size: usize,
    ) {
        let Some(pos) = self.pending.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, pending) = self.pending.swap_remove(pos);
        match pending {
            Pending::Approval(index) => {
                let (status, body) = host.callout_response(body_size);
                let answer = read_answer(status, &body);
                if let Some(a) = self
                    .approval
                    .as_mut()
                    .and_then(|a| a.answers.get_mut(index))
                {
                    *a = Some(answer);
                }
                if !self.asking() && self.conclude(host) == Action::Continue {
                    if let Err(e) = host.resume_request() {
                        host.log(
                            Level::Warn,
                            &format!(
                                "mcp-policy: could not resume the request after approval ({e})"
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Every answer is in: forward, or reply and give the rate-limit units back.
    fn conclude<H: Host>(&mut self, host: &mut H) -> Action {
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
        let (result, events) = approval.awaiting.conclude(&self.head, &answers, &env(host));
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

    /// The stream is over (Envoy's `on_done`). If the client went away while approval was asked, the call
    /// was never forwarded: its rate-limit units go back, and late answers are ignored.
    pub fn on_done<H: Host>(&mut self, host: &mut H) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.approval = None;
            self.give_back(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{load, send, tools_call, FakeHost};
    use super::*;

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
}
