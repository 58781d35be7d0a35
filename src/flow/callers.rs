//! Tests: a request's life under a policy with `callers` and `profiles`, through the state machine with a
//! fake Envoy whose stream properties hold what `jwt_authn` and the TLS handshake verified.

use super::fake::{load, send, tools_call, FakeHost};
use super::Action;
use super::Flow;

const POLICY: &str = r#"{"version":"1","default":"deny",
  "callers":{"jwt":{"metadata":"jwt_payload","subject":"sub","groups":"groups"},"peer_certificate":true},
  "approval":{"cluster":"approvals"},
  "tools":{"get_run":{"rate_limit":"2/minute"},"delete_run":{"action":"deny","reason":"no deletes"}},
  "profiles":[
    {"name":"ml-admins","match":{"groups":["ml-admins"]},
     "tools":{"delete_run":{"action":"require_approval","reason":"a human checks"}}},
    {"name":"ci","match":{"principal":"spiffe://cluster.local/ns/ci/sa/*"},"inherit":false,
     "tools":{"search_runs":{}}}]}"#;

const SUB: &str = "metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.sub";
const GROUPS: &str = "metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.groups";
const SAN: &str = "connection.uri_san_peer_certificate";

/// The pair serialization Envoy gives a list of strings.
fn list(items: &[&str]) -> Vec<u8> {
    let mut b = u32::try_from(items.len()).unwrap().to_le_bytes().to_vec();
    for i in items {
        b.extend(u32::try_from(i.len()).unwrap().to_le_bytes());
        b.extend(0u32.to_le_bytes());
    }
    for i in items {
        b.extend(i.as_bytes());
        b.extend([0, 0]);
    }
    b
}

/// A request from a caller with these verified properties, these headers and this body.
fn from(props: &[(&str, Vec<u8>)], headers: &[(&str, &str)], body: &str) -> FakeHost {
    let mut host = FakeHost::request(headers, body);
    host.properties
        .extend(props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    host
}

fn alice_admin() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (SUB, b"alice".to_vec()),
        (GROUPS, list(&["readers", "ml-admins"])),
    ]
}

#[test]
fn the_caller_is_read_once_at_the_headers_and_its_profile_exported() {
    let mut host = from(&alice_admin(), &[("mcp-session-id", "s-1")], "{}");
    let mut flow = Flow::new(load(&host, POLICY));
    assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
    assert_eq!(
        host.calls,
        [
            "request_headers",
            &format!("property {SUB}"),
            &format!("property {GROUPS}"),
            &format!("property {SAN}"),
            "request_header x-mcp-profile=ml-admins",
        ]
    );
    let head = &flow.head;
    assert_eq!(head.profile.as_ref().unwrap().name, "ml-admins");
    assert_eq!(
        head.caller.as_ref().unwrap().groups,
        ["readers", "ml-admins"]
    );
    assert_eq!(
        head.identity, "s-1",
        "a session header still names the session"
    );
    assert_eq!(head.caller_identity, "jwt:alice");
    // Without a session header, sessions count per caller: the client address is not even asked.
    let mut host = from(&alice_admin(), &[], "{}");
    let mut flow = Flow::new(load(&host, POLICY));
    flow.on_request_headers(&mut host, false);
    assert_eq!(flow.head.identity, "jwt:alice");
    assert!(!host.calls.iter().any(|c| c.contains("source")));
}

#[test]
fn a_policy_without_callers_reads_nothing_and_a_forged_profile_header_is_removed() {
    let plain = r#"{"version":"1","tools":{"get_run":{}}}"#;
    let mut host = from(&alice_admin(), &[("x-mcp-profile", "ml-admins")], "{}");
    let mut flow = Flow::new(load(&host, plain));
    flow.on_request_headers(&mut host, false);
    assert!(
        !host.calls.iter().any(|c| c.contains("jwt_authn")),
        "{:?}",
        host.calls
    );
    assert!(host
        .calls
        .contains(&"request_header -x-mcp-profile".to_owned()));
    assert!(flow.head.caller.is_none() && flow.head.profile.is_none());
    // With callers too: the client's copy goes, the filter's value is set.
    let mut host = from(&alice_admin(), &[("X-MCP-Profile", "ci")], "{}");
    let mut flow = Flow::new(load(&host, POLICY));
    flow.on_request_headers(&mut host, false);
    let sets: Vec<&String> = host
        .calls
        .iter()
        .filter(|c| c.contains("x-mcp-profile"))
        .collect();
    assert_eq!(
        sets,
        [
            "request_header -x-mcp-profile",
            "request_header x-mcp-profile=ml-admins"
        ]
    );
    // No profile matches: no header.
    let mut host = from(&[(SUB, b"bob".to_vec())], &[], "{}");
    let mut flow = Flow::new(load(&host, POLICY));
    flow.on_request_headers(&mut host, false);
    assert!(flow.head.profile.is_none());
    assert!(!host.calls.iter().any(|c| c.contains("x-mcp-profile")));
}

