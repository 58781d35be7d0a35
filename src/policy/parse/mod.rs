//! Validation of the policy JSON into a [`Policy`]. Strict by design: a typo must never silently allow.
//! Every problem is reported (not only the first), each with the JSON path, what is wrong, and a fix.
//!
//! This file drives: the document-level checks (empty, strict JSON, an object), then each top-level field in a
//! fixed order (errors are reported in that order), the cross-section check, and the compiled [`Policy`].
//! One submodule per section parses it; `fields.rs` is the one table of every object's fields (read it first);
//! `drift.rs` holds that table equal to the parser, envoy/policy.schema.json and POLICY.md.
//!
//! | file | owns |
//! | --- | --- |
//! | `fields.rs` | the field tables, the unknown-field check and its hints ([`fields::open`]) |
//! | `errors.rs` | [`ConfigError`], [`ConfigErrors`], JSON path spelling, "did you mean" |
//! | `top.rs` | `version`, `max_body_bytes`, `hold_headers`, `filter_tools_list`, `mode` |
//! | `rules.rs` | `default`, `hide`, `tools`/`prompts`/`resources` and their defaults, the rule object |
//! | `condition.rs` | a rule's `conditions` entries |
//! | `limits.rs` | a rule's `rate_limit` |
//! | `identity.rs`, `approval.rs`, `export.rs` | `identity`, `approval`, `export_headers` |
//! | `pins.rs` | `pins`, `tool_names` |
//! | `names.rs` | keys no call can match, and keys that are look-alikes of governed keys |
//! | `service.rs` | `rate_limit_service` (which limits it counts is checked in `limits.rs`) |
//! | `callers.rs`, `profiles.rs` | `callers`; `profiles`, each merged with the top level's rules |

mod approval;
mod callers;
mod condition;
#[cfg(test)]
mod drift;
mod errors;
mod export;
mod fields;
mod identity;
mod limits;
mod names;
mod pins;
mod profiles;
mod rules;
mod service;
mod top;

pub use errors::{ConfigError, ConfigErrors};

use super::{Identity, Policy};
use crate::json::{self, JsonError};
use errors::Errs;
use fields::{open, TOP};
use serde_json::{Map, Value};
use std::fmt;

/// Parses and validates a policy document.
pub fn parse(bytes: &[u8]) -> Result<Policy, ConfigErrors> {
    let doc = document(bytes)?;
    let mut errs = Errs(Vec::new());
    let top = open(&mut errs, "", &doc, &TOP);
    let mut sets = rules::Sets::new(&top);

    top::version(&mut errs, &top);
    sets.parse_default(&mut errs, &top);
    let max_body_bytes = top::max_body_bytes(&mut errs, &top);
    let hold_headers = top::hold_headers(&mut errs, &top);
    let approval = top
        .get("approval")
        .map(|v| approval::parse(&mut errs, &top.at("approval"), v));
    let rate_limit_service = top
        .get("rate_limit_service")
        .and_then(|v| service::parse(&mut errs, &top.at("rate_limit_service"), v));
    let filter_tools_list = top::filter_tools_list(&mut errs, &top);
    let mode = top::mode(&mut errs, &top);
    let export = export::parse(
        &mut errs,
        &top.at("export_headers"),
        top.get("export_headers"),
    );
    sets.parse_hide(&mut errs, &top);
    let identity = match top.get("identity") {
        None => Identity::default(),
        Some(v) => identity::parse(&mut errs, &top.at("identity"), v),
    };
    // Limits are checked against the service's windows when there is one. A section with an error counts as
    // present: its limits are still checked as the operator meant them, and the policy is invalid anyway.
    sets.fleet = top.get("rate_limit_service").is_some();
    let callers_given = top.get("callers");
    let callers = callers_given.and_then(|v| callers::parse(&mut errs, &top.at("callers"), v));
    // A limit without `scope` counts per caller when `callers` is there (even if it has an error: the
    // errors are then about `callers`, not about every limit).
    sets.scopes = limits::Scopes::new(callers_given.is_some());
    sets.parse_rules(&mut errs, &top);
    if approval.is_none() {
        sets.check_approval(&mut errs);
    }
    let pins = top
        .get("pins")
        .map(|v| pins::parse(&mut errs, &top.at("pins"), v));
    let tool_names = pins::tool_names(&mut errs, &top);
    let profiles = match (callers_given, &callers) {
        // `callers` has an error: already reported.
        (Some(_), None) => Vec::new(),
        _ => profiles::parse(
            &mut errs,
            &top,
            &profiles::Context {
                top: &sets,
                callers: callers.as_ref(),
                approval: approval.is_some(),
            },
        ),
    };

    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    let mut p = Policy::new(sets.tools.default, max_body_bytes, sets.tools.rules);
    p.approval = approval.flatten();
    p.hide = sets.hide;
    p.filter_tools_list = filter_tools_list;
    p.mode = mode;
    p.export = export;
    p.hold_headers = hold_headers;
    p.identity = identity;
    p.rate_limit_service = rate_limit_service;
    p.prompts = sets.prompts.compile();
    p.resources = sets.resources.compile();
    p.pins = pins;
    p.tool_names = tool_names;
    p.callers = callers;
    p.profiles = profiles;
    p.seal();
    names::check(&mut errs, &p);
    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    Ok(p)
}

