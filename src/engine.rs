//! The decision engine: which rule governs a call, and what it decides. Pure: no host calls.
//!
//! A call is judged by a [`View`]: the rules of the caller's profile (`Policy::for_caller`), or the top
//! level's. A `&Policy` is accepted wherever a view is (it is the top level's view).

use crate::json;
use crate::limits::Charge;
use crate::mcp::{Body, Kind, ToolCall};
use crate::names;
use crate::policy::{lookup, Action, Rule, ToolNames, View};
use serde_json::Value;

/// What happens to one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'p> {
    Allow {
        rule: Option<&'p str>,
    },
    Deny {
        rule: Option<&'p str>,
        reason: String,
    },
    /// Over a rate limit: `limit` units per `window_secs`, room again in `retry_after_secs`.
    RateLimited {
        rule: Option<&'p str>,
        reason: String,
        limit: u64,
        window_secs: u64,
        retry_after_secs: u64,
    },
    /// The rate limit service could not say whether a fleet-counted limit has room (timeout, unreachable, an
    /// error, garbage), and the policy's `on_error` is `deny`.
    RateLimitUnavailable {
        rule: Option<&'p str>,
        reason: String,
    },
    /// Allowed so far (conditions hold, limits have room), but the approval service must say yes first.
    NeedsApproval {
        rule: Option<&'p str>,
        reason: Option<&'p str>,
    },
    /// The tool's definition, as a tools/list answer last showed it, is not the pinned one ([`crate::pins`]):
    /// refused until a list shows the pinned definition again or the policy pins the new one.
    ToolChanged {
        rule: Option<&'p str>,
        reason: String,
    },
    /// The approval service said no (`unavailable: false`) or could not be asked (`unavailable: true`).
    NotApproved {
        rule: Option<&'p str>,
        reason: String,
        unavailable: bool,
    },
}

/// A decision plus, for an allowed call, the units it takes from its rule's rate limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'p> {
    pub decision: Decision<'p>,
    pub charges: Vec<Charge>,
}

impl<'p> Decision<'p> {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
    /// Denied, rate limited, its tool changed, or not approved: the call must not be forwarded and gets an
    /// error.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Decision::Deny { .. }
                | Decision::RateLimited { .. }
                | Decision::ToolChanged { .. }
                | Decision::RateLimitUnavailable { .. }
                | Decision::NotApproved { .. }
        )
    }
    /// The policy key that decided, `None` when the default posture did.
    pub fn rule(&self) -> Option<&'p str> {
        match self {
            Decision::Allow { rule }
            | Decision::Deny { rule, .. }
            | Decision::RateLimited { rule, .. }
            | Decision::RateLimitUnavailable { rule, .. }
            | Decision::NeedsApproval { rule, .. }
            | Decision::ToolChanged { rule, .. }
            | Decision::NotApproved { rule, .. } => *rule,
        }
    }
}

/// Decides one call (without counting: see [`crate::request`] for the rate-limit step).
pub fn decide_call<'p>(view: impl Into<View<'p>>, call: &ToolCall<'_>) -> Decision<'p> {
    judge(view, call).decision
}

/// Decides one `tools/call` and works out what it would take from its rule's rate limits.
pub fn judge<'p>(view: impl Into<View<'p>>, call: &ToolCall<'_>) -> Verdict<'p> {
    judge_in(view.into(), call)
}

fn judge_in<'p>(view: View<'p>, call: &ToolCall<'_>) -> Verdict<'p> {
    let deny = |rule: Option<&'p str>, reason: String| Verdict {
        decision: Decision::Deny { rule, reason },
        charges: Vec::new(),
    };
    if let Some(decision) = name_refusal(view, call) {
        return Verdict {
            decision,
            charges: Vec::new(),
        };
    }
    let tool: &str = &call.name;
    if call.kind == Kind::Tool && view.is_hidden(tool) {
        return deny(None, "hidden by policy".into());
    }
    if call.kind == Kind::Tool && view.is_unpinned_hidden(tool) {
        return deny(
            None,
            "the tool has no pin and pins.unpinned is hide: a tool the server added since its tools were reviewed is not called".into(),
        );
    }
    let set = view.set(call.kind);
    // A policy that governs resources matches their URIs as written; a spelling that a server resolves to
    // another path would slip past its globs (`file:///public/../etc/passwd` matches `file:///public/*`).
    let governed = !set.rules().is_empty() || set.default != Action::Allow;
    if call.kind == Kind::Resource && governed {
        if let Some(why) = unnormalised_uri(tool) {
            return deny(
                None,
                format!(
                    "resource URI {why}, so it may name another resource than its text matches"
                ),
            );
        }
    }
    let Some(rule) = set.rule_for(tool) else {
        let decision = match set.default {
            Action::Allow => Decision::Allow { rule: None },
            Action::RequireApproval => Decision::NeedsApproval {
                rule: None,
                reason: None,
            },
            Action::Deny => {
                let (noun, field) = match call.kind {
                    Kind::Tool => ("tool", "default"),
                    Kind::Prompt => ("prompt", "prompts_default"),
                    Kind::Resource => ("resource", "resources_default"),
                };
                return deny(
                    None,
                    format!("{noun} '{tool}' is not allowed by the policy ({field} deny)"),
                );
            }
        };
        return Verdict {
            decision,
            charges: Vec::new(),
        };
    };
    let key = Some(rule.key.as_str());
    if rule.action == Action::Deny {
        let reason = rule
            .reason
            .clone()
            .unwrap_or_else(|| format!("denied by policy rule \"{}\"", rule.key));
        return deny(key, reason);
    }
    // Arguments are read only for rules that look at them, and then only where they look.
    let needs_args = !rule.conditions.is_empty() || rule.limits.iter().any(|l| l.cost.is_some());
    let paths = rule.conditions.iter().map(|c| &c.segments[..]).chain(
        rule.limits
            .iter()
            .filter_map(|l| Some(&l.cost.as_ref()?.1[..])),
    );
    let args: Option<Value> = match call
        .arguments
        .filter(|_| needs_args)
        .map(|raw| args_at(raw.get(), paths))
    {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return deny(key, "arguments could not be read".into()),
    };
    if let Some(failed) = rule.conditions.iter().find(|c| !c.holds(args.as_ref())) {
        let reason = rule
            .reason
            .clone()
            .unwrap_or_else(|| format!("condition not met: {}", failed.describe()));
        return deny(key, reason);
    }
    let decision = match rule.action {
        Action::RequireApproval => Decision::NeedsApproval {
            rule: key,
            reason: rule.reason.as_deref(),
        },
        _ => Decision::Allow { rule: key },
    };
    match charges(rule, args.as_ref()) {
        Ok(charges) => Verdict { decision, charges },
        Err(reason) => deny(key, reason),
    }
}

