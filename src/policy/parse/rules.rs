//! Rule sets: `tools`, `prompts` and `resources` (objects keyed by a name or glob, each entry a rule), their
//! defaults (`default`, `prompts_default`, `resources_default`), `hide`, and the rule object itself (`action`,
//! `reason`, `conditions`, `rate_limit`); also what an action value may be. [`Sets`] parses these fields of any
//! object at any JSON path: the top level today, and an object such as a caller profile (`profiles[0]`, whose
//! errors then read `profiles[0].tools["x"].action`) without another line of rule parsing.

use super::errors::{at_key, closest, join, kind, Errs};
use super::fields::{open_object, Obj, RULE};
use super::limits::{Place, Scopes};
use super::{condition, limits};
use crate::policy::{is_glob, Action, Glob, Rule, RuleSet};
use serde_json::Value;

/// One kind of rule set: the field of its rules, the field of its default, and how messages name its keys.
struct Spec {
    rules: &'static str,
    default: &'static str,
    /// The default's default.
    fallback: Action,
    what: &'static str,
    example: &'static str,
}

const TOOLS: Spec = Spec {
    rules: "tools",
    default: "default",
    fallback: Action::Deny,
    what: "tool name",
    example: "\"get_run\": {}",
};
const PROMPTS: Spec = Spec {
    rules: "prompts",
    default: "prompts_default",
    fallback: Action::Allow,
    what: "prompt name",
    example: "\"summarise\": {}",
};
const RESOURCES: Spec = Spec {
    rules: "resources",
    default: "resources_default",
    fallback: Action::Allow,
    what: "resource URI glob",
    example: "\"file:///public/*\": {}",
};

/// The rules of one set, validated, before they are compiled for lookup.
#[derive(Clone)]
pub(super) struct Draft {
    pub(super) default: Action,
    pub(super) rules: Vec<(Rule, Option<Glob>)>,
}

impl Draft {
    fn new(spec: &Spec) -> Draft {
        Draft {
            default: spec.fallback,
            rules: Vec::new(),
        }
    }

    pub(super) fn compile(self) -> RuleSet {
        RuleSet::new(self.default, self.rules)
    }
}

/// The rule-set fields of one object. Parsed in three steps ([`Sets::parse_default`], [`Sets::parse_hide`],
/// [`Sets::parse_rules`]) because the top level reads other fields between them and reports errors in the
/// order it reads fields; an object that has only these fields uses [`Sets::parse`].
pub(super) struct Sets {
    pub(super) tools: Draft,
    pub(super) prompts: Draft,
    pub(super) resources: Draft,
    /// `hide`: tools removed from tools/list and denied.
    pub(super) hide: Vec<Glob>,
    /// The path of the object the fields are in (`""` for the document).
    at: String,
    /// What the rate limits' ids are hashed from instead of `at` (see [`Place`]): a profile's name.
    ids: Option<String>,
    /// What a rate limit's `scope` may be (set before [`Sets::parse_rules`]).
    pub(super) scopes: Scopes,
    /// The policy has a `rate_limit_service`: limits are counted by it unless they say `"counted": "proxy"`, so
    /// their windows and maximums must be ones it can count (set before [`Sets::parse_rules`]).
    pub(super) fleet: bool,
}

impl Sets {
    pub(super) fn new(obj: &Obj) -> Sets {
        Sets {
            tools: Draft::new(&TOOLS),
            prompts: Draft::new(&PROMPTS),
            resources: Draft::new(&RESOURCES),
            hide: Vec::new(),
            at: obj.path().to_owned(),
            ids: None,
            scopes: Scopes::new(false),
            fleet: false,
        }
    }

    /// Every rule-set field of `obj`, in the top level's order; rate-limit ids hashed from `ids` (when given);
    /// `fleet`: see [`Sets::fleet`].
    pub(super) fn parse(
        errs: &mut Errs,
        obj: &Obj,
        scopes: Scopes,
        ids: Option<String>,
        fleet: bool,
    ) -> Sets {
        let mut sets = Sets::new(obj);
        sets.scopes = scopes;
        sets.ids = ids;
        sets.fleet = fleet;
        sets.parse_default(errs, obj);
        sets.parse_hide(errs, obj);
        sets.parse_rules(errs, obj);
        sets
    }

