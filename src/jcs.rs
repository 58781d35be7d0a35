//! RFC 8785, the JSON Canonicalization Scheme (JCS): the one text a JSON value has whatever its spelling
//! (white space, key order, escapes, number notation), so that a hash of it says "same value" across servers,
//! SDKs and languages. Used for pinned tool definitions ([`crate::pins`]).
//!
//! The rules (RFC 8785 §3.2): no white space; object members sorted by their keys as arrays of UTF-16 code
//! units; strings as ECMAScript's `JSON.stringify` writes them (only `"`, `\` and U+0000–U+001F escaped, the
//! five with short forms `\b \t \n \f \r`, the others `\u00xx` in lower case; everything else as UTF-8, U+007F
//! and U+2028 included); numbers as ECMAScript's `Number.prototype.toString` writes the IEEE 754 double the
//! text denotes (the shortest digits that read back as that double, the closest of those, then ES's layout:
//! `1e+21`, `0.000001`, `1e-7`, `-0` as `0`); `true`, `false`, `null`.
//!
//! Hand-written, on the crate's JSON cursor ([`crate::json`]), no crate: the JCS crates take a
//! `serde_json::Value`, whose numbers serde_json has already read with its fast float parser (not always the
//! nearest double: one unit in the last place off for some long or extreme numbers) and whose objects sort
//! keys by UTF-8 bytes (not UTF-16 code units). Here the text is first checked by serde_json (syntax, UTF-8,
//! nesting), then walked once: each number is written from its own decimal digits, exactly, without float
//! parsing or printing when it has at most 15 significant digits or is an integer up to 2^53 (every number seen
//! in tool definitions; [`Numbers::Short`], all the filter does); any other, in native builds
//! ([`Numbers::All`]), through Rust's correctly rounded `f64` parser and `ryu` (shortest, closest). Each object's
//! members are written to their own buffers, then sorted. Rejected, as RFC 8785 says: duplicate keys (equal
//! once escapes are decoded; keys that differ in letter case are distinct here, unlike in request bodies), lone
//! surrogates, and numbers beyond the double range (`1e400`).

use crate::json::{Cursor, Lost};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// Why a text has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not JSON (serde_json's message), or a string that is not Unicode text (a lone surrogate).
    Syntax(String),
    /// An object has the key twice.
    DuplicateKey(String),
    /// A number beyond the range of a double (RFC 8785 §3.2.2.3: an error, not `Infinity`).
    NotFinite(String),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not an object, where one is wanted ([`canonical_object_without`]).
    NotAnObject,
    /// A number this implementation does not write (16 or more significant digits, or beyond 1e±300, except
    /// integers up to 2^53): see `number`.
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(m) => write!(f, "not JSON: {m}"),
            Error::DuplicateKey(k) => write!(f, "an object has the key {k:?} twice"),
            Error::NotFinite(n) => write!(f, "the number {n} is beyond the range of a double"),
            Error::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Error::NotAnObject => write!(f, "not a JSON object"),
            Error::Unsupported(n) => write!(
                f,
                "the number {n} has more than 15 significant digits or an extreme exponent, which mcp-policy does not canonicalise"
            ),
        }
    }
}

impl From<Lost> for Error {
    fn from(_: Lost) -> Error {
        Error::Syntax("lost in text that was checked (a bug)".into())
    }
}

/// The deepest nesting canonicalised (serde_json itself stops at 128).
pub const MAX_DEPTH: usize = 100;

/// Which numbers a canonicalisation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// Those written exactly from their decimal digits alone: at most 15 significant digits between 1e-300 and
    /// 1e300, and integers up to 2^53 (see `number`); any other is [`Error::Unsupported`]. What the filter
    /// does (float parsing and shortest printing would add about 40 KB to it), and so what pins use everywhere:
    /// a pin the CLI writes is one the filter recomputes.
    Short,
    /// Every number (its double, then the shortest digits that read it back): native builds only; in the
    /// filter the same as `Short`.
    All,
}

/// The canonical form of the JSON text `text` (every number, where the build can: [`Numbers::All`]).
pub fn canonical(text: &str) -> Result<String, Error> {
    walk(text, None, Numbers::All)
}

