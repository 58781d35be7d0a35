//! Tests: the field tables of `fields.rs` against the three other places the policy's fields are written.
//! - The parser: every field of every table is read (`Obj::get`), and nothing outside the tables is.
//! - envoy/policy.schema.json: at each table's `schema` pointer, the same field names and required fields;
//!   and every closed object of the schema (`additionalProperties: false` with `properties`) has a table.
//! - POLICY.md: under each table's `doc` heading, a field table whose rows are the same fields (the default
//!   column says `required` for the required ones); and every field table of POLICY.md belongs to a table.
//!
//! Each difference is one line naming the field, the file and the place, so a failing run says what to edit.

use super::fields::{reads, Fields, ALL};
use super::parse;
use serde_json::Value;
use std::collections::BTreeSet;

const SCHEMA_FILE: &str = "envoy/policy.schema.json";
const DOC_FILE: &str = "POLICY.md";
const TABLES: &str = "src/policy/parse/fields.rs";

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&repo_file(SCHEMA_FILE)).unwrap_or_else(|e| panic!("{SCHEMA_FILE}: {e}"))
}

fn names(f: &Fields) -> BTreeSet<&'static str> {
    f.fields.iter().map(|x| x.name).collect()
}

fn what(f: &Fields, name: &str) -> &'static str {
    f.fields
        .iter()
        .find(|x| x.name == name)
        .map_or("", |x| x.what)
}

fn required(f: &Fields) -> BTreeSet<&'static str> {
    f.fields
        .iter()
        .filter(|x| x.required)
        .map(|x| x.name)
        .collect()
}

fn report(what: &str, lines: &[String]) -> String {
    format!("{what}:\n  - {}", lines.join("\n  - "))
}

/// Every difference between the tables and the schema `schema`.
fn schema_drift(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in ALL {
        let ptr = f.schema;
        let Some(props) = schema.pointer(ptr).and_then(Value::as_object) else {
            out.push(format!(
                "{SCHEMA_FILE} has no `properties` object at #{ptr}, where the {} table of {TABLES} says its fields are",
                f.object
            ));
            continue;
        };
        let listed: BTreeSet<&str> = props.keys().map(String::as_str).collect();
        let table = names(f);
        for name in table.difference(&listed) {
            out.push(format!(
                "{SCHEMA_FILE} lacks the {} field `{name}` ({}) at #{ptr}: add it there (the filter accepts it)",
                f.object,
                what(f, name)
            ));
        }
        for name in listed.difference(&table) {
            out.push(format!(
                "{SCHEMA_FILE} has `{name}` at #{ptr}, which the {} table of {TABLES} lacks (the filter rejects it as an unknown field)",
                f.object
            ));
        }
        let parent_ptr = ptr.strip_suffix("/properties").unwrap_or(ptr);
        let parent = schema.pointer(parent_ptr);
        let in_schema: BTreeSet<&str> = parent
            .and_then(|p| p.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let in_table = required(f);
        for name in in_table.difference(&in_schema) {
            out.push(format!(
                "the {} field `{name}` is required in {TABLES} but not in {SCHEMA_FILE} (#{parent_ptr}/required)",
                f.object
            ));
        }
        for name in in_schema.difference(&in_table) {
            out.push(format!(
                "the {} field `{name}` is required in {SCHEMA_FILE} (#{parent_ptr}/required) but not in {TABLES}",
                f.object
            ));
        }
        if parent.and_then(|p| p.get("additionalProperties")) != Some(&Value::Bool(false)) {
            out.push(format!(
                "{SCHEMA_FILE}: #{parent_ptr} (the {} object) does not say \"additionalProperties\": false, but the filter rejects unknown fields",
                f.object
            ));
        }
    }
    let covered: BTreeSet<&str> = ALL.iter().map(|f| f.schema).collect();
    let mut closed = Vec::new();
    closed_objects(schema, String::new(), &mut closed);
    for (ptr, fields) in closed {
        let props = format!("{ptr}/properties");
        if !covered.contains(props.as_str()) {
            out.push(format!(
                "{SCHEMA_FILE}: the object at #{ptr} (fields {}) has no table in {TABLES}: add a `Fields` with schema \"{props}\" to its ALL",
                fields.join(", ")
            ));
        }
    }
    out
}

/// The JSON pointer and field names of every object the schema closes to unknown fields.
fn closed_objects(node: &Value, ptr: String, out: &mut Vec<(String, Vec<String>)>) {
    let step = |k: &str| format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
    match node {
        Value::Object(o) => {
            if let (Some(Value::Object(props)), Some(Value::Bool(false))) =
                (o.get("properties"), o.get("additionalProperties"))
            {
                out.push((ptr.clone(), props.keys().cloned().collect()));
            }
            for (k, v) in o {
                closed_objects(v, step(k), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                closed_objects(v, step(&i.to_string()), out);
            }
        }
        _ => {}
    }
}

/// One field table of a Markdown document: the heading it is under, and its rows (field, required).
struct DocTable {
    heading: String,
    rows: Vec<(String, bool)>,
}

/// The field tables of a Markdown document (tables whose first column is `field`), outside code blocks.
fn doc_tables(md: &str) -> Vec<DocTable> {
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_owned()).collect()
    };
    let mut out: Vec<DocTable> = Vec::new();
    let mut heading = String::new();
    let mut fenced = false;
    let mut table: Option<(DocTable, Option<usize>)> = None;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let is_row = !fenced && line.trim_start().starts_with('|');
        if !is_row {
            if let Some((t, _)) = table.take() {
                out.push(t);
            }
            if !fenced && line.starts_with('#') {
                heading = line.trim().to_owned();
            }
            continue;
        }
        let row = cells(line);
        match &mut table {
            None if row.first().map(String::as_str) == Some("field") => {
                let default_col = row.iter().position(|c| c == "default");
                let t = DocTable {
                    heading: heading.clone(),
                    rows: Vec::new(),
                };
                table = Some((t, default_col));
            }
            None => {}
            Some((t, default_col)) => {
                let Some(first) = row.first() else { continue };
                if first.starts_with("---") {
                    continue;
                }
                let name = first.trim_matches('`').to_owned();
                let req = default_col
                    .and_then(|c| row.get(c))
                    .is_some_and(|c| c == "required");
                t.rows.push((name, req));
            }
        }
    }
    if let Some((t, _)) = table {
        out.push(t);
    }
    out
}