    /// `default`.
    pub(super) fn parse_default(&mut self, errs: &mut Errs, obj: &Obj) {
        self.tools.default = default_of(errs, obj, &TOOLS);
    }

    /// `hide`.
    pub(super) fn parse_hide(&mut self, errs: &mut Errs, obj: &Obj) {
        let Some(v) = obj.get("hide") else {
            return;
        };
        let at = obj.at("hide");
        let Value::Array(list) = v else {
            errs.push(
                &at,
                format!("expected a list of tool names or globs, got {}", kind(v)),
                "e.g. \"hide\": [\"delete_*\"]",
            );
            return;
        };
        for (i, h) in list.iter().enumerate() {
            let path = format!("{at}[{i}]");
            match h.as_str() {
                Some(name) if !name.is_empty() => match Glob::new(name) {
                    Ok(g) => self.hide.push(g),
                    Err(e) => errs.push(
                        &path,
                        format!("bad glob: {e}"),
                        "use only '*' and '?' as wildcards",
                    ),
                },
                _ => errs.push(
                    &path,
                    format!("expected a tool name or glob, got {h}"),
                    "e.g. \"delete_*\"",
                ),
            }
        }
    }

    /// `tools`, `prompts`, `resources`, then `prompts_default` and `resources_default`.
    pub(super) fn parse_rules(&mut self, errs: &mut Errs, obj: &Obj) {
        for (spec, draft) in [
            (&TOOLS, &mut self.tools),
            (&PROMPTS, &mut self.prompts),
            (&RESOURCES, &mut self.resources),
        ] {
            let ids = self.ids.as_deref().map(|i| join(i, spec.rules));
            draft.rules = rule_set(errs, obj, spec, ids.as_deref(), self.scopes, self.fleet);
        }
        self.prompts.default = default_of(errs, obj, &PROMPTS);
        self.resources.default = default_of(errs, obj, &RESOURCES);
    }

    /// With no `approval` section, every `require_approval` (a default or a rule's action) is an error.
    pub(super) fn check_approval(&self, errs: &mut Errs) {
        let needs = "\"require_approval\" needs an `approval` section saying where to ask";
        let fix = "add \"approval\": {\"cluster\": \"<Envoy cluster of your approval service>\"}";
        let sets = [
            (&TOOLS, &self.tools),
            (&PROMPTS, &self.prompts),
            (&RESOURCES, &self.resources),
        ];
        for (spec, draft) in sets {
            if draft.default == Action::RequireApproval {
                errs.push(&join(&self.at, spec.default), needs, fix);
            }
        }
        for (spec, draft) in sets {
            let section = join(&self.at, spec.rules);
            for (r, _) in draft
                .rules
                .iter()
                .filter(|(r, _)| r.action == Action::RequireApproval)
            {
                errs.push(&join(&at_key(&section, &r.key), "action"), needs, fix);
            }
        }
    }
}

/// The action a default field names, or the default's default.
fn default_of(errs: &mut Errs, obj: &Obj, spec: &Spec) -> Action {
    obj.get(spec.default)
        .and_then(|v| action(errs, &obj.at(spec.default), v))
        .unwrap_or(spec.fallback)
}

/// `"allow"`, `"deny"` or `"require_approval"`.
pub(super) fn action(errs: &mut Errs, path: &str, v: &Value) -> Option<Action> {
    match v.as_str() {
        Some("allow") => Some(Action::Allow),
        Some("deny") => Some(Action::Deny),
        Some("require_approval") => Some(Action::RequireApproval),
        _ => {
            let fix = match v
                .as_str()
                .and_then(|s| closest(s, &["allow", "deny", "require_approval"]))
            {
                Some(s) => {
                    format!("did you mean \"{s}\"? Use \"allow\", \"deny\" or \"require_approval\"")
                }
                None => "use \"allow\", \"deny\" or \"require_approval\"".into(),
            };
            errs.push(path, format!("invalid action {v}"), fix);
            None
        }
    }
}

