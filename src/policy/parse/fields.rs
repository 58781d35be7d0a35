//! The policy format at a glance: one table of fields per kind of object the policy has (the top level, a rule,
//! a condition, a rate limit, `identity`, `approval`, `rate_limit_service`, `export_headers`, `callers` and its
//! `jwt`, a profile and its `match`). A table is the one list of that object's field names: it drives the
//! unknown-field check and its "did you mean" hints ([`open`]), and the tests in `drift.rs` hold it equal to the
//! parser (every field is read), to `envoy/policy.schema.json` (at [`Fields::schema`]) and to POLICY.md (the
//! field table under [`Fields::doc`]).
//!
//! To add a field to an object: add a row to its table here (in the order the "known fields" hint should
//! list it), read it with `obj.get("name")` in the submodule that parses that object, and run `cargo test`:
//! the drift tests name what envoy/policy.schema.json and POLICY.md still lack. To add a section (an object
//! such as `callers`): a row in [`TOP`], a new table here (listed in [`ALL`]) with its schema pointer and
//! POLICY.md heading, one submodule whose `parse` opens the object with [`open_object`], and one line in
//! `parse/mod.rs` that calls it and stores the result in the [`Policy`](crate::policy::Policy).

use super::errors::{closest, join, kind, Errs};
use serde_json::{Map, Value};

/// One field of an object.
pub(super) struct Field {
    pub(super) name: &'static str,
    /// The object is invalid without it (the schema's `required`, "required" in POLICY.md's default column).
    #[cfg_attr(not(test), allow(dead_code))] // read by the drift tests
    pub(super) required: bool,
    /// Documented, not implemented by this build: using it is an error saying so.
    pub(super) later: bool,
    /// Its type and meaning in a few words (the schema and POLICY.md say it in full). Only the tests keep it
    /// (in their messages): the filter has no use for it, and it would add about 1 KB to the wasm.
    #[cfg(test)]
    pub(super) what: &'static str,
}

const fn optional(name: &'static str, what: &'static str) -> Field {
    Field::new(name, what, false, false)
}

const fn required(name: &'static str, what: &'static str) -> Field {
    Field::new(name, what, true, false)
}

/// A field the schema and POLICY.md document but this build does not implement yet.
#[allow(dead_code)] // no field is planned-only today
const fn later(name: &'static str, what: &'static str) -> Field {
    Field::new(name, what, false, true)
}

impl Field {
    const fn new(name: &'static str, what: &'static str, required: bool, later: bool) -> Field {
        #[cfg(not(test))]
        let _ = what;
        Field {
            name,
            required,
            later,
            #[cfg(test)]
            what,
        }
    }
}

/// The fields of one kind of object.
pub(super) struct Fields {
    /// How the drift tests name this kind, e.g. `rule`.
    #[cfg_attr(not(test), allow(dead_code))] // read by the drift tests
    pub(super) object: &'static str,
    /// Where envoy/policy.schema.json lists these fields: a JSON pointer to a `properties` object.
    #[cfg_attr(not(test), allow(dead_code))] // read by the drift tests
    pub(super) schema: &'static str,
    /// The POLICY.md heading whose field table documents them.
    #[cfg_attr(not(test), allow(dead_code))] // read by the drift tests
    pub(super) doc: &'static str,
    /// In the order the unknown-field fix lists them.
    pub(super) fields: &'static [Field],
    /// The object this one sits in, when some of its fields may be written here by mistake (a top-level
    /// setting in a profile): such a field gets an error saying where it belongs.
    pub(super) outer: Option<&'static Fields>,
}

impl Fields {
    /// The fields this build accepts (not the `later` ones).
    fn known(&self) -> impl Iterator<Item = &'static str> {
        self.fields.iter().filter(|f| !f.later).map(|f| f.name)
    }

    fn is_later(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.later && f.name == name)
    }
}

