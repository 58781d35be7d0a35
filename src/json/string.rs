//! JSON strings: the scan (to the closing quote, 8 bytes at a time), escapes, UTF-8, and decoding.
//!
//! Hand-written for speed: strings are most of the bytes of a request body, and this loop finds the next `"`,
//! `\` or control character with word-wide bit tricks (SWAR) instead of a byte at a time, noting on the way
//! whether the string had escapes or non-ASCII bytes (so that keys without either are compared in place).
//! The checks are serde_json's: the same escapes, surrogate pairs required, no raw control characters.

use super::error::ErrorKind;
use super::scan::{fail, Res};

/// [`string`] flags: the string had a backslash escape.
pub(super) const ESCAPED: u8 = 1;
/// [`string`] flags: the string had bytes outside ASCII.
pub(super) const NON_ASCII: u8 = 2;

/// The high bit of each byte of a word.
const HIGH: u64 = (u64::MAX / 255) << 7;

/// The rest of the string of `b` whose content starts at `start` (its opening quote consumed), up to and
/// including the closing quote. Returns the position after it, and [`ESCAPED`] and [`NON_ASCII`] flags.
/// `utf8_ok`: the whole text is known to be UTF-8; otherwise a string with non-ASCII bytes is checked.
#[inline(always)]
pub(super) fn string(b: &[u8], start: usize, utf8_ok: bool) -> Res<(usize, u8)> {
    let mut i = start;
    let mut flags = 0;
    // The high bits of every byte passed: non-ASCII text.
    let mut high = 0u64;
    loop {
        i = plain(b, i, &mut high);
        match b.get(i) {
            Some(b'"') => {
                if high & HIGH != 0 {
                    flags |= NON_ASCII;
                    if !utf8_ok {
                        check_utf8(b, start, i)?;
                    }
                }
                return Ok((i + 1, flags));
            }
            Some(b'\\') => {
                flags |= ESCAPED;
                i = escape(b, i)?;
            }
            None => return Err(fail(ErrorKind::EofInString, i)),
            Some(_) => return Err(fail(ErrorKind::ControlCharacter, i)),
        }
    }
}

/// The position of the first `"`, `\\` or control character of `b` from `i` (or `b.len()`). The bytes passed
/// are or-ed into `high`, which then has a bit of [`HIGH`] set if any of them is outside ASCII.
#[inline(always)]
fn plain(b: &[u8], i: usize, high: &mut u64) -> usize {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let i = match simd::plain(b, i, high) {
        Ok(found) => return found,
        Err(rest) => rest,
    };
    plain_words(b, i, high)
}

/// [`plain`], 8 bytes at a time (SWAR) while the buffer has them, then a byte at a time.
#[inline(always)]
fn plain_words(b: &[u8], mut i: usize, high: &mut u64) -> usize {
    const ONES: u64 = u64::MAX / 255;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // The lowest flagged byte of each test is exact (borrows only flag bytes above a real match).
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGH;
        if found != 0 {
            let n = (found.trailing_zeros() / 8) as usize;
            *high |= v & ((1u64 << (8 * n)) - 1);
            return i + n;
        }
        *high |= v;
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        *high |= u64::from(c);
        i += 1;
    }
    i
}

/// [`plain`] 16 bytes at a time with wasm's 128-bit SIMD, where the build has it (`.cargo/config.toml`):
/// Envoy's V8 runs it. Its semantics are [`plain_words`]' (the unit tests and the fuzz targets run both).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::{
        i8x16_bitmask, i8x16_eq, u8x16_lt, u8x16_splat, v128, v128_load, v128_or,
    };

    /// `Ok(position)` of the first `"`, `\\` or control character; `Err(position)` where fewer than 16 bytes
    /// are left to look at.
    #[inline(always)]
    pub(super) fn plain(b: &[u8], mut i: usize, high: &mut u64) -> Result<usize, usize> {
        let (quote, backslash, space) = (u8x16_splat(b'"'), u8x16_splat(b'\\'), u8x16_splat(0x20));
        while let Some(chunk) = b.get(i..i + 16) {
            // SAFETY: `chunk` has 16 readable bytes; `v128_load` needs no alignment.
            let v = unsafe { v128_load(chunk.as_ptr().cast::<v128>()) };
            let special = v128_or(
                v128_or(i8x16_eq(v, quote), i8x16_eq(v, backslash)),
                u8x16_lt(v, space),
            );
            let found = u32::from(i8x16_bitmask(special));
            // Bit k: byte k is from 0x80 up.
            let non_ascii = u32::from(i8x16_bitmask(v));
            if found != 0 {
                let n = found.trailing_zeros();
                *high |= u64::from((non_ascii & ((1u32 << n) - 1)) != 0) << 7;
                return Ok(i + n as usize);
            }
            *high |= u64::from(non_ascii != 0) << 7;
            i += 16;
        }
        Err(i)
    }
}

