//! A rule's `rate_limit`: one limit or a non-empty list; a limit is `"N/second"` … `"N/day"` or an object
//! (`max`, `window`, `scope`, `cost`). Each limit gets an id, stable across reloads of the same policy, that
//! names its counters in shared data.

use super::condition::arg_path;
use super::errors::{kind, Errs};
use super::fields::{open, LIMIT};
use crate::limits::{fnv1a, LimitSpec};
use crate::policy::RateLimit;
use serde_json::Value;

const LIMIT_FIX: &str = "write \"N/second\", \"N/minute\", \"N/hour\", \"N/day\", or {\"max\": N, \"window\": SECONDS or \"minute\"}";

/// The valid limits of the `rate_limit` value `v` at `path`, of the rule `key` in the set at `section`.
pub(super) fn parse(
    errs: &mut Errs,
    path: &str,
    section: &str,
    key: &str,
    v: &Value,
) -> Vec<RateLimit> {
    let mut limits = Vec::new();
    match v {
        Value::Array(list) if !list.is_empty() => {
            for (i, l) in list.iter().enumerate() {
                if let Some(l) = parse_limit(errs, &format!("{path}[{i}]"), section, key, i, l) {
                    limits.push(l);
                }
            }
        }
        Value::Array(_) => errs.push(
            path,
            "empty list of limits",
            "remove `rate_limit` or add a limit such as \"10/minute\"",
        ),
        l => {
            if let Some(l) = parse_limit(errs, path, section, key, 0, l) {
                limits.push(l);
            }
        }
    }
    limits
}

fn window_secs(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().filter(|n| *n > 0),
        Value::String(s) => unit_secs(s),
        _ => None,
    }
}

fn unit_secs(s: &str) -> Option<u64> {
    match s {
        "second" => Some(1),
        "minute" => Some(60),
        "hour" => Some(3_600),
        "day" => Some(86_400),
        _ => None,
    }
}

