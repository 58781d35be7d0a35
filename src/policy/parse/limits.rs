//! A rule's `rate_limit`: one limit or a non-empty list; a limit is `"N/second"` … `"N/day"` or an object
//! (`max`, `window`, `scope`, `cost`). Each limit gets an id, stable across reloads of the same policy, that
//! names its counters in shared data. Without `scope`, a limit counts per caller when the policy has `callers`
//! (a client opens a new MCP session at will, so sessions are no basis for a budget), else per session.

use super::condition::arg_path;
use super::errors::{kind, Errs};
use super::fields::{open, LIMIT};
use crate::limits::{fnv1a, LimitSpec, Scope};
use crate::policy::RateLimit;
use serde_json::Value;

/// What a limit's `scope` is when absent, and whether `"caller"` may be written (only with `callers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scopes {
    pub(super) default: Scope,
    pub(super) callers: bool,
}

impl Scopes {
    pub(super) fn new(callers: bool) -> Scopes {
        Scopes {
            default: if callers {
                Scope::Caller
            } else {
                Scope::Session
            },
            callers,
        }
    }
}

const LIMIT_FIX: &str = "write \"N/second\", \"N/minute\", \"N/hour\", \"N/day\", or {\"max\": N, \"window\": SECONDS or \"minute\"}";

/// Where a limit is: its JSON `path`, the rule `key` it belongs to, and `section`, the name its id is hashed
/// from (the set's JSON path at the top level; a profile's sets are named by the profile's name, so its
/// counts survive a reordering of the profiles).
pub(super) struct Place<'a> {
    pub(super) section: &'a str,
    pub(super) key: &'a str,
    pub(super) scopes: Scopes,
}

/// The valid limits of the `rate_limit` value `v` at `path`.
pub(super) fn parse(errs: &mut Errs, path: &str, place: &Place, v: &Value) -> Vec<RateLimit> {
    let mut limits = Vec::new();
    match v {
        Value::Array(list) if !list.is_empty() => {
            for (i, l) in list.iter().enumerate() {
                if let Some(l) = parse_limit(errs, &format!("{path}[{i}]"), place, i, l) {
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
            if let Some(l) = parse_limit(errs, path, place, 0, l) {
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
    place: &Place,
    index: usize,
    v: &Value,
) -> Option<RateLimit> {
    let before = errs.count();
    let (max, window, scope, cost) = match v {
        Value::String(s) => {
            let parsed = s
                .split_once('/')
                .and_then(|(n, u)| Some((n.trim().parse::<u64>().ok()?, unit_secs(u.trim())?)));
            match parsed {
                Some((n, w)) if n > 0 => (n, w, place.scopes.default, None),
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
            let scope = match o.get("scope").map(|s| (s, s.as_str())) {
                None => place.scopes.default,
                Some((_, Some("session"))) => Scope::Session,
                Some((_, Some("global"))) => Scope::Global,
                Some((_, Some("caller"))) if place.scopes.callers => Scope::Caller,
                Some((_, Some("caller"))) => {
                    errs.push(
                        &o.at("scope"),
                        "scope \"caller\" needs a `callers` section saying who the caller is",
                        "add \"callers\": {\"jwt\": {\"metadata\": \"jwt_payload\"}} (or \"peer_certificate\": true), or use \"session\" or \"global\"",
                    );
                    Scope::Session
                }
                Some((s, _)) => {
                    errs.push(&o.at("scope"), format!("invalid scope {s}"), "use \"caller\" (per verified caller, the default with `callers`), \"session\" (per identity, the default without) or \"global\" (all callers together)");
                    Scope::Session
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
            (max, window, scope, cost)
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
    let cost_path = cost.as_ref().map_or("", |(p, _)| p.as_str());
    // `section` is `tools` (or `prompts`, `resources`) at the top level, so a set inside a caller profile
    // counts apart from the top-level one of the same name.
    let id = fnv1a(&[
        place.section.as_bytes(),
        place.key.as_bytes(),
        index.to_string().as_bytes(),
        max.to_string().as_bytes(),
        window.to_string().as_bytes(),
        scope.as_str().as_bytes(),
        cost_path.as_bytes(),
    ]);
    Some(RateLimit {
        spec: LimitSpec {
            id,
            max,
            window_secs: window,
            scope,
        },
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};
    use crate::limits::Scope;

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
        assert_eq!(l("create_run")[0].spec.scope, Scope::Global);
        assert_eq!(l("search_runs")[0].spec.scope, Scope::Session);
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

    /// With `callers`, a limit without `scope` counts per caller; `"caller"` needs `callers`; ids change with
    /// the scope, so switching scopes never inherits counts.
    #[test]
    fn scope_follows_callers() {
        let with = ok(
            r#"{"version":"1","callers":{"peer_certificate":true},"tools":{
            "a":{"rate_limit":"5/minute"},
            "b":{"rate_limit":{"max":5,"window":60}},
            "c":{"rate_limit":{"max":5,"window":60,"scope":"session"}},
            "d":{"rate_limit":{"max":5,"window":60,"scope":"caller"}},
            "e":{"rate_limit":{"max":5,"window":60,"scope":"global"}}}}"#,
        );
        let scope =
            |p: &crate::policy::Policy, k: &str| p.rule_for(k).unwrap().limits[0].spec.scope;
        assert_eq!(scope(&with, "a"), Scope::Caller);
        assert_eq!(scope(&with, "b"), Scope::Caller);
        assert_eq!(scope(&with, "c"), Scope::Session);
        assert_eq!(scope(&with, "d"), Scope::Caller);
        assert_eq!(scope(&with, "e"), Scope::Global);
        assert_eq!(
            with.rule_for("a").unwrap().limits[0].describe(),
            "5 calls per 60s (per caller)"
        );
        let without = ok(r#"{"version":"1","tools":{"a":{"rate_limit":"5/minute"}}}"#);
        assert_eq!(scope(&without, "a"), Scope::Session);
        assert_ne!(
            with.rule_for("a").unwrap().limits[0].spec.id,
            without.rule_for("a").unwrap().limits[0].spec.id
        );
        let e = one_error(
            r#"{"version":"1","tools":{"x":{"rate_limit":{"max":1,"window":1,"scope":"caller"}}}}"#,
        );
        assert_eq!(e.path, r#"tools["x"].rate_limit.scope"#);
        assert!(e.message.contains("needs a `callers` section"), "{e}");
        assert!(e.fix.contains("\"callers\""), "{e}");
    }
}