/// The refusal of a call by its name alone ([`crate::names`]), before any rule is looked at: a malformed name
/// (control or invisible characters, white space at an end; any kind), a tool name outside MCP's tool-name
/// guidance under `tool_names: strict`, or a look-alike of a governed key of its kind (tools, prompts) that is
/// not itself an exact key. `None`: the rules decide.
pub fn name_refusal<'p>(view: View<'p>, call: &ToolCall<'_>) -> Option<Decision<'p>> {
    let name: &str = &call.name;
    let noun = call.kind.noun();
    if let Some(m) = names::malformed(name) {
        return Some(Decision::Deny {
            rule: None,
            reason: format!("{noun} name {m}"),
        });
    }
    if call.kind == Kind::Tool && view.tool_names == ToolNames::Strict && !names::in_guidance(name)
    {
        return Some(Decision::Deny {
            rule: None,
            reason: "tool name outside MCP's tool-name guidance (1 to 128 characters of A-Z a-z 0-9 _ - .), and the policy's tool_names is strict".into(),
        });
    }
    if view.set(call.kind).has_exact(name) {
        return None;
    }
    let key = view.look_alikes(call.kind)?.of(name)?;
    // A hidden tool's key is not told to the agent (it may be a glob that names what is hidden).
    let hidden = call.kind == Kind::Tool && view.hide.iter().any(|g| g.pattern() == key);
    let reason = if hidden {
        format!("'{name}' is a look-alike of a {noun} hidden by policy")
    } else {
        format!(
            "'{name}' is a look-alike of the policy key '{key}' (the same once letter case and compatibility forms are folded); refused so that a server that folds names cannot run '{key}' under another name"
        )
    };
    Some(Decision::Deny {
        rule: Some(key),
        reason,
    })
}

/// The values of the arguments `raw` (checked JSON: `ToolCall::arguments`) at `paths` (segments after
/// `args`), as a JSON value in which each path leads where it leads in the whole arguments: nested objects
/// keyed by the segments, down to each value found. The rest of the arguments is skipped, not parsed.
/// Public for the fuzz differential against the whole parse.
pub fn args_at<'s>(
    raw: &str,
    paths: impl Iterator<Item = &'s [String]>,
) -> Result<Value, serde_json::Error> {
    let paths: Vec<&[String]> = paths.collect();
    let longest = paths.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut found: Vec<&[String]> = Vec::new();
    let mut root = Value::Object(serde_json::Map::new());
    // Shorter paths first: a value found whole already holds every longer path below it.
    for len in 0..=longest {
        for &path in paths.iter().filter(|p| p.len() == len) {
            if found.iter().any(|f| path.starts_with(f)) {
                continue;
            }
            let Some(text) = json::find(raw, path) else {
                // A path that is not there may be there in another letter case, which a condition must see
                // (`policy::Lookup::Ambiguous`): read the whole arguments, as the full parse would.
                return serde_json::from_str(raw);
            };
            let value: Value = serde_json::from_str(text)?;
            found.push(path);
            let Some((last, parents)) = path.split_last() else {
                // The whole arguments.
                root = value;
                continue;
            };
            insert_at(&mut root, parents, last, value);
        }
    }
    Ok(root)
}

/// Puts `value` at `parents` then `last` in `node`, making the objects on the way.
fn insert_at(node: &mut Value, parents: &[String], last: &str, value: Value) {
    let Value::Object(map) = node else {
        return;
    };
    match parents.split_first() {
        None => {
            map.insert(last.to_owned(), value);
        }
        Some((segment, rest)) => {
            if !map.contains_key(segment) {
                map.insert(segment.clone(), Value::Object(serde_json::Map::new()));
            }
            if let Some(next) = map.get_mut(segment) {
                insert_at(next, rest, last, value);
            }
        }
    }
}

