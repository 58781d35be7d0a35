//! One entry of a rule's `conditions` (`path`, `op`, `value`): the argument path, the operator name and an
//! operand of the type the operator takes, compiled into a [`Condition`] (a `regex` is compiled here, once).

use super::errors::{closest, Errs};
use super::fields::{open_object, CONDITION};
use crate::policy::{Condition, Op, OP_NAMES};
use serde_json::Value;

/// `args.a.b` → `["a", "b"]`; `None` when the path does not start with `args` or has an empty segment.
pub(super) fn arg_path(p: &str) -> Option<Vec<String>> {
    let segs: Vec<&str> = p.split('.').collect();
    if segs.first() != Some(&"args") || segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(segs.iter().skip(1).map(|s| (*s).to_owned()).collect())
}

/// The condition `v` at `path`; `None` when it has an error.
pub(super) fn parse(errs: &mut Errs, path: &str, v: &Value) -> Option<Condition> {
    let before = errs.count();
    let fix = "write {\"path\": \"args.x\", \"op\": \"eq\", \"value\": 1}";
    let obj = open_object(errs, path, v, &CONDITION, "a condition object", fix)?;
    let arg_path = match obj.get("path") {
        Some(Value::String(p)) => match arg_path(p) {
            Some(segs) => Some((p.clone(), segs)),
            None => {
                errs.push(&obj.at("path"), format!("invalid argument path \"{p}\""), "start with `args` and separate keys with dots, e.g. \"args.max_results\" or \"args.items.0\"");
                None
            }
        },
        Some(p) => {
            errs.push(
                &obj.at("path"),
                format!("expected a string, got {p}"),
                "write \"path\": \"args.<name>\"",
            );
            None
        }
        None => {
            errs.push(
                &obj.at("path"),
                "missing required field",
                "add \"path\": \"args.<name>\"",
            );
            None
        }
    };
    let value = obj.get("value");
    let op_path = obj.at("op");
    let val_path = obj.at("value");
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
    if errs.count() != before {
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

#[cfg(test)]
mod tests {
    use super::super::testing::one_error;

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
}
