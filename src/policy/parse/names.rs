//! Keys that would not do what they say ([`crate::names`] has the rules): a key with a control or invisible
//! character or white space at either end names no call (such names are refused before any rule), and an exact
//! key that is a look-alike of another governed key (`ｄelete_run` beside `delete_run: deny`) would let a
//! server that folds names run the governed tool under the key's rule. Both are errors.

use super::errors::{at_key, Errs};
use crate::mcp::Kind;
use crate::names;
use crate::policy::{is_glob, Policy};

pub(super) fn check(errs: &mut Errs, p: &Policy) {
    for (section, kind) in [
        ("tools", Kind::Tool),
        ("prompts", Kind::Prompt),
        ("resources", Kind::Resource),
    ] {
        let look_alikes = p.look_alikes(kind);
        for rule in p.set(kind).rules() {
            let key = rule.key.as_str();
            let path = at_key(section, key);
            if let Some(m) = names::malformed(key) {
                errs.push(
                    &path,
                    format!("the key {m}: no call can match it (mcp-policy refuses such names outright)"),
                    "write the name as the server lists it, without that",
                );
                continue;
            }
            if is_glob(key) {
                continue;
            }
            if let Some(other) = look_alikes.and_then(|l| l.of(key)) {
                errs.push(
                    &path,
                    format!(
                        "`{key}` is a look-alike of `{other}` (the same name once letter case and compatibility \
                         forms are folded), which the policy governs: a server that folds names could run one for the other"
                    ),
                    "keep one spelling, the one the server lists",
                );
            }
        }
    }
    for (i, h) in p.hide.iter().enumerate() {
        if let Some(m) = names::malformed(h.pattern()) {
            errs.push(
                &format!("hide[{i}]"),
                format!(
                    "the name {m}: no call can match it (mcp-policy refuses such names outright)"
                ),
                "write the name as the server lists it, without that",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, ok};

    #[test]
    fn keys_no_call_can_match() {
        for (doc, path) in [
            (
                r#"{"version":"1","tools":{"get\u200brun":{}}}"#,
                "tools[\"get\u{200b}run\"]",
            ),
            (
                r#"{"version":"1","tools":{"get_run ":{}}}"#,
                "tools[\"get_run \"]",
            ),
            (
                r#"{"version":"1","prompts":{"p\u0001":{}}}"#,
                "prompts[\"p\\u0001\"]",
            ),
            (
                r#"{"version":"1","resources":{"file:///a\u202e":{}}}"#,
                "resources[\"file:///a\u{202e}\"]",
            ),
            (r#"{"version":"1","hide":["x","\u00adsecret"]}"#, "hide[1]"),
        ] {
            let e = errors(doc);
            assert_eq!(e.len(), 1, "{doc}: {e:?}");
            assert_eq!(e[0].path, path, "{doc}");
        }
    }

    #[test]
    fn exact_keys_that_look_like_governed_keys() {
        let e = errors(
            r#"{"version":"1","default":"allow","tools":{"delete_run":{"action":"deny"},"ｄelete_run":{}}}"#,
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "tools[\"ｄelete_run\"]");
        assert!(
            e[0].message.contains("look-alike of `delete_run`"),
            "{}",
            e[0]
        );
        // Of a glob, of a hidden name, of a pinned name.
        let pin = format!("sha256:{}", "a".repeat(64));
        for (doc, path) in [
            (
                r#"{"version":"1","tools":{"Get_Run":{},"get_*":{"rate_limit":"1/minute"}}}"#
                    .to_owned(),
                r#"tools["Get_Run"]"#,
            ),
            (
                r#"{"version":"1","hide":["secret"],"tools":{"SECRET":{}}}"#.to_owned(),
                r#"tools["SECRET"]"#,
            ),
            (
                format!(
                    r#"{{"version":"1","pins":{{"tools":{{"get_run":"{pin}"}}}},"tools":{{"GET_RUN":{{}}}}}}"#
                ),
                r#"tools["GET_RUN"]"#,
            ),
            (
                r#"{"version":"1","prompts":{"ａdmin":{},"admin":{"action":"deny"}}}"#.to_owned(),
                "prompts[\"ａdmin\"]",
            ),
        ] {
            let e = errors(&doc);
            assert_eq!(e.len(), 1, "{doc}: {e:?}");
            assert_eq!(e[0].path, path, "{doc}");
        }
        // Look-alikes of keys that only allow are harmless; so are globs that overlap.
        ok(r#"{"version":"1","tools":{"get_run":{},"ｇet_run":{}}}"#);
        ok(r#"{"version":"1","tools":{"get_*":{"action":"deny"},"ＧＥＴ_*":{}}}"#);
        // Resources are URIs: not folded.
        ok(r#"{"version":"1","resources":{"file:///ａ":{"action":"deny"},"file:///a":{}}}"#);
    }
}