/// The policy document itself.
#[rustfmt::skip]
pub(super) const TOP: Fields = Fields {
    object: "top-level",
    schema: "/properties",
    doc: "## Top-level fields",
    fields: &[
        required("version",           "\"1\": the format version"),
        optional("default",           "action for a tools/call no `tools` key matches (deny)"),
        optional("tools",             "tool name or glob → rule"),
        optional("max_body_bytes",    "integer 1…64 MiB: larger bodies get 413"),
        optional("hold_headers",      "boolean: hold request headers while the body is read (true)"),
        optional("identity",          "object: who session-scoped limits count"),
        optional("approval",          "object: where require_approval calls are sent"),
        optional("rate_limit_service", "object: Envoy's rate limit service counting limits fleet-wide"),
        optional("hide",              "list of tool names/globs removed from tools/list and denied"),
        optional("filter_tools_list", "boolean: also unlist always-denied tools (true)"),
        optional("mode",              "\"enforce\" | \"audit\" (enforce)"),
        optional("export_headers",    "true | false | object: upstream headers naming method and tool"),
        optional("prompts",           "prompt name or glob → rule"),
        optional("resources",         "resource URI or glob → rule"),
        optional("prompts_default",   "action for a prompt no key matches (allow)"),
        optional("resources_default", "action for a resource no key matches (allow)"),
        optional("pins",              "object: reviewed tool definitions (hashes)"),
        optional("tool_names",        "\"lenient\" | \"strict\": which tool names calls may carry (lenient)"),
        optional("callers",           "object: where verified caller identities come from"),
        optional("profiles",          "ordered list of caller profiles, the first match applies"),
    ],
    outer: None,
};

/// One entry of `tools`, `prompts` or `resources`.
#[rustfmt::skip]
pub(super) const RULE: Fields = Fields {
    object: "rule",
    schema: "/$defs/rule/properties",
    doc: "## Rules (`tools`)",
    fields: &[
        optional("action",     "\"allow\" | \"deny\" | \"require_approval\" (allow)"),
        optional("reason",     "non-empty string shown to the agent on refusal"),
        optional("conditions", "list of conditions, all must hold"),
        optional("rate_limit", "a limit or a non-empty list of limits"),
    ],
    outer: None,
};

/// One entry of a rule's `rate_limit`, in its object form (the `"N/minute"` form has no fields).
#[rustfmt::skip]
pub(super) const LIMIT: Fields = Fields {
    object: "rate limit",
    schema: "/$defs/limit/oneOf/1/properties",
    doc: "## Rate limits",
    fields: &[
        required("max",    "integer > 0: calls (or cost units) per window"),
        required("window", "seconds > 0 or second/minute/hour/day"),
        optional("scope",  "\"session\" | \"caller\" | \"global\" (caller with `callers`, else session)"),
        optional("cost",   "argument path whose number is consumed instead of 1"),
        optional("counted", "\"proxy\" | \"service\": who counts it (service with rate_limit_service)"),
    ],
    outer: None,
};

/// One entry of a rule's `conditions`.
#[rustfmt::skip]
pub(super) const CONDITION: Fields = Fields {
    object: "condition",
    schema: "/$defs/condition/properties",
    doc: "## Conditions",
    fields: &[
        required("path",  "argument path: args, then keys or indexes"),
        required("op",    "one of the ops (OP_NAMES)"),
        required("value", "operand; its type depends on op"),
    ],
    outer: None,
};

/// `identity`.
#[rustfmt::skip]
pub(super) const IDENTITY: Fields = Fields {
    object: "identity",
    schema: "/properties/identity/properties",
    doc: "## Identity",
    fields: &[
        optional("headers",     "non-empty list of header names, first present wins"),
        optional("max_tracked", "integer 1…2^20: rate-limit slots for identities"),
    ],
    outer: None,
};

/// `approval`.
#[rustfmt::skip]
pub(super) const APPROVAL: Fields = Fields {
    object: "approval",
    schema: "/$defs/approval/properties",
    doc: "## Approval",
    fields: &[
        required("cluster",    "Envoy cluster of the approval service"),
        optional("authority",  ":authority of the callout (the cluster name)"),
        optional("path",       "callout path starting with / (/approve)"),
        optional("timeout_ms", "integer 1…3600000 (30000)"),
        optional("headers",    "object header name → one-line value"),
    ],
    outer: None,
};

/// `rate_limit_service`.
#[rustfmt::skip]
pub(super) const RATE_LIMIT_SERVICE: Fields = Fields {
    object: "rate_limit_service",
    schema: "/$defs/rate_limit_service/properties",
    doc: "## Rate limit service (`rate_limit_service`)",
    fields: &[
        required("cluster",    "Envoy cluster (HTTP/2) of the rate limit service"),
        optional("domain",     "the domain of every request (mcp-policy)"),
        optional("timeout_ms", "integer 1…60000 (100)"),
        optional("on_error",   "\"deny\" | \"allow\": when the service cannot say (deny)"),
    ],
    outer: None,
};