/// The canonical form of the JSON object `text` less its members named in `leave_out` (its own members only,
/// not those of objects inside it); [`Error::NotAnObject`] for any other value.
pub fn canonical_object_without(
    text: &str,
    leave_out: &[&str],
    numbers: Numbers,
) -> Result<String, Error> {
    walk(text, Some(leave_out), numbers)
}

/// `text` checked by serde_json, then canonicalised; `object`: it must be an object, less those members.
fn walk(text: &str, object: Option<&[&str]>, numbers: Numbers) -> Result<String, Error> {
    let _: serde::de::IgnoredAny =
        serde_json::from_str(text).map_err(|e| Error::Syntax(e.to_string()))?;
    let c = Cursor::new(text);
    let at = c.skip_ws(0);
    if object.is_some() && c.byte(at) != Some(b'{') {
        return Err(Error::NotAnObject);
    }
    let mut out = String::with_capacity(text.len());
    let w = Walk { c, numbers };
    w.value(&mut out, at, 0, object.unwrap_or(&[]))?;
    Ok(out)
}

/// One canonicalisation: the text and which numbers it writes.
struct Walk<'a> {
    c: Cursor<'a>,
    numbers: Numbers,
}

impl Walk<'_> {
    /// Writes the canonical form of the value at `at` to `out`; returns where the value ends.
    fn value(
        &self,
        out: &mut String,
        at: usize,
        depth: usize,
        leave_out: &[&str],
    ) -> Result<usize, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let c = &self.c;
        match c.byte(at) {
            Some(b'{') => {
                let mut members: Vec<(Cow<'_, str>, String)> = Vec::new();
                let end = c.entries(at, |key, v| {
                    let name = c.string(key).ok_or_else(not_text)?;
                    let mut text = String::new();
                    let end = self.value(&mut text, v, depth + 1, &[])?;
                    if !leave_out.contains(&name.as_ref()) {
                        members.push((name, text));
                    }
                    Ok::<usize, Error>(end)
                })?;
                sort_by_key_utf16(&mut members);
                if let Some(w) = members
                    .windows(2)
                    .find(|w| matches!(w, [a, b] if a.0 == b.0))
                {
                    let key = w.first().map(|m| m.0.to_string()).unwrap_or_default();
                    return Err(Error::DuplicateKey(key));
                }
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, k);
                    out.push(':');
                    out.push_str(v);
                }
                out.push('}');
                Ok(end)
            }
            Some(b'[') => {
                out.push('[');
                let end = c.items(at, |i, n| {
                    if n > 0 {
                        out.push(',');
                    }
                    self.value(out, i, depth + 1, &[])
                })?;
                out.push(']');
                Ok(end)
            }
            Some(b'"') => {
                let end = c.string_end(at)?;
                string(out, &c.string((at, end)).ok_or_else(not_text)?);
                Ok(end)
            }
            _ => {
                let end = c.value_end(at)?;
                let text = c.get((at, end)).ok_or(Lost)?;
                if matches!(text, "true" | "false" | "null") {
                    out.push_str(text);
                } else {
                    number(out, text, self.numbers)?;
                }
                Ok(end)
            }
        }
    }
}

