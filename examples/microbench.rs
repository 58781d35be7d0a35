//! Native microbenchmark of the pure core on the `make bench` payloads: inspect + decide (+ rate-limit
//! counting over the in-memory store), the same work the filter does per request minus the host calls; then
//! the filter's whole request path (`flow::Flow`'s callbacks) over a host that answers from memory; then what
//! caller-aware rules add at the request headers (reading the caller, choosing its profile).
//!
//!     cargo run --release --example microbench
//!     MICROBENCH_COUNT=20000 valgrind --tool=callgrind target/release/examples/microbench   # instructions
//!
//! `MICROBENCH_POLICY` names another policy than bench/policy.json.
//!
//! Prints ns per call and MB/s (median of several timed batches).

use mcp_policy::caller;
use mcp_policy::flow::{self, Counter, Flow, Host};
use mcp_policy::header_map::{self, HeaderMap};
use mcp_policy::limits::{init_store, memory::MemoryStore};
use mcp_policy::request::{check_body, Env, Event, Head, Outcome};
use mcp_policy::{mcp, policy};
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A host that answers at once from memory (copies, as Envoy's host calls hand over copies): what is left of
/// a request's cost in the filter once the host calls themselves are taken out.
struct MemoryHost {
    headers: Vec<u8>,
    body: Vec<u8>,
    audit: bool,
    store: MemoryStore,
    /// A tools/list answer (`application/json`, status 200) for the response callbacks; without one the
    /// response headers all read "200" and the body is empty.
    answer: Option<Vec<u8>>,
}

impl Host for MemoryHost {
    type Store = MemoryStore;
    fn request_headers(&mut self) -> Option<HeaderMap> {
        HeaderMap::parse(self.headers.clone())
    }
    fn property(&mut self, _: &[&str]) -> Option<Vec<u8>> {
        Some(b"127.0.0.1:50000".to_vec())
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        black_box((name, value));
    }
    fn request_body(&mut self, size: usize) -> Result<Option<Vec<u8>>, String> {
        Ok(self.body.get(..size).map(<[u8]>::to_vec))
    }
    fn send_reply(&mut self, _: u32, _: &[(&str, &str)], body: &[u8]) -> Result<(), String> {
        black_box(body);
        Ok(())
    }
    fn reset_request(&mut self) {}
    fn resume_request(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn http_callout(
        &mut self,
        _: &str,
        _: &[(&str, &str)],
        _: &[u8],
        _: Duration,
    ) -> Result<u32, String> {
        Err("no callouts here".into())
    }
    fn callout_response(&mut self, _: usize) -> (Option<u32>, Vec<u8>) {
        (None, Vec::new())
    }
    fn grpc_callout(
        &mut self,
        _: &str,
        _: &str,
        _: &str,
        _: &[u8],
        _: Duration,
    ) -> Result<u32, String> {
        Err("no callouts here".into())
    }
    fn grpc_response(&mut self, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn response_header(&mut self, name: &str) -> Option<String> {
        match (&self.answer, name) {
            (None, _) | (Some(_), ":status") => Some("200".into()),
            (Some(_), "content-type") => Some("application/json".into()),
            (Some(_), _) => None,
        }
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        black_box((name, value));
    }
    fn response_body(&mut self, size: usize) -> Vec<u8> {
        self.answer
            .as_ref()
            .and_then(|a| a.get(..size))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
    fn set_response_body(&mut self, _: usize, body: &[u8]) -> Result<(), String> {
        black_box(body);
        Ok(())
    }
    fn reset_response(&mut self) {}
    fn now_nanos(&mut self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn audit_enabled(&mut self) -> bool {
        self.audit
    }
    fn store(&self) -> &MemoryStore {
        &self.store
    }
    fn record(&mut self, event: &Event) {
        black_box(event);
    }
    fn count(&mut self, counter: Counter) {
        black_box(counter);
    }
    fn log(&mut self, _: log::Level, message: &str) {
        black_box(message);
    }
}

impl MemoryHost {
    /// A host holding one request: the headers an MCP client sends (as in `make bench`) and `body`.
    fn request(body: &[u8]) -> Self {
        let len = body.len().to_string();
        let headers = header_map::serialise(&[
            (":authority", b"127.0.0.1:10000"),
            (":path", b"/mcp"),
            (":method", b"POST"),
            (":scheme", b"http"),
            ("content-type", b"application/json"),
            ("accept", b"application/json, text/event-stream"),
            ("mcp-session-id", b"session-1"),
            ("content-length", len.as_bytes()),
            ("user-agent", b"python-httpx/0.28.1"),
            ("x-request-id", b"0b5f3c2e-1d4a-4b8e-9f00-123456789abc"),
        ]);
        let host = MemoryHost {
            headers,
            body: body.to_vec(),
            audit: false,
            store: MemoryStore::default(),
            answer: None,
        };
        let _ = init_store(&host.store);
        host
    }
}

/// One request through the filter's callbacks, as Envoy calls them: headers, body, response headers, done.
fn one_request(policy: &Rc<policy::Policy>, host: &mut MemoryHost, len: usize) {
    let mut f = Flow::new(Some(policy.clone()));
    black_box(f.on_request_headers(host, false));
    black_box(f.on_request_body(host, len, true));
    black_box(f.on_response_headers(host));
    f.on_done(host);
}

/// A tools/list request through the filter's callbacks, its answer (`answer_len` bytes, held whole) filtered.
fn one_list_request(
    policy: &Rc<policy::Policy>,
    host: &mut MemoryHost,
    len: usize,
    answer_len: usize,
) {
    let mut f = Flow::new(Some(policy.clone()));
    black_box(f.on_request_headers(host, false));
    black_box(f.on_request_body(host, len, true));
    black_box(f.on_response_headers(host));
    black_box(f.on_response_body(host, answer_len, true));
    f.on_done(host);
}

/// The answer a tools/list benchmark filters: `MICROBENCH_ANSWER` (e.g. `make bench`'s
/// bench/.work/resp-tools-list.json) or the MLflow server's 40 tools (~25 KB).
fn list_answer() -> Option<Vec<u8>> {
    let path = std::env::var("MICROBENCH_ANSWER")
        .unwrap_or_else(|_| "tests/fixtures/mlflow-mcp-0.4.1.tools-list.json".into());
    std::fs::read(path).ok()
}

const LIST_REQUEST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

/// `MICROBENCH_COUNT=N MICROBENCH_CASE=list`: the tools/list answer filtered (`flow::filter_list_answer`) N
/// times; `MICROBENCH_CASE=list_flow`: a tools/list request and its answer through the filter's callbacks N
/// times. Untimed, for instruction counts.
fn count_list(policy: policy::Policy, n: u64, through_flow: bool) {
    let Some(answer) = list_answer() else {
        eprintln!("no tools/list answer to filter");
        std::process::exit(1);
    };
    let policy = Rc::new(policy);
    if through_flow {
        let mut host = MemoryHost::request(LIST_REQUEST);
        let answer_len = answer.len();
        host.answer = Some(answer);
        for _ in 0..n {
            one_list_request(&policy, &mut host, LIST_REQUEST.len(), answer_len);
        }
        println!("{n} tools/list requests and {answer_len}-byte answers through flow::Flow");
    } else {
        let plan = flow::plan_list_answer(Some("application/json"), None);
        let mut kept = 0;
        for _ in 0..n {
            let out =
                flow::filter_list_answer(&*policy, "1", &plan, black_box(&answer), &mut Vec::new());
            kept = out.len();
        }
        println!(
            "{n} tools/list answers filtered: {} -> {kept} bytes",
            answer.len()
        );
    }
}

/// `MICROBENCH_COUNT=N`: only the small allowed call through the filter's callbacks, N times, untimed: for
/// instruction counts (`valgrind --tool=callgrind`), which a busy machine does not disturb.
fn count_only(policy: policy::Policy, n: u64) {
    let policy = Rc::new(policy);
    let body = call("get_run", r#"{"run_id":"4f1c0a9e5d6b4c3a"}"#);
    let mut host = MemoryHost::request(&body);
    for _ in 0..n {
        one_request(&policy, &mut host, body.len());
    }
    println!("{n} small allowed calls through flow::Flow");
}

fn call(name: &str, args: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#)
        .into_bytes()
}

fn blob_args(bytes: usize) -> String {
    // Realistic-ish JSON: many small fields rather than one long string.
    let mut s = String::from(r#"{"run_id":"4f1c0a9e","limit":10,"rows":["#);
    let row = r#"{"k":"metric_name","v":0.123456789,"step":12,"tags":["a","b"]},"#;
    while s.len() + row.len() < bytes {
        s.push_str(row);
    }
    s.pop();
    s.push_str("]}");
    s
}

fn main() {
    let path = std::env::var("MICROBENCH_POLICY").unwrap_or_else(|_| "bench/policy.json".into());
    let policy_text = std::fs::read(path).unwrap_or_else(|_| {
        br#"{"version":"1","default":"deny","tools":{"get_*":{},"query_runs":{"conditions":[{"path":"args.limit","op":"lte","value":100}]}}}"#.to_vec()
    });
    let policy = match policy::parse(&policy_text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    if let Some(n) = std::env::var("MICROBENCH_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        return match std::env::var("MICROBENCH_CASE").as_deref() {
            Ok("list") => count_list(policy, n, false),
            Ok("list_flow") => count_list(policy, n, true),
            _ => count_only(policy, n),
        };
    }
    let store = MemoryStore::default();
    let _ = init_store(&store);
    let head = Head {
        identity: "session-1".into(),
        ..Head::default()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "tools/call allowed, small",
            call("get_run", r#"{"run_id":"4f1c0a9e5d6b4c3a"}"#),
        ),
        (
            "tools/call denied",
            call("delete_run", r#"{"run_id":"4f1c0a9e5d6b4c3a"}"#),
        ),
        (
            "tools/call + condition, 8 KB",
            call("query_runs", &blob_args(8 * 1024)),
        ),
        (
            "tools/call allowed, 256 KB",
            call("get_run", &blob_args(256 * 1024)),
        ),
        (
            "tools/call allowed, 1 MiB",
            call("get_run", &blob_args(1024 * 1024 - 200)),
        ),
        (
            "tools/list request",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#.to_vec(),
        ),
    ];
    // Warm-up: run every case for a while first, so that a JIT (V8, when this runs as wasm) has tiered up
    // before anything is timed.
    let warm = Instant::now();
    while warm.elapsed().as_millis() < 300 {
        for (_, body) in &cases {
            let env = Env {
                store: &store,
                now_nanos: 1_700_000_000_000_000_000,
                audit: false,
            };
            black_box(check_body(&policy, &head, black_box(body), &env));
        }
    }
    for audit in [false, true] {
        println!(
            "\naudit lines {}",
            if audit {
                "on (Envoy log level info or lower)"
            } else {
                "off"
            }
        );
        header();
        for (name, body) in &cases {
            let env = Env {
                store: &store,
                now_nanos: 1_700_000_000_000_000_000,
                audit,
            };
            row(name, body.len(), || {
                let c = check_body(&policy, &head, black_box(body), &env);
                if let Outcome::Reply(r) = &c.outcome {
                    black_box(r);
                }
                black_box(c);
            });
        }
    }
    // The response side: a tools/list answer (the MLflow server's 40 tools, ~25 KB) filtered by the policy.
    if let Some(answer) = list_answer() {
        println!("\ntools/list answer filtered (flow::filter_list_answer)");
        header();
        let plan = flow::plan_list_answer(Some("application/json"), None);
        row("tools/list answer, 40 tools", answer.len(), || {
            black_box(flow::filter_list_answer(
                &policy,
                "1",
                &plan,
                black_box(&answer),
                &mut Vec::new(),
            ));
        });
        // The same answer under a policy that pins all 40 tools: each listed tool hashed (RFC 8785, SHA-256).
        #[derive(serde::Deserialize)]
        struct Answer {
            result: Tools,
        }
        #[derive(serde::Deserialize)]
        struct Tools {
            tools: Vec<Box<serde_json::value::RawValue>>,
        }
        if let Ok(a) = serde_json::from_slice::<Answer>(&answer) {
            let pins: serde_json::Map<String, serde_json::Value> = a
                .result
                .tools
                .iter()
                .filter_map(|t| {
                    let tool: serde_json::Value = serde_json::from_str(t.get()).ok()?;
                    let name = tool.get("name")?.as_str()?.to_owned();
                    Some((name, mcp_policy::pins::tool_pin(t.get()).ok()?.into()))
                })
                .collect();
            let text =
                serde_json::json!({"version": "1", "default": "allow", "pins": {"tools": pins}});
            if let Ok(pinned) = policy::parse(text.to_string().as_bytes()) {
                row(
                    "tools/list answer, 40 tools, all pinned",
                    answer.len(),
                    || {
                        black_box(flow::filter_list_answer(
                            &pinned,
                            "1",
                            &plan,
                            black_box(&answer),
                            &mut Vec::new(),
                        ));
                    },
                );
            }
        }
        list_split(&policy, &answer);
    }
    // The filter's request path: headers, body, response headers, done, as Envoy calls them.
    let policy = Rc::new(policy);
    println!(
        "\nthe filter's callbacks (flow::Flow over a host answering from memory), audit lines off"
    );
    header();
    for (name, body) in &cases {
        let mut host = MemoryHost::request(body);
        row(name, body.len(), || {
            one_request(&policy, &mut host, body.len())
        });
    }
    callers();
    // The parse step alone: mcp::inspect (the strict JSON check and the envelope), without the decision.
    println!("\nmcp::inspect alone");
    header();
    for (name, body) in &cases {
        row(name, body.len(), || {
            let _ = black_box(mcp::inspect(black_box(body)));
        });
    }
}

/// The tools/list answer's filtering taken apart (issue 16): each pass over the answer alone, the policy's
/// decision for each listed tool, and the whole response path through the filter's callbacks.
fn list_split(policy: &policy::Policy, answer: &[u8]) {
    println!("\ntools/list answer taken apart (the passes filter_list_answer makes, each alone)");
    header();
    row("UTF-8 check (str::from_utf8)", answer.len(), || {
        black_box(std::str::from_utf8(black_box(answer)).is_ok());
    });
    row("serde_json validation (RawValue)", answer.len(), || {
        if let Ok(text) = std::str::from_utf8(answer) {
            black_box(
                serde_json::from_str::<&serde_json::value::RawValue>(black_box(text)).is_ok(),
            );
        }
    });
    row("strict scanner (json::check_strict)", answer.len(), || {
        black_box(mcp_policy::json::check_strict(black_box(answer)).is_ok());
    });
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| {
            let tools = v.get("result")?.get("tools")?.as_array()?.clone();
            Some(
                tools
                    .iter()
                    .filter_map(|t| Some(t.get("name")?.as_str()?.to_owned()))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let view = policy.view();
    let kept = names.iter().filter(|n| view.is_listed(n)).count();
    row(
        &format!("is_listed x {} ({kept} kept)", names.len()),
        0,
        || {
            for n in &names {
                black_box(view.is_listed(black_box(n)));
            }
        },
    );
    row("copy of the answer (to_vec)", answer.len(), || {
        black_box(black_box(answer).to_vec());
    });
    let policy = Rc::new(policy.clone());
    let mut host = MemoryHost::request(LIST_REQUEST);
    host.answer = Some(answer.to_vec());
    row(
        "tools/list request + answer, flow::Flow",
        answer.len(),
        || one_list_request(&policy, &mut host, LIST_REQUEST.len(), answer.len()),
    );
}

/// What a policy with `callers` and three profiles adds at the request headers, without the host calls: the
/// caller read from properties answered from memory (subject, a two-item groups list in Envoy's pair
/// serialization, no certificate), and the profile chosen (the caller matches the third).
fn callers() {
    let text = std::env::var("BENCH_POLICY_PROFILES")
        .ok()
        .and_then(|f| std::fs::read(f).ok())
        .unwrap_or_else(|| {
            br#"{"version":"1","tools":{"get_*":{}},
              "callers":{"jwt":{"metadata":"jwt_payload","subject":"sub","groups":"groups"},"peer_certificate":true},
              "profiles":[{"name":"ml-admins","match":{"groups":["ml-admins","ml-owners"]},"tools":{"delete_run":{}}},
                          {"name":"ci","match":{"principal":"spiffe://cluster.local/ns/ci/sa/*"}},
                          {"name":"agents","match":{"groups":["bench-agents"],"subject":"bench-*"},"tools":{"compare_runs":{}}}]}"#
                .to_vec()
        });
    let Ok(p) = policy::parse(&text) else {
        println!(
            "
(caller profiles: the policy did not parse)"
        );
        return;
    };
    let Some(callers) = p.callers.as_ref() else {
        println!(
            "
(caller profiles: the policy has no callers)"
        );
        return;
    };
    let groups: &[u8] = b"\x02\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00readers\x00\x00bench-agents\x00\x00";
    let read = |path: &[&str]| -> Option<Vec<u8>> {
        match path.last().copied() {
            Some("sub") => Some(b"bench-agent".to_vec()),
            Some("groups") => Some(groups.to_vec()),
            _ => None,
        }
    };
    println!(
        "
caller profiles (what the request headers step adds for a policy with callers, host calls aside)"
    );
    header();
    row("caller::read (sub, groups)", 0, || {
        black_box(caller::read(callers, read).ok());
    });
    let Ok(c) = caller::read(callers, read) else {
        return;
    };
    row("profile lookup (3rd of 3)", 0, || {
        let v = black_box(&p).for_caller(black_box(&c));
        black_box(v.profile);
    });
    row("read + lookup + view", 0, || {
        if let Ok(c) = caller::read(callers, read) {
            let v = p.for_caller(&c);
            black_box(v.rule_for("get_run"));
        }
    });
}

fn header() {
    println!(
        "{:<32} {:>10} {:>12} {:>10}",
        "payload", "bytes", "ns/call", "MB/s"
    );
}

/// Calibrates to ~50 ms per batch and prints the median of 7 batches.
fn row(name: &str, bytes: usize, mut f: impl FnMut()) {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_millis() < 20 {
        f();
        n += 1;
    }
    let per_batch = (n * 50 / 20).max(1);
    let mut samples: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let ns = samples.get(3).copied().unwrap_or(f64::NAN);
    let mbps = bytes as f64 / ns * 1e9 / 1e6;
    println!("{:<32} {:>10} {:>12.0} {:>10.0}", name, bytes, ns, mbps);
}