/// `export_headers`, in its object form.
#[rustfmt::skip]
pub(super) const EXPORT_HEADERS: Fields = Fields {
    object: "export_headers",
    schema: "/properties/export_headers/oneOf/1/properties",
    doc: "## Exported headers (`export_headers`)",
    fields: &[
        optional("method", "header name for the MCP method (x-mcp-method)"),
        optional("tool",   "header name for the tool (x-mcp-tool)"),
        optional("profile", "header name for the caller's profile (x-mcp-profile)"),
    ],
    outer: None,
};

/// `callers`.
#[rustfmt::skip]
pub(super) const CALLERS: Fields = Fields {
    object: "callers",
    schema: "/properties/callers/properties",
    doc: "## Callers (`callers`)",
    fields: &[
        optional("jwt",              "object: the payload jwt_authn verified"),
        optional("peer_certificate", "boolean: the client certificate's URI SAN (false)"),
        optional("required",         "boolean: refuse requests without an identity (false)"),
    ],
    outer: None,
};

/// `callers.jwt`.
#[rustfmt::skip]
pub(super) const JWT: Fields = Fields {
    object: "callers.jwt",
    schema: "/properties/callers/properties/jwt/properties",
    doc: "### JWT (`callers.jwt`)",
    fields: &[
        required("metadata", "jwt_authn's payload_in_metadata (Istio: the issuer)"),
        optional("subject",  "claim path of the subject (sub)"),
        optional("groups",   "claim path of the groups: a list of strings or a space-separated string"),
    ],
    outer: None,
};

/// One entry of `profiles`.
#[rustfmt::skip]
pub(super) const PROFILE: Fields = Fields {
    object: "profile",
    schema: "/$defs/profile/properties",
    doc: "## Profiles (`profiles`)",
    fields: &[
        required("name",              "unique name: letters, digits, '-', '_'"),
        required("match",             "object: who the profile is for"),
        optional("inherit",           "boolean: add to the top level's rules (true) or replace them"),
        optional("default",           "action for a tools/call no key matches"),
        optional("tools",             "tool name or glob → rule"),
        optional("hide",              "list of tool names/globs, added to the top level's"),
        optional("prompts",           "prompt name or glob → rule"),
        optional("prompts_default",   "action for a prompt no key matches"),
        optional("resources",         "resource URI or glob → rule"),
        optional("resources_default", "action for a resource no key matches"),
    ],
    outer: Some(&TOP),
};

/// A profile's `match`.
#[rustfmt::skip]
pub(super) const MATCH: Fields = Fields {
    object: "match",
    schema: "/$defs/profile/properties/match/properties",
    doc: "### Match (`match`)",
    fields: &[
        optional("subject",       "JWT subject, exact or glob"),
        optional("groups",        "non-empty list of group names: any of them"),
        optional("principal",     "certificate URI SAN, exact or glob"),
        optional("authenticated", "boolean: has (true) or lacks (false) a verified identity"),
    ],
    outer: None,
};

/// `pins`.
#[rustfmt::skip]
pub(super) const PINS: Fields = Fields {
    object: "pins",
    schema: "/properties/pins/properties",
    doc: "## Pinned tool definitions (`pins`)",
    fields: &[
        required("tools",    "object tool name → \"sha256:<64 hex>\""),
        optional("unpinned", "\"allow\" | \"hide\": tools without a pin (allow)"),
    ],
    outer: None,
};

/// Every table, for the drift tests.
#[cfg(test)]
pub(super) const ALL: &[&Fields] = &[
    &TOP,
    &RULE,
    &CONDITION,
    &LIMIT,
    &IDENTITY,
    &APPROVAL,
    &RATE_LIMIT_SERVICE,
    &EXPORT_HEADERS,
    &PINS,
    &CALLERS,
    &JWT,
    &PROFILE,
    &MATCH,
];

/// A JSON object of a known kind, at a known path, whose unknown fields have been reported.
pub(super) struct Obj<'a> {
    map: &'a Map<String, Value>,
    #[cfg_attr(not(test), allow(dead_code))] // what the drift tests record reads under
    fields: &'static Fields,
    path: String,
}

