//! Tests of [`super`]: the head checks, the body decisions, rate limits, approval, events and summaries.

use super::*;
use crate::approval::Answer;
use crate::limits::{init_store, memory::MemoryStore};
use crate::policy::parse;

fn check_body(p: &Policy, head: &Head, bytes: &[u8]) -> Outcome {
    let store = MemoryStore::default();
    init_store(&store).unwrap();
    super::check_body(
        p,
        head,
        bytes,
        &Env {
            store: &store,
            now_nanos: 0,
            audit: true,
        },
    )
    .outcome
}

fn policy() -> Policy {
    parse(br#"{"version":"1","default":"deny","tools":{"get_run":{}},"max_body_bytes":200}"#)
        .unwrap()
}

fn code(o: &Outcome) -> (u32, i64) {
    match o {
        Outcome::Reply(r) => {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            (r.status, v["error"]["code"].as_i64().unwrap_or(0))
        }
        Outcome::Forward(_) | Outcome::Approve { .. } | Outcome::Count { .. } => (0, 0),
    }
}

const GET: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}"#;

#[test]
fn head_checks() {
    let p = policy();
    let h = |enc: &str, len: Option<u64>| Head {
        content_encoding: Some(enc.into()),
        content_length: len,
        ..Head::default()
    };
    assert_eq!(check_head(&p, &h("gzip", None)).unwrap().status, 415);
    assert_eq!(
        check_head(&p, &h("identity, br", None)).unwrap().status,
        415
    );
    assert!(check_head(&p, &h("identity", Some(200))).is_none());
    assert_eq!(check_head(&p, &h("", Some(201))).unwrap().status, 413);
}

#[test]
fn body_outcomes() {
    let p = policy();
    let head = Head::default();
    assert_eq!(check_body(&p, &head, GET), Outcome::Forward(vec![]));
    assert_eq!(code(&check_body(&p, &head, &[b' '; 201])), (413, -32600));
    assert_eq!(code(&check_body(&p, &head, b"nope")), (400, -32700));
    let deny = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_run"}}"#;
    assert_eq!(code(&check_body(&p, &head, deny)), (200, -31001));
}

#[test]
fn rate_limits_count_forwarded_calls_and_batches_are_all_or_nothing() {
    let p = parse(br#"{"version":"1","tools":{"t":{"rate_limit":"3/minute"},"u":{}}}"#).unwrap();
    let store = MemoryStore::default();
    init_store(&store).unwrap();
    let env = Env {
        store: &store,
        now_nanos: 61_000_000_000,
        audit: true,
    };
    let head = Head {
        identity: "h:mcp-session-id:s1".into(),
        ..Head::default()
    };
    let t = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
    let batch3 = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}},
                     {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"u"}},
                     {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t"}},
                     {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t"}}]"#;
    assert!(
        matches!(super::check_body(&p, &head, t, &env).outcome, Outcome::Forward(r) if r.len() == 1)
    );
    // 1 + 3 > 3: the batch is refused whole, and takes nothing.
    let Outcome::Reply(r) = super::check_body(&p, &head, batch3, &env).outcome else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[0]["error"]["code"], -31001);
    assert_eq!(v[3]["error"]["code"], -31002);
    assert_eq!(v[3]["error"]["data"]["retry_after_seconds"], 59);
    assert_eq!(v[3]["error"]["data"]["limit"], 3);
    assert!(matches!(
        super::check_body(&p, &head, t, &env).outcome,
        Outcome::Forward(_)
    ));
    assert!(matches!(
        super::check_body(&p, &head, t, &env).outcome,
        Outcome::Forward(_)
    ));
    assert_eq!(
        code(&super::check_body(&p, &head, t, &env).outcome),
        (200, -31002)
    );
    // Another session has its own count.
    let other = Head {
        identity: "h:mcp-session-id:s2".into(),
        ..Head::default()
    };
    assert!(matches!(
        super::check_body(&p, &other, t, &env).outcome,
        Outcome::Forward(_)
    ));
}