/// Every difference between the tables and the Markdown document `md`.
fn doc_drift(md: &str) -> Vec<String> {
    let tables = doc_tables(md);
    let mut out = Vec::new();
    for f in ALL {
        let rows: Vec<&(String, bool)> = tables
            .iter()
            .filter(|t| t.heading == f.doc)
            .flat_map(|t| &t.rows)
            .collect();
        if rows.is_empty() {
            out.push(format!(
                "{DOC_FILE} has no field table under `{}`, where the {} table of {TABLES} says its fields are documented",
                f.doc, f.object
            ));
            continue;
        }
        let documented: BTreeSet<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        let table = names(f);
        for name in table.difference(&documented) {
            out.push(format!(
                "{DOC_FILE} lacks the {} field `{name}` ({}) in the field table under `{}`: add a row `| `{name}` | type | default | meaning |`",
                f.object,
                what(f, name),
                f.doc
            ));
        }
        for name in documented.difference(&table) {
            out.push(format!(
                "{DOC_FILE} documents `{name}` in the field table under `{}`, which the {} table of {TABLES} lacks (the filter rejects it as an unknown field)",
                f.doc, f.object
            ));
        }
        let in_doc: BTreeSet<&str> = rows
            .iter()
            .filter(|(_, r)| *r)
            .map(|(n, _)| n.as_str())
            .collect();
        let in_table = required(f);
        for name in in_table.difference(&in_doc) {
            out.push(format!(
                "the {} field `{name}` is required in {TABLES} but its row under `{}` in {DOC_FILE} does not say `required` in the default column",
                f.object, f.doc
            ));
        }
        for name in in_doc.difference(&in_table) {
            out.push(format!(
                "the {} field `{name}` is `required` under `{}` in {DOC_FILE} but optional in {TABLES}",
                f.object, f.doc
            ));
        }
    }
    for t in &tables {
        if !ALL.iter().any(|f| f.doc == t.heading) {
            let rows: Vec<&str> = t.rows.iter().map(|(n, _)| n.as_str()).collect();
            out.push(format!(
                "{DOC_FILE} has a field table under `{}` (fields {}) that no table of {TABLES} names as its `doc`",
                t.heading,
                rows.join(", ")
            ));
        }
    }
    out
}

#[test]
fn the_tables_match_the_schema() {
    let drift = schema_drift(&schema());
    assert!(
        drift.is_empty(),
        "{}",
        report(
            &format!("the field tables of {TABLES} and {SCHEMA_FILE} differ"),
            &drift
        )
    );
}

#[test]
fn the_tables_match_policy_md() {
    let drift = doc_drift(&repo_file(DOC_FILE));
    assert!(
        drift.is_empty(),
        "{}",
        report(
            &format!("the field tables of {TABLES} and {DOC_FILE} differ"),
            &drift
        )
    );
}