#[test]
fn each_caller_gets_its_profiles_decisions() {
    let delete = tools_call(1, "delete_run");
    // ml-admins: approval asked, and the callout says who asks.
    let mut host = from(&alice_admin(), &[], &delete);
    let mut flow = Flow::new(load(&host, POLICY));
    assert_eq!(send(&mut flow, &mut host), (Action::Pause, Action::Pause));
    let (_, _, callout) = &host.callouts[0];
    let v: serde_json::Value = serde_json::from_str(callout).unwrap();
    assert_eq!(
        v["caller"],
        serde_json::json!({"subject": "alice", "groups": ["readers", "ml-admins"], "principal": null,
                           "profile": "ml-admins"})
    );
    // Another subject: the top level denies.
    let mut host = from(&[(SUB, b"bob".to_vec())], &[], &delete);
    let mut flow = Flow::new(load(&host, POLICY));
    send(&mut flow, &mut host);
    let (status, v) = host.reply_json();
    assert_eq!((status, v["error"]["code"].as_i64()), (200, Some(-31001)));
    assert_eq!(v["error"]["data"]["reason"], "no deletes");
    // ci (a certificate, inherit false): only search_runs.
    let ci = [(SAN, b"spiffe://cluster.local/ns/ci/sa/builder".to_vec())];
    let mut host = from(&ci, &[], &tools_call(2, "get_run"));
    let mut flow = Flow::new(load(&host, POLICY));
    send(&mut flow, &mut host);
    assert_eq!(host.reply_json().1["error"]["code"], -31001);
    let mut host = from(&ci, &[], &tools_call(3, "search_runs"));
    let mut flow = Flow::new(load(&host, POLICY));
    assert_eq!(
        send(&mut flow, &mut host),
        (Action::Pause, Action::Continue)
    );
    assert!(host.replies.is_empty());
    // The events carry the profile (the metrics' label) and the audit line says who, in clear.
    let e = &host.events[0];
    assert_eq!(e.profile.as_deref(), Some("ci"));
    let line: serde_json::Value = serde_json::from_str(&e.audit).unwrap();
    assert_eq!(line["principal"], "spiffe://cluster.local/ns/ci/sa/builder");
    assert_eq!(line["subject"], serde_json::Value::Null);
    assert_eq!(line["profile"], "ci");
}

#[test]
fn limits_count_per_caller_whatever_the_session() {
    let get = tools_call(1, "get_run");
    let mut store = None;
    let mut run = |props: &[(&str, Vec<u8>)], session: &str| {
        let mut host = from(props, &[("mcp-session-id", session)], &get);
        if let Some(s) = store.take() {
            host.store = s;
        }
        let mut flow = Flow::new(load(&host, POLICY));
        send(&mut flow, &mut host);
        let refused = !host.replies.is_empty();
        store = Some(std::mem::take(&mut host.store));
        refused
    };
    let bob = [(SUB, b"bob".to_vec())];
    let carol = [(SUB, b"carol".to_vec())];
    // 2/minute per caller: a new session is no new budget.
    assert!(!run(&bob, "s-1"));
    assert!(!run(&bob, "s-2"));
    assert!(run(&bob, "s-3"), "bob's third call in a minute");
    // carol has her own budget, even in bob's session.
    assert!(!run(&carol, "s-1"));
    assert!(!run(&carol, "s-1"));
    assert!(run(&carol, "s-9"));
}