#[test]
fn approval_round_trip() {
    let p = parse(
        br#"{"version":"1","approval":{"cluster":"a"},"tools":{
        "c":{"action":"require_approval","reason":"human","rate_limit":"1/minute"},"g":{}}}"#,
    )
    .unwrap();
    let store = MemoryStore::default();
    init_store(&store).unwrap();
    let env = Env {
        store: &store,
        now_nanos: 0,
        audit: true,
    };
    let head = Head {
        identity: "s1".into(),
        request_id: Some("r1".into()),
        ..Head::default()
    };
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"g"}},
                    {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"c","arguments":{"x":1}}}]"#;
    let Outcome::Approve {
        reservations,
        asks,
        awaiting,
    } = super::check_body(&p, &head, batch, &env).outcome
    else {
        panic!()
    };
    assert_eq!(reservations.len(), 1);
    assert_eq!(asks.len(), 1);
    let ask: serde_json::Value = serde_json::from_str(&asks[0]).unwrap();
    assert_eq!(ask["tool"], "c");
    assert_eq!(ask["jsonrpc_id"], 2);
    assert_eq!(ask["identity"], "s1");
    assert_eq!(ask["request_id"], "r1");
    assert_eq!(ask["reason"], "human");
    assert_eq!(ask["arguments"]["x"], 1);
    let yes = Answer::Granted {
        remember_secs: None,
    };
    let (ok, events) = awaiting.conclude(&head, &[yes], &env);
    assert_eq!(ok, Ok(()));
    assert_eq!(
        events.iter().map(|e| e.decision).collect::<Vec<_>>(),
        vec!["allow", "approval_granted"]
    );
    // Not asked: a remembered approval answered.
    let (ok, events) = awaiting.conclude(&head, &[Answer::Remembered], &env);
    assert_eq!(ok, Ok(()));
    assert_eq!(
        events.iter().map(|e| e.decision).collect::<Vec<_>>(),
        vec!["allow", "approval_remembered"]
    );
    let line: serde_json::Value = serde_json::from_str(&events[1].audit).unwrap();
    assert_eq!(
        (&line["decision"], &line["tool"], &line["rule"]),
        (&"approval_remembered".into(), &"c".into(), &"c".into())
    );
    let (r, events) = awaiting.conclude(&head, &[Answer::Denied("no".into())], &env);
    let r = r.unwrap_err();
    assert_eq!(
        events.iter().map(|e| e.decision).collect::<Vec<_>>(),
        vec!["deny", "approval_denied"]
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["error"]["code"], -31001);
    assert_eq!(v[1]["error"]["code"], -31003);
    assert_eq!(v[1]["error"]["data"]["decision"], "approval_denied");
    let r = awaiting
        .conclude(&head, &[Answer::Unavailable("timeout".into())], &env)
        .0
        .unwrap_err();
    assert!(r.body.contains("approval_unavailable"));
    // The one unit is taken while approval is pending: a second call is rate limited before asking.
    let one = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"c"}}"#;
    assert_eq!(
        code(&super::check_body(&p, &head, one, &env).outcome),
        (200, -31002)
    );
    // Given back (approval not granted), the unit is available again.
    Limiter {
        store: &store,
        max_tracked: p.identity.max_tracked,
        hold_secs: p.hold_secs(),
    }
    .release(&reservations);
    assert!(matches!(
        super::check_body(&p, &head, one, &env).outcome,
        Outcome::Approve { .. }
    ));
}

