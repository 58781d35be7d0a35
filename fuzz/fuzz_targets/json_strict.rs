//! Arbitrary bytes through `json::check_strict`: never panics, never accepts what `serde_json` itself refuses
//! (strict must be a subset of serde_json, which the rest of the crate parses with), and gives exactly the
//! verdict and error kind of the reference below (`reference::compare_strict`): the serde-visitor
//! implementation `check_strict` had before its hand-written scanner, which reads documents with serde_json's
//! own deserializer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::json::{check_strict, JsonError};

fuzz_target!(|data: &[u8]| {
    let strict = check_strict(data);
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    match (&strict, &loose) {
        (Ok(()), Err(e)) => panic!("check_strict accepted what serde_json refuses: {e}"),
        // A syntax error in strict mode is a serde_json error too (duplicates are the only extra refusal).
        (Err(JsonError::Syntax(m)), Ok(_)) => {
            panic!("check_strict calls valid JSON a syntax error: {m}")
        }
        _ => {}
    }
    if let Err(e) = reference::compare_strict(data) {
        panic!("{e}");
    }
    if let Err(e) = &strict {
        let _ = e.to_string();
    }
});

#[path = "reference.rs"]
mod reference;