fn charges(rule: &Rule, args: Option<&Value>) -> Result<Vec<Charge>, String> {
    rule.limits
        .iter()
        .map(|l| {
            let units = match &l.cost {
                None => 1,
                Some((path, segs)) => match lookup(args, segs).and_then(Value::as_f64) {
                    // Fractional costs round up: a budget is never overspent.
                    Some(x) if x >= 0.0 && x.is_finite() => x.ceil() as u64,
                    _ => return Err(format!("the rate-limit cost argument {path} is missing or not a non-negative number")),
                },
            };
            Ok(Charge { limit: l.spec, units })
        })
        .collect()
}

/// Why a resource URI cannot be matched as written, if it cannot: its path (before any `?` or `#`) has a dot
/// segment (`.` or `..`), a percent-encoded character that needs no encoding (an unreserved character, which
/// also covers `%2e`, or `/` or `\\`), or a backslash. Each such URI is equivalent to another spelling (RFC 3986
/// §5.2.4 removes dot segments, §6.2.2.2 decodes unreserved characters) or names another path on a file server.
pub fn unnormalised_uri(uri: &str) -> Option<&'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    if path.contains('\\') {
        return Some("has a backslash");
    }
    let bytes = path.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
            let c = char::from(u8::try_from(hi * 16 + lo).unwrap_or(0));
            if c.is_ascii_alphanumeric() || "-._~/\\".contains(c) {
                return Some("has a percent-encoded character that needs no encoding");
            }
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Some("has a dot segment");
    }
    // After the scheme and the authority, an empty segment (`//`) names the same file on most servers.
    let after_authority = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| rest.get(i..).unwrap_or("")),
        None => path,
    };
    if after_authority.contains("//") {
        return Some("has an empty path segment (//)");
    }
    None
}

