//! `profiles`: an ordered list of caller profiles. Each has a unique `name`, a `match` (`subject`, `groups`,
//! `principal`, `authenticated`: every given key must hold, each on an identity `callers` reads), `inherit`,
//! and the rule-set fields of the top level ([`Sets::parse`]). Each profile's rules are merged here, once,
//! with the top level's: a profile key replaces the top-level key of the same spelling, the others are
//! inherited, the profile's defaults replace the top level's when given, and the `hide` lists add up.
//! With `inherit: false` the profile is read as if it were the whole policy (the format's own defaults).

use super::errors::{at_key, kind, Errs};
use super::fields::{open_object, Obj, MATCH, PROFILE};
use super::limits::Scopes;
use super::rules::{Draft, Sets};
use crate::policy::{is_glob, Callers, Glob, Match, Profile, RuleSet};
use serde_json::Value;

/// Most profiles in a policy (they name a metric label: a bounded set).
pub(super) const MAX_PROFILES: usize = 64;
/// Longest profile name.
const MAX_NAME: usize = 64;

/// What the profiles are parsed against: the top level's sets (to merge with), the sources `callers` reads,
/// and whether an `approval` section exists.
pub(super) struct Context<'a> {
    pub(super) top: &'a Sets,
    pub(super) callers: Option<&'a Callers>,
    pub(super) approval: bool,
}

pub(super) fn parse(errs: &mut Errs, top: &Obj, cx: &Context) -> Vec<Profile> {
    let Some(v) = top.get("profiles") else {
        return Vec::new();
    };
    let at = top.at("profiles");
    let Value::Array(list) = v else {
        errs.push(
            &at,
            format!("expected a list of profiles, got {}", kind(v)),
            "write \"profiles\": [{\"name\": \"admins\", \"match\": {\"groups\": [\"admins\"]}, \"tools\": {...}}]",
        );
        return Vec::new();
    };
    let Some(callers) = cx.callers else {
        errs.push(
            &at,
            "profiles need a `callers` section saying who the caller is",
            "add \"callers\": {\"jwt\": {\"metadata\": \"jwt_payload\", \"groups\": \"groups\"}} (or \"peer_certificate\": true)",
        );
        return Vec::new();
    };
    if list.len() > MAX_PROFILES {
        errs.push(
            &at,
            format!("{} profiles, more than {MAX_PROFILES}", list.len()),
            "merge profiles: a profile is a kind of caller (a group, a service), not one per user",
        );
        return Vec::new();
    }
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let path = format!("{at}[{i}]");
        if let Some(p) = profile(errs, &path, p, callers, cx, &mut names, i) {
            out.push(p);
        }
    }
    out
}

fn profile(
    errs: &mut Errs,
    path: &str,
    v: &Value,
    callers: &Callers,
    cx: &Context,
    names: &mut Vec<(String, usize)>,
    index: usize,
) -> Option<Profile> {
    let fix =
        "write {\"name\": \"admins\", \"match\": {\"groups\": [\"admins\"]}, \"tools\": {...}}";
    let o = open_object(errs, path, v, &PROFILE, "a profile object", fix)?;
    let before = errs.count();
    let name = name(errs, &o, names, index);
    let matcher = match o.get("match") {
        None => {
            errs.push(
                &o.at("match"),
                "missing required field",
                "add \"match\": {\"groups\": [\"...\"]} (or subject, principal, authenticated); {} matches every caller",
            );
            None
        }
        Some(m) => matcher(errs, &o.at("match"), m, callers),
    };
    let inherit = o
        .boolean(
            errs,
            "inherit",
            "true (the default) adds the profile's rules to the top level's; false makes them the caller's whole policy",
        )
        .unwrap_or(true);
    // Limit ids are hashed from the profile's name, not its place: reordering profiles keeps their counts.
    let ids = name.as_deref().map(|n| at_key("profiles", n));
    let scopes = Scopes::new(true);
    let sets = Sets::parse(errs, &o, scopes, ids, cx.top.fleet);
    if !cx.approval {
        sets.check_approval(errs);
    }
    if errs.count() != before {
        return None;
    }
    let given = |field: &str| o.get(field).is_some();
    let top = cx.top;
    let merge = |own: &Draft, top: &Draft, default_given: bool| -> RuleSet {
        if !inherit {
            return own.clone().compile();
        }
        let default = if default_given {
            own.default
        } else {
            top.default
        };
        let mut rules: Vec<_> = top
            .rules
            .iter()
            .filter(|(r, _)| !own.rules.iter().any(|(o, _)| o.key == r.key))
            .cloned()
            .collect();
        rules.extend(own.rules.iter().cloned());
        Draft { default, rules }.compile()
    };
    let mut hide = if inherit {
        top.hide.clone()
    } else {
        Vec::new()
    };
    hide.extend(sets.hide.iter().cloned());
    Some(Profile {
        name: name?,
        matcher: matcher?,
        inherit,
        tools: merge(&sets.tools, &top.tools, given("default")),
        prompts: merge(&sets.prompts, &top.prompts, given("prompts_default")),
        resources: merge(&sets.resources, &top.resources, given("resources_default")),
        hide,
        look_alikes: Default::default(),
    })
}