#[test]
fn a_refused_charge_is_pinned_on_the_call_that_made_it() {
    // Three charged calls in a batch; the third's second limit is spent: the reply names that call.
    let p = parse(
        br#"{"version":"1","tools":{"a":{"rate_limit":"5/minute"},
        "b":{"rate_limit":["5/minute",{"max":1,"window":"hour","scope":"global"}]},"c":{}}}"#,
    )
    .unwrap();
    let store = MemoryStore::default();
    init_store(&store).unwrap();
    let env = at_zero(&store);
    let head = Head::default();
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"c"}},
        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b"}},
        {"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"b"}}]"#;
    let Outcome::Reply(r) = super::check_body(&p, &head, batch, &env).outcome else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let codes: Vec<i64> = (0..4)
        .map(|i| v[i]["error"]["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [-31001, -31001, -31001, -31002]);
    assert_eq!(v[3]["id"], 4);
    assert_eq!(v[3]["error"]["data"]["limit"], 1);
    assert_eq!(v[3]["error"]["data"]["window_seconds"], 3600);
    assert_eq!(
        v[3]["error"]["data"]["reason"],
        "rate limit of 1 calls per 3600s (global) reached"
    );
    // A store that cannot count (never set up): fail closed on the first charged call.
    let broken = MemoryStore::default();
    let env = Env {
        store: &broken,
        ..env
    };
    let Outcome::Reply(r) = super::check_body(&p, &head, batch, &env).outcome else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["error"]["code"], -31002);
    assert_eq!(v[0]["error"]["data"]["retry_after_seconds"], 1);
    assert!(v[0]["error"]["data"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("rate-limit state unavailable"));
}

#[test]
fn what_waits_for_approval_is_kept_without_the_body() {
    let p = parse(
        br#"{"version":"1","approval":{"cluster":"a"},"tools":{"c":{"action":"require_approval"},"g":{}}}"#,
    )
    .unwrap();
    let store = MemoryStore::default();
    let env = at_zero(&store);
    let head = Head {
        identity: "s1".into(),
        ..Head::default()
    };
    let batch = br#"[{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"c","arguments":{"k":[1, 2]}}},
                    {"jsonrpc":"2.0","method":"notifications/initialized"},
                    {"jsonrpc":"2.0","id":7,"result":{}}]"#
        .to_vec();
    let Outcome::Approve { awaiting, .. } = super::check_body(&p, &head, &batch, &env).outcome
    else {
        panic!()
    };
    drop(batch);
    let yes = Answer::Granted {
        remember_secs: Some(60),
    };
    let (ok, events) = awaiting.conclude(&head, &[yes], &env);
    assert_eq!(ok, Ok(()));
    assert_eq!(
        events.iter().map(|e| e.decision).collect::<Vec<_>>(),
        vec!["approval_granted", "allow"]
    );
    let line: serde_json::Value = serde_json::from_str(&events[0].audit).unwrap();
    assert_eq!(line["jsonrpc_id"], "x");
    assert_eq!(line["tool"], "c");
    assert_eq!(
        line["args_sha256"],
        crate::sha256::hex_digest(br#"{"k":[1, 2]}"#)
    );
    // No answer recorded for an ask: unavailable.
    let (r, _) = awaiting.conclude(&head, &[], &env);
    assert!(r.unwrap_err().body.contains("no answer was recorded"));
    // The CLI's one-call form checks, then concludes.
    let (r, events) = conclude(
        &p,
        &head,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"c"}}"#,
        &[Answer::Denied("no".into())],
        &env,
    );
    assert!(r.unwrap_err().body.contains("approval_denied"));
    assert_eq!(events[0].decision, "approval_denied");
    let (r, events) = conclude(&p, &head, GET_G, &[], &env);
    assert_eq!((r, events[0].decision), (Ok(()), Label::Allow));
}

/// The clock at 0, audit lines on.
fn at_zero(store: &MemoryStore) -> Env<'_, MemoryStore> {
    Env {
        store,
        now_nanos: 0,
        audit: true,
    }
}

const GET_G: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"g"}}"#;

