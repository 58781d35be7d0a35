//! `pins`: `{"tools": {NAME: "sha256:<hex>", ...}, "unpinned": "allow" | "hide"}`, the tool definitions the
//! operator reviewed ([`crate::pins`] says what a pin is a hash of), and `tool_names` (`"lenient"` |
//! `"strict"`), which tool names a call may carry.

use super::errors::{at_key, kind, Errs};
use super::fields::{open_object, Obj, PINS};
use crate::names;
use crate::pins::parse_pin;
use crate::policy::{Pins, ToolNames, Unpinned};
use serde_json::Value;

/// How the fixes tell where pins come from.
const HOW: &str = "run `mcp-policy pin URL POLICY` to write the pins of the server's tools";

/// The section at `path` (with its errors, whatever is valid of it).
pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Pins {
    let mut pins = Pins::default();
    let fix = "write {\"tools\": {\"get_run\": \"sha256:<64 hex digits>\"}}";
    let Some(o) = open_object(errs, path, v, &PINS, "an object", fix) else {
        return pins;
    };
    match o.get("tools") {
        None => errs.push(
            &o.at("tools"),
            "missing required field",
            format!("add \"tools\": {{NAME: \"sha256:...\"}}; {HOW}"),
        ),
        Some(Value::Object(map)) => {
            let at = o.at("tools");
            for (name, pin) in map {
                let here = at_key(&at, name);
                if name.is_empty() {
                    errs.push(
                        &here,
                        "empty tool name",
                        "pin the name as the server lists it",
                    );
                    continue;
                }
                if let Some(m) = names::malformed(name) {
                    errs.push(
                        &here,
                        format!(
                            "the tool name {m}: mcp-policy refuses every call with such a name"
                        ),
                        "pin the name as the server lists it, without it",
                    );
                    continue;
                }
                match pin.as_str().and_then(parse_pin) {
                    Some(p) => {
                        pins.insert(name, p);
                    }
                    None => errs.push(
                        &here,
                        format!("expected a pin \"sha256:\" and 64 hex digits, got {pin}"),
                        HOW,
                    ),
                }
            }
        }
        Some(t) => errs.push(
            &o.at("tools"),
            format!("expected an object of tool name → pin, got {}", kind(t)),
            format!("write {{\"get_run\": \"sha256:...\"}}; {HOW}"),
        ),
    }
    pins.unpinned = unpinned(errs, &o);
    pins
}

fn unpinned(errs: &mut Errs, o: &Obj) -> Unpinned {
    let options = [("allow", Unpinned::Allow), ("hide", Unpinned::Hide)];
    let fix = "use \"allow\" (tools without a pin follow the rules) or \"hide\" (they are unlisted and refused)";
    o.one_of(errs, "unpinned", &options, fix)
        .unwrap_or_default()
}

/// `tool_names`.
pub(super) fn tool_names(errs: &mut Errs, top: &Obj) -> ToolNames {
    let options = [
        ("lenient", ToolNames::Lenient),
        ("strict", ToolNames::Strict),
    ];
    let fix = "use \"strict\" (only names of 1-128 characters A-Z a-z 0-9 _ - ., MCP's guidance) or \"lenient\" \
               (the default: any name without control or invisible characters or surrounding white space)";
    top.one_of(errs, "tool_names", &options, fix)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, ok, one_error};
    use crate::policy::{ToolNames, Unpinned};

    fn pin(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn pins_load() {
        let p = ok(&format!(
            r#"{{"version":"1","pins":{{"tools":{{"get_run":"{}","x.y-z":"{}"}},"unpinned":"hide"}}}}"#,
            pin('a'),
            pin('B')
        ));
        let pins = p.pins.unwrap();
        assert_eq!(pins.get("get_run"), Some(pin('a').as_str()));
        assert_eq!(pins.get("x.y-z"), Some(pin('b').as_str()));
        assert_eq!(pins.get("x"), None);
        assert_eq!(pins.unpinned, Unpinned::Hide);
        let p = ok(r#"{"version":"1","pins":{"tools":{}}}"#);
        assert_eq!(p.pins.unwrap().unpinned, Unpinned::Allow);
        assert!(ok(r#"{"version":"1"}"#).pins.is_none());
    }

    #[test]
    fn pin_errors_say_where_and_how() {
        for (doc, path) in [
            (r#"{"version":"1","pins":[]}"#.to_owned(), "pins"),
            (r#"{"version":"1","pins":{}}"#.to_owned(), "pins.tools"),
            (
                r#"{"version":"1","pins":{"tools":[]}}"#.to_owned(),
                "pins.tools",
            ),
            (
                r#"{"version":"1","pins":{"tools":{"t":"abc"}}}"#.to_owned(),
                r#"pins.tools["t"]"#,
            ),
            (
                r#"{"version":"1","pins":{"tools":{"t":1}}}"#.to_owned(),
                r#"pins.tools["t"]"#,
            ),
            (
                format!(
                    r#"{{"version":"1","pins":{{"tools":{{"":"{}"}}}}}}"#,
                    pin('a')
                ),
                r#"pins.tools[""]"#,
            ),
            (
                format!(
                    r#"{{"version":"1","pins":{{"tools":{{"get\u200brun":"{}"}}}}}}"#,
                    pin('a')
                ),
                "pins.tools[\"get\u{200b}run\"]",
            ),
            (
                r#"{"version":"1","pins":{"tools":{},"unpinned":"deny"}}"#.to_owned(),
                "pins.unpinned",
            ),
            (
                r#"{"version":"1","pins":{"tools":{},"unpined":"hide"}}"#.to_owned(),
                "pins.unpined",
            ),
        ] {
            let e = one_error(&doc);
            assert_eq!(e.path, path, "{doc}: {e}");
        }
        let e = one_error(r#"{"version":"1","pins":{"tools":{"t":"sha256:00"}}}"#);
        assert!(e.fix.contains("mcp-policy pin"), "{e}");
        let e = one_error(r#"{"version":"1","pins":{"tools":{},"unpined":"hide"}}"#);
        assert!(e.fix.contains("did you mean `unpinned`"), "{e}");
        let e = one_error(&format!(
            r#"{{"version":"1","pins":{{"tools":{{" t":"{}"}}}}}}"#,
            pin('a')
        ));
        assert!(e.message.contains("white space"), "{e}");
    }

    #[test]
    fn tool_names() {
        assert_eq!(ok(r#"{"version":"1"}"#).tool_names, ToolNames::Lenient);
        assert_eq!(
            ok(r#"{"version":"1","tool_names":"strict"}"#).tool_names,
            ToolNames::Strict
        );
        assert_eq!(
            ok(r#"{"version":"1","tool_names":"lenient"}"#).tool_names,
            ToolNames::Lenient
        );
        let e = errors(r#"{"version":"1","tool_names":true}"#);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "tool_names");
        assert!(e[0].fix.contains("\"strict\""));
    }
}
