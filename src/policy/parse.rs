//! Validation of the policy JSON into a [`Policy`]. Strict by design: a typo must never silently allow.
//! Every problem is reported (not only the first), each with the JSON path, what is wrong, and a fix.

use super::condition::{Condition, Op, OP_NAMES};
use super::glob::{is_glob, Glob};
use super::{
    Action, ExportHeaders, Identity, Mode, Policy, RateLimit, Rule, RuleSet, DEFAULT_MAX_BODY_BYTES,
};
use crate::json::{self, JsonError};
use crate::limits::{fnv1a, LimitSpec};
use serde_json::{Map, Value};
use std::fmt;

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, e.g. `tools["search_runs"].conditions[0].op` (`$` for the document itself).
    pub path: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.path, self.message, self.fix)
    }
}

/// Every problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid mcp-policy configuration ({} error{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// Largest accepted `max_body_bytes` (64 MiB): past that, buffering in Envoy is a memory hazard.
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

const TOP_FIELDS: &[&str] = &[
    "version",
    "default",
    "tools",
    "max_body_bytes",
    "hold_headers",
    "identity",
    "approval",
    "hide",
    "filter_tools_list",
    "mode",
    "export_headers",
    "prompts",
    "resources",
    "prompts_default",
    "resources_default",
];
const EXPORT_FIELDS: &[&str] = &["method", "tool"];
const APPROVAL_FIELDS: &[&str] = &["cluster", "authority", "path", "timeout_ms", "headers"];
const RULE_FIELDS: &[&str] = &["action", "reason", "conditions", "rate_limit"];
const LIMIT_FIELDS: &[&str] = &["max", "window", "scope", "cost"];
const IDENTITY_FIELDS: &[&str] = &["headers", "max_tracked"];
/// Largest `identity.max_tracked`.
pub const MAX_TRACKED_LIMIT: u64 = 1 << 20;
const CONDITION_FIELDS: &[&str] = &["path", "op", "value"];
/// Fields of the documented policy format that this build does not implement yet.
const TOP_LATER: &[&str] = &[];
const RULE_LATER: &[&str] = &[];

struct Errs(Vec<ConfigError>);

impl Errs {
    fn push(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
            fix: fix.into(),
        });
    }
}

