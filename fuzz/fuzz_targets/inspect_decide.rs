//! Arbitrary bytes as a request body, against a fixed realistic policy (exact names, globs, every kind of
//! condition). Checks, beyond "never panics":
//! - `mcp::inspect` accepts only what `json::check_strict` accepts;
//! - `mcp::inspect` answers exactly as its previous implementation (`reference.rs`: a strict serde check,
//!   then serde reads of the envelope and params): the same messages, fields, errors and error messages,
//!   except that a body that is not strict JSON is compared by error kind (`reference::compare_inspect`);
//! - every reply mcp-policy writes is a JSON-RPC 2.0 error object;
//! - conditions and costs read the arguments only where they look (`engine::args_at`): every path of the
//!   policy leads there to what it leads to in the whole parsed arguments;
//! - differential against a lenient server: when a body is forwarded, every `tools/call` that a decoder
//!   matching keys case-insensitively (Go's `encoding/json`, used by Go MCP servers) would see in it is
//!   re-encoded canonically and must be forwarded too. A failure here is a policy bypass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::engine::args_at;
use mcp_policy::json::{check_strict, keys_collide};
use mcp_policy::limits::{init_store, memory::MemoryStore};
use mcp_policy::mcp::Kind;
use mcp_policy::policy::{self, lookup, Policy};
use mcp_policy::request::{check_body, Env, Head, Outcome};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

const POLICY: &str = r#"{
  "version": "1",
  "default": "deny",
  "max_body_bytes": 65536,
  "tools": {
    "get_run": {},
    "get_*": {"action": "allow"},
    "get_r*": {"action": "deny", "reason": "r-tools"},
    "g?t_ru?": {"action": "deny"},
    "delete_*": {"action": "deny", "reason": "Deleting MLflow data is not allowed for agents"},
    "*_run": {"action": "deny"},
    "search_runs": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 100}],
                    "reason": "Fetch at most 100 runs at once"},
    "search_experiments": {"conditions": [{"path": "args.max_results", "op": "lt", "value": 1000},
                                          {"path": "args.filter", "op": "exists", "value": false}]},
    "set_tag": {"conditions": [{"path": "args.key", "op": "not_in", "value": ["owner", "mlflow.user"]},
                               {"path": "args.value", "op": "regex", "value": "^[a-z0-9_-]{0,64}$"},
                               {"path": "args.run_id", "op": "neq", "value": "prod"}]},
    "log_metric": {"conditions": [{"path": "args.step", "op": "gte", "value": 0},
                                  {"path": "args.tags", "op": "contains", "value": "ok"},
                                  {"path": "args.scope.0", "op": "in", "value": ["dev", "test"]},
                                  {"path": "args.mode", "op": "eq", "value": 1}]},
    "list_*": {"conditions": [{"path": "args.limit", "op": "gt", "value": 0}]},
    "*": {"action": "deny", "reason": "catch-all"}
  }
}"#;

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| match policy::parse(POLICY.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("the fuzz policy must be valid: {e}"),
    })
}

/// A header set that names a specific call, to drive the Mcp-Method / Mcp-Name agreement checks too.
fn named_head() -> Head {
    Head {
        mcp_method: Some("tools/call".into()),
        mcp_name: Some("get_run".into()),
        ..Head::default()
    }
}

/// The value of the one key of `obj` that a case-insensitive decoder would bind to `field`.
fn lenient<'v>(obj: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    obj.get(field).or_else(|| {
        obj.iter()
            .find(|(k, _)| keys_collide(k, field))
            .map(|(_, v)| v)
    })
}