/// A policy with one object of every kind, every field set.
const EVERY_FIELD: &str = r#"{
  "version": "1", "default": "deny", "max_body_bytes": 4096, "hold_headers": false, "filter_tools_list": false,
  "mode": "audit", "export_headers": {"method": "x-m", "tool": "x-t", "profile": "x-p"}, "hide": ["secret_*"],
  "identity": {"headers": ["x-agent-id"], "max_tracked": 100},
  "approval": {"cluster": "approvals", "authority": "a.internal", "path": "/v1/approve", "timeout_ms": 100,
               "headers": {"authorization": "Bearer x"}},
  "rate_limit_service": {"cluster": "ratelimit", "domain": "d", "timeout_ms": 50, "on_error": "allow"},
  "tools": {"t": {"action": "allow", "reason": "r",
                  "conditions": [{"path": "args.n", "op": "lte", "value": 10}],
                  "rate_limit": {"max": 10, "window": 60, "scope": "global", "cost": "args.n",
                                 "counted": "service"}}},
  "prompts": {"p": {}}, "prompts_default": "deny", "resources": {"file:///*": {}}, "resources_default": "deny",
  "callers": {"jwt": {"metadata": "jwt_payload", "subject": "sub", "groups": "groups"}, "peer_certificate": true,
              "required": true},
  "profiles": [{"name": "admins", "match": {"subject": "a*", "groups": ["admins"], "principal": "spiffe://*",
                                            "authenticated": true},
                "inherit": true, "default": "allow", "hide": ["x"], "tools": {"t": {}}, "prompts": {"p": {}},
                "prompts_default": "allow", "resources": {"file:///a/*": {}}, "resources_default": "allow"}],
  "pins": {"tools": {"t": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}, "unpinned": "hide"},
  "tool_names": "strict"
}"#;

#[test]
fn the_parser_reads_every_field_of_every_table() {
    reads::take();
    if let Err(e) = parse(EVERY_FIELD.as_bytes()) {
        panic!("{e}");
    }
    let read = reads::take();
    let mut drift = Vec::new();
    for f in ALL {
        for x in f.fields.iter().filter(|x| !x.later) {
            if !read.contains(&(f.object, x.name.to_owned())) {
                drift.push(format!(
                    "the {} field `{}` is in {TABLES} but the parser never reads it (accepted, then ignored): parse it with `obj.get(\"{}\")`, and set it in EVERY_FIELD",
                    f.object, x.name, x.name
                ));
            }
        }
    }
    for (object, name) in &read {
        let known = ALL
            .iter()
            .any(|f| f.object == *object && f.fields.iter().any(|x| x.name == name));
        if !known {
            drift.push(format!(
                "the parser reads `{name}` of a {object} object, which its table in {TABLES} lacks (so a policy can never set it)"
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "{}",
        report("the parser and the field tables differ", &drift)
    );
}

/// Each of `want` starts one line of `got`, and there are no others.
fn same_lines(got: &[String], want: &[&str]) {
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "no line starts with {w:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

/// The checks above say which field drifted, and where.
#[test]
fn drift_is_named_by_field_and_place() {
    let mut s = schema();
    let limit = s
        .pointer_mut("/$defs/limit/oneOf/1/properties")
        .and_then(Value::as_object_mut)
        .unwrap();
    limit.remove("cost");
    limit.insert("burst".into(), serde_json::json!({"type": "integer"}));
    s.pointer_mut("/$defs/approval/required")
        .and_then(Value::as_array_mut)
        .unwrap()
        .clear();
    s.pointer_mut("/properties")
        .and_then(Value::as_object_mut)
        .unwrap()
        .insert(
            "quotas".into(),
            serde_json::json!({"type": "object", "additionalProperties": false,
                               "properties": {"budget": {}, "period": {}}}),
        );
    let want = [
        "envoy/policy.schema.json lacks the rate limit field `cost` (argument path whose number is consumed instead of 1) at #/$defs/limit/oneOf/1/properties",
        "envoy/policy.schema.json has `burst` at #/$defs/limit/oneOf/1/properties, which the rate limit table of src/policy/parse/fields.rs lacks",
        "the approval field `cluster` is required in src/policy/parse/fields.rs but not in envoy/policy.schema.json (#/$defs/approval/required)",
        "envoy/policy.schema.json has `quotas` at #/properties, which the top-level table",
        "envoy/policy.schema.json: the object at #/properties/quotas (fields budget, period) has no table in src/policy/parse/fields.rs",
    ];
    same_lines(&schema_drift(&s), &want);

    let md = repo_file(DOC_FILE)
        .replace("| `reason` |", "| `priority` |")
        .replace(
            "| `max` | integer > 0 | required |",
            "| `max` | integer > 0 | 1 |",
        )
        .replace("## Identity\n", "## Who\n");
    let want = [
        "POLICY.md lacks the rule field `reason` (non-empty string shown to the agent on refusal) in the field table under `## Rules (`tools`)`",
        "POLICY.md documents `priority` in the field table under `## Rules (`tools`)`, which the rule table of src/policy/parse/fields.rs lacks",
        "the rate limit field `max` is required in src/policy/parse/fields.rs but its row under `## Rate limits` in POLICY.md does not say `required`",
        "POLICY.md has no field table under `## Identity`",
        "POLICY.md has a field table under `## Who` (fields headers, max_tracked) that no table",
    ];
    same_lines(&doc_drift(&md), &want);
}