/// Parses and validates a policy document.
pub fn parse(bytes: &[u8]) -> Result<Policy, ConfigErrors> {
    let one = |message: String, fix: &str| {
        ConfigErrors(vec![ConfigError {
            path: "$".into(),
            message,
            fix: fix.into(),
        }])
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(one(
            "the policy is empty".into(),
            "put the policy JSON in the Wasm filter's `configuration` value, e.g. {\"version\":\"1\",\"default\":\"deny\",\"tools\":{}}",
        ));
    }
    match json::check_strict(bytes) {
        Ok(()) => {}
        Err(JsonError::DuplicateKey(m)) => {
            return Err(one(
                format!("the policy repeats a key: {m}"),
                "keep one entry per key (keys are compared ignoring case)",
            ))
        }
        Err(JsonError::Syntax(m)) => {
            return Err(one(
                format!("the policy is not valid JSON: {m}"),
                "fix the JSON syntax at that line and column",
            ))
        }
    }
    // `check_strict` has accepted the bytes, so they are UTF-8 (it rejects invalid UTF-8 anywhere, as
    // `serde_json::from_slice` does). Parsing the `&str` shares serde_json's `StrRead` code with the request
    // path instead of linking a second deserializer for `SliceRead` (about 15 KB of wasm).
    let not_json = |e: &dyn fmt::Display| {
        one(
            format!("the policy is not valid JSON: {e}"),
            "fix the JSON syntax",
        )
    };
    let text = std::str::from_utf8(bytes).map_err(|e| not_json(&e))?;
    let doc: Value = serde_json::from_str(text).map_err(|e| not_json(&e))?;
    let Value::Object(top) = doc else {
        return Err(one(
            "the policy must be a JSON object".into(),
            "write {\"version\":\"1\",\"default\":\"deny\",\"tools\":{...}}",
        ));
    };
    let mut errs = Errs(Vec::new());
    check_fields(&mut errs, "", &top, TOP_FIELDS, TOP_LATER);

    match top.get("version") {
        Some(Value::String(v)) if v == "1" => {}
        Some(v) => errs.push(
            "version",
            format!("unsupported version {v}"),
            "set \"version\": \"1\" (a string)",
        ),
        None => errs.push(
            "version",
            "missing required field",
            "add \"version\": \"1\"",
        ),
    }
    let default = match top.get("default") {
        None => Action::Deny,
        Some(v) => action(&mut errs, "default", v).unwrap_or(Action::Deny),
    };
    let max_body_bytes = match top.get("max_body_bytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => {
                usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES)
            }
            _ => {
                errs.push(
                    "max_body_bytes",
                    format!("expected an integer from 1 to {MAX_BODY_LIMIT}, got {v}"),
                    "set a byte count such as 1048576",
                );
                DEFAULT_MAX_BODY_BYTES
            }
        },
    };
    let hold_headers = match top.get("hold_headers") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            errs.push(
                "hold_headers",
                format!("expected true or false, got {v}"),
                "set it to the same value as the Wasm filter's allow_on_headers_stop_iteration",
            );
            true
        }
    };
    let approval = top.get("approval").map(|v| parse_approval(&mut errs, v));
    let flag = |errs: &mut Errs, name: &str, fix: &str| match top.get(name) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            errs.push(name, format!("expected true or false, got {v}"), fix);
            true
        }
    };
    let filter_tools_list = flag(
        &mut errs,
        "filter_tools_list",
        "true removes always-denied tools from tools/list answers; false keeps them",
    );
    let mode = match top.get("mode") {
        None => Mode::Enforce,
        Some(v) => match v.as_str() {
            Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            _ => {
                errs.push("mode", format!("invalid mode {v}"), "use \"enforce\" (the default) or \"audit\" (decide and log, but forward every call)");
                Mode::Enforce
            }
        },
    };
    let export = match top.get("export_headers") {
        None | Some(Value::Bool(true)) => Some(ExportHeaders::default()),
        Some(Value::Bool(false)) => None,
        Some(Value::Object(o)) => {
            check_fields(&mut errs, "export_headers", o, EXPORT_FIELDS, &[]);
            let mut names = ExportHeaders::default();
            for (field, slot) in [("method", &mut names.method), ("tool", &mut names.tool)] {
                match o.get(field) {
                    None => {}
                    Some(Value::String(h)) if valid_header_name(h) => {
                        *slot = h.to_ascii_lowercase()
                    }
                    Some(h) => errs.push(
                        &format!("export_headers.{field}"),
                        format!("invalid header name {h}"),
                        "use a header name such as \"x-mcp-tool\"",
                    ),
                }
            }
            Some(names)
        }
        Some(v) => {
            errs.push(
                "export_headers",
                format!("expected true, false or {{\"method\": NAME, \"tool\": NAME}}, got {v}"),
                "e.g. \"export_headers\": {\"tool\": \"x-mcp-tool\"}",
            );
            None
        }
    };
    let mut hide = Vec::new();
    match top.get("hide") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, h) in list.iter().enumerate() {
                let path = format!("hide[{i}]");
                match h.as_str() {
                    Some(name) if !name.is_empty() => match Glob::new(name) {
                        Ok(g) => hide.push(g),
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
        Some(v) => errs.push(
            "hide",
            format!("expected a list of tool names or globs, got {}", kind(v)),
            "e.g. \"hide\": [\"delete_*\"]",
        ),
    }
    let identity = match top.get("identity") {
        None => Identity::default(),
        Some(v) => parse_identity(&mut errs, v),
    };
    let rules = parse_section(&mut errs, &top, "tools", "tool name", "\"get_run\": {}");
    let prompts = parse_section(
        &mut errs,
        &top,
        "prompts",
        "prompt name",
        "\"summarise\": {}",
    );
    let resources = parse_section(
        &mut errs,
        &top,
        "resources",
        "resource URI glob",
        "\"file:///public/*\": {}",
    );
    let prompts_default = top
        .get("prompts_default")
        .and_then(|v| action(&mut errs, "prompts_default", v))
        .unwrap_or(Action::Allow);
    let resources_default = top
        .get("resources_default")
        .and_then(|v| action(&mut errs, "resources_default", v))
        .unwrap_or(Action::Allow);
    if approval.is_none() {
        let needs = "\"require_approval\" needs an `approval` section saying where to ask";
        let fix = "add \"approval\": {\"cluster\": \"<Envoy cluster of your approval service>\"}";
        for (field, d) in [
            ("default", default),
            ("prompts_default", prompts_default),
            ("resources_default", resources_default),
        ] {
            if d == Action::RequireApproval {
                errs.push(field, needs, fix);
            }
        }
        for (section, set) in [
            ("tools", &rules),
            ("prompts", &prompts),
            ("resources", &resources),
        ] {
            for (r, _) in set
                .iter()
                .filter(|(r, _)| r.action == Action::RequireApproval)
            {
                errs.push(
                    &format!("{section}[{}].action", Value::String(r.key.clone())),
                    needs,
                    fix,
                );
            }
        }
    }
    if errs.0.is_empty() {
        let mut p = Policy::new(default, max_body_bytes, rules);
        p.approval = approval.flatten();
        p.hide = hide;
        p.filter_tools_list = filter_tools_list;
        p.mode = mode;
        p.export = export;
        p.hold_headers = hold_headers;
        p.identity = identity;
        p.prompts = RuleSet::new(prompts_default, prompts);
        p.resources = RuleSet::new(resources_default, resources);
        p.seal();
        Ok(p)
    } else {
        Err(ConfigErrors(errs.0))
    }
}

fn join(prefix: &str, field: &str) -> String {
    let plain = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (prefix.is_empty(), plain) {
        (true, true) => field.to_owned(),
        (false, true) => format!("{prefix}.{field}"),
        // Keys that are not plain words (empty, dots, spaces) are quoted so the path stays unambiguous.
        (_, false) => format!("{prefix}[{}]", Value::String(field.to_owned())),
    }
}

fn check_fields(
    errs: &mut Errs,
    prefix: &str,
    obj: &Map<String, Value>,
    known: &[&str],
    later: &[&str],
) {
    for k in obj.keys() {
        if known.contains(&k.as_str()) {
            continue;
        }
        let path = join(prefix, k);
        if later.contains(&k.as_str()) {
            errs.push(
                &path,
                format!("`{k}` is not supported yet by this version of mcp-policy"),
                "remove it; it is planned for a later release",
            );
        } else {
            let fix = match closest(k, known) {
                Some(s) => format!("did you mean `{s}`? Known fields: {}", known.join(", ")),
                None => format!("remove it; known fields: {}", known.join(", ")),
            };
            errs.push(&path, format!("unknown field `{k}`"), fix);
        }
    }
}

fn action(errs: &mut Errs, path: &str, v: &Value) -> Option<Action> {
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

fn parse_section(
    errs: &mut Errs,
    top: &Map<String, Value>,
    section: &str,
    what: &str,
    example: &str,
) -> Vec<(Rule, Option<Glob>)> {
    let mut rules = Vec::new();
    match top.get(section) {
        None => {}
        Some(Value::Object(entries)) => {
            for (key, rule) in entries {
                if let Some(r) = parse_rule(errs, section, key, rule) {
                    rules.push(r);
                }
            }
        }
        Some(v) => errs.push(
            section,
            format!("expected an object keyed by {what}, got {}", kind(v)),
            format!("write \"{section}\": {{{example}}}"),
        ),
    }
    rules
}

fn parse_rule(
    errs: &mut Errs,
    section: &str,
    key: &str,
    v: &Value,
) -> Option<(Rule, Option<Glob>)> {
    let path = format!("{section}[{}]", Value::String(key.to_owned()));
    let before = errs.0.len();
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
    let Value::Object(obj) = v else {
        errs.push(
            &path,
            format!("expected a rule object, got {}", kind(v)),
            "write {} to allow, or {\"action\": \"deny\", \"reason\": \"...\"}",
        );
        return None;
    };
    check_fields(errs, &path, obj, RULE_FIELDS, RULE_LATER);
    let act = match obj.get("action") {
        None => Some(Action::Allow),
        Some(a) => action(errs, &join(&path, "action"), a),
    };
    let reason = match obj.get("reason") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(r) => {
            errs.push(
                &join(&path, "reason"),
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
            for (i, c) in list.iter().enumerate() {
                if let Some(c) = parse_condition(errs, &format!("{path}.conditions[{i}]"), c) {
                    conditions.push(c);
                }
            }
            if act == Some(Action::Deny) && !list.is_empty() {
                errs.push(
                    &join(&path, "conditions"),
                    "conditions on a deny rule have no effect (the call is denied anyway)",
                    "remove `conditions`, or make the rule allow calls only when they hold",
                );
            }
        }
        Some(c) => errs.push(
            &join(&path, "conditions"),
            format!("expected a list of conditions, got {}", kind(c)),
            "write [{\"path\": \"args.x\", \"op\": \"eq\", \"value\": 1}]",
        ),
    }
    let mut limits = Vec::new();
    if let Some(rl) = obj.get("rate_limit") {
        let rl_path = join(&path, "rate_limit");
        match rl {
            Value::Array(list) if !list.is_empty() => {
                for (i, l) in list.iter().enumerate() {
                    if let Some(l) =
                        parse_limit(errs, &format!("{rl_path}[{i}]"), section, key, i, l)
                    {
                        limits.push(l);
                    }
                }
            }
            Value::Array(_) => errs.push(
                &rl_path,
                "empty list of limits",
                "remove `rate_limit` or add a limit such as \"10/minute\"",
            ),
            l => {
                if let Some(l) = parse_limit(errs, &rl_path, section, key, 0, l) {
                    limits.push(l);
                }
            }
        }
        if act == Some(Action::Deny) {
            errs.push(
                &rl_path,
                "a rate limit on a deny rule has no effect (the call is denied anyway)",
                "remove `rate_limit`, or make the rule allow calls",
            );
        }
    }
    if errs.0.len() != before {
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

const LIMIT_FIX: &str = "write \"N/second\", \"N/minute\", \"N/hour\", \"N/day\", or {\"max\": N, \"window\": SECONDS or \"minute\"}";

fn parse_limit(
    errs: &mut Errs,
    path: &str,
    section: &str,
    key: &str,
    index: usize,
    v: &Value,
) -> Option<RateLimit> {
    let before = errs.0.len();
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
        Value::Object(o) => {
            check_fields(errs, path, o, LIMIT_FIELDS, &[]);
            let max = match o.get("max") {
                Some(m) => match m.as_u64().filter(|n| *n > 0) {
                    Some(n) => n,
                    None => {
                        errs.push(
                            &join(path, "max"),
                            format!("expected a whole number above 0, got {m}"),
                            "set how many calls (or cost units) a window allows, e.g. 10",
                        );
                        0
                    }
                },
                None => {
                    errs.push(
                        &join(path, "max"),
                        "missing required field",
                        "add \"max\": N",
                    );
                    0
                }
            };
            let window = match o.get("window") {
                Some(w) => match window_secs(w) {
                    Some(n) => n,
                    None => {
                        errs.push(&join(path, "window"), format!("invalid window {w}"), "use whole seconds above 0, or \"second\", \"minute\", \"hour\", \"day\"");
                        0
                    }
                },
                None => {
                    errs.push(
                        &join(path, "window"),
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
                    errs.push(&join(path, "scope"), format!("invalid scope {s}"), "use \"session\" (per identity, the default) or \"global\" (all callers together)");
                    false
                }
            };
            let cost = match o.get("cost") {
                None => None,
                Some(Value::String(p)) => match arg_path(p) {
                    Some(segs) => Some((p.clone(), segs)),
                    None => {
                        errs.push(
                            &join(path, "cost"),
                            format!("invalid argument path \"{p}\""),
                            "name the argument holding the cost, e.g. \"args.amount\"",
                        );
                        None
                    }
                },
                Some(c) => {
                    errs.push(
                        &join(path, "cost"),
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
    if errs.0.len() != before {
        return None;
    }
    let scope = if global { "global" } else { "session" };
    let cost_path = cost.as_ref().map_or("", |(p, _)| p.as_str());
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

fn parse_approval(errs: &mut Errs, v: &Value) -> Option<crate::approval::ApprovalConfig> {
    use crate::approval::{ApprovalConfig, DEFAULT_PATH, DEFAULT_TIMEOUT_MS};
    let Value::Object(o) = v else {
        errs.push(
            "approval",
            format!("expected an object, got {}", kind(v)),
            "write {\"cluster\": \"approvals\"}",
        );
        return None;
    };
    let before = errs.0.len();
    check_fields(errs, "approval", o, APPROVAL_FIELDS, &[]);
    let text = |errs: &mut Errs, field: &str, fix: &str| -> Option<String> {
        match o.get(field) {
            None => None,
            Some(Value::String(s)) if !s.trim().is_empty() && !s.contains(['\r', '\n']) => {
                Some(s.clone())
            }
            Some(x) => {
                errs.push(
                    &format!("approval.{field}"),
                    format!("expected a non-empty one-line string, got {x}"),
                    fix,
                );
                None
            }
        }
    };
    let cluster = text(
        errs,
        "cluster",
        "name the Envoy cluster of your approval service",
    );
    if !o.contains_key("cluster") {
        errs.push(
            "approval.cluster",
            "missing required field",
            "add \"cluster\": \"<Envoy cluster of your approval service>\"",
        );
    }
    let authority = text(errs, "authority", "e.g. \"approvals.internal\"");
    let path = text(errs, "path", "e.g. \"/v1/approve\"");
    if let Some(p) = &path {
        if !p.starts_with('/') {
            errs.push(
                "approval.path",
                format!("\"{p}\" does not start with /"),
                "e.g. \"/v1/approve\"",
            );
        }
    }
    let timeout_ms = match o.get("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => match t.as_u64().filter(|n| (1..=3_600_000).contains(n)) {
            Some(n) => n,
            None => {
                errs.push(
                    "approval.timeout_ms",
                    format!("expected milliseconds from 1 to 3600000, got {t}"),
                    "e.g. 30000",
                );
                DEFAULT_TIMEOUT_MS
            }
        },
    };
    let mut headers = Vec::new();
    match o.get("headers") {
        None => {}
        Some(Value::Object(h)) => {
            for (k, val) in h {
                let ok_name = !k.is_empty()
                    && !k.starts_with(':')
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                match (ok_name, val.as_str()) {
                    (true, Some(s)) if !s.contains(['\r', '\n']) => {
                        headers.push((k.to_ascii_lowercase(), s.to_owned()))
                    }
                    _ => errs.push(
                        &format!("approval.headers[{}]", Value::String(k.clone())),
                        format!("invalid header {k}: {val}"),
                        "use a plain header name and a one-line string value",
                    ),
                }
            }
        }
        Some(h) => errs.push(
            "approval.headers",
            format!(
                "expected an object of header names to values, got {}",
                kind(h)
            ),
            "e.g. {\"authorization\": \"Bearer ...\"}",
        ),
    }
    if errs.0.len() != before {
        return None;
    }
    let cluster = cluster?;
    Some(ApprovalConfig {
        authority: authority.unwrap_or_else(|| cluster.clone()),
        path: path.unwrap_or_else(|| DEFAULT_PATH.to_owned()),
        cluster,
        timeout_ms,
        headers,
    })
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_identity(errs: &mut Errs, v: &Value) -> Identity {
    let mut id = Identity::default();
    let Value::Object(o) = v else {
        errs.push(
            "identity",
            format!("expected an object, got {}", kind(v)),
            "write {\"headers\": [\"mcp-session-id\"]}",
        );
        return id;
    };
    check_fields(errs, "identity", o, IDENTITY_FIELDS, &[]);
    if let Some(h) = o.get("headers") {
        match h.as_array() {
            Some(list) if !list.is_empty() => {
                let mut names = Vec::new();
                for (i, n) in list.iter().enumerate() {
                    match n.as_str() {
                        Some(s) if valid_header_name(s) => names.push(s.to_ascii_lowercase()),
                        _ => errs.push(
                            &format!("identity.headers[{i}]"),
                            format!("invalid header name {n}"),
                            "use a header name such as \"x-agent-id\"",
                        ),
                    }
                }
                id.headers = names;
            }
            _ => errs.push(
                "identity.headers",
                format!("expected a non-empty list of header names, got {h}"),
                "e.g. [\"x-agent-id\", \"mcp-session-id\"]",
            ),
        }
    }
    if let Some(m) = o.get("max_tracked") {
        match m
            .as_u64()
            .filter(|n| (1..=MAX_TRACKED_LIMIT).contains(n))
            .and_then(|n| u32::try_from(n).ok())
        {
            Some(n) => id.max_tracked = n,
            None => errs.push(
                "identity.max_tracked",
                format!("expected a whole number from 1 to {MAX_TRACKED_LIMIT}, got {m}"),
                "e.g. 65536 (each tracked identity costs about 160 bytes of shared memory)",
            ),
        }
    }
    id
}

/// `args.a.b` → `["a", "b"]`; `None` when the path does not start with `args` or has an empty segment.
fn arg_path(p: &str) -> Option<Vec<String>> {
    let segs: Vec<&str> = p.split('.').collect();
    if segs.first() != Some(&"args") || segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(segs.iter().skip(1).map(|s| (*s).to_owned()).collect())
}

fn parse_condition(errs: &mut Errs, path: &str, v: &Value) -> Option<Condition> {
    let Value::Object(obj) = v else {
        errs.push(
            path,
            format!("expected a condition object, got {}", kind(v)),
            "write {\"path\": \"args.x\", \"op\": \"eq\", \"value\": 1}",
        );
        return None;
    };
    let before = errs.0.len();
    check_fields(errs, path, obj, CONDITION_FIELDS, &[]);
    let arg_path = match obj.get("path") {
        Some(Value::String(p)) => match arg_path(p) {
            Some(segs) => Some((p.clone(), segs)),
            None => {
                errs.push(&join(path, "path"), format!("invalid argument path \"{p}\""), "start with `args` and separate keys with dots, e.g. \"args.max_results\" or \"args.items.0\"");
                None
            }
        },
        Some(p) => {
            errs.push(
                &join(path, "path"),
                format!("expected a string, got {p}"),
                "write \"path\": \"args.<name>\"",
            );
            None
        }
        None => {
            errs.push(
                &join(path, "path"),
                "missing required field",
                "add \"path\": \"args.<name>\"",
            );
            None
        }
    };
    let value = obj.get("value");
    let op_path = join(path, "op");
    let val_path = join(path, "value");
    let op = match obj.get("op").map(|o| (o, o.as_str())) {
        None => {
            errs.push(
                &op_path,
                "missing required field",
                format!("add \"op\": one of {}", OP_NAMES.join(", ")),
            );
            None
        }
        Some((_, Some(name))) if OP_NAMES.contains(&name) => match value {
            None => {
                errs.push(
                    &val_path,
                    "missing required field",
                    format!("add the value to compare with `{name}`"),
                );
                None
            }
            Some(val) => operand(errs, &val_path, name, val),
        },
        Some((o, name)) => {
            let fix = match name.and_then(|n| closest(n, OP_NAMES)) {
                Some(s) => format!("did you mean \"{s}\"? Ops: {}", OP_NAMES.join(", ")),
                None => format!("use one of {}", OP_NAMES.join(", ")),
            };
            errs.push(&op_path, format!("unknown op {o}"), fix);
            None
        }
    };
    if errs.0.len() != before {
        return None;
    }
    let ((path, segments), op) = (arg_path?, op?);
    Some(Condition { path, segments, op })
}

fn operand(errs: &mut Errs, path: &str, op: &str, v: &Value) -> Option<Op> {
    let number = |errs: &mut Errs| match v.as_f64() {
        Some(n) => Some(n),
        None => {
            errs.push(
                path,
                format!("`{op}` compares numbers, got {v}"),
                "use a number, e.g. 100",
            );
            None
        }
    };
    let list = |errs: &mut Errs| match v {
        Value::Array(a) => Some(a.clone()),
        _ => {
            errs.push(
                path,
                format!("`{op}` takes a list, got {v}"),
                "use a JSON array, e.g. [\"a\", \"b\"]",
            );
            None
        }
    };
    match op {
        "eq" => Some(Op::Eq(v.clone())),
        "neq" => Some(Op::Neq(v.clone())),
        "in" => list(errs).map(Op::In),
        "not_in" => list(errs).map(Op::NotIn),
        "lt" => number(errs).map(Op::Lt),
        "lte" => number(errs).map(Op::Lte),
        "gt" => number(errs).map(Op::Gt),
        "gte" => number(errs).map(Op::Gte),
        "contains" => Some(Op::Contains(v.clone())),
        "exists" => match v {
            Value::Bool(b) => Some(Op::Exists(*b)),
            _ => {
                errs.push(
                    path,
                    format!("`exists` takes true or false, got {v}"),
                    "use true (the argument must be present) or false (it must be absent)",
                );
                None
            }
        },
        "regex" => match v {
            Value::String(p) => match regex_lite::Regex::new(p) {
                Ok(r) => Some(Op::Regex(r)),
                Err(e) => {
                    let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
                    errs.push(path, format!("invalid regex \"{p}\": {first}"), "fix the pattern (Rust regex syntax; anchor with ^ and $ to match the whole value)");
                    None
                }
            },
            _ => {
                errs.push(
                    path,
                    format!("`regex` takes a pattern string, got {v}"),
                    "use a string such as \"^prod-\"",
                );
                None
            }
        },
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The known word nearest to a typo (edit distance at most 2), for "did you mean" hints.
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&word.to_ascii_lowercase(), k), *k))
        // Short words are close to everything: allow one edit below 5 characters, two above.
        .filter(|(d, k)| *d <= if word.len().min(k.len()) < 5 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.last().copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Policy {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(s: &str) -> Vec<ConfigError> {
        parse(s.as_bytes()).unwrap_err().0
    }

    fn one_error(s: &str) -> ConfigError {
        let e = errors(s);
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap()
    }

    #[test]
    fn seed_policy_loads_verbatim() {
        let p = ok(r#"{"version":"1","default":"deny","tools":{"get_run":{}}}"#);
        assert_eq!(p.default, Action::Deny);
        assert_eq!(p.rule_for("get_run").unwrap().action, Action::Allow);
        assert!(p.rule_for("delete_run").is_none());
        assert_eq!(p.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(p.hold_headers);
    }

    #[test]
    fn hold_headers_is_a_boolean() {
        assert!(!ok(r#"{"version":"1","hold_headers":false}"#).hold_headers);
        assert_eq!(
            one_error(r#"{"version":"1","hold_headers":"no"}"#).path,
            "hold_headers"
        );
    }

    #[test]
    fn issue_example_loads() {
        let p = ok(r#"{
          "version": "1", "default": "deny",
          "tools": {
            "get_run": {},
            "get_*": {"action": "allow"},
            "delete_*": {"action": "deny", "reason": "Deleting MLflow data is not allowed for agents"},
            "search_runs": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 100}],
                            "reason": "Fetch at most 100 runs at once"}
          }, "max_body_bytes": 2048
        }"#);
        assert_eq!(p.max_body_bytes, 2048);
        assert_eq!(p.rule_for("delete_experiment").unwrap().key, "delete_*");
        assert_eq!(p.rule_for("search_runs").unwrap().conditions.len(), 1);
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
    fn document_level_errors() {
        assert!(one_error("").message.contains("empty"));
        assert!(one_error("{").message.contains("not valid JSON"));
        assert!(one_error("[]").message.contains("object"));
        let e = one_error(r#"{"version":"1","tools":{"a":{},"a":{"action":"deny"}}}"#);
        assert!(e.message.contains("repeats a key"), "{e}");
    }

    #[test]
    fn version_errors() {
        assert_eq!(one_error(r#"{"tools":{}}"#).path, "version");
        assert!(one_error(r#"{"version":1}"#).fix.contains("\"1\""));
        assert_eq!(one_error(r#"{"version":"2"}"#).path, "version");
    }

    #[test]
    fn unknown_fields_suggest_the_fix() {
        let e = one_error(r#"{"version":"1","defualt":"allow"}"#);
        assert_eq!(e.path, "defualt");
        assert!(e.fix.contains("did you mean `default`"), "{e}");
        let e = one_error(r#"{"version":"1","tools":{"x":{"acton":"allow"}}}"#);
        assert_eq!(e.path, r#"tools["x"].acton"#);
        assert!(e.fix.contains("`action`"));
        let e = one_error(
            r#"{"version":"1","tools":{"x":{"conditions":[{"path":"args.a","op":"eq","value":1,"vlaue":2}]}}}"#,
        );
        assert_eq!(e.path, r#"tools["x"].conditions[0].vlaue"#);
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
    fn odd_keys_get_quoted_paths_and_short_words_no_wild_hints() {
        let e = one_error(r#"{"version":"1","":1}"#);
        assert_eq!(e.path, r#"[""]"#);
        assert_eq!(
            one_error(r#"{"version":"1","tools":{"x":{"":1}}}"#).path,
            r#"tools["x"][""]"#
        );
        assert_eq!(
            one_error(r#"{"version":"1","tools":{"x":{"a.b":1}}}"#).path,
            r#"tools["x"]["a.b"]"#
        );
        let e = one_error(r#"{"version":"1","id":1}"#);
        assert!(!e.fix.contains("did you mean"), "{e}");
        assert!(one_error(r#"{"version":"1","hid":[]}"#)
            .fix
            .contains("did you mean `hide`"));
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            one_error(r#"{"version":"1","default":"alow"}"#).fix,
            "did you mean \"allow\"? Use \"allow\", \"deny\" or \"require_approval\""
        );
        assert_eq!(one_error(r#"{"version":"1","tools":[]}"#).path, "tools");
        assert_eq!(
            one_error(r#"{"version":"1","tools":{"x":true}}"#).path,
            r#"tools["x"]"#
        );
        assert_eq!(
            one_error(r#"{"version":"1","tools":{"x":{"reason":5}}}"#).path,
            r#"tools["x"].reason"#
        );
        assert_eq!(
            one_error(r#"{"version":"1","tools":{"x":{"conditions":{}}}}"#).path,
            r#"tools["x"].conditions"#
        );
        assert_eq!(
            one_error(r#"{"version":"1","max_body_bytes":0}"#).path,
            "max_body_bytes"
        );
        assert_eq!(
            one_error(r#"{"version":"1","max_body_bytes":"1MB"}"#).path,
            "max_body_bytes"
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

    #[test]
    fn condition_errors() {
        let c = |cond: &str| {
            one_error(&format!(
                r#"{{"version":"1","tools":{{"x":{{"conditions":[{cond}]}}}}}}"#
            ))
        };
        let e = c(r#"{"path":"args.a","op":"lte"}"#);
        assert_eq!(e.path, r#"tools["x"].conditions[0].value"#);
        let e = c(r#"{"path":"args.a","op":"less","value":1}"#);
        assert!(e.message.contains("unknown op"));
        let e = c(r#"{"path":"args.a","op":"lt3","value":1}"#);
        assert!(e.fix.contains("did you mean \"lt\""), "{e}");
        assert!(c(r#"{"path":"max_results","op":"lt","value":1}"#)
            .message
            .contains("invalid argument path"));
        assert!(c(r#"{"path":"args..a","op":"lt","value":1}"#)
            .message
            .contains("invalid argument path"));
        assert!(c(r#"{"op":"lt","value":1}"#).path.ends_with(".path"));
        assert!(c(r#"{"path":"args.a","op":"lt","value":"1"}"#)
            .message
            .contains("compares numbers"));
        assert!(c(r#"{"path":"args.a","op":"in","value":1}"#)
            .message
            .contains("takes a list"));
        assert!(c(r#"{"path":"args.a","op":"exists","value":"yes"}"#)
            .message
            .contains("true or false"));
        assert!(c(r#"{"path":"args.a","op":"regex","value":"(unclosed"}"#)
            .message
            .contains("invalid regex"));
        assert!(c(r#"{"path":"args.a","op":"regex","value":1}"#)
            .message
            .contains("pattern string"));
        assert!(c("7").message.contains("condition object"));
        let e = one_error(
            r#"{"version":"1","tools":{"x":{"action":"deny","conditions":[{"path":"args.a","op":"eq","value":1}]}}}"#,
        );
        assert!(e.message.contains("no effect"));
    }

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

    #[test]
    fn approval_section() {
        let p = ok(r#"{"version":"1","default":"deny",
          "approval": {"cluster": "approvals", "authority": "approvals.internal", "path": "/v1/approve",
                       "timeout_ms": 5000, "headers": {"Authorization": "Bearer x"}},
          "tools": {"get_*": {}, "create_experiment": {"action": "require_approval", "reason": "Creating experiments needs a human"}}}"#);
        let a = p.approval.clone().unwrap();
        assert_eq!(
            (
                a.cluster.as_str(),
                a.authority.as_str(),
                a.path.as_str(),
                a.timeout_ms
            ),
            ("approvals", "approvals.internal", "/v1/approve", 5000)
        );
        assert_eq!(
            a.headers,
            vec![("authorization".to_string(), "Bearer x".to_string())]
        );
        assert_eq!(
            p.rule_for("create_experiment").unwrap().action,
            Action::RequireApproval
        );
        let d = ok(r#"{"version":"1","default":"require_approval","approval":{"cluster":"c"}}"#);
        let a = d.approval.unwrap();
        assert_eq!(
            (a.authority.as_str(), a.path.as_str(), a.timeout_ms),
            ("c", "/approve", 30_000)
        );
    }

    #[test]
    fn approval_errors() {
        let e =
            one_error(r#"{"version":"1","tools":{"create_run":{"action":"require_approval"}}}"#);
        assert_eq!(e.path, r#"tools["create_run"].action"#);
        assert!(e.message.contains("needs an `approval` section"));
        assert_eq!(
            one_error(r#"{"version":"1","default":"require_approval"}"#).path,
            "default"
        );
        for (a, path) in [
            (r#"{}"#, "approval.cluster"),
            (r#"{"cluster": ""}"#, "approval.cluster"),
            (r#"{"cluster": "c", "path": "approve"}"#, "approval.path"),
            (
                r#"{"cluster": "c", "timeout_ms": 0}"#,
                "approval.timeout_ms",
            ),
            (
                r#"{"cluster": "c", "headers": {"a b": "x"}}"#,
                r#"approval.headers["a b"]"#,
            ),
            (
                r#"{"cluster": "c", "headers": {":path": "x"}}"#,
                r#"approval.headers[":path"]"#,
            ),
            (r#"{"cluster": "c", "headers": []}"#, "approval.headers"),
            (r#"{"cluster": "c", "url": "x"}"#, "approval.url"),
            (r#""c""#, "approval"),
        ] {
            let e = one_error(&format!(r#"{{"version":"1","approval":{a}}}"#));
            assert_eq!(e.path, path, "{a}: {e}");
        }
    }

    #[test]
    fn operator_fields() {
        let p = ok(
            r#"{"version":"1","default":"deny","hide":["delete_*","secret"],"filter_tools_list":false,
                      "mode":"audit","export_headers":{"tool":"X-Tool"},"tools":{"get_*":{},"secret":{}}}"#,
        );
        assert!(p.is_hidden("delete_run") && p.is_hidden("secret") && !p.is_hidden("get_run"));
        assert!(!p.filter_tools_list);
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(
            p.export.clone().unwrap(),
            ExportHeaders {
                method: "x-mcp-method".into(),
                tool: "x-tool".into()
            }
        );
        let d = ok(r#"{"version":"1"}"#);
        assert!(d.filter_tools_list && d.mode == Mode::Enforce && d.export.is_some());
        assert!(ok(r#"{"version":"1","export_headers":false}"#)
            .export
            .is_none());
        // Client copies are removed in every case: the default names and the configured ones.
        assert_eq!(
            p.unforgeable_headers(),
            ["x-mcp-method", "x-mcp-tool", "x-tool"]
        );
        assert_eq!(d.unforgeable_headers(), ["x-mcp-method", "x-mcp-tool"]);
        let off = ok(r#"{"version":"1","export_headers":false}"#);
        assert_eq!(off.unforgeable_headers(), ["x-mcp-method", "x-mcp-tool"]);
        for (doc, path) in [
            (r#"{"version":"1","hide":"x"}"#, "hide"),
            (r#"{"version":"1","hide":[1]}"#, "hide[0]"),
            (r#"{"version":"1","hide":["a[b]"]}"#, "hide[0]"),
            (r#"{"version":"1","mode":"dry-run"}"#, "mode"),
            (
                r#"{"version":"1","filter_tools_list":"no"}"#,
                "filter_tools_list",
            ),
            (
                r#"{"version":"1","export_headers":"yes"}"#,
                "export_headers",
            ),
            (
                r#"{"version":"1","export_headers":{"tool":"a b"}}"#,
                "export_headers.tool",
            ),
            (
                r#"{"version":"1","export_headers":{"name":"x"}}"#,
                "export_headers.name",
            ),
        ] {
            assert_eq!(one_error(doc).path, path, "{doc}");
        }
    }

    #[test]
    fn identity_errors() {
        assert_eq!(
            one_error(r#"{"version":"1","identity":[]}"#).path,
            "identity"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"headers":[]}}"#).path,
            "identity.headers"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"headers":["bad header"]}}"#).path,
            "identity.headers[0]"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"max_tracked":0}}"#).path,
            "identity.max_tracked"
        );
        assert_eq!(
            one_error(r#"{"version":"1","identity":{"header":["a"]}}"#).path,
            "identity.header"
        );
    }

    #[test]
    fn reports_every_error_at_once() {
        let e = errors(
            r#"{"version":"3","default":"maybe","tools":{"a":{"action":"nope"},"b":{"reason":""}}}"#,
        );
        assert_eq!(e.len(), 4, "{e:?}");
        let text = ConfigErrors(e).to_string();
        assert!(text.starts_with("invalid mcp-policy configuration (4 errors)"));
    }
}
