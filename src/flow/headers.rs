//! The request headers: the first callback of every request. For a policy with `callers`, this is where the
//! caller is read (once per request, only what the policy uses: [`crate::caller::read`]) and its profile chosen.

use super::{env_if, Action, Flow, Host};
use crate::caller::{self, Caller};
use crate::header_map::HeaderMap;
use crate::label::Label;
use crate::limits::Scope;
use crate::policy::{client_ip, Mode, Policy};
use crate::reply;
use crate::request::{self, Head, ProfileRef};

impl Flow {
    /// Removes forged exported headers, reads the verified caller (refusing a request without one under
    /// `callers.required`, or with one that cannot be read), reads what the decision needs from the headers
    /// (the rate-limit identities, `Mcp-*`, the body's encoding and length), refuses what can be refused
    /// already, and holds the headers until the body is decided (`hold_headers`).
    pub fn on_request_headers<H: Host>(&mut self, host: &mut H, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed(host, "no policy is loaded");
        };
        let Some(headers) = host.request_headers() else {
            return self.fail_closed(host, "the request headers could not be read");
        };
        // A client must not be able to forge the exported headers, nor have them reach the upstream (not even
        // with export off).
        for name in policy.unforgeable_headers() {
            if headers.has(name) {
                host.set_request_header(name, None);
            }
        }
        // Who is calling, before anything else: a request without a body (the SSE GET) is refused too.
        let caller = match self.caller(host, &policy, &headers) {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let profile = caller.as_ref().and_then(|c| {
            let index = policy.profile_for(c)?;
            let name = policy.profiles.get(index)?.name.clone();
            Some(ProfileRef { index, name })
        });
        if let (Some(p), Some(names)) = (&profile, &policy.export) {
            // Set now, whatever happens to the body: RBAC and access logs can rely on it, and without held
            // headers this is the last moment it can be set.
            host.set_request_header(&names.profile, Some(&p.name));
        }
        if end_of_stream {
            // No body (a GET for the SSE stream, a DELETE of a session): nothing to inspect.
            self.decided = true;
            return Action::Continue;
        }
        if !policy.hold_headers && headers.has("accept-encoding") {
            // The headers leave now, before the method is known: ask for uncompressed answers so that a
            // tools/list answer can be filtered.
            host.set_request_header("accept-encoding", None);
        }
        let (identity, caller_identity) = identities(host, &policy, &headers, caller.as_ref());
        self.head = Head {
            request_id: headers.get("x-request-id"),
            content_encoding: headers.get("content-encoding"),
            content_length: headers
                .values("content-length")
                .next()
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
            mcp_method: headers.get("mcp-method"),
            mcp_name: headers.get("mcp-name"),
            repeated_mcp_header: headers.repeated(&["mcp-method", "mcp-name"]),
            identity,
            caller,
            profile,
            caller_identity,
        };
        if let Some(r) = request::check_head(&policy, &self.head) {
            return self.respond(host, &r);
        }
        // Hold the headers until the body is decided. That needs the filter's allow_on_headers_stop_iteration:
        // true; without it (Istio) the policy sets hold_headers: false, the headers go on now, and the body
        // is still held in on_request_body until it is decided: the upstream never sees an undecided byte.
        if policy.hold_headers {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// The verified caller, for a policy with `callers` (`None` without: nothing is read). `Err` when the
    /// request was refused for it (the action to return): a verified claim that cannot be read exactly
    /// (malformed input: refused in audit mode too), or no identity under `callers.required` (in audit mode
    /// logged as `would_deny` and let through as anonymous).
    fn caller<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, Action> {
        let Some(callers) = &policy.callers else {
            return Ok(None);
        };
        let c = match caller::read(callers, |path| host.property(path)) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("the caller's identity cannot be read: {e}");
                return Err(self.unauthenticated(host, policy, headers, &why));
            }
        };
        if callers.required && !c.authenticated() {
            if policy.mode != Mode::Audit {
                return Err(self.unauthenticated(host, policy, headers, caller::NONE_REQUIRED));
            }
            let head = anonymous_head(host, policy, headers);
            let why = format!("{} (mode audit: forwarded)", caller::NONE_REQUIRED);
            let event = request::refused_event(&env_if(host, false), &head, Label::WouldDeny, &why);
            host.record(&event);
        }
        Ok(Some(c))
    }

