//! The strict check as a whole: verdicts, error kinds and places, and the differential against the reference
//! (serde_json's own deserializer with a key-collecting visitor: `fuzz/fuzz_targets/reference.rs`).

use super::*;
use crate::reference;

#[test]
fn accepts_plain_json() {
    assert_eq!(check_strict(br#"{"a":[1,2,{"b":null}],"c":"d"}"#), Ok(()));
    assert_eq!(check_strict(b" [] "), Ok(()));
}

#[test]
fn rejects_duplicates_anywhere() {
    for doc in [
        &br#"{"a":1,"a":2}"#[..],
        br#"{"x":{"y":[{"k":1,"k":1}]}}"#,
        br#"{"method":"a","\u006dethod":"b"}"#,
        br#"{"method":"a","Method":"b"}"#,
        br#"{"params":1,"param\u017f":2}"#,
    ] {
        assert!(
            matches!(check_strict(doc), Err(JsonError::DuplicateKey(_))),
            "{doc:?}"
        );
    }
}

#[test]
fn same_key_in_sibling_objects_is_fine() {
    assert_eq!(check_strict(br#"[{"a":1},{"a":2}]"#), Ok(()));
}

#[test]
fn rejects_syntax_and_encoding() {
    for doc in [
        &b"{"[..],
        b"",
        b"{\"a\":1} x",
        b"{\"a\":\"\xff\"}",
        br#"{"a":"\ud800"}"#,
        b"[1,]",
    ] {
        assert!(
            matches!(check_strict(doc), Err(JsonError::Syntax(_))),
            "{doc:?}"
        );
    }
}

/// What and where: the offending byte (the end of the text when it ends too soon), and its line and column.
#[test]
fn errors_say_what_and_where() {
    use ErrorKind::*;
    for (doc, kind, offset, line, column) in [
        (&b""[..], EofInValue, 0, 1, 1),
        (b"{\"a\":1,\"b\":2,\"a\":3}", DuplicateKey, 13, 1, 14),
        (b"{\n  \"a\": 1,\n  \"A\": 2\n}", DuplicateKey, 14, 3, 3),
        (b"[1,]", TrailingComma, 2, 1, 3),
        (b"[1 2]", ExpectedCommaOrArrayEnd, 3, 1, 4),
        (b"{\"a\" 1}", ExpectedColon, 5, 1, 6),
        (b"{\"a\":1 \"b\":2}", ExpectedCommaOrObjectEnd, 7, 1, 8),
        (b"{1:2}", KeyNotString, 1, 1, 2),
        (b"[tru]", ExpectedLiteral, 4, 1, 5),
        (b"[nul", EofInValue, 4, 1, 5),
        (b"[\"ab", EofInString, 4, 1, 5),
        (b"[1", EofInArray, 2, 1, 3),
        (b"{\"a\":1", EofInObject, 6, 1, 7),
        (b"\"a\x01\"", ControlCharacter, 2, 1, 3),
        (b"\"ab\\qc\"", InvalidEscape, 3, 1, 4),
        (b"\"a\\ud800\\n\"", LoneSurrogate, 2, 1, 3),
        (b"\"\xc3\xa9\xff\"", InvalidUtf8, 3, 1, 4),
        (b"[0, 1e400]", NumberOutOfRange, 4, 1, 5),
        (b"[01]", InvalidNumber, 2, 1, 3),
        (b"{} x", TrailingCharacters, 3, 1, 4),
        (b"?", ExpectedValue, 0, 1, 1),
    ] {
        let e = check_strict(doc).unwrap_err();
        let at = e.position();
        assert_eq!(
            (e.kind(), at.offset, at.line, at.column),
            (kind, offset, line, column),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
        assert!(
            e.to_string()
                .ends_with(&format!(" at line {line} column {column}")),
            "{e}"
        );
    }
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let e = check_strict(deep.as_bytes()).unwrap_err();
    assert_eq!((e.kind(), e.position().offset), (TooDeep, 127));
}

#[test]
fn messages_are_plain_words() {
    let e = check_strict(br#"{"method":1,"Method":2}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "duplicate key \"Method\" (same as \"method\" ignoring case) at line 1 column 13"
    );
    let e = check_strict(br#"{"a":1,"a":2}"#).unwrap_err();
    assert_eq!(e.to_string(), "duplicate key \"a\" at line 1 column 8");
    let e = check_strict(b"[1,]").unwrap_err();
    assert_eq!(e.to_string(), "a trailing comma at line 1 column 3");
}

fn same_as_reference(doc: &[u8]) {
    if let Err(e) = reference::compare_strict(doc) {
        panic!("{e}");
    }
}

/// Inputs that reach every error of the grammar, each at several places.
const CASES: &[&[u8]] = &[
    b"", b" ", b"\n\n", b"x", b"{", b"[", b"}", b"]", b"{}", b"[]", b" {} ", b"{} {}", b"[] x", b"\x0c[]",
    b"\xef\xbb\xbf{}", b"nul", b"nulL", b"tru", b"true", b"false", b"fals", b"falsy", b"null ", b"nullx",
    b"0", b"-", b"-0", b"-a", b"00", b"01", b"-01", b"0.", b"0.x", b"1.5", b"1.5e", b"1.5e+", b"1e-", b"1E5",
    b"1e5x", b".5", b"+1", b"1.e5", b"0e", b"-0.0e-0", b"1e309", b"1e308", b"2e308", b"1.7976931348623157e308",
    b"1.7976931348623159e308", b"17976931348623157e292", b"0e99999999999999", b"1e99999999999999",
    b"1e-99999999999999", b"-1e99999999999999", b"123456789012345678901234567890",
    b"123456789012345678901234567890.5e300", b"18446744073709551615", b"18446744073709551616",
    b"18446744073709551616.123", b"1.18446744073709551616", b"0.000000000000000000000000000001e330",
    b"[1e400]", b"{\"a\":1e400}",
    b"\"", b"\"abc", b"\"a\\", b"\"\\x\"", b"\"\\u12\"", b"\"\\u12", b"\"\\u12G4\"", b"\"\\ud800\"",
    b"\"\\ud800\\\"", b"\"\\ud800\\n\"", b"\"\\ud800\\u0041\"", b"\"\\ud800\\udc00\"", b"\"\\udc00\"",
    b"\"\\ud800", b"\"\\ud800\\", b"\"\\ud800\\u", b"\"\\ud800\\ud800\"", b"\"\\uDBFF\\uDFFF\"",
    b"\"a\x01\"", b"\"\x1f\"", b"\"\x7f\"", b"\"\xff\"", b"\"ab\xc3\"", b"\"\xc3\xa9\"", b"\"\\n\xff\"",
    b"\"\\u00e9\xe9x\"", b"\"x\\ty\xed\xa0\x80z\"", b"\n  \"\xf0\x9f\x98\"", b"[\"\xff\", \"\\q\"]",
    b"[\"\\q\xff\"]", b"[\"\xff\\q\"]", b"\xff", b"[\xff]", b"{\"\xff\":1}",
    b"[1,]", b"[1 2]", b"[,1]", b"[1,,2]", b"[1", b"[1,", b"[1, ", b"[ ]", b"[\n1\n,\n2\n]",
    b"{\"a\"}", b"{\"a\" 1}", b"{\"a\":}", b"{\"a\":1,}", b"{\"a\":1 \"b\":2}", b"{1:2}", b"{,}",
    b"{\"a\":1,2}", b"{\"a\"", b"{\"a\":", b"{\"a\":1", b"{\"a\":1,", b"{ \"a\" : 1 , \"b\" : [ ] }",
    b"{\"a\":1,\"a\":2}", b"{\"a\":1,\"a\"  :2}", b"{\"a\":1,\"a\"", b"{\"a\":1,\"a\"  ", b"{\"a\":1,\"A\":2}",
    b"{\"a\":1,\n \"A\"\n\n :2}", b"{\"method\":1,\"\\u006dethod\":2}", b"{\"\\u006dethod\":1,\"method\":2}",
    b"{\"s\":1,\"\xc5\xbf\":2}", b"{\"\xc5\xbf\":1,\"S\":2}", b"{\"k\":1,\"\\u212a\":2}",
    b"{\"\xe2\x84\xaa\":1,\"\\u212A\":2}", b"{\"\xc3\xa9\":1,\"\xc3\x89\":2}", b"{\"a\":{\"a\":{\"a\":1}},\"b\":1}",
    b"[{\"a\":1},{\"a\":1,\"a\":1}]", b"{\"a\":1,\"a\":2 x", b"{\"a\":1,\"a\":2,\"a\"",
    b"{\"x\":1,\"a\":{\"y\":2,\"Y\":3},\"a\":4}", b"{\"\\u0000\":1,\"\\u0000\":2}", b"{\"\":1,\"\":2}",
    b"{\"a\":1}\n\n  }", b"\n\n[\n  1,\n  2,\n]", b"\r\n{\"a\"\r\n:\r\n1\r\n,\r\n\"a\"\r\n:2}",
    b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"Name\":\"y\"}}",
];

#[test]
fn matches_the_reference_on_crafted_inputs() {
    for doc in CASES {
        same_as_reference(doc);
    }
}

#[test]
fn matches_the_reference_on_nesting_limits() {
    for depth in [126, 127, 128, 129, 200] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            same_as_reference(doc.as_bytes());
            same_as_reference(format!("{}1", open.repeat(depth)).as_bytes());
        }
    }
}

#[test]
fn matches_the_reference_on_many_keys() {
    // Past the linear phase: hashed (keyed), including a collision far from its first key.
    let mut doc = String::from("{");
    for i in 0..2_000 {
        doc.push_str(&format!("\"k{i}\":{i},"));
    }
    let ok = format!("{}\"end\":0}}", doc);
    same_as_reference(ok.as_bytes());
    assert_eq!(check_strict(ok.as_bytes()), Ok(()));
    for dup in ["K17", "k1999", "\\u006b1500", "\u{212A}12", "k0"] {
        let bad = format!("{}\"{dup}\":0}}", doc);
        same_as_reference(bad.as_bytes());
        assert!(
            matches!(
                check_strict(bad.as_bytes()),
                Err(JsonError::DuplicateKey(_))
            ),
            "{dup}"
        );
    }
    // Exactly at the switch to hashing.
    for n in 14..20 {
        let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":1")).collect();
        for dup in ["k0", "K13", &format!("k{}", n - 1), "zz"] {
            same_as_reference(format!("{{{},\"{dup}\":2}}", keys.join(",")).as_bytes());
        }
    }
}

/// JSON-ish text and byte mutations of the crafted cases, from a small deterministic generator.
#[test]
fn matches_the_reference_on_mutations() {
    let mut next = reference::xorshift(0x9e37_79b9_7f4a_7c15);
    const ALPHABET: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"\"a\"",
        b"\"A\"",
        b"\"\\u0041\"",
        b"\"\xc5\xbf\"",
        b"\"s\"",
        b"1",
        b"-",
        b"0",
        b".",
        b"e",
        b"E",
        b"+",
        b"9",
        b"null",
        b"true",
        b"f",
        b" ",
        b"\n",
        b"\\",
        b"u",
        b"d800",
        b"dc00",
        b"\xff",
        b"\xc3",
        b"\x01",
        b"\"k\":",
        b"1e308",
        b"9999999999999999999999",
    ];
    for _ in 0..reference::mutations() {
        let mut doc: Vec<u8> = match next() % 2 {
            0 => CASES[(next() % CASES.len() as u64) as usize].to_vec(),
            _ => Vec::new(),
        };
        for _ in 0..(next() % 12) {
            let piece = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
            let at = (next() % (doc.len() as u64 + 1)) as usize;
            match next() % 3 {
                0 if !doc.is_empty() => {
                    doc.remove(at.min(doc.len() - 1));
                }
                _ => {
                    doc.splice(at..at, piece.iter().copied());
                }
            }
        }
        same_as_reference(&doc);
    }
}

#[test]
fn a_huge_object_is_not_quadratic() {
    // 200k keys: linear comparisons would take minutes; the keyed hash map takes milliseconds.
    let mut doc = String::from("{");
    for i in 0..200_000 {
        doc.push_str(&format!("\"key{i}\":{i},"));
    }
    doc.push_str("\"KEY123456\":0}");
    match check_strict(doc.as_bytes()) {
        Err(JsonError::DuplicateKey(e)) => {
            assert_eq!(
                (e.key.as_str(), e.earlier.as_str()),
                ("KEY123456", "key123456")
            );
            assert_eq!(e.at.offset, doc.len() - 14);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_deep_nesting_without_crashing() {
    let deep = "[".repeat(100_000);
    assert!(matches!(
        check_strict(deep.as_bytes()),
        Err(JsonError::Syntax(_))
    ));
}