/// Sorts an object's members by their keys as UTF-16 code units: a heapsort (in place, O(n log n) whatever a
/// server sends; core's sorts would add about 8 KB to the filter for this one element type).
fn sort_by_key_utf16(m: &mut [(Cow<'_, str>, String)]) {
    let less = |m: &[(Cow<'_, str>, String)], a: usize, b: usize| match (m.get(a), m.get(b)) {
        (Some(x), Some(y)) => utf16_cmp(&x.0, &y.0) == Ordering::Less,
        _ => false,
    };
    let sift = |m: &mut [(Cow<'_, str>, String)], mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && less(m, child, child + 1) {
            child += 1;
        }
        if !less(m, root, child) {
            return;
        }
        m.swap(root, child);
        root = child;
    };
    let n = m.len();
    for i in (0..n / 2).rev() {
        sift(m, i, n);
    }
    for end in (1..n).rev() {
        m.swap(0, end);
        sift(m, 0, end);
    }
}

fn not_text() -> Error {
    Error::Syntax("a string holds half of a surrogate pair".into())
}

/// Orders strings as arrays of UTF-16 code units (RFC 8785 §3.2.3). This differs from byte (and code point)
/// order only between characters above U+FFFF (surrogate pairs, D800–DFFF) and U+E000–U+FFFF.
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A string as ECMAScript's `JSON.stringify` writes it (RFC 8785 §3.2.2.2).
fn string(out: &mut String, s: &str) {
    push_string(out, s, &[]);
}

/// Appends `s` as a JSON string the way ECMAScript's `JSON.stringify` writes one: `"`, `\\` and U+0000–U+001F
/// escaped (`\b \t \n \f \r`, the others `\u00xx`), and also the characters of `extra` (as `\uxxxx`);
/// everything else as it is. The audit log uses it with U+2028 and U+2029 as `extra`.
pub fn push_string(out: &mut String, s: &str, extra: &[char]) {
    out.push('"');
    // Runs of characters that need no escape are copied whole (most strings are one run).
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' | '\\' => true,
            c if u32::from(c) < 0x20 => true,
            c if !c.is_ascii() => extra.contains(&c),
            _ => false,
        };
        if escape {
            out.push_str(s.get(run..i).unwrap_or(""));
            escaped(out, c);
            run = i + c.len_utf8();
        }
    }
    out.push_str(s.get(run..).unwrap_or(""));
    out.push('"');
}

/// The escape of one character.
fn escaped(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\u{c}' => out.push_str("\\f"),
        '\r' => out.push_str("\\r"),
        c => {
            out.push_str("\\u");
            let n = u32::from(c);
            for shift in [12, 8, 4, 0] {
                let d = ((n >> shift) & 0xf) as usize;
                out.push(char::from(HEX.get(d).copied().unwrap_or(b'0')));
            }
        }
    }
}

/// The number whose JSON text is `text`, as ECMAScript's `Number.prototype.toString` writes its double, for
/// the numbers that can be written exactly from their decimal digits alone (no float parsing or printing, whose
/// tables would add about 40 KB to the filter):
/// - at most 15 significant digits, between 1e-300 and 1e300: every such decimal is the shortest decimal of its
///   double (a double tells apart any two decimals of 15 digits, DBL_DIG), so the double's ECMAScript form is
///   these digits in ECMAScript's layout;
/// - integers up to 2^53 (more digits, as `9007199254740991`): exact doubles, written as integers.
///
/// Any other number (16 or more significant digits, or extreme exponents; not seen in tool definitions) is
/// [`Error::Unsupported`]: mcp-policy does not pin such a tool (its pin could not be recomputed here).
fn number(out: &mut String, text: &str, numbers: Numbers) -> Result<(), Error> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(i32::MAX)),
        None => (unsigned, 0),
    };
    let (digits, n) = significant(mantissa, exp);
    if digits.is_empty() {
        out.push('0');
        return Ok(());
    }
    let k = digits.len() as i64;
    let n = i64::from(n);
    let short = k <= 15 && (-300..=300).contains(&n);
    let safe_integer = n >= k
        && n <= 16
        && digits
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(10u64.checked_pow(u32::try_from(n - k).ok()?)?))
            .is_some_and(|v| v <= 1 << 53);
    if !(short || safe_integer) {
        return every_number(out, text, numbers);
    }
    if negative {
        out.push('-');
    }
    layout(out, &digits, n as i32);
    Ok(())
}

/// A number [`Numbers::Short`] does not write: with [`Numbers::All`] in a native build, its double (Rust's
/// correctly rounded parser) in ECMAScript's form; else [`Error::Unsupported`].
fn every_number(out: &mut String, text: &str, numbers: Numbers) -> Result<(), Error> {
    #[cfg(not(target_arch = "wasm32"))]
    if numbers == Numbers::All {
        let x: f64 = text
            .parse()
            .map_err(|_| Error::Syntax(format!("invalid number {text}")))?;
        if !x.is_finite() {
            return Err(Error::NotFinite(text.to_owned()));
        }
        es_number(out, x);
        return Ok(());
    }
    let _ = (out, numbers);
    Err(Error::Unsupported(text.to_owned()))
}

/// The significant digits of a decimal `mantissa` × 10^`exp` (no sign), without leading or trailing zeros, and
/// its exponent n: the value is 0.d₁d₂… × 10^n. No digits for zero.
fn significant(mantissa: &str, exp: i32) -> (String, i32) {
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0').to_owned();
    // The point sits after `int`; each leading zero moves the first significant digit one place right.
    let n = (int.len() as i32 - lead as i32).saturating_add(exp);
    (digits, n)
}

