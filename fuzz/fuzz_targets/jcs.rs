//! RFC 8785 canonical JSON (`mcp_policy::jcs`) and tool pins (`mcp_policy::pins`). Never panics, and:
//! - text: the canonical form is accepted where serde_json accepts the text (less duplicate keys and numbers
//!   beyond the double range, which RFC 8785 refuses), refused where serde_json refuses it; canonicalising it
//!   again changes nothing; it reads back (serde_json) as the same value; writing the value back out another
//!   way (serde_json's own spelling: other key order, other escapes, pretty) has the same canonical form;
//!   a tool's pin (the filter's numbers) is that of the same object spelt another way, and its canonical form
//!   the general one when the filter's numbers can write it (else refused as unsupported, never approximated);
//! - numbers (first byte 0, then 8 bytes of a double): ECMAScript's form reads back as the same double, no
//!   shorter decimal does, and the text path gives the same form from Rust's own two spellings of the double
//!   (`{}` and `{:e}`, core's float formatting, a different algorithm from ryu's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::{jcs, pins};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let [0, rest @ ..] = data {
        if let Some(bits) = rest.get(..8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bits);
            number(f64::from_bits(u64::from_le_bytes(b)));
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let canonical = jcs::canonical(text);
    let loose = serde_json::from_str::<Value>(text);
    let c = match (&canonical, &loose) {
        (Ok(c), Ok(_)) => c,
        (Ok(c), Err(e)) => panic!("canonical form {c:?} of what serde_json refuses: {e}"),
        (Err(jcs::Error::Syntax(m)), Ok(_)) => panic!("valid JSON called a syntax error: {m}"),
        (Err(_), _) => return,
    };
    assert_eq!(jcs::canonical(c).as_ref(), Ok(c), "not idempotent");
    let back: Value = serde_json::from_str(c).expect("canonical form is JSON");
    let Ok(original) = &loose else { return };
    assert!(same(original, &back), "{text:?} -> {c:?}");
    // Numbers are left out of the respelling: serde_json reads long ones approximately.
    if !has_float(original) {
        for other in [
            serde_json::to_string(original).unwrap(),
            serde_json::to_string_pretty(original).unwrap(),
        ] {
            assert_eq!(jcs::canonical(&other).as_ref(), Ok(c), "{other:?}");
        }
        if original.is_object() {
            // A pin is of the form with the filter's numbers: the same as the general one when it exists.
            let pretty = serde_json::to_string_pretty(original).unwrap();
            match pins::canonical_tool(text) {
                Ok(short) => {
                    let without: serde_json::Map<String, Value> = original
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| k.as_str() != "_meta")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let general = jcs::canonical(&Value::Object(without).to_string()).unwrap();
                    assert_eq!(short, general);
                    assert_eq!(pins::tool_pin(&pretty), pins::tool_pin(text));
                }
                Err(e) => assert!(matches!(e, jcs::Error::Unsupported(_)), "{e}"),
            }
        }
    }
});

/// Equal values, numbers compared as doubles within one part in 10^15 (serde_json reads them approximately).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// True when `v` holds a number that is not an integer serde_json reads exactly.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fn number(x: f64) {
    if !x.is_finite() {
        return;
    }
    let mut es = String::new();
    jcs::es_number(&mut es, x);
    let back: f64 = es.parse().unwrap();
    assert!(back == x, "{x:e} written {es}");
    // No decimal with fewer significant digits reads back as x.
    let digits = es
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap()
        .replace('.', "");
    let k = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    if k > 1 {
        // The nearest decimal of k-1 significant digits, M × 10^E, and its neighbours M ± 1: the decimals of
        // k-1 digits closest to x on either side are among them.
        let shorter = format!("{:.*e}", k - 2, x.abs());
        let (m, e) = shorter.split_once('e').unwrap();
        let m: u64 = m.replace('.', "").parse().unwrap();
        let e: i32 = e.parse::<i32>().unwrap() - (k as i32 - 2);
        for candidate in [m.saturating_sub(1), m, m + 1] {
            let c: f64 = format!("{candidate}e{e}").parse().unwrap();
            assert!(
                c != x.abs(),
                "{candidate}e{e} is shorter than {es} for {x:e}"
            );
        }
    }
    for text in [format!("{x}"), format!("{x:e}"), format!("{x:?}")] {
        assert_eq!(jcs::canonical(&text).unwrap(), es, "{text}");
        // The filter's numbers: the same text, or refused.
        let doc = format!("{{\"n\":{text}}}");
        match jcs::canonical_object_without(&doc, &[], jcs::Numbers::Short) {
            Ok(c) => assert_eq!(c, format!("{{\"n\":{es}}}"), "{text}"),
            Err(e) => assert!(matches!(e, jcs::Error::Unsupported(_)), "{text}: {e}"),
        }
    }
}
