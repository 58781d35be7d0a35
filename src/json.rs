//! Strict JSON well-formedness for bytes we must not misread.
//!
//! `serde_json` on its own accepts duplicate object keys (the last one wins), while other parsers keep the
//! first: a classic parser-differential bypass. [`check_strict`] walks the whole document once, without
//! building a tree, and rejects:
//! - anything `serde_json` rejects (syntax, invalid UTF-8, lone surrogates, nesting deeper than 128);
//! - two keys of one object that are equal, or equal after case folding (`method` / `Method` / `METHOD`,
//!   and the Unicode letters that fold onto ASCII `s` and `k`), because some JSON decoders match field
//!   names case-insensitively.
//!
//! Keys are compared after their escapes are decoded, so `"\u006dethod"` collides with `"method"`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Why a document failed [`check_strict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all: syntax, encoding, truncation or nesting depth.
    Syntax(String),
    /// Well-formed JSON with an ambiguous object: a repeated key.
    DuplicateKey(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(m) => write!(f, "{m}"),
            JsonError::DuplicateKey(m) => write!(f, "{m}"),
        }
    }
}

const DUP_PREFIX: &str = "duplicate key ";

/// Checks that `bytes` hold exactly one well-formed, unambiguous JSON value.
pub fn check_strict(bytes: &[u8]) -> Result<(), JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res = Checked::deserialize(&mut de).and_then(|_| de.end());
    match res {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            if e.is_data() && text.starts_with(DUP_PREFIX) {
                Err(JsonError::DuplicateKey(text))
            } else {
                Err(JsonError::Syntax(text))
            }
        }
    }
}

/// Compares two object keys the way a lenient decoder might: ASCII case-insensitively, with the Kelvin sign
/// and the long s folded onto `k` and `s` (Go's `encoding/json` does this).
pub fn keys_collide(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    let fold = |c: char| match c {
        '\u{017F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    a.chars().map(fold).eq(b.chars().map(fold))
}

struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        // Objects are small in practice: a linear scan beats hashing up to a few dozen keys.
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if let Some(prev) = seen.iter().find(|p| keys_collide(p, &k)) {
                let msg = if **prev == *k {
                    format!("{DUP_PREFIX}\"{k}\"")
                } else {
                    format!("{DUP_PREFIX}\"{k}\" (same as \"{prev}\" ignoring case)")
                };
                return Err(de::Error::custom(msg));
            }
            map.next_value::<Checked>()?;
            seen.push(k);
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn rejects_deep_nesting_without_crashing() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            check_strict(deep.as_bytes()),
            Err(JsonError::Syntax(_))
        ));
    }
}