/// ECMAScript's layout (ECMA-262 §6.1.6.1.20) of the digits `digits` (k of them, no leading or trailing zero)
/// with exponent `n` (the value is 0.digits × 10^n):
/// - k ≤ n ≤ 21: the digits and n−k zeros (`100`);
/// - 0 < n ≤ 21: a point after n digits (`1.5`);
/// - −6 < n ≤ 0: `0.`, −n zeros, the digits (`0.000001`);
/// - otherwise: one digit, the others after a point, `e`, the sign, |n−1| (`1e+21`, `1.5e-7`).
fn layout(out: &mut String, digits: &str, n: i32) {
    let k = digits.len() as i32;
    let zeros = |out: &mut String, count: i32| {
        for _ in 0..count {
            out.push('0');
        }
    };
    if k <= n && n <= 21 {
        out.push_str(digits);
        zeros(out, n - k);
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        zeros(out, -n);
        out.push_str(digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
}

/// ECMAScript's Number::toString(x) for any finite double: the shortest digits that read back as x (ryu), in
/// ECMAScript's layout. Not used by [`canonical`] (see [`number`]): the oracle of its tests and fuzz target,
/// native only (ryu's tables stay out of the filter).
#[cfg(not(target_arch = "wasm32"))]
pub fn es_number(out: &mut String, x: f64) {
    if x == 0.0 {
        // Both zeros.
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(x.abs());
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (digits, n) = significant(mantissa, exp);
    layout(out, &digits, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(x: f64) -> String {
        let mut s = String::new();
        es_number(&mut s, x);
        s
    }

    /// RFC 8785 Appendix B: IEEE 754 doubles (hex) and their ECMAScript form.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let vectors: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in vectors {
            let x = f64::from_bits(*bits);
            assert_eq!(es(x), *want, "{bits:016x}");
            // The same through the text path: the expected text reads back as the same double.
            assert_eq!(canonical(want).unwrap(), *want, "{want}");
        }
        // NaN and the infinities cannot be written in JSON; a number beyond the range is an error.
        assert!(matches!(canonical("1e400"), Err(Error::NotFinite(_))));
        assert!(matches!(
            canonical("[1,{\"a\":-1e400}]"),
            Err(Error::NotFinite(_))
        ));
        assert!(matches!(canonical("-1e309"), Err(Error::NotFinite(_))));
        assert_eq!(canonical("1e-400").unwrap(), "0");
    }

    /// The layout rules at each boundary, and spellings of one number.
    #[test]
    fn number_layout() {
        for (text, want) in [
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345678901", "123456789012345680000"),
            ("1.5e21", "1.5e+21"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("1.5e-7", "1.5e-7"),
            ("0.1", "0.1"),
            ("-0.0", "0"),
            ("-0", "0"),
            ("0e10", "0"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("1E30", "1e+30"),
            ("1E+2", "100"),
            ("100.0", "100"),
            ("12.34e1", "123.4"),
            ("-12", "-12"),
            ("999999999999999", "999999999999999"),
            ("9999999999999999", "10000000000000000"),
            ("9007199254740993", "9007199254740992"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("5e-324", "5e-324"),
            ("2.4703282292062328e-324", "5e-324"),
            ("123456.789e-3", "123.456789"),
        ] {
            assert_eq!(canonical(text).unwrap(), want, "{text}");
        }
    }

    /// RFC 8785 §3.2.2 and §3.2.3: the example of the whole scheme, and the sorting example.
    #[test]
    fn rfc8785_examples() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        assert_eq!(
            canonical(input).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        let sorting = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        assert_eq!(
            canonical(sorting).unwrap(),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn strings_escape_what_ecmascript_escapes() {
        assert_eq!(
            canonical(r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \u007f\u2028\u00e9\/\"\\""#).unwrap(),
            "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \u{7f}\u{2028}é/\\\"\\\\\""
        );
        // A lone surrogate is not a string JCS can write (nor serde_json read).
        assert!(matches!(canonical(r#""\ud800""#), Err(Error::Syntax(_))));
    }

    #[test]
    fn structure() {
        assert_eq!(
            canonical(" { \"b\" : [ 1 , { \"d\":true, \"c\" :null } ] , \"a\" : \"x\" } ").unwrap(),
            r#"{"a":"x","b":[1,{"c":null,"d":true}]}"#
        );
        assert_eq!(canonical("[]").unwrap(), "[]");
        assert_eq!(canonical("{}").unwrap(), "{}");
        // Keys in other letter case are other keys (unlike in request bodies, where they are refused).
        assert_eq!(canonical(r#"{"a":1,"A":2}"#).unwrap(), r#"{"A":2,"a":1}"#);
        // Keys equal once their escapes are read.
        assert_eq!(
            canonical(r#"{"a":1,"\u0061":2}"#),
            Err(Error::DuplicateKey("a".into()))
        );
        for bad in [
            "",
            "{",
            "[1,]",
            "tru",
            "nul",
            "01",
            "1.",
            "{\"a\" 1}",
            "1 2",
        ] {
            assert!(matches!(canonical(bad), Err(Error::Syntax(_))), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(canonical(&deep).unwrap(), deep);
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert_eq!(canonical(&deeper), Err(Error::TooDeep));
    }

    /// What the filter writes ([`Numbers::Short`]): exactly what the general path writes, for every number it
    /// accepts; the others are refused, not approximated.
    #[test]
    fn short_numbers_are_exact_and_the_others_refused() {
        let short = |text: &str| {
            let doc = format!("{{\"n\":{text}}}");
            canonical_object_without(&doc, &[], Numbers::Short)
                .map(|c| c[5..c.len() - 1].to_owned())
        };
        for text in [
            "0",
            "-0",
            "1",
            "-12",
            "4.50",
            "2e-3",
            "1E30",
            "1e21",
            "1e20",
            "1e-7",
            "0.000001",
            "1.5e-7",
            "123.456789",
            "999999999999999",
            "9007199254740991",
            "-9007199254740992",
            "1e299",
            "1e-299",
            "0.1",
            "100.0",
            "12.34e1",
            "1E+2",
            "0e10",
            "123456789012345e5",
            "0.000000000000000000000000001",
            "1234567890123456",
        ] {
            assert_eq!(short(text), canonical(text), "{text}");
        }
        for text in [
            "9007199254740993",
            "9999999999999999",
            "0.30000000000000004",
            "333333333.33333329",
            "1.7976931348623157e308",
            "5e-324",
            "1e400",
            "1e-400",
            "18446744073709551615",
            "12345678901234567",
        ] {
            assert_eq!(short(text), Err(Error::Unsupported(text.into())), "{text}");
        }
        // Random decimals of at most 15 significant digits against the general path (the double, then ryu).
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let digits = 1 + next() % 15;
            let mantissa = next() % 10u64.pow(digits as u32);
            let point = next() % (digits + 1);
            let exp = (next() % 601) as i64 - 300;
            let m = mantissa.to_string();
            let (int, frac) = m.split_at((point as usize).min(m.len()));
            let text = format!(
                "{}{}{}e{exp}",
                if int.is_empty() { "0" } else { int },
                if frac.is_empty() { "" } else { "." },
                frac
            );
            match short(&text) {
                Ok(got) => {
                    let mut want = String::new();
                    es_number(&mut want, text.parse().unwrap());
                    assert_eq!(got, want, "{text}");
                }
                // Only beyond 1e±300 (the exponent of the first significant digit).
                Err(e) => assert!(matches!(e, Error::Unsupported(_)), "{text}: {e}"),
            }
        }
    }

    #[test]
    fn utf16_order_differs_from_byte_order_above_the_bmp() {
        let (emoji, private) = ("\u{1f600}", "\u{e000}");
        assert!(emoji > private); // bytes (and code points)
        assert_eq!(utf16_cmp(emoji, private), Ordering::Less);
        assert_eq!(utf16_cmp("a", "ab"), Ordering::Less);
    }

    /// Doubles across the range: the text read back is the same double, and no shorter text is.
    #[test]
    fn shortest_round_trip() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state);
            if !x.is_finite() {
                continue;
            }
            let text = es(x);
            let back: f64 = text.parse().unwrap();
            assert_eq!(
                back.to_bits(),
                if x == 0.0 { 0 } else { x.to_bits() },
                "{text}"
            );
            assert_eq!(canonical(&text).unwrap(), text);
        }
    }
}
