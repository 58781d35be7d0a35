//! Tool-name folding and look-alikes (`mcp_policy::names`), and the engine's refusal by name. Never panics, and:
//! - folding is idempotent, changes ASCII only by lower-casing it, and keeps a name's length in characters or
//!   grows it (a character folds to one or more);
//! - a name with a control character (`char::is_control`) or white space at an end (`char::is_whitespace`) is
//!   malformed; a malformed name's offending character is in it;
//! - with the input's lines as governed keys (the last line is the name): the key `of` names is one of them,
//!   folds like the name (or its folded glob matches the folded name) and is not the name (nor matched by the
//!   glob as written); a name whose folding equals an exact key's that it is not gets a key; a key is never a
//!   look-alike of itself;
//! - the engine refuses (never allows) a malformed name or a look-alike under a policy of those keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::names::{fold, malformed, LookAlikes, Malformed};
use mcp_policy::policy::{is_glob, Glob};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let name = lines.pop().unwrap_or("");

    let f = fold(name);
    assert_eq!(fold(&f), f, "fold is not idempotent on {name:?}");
    assert!(f.chars().count() >= name.chars().count());
    if name.is_ascii() {
        assert_eq!(f, name.to_ascii_lowercase());
    }
    match malformed(name) {
        Some(Malformed::Control(c) | Malformed::Invisible(c)) => assert!(name.contains(c)),
        Some(Malformed::Padded) => {
            assert!(name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace))
        }
        None => {
            assert!(!name.chars().any(char::is_control), "{name:?}");
            assert!(!name.starts_with(char::is_whitespace) && !name.ends_with(char::is_whitespace));
        }
    }

    let keys: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|k| !k.is_empty())
        .take(16)
        .collect();
    let index = LookAlikes::new(keys.iter().copied());
    let got = index.of(name);
    if let Some(key) = got {
        assert!(keys.contains(&key));
        if is_glob(key) {
            let glob = Glob::new(key).unwrap();
            assert!(!glob.matches(name));
            assert!(glob.map_literals(|s| fold(s).into_owned()).matches(&f));
        } else {
            assert_ne!(key, name);
            assert_eq!(fold(key), f);
        }
    }
    if keys
        .iter()
        .any(|k| !is_glob(k) && *k != name && fold(k) == f)
    {
        assert!(
            got.is_some(),
            "{name:?} folds like an exact key of {keys:?}"
        );
    }
    for k in keys.iter().filter(|k| !is_glob(k)) {
        assert_ne!(index.of(k), Some(*k));
    }

    // Through the engine: deny rules for the keys that make a valid policy, under default allow.
    let rules: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), serde_json::json!({"action": "deny"})))
        .collect();
    let doc = serde_json::json!({"version": "1", "default": "allow", "tools": rules}).to_string();
    let Ok(policy) = mcp_policy::policy::parse(doc.as_bytes()) else {
        return;
    };
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
        .to_string();
    let Ok(b) = mcp_policy::mcp::inspect(body.as_bytes()) else {
        return;
    };
    let Some(call) = b.messages.first().and_then(|m| m.tool_call()) else {
        return;
    };
    let d = mcp_policy::engine::decide_call(&policy, call);
    let look_alike = !policy.tools.has_exact(name)
        && policy
            .view()
            .look_alikes(call.kind)
            .and_then(|l| l.of(name))
            .is_some();
    if malformed(name).is_some() || look_alike {
        assert!(d.is_refusal(), "{name:?} under {doc}: {d:?}");
    }
});