/// UTF-8 of the string content `b[start..end]`; an error points at the first byte that is not.
#[cold]
fn check_utf8(b: &[u8], start: usize, end: usize) -> Res {
    let raw = b.get(start..end).unwrap_or_default();
    match std::str::from_utf8(raw) {
        Ok(_) => Ok(()),
        Err(e) => Err(fail(ErrorKind::InvalidUtf8, start + e.valid_up_to())),
    }
}

/// The escape whose backslash is at `at`, checked as serde_json checks it. Returns the position after it.
#[cold]
fn escape(b: &[u8], at: usize) -> Res<usize> {
    let i = at + 1;
    let Some(&c) = b.get(i) else {
        return Err(fail(ErrorKind::EofInString, i));
    };
    let i = i + 1;
    match c {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i),
        b'u' => {
            let (n, mut i) = hex4(b, at, i)?;
            if (0xDC00..=0xDFFF).contains(&n) {
                return Err(fail(ErrorKind::LoneSurrogate, at));
            }
            if !(0xD800..=0xDBFF).contains(&n) {
                return Ok(i);
            }
            // A leading surrogate: a trailing one must follow, as `\uDC00`-`\uDFFF`.
            let second = i;
            for want in [b'\\', b'u'] {
                match b.get(i) {
                    None => return Err(fail(ErrorKind::EofInString, i)),
                    Some(&c) if c == want => i += 1,
                    Some(_) => return Err(fail(ErrorKind::LoneSurrogate, at)),
                }
            }
            let (n2, i) = hex4(b, second, i)?;
            if (0xDC00..=0xDFFF).contains(&n2) {
                Ok(i)
            } else {
                Err(fail(ErrorKind::LoneSurrogate, at))
            }
        }
        _ => Err(fail(ErrorKind::InvalidEscape, at)),
    }
}

/// The four hex digits at `i` of the `\u` escape at `at`, and the position after them.
fn hex4(b: &[u8], at: usize, i: usize) -> Res<(u16, usize)> {
    let Some(digits) = b.get(i..i + 4) else {
        return Err(fail(ErrorKind::EofInString, b.len()));
    };
    match hex_value(digits) {
        Some(n) => Ok((n, i + 4)),
        None => Err(fail(ErrorKind::InvalidEscape, at)),
    }
}

fn hex_value(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u16::from(v))
    })
}

