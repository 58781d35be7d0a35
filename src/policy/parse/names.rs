//! Keys that would not do what they say ([`crate::names`] has the rules): a key with a control or invisible
//! character or white space at either end names no call (such names are refused before any rule), and an exact
//! key that is a look-alike of another governed key (`ｄelete_run` beside `delete_run: deny`) would let a
//! server that folds names run the governed tool under the key's rule. Both are errors.

use super::errors::{at_key, Errs};
use crate::mcp::Kind;
use crate::names;
use crate::policy::{is_glob, Policy, View};

pub(super) fn check(errs: &mut Errs, p: &Policy) {
    let top = p.view();
    check_view(errs, "", top, None);
    for (i, h) in p.hide.iter().enumerate() {
        malformed_hide(errs, &format!("hide[{i}]"), h.pattern());
    }
    // Each profile is judged by its own merged rules: a key is checked against the keys its caller's rules
    // govern. What the top level already reported (an inherited key, the same look-alike) is not repeated.
    for (i, profile) in p.profiles.iter().enumerate() {
        let prefix = format!("profiles[{i}].");
        check_view(errs, &prefix, p.view_of(Some(i)), Some(top));
        for h in profile.hide.iter().filter(|h| !p.hide.contains(h)) {
            malformed_hide(errs, &format!("{prefix}hide"), h.pattern());
        }
    }
}

/// The keys of one caller's rules (`top`: the top level's, when these are a profile's).
fn check_view(errs: &mut Errs, prefix: &str, view: View<'_>, top: Option<View<'_>>) {
    for (section, kind) in [
        ("tools", Kind::Tool),
        ("prompts", Kind::Prompt),
        ("resources", Kind::Resource),
    ] {
        let look_alikes = view.look_alikes(kind);
        for rule in view.set(kind).rules() {
            let key = rule.key.as_str();
            let path = at_key(&format!("{prefix}{section}"), key);
            let inherited = top.is_some_and(|t| t.set(kind).has_exact(key));
            if let Some(m) = names::malformed(key) {
                if !inherited {
                    errs.push(
                        &path,
                        format!("the key {m}: no call can match it (mcp-policy refuses such names outright)"),
                        "write the name as the server lists it, without that",
                    );
                }
                continue;
            }
            if is_glob(key) {
                continue;
            }
            let Some(other) = look_alikes.and_then(|l| l.of(key)) else {
                continue;
            };
            let reported = inherited
                && top
                    .and_then(|t| t.look_alikes(kind))
                    .and_then(|l| l.of(key))
                    .is_some();
            if !reported {
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
}

fn malformed_hide(errs: &mut Errs, path: &str, name: &str) {
    if let Some(m) = names::malformed(name) {
        errs.push(
            path,
            format!("the name {m}: no call can match it (mcp-policy refuses such names outright)"),
            "write the name as the server lists it, without that",
        );
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

    /// A profile's keys are checked against what its callers' rules govern; what the top level already
    /// reported is not repeated for every profile that inherits it.
    #[test]
    fn profile_keys() {
        let callers = r#""callers":{"jwt":{"metadata":"m","groups":"g"}}"#;
        let doc = |top: &str, profiles: &str| {
            format!(
                r#"{{"version":"1","default":"allow",{callers},"tools":{{{top}}},"profiles":[{profiles}]}}"#
            )
        };
        // A profile key that is a look-alike of a top-level governed key it inherits, and the reverse.
        for (top, profile, path) in [
            (
                r#""delete_run":{"action":"deny"}"#,
                r#""Delete_Run":{}"#,
                r#"profiles[0].tools["Delete_Run"]"#,
            ),
            (
                r#""Delete_Run":{}"#,
                r#""delete_run":{"action":"deny"}"#,
                r#"profiles[0].tools["Delete_Run"]"#,
            ),
            (
                r#""x":{}"#,
                r#""get\u200brun":{}"#,
                "profiles[0].tools[\"get\u{200b}run\"]",
            ),
        ] {
            let d = doc(
                top,
                &format!(r#"{{"name":"p","match":{{"groups":["a"]}},"tools":{{{profile}}}}}"#),
            );
            let e = errors(&d);
            assert_eq!(e.len(), 1, "{d}: {e:?}");
            assert_eq!(e[0].path, path, "{d}");
        }
        // A profile's hide with a malformed name.
        let d = doc(
            "",
            r#"{"name":"p","match":{"groups":["a"]},"hide":["ok","\u00adx"]}"#,
        );
        let e = errors(&d);
        assert_eq!(e.len(), 1, "{d}: {e:?}");
        assert_eq!(e[0].path, "profiles[0].hide");
        // The top level's look-alike reported once, not again for the profiles that inherit it.
        let d = doc(
            r#""delete_run":{"action":"deny"},"ｄelete_run":{}"#,
            r#"{"name":"p","match":{"groups":["a"]}},{"name":"q","match":{"groups":["b"]}}"#,
        );
        let e = errors(&d);
        assert_eq!(e.len(), 1, "{d}: {e:?}");
        assert_eq!(e[0].path, r#"tools["ｄelete_run"]"#, "{e:?}");
        // inherit: false: the top level's governed keys are not the profile's.
        ok(&doc(
            r#""delete_run":{"action":"deny"}"#,
            r#"{"name":"p","match":{"groups":["a"]},"inherit":false,"tools":{"Delete_Run":{}}}"#,
        ));
    }
}
