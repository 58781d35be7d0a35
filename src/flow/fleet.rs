//! Fleet-wide limits: the body's `ShouldRateLimit` requests go to the rate limit service together (one gRPC
//! call each, usually one per call), the request waits (other requests carry on) until every answer is in, in
//! whatever order Envoy delivers them; then it goes on to approval or upstream, or is refused. What the
//! answers mean is `crate::request::Counting::conclude`.

use super::{env, resume_after, Action, Counter, Flow, Host, Pending};
use crate::limits::rls;
use crate::policy::Policy;
use crate::request::{Counting, Next};
use log::Level;
use std::time::Duration;

/// A request waiting for the rate limit service.
pub(super) struct Fleet {
    counting: Counting,
    /// One per request to the service, in order; `None` until answered.
    answers: Vec<Option<Result<Vec<u8>, String>>>,
    /// The id of a tools/list request in the body (its answer is filtered once the request goes on).
    tools_list_id: Option<String>,
}

fn is_rate_limit(p: &Pending) -> bool {
    matches!(p, Pending::RateLimit(_))
}

/// gRPC's name of a status code, for the reasons audit lines and replies give.
fn grpc_status_name(code: u32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED (no answer within rate_limit_service.timeout_ms)",
        5 => "NOT_FOUND",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        16 => "UNAUTHENTICATED",
        _ => "an error",
    }
}