    /// Refuses a request without a usable caller identity: HTTP 401, -31004, one `unauthenticated` event.
    fn unauthenticated<H: Host>(
        &mut self,
        host: &mut H,
        policy: &Policy,
        headers: &HeaderMap,
        why: &str,
    ) -> Action {
        self.head = anonymous_head(host, policy, headers);
        let event = request::refused_event(
            &env_if(host, false),
            &self.head,
            Label::Unauthenticated,
            why,
        );
        host.record(&event);
        // RFC 9110 §15.5.2: a 401 names the scheme that would authenticate the request.
        let scheme = policy
            .callers
            .as_ref()
            .and_then(|c| c.jwt.as_ref())
            .map(|_| ("www-authenticate", "Bearer"));
        self.respond_with(host, &reply::unauthenticated(why), scheme)
    }
}

/// The head of a request refused (or let through in audit mode) for its caller: what its audit line names.
fn anonymous_head<H: Host>(host: &mut H, policy: &Policy, headers: &HeaderMap) -> Head {
    let (identity, _) = identities(host, policy, headers, None);
    Head {
        request_id: headers.get("x-request-id"),
        identity,
        ..Head::default()
    }
}

/// Who the request's rate limits count: the session identity (the first identity header, else the verified
/// caller, else the client IP) and the caller identity (the verified caller, else the client IP, asked of
/// Envoy only when a caller-scoped limit could need it). The client's address is read at most once.
fn identities<H: Host>(
    host: &mut H,
    policy: &Policy,
    headers: &HeaderMap,
    caller: Option<&Caller>,
) -> (String, String) {
    let key = caller.and_then(Caller::limit_key);
    let mut ip: Option<String> = None;
    let mut address = |host: &mut H| {
        ip.get_or_insert_with(|| {
            client_ip(|| {
                host.property(&["source", "address"])
                    .and_then(|b| String::from_utf8(b).ok())
            })
        })
        .clone()
    };
    let session =
        policy
            .identity
            .resolve(|h| headers.get(h), key.as_deref(), || Some(address(host)));
    let caller_identity = match key {
        Some(k) => k,
        None if policy.counts(Scope::Caller) => format!("ip:{}", address(host)),
        None => String::new(),
    };
    (session, caller_identity)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{load, tools_call, FakeHost};
    use super::*;

    const POLICY: &str =
        r#"{"version":"1","default":"deny","tools":{"get_run":{}},"max_body_bytes":200}"#;

    #[test]
    fn without_a_policy_every_request_fails_closed() {
        let mut host = FakeHost::request(&[], &tools_call(1, "get_run"));
        let mut flow = Flow::new(None);
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(host.calls, ["log ERROR", "send_reply 500"]);
        let (status, v) = host.reply_json();
        assert_eq!(status, 500);
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,
                "message":"mcp-policy could not inspect the request: no policy is loaded"}})
        );
        // Decided: the body callbacks that may still come let it be.
        assert_eq!(flow.on_request_body(&mut host, 10, true), Action::Continue);
        assert_eq!(flow.on_request_trailers(&mut host), Action::Continue);
    }

    #[test]
    fn unreadable_headers_fail_closed() {
        let mut host = FakeHost {
            request_headers: None,
            ..FakeHost::default()
        };
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        let (status, v) = host.reply_json();
        assert_eq!(status, 500);
        assert_eq!(
            v["error"]["message"],
            "mcp-policy could not inspect the request: the request headers could not be read"
        );
        assert_eq!(host.logs[0].0, log::Level::Error);
    }

    #[test]
    fn forged_exported_headers_are_removed_even_without_a_body() {
        let mut host = FakeHost::request(
            &[("X-MCP-Tool", "get_run"), ("x-mcp-method", "tools/call")],
            "",
        );
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, true), Action::Continue);
        assert_eq!(
            host.calls,
            [
                "request_headers",
                "request_header -x-mcp-method",
                "request_header -x-mcp-tool"
            ]
        );
        assert_eq!(flow.on_request_body(&mut host, 0, true), Action::Continue);
        // Also with export off, and under the exported names.
        let mut host = FakeHost::request(&[("x-tool", "a"), ("x-mcp-tool", "b")], "");
        let p = r#"{"version":"1","export_headers":{"tool":"X-Tool"}}"#;
        let mut flow = Flow::new(load(&host, p));
        flow.on_request_headers(&mut host, true);
        assert_eq!(
            host.calls,
            [
                "request_headers",
                "request_header -x-mcp-tool",
                "request_header -x-tool"
            ],
            "the default names and the renamed one"
        );
        let mut host = FakeHost::request(&[("x-mcp-tool", "b")], "");
        let mut flow = Flow::new(load(&host, r#"{"version":"1","export_headers":false}"#));
        flow.on_request_headers(&mut host, true);
        assert_eq!(
            host.calls,
            ["request_headers", "request_header -x-mcp-tool"]
        );
    }

    #[test]
    fn the_identity_comes_from_a_header_else_the_client_address() {
        let mut host = FakeHost::request(&[("mcp-session-id", "s-1")], "{}");
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        assert_eq!(host.calls, ["request_headers"], "no property read");
        assert_eq!(flow.head.identity, "s-1");
        let mut host = FakeHost::request(&[("x-request-id", "r-9")], "{}");
        let mut flow = Flow::new(load(&host, POLICY));
        flow.on_request_headers(&mut host, false);
        assert_eq!(host.calls, ["request_headers", "property source.address"]);
        assert_eq!(flow.head.identity, "10.0.0.7");
        assert_eq!(flow.head.request_id.as_deref(), Some("r-9"));
        let mut host = FakeHost {
            properties: Vec::new(),
            ..FakeHost::request(&[], "{}")
        };
        let mut flow = Flow::new(load(&host, POLICY));
        flow.on_request_headers(&mut host, false);
        assert_eq!(flow.head.identity, "unknown");
    }

    #[test]
    fn the_head_is_read_and_checked_before_the_body() {
        let mut host = FakeHost::request(
            &[
                ("content-length", " 74 "),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_run"),
                ("Mcp-Name", "other"),
            ],
            "{}",
        );
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        assert!(host.replies.is_empty());
        let head = &flow.head;
        assert_eq!(head.content_length, Some(74));
        assert_eq!(head.mcp_method.as_deref(), Some("tools/call"));
        assert_eq!(head.mcp_name.as_deref(), Some("get_run"));
        assert_eq!(head.repeated_mcp_header, Some("mcp-name"));
        for (header, status) in [
            (("content-encoding", "gzip"), 415),
            (("content-length", "201"), 413),
        ] {
            let mut host = FakeHost::request(&[header], "{}");
            let mut flow = Flow::new(load(&host, POLICY));
            assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
            assert_eq!(host.reply_json().0, status);
            assert_eq!(host.calls.last().unwrap(), &format!("send_reply {status}"));
            assert_eq!(flow.on_request_body(&mut host, 2, true), Action::Continue);
        }
    }

    #[test]
    fn headers_are_held_unless_hold_headers_is_off() {
        let mut host = FakeHost::request(&[("accept-encoding", "gzip")], "{}");
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        assert!(!host
            .calls
            .contains(&"request_header -accept-encoding".to_owned()));
        // Without held headers they leave now, before the method is known: no compressed answers then.
        let p = r#"{"version":"1","hold_headers":false}"#;
        let mut host = FakeHost::request(&[("accept-encoding", "gzip")], "{}");
        let mut flow = Flow::new(load(&host, p));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Continue);
        assert_eq!(
            host.calls,
            [
                "request_headers",
                "request_header -accept-encoding",
                "property source.address"
            ]
        );
        let mut host = FakeHost::request(&[], "{}");
        let mut flow = Flow::new(load(&host, p));
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Continue);
        assert_eq!(host.calls, ["request_headers", "property source.address"]);
    }
}