/// `name`: required, unique, letters, digits, `-` and `_` (it becomes a header value and a metric label).
fn name(
    errs: &mut Errs,
    o: &Obj,
    names: &mut Vec<(String, usize)>,
    index: usize,
) -> Option<String> {
    let at = o.at("name");
    let fix = "a short name of letters, digits, '-' and '_', e.g. \"ml-admins\" (it is sent as the x-mcp-profile header and used as a metric label)";
    let n = match o.get("name") {
        None => {
            errs.push(&at, "missing required field", fix);
            return None;
        }
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_NAME
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            s.clone()
        }
        Some(v) => {
            errs.push(
                &at,
                format!("invalid profile name {v} (1 to {MAX_NAME} letters, digits, '-' or '_')"),
                fix,
            );
            return None;
        }
    };
    if let Some((_, first)) = names.iter().find(|(x, _)| *x == n) {
        errs.push(
            &at,
            format!("the name \"{n}\" is already used by profiles[{first}]"),
            "give each profile its own name",
        );
        return None;
    }
    names.push((n.clone(), index));
    Some(n)
}

fn matcher(errs: &mut Errs, path: &str, v: &Value, callers: &Callers) -> Option<Match> {
    let fix = "write {\"groups\": [\"admins\"]}, {\"subject\": \"alice\"}, {\"principal\": \"spiffe://cluster.local/ns/ci/sa/*\"} or {\"authenticated\": false}; {} matches every caller";
    let o = open_object(errs, path, v, &MATCH, "an object", fix)?;
    let before = errs.count();
    let jwt = callers.jwt.as_ref();
    let subject = pattern(
        errs,
        &o,
        "subject",
        jwt.is_some().then_some("a JWT subject"),
        ("`callers.jwt`", "add \"jwt\": {\"metadata\": \"jwt_payload\"} to `callers` (the subject comes from a verified JWT)"),
    );
    let principal = pattern(
        errs,
        &o,
        "principal",
        callers.peer_certificate.then_some("a certificate principal"),
        ("`callers.peer_certificate: true`", "set \"peer_certificate\": true in `callers` (the principal is the verified client certificate's URI SAN)"),
    );
    let mut groups = Vec::new();
    if let Some(g) = o.get("groups") {
        let at = o.at("groups");
        match g {
            Value::Array(list) if !list.is_empty() => {
                for (i, x) in list.iter().enumerate() {
                    match x.as_str() {
                        Some(s) if !s.is_empty() && !is_glob(s) => groups.push(s.to_owned()),
                        Some(s) if is_glob(s) => errs.push(
                            &format!("{at}[{i}]"),
                            format!("group names are matched exactly: \"{s}\" has a wildcard"),
                            "list each group by its name",
                        ),
                        _ => errs.push(
                            &format!("{at}[{i}]"),
                            format!("expected a group name, got {x}"),
                            "e.g. \"ml-admins\"",
                        ),
                    }
                }
            }
            _ => errs.push(
                &at,
                format!("expected a non-empty list of group names, got {g}"),
                "e.g. [\"ml-admins\", \"ml-owners\"] (the profile matches a caller in any of them)",
            ),
        }
        if jwt.and_then(|j| j.groups.as_ref()).is_none() {
            errs.push(
                &at,
                "`groups` needs the claim that holds them: `callers.jwt.groups` is not set",
                match jwt {
                    Some(_) => "add \"groups\": \"groups\" (the claim's path, e.g. \"realm_access.roles\" or \"scope\") to callers.jwt",
                    None => "add \"jwt\": {\"metadata\": \"jwt_payload\", \"groups\": \"groups\"} to `callers`",
                },
            );
        }
    }
    let authenticated = o.boolean(
        errs,
        "authenticated",
        "true: callers with a verified identity; false: callers without",
    );
    if authenticated == Some(false)
        && (subject.is_some() || principal.is_some() || !groups.is_empty())
    {
        errs.push(
            &o.at("authenticated"),
            "\"authenticated\": false with a subject, groups or principal never matches (those need an identity)",
            "remove `authenticated`, or the other keys",
        );
    }
    if errs.count() != before {
        return None;
    }
    Some(Match {
        subject,
        groups,
        principal,
        authenticated,
    })
}

