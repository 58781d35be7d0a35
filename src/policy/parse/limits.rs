//! A rule's `rate_limit`: one limit or a non-empty list; a limit is `"N/second"` … `"N/day"` or an object
//! (`max`, `window`, `scope`, `cost`, `counted`). Each limit gets an id, stable across reloads of the same
//! policy, that names its counters in shared data. Without `scope`, a limit counts per caller when the policy
//! has `callers` (a client opens a new MCP session at will, so sessions are no basis for a budget), else per
//! session. With a `rate_limit_service`, a limit it counts (every limit without `"counted": "proxy"`) must have
//! a window it can count (a second, minute, hour or day) and a `max` that fits its 32 bits, and gets what the
//! service is told about it ([`FleetLimit`]).

use super::condition::arg_path;
use super::errors::{at_key, kind, Errs};
use super::fields::{open, LIMIT};
use crate::limits::fleet::{self, FleetLimit};
use crate::limits::rls::Unit;
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
/// counts survive a reordering of the profiles). The rate limit service is told the same name
/// ([`FleetLimit::rule`]), so that it too counts a profile's limits apart and keeps them when profiles move.
pub(super) struct Place<'a> {
    pub(super) section: &'a str,
    pub(super) key: &'a str,
    pub(super) scopes: Scopes,
    /// The policy has a `rate_limit_service`.
    pub(super) fleet: bool,
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
    fleet::place(limits.iter_mut().filter_map(|l| {
        let RateLimit { fleet, cost, .. } = l;
        let cost = cost.as_ref().map(|(p, _)| p.as_str());
        fleet.as_mut().map(|f| (f, cost))
    }));
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

const SERVICE_WINDOWS: &str = "the rate limit service counts per second, minute, hour or day";
const OR_PROXY: &str = "or add \"counted\": \"proxy\" to count this limit in each Envoy";