/// Decides every message of a body: `None` for messages that are not tool calls (always allowed here).
pub fn decide_body<'p>(view: impl Into<View<'p>>, body: &Body<'_>) -> Vec<Option<Decision<'p>>> {
    let view = view.into();
    body.messages
        .iter()
        .map(|m| m.call().map(|c| judge_in(view, c).decision))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::inspect;
    use crate::policy::{parse, Policy};

    const POLICY: &str = r#"{
      "version": "1", "default": "deny",
      "tools": {
        "get_run": {},
        "get_*": {"action": "allow"},
        "get_r*": {"action": "deny", "reason": "r-tools"},
        "g?t_ru?": {"action": "deny"},
        "delete_*": {"action": "deny", "reason": "Deleting MLflow data is not allowed for agents"},
        "*_run": {"action": "deny"},
        "search_runs": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 100}],
                        "reason": "Fetch at most 100 runs at once"},
        "search_experiments": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 100},
                                              {"path": "args.filter", "op": "exists", "value": false}]},
        "a*": {}, "*a": {"action": "deny"}
      }
    }"#;

    fn decide(tool: &str, args: &str) -> Decision<'static> {
        let policy: &'static Policy = Box::leak(Box::new(parse(POLICY.as_bytes()).unwrap()));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        );
        let body = inspect(body.as_bytes()).unwrap();
        let call = body.messages.first().and_then(|m| m.tool_call()).unwrap();
        decide_call(policy, call)
    }

    #[test]
    fn exact_beats_globs() {
        assert_eq!(
            decide("get_run", "{}"),
            Decision::Allow {
                rule: Some("get_run")
            }
        );
    }

    #[test]
    fn most_literal_glob_wins_then_smallest_key() {
        // get_r* (5 literals) beats get_* (4) and g?t_ru? (4).
        assert!(matches!(
            decide("get_runs", "{}"),
            Decision::Deny {
                rule: Some("get_r*"),
                ..
            }
        ));
        assert_eq!(
            decide("get_experiment", "{}"),
            Decision::Allow {
                rule: Some("get_*")
            }
        );
        // delete_* (7) beats *_run (4).
        assert!(matches!(
            decide("delete_run", "{}"),
            Decision::Deny {
                rule: Some("delete_*"),
                ..
            }
        ));
        // "a*" and "*a" tie with one literal: "*a" sorts first.
        assert!(matches!(
            decide("aa", "{}"),
            Decision::Deny {
                rule: Some("*a"),
                ..
            }
        ));
        assert_eq!(decide("ab", "{}"), Decision::Allow { rule: Some("a*") });
    }

    #[test]
    fn default_posture_and_case_sensitivity() {
        // No key matches `Get_Run` as written; folded, it matches the deny globs `*_run`, `g?t_ru?` and
        // `get_r*` (the first in key order named): a look-alike.
        assert!(matches!(
            decide("Get_Run", "{}"),
            Decision::Deny { rule: Some("*_run"), reason } if reason.contains("look-alike")
        ));
        assert!(matches!(
            decide("Unknown", "{}"),
            Decision::Deny { rule: None, .. }
        ));
        assert!(matches!(
            decide("unknown", "null"),
            Decision::Deny { rule: None, .. }
        ));
    }

    #[test]
    fn reasons() {
        match decide("delete_experiment", "{}") {
            Decision::Deny { reason, .. } => {
                assert_eq!(reason, "Deleting MLflow data is not allowed for agents")
            }
            d => panic!("{d:?}"),
        }
        match decide("start_run", "{}") {
            Decision::Deny { reason, .. } => assert_eq!(reason, "denied by policy rule \"*_run\""),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn conditions() {
        assert!(decide("search_runs", r#"{"max_results": 10}"#).is_allow());
        assert!(decide("search_runs", r#"{"max_results": 100}"#).is_allow());
        match decide("search_runs", r#"{"max_results": 500}"#) {
            Decision::Deny { reason, .. } => assert_eq!(reason, "Fetch at most 100 runs at once"),
            d => panic!("{d:?}"),
        }
        assert!(!decide("search_runs", "{}").is_allow());
        assert!(!decide("search_runs", r#"{"max_results": "10"}"#).is_allow());
        assert!(decide("search_experiments", r#"{"max_results": 1}"#).is_allow());
        match decide("search_experiments", r#"{"max_results": 1, "filter": "x"}"#) {
            Decision::Deny { reason, .. } => {
                assert_eq!(reason, "condition not met: args.filter exists false")
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn charges_follow_the_rule() {
        let p = parse(br#"{"version":"1","tools":{"t":{"rate_limit":[{"max":100,"window":"day","cost":"args.amount"},"5/minute"]},"u":{}}}"#).unwrap();
        let j = |args: &str| {
            let b = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}"#
            );
            let body = inspect(b.as_bytes()).unwrap();
            let v = judge(&p, body.messages[0].tool_call().unwrap());
            (
                v.decision.is_allow(),
                v.charges.iter().map(|c| c.units).collect::<Vec<_>>(),
            )
        };
        assert_eq!(j(r#"{"amount": 30}"#), (true, vec![30, 1]));
        assert_eq!(j(r#"{"amount": 2.5}"#), (true, vec![3, 1]));
        assert_eq!(j(r#"{"amount": 0}"#), (true, vec![0, 1]));
        assert!(!j(r#"{"amount": -1}"#).0);
        assert!(!j(r#"{"amount": "30"}"#).0);
        assert!(!j(r#"{}"#).0);
        match judge(
            &p,
            inspect(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#)
                .unwrap()
                .messages[0]
                .tool_call()
                .unwrap(),
        )
        .decision
        {
            Decision::Deny { reason, .. } => assert!(reason.contains("args.amount"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn require_approval_comes_after_conditions() {
        let p = parse(br#"{"version":"1","default":"require_approval","approval":{"cluster":"a"},
            "tools":{"c":{"action":"require_approval","reason":"human","conditions":[{"path":"args.n","op":"lt","value":5}]}}}"#).unwrap();
        let d = |name: &str, args: &str| {
            let b = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#
            );
            let body = inspect(b.as_bytes()).unwrap();
            decide_call(&p, body.messages[0].tool_call().unwrap())
        };
        assert_eq!(
            d("c", r#"{"n":1}"#),
            Decision::NeedsApproval {
                rule: Some("c"),
                reason: Some("human")
            }
        );
        assert!(matches!(d("c", r#"{"n":9}"#), Decision::Deny { .. }));
        assert_eq!(
            d("other", "{}"),
            Decision::NeedsApproval {
                rule: None,
                reason: None
            }
        );
    }

    #[test]
    fn hidden_tools_are_denied_and_unlisted() {
        let p = parse(br#"{"version":"1","default":"allow","hide":["secret_*"],"tools":{"secret_x":{},"d":{"action":"deny"},
            "c":{"conditions":[{"path":"args.a","op":"exists","value":true}]}}}"#).unwrap();
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_x"}}"#,
        )
        .unwrap();
        assert_eq!(
            decide_call(&p, b.messages[0].tool_call().unwrap()),
            Decision::Deny {
                rule: None,
                reason: "hidden by policy".into()
            }
        );
        assert!(!p.view().is_listed("secret_x"));
        assert!(!p.view().is_listed("d"));
        assert!(p.view().is_listed("c"));
        assert!(p.view().is_listed("anything"));
        let strict = parse(br#"{"version":"1","tools":{"get_*":{}}}"#).unwrap();
        assert!(strict.view().is_listed("get_run") && !strict.view().is_listed("delete_run"));
        let unfiltered =
            parse(br#"{"version":"1","filter_tools_list":false,"hide":["h"]}"#).unwrap();
        assert!(unfiltered.view().is_listed("delete_run") && !unfiltered.view().is_listed("h"));
    }

    #[test]
    fn prompts_and_resources_have_their_own_rules() {
        let p = parse(br#"{"version":"1","tools":{"x":{}},"prompts":{"secret_*":{"action":"deny","reason":"no"}},
            "resources":{"file:///public/*":{}},"resources_default":"deny"}"#).unwrap();
        let d = |body: &str| {
            let b = inspect(body.as_bytes()).unwrap();
            decide_call(&p, b.messages[0].call().unwrap())
        };
        assert!(
            d(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"x"}}"#)
                .is_allow()
        );
        assert!(!d(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret_a"}}"#
        )
        .is_allow());
        assert!(d(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/a"}}"#).is_allow());
        match d(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#) {
            Decision::Deny { reason, .. } => assert_eq!(reason, "resource 'file:///etc/passwd' is not allowed by the policy (resources_default deny)"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn case_variant_argument_keys_fail_negative_conditions() {
        let p = parse(
            br#"{"version":"1","tools":{"t":{"conditions":[{"path":"args.filter","op":"exists","value":false},
            {"path":"args.opts.mode","op":"neq","value":"unsafe"}]}}}"#,
        )
        .unwrap();
        let d = |args: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{args}}}}}"#
            );
            let b = inspect(body.as_bytes()).unwrap();
            decide_call(&p, b.messages[0].call().unwrap())
        };
        assert!(d(r#"{"other":1}"#).is_allow());
        assert!(!d(r#"{"Filter":"x"}"#).is_allow());
        assert!(!d(r#"{"opts":{"Mode":"unsafe"}}"#).is_allow());
        assert!(d(r#"{"opts":{"mode":"safe"}}"#).is_allow());
    }

    #[test]
    fn resource_uris_that_name_another_path_are_denied() {
        let p = parse(
            br#"{"version":"1","resources":{"file:///public/*":{},
            "file:///public/private/*":{"action":"deny"}},"resources_default":"deny"}"#,
        )
        .unwrap();
        let d = |uri: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
            );
            let b = inspect(body.as_bytes()).unwrap();
            decide_call(&p, b.messages[0].call().unwrap())
        };
        for uri in [
            "file:///public/../etc/passwd",
            "file:///public/./private/k",
            "file:///public/x/../private/k",
            "file:///public/x/..",
            "file:///public/%70rivate/k",
            "file:///public/%2e%2E/etc/passwd",
            "file:///public/a%2Fb",
            r"file:///public\\..\\etc\\passwd", // JSON text: the URI has single backslashes
            "file:///public//private/k",
            "https://host/public//private/k",
        ] {
            match d(uri) {
                Decision::Deny { rule: None, reason } => {
                    assert!(reason.starts_with("resource URI has"), "{uri}: {reason}")
                }
                other => panic!("{uri}: {other:?}"),
            }
        }
        for uri in [
            "file:///public/a",
            "file:///public/.hidden/a..b",
            "file:///public/my%20file.txt",
            "file:///public/caf%C3%A9",
            "file:///public/a?next=../b",
        ] {
            assert!(d(uri).is_allow(), "{uri}");
        }
        // A policy that does not govern resources lets them all through, as before.
        let tools_only = parse(br#"{"version":"1","tools":{"x":{}}}"#).unwrap();
        let b = inspect(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a/../b"}}"#)
            .unwrap();
        assert!(decide_call(&tools_only, b.messages[0].call().unwrap()).is_allow());
    }

    /// Each class of look-alike, against each kind of governed key, under each default: refused, and the reason
    /// says why; the key itself and unrelated names are decided by the rules as before.
    #[test]
    fn look_alikes_of_governed_keys_are_refused() {
        let doc = |default: &str| {
            format!(
                r#"{{"version":"1","default":"{default}","approval":{{"cluster":"a"}},"hide":["secret_tool","vault_*"],
                "tools":{{"delete_run":{{"action":"deny"}},"approve_me":{{"action":"require_approval"}},
                "limited":{{"rate_limit":"5/minute"}},"checked":{{"conditions":[{{"path":"args.n","op":"lt","value":5}}]}},
                "drop_*":{{"action":"deny"}},"kill":{{"action":"deny"}},"file_read":{{"action":"deny"}},
                "search":{{"action":"deny"}},"get_run":{{}}}},
                "prompts":{{"admin":{{"action":"deny"}}}}}}"#
            )
        };
        let variants = |key: &str| -> Vec<String> {
            let upper = key.to_ascii_uppercase();
            let mut first_upper = key.to_owned();
            first_upper.replace_range(0..1, &key[0..1].to_ascii_uppercase());
            // The letters (and `_`, where the block has one) moved to another block of Latin letters.
            let moved = |a: u32, low_line: Option<char>| -> String {
                key.chars()
                    .map(|c| match (c, low_line) {
                        ('a'..='z', _) => char::from_u32(u32::from(c) - 0x61 + a).unwrap(),
                        ('_', Some(l)) => l,
                        (c, _) => c,
                    })
                    .collect()
            };
            let fullwidth = moved(0xFF41, Some('\u{FF3F}'));
            let bold = moved(0x1D41A, None);
            let circled = moved(0x24D0, None);
            vec![upper, first_upper, fullwidth, bold, circled]
        };
        let malformed = |key: &str| -> Vec<String> {
            let mid = key.len() / 2;
            let (a, b) = key.split_at(mid);
            vec![
                format!(" {key}"),
                format!("{key} "),
                format!("{key}\t"),
                format!("{key}\u{a0}"),
                format!("\u{3000}{key}"),
                format!("{a}\u{1}{b}"),
                format!("{key}\u{7f}"),
                format!("{key}\u{85}"),
                format!("{a}\u{200b}{b}"),
                format!("{a}\u{200d}{b}"),
                format!("\u{202e}{key}"),
                format!("{key}\u{2066}"),
                format!("{a}\u{ad}{b}"),
                format!("{key}\u{feff}"),
                format!("{key}\u{fe0f}"),
                format!("{key}\u{e0041}"),
                format!("{a}\u{2028}{b}"),
            ]
        };
        for default in ["allow", "deny"] {
            let p = parse(doc(default).as_bytes()).unwrap();
            let judge_tool = |name: &str| {
                let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                    "params":{"name": name, "arguments": {"n": 1}}})
                .to_string();
                let b = inspect(body.as_bytes()).unwrap();
                decide_call(&p, b.messages[0].tool_call().unwrap())
            };
            for key in [
                "delete_run",
                "approve_me",
                "limited",
                "checked",
                "secret_tool",
                "drop_table",
                "vault_key",
            ] {
                for name in variants(key) {
                    match judge_tool(&name) {
                        Decision::Deny { reason, .. } => {
                            assert!(reason.contains("look-alike"), "{default} {name}: {reason}")
                        }
                        d => panic!("{default} {name}: {d:?}"),
                    }
                }
                for name in malformed(key) {
                    // Refused by inspect (-32602) before any rule; the engine refuses them too, for its other
                    // callers (explain).
                    let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                        "params":{"name": name}})
                    .to_string();
                    match inspect(body.as_bytes()) {
                        Err(crate::mcp::RequestError::InvalidParams { id, message }) => {
                            assert_eq!(id.as_deref(), Some("1"));
                            assert!(
                                message.starts_with("Invalid params: the tool name "),
                                "{message}"
                            );
                        }
                        other => panic!("{name:?}: {other:?}"),
                    }
                    let call = ToolCall {
                        kind: Kind::Tool,
                        name: name.clone().into(),
                        arguments: None,
                    };
                    match decide_call(&p, &call) {
                        Decision::Deny { rule: None, reason } => assert!(
                            reason.starts_with("tool name has a control character (U+")
                                || reason.starts_with("tool name has an invisible character (U+")
                                || reason == "tool name starts or ends with white space",
                            "{default} {name:?}: {reason}"
                        ),
                        d => panic!("{default} {name:?}: {d:?}"),
                    }
                }
            }
            // The reason names the key, except a hidden one.
            match judge_tool("DELETE_RUN") {
                Decision::Deny { rule, reason } => {
                    assert_eq!(rule, Some("delete_run"));
                    assert!(reason.contains("the policy key 'delete_run'"), "{reason}");
                }
                d => panic!("{d:?}"),
            }
            match judge_tool("Vault_Key") {
                Decision::Deny { rule, reason } => {
                    assert_eq!(rule, Some("vault_*"));
                    assert_eq!(
                        reason,
                        "'Vault_Key' is a look-alike of a tool hidden by policy"
                    );
                }
                d => panic!("{d:?}"),
            }
            // Compatibility forms past the plain ones: Kelvin sign, long s, ligature.
            for name in [
                "\u{212A}ill",
                "\u{17F}earch",
                "\u{FB01}le_read",
                "ｄｒｏｐ_ｘ",
            ] {
                assert!(
                    matches!(judge_tool(name), Decision::Deny { ref reason, .. } if reason.contains("look-alike")),
                    "{name}"
                );
            }
            // The keys themselves, as before.
            assert!(matches!(
                judge_tool("delete_run"),
                Decision::Deny {
                    rule: Some("delete_run"),
                    ..
                }
            ));
            assert!(matches!(
                judge_tool("approve_me"),
                Decision::NeedsApproval { .. }
            ));
            assert!(judge_tool("limited").is_allow());
            assert!(judge_tool("get_run").is_allow());
            assert_eq!(
                judge_tool("secret_tool"),
                Decision::Deny {
                    rule: None,
                    reason: "hidden by policy".into()
                }
            );
            // Look-alikes of a key that only allows are not governed: the default decides.
            assert_eq!(judge_tool("GET_RUN").is_allow(), default == "allow");
            assert_eq!(judge_tool("other").is_allow(), default == "allow");
            // Prompts too.
            let body =
                r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"ＡＤＭＩＮ"}}"#;
            let b = inspect(body.as_bytes()).unwrap();
            assert!(matches!(
                decide_call(&p, b.messages[0].call().unwrap()),
                Decision::Deny {
                    rule: Some("admin"),
                    ..
                }
            ));
        }
    }

    #[test]
    fn strict_tool_names_and_unpinned_tools() {
        let pin = format!("sha256:{}", "a".repeat(64));
        let p = parse(
            format!(
                r#"{{"version":"1","default":"allow","tool_names":"strict",
                "pins":{{"tools":{{"get_run":"{pin}","a.b-c_D9":"{pin}","x y":"{pin}"}},"unpinned":"hide"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let d = |name: &str| {
            let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": name}})
                .to_string();
            let b = inspect(body.as_bytes()).unwrap();
            decide_call(&p, b.messages[0].tool_call().unwrap())
        };
        assert!(d("get_run").is_allow());
        assert!(d("a.b-c_D9").is_allow());
        for name in [
            "x y",
            "get/run",
            "café",
            "ａ",
            "get:run",
            &"a".repeat(129),
            "",
        ] {
            match d(name) {
                Decision::Deny { reason, .. } => {
                    assert!(reason.contains("tool-name guidance"), "{name}: {reason}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        match d("new_tool") {
            Decision::Deny { reason, .. } => assert!(reason.contains("has no pin"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(p.view().is_listed("get_run") && !p.view().is_listed("new_tool"));
        // A look-alike of a pinned name is refused even where unpinned tools are allowed.
        let allow = parse(
            format!(
                r#"{{"version":"1","default":"allow","pins":{{"tools":{{"get_run":"{pin}"}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Get_Run"}}"#,
        )
        .unwrap();
        assert!(matches!(
            decide_call(&allow, b.messages[0].tool_call().unwrap()),
            Decision::Deny {
                rule: Some("get_run"),
                ..
            }
        ));
        let b = inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"new_tool"}}"#,
        )
        .unwrap();
        assert!(decide_call(&allow, b.messages[0].tool_call().unwrap()).is_allow());
        assert!(allow.view().is_listed("new_tool"));
    }

    #[test]
    fn malformed_resource_uris_are_refused_whatever_the_policy() {
        let p = parse(br#"{"version":"1","tools":{"x":{}}}"#).unwrap();
        for uri in ["file:///a\u{0}", "file:///a\u{200b}", " file:///a"] {
            let call = ToolCall {
                kind: Kind::Resource,
                name: uri.into(),
                arguments: None,
            };
            match decide_call(&p, &call) {
                Decision::Deny { reason, .. } => {
                    assert!(reason.starts_with("resource name"), "{reason}")
                }
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn batches_decide_each_call() {
        let policy = parse(POLICY.as_bytes()).unwrap();
        let body = inspect(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_run"}}]"#,
        )
        .unwrap();
        let d = decide_body(&policy, &body);
        assert!(d[0].as_ref().unwrap().is_allow());
        assert!(d[1].is_none());
        assert!(!d[2].as_ref().unwrap().is_allow());
    }

    /// The same call, three callers, three decisions: each is judged by its profile's view.
    #[test]
    fn each_caller_is_judged_by_its_profile() {
        use crate::caller::Caller;
        let p = parse(
            br#"{"version":"1","default":"deny","approval":{"cluster":"a"},
            "callers":{"jwt":{"metadata":"jwt_payload","groups":"groups"}},
            "tools":{"get_*":{},"delete_run":{"action":"deny","reason":"no deletes"},
                     "search_runs":{"conditions":[{"path":"args.n","op":"lte","value":10}]}},
            "profiles":[
              {"name":"admins","match":{"groups":["admins"]},
               "tools":{"delete_run":{"action":"require_approval","reason":"a human checks"},
                        "search_runs":{"rate_limit":"5/minute"}}},
              {"name":"readers","match":{"authenticated":true},"inherit":false,
               "tools":{"get_run":{}}}]}"#,
        )
        .unwrap();
        let admin = Caller {
            subject: Some("bob".into()),
            groups: vec!["admins".into()],
            principal: None,
        };
        let reader = Caller {
            subject: Some("rita".into()),
            ..Caller::default()
        };
        let call = |name: &str, args: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#
            )
        };
        let judged = |c: &Caller, name: &str, args: &str| {
            let b = call(name, args);
            let body = inspect(b.as_bytes()).unwrap();
            let v = judge(p.for_caller(c), body.messages[0].tool_call().unwrap());
            (v.decision, v.charges.len())
        };
        let d = |c: &Caller, name: &str| judged(c, name, "{}").0;
        assert_eq!(
            d(&admin, "delete_run"),
            Decision::NeedsApproval {
                rule: Some("delete_run"),
                reason: Some("a human checks")
            }
        );
        assert!(matches!(
            d(&Caller::ANONYMOUS, "delete_run"),
            Decision::Deny { reason, .. } if reason == "no deletes"
        ));
        assert!(matches!(
            d(&reader, "delete_run"),
            Decision::Deny { rule: None, .. }
        ));
        assert!(d(&reader, "get_run").is_allow());
        assert!(!d(&reader, "get_experiment").is_allow(), "inherit false");
        assert!(d(&Caller::ANONYMOUS, "get_experiment").is_allow());
        // The profile's search_runs replaced the top level's whole rule: no condition, a limit.
        let (decision, charges) = judged(&admin, "search_runs", r#"{"n":50}"#);
        assert!(decision.is_allow() && charges == 1);
        let (decision, charges) = judged(&Caller::ANONYMOUS, "search_runs", r#"{"n":50}"#);
        assert!(!decision.is_allow() && charges == 0);
        // A &Policy is the top level's view.
        let b = call("delete_run", "{}");
        let body = inspect(b.as_bytes()).unwrap();
        assert_eq!(decide_body(&p, &body), decide_body(p.view(), &body),);
        assert_ne!(
            decide_body(&p, &body),
            decide_body(p.for_caller(&admin), &body)
        );
    }

    /// Look-alikes are judged against the caller's rules (issues 13 and 14): a key a profile governs (deny,
    /// approval, a limit, `hide`) has look-alikes for that profile's callers only; a key the top level governs,
    /// for every caller that inherits it; a profile with `inherit: false` governs only its own keys. Pins are
    /// the same for every caller.
    #[test]
    fn look_alikes_follow_the_callers_profile() {
        use crate::caller::Caller;
        let pin = format!("sha256:{}", "a".repeat(64));
        let p = parse(
            format!(
                r#"{{"version":"1","default":"allow","approval":{{"cluster":"a"}},
            "callers":{{"jwt":{{"metadata":"jwt_payload","groups":"groups"}}}},
            "pins":{{"tools":{{"get_run":"{pin}"}}}},
            "tools":{{"delete_run":{{"action":"deny"}}}},
            "profiles":[
              {{"name":"ops","match":{{"groups":["ops"]}},"hide":["vault_*"],
               "tools":{{"drop_table":{{"action":"deny"}},"tag_run":{{"action":"require_approval"}},
                        "search":{{"rate_limit":"5/minute"}}}}}},
              {{"name":"solo","match":{{"groups":["solo"]}},"inherit":false,"default":"allow",
               "tools":{{"own_key":{{"action":"deny"}}}}}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let ops = Caller {
            subject: Some("o".into()),
            groups: vec!["ops".into()],
            principal: None,
        };
        let solo = Caller {
            subject: Some("s".into()),
            groups: vec!["solo".into()],
            principal: None,
        };
        let d = |c: &Caller, name: &str| {
            let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": name}})
                .to_string();
            let b = inspect(body.as_bytes()).unwrap();
            decide_call(p.for_caller(c), b.messages[0].tool_call().unwrap())
        };
        let look_alike = |d: Decision<'_>, key: Option<&str>| match d {
            Decision::Deny { rule, reason } => {
                assert!(reason.contains("look-alike"), "{reason}");
                assert_eq!(rule, key);
            }
            other => panic!("{other:?}"),
        };
        // The profile's own governed keys, its hide, the inherited top-level key and the pinned name.
        look_alike(d(&ops, "DROP_TABLE"), Some("drop_table"));
        look_alike(d(&ops, "ｔａｇ_ｒｕｎ"), Some("tag_run"));
        look_alike(d(&ops, "Search"), Some("search"));
        look_alike(d(&ops, "Vault_Key"), Some("vault_*"));
        look_alike(d(&ops, "Delete_Run"), Some("delete_run"));
        look_alike(d(&ops, "GET_RUN"), Some("get_run"));
        // The same names for a caller without the profile: only what the top level governs.
        for name in ["DROP_TABLE", "ｔａｇ_ｒｕｎ", "Search", "Vault_Key"] {
            assert!(d(&Caller::ANONYMOUS, name).is_allow(), "{name}");
        }
        look_alike(d(&Caller::ANONYMOUS, "Delete_Run"), Some("delete_run"));
        look_alike(d(&Caller::ANONYMOUS, "GET_RUN"), Some("get_run"));
        // inherit: false: its own key, not the top level's; pins still apply.
        look_alike(d(&solo, "OWN_KEY"), Some("own_key"));
        assert!(d(&solo, "Delete_Run").is_allow());
        assert!(d(&Caller::ANONYMOUS, "OWN_KEY").is_allow());
        look_alike(d(&solo, "GET_RUN"), Some("get_run"));
        // The keys themselves are decided by the rules.
        assert!(
            matches!(d(&ops, "drop_table"), Decision::Deny { rule: Some("drop_table"), ref reason } if !reason.contains("look-alike"))
        );
        assert!(d(&Caller::ANONYMOUS, "drop_table").is_allow());
    }

    /// Conditions see in the partial arguments exactly what they would see in the whole: every path of a
    /// set, looked up in `args_at` of the set, against the full parse.
    #[test]
    fn partial_arguments_look_up_like_whole_ones() {
        let docs = [
            r#"{"a":1,"b":{"c":[10,{"d":"x"},null],"e":{}},"f":[[1,2],[3]],"g":"s","h\u0069":true}"#,
            r#"{"rows":[{"k":"m","v":0.5},{"k":"n","v":1e2}],"limit":10,"A":{"a":{"a":[]}}}"#,
            r#"{ "x" : [ 1 , "]" , "}\"" , { "y" : [ ] } ] , "z" : -0.0 }"#,
            r#"{}"#,
            r#"{"0":{"1":2},"01":3,"":{"":4}}"#,
        ];
        let paths: Vec<Vec<String>> = [
            "", "a", "b", "b.c", "b.c.0", "b.c.1", "b.c.1.d", "b.c.01", "b.c.+1", "b.c.3",
            "b.c.-1", "b.e", "b.e.x", "f.0.1", "f.1", "f.1.0.0", "g", "g.0", "hi", "h\\u0069",
            "rows.1.v", "rows.0", "rows", "limit", "A.a.a", "A.a.a.0", "x.3.y", "x.1", "x.2", "z",
            "0.1", "01", "1", "..", ".", "a.b",
        ]
        .iter()
        .map(|p| {
            if p.is_empty() {
                Vec::new()
            } else {
                p.split('.').map(String::from).collect()
            }
        })
        .collect();
        for doc in docs {
            let whole: Value = serde_json::from_str(doc).unwrap();
            for (i, p) in paths.iter().enumerate() {
                for q in paths.iter().skip(i) {
                    for set in [vec![&p[..]], vec![&p[..], &q[..]], vec![&q[..], &p[..]]] {
                        let partial = args_at(doc, set.iter().copied()).unwrap();
                        for path in &set {
                            assert_eq!(
                                lookup(Some(&partial), path),
                                lookup(Some(&whole), path),
                                "{doc} {set:?} at {path:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
