//! The request body: held until it is whole, then decided once.

use super::response::ListAnswer;
use super::{env_if, Action, Flow, Host};
use crate::policy::{Mode, Policy};
use crate::reply;
use crate::request::{self, Checked, Outcome, Summary};
use std::borrow::Cow;

impl Flow {
    /// A part of the body arrived (`body_size`: the total so far). Refuses a body over `max_body_bytes` as
    /// soon as it is; decides once the body is whole.
    pub fn on_request_body<H: Host>(
        &mut self,
        host: &mut H,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.decided {
            return Action::Continue;
        }
        self.body_size = body_size;
        if let Some(p) = &self.policy {
            if body_size > p.max_body_bytes {
                let r = reply::too_large(p.max_body_bytes);
                return self.respond(host, &r);
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.decide(host)
    }

    /// Trailers end a body that did not end with its last data.
    pub fn on_request_trailers<H: Host>(&mut self, host: &mut H) -> Action {
        if self.decided {
            return Action::Continue;
        }
        self.decide(host)
    }

    /// The whole body is in: decide, record the decisions, export the MCP facts, then forward, answer, or
    /// ask for approval.
    fn decide<H: Host>(&mut self, host: &mut H) -> Action {
        self.decided = true;
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed(host, "no policy is loaded");
        };
        if self.body_size == 0 {
            return Action::Continue;
        }
        let bytes = match host.request_body(self.body_size) {
            Ok(Some(b)) => b,
            Ok(None) => return self.fail_closed(host, "the request body could not be read"),
            Err(e) => {
                return self.fail_closed(host, &format!("reading the request body failed ({e})"))
            }
        };
        let env = env_if(host, policy.needs_clock());
        let now_nanos = env.now_nanos;
        let Checked {
            outcome,
            events,
            summary,
        } = request::check_body(&policy, &self.head, &bytes, &env);
        for e in &events {
            host.record(e);
        }
        self.export(host, &policy, &summary);
        match outcome {
            Outcome::Forward(reservations) => {
                self.reservations = reservations;
                self.forward(host, &policy, summary.tools_list_id);
                Action::Continue
            }
            Outcome::Reply(r) => self.respond(host, &r),
            Outcome::Approve {
                reservations,
                asks,
                awaiting,
            } => {
                self.reservations = reservations;
                let list = summary.tools_list_id;
                self.ask_approval(host, &policy, asks, awaiting, list, now_nanos)
            }
            Outcome::Count {
                reservations,
                counting,
            } => {
                self.reservations = reservations;
                self.ask_rate_limit_service(host, &policy, counting, summary.tools_list_id)
            }
        }
    }

    /// Sets the exported `x-mcp-*` headers (when the headers are still held), for the upstream and for the
    /// access log, which sees them on refused requests too.
    fn export<H: Host>(&self, host: &mut H, policy: &Policy, summary: &Summary) {
        if !policy.hold_headers {
            return;
        }
        if let Some(names) = &policy.export {
            let (method, tool) = (export_value(&summary.methods), export_value(&summary.tools));
            // Any copy the client sent was removed with the headers: only values are set (a host call each).
            for (name, value) in [(&names.method, method), (&names.tool, tool)] {
                if let Some(v) = value {
                    host.set_request_header(name, Some(&v));
                }
            }
        }
    }

    /// Just before the request goes upstream: a tools/list answer will be filtered, so ask for it
    /// uncompressed (when the headers are still held).
    pub(super) fn forward<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        tools_list_id: Option<String>,
    ) {
        if let Some(id) = tools_list_id.filter(|_| policy.mode == Mode::Enforce) {
            if policy.hold_headers {
                host.set_request_header("accept-encoding", None);
            }
            self.list = Some(ListAnswer { id, plan: None });
        }
    }
}

/// The longest exported header value, in bytes: a batch of many calls, or one absurdly long tool name, would
/// otherwise make a header line the upstream refuses (Python's http.server stops at 64 KiB, many servers sooner).
const EXPORT_MAX: usize = 1024;

