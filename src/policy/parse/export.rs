//! `export_headers`: `true` (the default names), `false` (none), or `{"method": NAME, "tool": NAME,
//! "profile": NAME}`.

use super::errors::Errs;
use super::fields::{open, EXPORT_HEADERS};
use super::valid_header_name;
use crate::policy::ExportHeaders;
use serde_json::Value;

/// The header names, or `None` when export is off (or the value is invalid).
pub(super) fn parse(errs: &mut Errs, path: &str, v: Option<&Value>) -> Option<ExportHeaders> {
    match v {
        None | Some(Value::Bool(true)) => Some(ExportHeaders::default()),
        Some(Value::Bool(false)) => None,
        Some(Value::Object(map)) => {
            let o = open(errs, path, map, &EXPORT_HEADERS);
            let mut names = ExportHeaders::default();
            for (field, slot) in [
                ("method", &mut names.method),
                ("tool", &mut names.tool),
                ("profile", &mut names.profile),
            ] {
                match o.get(field) {
                    None => {}
                    Some(Value::String(h)) if valid_header_name(h) => {
                        *slot = h.to_ascii_lowercase()
                    }
                    Some(h) => errs.push(
                        &o.at(field),
                        format!("invalid header name {h}"),
                        "use a header name such as \"x-mcp-tool\"",
                    ),
                }
            }
            Some(names)
        }
        Some(v) => {
            errs.push(
                path,
                format!("expected true, false or {{\"method\": NAME, \"tool\": NAME}}, got {v}"),
                "e.g. \"export_headers\": {\"tool\": \"x-mcp-tool\"}",
            );
            None
        }
    }
}