/// The tool calls a lenient server would execute, re-encoded as canonical request bodies.
fn lenient_calls(doc: &Value) -> Vec<Vec<u8>> {
    let msgs: Vec<&Value> = match doc {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut out = Vec::new();
    for m in msgs {
        let Some(obj) = m.as_object() else { continue };
        if lenient(obj, "method").and_then(Value::as_str) != Some("tools/call") {
            continue;
        }
        let Some(params) = lenient(obj, "params").and_then(Value::as_object) else {
            continue;
        };
        let Some(name) = lenient(params, "name").and_then(Value::as_str) else {
            continue;
        };
        let mut p = json!({"name": name});
        match lenient(params, "arguments") {
            None | Some(Value::Null) => {}
            Some(a @ Value::Object(_)) => {
                if let Some(o) = p.as_object_mut() {
                    o.insert("arguments".into(), a.clone());
                }
            }
            Some(_) => continue,
        }
        let canonical = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p});
        out.push(canonical.to_string().into_bytes());
    }
    out
}

/// Every condition and cost path of the policy finds the same in `args_at` of all of them as in the whole
/// arguments.
fn check_partial_arguments(p: &Policy, raw: &str) {
    let whole: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => panic!("inspect let through arguments serde_json cannot read ({e}): {raw}"),
    };
    let rules = p.view().set(Kind::Tool).rules();
    let paths: Vec<&[String]> = rules
        .iter()
        .flat_map(|r| {
            r.conditions.iter().map(|c| &c.segments[..]).chain(
                r.limits
                    .iter()
                    .filter_map(|l| Some(&l.cost.as_ref()?.1[..])),
            )
        })
        .collect();
    let partial = match args_at(raw, paths.iter().copied()) {
        Ok(v) => v,
        Err(e) => panic!("args_at failed ({e}) on {raw}"),
    };
    for path in paths {
        assert_eq!(
            lookup(Some(&partial), path),
            lookup(Some(&whole), path),
            "args_at differs at {path:?} in {raw}"
        );
    }
}

fn check_reply(outcome: &Outcome) {
    if let Outcome::Reply(r) = outcome {
        assert!((200..600).contains(&r.status), "status {}", r.status);
        let v: Value = match serde_json::from_str(&r.body) {
            Ok(v) => v,
            Err(e) => panic!("reply is not JSON ({e}): {}", r.body),
        };
        // One error object, or (for a batch) a non-empty array of them.
        let items = match &v {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        assert!(!items.is_empty(), "{}", r.body);
        for item in items {
            assert_eq!(
                item.get("jsonrpc").and_then(Value::as_str),
                Some("2.0"),
                "{}",
                r.body
            );
            assert!(
                item.get("error")
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_i64)
                    .is_some(),
                "{}",
                r.body
            );
        }
    }
}

/// One request against a fresh rate-limit store.
fn decide(p: &Policy, head: &Head, body: &[u8]) -> Outcome {
    let store = MemoryStore::default();
    if let Err(e) = init_store(&store) {
        panic!("memory store: {e}");
    }
    check_body(
        p,
        head,
        body,
        &Env {
            store: &store,
            now_nanos: 1_700_000_000_000_000_000,
            audit: true,
        },
    )
    .outcome
}

#[path = "reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let p = policy();
    if let Err(e) = reference::compare_inspect(data) {
        panic!("inspect differs from its previous implementation: {e}");
    }
    let inspected = mcp_policy::mcp::inspect(data);
    if let Ok(body) = &inspected {
        assert!(
            check_strict(data).is_ok(),
            "inspect accepted a body check_strict refuses"
        );
        assert!(!body.messages.is_empty());
        for m in &body.messages {
            let _ = m.target_name();
            if let Some(args) = m.call().and_then(|c| c.arguments) {
                check_partial_arguments(p, args.get());
            }
        }
    }

    let outcome = decide(p, &Head::default(), data);
    check_reply(&outcome);
    if matches!(outcome, Outcome::Forward(_)) {
        assert!(inspected.is_ok(), "forwarded a body that inspect refuses");
        let doc: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => panic!("forwarded a body serde_json cannot read: {e}"),
        };
        for canonical in lenient_calls(&doc) {
            let again = decide(p, &Head::default(), &canonical);
            assert!(
                matches!(again, Outcome::Forward(_)),
                "bypass: forwarded {:?}, but a case-insensitive server would run {:?}, which is denied: {:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(&canonical),
                again
            );
        }
    }

    check_reply(&decide(p, &named_head(), data));
});