/// The limit at `index` of the list (0 for a single limit).
fn parse_limit(
    errs: &mut Errs,
    path: &str,
    section: &str,
    key: &str,
    index: usize,
    v: &Value,
) -> Option<RateLimit> {
    let before = errs.count();
    let (max, window, global, cost) = match v {
        Value::String(s) => {
            let parsed = s
                .split_once('/')
                .and_then(|(n, u)| Some((n.trim().parse::<u64>().ok()?, unit_secs(u.trim())?)));
            match parsed {
                Some((n, w)) if n > 0 => (n, w, false, None),
                _ => {
                    errs.push(path, format!("invalid rate limit \"{s}\""), LIMIT_FIX);
                    return None;
                }
            }
        }
        Value::Object(map) => {
            let o = open(errs, path, map, &LIMIT);
            let max = match o.get("max") {
                Some(m) => match m.as_u64().filter(|n| *n > 0) {
                    Some(n) => n,
                    None => {
                        errs.push(
                            &o.at("max"),
                            format!("expected a whole number above 0, got {m}"),
                            "set how many calls (or cost units) a window allows, e.g. 10",
                        );
                        0
                    }
                },
                None => {
                    errs.push(&o.at("max"), "missing required field", "add \"max\": N");
                    0
                }
            };
            let window = match o.get("window") {
                Some(w) => match window_secs(w) {
                    Some(n) => n,
                    None => {
                        errs.push(&o.at("window"), format!("invalid window {w}"), "use whole seconds above 0, or \"second\", \"minute\", \"hour\", \"day\"");
                        0
                    }
                },
                None => {
                    errs.push(
                        &o.at("window"),
                        "missing required field",
                        "add \"window\": 60 (seconds) or \"minute\"",
                    );
                    0
                }
            };
            let global = match o.get("scope").map(|s| (s, s.as_str())) {
                None | Some((_, Some("session"))) => false,
                Some((_, Some("global"))) => true,
                Some((s, _)) => {
                    errs.push(&o.at("scope"), format!("invalid scope {s}"), "use \"session\" (per identity, the default) or \"global\" (all callers together)");
                    false
                }
            };
            let cost = match o.get("cost") {
                None => None,
                Some(Value::String(p)) => match arg_path(p) {
                    Some(segs) => Some((p.clone(), segs)),
                    None => {
                        errs.push(
                            &o.at("cost"),
                            format!("invalid argument path \"{p}\""),
                            "name the argument holding the cost, e.g. \"args.amount\"",
                        );
                        None
                    }
                },
                Some(c) => {
                    errs.push(
                        &o.at("cost"),
                        format!("expected an argument path string, got {c}"),
                        "e.g. \"cost\": \"args.amount\"",
                    );
                    None
                }
            };
            (max, window, global, cost)
        }
        other => {
            errs.push(
                path,
                format!("expected a limit, got {}", kind(other)),
                LIMIT_FIX,
            );
            return None;
        }
    };
    if errs.count() != before {
        return None;
    }
    let scope = if global { "global" } else { "session" };
    let cost_path = cost.as_ref().map_or("", |(p, _)| p.as_str());
    // `section` is the set's JSON path: `tools` at the top level, so a set inside another object (a caller
    // profile) counts apart from the top-level one of the same name.
    let id = fnv1a(&[
        section.as_bytes(),
        key.as_bytes(),
        index.to_string().as_bytes(),
        max.to_string().as_bytes(),
        window.to_string().as_bytes(),
        scope.as_bytes(),
        cost_path.as_bytes(),
    ]);
    Some(RateLimit {
        spec: LimitSpec {
            id,
            max,
            window_secs: window,
            global,
        },
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};

    #[test]
    fn rate_limit_forms() {
        let p = ok(
            r#"{"version":"1","identity":{"headers":["X-Agent-Id","mcp-session-id"],"max_tracked":100},"tools":{
            "search_runs": {"rate_limit": {"max": 10, "window": 60}},
            "get_*": {"rate_limit": ["100/minute", "2000/day"]},
            "create_run": {"rate_limit": {"max": 50, "window": "hour", "scope": "global"}},
            "transfer_funds": {"rate_limit": {"max": 100000, "window": "day", "cost": "args.amount"}},
            "s": {"rate_limit": "5/second"}, "h": {"rate_limit": "1/hour"}}}"#,
        );
        let l = |k: &str| p.rule_for(k).unwrap().limits.clone();
        assert_eq!(
            (
                l("search_runs")[0].spec.max,
                l("search_runs")[0].spec.window_secs
            ),
            (10, 60)
        );
        assert_eq!(
            l("get_x")
                .iter()
                .map(|x| (x.spec.max, x.spec.window_secs))
                .collect::<Vec<_>>(),
            vec![(100, 60), (2000, 86_400)]
        );
        assert!(l("create_run")[0].spec.global);
        assert_eq!(l("create_run")[0].spec.window_secs, 3600);
        assert_eq!(
            l("transfer_funds")[0].cost.as_ref().unwrap().1,
            vec!["amount".to_string()]
        );
        assert_eq!(l("s")[0].spec.window_secs, 1);
        assert_eq!(p.identity.headers, vec!["x-agent-id", "mcp-session-id"]);
        assert_eq!(p.identity.max_tracked, 100);
        assert_eq!(p.hold_secs(), 86_400);
        assert!(p.has_limits());
        // Ids are stable and distinct.
        let again = ok(
            r#"{"version":"1","tools":{"search_runs": {"rate_limit": {"max": 10, "window": 60}}}}"#,
        );
        assert_eq!(
            again.rule_for("search_runs").unwrap().limits[0].spec.id,
            l("search_runs")[0].spec.id
        );
        assert_ne!(l("get_x")[0].spec.id, l("get_x")[1].spec.id);
        assert_eq!(l("search_runs")[0].describe(), "10 calls per 60s");
    }

    #[test]
    fn rate_limit_errors() {
        let e = |rl: &str| {
            one_error(&format!(
                r#"{{"version":"1","tools":{{"x":{{"rate_limit":{rl}}}}}}}"#
            ))
        };
        for (rl, path_end, text) in [
            (r#""10/fortnight""#, "rate_limit", "invalid rate limit"),
            (r#""0/minute""#, "rate_limit", "invalid rate limit"),
            (r#""ten/minute""#, "rate_limit", "invalid rate limit"),
            (r#"[]"#, "rate_limit", "empty list"),
            (r#"5"#, "rate_limit", "expected a limit"),
            (r#"{"window":60}"#, "max", "missing"),
            (r#"{"max":0,"window":60}"#, "max", "above 0"),
            (r#"{"max":1.5,"window":60}"#, "max", "above 0"),
            (r#"{"max":1}"#, "window", "missing"),
            (r#"{"max":1,"window":0}"#, "window", "invalid window"),
            (r#"{"max":1,"window":"week"}"#, "window", "invalid window"),
            (
                r#"{"max":1,"window":1,"scope":"user"}"#,
                "scope",
                "invalid scope",
            ),
            (
                r#"{"max":1,"window":1,"cost":"amount"}"#,
                "cost",
                "invalid argument path",
            ),
            (r#"{"max":1,"window":1,"cost":3}"#, "cost", "argument path"),
            (
                r#"{"max":1,"window":1,"burst":3}"#,
                "burst",
                "unknown field",
            ),
            (
                r#"["1/minute", "x"]"#,
                "rate_limit[1]",
                "invalid rate limit",
            ),
        ] {
            let err = e(rl);
            assert!(err.path.ends_with(path_end), "{rl}: {err}");
            assert!(err.message.contains(text), "{rl}: {err}");
        }
        let err =
            one_error(r#"{"version":"1","tools":{"x":{"action":"deny","rate_limit":"1/second"}}}"#);
        assert!(err.message.contains("no effect"));
    }
}
