//! Arbitrary bytes as a policy document: `policy::parse` must never panic, and whatever it accepts must be
//! usable (rule lookups on the compiled policy never panic either).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::policy;

fuzz_target!(|data: &[u8]| {
    match policy::parse(data) {
        Ok(p) => {
            // An accepted policy was strict JSON.
            assert!(mcp_policy::json::check_strict(data).is_ok());
            for r in p.rules() {
                // Every key governs at least the tool of its own name (exact, or a glob matching itself).
                assert!(
                    p.rule_for(&r.key).is_some(),
                    "no rule for its own key {:?}",
                    r.key
                );
                for c in &r.conditions {
                    let _ = c.describe();
                    let _ = c.holds(None);
                }
            }
            let _ = p.rule_for("get_run");
            let _ = p.rule_for("");
        }
        Err(errs) => {
            // Every rejection explains itself: at least one error, each with a path and a fix.
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(!e.path.is_empty() && !e.fix.is_empty(), "{e:?}");
            }
            let _ = errs.to_string();
        }
    }
});