#[test]
fn anonymous_callers_are_counted_by_address() {
    let get = tools_call(1, "get_run");
    let mut host = from(&[], &[("mcp-session-id", "s-1")], &get);
    let mut flow = Flow::new(load(&host, POLICY));
    flow.on_request_headers(&mut host, false);
    assert_eq!(flow.head.caller_identity, "ip:10.0.0.7");
    assert_eq!(flow.head.identity, "s-1");
    assert!(flow.head.profile.is_none());
    // A policy without caller-scoped limits never asks for the address when a session header is there.
    let no_limits = POLICY.replace(r#"{"rate_limit":"2/minute"}"#, "{}");
    let mut host = from(&[], &[("mcp-session-id", "s-1")], &get);
    let mut flow = Flow::new(load(&host, &no_limits));
    flow.on_request_headers(&mut host, false);
    assert!(!host.calls.iter().any(|c| c.contains("source")));
    assert_eq!(flow.head.caller_identity, "");
}

#[test]
fn required_refuses_a_request_without_an_identity_even_without_a_body() {
    let required = POLICY.replace(
        r#""peer_certificate":true"#,
        r#""peer_certificate":true,"required":true"#,
    );
    for end_of_stream in [false, true] {
        let mut host = from(&[], &[("x-request-id", "r-1")], &tools_call(1, "get_run"));
        let mut flow = Flow::new(load(&host, &required));
        assert_eq!(
            flow.on_request_headers(&mut host, end_of_stream),
            Action::Pause
        );
        let (status, v) = host.reply_json();
        assert_eq!(status, 401);
        assert_eq!(v["error"]["code"], -31004);
        assert_eq!(v["error"]["data"]["decision"], "unauthenticated");
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(
            host.reply_headers,
            [("www-authenticate".to_owned(), "Bearer".to_owned())]
        );
        assert_eq!(host.labels(), ["unauthenticated"]);
        let line: serde_json::Value = serde_json::from_str(&host.events[0].audit).unwrap();
        assert_eq!(line["request_id"], "r-1");
        assert!(line["reason"]
            .as_str()
            .unwrap()
            .starts_with("no verified caller identity"));
        // Decided: nothing else happens to it.
        assert_eq!(flow.on_request_body(&mut host, 10, true), Action::Continue);
    }
    // With an identity it goes on.
    let mut host = from(&[(SUB, b"bob".to_vec())], &[], &tools_call(1, "get_run"));
    let mut flow = Flow::new(load(&host, &required));
    assert_eq!(
        send(&mut flow, &mut host),
        (Action::Pause, Action::Continue)
    );
    // mTLS alone, no Bearer scheme to name.
    let mtls = r#"{"version":"1","callers":{"peer_certificate":true,"required":true}}"#;
    let mut host = from(&[], &[], "{}");
    let mut flow = Flow::new(load(&host, mtls));
    flow.on_request_headers(&mut host, false);
    assert_eq!(host.reply_json().0, 401);
    assert!(host.reply_headers.is_empty());
}

#[test]
fn an_identity_that_cannot_be_read_is_refused_without_required() {
    let number = 12345.0f64.to_le_bytes().to_vec();
    for (what, props) in [
        (
            "groups of the wrong type",
            vec![(SUB, b"alice".to_vec()), (GROUPS, number.clone())],
        ),
        ("a number as subject", vec![(SUB, number)]),
        ("a subject that is not UTF-8", vec![(SUB, vec![0xff, 0x61])]),
        ("a huge subject", vec![(SUB, vec![b'a'; 5000])]),
        (
            "a principal with NUL",
            vec![(SAN, b"spiffe://a\0b".to_vec())],
        ),
    ] {
        let mut host = from(&props, &[], &tools_call(1, "delete_run"));
        let mut flow = Flow::new(load(&host, POLICY));
        assert_eq!(
            send(&mut flow, &mut host),
            (Action::Pause, Action::Pause),
            "{what}"
        );
        let (status, v) = host.reply_json();
        assert_eq!(
            (status, v["error"]["code"].as_i64()),
            (401, Some(-31004)),
            "{what}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "mcp-policy refused the request: the caller's identity cannot be read: the "
            ),
            "{what}: {message}"
        );
        assert!(
            !host.calls.iter().any(|c| c.starts_with("request_body")),
            "{what}"
        );
    }
}

#[test]
fn tools_list_answers_follow_the_caller() {
    let list_call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let answer = r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"get_run"},{"name":"delete_run"},{"name":"search_runs"}]}}"#;
    let names = |props: &[(&str, Vec<u8>)]| {
        let mut host = from(props, &[], list_call);
        let mut flow = Flow::new(load(&host, POLICY));
        send(&mut flow, &mut host);
        host.respond_with(200, &[("content-type", "application/json")], answer);
        flow.on_response_headers(&mut host);
        flow.on_response_body(&mut host, answer.len(), true);
        let v: serde_json::Value = serde_json::from_slice(&host.response_body).unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&alice_admin()), ["get_run", "delete_run"]);
    assert_eq!(names(&[(SUB, b"bob".to_vec())]), ["get_run"]);
    assert_eq!(
        names(&[(SAN, b"spiffe://cluster.local/ns/ci/sa/x".to_vec())]),
        ["search_runs"]
    );
}