impl Flow {
    /// Sends the body's requests to the rate limit service and waits; concludes at once if none could be sent.
    pub(super) fn ask_rate_limit_service<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        counting: Counting,
        tools_list_id: Option<String>,
    ) -> Action {
        let mut answers = Vec::new();
        match &policy.rate_limit_service {
            None => answers.extend(
                counting
                    .messages()
                    .map(|_| Some(Err("no rate limit service is configured".to_owned()))),
            ),
            Some(service) => {
                let timeout = Duration::from_millis(service.timeout_ms);
                for (i, message) in counting.messages().enumerate() {
                    match host.grpc_callout(
                        &service.cluster,
                        rls::SERVICE,
                        rls::METHOD,
                        message,
                        timeout,
                    ) {
                        Ok(token) => {
                            self.pending.push((token, Pending::RateLimit(i)));
                            answers.push(None);
                        }
                        Err(e) => {
                            host.log(
                                Level::Warn,
                                &format!(
                                    "mcp-policy: rate limit service call to cluster '{}' failed: {e}",
                                    service.cluster
                                ),
                            );
                            answers.push(Some(Err(format!(
                                "the gRPC call to Envoy cluster '{}' could not be made ({e}); is the cluster defined?",
                                service.cluster
                            ))));
                        }
                    }
                }
            }
        }
        self.fleet = Some(Fleet {
            counting,
            answers,
            tools_list_id,
        });
        if self.waiting_for(is_rate_limit) {
            Action::Pause
        } else {
            self.conclude_counting(host)
        }
    }

    /// The answer of a gRPC call (Envoy's `on_grpc_call_response`): `status` 0 with a message of `size` bytes,
    /// or another gRPC status (timeout, unreachable, an error) and nothing. Tokens that are not this request's
    /// are ignored (nothing is read for them).
    pub fn on_grpc_callout_response<H: Host>(
        &mut self,
        host: &mut H,
        token: u32,
        status: u32,
        size: usize,
    ) {
        let Some(Pending::RateLimit(index)) = self.take_pending(token, is_rate_limit) else {
            return;
        };
        let answer = if status == 0 {
            Ok(host.grpc_response(size))
        } else {
            Err(format!(
                "the rate limit service answered gRPC status {status} ({})",
                grpc_status_name(status)
            ))
        };
        if let Some(a) = self.fleet.as_mut().and_then(|f| f.answers.get_mut(index)) {
            *a = Some(answer);
        }
        if !self.waiting_for(is_rate_limit) {
            let concluded = self.conclude_counting(host);
            resume_after(host, concluded, "the rate limit service answered");
        }
    }

    /// Every answer is in: forward, ask for approval, or reply and give back the units counted here.
    fn conclude_counting<H: Host>(&mut self, host: &mut H) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed(host, "no policy is loaded");
        };
        let Some(fleet) = self.fleet.take() else {
            return self.fail_closed(host, "the rate limit state was lost");
        };
        let answers: Vec<Result<Vec<u8>, String>> = fleet
            .answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer".to_owned())))
            .collect();
        let env = env(host);
        let now_nanos = env.now_nanos;
        let counted = fleet.counting.conclude(&policy, &self.head, &answers, &env);
        for _ in 0..counted.errors {
            host.count(Counter::RateLimitServiceErrors);
        }
        for e in &counted.events {
            host.record(e);
        }
        match counted.next {
            Next::Forward => {
                self.forward(host, &policy, fleet.tools_list_id);
                Action::Continue
            }
            Next::Reply(r) => {
                self.give_back(host);
                self.respond(host, &r)
            }
            Next::Approve { asks, awaiting } => self.ask_approval(
                host,
                &policy,
                asks,
                awaiting,
                fleet.tools_list_id,
                now_nanos,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{load, send, FakeHost};
    use super::*;
    use crate::limits::rls::{CurrentLimit, Response, Status};

    const POLICY: &str = r#"{"version":"1","rate_limit_service":{"cluster":"ratelimit","timeout_ms":250},
        "tools":{"get_run":{},"search_runs":{"rate_limit":["10/minute",{"max":1,"window":60,"counted":"proxy"}]},
                 "pay":{"rate_limit":["5/minute",{"max":100,"window":"day","cost":"args.n","scope":"global"}]}}}"#;

    fn call(id: u32, tool: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    }

    fn answer(code: i32, reset: Option<i64>) -> Vec<u8> {
        Response {
            overall_code: code,
            statuses: vec![Status {
                code,
                current_limit: Some(CurrentLimit {
                    requests_per_unit: 10,
                    unit: 2,
                }),
                limit_remaining: 0,
                duration_until_reset: reset.map(|seconds| rls::Duration { seconds, nanos: 0 }),
            }],
        }
        .encode()
    }

    /// A `search_runs` call sent: the request waits for the service.
    fn asked(policy: &str) -> (Flow, FakeHost) {
        let mut host =
            FakeHost::request(&[("mcp-session-id", "s-1")], &call(7, "search_runs", "{}"));
        let mut flow = Flow::new(load(&host, policy));
        assert_eq!(send(&mut flow, &mut host), (Action::Pause, Action::Pause));
        (flow, host)
    }

    #[test]
    fn the_call_waits_for_the_service_then_goes_on() {
        let (mut flow, mut host) = asked(POLICY);
        let body = call(7, "search_runs", "{}");
        assert_eq!(
            host.calls,
            [
                "request_headers",
                &format!("request_body {}", body.len()),
                "now",
                "request_header x-mcp-method=tools/call",
                "request_header x-mcp-tool=search_runs",
                "grpc_callout ratelimit 250ms",
            ]
        );
        assert!(
            host.events.is_empty(),
            "decisions are reported once answered"
        );
        let (token, cluster, method, timeout, message) = host.grpc_calls[0].clone();
        assert_eq!((cluster.as_str(), timeout), ("ratelimit", 250));
        assert_eq!(
            method,
            "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        );
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains(r#"tools["search_runs"]"#) && text.contains("0:10/minute"));
        host.clear_calls();
        host.grpc_answer = answer(rls::CODE_OK, Some(30));
        // A foreign token, or an HTTP callout's answer with the same number, is not this answer.
        flow.on_grpc_callout_response(&mut host, token + 1, 0, 9);
        flow.on_http_callout_response(&mut host, token, 9);
        assert!(host.calls.is_empty());
        flow.on_grpc_callout_response(&mut host, token, 0, 11);
        assert_eq!(
            host.calls,
            ["grpc_response 11", "now", "record allow", "resume_request"]
        );
        assert!(host.replies.is_empty());
    }

    #[test]
    fn over_the_fleet_limit_is_refused_and_the_local_unit_comes_back() {
        let (mut flow, mut host) = asked(POLICY);
        host.grpc_answer = answer(rls::CODE_OVER_LIMIT, Some(42));
        flow.on_grpc_callout_response(&mut host, 1, 0, 20);
        assert_eq!(host.labels(), ["rate_limited"]);
        let (status, v) = host.reply_json();
        assert_eq!(status, 200);
        assert_eq!(
            (
                v["error"]["code"].as_i64(),
                v["error"]["data"]["retry_after_seconds"].as_u64(),
                v["error"]["data"]["limit"].as_u64()
            ),
            (Some(-31002), Some(42), Some(10))
        );
        assert!(!host.calls.contains(&"resume_request".to_owned()));
        // The proxy-counted 1/minute unit was given back: the same call asks the service again.
        let (mut again, mut h2) = (
            Flow::new(load(&host, POLICY)),
            FakeHost {
                store: std::mem::take(&mut host.store),
                ..FakeHost::request(&[("mcp-session-id", "s-1")], &call(8, "search_runs", "{}"))
            },
        );
        send(&mut again, &mut h2);
        assert_eq!(h2.grpc_calls.len(), 1);
        assert!(h2.replies.is_empty());
    }

    #[test]
    fn no_usable_answer_follows_on_error() {
        for (status, body, why) in [
            (14, vec![], "gRPC status 14 (UNAVAILABLE)"),
            (4, vec![], "DEADLINE_EXCEEDED"),
            (0, b"\xff garbage".to_vec(), "not a RateLimitResponse"),
            (0, vec![0x08, 0x00], "answered code 0"),
        ] {
            let (mut flow, mut host) = asked(POLICY);
            host.grpc_answer = body;
            flow.on_grpc_callout_response(&mut host, 1, status, 9);
            assert_eq!(host.labels(), ["rate_limit_unavailable"], "{why}");
            assert!(host
                .calls
                .contains(&"count rate_limit_service_errors".to_owned()));
            let v = host.reply_json().1;
            assert_eq!(v["error"]["code"], -31002);
            assert_eq!(v["error"]["data"]["decision"], "rate_limit_unavailable");
            let reason = v["error"]["data"]["reason"].as_str().unwrap();
            assert!(reason.contains(why), "{reason}");
            assert!(
                host.events[0].audit.contains(why),
                "{}",
                host.events[0].audit
            );
        }
        // on_error allow: forwarded uncounted, still counted as an error.
        let allow = POLICY.replace(
            r#""timeout_ms":250"#,
            r#""timeout_ms":250,"on_error":"allow""#,
        );
        let (mut flow, mut host) = asked(&allow);
        flow.on_grpc_callout_response(&mut host, 1, 14, 0);
        assert_eq!(host.labels(), ["allow"]);
        assert!(host.replies.is_empty());
        assert_eq!(
            host.calls[host.calls.len() - 4..],
            [
                "now",
                "count rate_limit_service_errors",
                "record allow",
                "resume_request"
            ]
        );
    }

    #[test]
    fn a_call_that_cannot_be_made_fails_at_once() {
        let mut host = FakeHost {
            grpc_fails: true,
            ..FakeHost::request(&[], &call(1, "search_runs", "{}"))
        };
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host).1, Action::Pause);
        assert_eq!(host.labels(), ["rate_limit_unavailable"]);
        assert!(host.logs[0]
            .1
            .contains("rate limit service call to cluster 'ratelimit' failed: ParseFailure"));
        assert!(host.reply_json().1["error"]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("is the cluster defined?"));
    }

    #[test]
    fn mixed_costs_ask_twice_and_wait_for_both_in_any_order() {
        let mut host = FakeHost::request(&[], &call(1, "pay", r#"{"n": 3}"#));
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host).1, Action::Pause);
        assert_eq!(host.grpc_calls.len(), 2);
        host.clear_calls();
        host.grpc_answer = vec![0x08, 0x01];
        flow.on_grpc_callout_response(&mut host, 2, 0, 2);
        assert_eq!(
            host.calls,
            ["grpc_response 2"],
            "still waiting for the other"
        );
        flow.on_grpc_callout_response(&mut host, 1, 0, 2);
        assert_eq!(host.labels(), ["allow"]);
        assert_eq!(
            host.calls.last().map(String::as_str),
            Some("resume_request")
        );
    }

    #[test]
    fn the_client_leaving_while_asked_gives_the_local_units_back() {
        let (mut flow, mut host) = asked(POLICY);
        flow.on_done(&mut host);
        host.clear_calls();
        flow.on_grpc_callout_response(&mut host, 1, 0, 2);
        assert!(host.calls.is_empty(), "a late answer finds nothing to do");
        let mut again = FakeHost {
            store: std::mem::take(&mut host.store),
            ..FakeHost::request(&[("mcp-session-id", "s-1")], &call(8, "search_runs", "{}"))
        };
        let mut flow = Flow::new(load(&again, POLICY));
        send(&mut flow, &mut again);
        assert_eq!(
            again.grpc_calls.len(),
            1,
            "not refused here: the unit came back"
        );
    }

    #[test]
    fn a_call_without_fleet_limits_never_waits() {
        let mut host = FakeHost::request(&[], &call(1, "get_run", "{}"));
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(
            send(&mut flow, &mut host),
            (Action::Pause, Action::Continue)
        );
        assert!(host.grpc_calls.is_empty());
        assert_eq!(host.labels(), ["allow"]);
    }
}