/// Checks the fields of `map`, the object at `path` of kind `fields`: each unknown field is an error with a
/// "did you mean" hint or the list of known fields; a `later` field is an error saying it is not supported yet.
pub(super) fn open<'a>(
    errs: &mut Errs,
    path: &str,
    map: &'a Map<String, Value>,
    fields: &'static Fields,
) -> Obj<'a> {
    for k in map.keys() {
        if fields.known().any(|f| f == k) {
            continue;
        }
        let at = join(path, k);
        if fields.is_later(k) {
            errs.push(
                &at,
                format!("`{k}` is not supported yet by this version of mcp-policy"),
                "remove it; it is planned for a later release",
            );
        } else if let Some(outer) = fields.outer.filter(|o| o.known().any(|f| f == k)) {
            errs.push(
                &at,
                format!(
                    "`{k}` is a {} setting: it applies to every caller and cannot be set in a {}",
                    outer.object, fields.object
                ),
                format!(
                    "move it to the {} object, or remove it; a {} may set: {}",
                    outer.object,
                    fields.object,
                    fields.known().collect::<Vec<_>>().join(", ")
                ),
            );
        } else {
            let known: Vec<&str> = fields.known().collect();
            let fix = match closest(k, &known) {
                Some(s) => format!("did you mean `{s}`? Known fields: {}", known.join(", ")),
                None => format!("remove it; known fields: {}", known.join(", ")),
            };
            errs.push(&at, format!("unknown field `{k}`"), fix);
        }
    }
    Obj {
        map,
        fields,
        path: path.to_owned(),
    }
}

/// `v` as an object of kind `fields` at `path` (see [`open`]); when it is not an object, the error "expected
/// {noun}, got {its type}" with `fix`, and `None`.
pub(super) fn open_object<'a>(
    errs: &mut Errs,
    path: &str,
    v: &'a Value,
    fields: &'static Fields,
    noun: &str,
    fix: &str,
) -> Option<Obj<'a>> {
    match v {
        Value::Object(map) => Some(open(errs, path, map, fields)),
        _ => {
            errs.push(path, format!("expected {noun}, got {}", kind(v)), fix);
            None
        }
    }
}

impl<'a> Obj<'a> {
    /// The value of one of this kind's fields.
    // Not inlined: the map's key search copied into each of its callers made the wasm 5 KB larger
    // (measured; a policy is parsed once per configuration, so the call costs nothing that matters).
    #[inline(never)]
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        #[cfg(test)]
        reads::record(self.fields, name);
        self.map.get(name)
    }

    /// The value of a field that names one of `options` (JSON strings): the one named, `None` when the field
    /// is absent, and an error "invalid FIELD VALUE" with `fix` (then `None`) for anything else.
    pub(super) fn one_of<T: Copy>(
        &self,
        errs: &mut Errs,
        name: &str,
        options: &[(&str, T)],
        fix: &str,
    ) -> Option<T> {
        let v = self.get(name)?;
        let found = options
            .iter()
            .find(|(word, _)| v.as_str() == Some(word))
            .map(|(_, t)| *t);
        if found.is_none() {
            errs.push(&self.at(name), format!("invalid {name} {v}"), fix);
        }
        found
    }

    /// A boolean field: `None` when absent, or (after an error "expected true or false" with `fix`) when it
    /// is not a boolean.
    pub(super) fn boolean(&self, errs: &mut Errs, name: &str, fix: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            v => {
                errs.push(
                    &self.at(name),
                    format!("expected true or false, got {v}"),
                    fix,
                );
                None
            }
        }
    }

    /// Where this object is (`""` for the document).
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// The path of one of its fields.
    pub(super) fn at(&self, name: &str) -> String {
        join(&self.path, name)
    }
}

/// Which fields the parser asked for, per kind of object (this thread, tests only): the drift tests check that
/// every field of every table is read somewhere, so no table entry is accepted and then ignored.
#[cfg(test)]
pub(super) mod reads {
    use super::Fields;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    thread_local! {
        static READS: RefCell<BTreeSet<(&'static str, String)>> = const { RefCell::new(BTreeSet::new()) };
    }

    pub(in crate::policy::parse) fn record(fields: &Fields, name: &str) {
        READS.with(|r| r.borrow_mut().insert((fields.object, name.to_owned())));
    }

    /// Everything recorded on this thread since the last call.
    pub(in crate::policy::parse) fn take() -> BTreeSet<(&'static str, String)> {
        READS.with(|r| std::mem::take(&mut *r.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::one_error;

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
}