/// Decodes `raw`, the content of a string whose escapes are well-formed (the scanner or serde_json has read
/// it), onto `out`; other bytes are copied as they are. False (with `out` incomplete) on a `\u` escape of half
/// a surrogate pair, which serde_json lets through when it only skips a string but refuses as a `String`.
pub(super) fn decode(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = raw.get(i) else { return false };
        i += 1;
        let ch = match e {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some(n) = raw.get(i..i + 4).and_then(hex_value) else {
                    return false;
                };
                i += 4;
                let code = match n {
                    0xD800..=0xDBFF => {
                        let low = match (raw.get(i..i + 2), raw.get(i + 2..i + 6)) {
                            (Some(b"\\u"), Some(digits)) => hex_value(digits),
                            _ => None,
                        };
                        let Some(low @ 0xDC00..=0xDFFF) = low else {
                            return false;
                        };
                        i += 6;
                        0x10000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return false,
                    n => u32::from(n),
                };
                let Some(ch) = char::from_u32(code) else {
                    return false;
                };
                ch
            }
            other => char::from(other),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(raw: &str) -> Option<String> {
        let mut out = Vec::new();
        decode(raw.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn decodes_like_serde_json() {
        for raw in [
            r"plain",
            r#"a\nb\t\u00e9\/\\\""#,
            r"\ud83d\ude00 x",
            r"\u0000\b\f\r",
            "caf\u{e9} \\u005f",
        ] {
            let want: String = serde_json::from_str(&format!("\"{raw}\"")).unwrap();
            assert_eq!(decoded(raw).as_deref(), Some(want.as_str()), "{raw}");
        }
        for lone in [
            r"\ud800",
            r"\udc00",
            r"\ud800\u0041",
            r"\ud800x",
            r"\ud800\ud800",
        ] {
            assert_eq!(decoded(lone), None, "{lone}");
        }
    }

    #[test]
    fn scans_strings_a_word_at_a_time() {
        // Every length around the 8-byte word, with the quote, a backslash or a control character at each place.
        for len in 0..20 {
            let body = "a".repeat(len);
            let text = format!("{body}\"");
            assert_eq!(string(text.as_bytes(), 0, true), Ok((len + 1, 0)));
            let escaped = format!("{body}\\n\"");
            assert_eq!(string(escaped.as_bytes(), 0, true), Ok((len + 3, ESCAPED)));
            let control = format!("{body}\u{1}\"");
            assert_eq!(
                string(control.as_bytes(), 0, true),
                Err(fail(ErrorKind::ControlCharacter, len))
            );
            let open = body.clone();
            assert_eq!(
                string(open.as_bytes(), 0, true),
                Err(fail(ErrorKind::EofInString, len))
            );
            let bad = [body.as_bytes(), b"\xc3\xa9\xff\""].concat();
            assert_eq!(
                string(&bad, 0, false),
                Err(fail(ErrorKind::InvalidUtf8, len + 2))
            );
            assert_eq!(string(&bad, 0, true), Ok((len + 4, NON_ASCII)));
        }
    }

    /// What [`plain`] must return, a byte at a time: the first `"`, `\\` or control character, and whether a
    /// byte before it is outside ASCII.
    fn plain_reference(b: &[u8], i: usize) -> (usize, bool) {
        let end = b
            .iter()
            .skip(i)
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .map_or(b.len(), |n| i + n);
        (end, b.get(i..end).is_some_and(|s| !s.is_ascii()))
    }

    fn check_plain(b: &[u8], i: usize) {
        let mut high = 0;
        let end = plain(b, i, &mut high);
        assert_eq!(
            (end, high & HIGH != 0),
            plain_reference(b, i),
            "{b:?} from {i}"
        );
        // Both loops, whichever `plain` is in this build (16 bytes at a time in wasm with SIMD).
        let mut high = 0;
        let end = plain_words(b, i, &mut high);
        assert_eq!(
            (end, high & HIGH != 0),
            plain_reference(b, i),
            "{b:?} from {i}"
        );
    }

    #[test]
    fn finds_the_end_of_plain_text_like_a_byte_loop() {
        // Adversarial: each special byte (and bytes that differ from one by a bit) at every place of buffers
        // around the 8- and 16-byte widths, after ASCII or non-ASCII text, from several starts.
        let specials = [
            b'"', b'\\', 0x00, 0x1f, 0x20, b'#', b'[', b'|', 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ];
        for len in 0..40 {
            for fill in [b'a', 0xc3] {
                for at in 0..=len {
                    for &special in &specials {
                        let mut b = vec![fill; len];
                        if let Some(c) = b.get_mut(at) {
                            *c = special;
                        }
                        for start in [0, 1, 7, 15, 16, 17] {
                            check_plain(&b, start.min(len));
                        }
                    }
                }
            }
        }
        // Random: a xorshift generator (deterministic), bytes biased towards the special ones.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 70) as usize;
            let rare = next() % 64 + 1;
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % rare == 0 {
                        specials
                            .get((r >> 8) as usize % specials.len())
                            .copied()
                            .unwrap_or(0)
                    } else {
                        (r >> 16) as u8 | 0x20
                    }
                })
                .collect();
            let start = (next() % (len as u64 + 1)) as usize;
            check_plain(&b, start);
        }
    }
}