#[test]
fn audit_mode_lets_a_request_without_an_identity_through_but_not_an_unreadable_one() {
    let audit = POLICY
        .replace(
            r#""peer_certificate":true"#,
            r#""peer_certificate":true,"required":true"#,
        )
        .replace(r#""default":"deny""#, r#""default":"deny","mode":"audit""#);
    let mut host = from(&[], &[("x-request-id", "r-2")], &tools_call(1, "get_run"));
    let mut flow = Flow::new(load(&host, &audit));
    assert_eq!(
        send(&mut flow, &mut host),
        (Action::Pause, Action::Continue)
    );
    assert!(host.replies.is_empty());
    assert_eq!(host.labels(), ["would_deny", "allow"]);
    let line: serde_json::Value = serde_json::from_str(&host.events[0].audit).unwrap();
    assert_eq!(line["request_id"], "r-2");
    assert!(line["reason"]
        .as_str()
        .unwrap()
        .ends_with("(mode audit: forwarded)"));
    // A claim that cannot be read is malformed input: refused in audit mode too.
    let mut host = from(
        &[(SUB, b"alice".to_vec()), (GROUPS, vec![1])],
        &[],
        &tools_call(1, "get_run"),
    );
    let mut flow = Flow::new(load(&host, &audit));
    send(&mut flow, &mut host);
    assert_eq!(host.reply_json().0, 401);
    assert_eq!(host.labels(), ["unauthenticated"]);
}

/// Fleet-wide limits count per caller too: a caller-scoped limit (the default with `callers`) goes to the rate
/// limit service with the caller's key hashed (`mcp_caller`), a session-scoped one with the session's, a
/// profile's own limit under the profile's rule name; the service's refusal names the profile's limit.
#[test]
fn fleet_limits_count_per_caller_and_a_profiles_apart() {
    use crate::limits::fleet::identity_hash;
    use crate::limits::rls::{self, CurrentLimit, Response, Status};
    const FLEET: &str = r#"{"version":"1","default":"deny",
      "callers":{"jwt":{"metadata":"jwt_payload","subject":"sub","groups":"groups"}},
      "rate_limit_service":{"cluster":"ratelimit"},
      "tools":{"search_runs":{"rate_limit":["10/minute",{"max":100,"window":"hour","scope":"session"}]}},
      "profiles":[{"name":"ml-admins","match":{"groups":["ml-admins"]},
                   "tools":{"search_runs":{"rate_limit":"50/minute"}}}]}"#;
    let body = tools_call(1, "search_runs");
    let asked = |props: &[(&str, Vec<u8>)]| {
        let mut host = from(props, &[("mcp-session-id", "s-1")], &body);
        let mut flow = Flow::new(load(&host, FLEET));
        assert_eq!(send(&mut flow, &mut host), (Action::Pause, Action::Pause));
        assert_eq!(host.grpc_calls.len(), 1, "{:?}", host.calls);
        let text = String::from_utf8_lossy(&host.grpc_calls[0].4).into_owned();
        (flow, host, text)
    };
    let session = identity_hash("s-1");
    // alice is an ML admin: the profile's own limit, per caller.
    let (mut flow, mut host, alice) = asked(&alice_admin());
    assert!(alice.contains(r#"profiles["ml-admins"].tools["search_runs"]"#));
    assert!(alice.contains("0:50/minute") && !alice.contains("0:10/minute"));
    assert!(alice.contains("mcp_caller") && alice.contains(&identity_hash("jwt:alice")));
    assert!(!alice.contains("mcp_session") && !alice.contains(&session));
    // bob has no profile: the top level's limits, per caller and per session.
    let (_, _, bob) = asked(&[(SUB, b"bob".to_vec())]);
    assert!(bob.contains(r#"tools["search_runs"]"#) && !bob.contains("profiles["));
    assert!(bob.contains("0:10/minute") && bob.contains("1:100/hour"));
    assert!(bob.contains("mcp_caller") && bob.contains(&identity_hash("jwt:bob")));
    assert!(bob.contains("mcp_session") && bob.contains(&session));
    // A caller without a verified identity is counted by its client address, as in this Envoy.
    let (_, _, anonymous) = asked(&[]);
    assert!(anonymous.contains(&identity_hash("ip:10.0.0.7")));
    // The service refuses alice's call: the reply names the profile's limit.
    host.grpc_answer = Response {
        overall_code: rls::CODE_OVER_LIMIT,
        statuses: vec![Status {
            code: rls::CODE_OVER_LIMIT,
            current_limit: Some(CurrentLimit {
                requests_per_unit: 50,
                unit: 2,
            }),
            limit_remaining: 0,
            duration_until_reset: Some(rls::Duration {
                seconds: 12,
                nanos: 0,
            }),
        }],
    }
    .encode();
    let token = host.grpc_calls[0].0;
    let size = host.grpc_answer.len();
    flow.on_grpc_callout_response(&mut host, token, 0, size);
    assert_eq!(host.labels(), ["rate_limited"]);
    let (_, v) = host.reply_json();
    assert_eq!(v["error"]["data"]["retry_after_seconds"], 12);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rate limit of 50 calls per 60s (per caller) reached"),
        "{message}"
    );
}