/// The limit at `index` of the list (0 for a single limit).
fn parse_limit(
    errs: &mut Errs,
    path: &str,
    place: &Place,
    index: usize,
    v: &Value,
) -> Option<RateLimit> {
    let before = errs.count();
    // Who counts it: the service (true) or this Envoy; and where its `max` and `window` are written.
    let mut by_service = place.fleet;
    let (mut max_at, mut window_at) = (path.to_owned(), path.to_owned());
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
            match o.get("counted").map(|c| (c, c.as_str())) {
                None => {}
                Some((_, Some("proxy"))) => by_service = false,
                Some((_, Some("service"))) if place.fleet => {}
                Some((_, Some("service"))) => errs.push(
                    &o.at("counted"),
                    "\"counted\": \"service\" needs a `rate_limit_service` section saying which service counts it",
                    "add \"rate_limit_service\": {\"cluster\": \"ratelimit\"}, or remove `counted` to count it in each Envoy",
                ),
                Some((c, _)) => errs.push(
                    &o.at("counted"),
                    format!("invalid counted {c}"),
                    "use \"proxy\" (each Envoy counts it in its shared data) or \"service\" (the rate limit service counts it for the whole fleet: the default with a `rate_limit_service`)",
                ),
            }
            max_at = o.at("max");
            window_at = o.at("window");
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
    let fleet = if by_service {
        let unit = Unit::of_window(window);
        if unit.is_none() {
            errs.push(
                &window_at,
                format!("a window of {window} seconds cannot be counted by the rate limit service ({SERVICE_WINDOWS})"),
                format!("use \"second\", \"minute\", \"hour\" or \"day\" (1, 60, 3600 or 86400 seconds), {OR_PROXY}"),
            );
        }
        let max32 = u32::try_from(max).ok();
        if max32.is_none() {
            errs.push(
                &max_at,
                format!(
                    "the rate limit service counts at most {} per window, got {max}",
                    u32::MAX
                ),
                format!("lower it, {OR_PROXY}"),
            );
        }
        let rule_path = at_key(place.section, place.key);
        Some(FleetLimit::new(
            path.to_owned(),
            rule_path,
            index,
            max32?,
            unit?,
            scope,
        ))
    } else {
        None
    };
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
        fleet,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};
    use crate::limits::rls::Unit;
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

    #[test]
    fn fleet_limits_with_a_rate_limit_service() {
        let p = ok(
            r#"{"version":"1","rate_limit_service":{"cluster":"rl"},"tools":{
            "search_runs": {"rate_limit": "10/minute"},
            "transfer_*": {"rate_limit": [{"max": 5, "window": 1, "counted": "proxy"}, "100/hour",
                                          {"max": 1000, "window": "day", "cost": "args.amount", "scope": "global"},
                                          {"max": 7, "window": 90, "counted": "proxy"}]}},
            "prompts": {"search_runs": {"rate_limit": {"max": 3, "window": 60, "counted": "service"}}}}"#,
        );
        let l = |k: &str| p.rule_for(k).unwrap().limits.clone();
        let f = l("search_runs")[0].fleet.clone().unwrap();
        assert_eq!(
            (f.path.as_str(), f.rule.as_str(), f.limit.as_str()),
            (
                r#"tools["search_runs"].rate_limit"#,
                r#"tools["search_runs"]"#,
                "0:10/minute"
            )
        );
        assert_eq!((f.max, f.unit, f.scope), (10, Unit::Minute, Scope::Session));
        let t = l("transfer_x");
        assert!(t[0].fleet.is_none() && t[3].fleet.is_none());
        let (a, b) = (t[1].fleet.clone().unwrap(), t[2].fleet.clone().unwrap());
        assert_eq!(a.path, r#"tools["transfer_*"].rate_limit[1]"#);
        assert_eq!(
            (a.limit.as_str(), a.request, a.position),
            ("1:100/hour", 0, 0)
        );
        // The cost limit goes in a request of its own.
        assert_eq!(
            (b.limit.as_str(), b.request, b.position),
            ("2:1000/day", 1, 0)
        );
        assert_eq!(b.scope, Scope::Global);
        // Looked up by the id a charge carries; proxy-counted limits are not there.
        assert_eq!(p.fleet_limit(t[1].spec.id), Some(&a));
        assert_eq!(p.fleet_limit(t[0].spec.id), None);
        let prompt = p.prompts.rule_for("search_runs").unwrap().limits[0].clone();
        assert_eq!(prompt.fleet.unwrap().rule, r#"prompts["search_runs"]"#);
        assert_eq!(p.fleet_limits().count(), 4);
        // Slots are held for the longest window counted here (90 s), not the service's day.
        assert_eq!(p.hold_secs(), 90);
        // The same limits without the service: counted here, with the same ids.
        let local = ok(r#"{"version":"1","tools":{"search_runs": {"rate_limit": "10/minute"}}}"#);
        let local = local.rule_for("search_runs").unwrap().limits[0].clone();
        assert!(local.fleet.is_none());
        assert_eq!(local.spec.id, l("search_runs")[0].spec.id);
    }

    #[test]
    fn fleet_limit_errors_name_the_field_and_the_fix() {
        let e = |rl: &str, service: bool| {
            let service = if service {
                r#""rate_limit_service":{"cluster":"rl"},"#
            } else {
                ""
            };
            one_error(&format!(
                r#"{{"version":"1",{service}"tools":{{"x":{{"rate_limit":{rl}}}}}}}"#
            ))
        };
        let err = e(r#"{"max": 10, "window": 90}"#, true);
        assert_eq!(err.path, r#"tools["x"].rate_limit.window"#);
        assert!(
            err.message
                .contains("90 seconds cannot be counted by the rate limit service"),
            "{err}"
        );
        assert!(
            err.fix.contains("\"minute\"") && err.fix.contains("\"counted\": \"proxy\""),
            "{err}"
        );
        let err = e(r#"["1/second", {"max": 10, "window": 7200}]"#, true);
        assert_eq!(err.path, r#"tools["x"].rate_limit[1].window"#);
        let err = e(r#"{"max": 4294967296, "window": 60}"#, true);
        assert_eq!(err.path, r#"tools["x"].rate_limit.max"#);
        assert!(err.message.contains("at most 4294967295"), "{err}");
        let err = e(r#"["1/second", "4294967296/day"]"#, true);
        assert_eq!(err.path, r#"tools["x"].rate_limit[1]"#);
        let err = e(r#"{"max": 1, "window": 60, "counted": "service"}"#, false);
        assert_eq!(err.path, r#"tools["x"].rate_limit.counted"#);
        assert!(
            err.message.contains("needs a `rate_limit_service`"),
            "{err}"
        );
        let err = e(r#"{"max": 1, "window": 60, "counted": "envoy"}"#, true);
        assert_eq!(err.path, r#"tools["x"].rate_limit.counted"#);
        assert!(err.message.contains("invalid counted"), "{err}");
        // Both at once are two errors; proxy-counted limits keep any window and max.
        let two = super::super::testing::errors(
            r#"{"version":"1","rate_limit_service":{"cluster":"rl"},"tools":{"x":{"rate_limit":{"max": 4294967296, "window": 2}}}}"#,
        );
        assert_eq!(two.len(), 2, "{two:?}");
        ok(
            r#"{"version":"1","rate_limit_service":{"cluster":"rl"},"tools":{"x":{"rate_limit":
             {"max": 4294967296, "window": 2, "counted": "proxy"}}}}"#,
        );
        ok(
            r#"{"version":"1","tools":{"x":{"rate_limit":{"max": 1, "window": 2, "counted": "proxy"}}}}"#,
        );
    }

    /// With `callers` and a service: fleet limits count per caller by default; a profile's own limit is named
    /// by the profile's name (not its place) and counted apart; an inherited one is the top level's, listed
    /// once; a profile's limit the service cannot count is an error at the profile's path.
    #[test]
    fn fleet_limits_of_callers_and_profiles() {
        let doc = |first: &str, second: &str| {
            format!(
                r#"{{"version":"1","rate_limit_service":{{"cluster":"rl"}},
                "callers":{{"jwt":{{"metadata":"jwt_payload","groups":"groups"}}}},
                "tools":{{"a":{{"rate_limit":["5/minute",{{"max":9,"window":"hour","scope":"session"}}]}},
                          "b":{{"rate_limit":"1/second"}}}},
                "profiles":[{first},{second}]}}"#
            )
        };
        let admins = r#"{"name":"admins","match":{"groups":["admins"]},"tools":{"a":{"rate_limit":"50/minute"}}}"#;
        let ci = r#"{"name":"ci","match":{"groups":["ci"]}}"#;
        let p = ok(&doc(admins, ci));
        let top = p.rule_for("a").unwrap();
        let f = |l: &crate::policy::RateLimit| l.fleet.clone().unwrap();
        assert_eq!(f(&top.limits[0]).scope, Scope::Caller);
        assert_eq!(f(&top.limits[1]).scope, Scope::Session);
        let own = f(&p.view_of(Some(0)).rule_for("a").unwrap().limits[0]);
        assert_eq!(
            (own.rule.as_str(), own.path.as_str(), own.scope),
            (
                r#"profiles["admins"].tools["a"]"#,
                r#"profiles[0].tools["a"].rate_limit"#,
                Scope::Caller
            )
        );
        assert_ne!(
            p.view_of(Some(0)).rule_for("a").unwrap().limits[0].spec.id,
            top.limits[0].spec.id
        );
        // Inherited: the top level's limit itself.
        let inherited = &p.view_of(Some(1)).rule_for("a").unwrap().limits[0];
        assert_eq!(inherited.spec.id, top.limits[0].spec.id);
        assert_eq!(inherited.fleet, top.limits[0].fleet);
        // a (2), b (1), admins' a (1): each once, though two profiles inherit b and one a.
        assert_eq!(p.fleet_limits().count(), 4);
        assert_eq!(
            p.fleet_limit(own_id(&p)).map(|l| l.rule.as_str()),
            Some(r#"profiles["admins"].tools["a"]"#)
        );
        // Reordered profiles: the same names, the same counts.
        let q = ok(&doc(ci, admins));
        let moved = f(&q.view_of(Some(1)).rule_for("a").unwrap().limits[0]);
        assert_eq!(moved.rule, own.rule);
        assert_eq!(own_id(&q), own_id(&p));
        let e = one_error(&doc(
            r#"{"name":"admins","match":{},"tools":{"a":{"rate_limit":{"max":1,"window":90}}}}"#,
            ci,
        ));
        assert_eq!(e.path, r#"profiles[0].tools["a"].rate_limit.window"#);
        assert!(
            e.message
                .contains("cannot be counted by the rate limit service"),
            "{e}"
        );
    }

    /// The id of the admins profile's own limit.
    fn own_id(p: &crate::policy::Policy) -> u64 {
        let i = p.profiles.iter().position(|x| x.name == "admins").unwrap();
        p.view_of(Some(i)).rule_for("a").unwrap().limits[0].spec.id
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