#[test]
fn events_and_summary() {
    let p = parse(br#"{"version":"1","tools":{"get_run":{}}}"#).unwrap();
    let store = MemoryStore::default();
    let env = Env {
        store: &store,
        now_nanos: 1_700_000_000_000_000_000,
        audit: true,
    };
    let head = Head {
        identity: "s1".into(),
        request_id: Some("r-1".into()),
        ..Head::default()
    };
    let c = super::check_body(&p, &head, br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_run","arguments":{"secret":"x"}}}"#, &env);
    assert_eq!(
        c.summary,
        Summary {
            methods: "tools/call".into(),
            tools: "delete_run".into(),
            tools_list_id: None
        }
    );
    assert_eq!(c.events.len(), 1);
    let e = &c.events[0];
    assert_eq!(
        (e.decision.as_str(), e.method.as_str(), e.tool.as_deref()),
        ("deny", "tools/call", Some("delete_run"))
    );
    let line: serde_json::Value = serde_json::from_str(&e.audit).unwrap();
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["jsonrpc_id"], 3);
    assert_eq!(line["request_id"], "r-1");
    assert!(
        !e.audit.contains("secret"),
        "arguments never in clear: {}",
        e.audit
    );
    assert_eq!(line["args_sha256"].as_str().unwrap().len(), 64);
    let c = super::check_body(&p, &head, b"{", &env);
    assert_eq!(c.events[0].decision, "invalid");
    let c = super::check_body(&p, &head, br#"[{"jsonrpc":"2.0","id":"L","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":9,"result":{}}]"#, &env);
    assert_eq!(c.summary.methods, "tools/list,notifications/initialized");
    assert_eq!(c.summary.tools_list_id.as_deref(), Some("\"L\""));
    assert_eq!(
        c.events.iter().map(|e| e.decision).collect::<Vec<_>>(),
        vec!["allow", "allow"]
    );
}

#[test]
fn audit_mode_forwards_and_says_would() {
    let p = parse(br#"{"version":"1","mode":"audit","approval":{"cluster":"a"},"tools":{"r":{"rate_limit":"1/hour"},"a":{"action":"require_approval"}}}"#).unwrap();
    let store = MemoryStore::default();
    init_store(&store).unwrap();
    let env = Env {
        store: &store,
        now_nanos: 0,
        audit: true,
    };
    let head = Head {
        identity: "s".into(),
        ..Head::default()
    };
    let call = |name: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
    };
    let run = |name: &str| super::check_body(&p, &head, call(name).as_bytes(), &env);
    let c = run("x");
    assert!(matches!(c.outcome, Outcome::Forward(_)));
    assert_eq!(c.events[0].decision, "would_deny");
    assert_eq!(run("r").events[0].decision, "allow");
    let c = run("r");
    assert!(matches!(c.outcome, Outcome::Forward(_)));
    assert_eq!(c.events[0].decision, "would_rate_limit");
    let c = run("a");
    assert!(matches!(c.outcome, Outcome::Forward(_)));
    assert_eq!(c.events[0].decision, "would_require_approval");
}

#[test]
fn prompt_and_resource_denials_name_their_target() {
    let p = parse(br#"{"version":"1","prompts":{"secret":{"action":"deny","reason":"private"}},"resources_default":"deny"}"#).unwrap();
    let head = Head::default();
    let body = |b: &[u8]| match check_body(&p, &head, b) {
        Outcome::Reply(r) => serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
        other => panic!("{other:?}"),
    };
    let v = body(br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret"}}"#);
    assert_eq!(v["error"]["code"], -31001);
    assert_eq!(
        v["error"]["data"],
        serde_json::json!({"prompt":"secret","decision":"deny","reason":"private"})
    );
    assert_eq!(
        v["error"]["message"],
        "Prompt 'secret' denied by policy: private"
    );
    let v = body(br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#);
    assert_eq!(v["error"]["data"]["resource"], "file:///etc/passwd");
    assert_eq!(
        check_body(
            &p,
            &head,
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ok"}}"#
        ),
        Outcome::Forward(vec![])
    );
}

#[test]
fn mcp_headers_must_match() {
    let p = policy();
    let head = |m: Option<&str>, n: Option<&str>| Head {
        mcp_method: m.map(Into::into),
        mcp_name: n.map(Into::into),
        ..Head::default()
    };
    assert_eq!(
        check_body(&p, &head(Some("tools/call"), Some("get_run")), GET),
        Outcome::Forward(vec![])
    );
    assert_eq!(
        code(&check_body(&p, &head(Some("tools/list"), None), GET)),
        (400, -32020)
    );
    assert_eq!(
        code(&check_body(&p, &head(None, Some("get_runs")), GET)),
        (400, -32020)
    );
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    assert_eq!(
        code(&check_body(&p, &head(Some("ping"), None), batch)),
        (400, -32020)
    );
    // A header on two lines: the first agrees with the body, but a server may read the other one.
    let repeated = Head {
        repeated_mcp_header: Some("mcp-name"),
        ..head(Some("tools/call"), Some("get_run"))
    };
    let Outcome::Reply(r) = check_body(&p, &repeated, GET) else {
        panic!("a repeated Mcp-Name header must be refused")
    };
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .starts_with(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"#),
        "{}",
        r.body
    );
    assert!(r
        .body
        .contains("mcp-name is sent on more than one header line"));
    let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p1"}}"#;
    assert_eq!(
        check_body(&p, &head(Some("prompts/get"), Some("p1")), prompt),
        Outcome::Forward(vec![])
    );
    let res = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
    assert_eq!(
        code(&check_body(&p, &head(None, Some("file:///b")), res)),
        (400, -32020)
    );
}

/// Issue 17: a control character in a method or a name is a JSON-RPC error (HTTP 400, the id echoed), never
/// forwarded, and nothing is exported from such a body (no header value Envoy would refuse).
#[test]
fn control_characters_in_methods_and_names_are_json_rpc_errors() {
    let p = parse(br#"{"version":"1","default":"allow"}"#).unwrap();
    let store = MemoryStore::default();
    for (body, want) in [
        (&b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tool\x7f/call\",\"params\":{\"name\":\"search_runs\",\"arguments\":{}}}"[..], -32600),
        (b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x\x7fy\",\"params\":{}}", -32600),
        (b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"get\x7frun\",\"arguments\":{}}}", -32602),
        (br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\u0001run","arguments":{}}}"#, -32602),
    ] {
        let checked = super::check_body(
            &p,
            &Head::default(),
            body,
            &Env {
                store: &store,
                now_nanos: 0,
                audit: true,
            },
        );
        assert_eq!(code(&checked.outcome), (400, want), "{}", String::from_utf8_lossy(body));
        let Outcome::Reply(r) = &checked.outcome else { unreachable!() };
        assert!(r.body.starts_with(r#"{"jsonrpc":"2.0","id":3,"error":"#), "{}", r.body);
        assert_eq!(checked.summary, Summary::default(), "nothing to export");
    }
}