/// The document as a JSON object, or the one error that stops everything: empty, not strict JSON, not an object.
fn document(bytes: &[u8]) -> Result<Map<String, Value>, ConfigErrors> {
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
    Ok(top)
}

/// The field `field` of `o` as a non-empty one-line string (`None` when absent or invalid; invalid is an error
/// with `fix`).
fn one_line(errs: &mut Errs, o: &fields::Obj, field: &str, fix: &str) -> Option<String> {
    match o.get(field) {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains(['\r', '\n']) => {
            Some(s.clone())
        }
        Some(x) => {
            errs.push(
                &o.at(field),
                format!("expected a non-empty one-line string, got {x}"),
                fix,
            );
            None
        }
    }
}

/// The required `cluster` field of a section that names an Envoy cluster (`approval`, `rate_limit_service`):
/// `service` says whose cluster it is in the fixes, e.g. "approval service".
fn cluster(errs: &mut Errs, o: &fields::Obj, service: &str) -> Option<String> {
    let cluster = one_line(
        errs,
        o,
        "cluster",
        &format!("name the Envoy cluster of your {service}"),
    );
    if o.get("cluster").is_none() {
        errs.push(
            &o.at("cluster"),
            "missing required field",
            format!("add \"cluster\": \"<Envoy cluster of your {service}>\""),
        );
    }
    cluster
}

/// A header name as the policy may spell one: letters, digits, `-` and `_` (so no pseudo-header).
fn valid_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the tests of every submodule parse policies with.
#[cfg(test)]
mod testing {
    use super::{parse, ConfigError, Policy};

    pub(super) fn ok(s: &str) -> Policy {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn errors(s: &str) -> Vec<ConfigError> {
        parse(s.as_bytes()).unwrap_err().0
    }

    pub(super) fn one_error(s: &str) -> ConfigError {
        let e = errors(s);
        assert_eq!(e.len(), 1, "{e:?}");
        e.into_iter().next().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{errors, ok, one_error};
    use super::ConfigErrors;
    use crate::policy::{Action, DEFAULT_MAX_BODY_BYTES};

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
    fn document_level_errors() {
        assert!(one_error("").message.contains("empty"));
        assert!(one_error("{").message.contains("not valid JSON"));
        assert!(one_error("[]").message.contains("object"));
        let e = one_error(r#"{"version":"1","tools":{"a":{},"a":{"action":"deny"}}}"#);
        assert!(e.message.contains("repeats a key"), "{e}");
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
}