/// `subject` or `principal`: a non-empty name or glob, of `what` when `callers` reads it (else `None`, and
/// `needs`: the setting it needs and the fix).
fn pattern(
    errs: &mut Errs,
    o: &Obj,
    field: &str,
    what: Option<&str>,
    needs: (&str, &str),
) -> Option<(String, Glob)> {
    let v = o.get(field)?;
    let at = o.at(field);
    let Some(what) = what else {
        errs.push(
            &at,
            format!(
                "matching `{field}` needs {}, which this policy does not set",
                needs.0
            ),
            needs.1,
        );
        return None;
    };
    match v.as_str().filter(|s| !s.is_empty()) {
        Some(s) => match Glob::new(s) {
            Ok(g) => Some((s.to_owned(), g)),
            Err(e) => {
                errs.push(
                    &at,
                    format!("bad glob: {e}"),
                    "use only '*' and '?' as wildcards",
                );
                None
            }
        },
        None => {
            errs.push(
                &at,
                format!("expected {what} (a name or a glob), got {v}"),
                if field == "subject" {
                    "e.g. \"alice\" or \"svc-*\""
                } else {
                    "e.g. \"spiffe://cluster.local/ns/ci/sa/*\""
                },
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, ok, one_error};
    use crate::caller::Caller;
    use crate::limits::Scope;

    const CALLERS: &str =
        r#""callers":{"jwt":{"metadata":"jwt_payload","groups":"groups"},"peer_certificate":true}"#;

    fn doc(profiles: &str) -> String {
        format!(r#"{{"version":"1",{CALLERS},"profiles":{profiles}}}"#)
    }

    #[test]
    fn profiles_parse_in_order() {
        let p = ok(&doc(
            r#"[{"name":"a","match":{"groups":["g"]},"tools":{"x":{}}},{"name":"b","match":{}}]"#,
        ));
        assert_eq!(p.profiles.len(), 2);
        assert_eq!(p.profiles[0].name, "a");
        assert!(p.profiles[0].inherit);
        assert_eq!(p.profiles[1].name, "b");
        assert!(ok(&doc("[]")).profiles.is_empty());
    }

    #[test]
    fn profile_limits_count_per_caller_apart_from_the_top_level_and_by_name() {
        let p = ok(&format!(
            r#"{{"version":"1",{CALLERS},"tools":{{"t":{{"rate_limit":"5/minute"}},"u":{{"rate_limit":"1/minute"}}}},
            "profiles":[{{"name":"a","match":{{}},"tools":{{"t":{{"rate_limit":"5/minute"}}}}}},
                        {{"name":"b","match":{{}},"tools":{{"t":{{"rate_limit":"5/minute"}}}}}}]}}"#
        ));
        let top = p.rule_for("t").unwrap().limits[0].spec;
        let a = p.view_of(Some(0)).rule_for("t").unwrap().limits[0].spec;
        let b = p.view_of(Some(1)).rule_for("t").unwrap().limits[0].spec;
        assert_eq!(top.scope, Scope::Caller);
        assert_eq!(a.scope, Scope::Caller);
        assert!(top.id != a.id && a.id != b.id && top.id != b.id);
        // An inherited rule is the same rule: the same budget.
        assert_eq!(
            p.view_of(Some(0)).rule_for("u").unwrap().limits[0].spec,
            p.rule_for("u").unwrap().limits[0].spec
        );
        // The id follows the name, not the position.
        let swapped = ok(&format!(
            r#"{{"version":"1",{CALLERS},"profiles":[{{"name":"b","match":{{}},"tools":{{"t":{{"rate_limit":"5/minute"}}}}}},
                        {{"name":"a","match":{{}},"tools":{{"t":{{"rate_limit":"5/minute"}}}}}}]}}"#
        ));
        assert_eq!(
            swapped.view_of(Some(1)).rule_for("t").unwrap().limits[0].spec,
            a
        );
        assert!(p.has_limits());
        assert!(ok(&doc(
            r#"[{"name":"a","match":{},"tools":{"t":{"rate_limit":"5/hour"}}}]"#
        ))
        .has_limits());
        assert_eq!(
            ok(&doc(
                r#"[{"name":"a","match":{},"tools":{"t":{"rate_limit":"5/hour"}}}]"#
            ))
            .hold_secs(),
            3600
        );
    }

    #[test]
    fn defaults_replace_when_given_and_inherit_otherwise() {
        let p = ok(&format!(
            r#"{{"version":"1",{CALLERS},"default":"allow","prompts_default":"deny",
            "profiles":[{{"name":"a","match":{{}},"default":"deny"}},{{"name":"b","match":{{}}}},
                        {{"name":"c","match":{{}},"inherit":false}}]}}"#
        ));
        use crate::policy::Action::{Allow, Deny};
        let d = |i: usize| {
            let v = p.view_of(Some(i));
            (v.default(), v.prompts.default)
        };
        assert_eq!(d(0), (Deny, Deny));
        assert_eq!(d(1), (Allow, Deny));
        assert_eq!(d(2), (Deny, Allow), "the format's defaults");
    }

    #[test]
    fn profile_errors_name_the_path_and_the_fix() {
        for (profiles, path, text) in [
            (r#"{}"#, "profiles", "expected a list"),
            (r#"[1]"#, "profiles[0]", "expected a profile object"),
            (
                r#"[{"match":{}}]"#,
                "profiles[0].name",
                "missing required field",
            ),
            (
                r#"[{"name":"","match":{}}]"#,
                "profiles[0].name",
                "invalid profile name",
            ),
            (
                r#"[{"name":"a.b","match":{}}]"#,
                "profiles[0].name",
                "invalid profile name",
            ),
            (
                r#"[{"name":"a b","match":{}}]"#,
                "profiles[0].name",
                "invalid profile name",
            ),
            (
                r#"[{"name":5,"match":{}}]"#,
                "profiles[0].name",
                "invalid profile name",
            ),
            (
                r#"[{"name":"a","match":{}},{"name":"a","match":{}}]"#,
                "profiles[1].name",
                "already used by profiles[0]",
            ),
            (
                r#"[{"name":"a"}]"#,
                "profiles[0].match",
                "missing required field",
            ),
            (
                r#"[{"name":"a","match":[]}]"#,
                "profiles[0].match",
                "expected an object",
            ),
            (
                r#"[{"name":"a","match":{"group":["g"]}}]"#,
                "profiles[0].match.group",
                "unknown field",
            ),
            (
                r#"[{"name":"a","match":{"groups":[]}}]"#,
                "profiles[0].match.groups",
                "non-empty list",
            ),
            (
                r#"[{"name":"a","match":{"groups":"g"}}]"#,
                "profiles[0].match.groups",
                "non-empty list",
            ),
            (
                r#"[{"name":"a","match":{"groups":["g*"]}}]"#,
                "profiles[0].match.groups[0]",
                "matched exactly",
            ),
            (
                r#"[{"name":"a","match":{"groups":[""]}}]"#,
                "profiles[0].match.groups[0]",
                "expected a group name",
            ),
            (
                r#"[{"name":"a","match":{"subject":""}}]"#,
                "profiles[0].match.subject",
                "expected a JWT subject",
            ),
            (
                r#"[{"name":"a","match":{"subject":"a[b]"}}]"#,
                "profiles[0].match.subject",
                "bad glob",
            ),
            (
                r#"[{"name":"a","match":{"principal":7}}]"#,
                "profiles[0].match.principal",
                "expected a certificate principal",
            ),
            (
                r#"[{"name":"a","match":{"authenticated":"yes"}}]"#,
                "profiles[0].match.authenticated",
                "true or false",
            ),
            (
                r#"[{"name":"a","match":{"authenticated":false,"subject":"x"}}]"#,
                "profiles[0].match.authenticated",
                "never matches",
            ),
            (
                r#"[{"name":"a","match":{},"inherit":"no"}]"#,
                "profiles[0].inherit",
                "true or false",
            ),
            (
                r#"[{"name":"a","match":{},"tools":{"x":{"acton":"deny"}}}]"#,
                r#"profiles[0].tools["x"].acton"#,
                "unknown field",
            ),
            (
                r#"[{"name":"a","match":{},"default":"alow"}]"#,
                "profiles[0].default",
                "invalid action",
            ),
            (
                r#"[{"name":"a","match":{},"hide":"x"}]"#,
                "profiles[0].hide",
                "expected a list",
            ),
            (
                r#"[{"name":"a","match":{},"tools":{"x":{"action":"require_approval"}}}]"#,
                r#"profiles[0].tools["x"].action"#,
                "needs an `approval` section",
            ),
            (
                r#"[{"name":"a","match":{},"resources_default":"require_approval"}]"#,
                "profiles[0].resources_default",
                "needs an `approval` section",
            ),
            (
                r#"[{"name":"a","match":{},"tools":{"x":{"rate_limit":{"max":1,"window":1,"scope":"team"}}}}]"#,
                r#"profiles[0].tools["x"].rate_limit.scope"#,
                "invalid scope",
            ),
            (
                r#"[{"name":"a","match":{},"nmae":"x"}]"#,
                "profiles[0].nmae",
                "unknown field",
            ),
        ] {
            let e = one_error(&doc(profiles));
            assert_eq!(e.path, path, "{profiles}: {e}");
            assert!(e.message.contains(text), "{profiles}: {e}");
            assert!(!e.fix.is_empty(), "{profiles}");
        }
        let e = one_error(&doc(r#"[{"name":"a","match":{},"inheirt":false}]"#));
        assert!(e.fix.contains("did you mean `inherit`"), "{e}");
        // A top-level setting in a profile says where it belongs.
        let e = one_error(&doc(r#"[{"name":"a","match":{},"mode":"audit"}]"#));
        assert_eq!(e.path, "profiles[0].mode");
        assert_eq!(
            e.message,
            "`mode` is a top-level setting: it applies to every caller and cannot be set in a profile"
        );
        assert!(e.fix.starts_with("move it to the top-level object"), "{e}");
        // Every error of every profile at once.
        assert_eq!(
            errors(&doc(r#"[{"name":"a"},{"match":{},"default":"x"}]"#)).len(),
            3
        );
    }

    #[test]
    fn match_keys_need_their_source() {
        let only_peer = r#""callers":{"peer_certificate":true}"#;
        let only_jwt = r#""callers":{"jwt":{"metadata":"m"}}"#;
        for (callers, m, path, text) in [
            (only_peer, r#"{"subject":"a"}"#, "subject", "`callers.jwt`"),
            (
                only_peer,
                r#"{"groups":["a"]}"#,
                "groups",
                "callers.jwt.groups",
            ),
            (
                only_jwt,
                r#"{"groups":["a"]}"#,
                "groups",
                "callers.jwt.groups",
            ),
            (
                only_jwt,
                r#"{"principal":"spiffe://*"}"#,
                "principal",
                "peer_certificate",
            ),
        ] {
            let e = one_error(&format!(
                r#"{{"version":"1",{callers},"profiles":[{{"name":"p","match":{m}}}]}}"#
            ));
            assert_eq!(e.path, format!("profiles[0].match.{path}"), "{m}: {e}");
            assert!(
                e.message.contains(text) || e.fix.contains(text.trim_matches('`')),
                "{m}: {e}"
            );
        }
        let e = one_error(r#"{"version":"1","profiles":[{"name":"p","match":{}}]}"#);
        assert_eq!(e.path, "profiles");
        assert!(e.message.contains("need a `callers` section"), "{e}");
        // An `authenticated` match works with any source.
        let p = ok(&format!(
            r#"{{"version":"1",{only_peer},"profiles":[{{"name":"p","match":{{"authenticated":true}}}}]}}"#
        ));
        assert_eq!(p.profile_for(&Caller::ANONYMOUS), None);
        let too_many: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"name":"p{i}","match":{{}}}}"#))
            .collect();
        let e = one_error(&doc(&format!("[{}]", too_many.join(","))));
        assert!(e.message.contains("more than 64"), "{e}");
    }
}
