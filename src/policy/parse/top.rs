//! The top level's own settings, each one value: `version`, `max_body_bytes`, `hold_headers`,
//! `filter_tools_list`, `mode`. (Its sections are parsed by their submodules: `rules` for `default`, `hide`,
//! `tools`, `prompts`, `resources` and their defaults, then `identity`, `approval`, `export`.)

use super::errors::Errs;
use super::fields::Obj;
use crate::policy::{Mode, DEFAULT_MAX_BODY_BYTES};
use serde_json::Value;

/// Largest accepted `max_body_bytes` (64 MiB): past that, buffering in Envoy is a memory hazard.
pub(super) const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// `version`: required, the string `"1"`.
pub(super) fn version(errs: &mut Errs, top: &Obj) {
    match top.get("version") {
        Some(Value::String(v)) if v == "1" => {}
        Some(v) => errs.push(
            &top.at("version"),
            format!("unsupported version {v}"),
            "set \"version\": \"1\" (a string)",
        ),
        None => errs.push(
            &top.at("version"),
            "missing required field",
            "add \"version\": \"1\"",
        ),
    }
}

pub(super) fn max_body_bytes(errs: &mut Errs, top: &Obj) -> usize {
    match top.get("max_body_bytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => {
                usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES)
            }
            _ => {
                errs.push(
                    &top.at("max_body_bytes"),
                    format!("expected an integer from 1 to {MAX_BODY_LIMIT}, got {v}"),
                    "set a byte count such as 1048576",
                );
                DEFAULT_MAX_BODY_BYTES
            }
        },
    }
}

/// A boolean field that defaults to true; `fix` says what each value means.
fn flag(errs: &mut Errs, top: &Obj, name: &str, fix: &str) -> bool {
    top.boolean(errs, name, fix).unwrap_or(true)
}

pub(super) fn hold_headers(errs: &mut Errs, top: &Obj) -> bool {
    flag(
        errs,
        top,
        "hold_headers",
        "set it to the same value as the Wasm filter's allow_on_headers_stop_iteration",
    )
}

pub(super) fn filter_tools_list(errs: &mut Errs, top: &Obj) -> bool {
    flag(
        errs,
        top,
        "filter_tools_list",
        "true removes always-denied tools from tools/list answers; false keeps them",
    )
}

pub(super) fn mode(errs: &mut Errs, top: &Obj) -> Mode {
    let options = [("enforce", Mode::Enforce), ("audit", Mode::Audit)];
    let fix = "use \"enforce\" (the default) or \"audit\" (decide and log, but forward every call)";
    top.one_of(errs, "mode", &options, fix)
        .unwrap_or(Mode::Enforce)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ok, one_error};
    use crate::policy::{ExportHeaders, Mode};

    #[test]
    fn version_errors() {
        assert_eq!(one_error(r#"{"tools":{}}"#).path, "version");
        assert!(one_error(r#"{"version":1}"#).fix.contains("\"1\""));
        assert_eq!(one_error(r#"{"version":"2"}"#).path, "version");
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
    fn operator_fields() {
        let p = ok(
            r#"{"version":"1","default":"deny","hide":["delete_*","secret"],"filter_tools_list":false,
                      "mode":"audit","export_headers":{"tool":"X-Tool"},"tools":{"get_*":{},"secret":{}}}"#,
        );
        let v = p.view();
        assert!(v.is_hidden("delete_run") && v.is_hidden("secret") && !v.is_hidden("get_run"));
        assert!(!p.filter_tools_list);
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(
            p.export.clone().unwrap(),
            ExportHeaders {
                method: "x-mcp-method".into(),
                tool: "x-tool".into(),
                profile: "x-mcp-profile".into(),
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
            ["x-mcp-method", "x-mcp-tool", "x-mcp-profile", "x-tool"]
        );
        assert_eq!(
            d.unforgeable_headers(),
            ["x-mcp-method", "x-mcp-tool", "x-mcp-profile"]
        );
        let off = ok(r#"{"version":"1","export_headers":false}"#);
        assert_eq!(
            off.unforgeable_headers(),
            ["x-mcp-method", "x-mcp-tool", "x-mcp-profile"]
        );
        let renamed = ok(r#"{"version":"1","export_headers":{"profile":"X-Who"}}"#);
        assert_eq!(renamed.export.as_ref().unwrap().profile, "x-who");
        assert_eq!(
            renamed.unforgeable_headers(),
            ["x-mcp-method", "x-mcp-tool", "x-mcp-profile", "x-who"]
        );
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
}