/// An exported header value: none when empty; cut to [`EXPORT_MAX`] bytes at a character boundary, ending in
/// `...`. The header is for access logs and rate-limit keys: the body, not the header, is what is forwarded.
///
/// Envoy refuses a header value with a control character other than tab (C0, DEL: RFC 9110 field values are
/// visible ASCII, space, tab and obs-text), and fails the request with a plain 503. Exported values are methods
/// and tool names, which [`crate::mcp::inspect`] refuses when they hold any control character (-32600 for a
/// method, -32602 for a name), so none reaches this point; should one ever do, it becomes `?` here rather than
/// a 503 (tested over every character below U+0100 and more).
fn export_value(v: &str) -> Option<Cow<'_, str>> {
    let bad = |c: char| matches!(c, '\0'..='\x08' | '\x0a'..='\x1f' | '\x7f');
    if v.is_empty() {
        return None;
    }
    if v.len() <= EXPORT_MAX && !v.contains(bad) {
        return Some(v.into());
    }
    let mut out: String = v.chars().map(|c| if bad(c) { '?' } else { c }).collect();
    if out.len() > EXPORT_MAX {
        let mut end = EXPORT_MAX - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::super::fake::{answer_untouched, load, send, tools_call, FakeHost};
    use super::*;

    const POLICY: &str = r#"{"version":"1","default":"deny","max_body_bytes":200,
        "tools":{"get_run":{},"search_runs":{"rate_limit":"1/minute"}}}"#;

    /// The common case, and what it costs: issue 8 made these host calls the minimum; a change here is a
    /// change in the filter's speed.
    #[test]
    fn an_allowed_small_call_costs_exactly_these_host_calls() {
        let body = tools_call(7, "get_run");
        let mut host = FakeHost::request(&[("mcp-session-id", "s-1")], &body);
        let mut flow = Flow::new(load(&host, POLICY));
        let store_ops = host.store.ops.get();
        assert_eq!(
            send(&mut flow, &mut host),
            (Action::Pause, Action::Continue)
        );
        assert_eq!(
            host.calls,
            [
                "request_headers",
                &format!("request_body {}", body.len()),
                "now",
                "record allow",
                "request_header x-mcp-method=tools/call",
                "request_header x-mcp-tool=get_run",
            ]
        );
        assert_eq!(
            host.store.ops.get(),
            store_ops,
            "no rate limit, no shared data"
        );
        let e = &host.events[0];
        assert_eq!(
            (e.decision.as_str(), e.method.as_str(), e.tool.as_deref()),
            ("allow", "tools/call", Some("get_run"))
        );
        assert!(e.audit.contains(r#""decision":"allow""#), "{}", e.audit);
        // The answer streams through: not even its status is read.
        answer_untouched(&mut flow, &mut host);
        // With audit lines off, none is built.
        let mut host = FakeHost {
            audit: false,
            ..FakeHost::request(&[("mcp-session-id", "s-1")], &body)
        };
        let mut flow = Flow::new(load(&host, POLICY));
        send(&mut flow, &mut host);
        assert_eq!(host.events[0].audit, "");
    }

    /// Issue 16: a call with no rate limit, no approval and no exported headers makes no shared-data call, no
    /// header write, and reads the clock only for its audit line: with audit lines off (Envoy's level above
    /// info, as in production and `make bench`), the headers, the body and the decision's counters, nothing
    /// else. Every host call of the request is counted, the store's too.
    #[test]
    fn a_plain_allowed_call_makes_no_other_host_call() {
        let policy = r#"{"version":"1","default":"deny","export_headers":false,
            "tools":{"get_run":{},"delete_*":{"action":"deny"}}}"#;
        let body = tools_call(7, "get_run");
        for audit in [false, true] {
            let mut host = FakeHost {
                audit,
                ..FakeHost::request(&[("mcp-session-id", "s-1")], &body)
            };
            let mut flow = Flow::new(load(&host, policy));
            let store_ops = host.store.ops.get();
            assert_eq!(
                send(&mut flow, &mut host),
                (Action::Pause, Action::Continue)
            );
            let read_body = format!("request_body {}", body.len());
            let mut expected = vec!["request_headers", &read_body, "record allow"];
            if audit {
                // The audit line's time.
                expected.insert(2, "now");
            }
            assert_eq!(host.calls, expected, "audit lines {audit}");
            assert!(
                !host.calls.iter().any(|c| c.starts_with("request_header ")),
                "no header write"
            );
            assert_eq!(host.store.ops.get(), store_ops, "no shared data");
            assert_eq!(host.labels(), ["allow"]);
            // The answer: not a host call either.
            answer_untouched(&mut flow, &mut host);
        }
        // A refusal of the same policy: its counters and the reply, still no clock without audit lines.
        let mut host = FakeHost {
            audit: false,
            ..FakeHost::request(&[("mcp-session-id", "s-1")], &tools_call(8, "delete_run"))
        };
        let mut flow = Flow::new(load(&host, policy));
        let store_ops = host.store.ops.get();
        send(&mut flow, &mut host);
        assert_eq!(host.calls[2..], ["record deny", "send_reply 200"]);
        assert_eq!(host.store.ops.get(), store_ops);
        // A rate limit, or an approval, needs the time even without audit lines.
        for policy in [
            r#"{"version":"1","export_headers":false,"tools":{"get_run":{"rate_limit":"5/minute"}}}"#,
            r#"{"version":"1","export_headers":false,"tools":{"get_run":{}},
                "approval":{"cluster":"approvals"}}"#,
        ] {
            let mut host = FakeHost {
                audit: false,
                ..FakeHost::request(&[("mcp-session-id", "s-1")], &body)
            };
            let mut flow = Flow::new(load(&host, policy));
            send(&mut flow, &mut host);
            assert_eq!(host.calls[2], "now", "{policy}");
        }
    }

    #[test]
    fn a_refused_call_is_answered_and_still_exported() {
        let mut host =
            FakeHost::request(&[("mcp-session-id", "s-1")], &tools_call(3, "delete_run"));
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host), (Action::Pause, Action::Pause));
        assert_eq!(
            host.calls[3..],
            [
                "record deny",
                "request_header x-mcp-method=tools/call",
                "request_header x-mcp-tool=delete_run",
                "send_reply 200",
            ]
        );
        let (_, v) = host.reply_json();
        assert_eq!(
            (v["id"].as_i64(), v["error"]["code"].as_i64()),
            (Some(3), Some(-31001))
        );
        // Decided: what Envoy may still call lets it be.
        assert_eq!(flow.on_request_body(&mut host, 10, true), Action::Continue);
        assert_eq!(flow.on_request_trailers(&mut host), Action::Continue);
        // A local reply that cannot be sent resets the request.
        let mut host = FakeHost {
            reply_fails: true,
            ..FakeHost::request(&[], &tools_call(3, "delete_run"))
        };
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(send(&mut flow, &mut host).1, Action::Pause);
        assert_eq!(
            host.calls[host.calls.len() - 3..],
            ["send_reply 200", "log WARN", "reset_request"]
        );
        assert!(host.logs[0]
            .1
            .contains("could not send the local reply (BadArgument)"));
    }

    #[test]
    fn the_body_is_held_until_whole_and_refused_once_too_large() {
        let body = tools_call(1, "get_run");
        let mut host = FakeHost::request(&[], &body);
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        host.clear_calls();
        assert_eq!(flow.on_request_body(&mut host, 10, false), Action::Pause);
        assert!(host.calls.is_empty());
        // Trailers end a body that did not end with its data.
        assert_eq!(
            flow.on_request_body(&mut host, body.len(), false),
            Action::Pause
        );
        assert_eq!(flow.on_request_trailers(&mut host), Action::Continue);
        assert_eq!(host.labels(), ["allow"]);
        // Over max_body_bytes: refused as soon as Envoy reports the size, without reading it.
        let mut host = FakeHost::request(&[], &body);
        let mut flow = Flow::new(load(&host, POLICY));
        flow.on_request_headers(&mut host, false);
        host.clear_calls();
        assert_eq!(flow.on_request_body(&mut host, 201, false), Action::Pause);
        assert_eq!(host.calls, ["send_reply 413"]);
        assert_eq!(host.reply_json().1["error"]["data"]["max_body_bytes"], 200);
        assert_eq!(flow.on_request_body(&mut host, 300, true), Action::Continue);
    }

    #[test]
    fn an_empty_or_unreadable_body() {
        let mut host = FakeHost::request(&[], "");
        let mut flow = Flow::new(load(&host, POLICY));
        flow.on_request_headers(&mut host, false);
        host.clear_calls();
        assert_eq!(flow.on_request_body(&mut host, 0, true), Action::Continue);
        assert!(host.calls.is_empty(), "nothing to read, nothing decided");
        for (answer, why) in [
            (Ok(None), "the request body could not be read"),
            (
                Err("BadArgument".to_owned()),
                "reading the request body failed (BadArgument)",
            ),
        ] {
            let mut host = FakeHost {
                request_body: answer,
                ..FakeHost::request(&[], "")
            };
            let mut flow = Flow::new(load(&host, POLICY));
            flow.on_request_headers(&mut host, false);
            assert_eq!(flow.on_request_body(&mut host, 12, true), Action::Pause);
            let (status, v) = host.reply_json();
            assert_eq!(status, 500);
            assert_eq!(
                v["error"]["message"],
                format!("mcp-policy could not inspect the request: {why}")
            );
            assert!(host.events.is_empty());
        }
    }

    #[test]
    fn audit_mode_forwards_what_it_would_refuse() {
        let p = r#"{"version":"1","mode":"audit","tools":{"get_run":{}}}"#;
        let mut host = FakeHost::request(&[], &tools_call(1, "delete_run"));
        let mut flow = Flow::new(load(&host, p));
        assert_eq!(
            send(&mut flow, &mut host),
            (Action::Pause, Action::Continue)
        );
        assert_eq!(host.labels(), ["would_deny"]);
        assert!(host.replies.is_empty());
    }

    #[test]
    fn exported_values_are_safe_header_values() {
        assert_eq!(export_value(""), None);
        assert_eq!(export_value("get_run").as_deref(), Some("get_run"));
        assert_eq!(export_value("a\0b\r\nc").as_deref(), Some("a?b??c"));
        // Every byte value: what comes out is a header value Envoy accepts (RFC 9110 field-value: VCHAR, SP,
        // HTAB, obs-text), and only the bytes Envoy refuses are changed.
        let accepted = |b: u8| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80;
        for b in 0..=0xffu32 {
            let c = char::from_u32(b).unwrap();
            let v = format!("x{c}y");
            let out = export_value(&v).unwrap();
            assert!(out.bytes().all(accepted), "U+{b:04X}: {out:?}");
            if v.bytes().all(accepted) {
                assert_eq!(out, v);
            } else {
                assert_eq!(out, "x?y");
            }
        }
        let long = "é".repeat(600); // 1200 bytes
        let v = export_value(&long).unwrap();
        assert!(v.len() <= EXPORT_MAX && v.ends_with("...") && v.starts_with('é'));
        assert_eq!(v.len(), 1021 + 3 - 1, "cut at a character boundary");
        let many: String = (0..300).map(|i| format!("t{i},")).collect();
        assert_eq!(export_value(&many).unwrap().len(), EXPORT_MAX);
    }

    #[test]
    fn a_batch_exports_each_method_once_and_every_tool_called() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_run"}}]"#;
        let mut host = FakeHost::request(&[], body);
        let mut flow = Flow::new(load(&host, r#"{"version":"1","tools":{"get_run":{}}}"#));
        send(&mut flow, &mut host);
        assert!(host
            .calls
            .contains(&"request_header x-mcp-method=tools/call,notifications/initialized".into()));
        assert!(host
            .calls
            .contains(&"request_header x-mcp-tool=get_run,get_run".into()));
        assert_eq!(host.labels(), ["allow", "allow", "allow"]);
    }

    /// Issue 17: a method or tool name with any character, raw or escaped, either is refused with a JSON-RPC
    /// error (HTTP 400, never Envoy's 503) or is exported as a value Envoy accepts (visible ASCII, space, tab,
    /// obs-text). Every character below U+0100, and the format and separator characters a name may hide.
    #[test]
    fn every_exported_value_is_a_valid_header_value() {
        let valid = |v: &str| {
            v.bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
        };
        let policy = r#"{"version":"1","default":"allow","tools":{}}"#;
        let extra = [
            '\u{200b}',
            '\u{200e}',
            '\u{2028}',
            '\u{feff}',
            '\u{fffd}',
            '\u{10ffff}',
        ];
        let chars = (0u32..0x100).filter_map(char::from_u32).chain(extra);
        let mut refused = 0;
        for c in chars {
            let raw = c.to_string();
            let escaped = format!("\\u{:04x}", u32::from(c));
            for text in [raw.as_str(), escaped.as_str()] {
                // A quote or backslash is written escaped, like any JSON string would.
                let text = match text {
                    "\"" => "\\\"",
                    "\\" => "\\\\",
                    t => t,
                };
                for body in [
                    format!(r#"{{"jsonrpc":"2.0","id":3,"method":"x{text}y","params":{{}}}}"#),
                    format!(
                        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"get{text}run"}}}}"#
                    ),
                ] {
                    let mut host = FakeHost::request(&[], &body);
                    let mut flow = Flow::new(load(&host, policy));
                    send(&mut flow, &mut host);
                    for call in &host.calls {
                        if let Some(v) = call.strip_prefix("request_header x-mcp-") {
                            let value = v.split_once('=').map_or("", |(_, v)| v);
                            assert!(valid(value), "{c:?} in {body}: exported {value:?}");
                        }
                    }
                    if let Some((status, reply)) = host.replies.first() {
                        refused += 1;
                        assert_eq!(*status, 400, "{c:?} in {body}: {reply}");
                        let v: serde_json::Value = serde_json::from_str(reply).unwrap();
                        let code = v["error"]["code"].as_i64();
                        assert!(
                            matches!(code, Some(-32700 | -32600 | -32602)),
                            "{body}: {reply}"
                        );
                        if code != Some(-32700) {
                            assert_eq!(v["id"], 3, "{body}: {reply}");
                        }
                    }
                }
            }
        }
        // C0, DEL and C1, raw or escaped, in a method or a name: all refused.
        assert!(refused >= 4 * (33 + 32), "{refused}");
    }

    #[test]
    fn control_characters_in_methods_and_names_are_named_in_the_refusal() {
        let policy = r#"{"version":"1","default":"allow","tools":{}}"#;
        for (body, code, words) in [
            (r#"{"jsonrpc":"2.0","id":3,"method":"tool\u007f/call","params":{"name":"a"}}"#, -32600, "method name has a control character (U+007F)"),
            ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x\x7fy\",\"params\":{}}", -32600, "method name has a control character (U+007F)"),
            ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"get\x7frun\",\"arguments\":{}}}", -32602, "tool name has a control character (U+007F)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\u0001run","arguments":{}}}"#, -32602, "tool name has a control character (U+0001)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"p\u0085"}}"#, -32602, "prompt name has a control character (U+0085)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a\u0000"}}"#, -32602, "resource URI has a control character (U+0000)"),
        ] {
            let mut host = FakeHost::request(&[], body);
            let mut flow = Flow::new(load(&host, policy));
            send(&mut flow, &mut host);
            let (status, v) = host.reply_json();
            assert_eq!((status, v["error"]["code"].as_i64(), &v["id"]), (400, Some(code), &serde_json::json!(3)), "{body}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(words), "{body}: {message}");
            assert!(!host.calls.iter().any(|c| c.starts_with("request_header x-mcp-tool")), "{:?}", host.calls);
        }
    }
}