/// The valid rules of one set (its field absent: none); rate-limit ids hashed from `ids`, else its path;
/// `fleet`: see [`Sets::fleet`].
fn rule_set(
    errs: &mut Errs,
    obj: &Obj,
    spec: &Spec,
    ids: Option<&str>,
    scopes: Scopes,
    fleet: bool,
) -> Vec<(Rule, Option<Glob>)> {
    let section = obj.at(spec.rules);
    let mut rules = Vec::new();
    match obj.get(spec.rules) {
        None => {}
        Some(Value::Object(entries)) => {
            for (key, rule) in entries {
                let place = Place {
                    section: ids.unwrap_or(&section),
                    key,
                    scopes,
                    fleet,
                };
                if let Some(r) = parse_rule(errs, &section, &place, rule) {
                    rules.push(r);
                }
            }
        }
        Some(v) => errs.push(
            &section,
            format!("expected an object keyed by {}, got {}", spec.what, kind(v)),
            format!("write \"{}\": {{{}}}", spec.rules, spec.example),
        ),
    }
    rules
}

/// One entry `place.key` of the set at `section`; `None` when it has an error.
fn parse_rule(
    errs: &mut Errs,
    section: &str,
    place: &Place,
    v: &Value,
) -> Option<(Rule, Option<Glob>)> {
    let key = place.key;
    let path = at_key(section, key);
    let before = errs.count();
    if key.is_empty() {
        errs.push(
            &path,
            "empty tool name",
            "use a tool name or a glob such as \"get_*\"",
        );
    }
    let glob = if is_glob(key) || key.contains(['[', ']', '{', '}', '\\']) {
        match Glob::new(key) {
            Ok(g) => Some(g),
            Err(e) => {
                errs.push(
                    &path,
                    format!("bad glob: {e}"),
                    "use only '*' (any run of characters) and '?' (one character)",
                );
                None
            }
        }
    } else {
        None
    };
    let fix = "write {} to allow, or {\"action\": \"deny\", \"reason\": \"...\"}";
    let obj = open_object(errs, &path, v, &RULE, "a rule object", fix)?;
    let act = match obj.get("action") {
        None => Some(Action::Allow),
        Some(a) => action(errs, &obj.at("action"), a),
    };
    let reason = match obj.get("reason") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(r) => {
            errs.push(
                &obj.at("reason"),
                format!("expected a non-empty string, got {r}"),
                "write the reason the agent should see, or remove the field",
            );
            None
        }
    };
    let mut conditions = Vec::new();
    match obj.get("conditions") {
        None => {}
        Some(Value::Array(list)) => {
            let at = obj.at("conditions");
            for (i, c) in list.iter().enumerate() {
                if let Some(c) = condition::parse(errs, &format!("{at}[{i}]"), c) {
                    conditions.push(c);
                }
            }
            if act == Some(Action::Deny) && !list.is_empty() {
                errs.push(
                    &at,
                    "conditions on a deny rule have no effect (the call is denied anyway)",
                    "remove `conditions`, or make the rule allow calls only when they hold",
                );
            }
        }
        Some(c) => errs.push(
            &obj.at("conditions"),
            format!("expected a list of conditions, got {}", kind(c)),
            "write [{\"path\": \"args.x\", \"op\": \"eq\", \"value\": 1}]",
        ),
    }
    let mut limits = Vec::new();
    if let Some(rl) = obj.get("rate_limit") {
        let at = obj.at("rate_limit");
        limits = limits::parse(errs, &at, place, rl);
        if act == Some(Action::Deny) {
            errs.push(
                &at,
                "a rate limit on a deny rule has no effect (the call is denied anyway)",
                "remove `rate_limit`, or make the rule allow calls",
            );
        }
    }
    if errs.count() != before {
        return None;
    }
    let action = act?;
    Some((
        Rule {
            key: key.to_owned(),
            action,
            reason,
            conditions,
            limits,
        },
        glob,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::errors::Errs;
    use super::super::fields::{open, TOP};
    use super::super::limits::Scopes;
    use super::super::testing::{ok, one_error};
    use super::Sets;
    use crate::policy::Action;
    use serde_json::{Map, Value};

    /// What a caller profile does: the rule-set fields of an object inside the policy, at its own path, its
    /// limits counted apart from the top level's.
    #[test]
    fn rule_sets_parse_inside_any_object() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"default": "allow", "hide": ["x*"], "prompts_default": "nope",
                "tools": {"t": {"action": "require_approval"}, "l": {"rate_limit": "1/minute"},
                          "bad": {"acton": "deny"}}}"#,
        )
        .unwrap();
        let mut errs = Errs(Vec::new());
        // TOP stands in for the table of such an object.
        let obj = open(&mut errs, "profiles[0]", &doc, &TOP);
        let sets = Sets::parse(&mut errs, &obj, Scopes::new(false), None, false);
        sets.check_approval(&mut errs);
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                r#"profiles[0].tools["bad"].acton"#,
                "profiles[0].prompts_default",
                r#"profiles[0].tools["t"].action"#,
            ]
        );
        assert_eq!(sets.tools.default, Action::Allow);
        assert!(sets.hide.iter().any(|g| g.matches("xy")));
        let top = ok(r#"{"version":"1","tools":{"l":{"rate_limit":"1/minute"}}}"#);
        let (inner, _) = sets.tools.rules.iter().find(|(r, _)| r.key == "l").unwrap();
        assert_ne!(
            inner.limits[0].spec.id,
            top.rule_for("l").unwrap().limits[0].spec.id
        );
    }

    #[test]
    fn default_is_deny_and_allow_is_accepted() {
        assert_eq!(ok(r#"{"version":"1"}"#).default, Action::Deny);
        assert_eq!(
            ok(r#"{"version":"1","default":"allow"}"#).default,
            Action::Allow
        );
    }

    #[test]
    fn prompts_and_resources() {
        let p = ok(
            r#"{"version":"1","prompts":{"summarise":{},"admin_*":{"action":"deny","reason":"no"}},
            "resources":{"file:///public/*":{},"file:///*":{"action":"deny"}},"resources_default":"deny"}"#,
        );
        assert_eq!(p.prompts.default, Action::Allow);
        assert_eq!(p.resources.default, Action::Deny);
        assert_eq!(p.prompts.rule_for("admin_x").unwrap().action, Action::Deny);
        assert_eq!(
            p.resources.rule_for("file:///public/a/b").unwrap().key,
            "file:///public/*"
        );
        assert_eq!(
            p.resources.rule_for("file:///etc/passwd").unwrap().action,
            Action::Deny
        );
        assert!(
            p.rule_for("summarise").is_none(),
            "tools and prompts are separate"
        );
        let e = one_error(r#"{"version":"1","prompts":{"p":{"acton":"deny"}}}"#);
        assert_eq!(e.path, r#"prompts["p"].acton"#);
        assert_eq!(
            one_error(r#"{"version":"1","resources":[]}"#).path,
            "resources"
        );
        assert_eq!(
            one_error(r#"{"version":"1","prompts_default":"nope"}"#).path,
            "prompts_default"
        );
        assert_eq!(
            one_error(r#"{"version":"1","prompts":{"p":{"action":"require_approval"}}}"#).path,
            r#"prompts["p"].action"#
        );
        assert_eq!(
            one_error(r#"{"version":"1","resources_default":"require_approval"}"#).path,
            "resources_default"
        );
        // The same key in two sections counts apart.
        let q = ok(
            r#"{"version":"1","tools":{"x":{"rate_limit":"1/minute"}},"prompts":{"x":{"rate_limit":"1/minute"}}}"#,
        );
        assert_ne!(
            q.tools.rule_for("x").unwrap().limits[0].spec.id,
            q.prompts.rule_for("x").unwrap().limits[0].spec.id
        );
    }

    #[test]
    fn bad_globs_and_names() {
        assert!(one_error(r#"{"version":"1","tools":{"get_[ab]":{}}}"#)
            .message
            .contains("bad glob"));
        assert!(one_error(r#"{"version":"1","tools":{"":{}}}"#)
            .message
            .contains("empty"));
    }
}
