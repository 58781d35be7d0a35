//! Duplicate object keys, compared the way a lenient decoder compares them: after escapes are decoded, and
//! ignoring case (ASCII, plus the Kelvin sign and the long s that Go's `encoding/json` folds onto `k` and `s`).
//!
//! Hand-written because `serde_json` lets a repeated key through (the last one wins, where other parsers keep
//! the first: a parser-differential bypass) and because it must cost next to nothing per key: each key gets a
//! fingerprint (its first 8 folded bytes in a word, computed in place) compared against the object's other
//! keys; past [`LINEAR_KEYS`] keys, a map keyed by a random-keyed hash takes over, so that crafted keys cannot
//! make an object quadratic.

use super::error::ErrorKind;
use super::scan::{fail, Fail, Res, Scanner};
use super::string::{decode, ESCAPED};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Compares two object keys the way a lenient decoder might: ASCII case-insensitively, with the Kelvin sign
/// and the long s folded onto `k` and `s` (Go's `encoding/json` does this).
pub fn keys_collide(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// The case folding of [`keys_collide`]: two keys collide exactly when their folded characters are equal.
fn fold(c: char) -> char {
    match c {
        '\u{017F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// Objects with more keys than this find collisions through a hash map instead of comparing with each key.
const LINEAR_KEYS: usize = 16;

/// Set in the fingerprint of keys longer than 7 folded bytes, whose fingerprint is not the whole key.
pub(super) const LONG: u64 = 1 << 63;

/// [`Key::owned`] of a key read in place.
pub(super) const NOT_OWNED: u32 = u32::MAX;

/// One key of an open object.
#[derive(Clone, Copy)]
pub(super) struct Key {
    /// See [`fingerprint`]: equal for keys that collide.
    pub fp: u64,
    /// The key's content (without quotes): `b[start..end]`, or `owned[owned]` when it had escapes.
    pub start: usize,
    pub end: usize,
    pub owned: u32,
    pub ascii: bool,
}

/// An object past [`LINEAR_KEYS`] keys: keyed hashes of its folded keys, so that crafted keys cannot all
/// land on one hash.
pub(super) struct Big {
    /// The level of the object (the length of `levels` while it is open).
    pub depth: usize,
    /// Hash to the index (in `keys`) of the last key with that hash; for each key of the object (from
    /// `Level::keys_start`), the previous key with the same hash.
    map: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    chains: Vec<Option<usize>>,
}

// The scanner's keys (its fields, see `Scanner`): `keys` holds the keys of every open object (each object's
// from its `Level::keys_start`), `owned` the decoded copies of keys that had escapes, `bigs` the maps of big
// objects.
impl Scanner<'_, '_> {
    /// A key with escapes (decoded into [`Scanner::owned`]) or non-ASCII characters.
    #[cold]
    pub(super) fn unusual_key(&mut self, start: usize, end: usize, flags: u8) -> Key {
        let raw = self.b.get(start..end).unwrap_or_default();
        let mut owned = NOT_OWNED;
        if flags & ESCAPED != 0 {
            let mut buf = Vec::with_capacity(raw.len());
            // The scanner has checked the escapes: decoding cannot fail.
            decode(raw, &mut buf);
            owned = u32::try_from(self.owned.len()).unwrap_or(NOT_OWNED - 1);
            self.owned.push(
                String::from_utf8(buf)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            );
        }
        let text = self.owned.get(owned as usize).map_or(raw, |s| s.as_bytes());
        let ascii = text.is_ascii();
        let fp = if ascii {
            fingerprint(text, 0, text.len())
        } else {
            folded_fingerprint(text)
        };
        Key {
            fp,
            start,
            end,
            owned,
            ascii,
        }
    }

    /// Refuses `key` (its opening quote at `at`) if it collides with an earlier key of the innermost object,
    /// else adds it.
    #[inline(always)]
    pub(super) fn check_duplicate(&mut self, key: Key, at: usize) -> Res {
        let Some(level) = self.levels.last() else {
            return Ok(());
        };
        let first = level.keys_start;
        let earlier = self.keys.get(first..).unwrap_or_default();
        if earlier.len() < LINEAR_KEYS {
            for (i, k) in earlier.iter().enumerate() {
                // A short key's fingerprint is the whole folded key; a long one's only a prefix.
                if k.fp == key.fp && (key.fp & LONG == 0 || self.collide(k, &key)) {
                    return Err(self.duplicate_error(first + i, &key, at));
                }
            }
            self.keys.push(key);
            return Ok(());
        }
        self.check_duplicate_hashed(key, at)
    }

    /// [`Self::check_duplicate`] past [`LINEAR_KEYS`] keys: through a map of keyed hashes, built when the
    /// object gets that big.
    #[cold]
    #[inline(never)]
    fn check_duplicate_hashed(&mut self, key: Key, at: usize) -> Res {
        let depth = self.levels.len();
        let first = self.levels.last().map_or(0, |l| l.keys_start);
        let random = self.random.get_or_insert_with(RandomState::new);
        if self.bigs.last().is_none_or(|big| big.depth != depth) {
            let mut big = Big {
                depth,
                map: HashMap::with_capacity_and_hasher(4 * LINEAR_KEYS, Default::default()),
                chains: Vec::with_capacity(4 * LINEAR_KEYS),
            };
            for (i, k) in self.keys.iter().enumerate().skip(first) {
                let h = keyed_hash(random, key_text(self.b, &self.owned, k), k.ascii);
                big.chains.push(big.map.insert(h, i));
            }
            self.bigs.push(big);
        }
        let Some(big) = self.bigs.last_mut() else {
            return Ok(());
        };
        let text = key_text(self.b, &self.owned, &key);
        let h = keyed_hash(random, text, key.ascii);
        // One map operation per key: add it, then walk the keys it displaced (on a collision the scan stops,
        // so the map having the new key does not matter).
        let previous = big.map.insert(h, self.keys.len());
        big.chains.push(previous);
        let mut found = previous;
        while let Some(i) = found {
            let Some(k) = self.keys.get(i) else { break };
            if collide(key_text(self.b, &self.owned, k), k.ascii, text, key.ascii) {
                return Err(self.duplicate_error(i, &key, at));
            }
            found = big.chains.get(i - first).copied().flatten();
        }
        self.keys.push(key);
        Ok(())
    }

    /// Out of line: inlined, the compiler prepared its arguments before the loop of [`Self::check_duplicate`],
    /// for every key, though it is called only on equal fingerprints (about 8 % more instructions per byte).
    #[inline(never)]
    fn collide(&self, a: &Key, b: &Key) -> bool {
        collide(
            key_text(self.b, &self.owned, a),
            a.ascii,
            key_text(self.b, &self.owned, b),
            b.ascii,
        )
    }

    /// The text of key `k` (escapes decoded).
    pub(super) fn key_text(&self, k: &Key) -> &[u8] {
        key_text(self.b, &self.owned, k)
    }

    pub(super) fn key_string(&self, k: &Key) -> String {
        String::from_utf8_lossy(self.key_text(k)).into_owned()
    }

    /// `key`, whose opening quote is at `at`, collides with the earlier key `keys[i]`.
    #[cold]
    fn duplicate_error(&mut self, i: usize, key: &Key, at: usize) -> Fail {
        let earlier = self
            .keys
            .get(i)
            .map(|k| self.key_string(k))
            .unwrap_or_default();
        self.duplicate = Some((self.key_string(key), earlier));
        fail(ErrorKind::DuplicateKey, at)
    }
}

fn key_text<'s>(b: &'s [u8], owned: &'s [String], k: &Key) -> &'s [u8] {
    match k.owned {
        NOT_OWNED => b.get(k.start..k.end).unwrap_or_default(),
        i => owned.get(i as usize).map_or(&[][..], |s| s.as_bytes()),
    }
}

/// [`keys_collide`] on key texts, with their ASCII-ness known.
pub(super) fn collide(a: &[u8], a_ascii: bool, b: &[u8], b_ascii: bool) -> bool {
    if a_ascii && b_ascii {
        return a.len() == b.len() && a.eq_ignore_ascii_case(b);
    }
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => keys_collide(a, b),
        _ => a == b,
    }
}

/// The fingerprint of the ASCII key `src[start..start + len]`: its first 8 bytes folded ([`fold`]: to lower
/// case), as a little-endian word. Keys up to 7 bytes: zeros after the key and its length in the top byte,
/// so that the fingerprint is the whole key. Longer keys: [`LONG`] set, only a prefix.
#[inline(always)]
pub(super) fn fingerprint(src: &[u8], start: usize, len: usize) -> u64 {
    // Read 8 bytes at once when the buffer has them (it nearly always does: a key is followed by `":`).
    let word = match src.get(start..start + 8) {
        Some(chunk) => {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            u64::from_le_bytes(w)
        }
        None => {
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(src.get(start..).unwrap_or_default()) {
                *d = *s;
            }
            u64::from_le_bytes(w)
        }
    };
    let word = ascii_lowercase(word);
    if len < 8 {
        (word & ((1u64 << (8 * len)) - 1)) | ((len as u64) << 56)
    } else {
        word | LONG
    }
}

/// [`fingerprint`] of each field (ASCII), at compile time.
pub(super) const fn field_fingerprints<const N: usize>(fields: &[&str]) -> [u64; N] {
    let mut fps = [0u64; N];
    let mut slots: &mut [u64] = &mut fps;
    let mut rest = fields;
    while let ([slot, more_slots @ ..], [field, more_fields @ ..]) = (slots, rest) {
        let mut word = 0u64;
        let mut shift = 0;
        let mut bytes = field.as_bytes();
        while let ([c, tail @ ..], true) = (bytes, shift < 64) {
            word |= (c.to_ascii_lowercase() as u64) << shift;
            shift += 8;
            bytes = tail;
        }
        let len = field.len();
        *slot = if len < 8 {
            word | ((len as u64) << 56)
        } else {
            word | LONG
        };
        slots = more_slots;
        rest = more_fields;
    }
    fps
}

/// [`fingerprint`] of a non-ASCII key: of its folded characters' UTF-8 bytes.
#[cold]
fn folded_fingerprint(text: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let mut n: usize = 0;
    for c in String::from_utf8_lossy(text).chars().map(fold) {
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            if let Some(d) = w.get_mut(n) {
                *d = b;
            }
            n += 1;
        }
    }
    let word = u64::from_le_bytes(w);
    if n < 8 {
        (word & ((1u64 << (8 * n)) - 1)) | ((n as u64) << 56)
    } else {
        word | LONG
    }
}

/// ASCII letters of a word of ASCII bytes to lower case, all at once.
fn ascii_lowercase(w: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    // Per byte (all below 0x80, so no carries): high bit set when >= 'A', and when > 'Z'.
    let ge_a = w.wrapping_add(ONES * (0x80 - u64::from(b'A')));
    let gt_z = w.wrapping_add(ONES * (0x7F - u64::from(b'Z')));
    let upper = (ge_a ^ gt_z) & (ONES * 0x80);
    w | (upper >> 2)
}

/// A DoS-resistant (randomly keyed) hash of the folded key (ASCII and non-ASCII keys that fold alike hash
/// alike). The folded bytes go to SipHash in one `write`: fed a byte (or a word) per call, SipHash spent ~400
/// instructions on a 9-byte key, most of the cost of scanning a big object.
fn keyed_hash(random: &RandomState, text: &[u8], ascii: bool) -> u64 {
    let mut h = random.build_hasher();
    let unicode = if ascii {
        None
    } else {
        std::str::from_utf8(text).ok()
    };
    match unicode {
        Some(s) => {
            let mut folded = Vec::with_capacity(text.len());
            for c in s.chars().map(fold) {
                let mut buf = [0u8; 4];
                folded.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            h.write(&folded);
        }
        _ => {
            let mut buf = [0u8; 64];
            match buf.get_mut(..text.len()) {
                Some(short) => {
                    fold_into(short, text);
                    h.write(short);
                }
                None => {
                    let mut long = vec![0u8; text.len()];
                    fold_into(&mut long, text);
                    h.write(&long);
                }
            }
        }
    }
    h.finish()
}

/// `text` onto `out` (as long) with its ASCII letters in lower case, 8 bytes at a time.
fn fold_into(out: &mut [u8], text: &[u8]) {
    let mut words = text.chunks_exact(8);
    let mut outs = out.chunks_exact_mut(8);
    for (o, chunk) in (&mut outs).zip(&mut words) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        o.copy_from_slice(&fold_word(u64::from_le_bytes(w)).to_le_bytes());
    }
    for (o, &c) in outs.into_remainder().iter_mut().zip(words.remainder()) {
        *o = c.to_ascii_lowercase();
    }
}

/// [`ascii_lowercase`] of a word of any bytes: bytes from 0x80 up are left as they are.
fn fold_word(w: u64) -> u64 {
    const HIGH: u64 = (u64::MAX / 255) << 7;
    let low = ascii_lowercase(w & !HIGH);
    // `low` has 0x20 added to the letters of `w & !HIGH`; keep that only where `w` itself was ASCII.
    w | ((low ^ (w & !HIGH)) & !((w & HIGH) >> 2))
}

/// For maps keyed by a hash that is already keyed and random: no second hashing.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_collide_ignoring_case_and_the_go_foldings() {
        assert!(keys_collide("method", "METHOD"));
        assert!(keys_collide("params", "param\u{17f}"));
        assert!(keys_collide("\u{212a}ey", "key"));
        assert!(!keys_collide("method", "methods"));
        assert!(!keys_collide("\u{e9}", "\u{c9}"));
    }

    #[test]
    fn watched_fields_fingerprint_like_keys() {
        let fields: &[&str] = &["jsonrpc", "id", "arguments", "", "a", "exactly8"];
        let fps: [u64; 6] = field_fingerprints(fields);
        for (field, fp) in fields.iter().zip(fps) {
            for key in [field.to_string(), field.to_ascii_uppercase()] {
                assert_eq!(fp, fingerprint(key.as_bytes(), 0, key.len()), "{key}");
                // Also when the key sits in a buffer with bytes after it, as keys do.
                let buffered = format!("{key}\":1}}");
                assert_eq!(fp, fingerprint(buffered.as_bytes(), 0, key.len()), "{key}");
            }
        }
        assert_eq!(
            folded_fingerprint("\u{17f}\u{212a}".as_bytes()),
            fingerprint(b"SK", 0, 2)
        );
        assert_ne!(fingerprint(b"a\0", 0, 2), fingerprint(b"a", 0, 1));
    }

    #[test]
    fn keyed_hashes_fold_like_keys_collide() {
        let random = RandomState::new();
        let h = |k: &str| keyed_hash(&random, k.as_bytes(), k.is_ascii());
        for (a, b) in [
            ("method", "METHOD"),
            ("a_long_key_Name_over_8", "A_LONG_KEY_NAME_OVER_8"),
            ("params", "param\u{17f}"),
            ("\u{212a}ey_\u{e9}", "KEY_\u{e9}"),
        ] {
            assert!(keys_collide(a, b));
            assert_eq!(h(a), h(b), "{a} {b}");
        }
        for (a, b) in [
            ("a", "a\0"),
            ("\u{e9}", "\u{c9}"),
            ("ab", "ba"),
            ("@", "`"),
            ("[", "{"),
        ] {
            assert!(!keys_collide(a, b));
            assert_ne!(h(a), h(b), "{a} {b}");
        }
        // Bytes from 0x80 up are not folded, whatever their low bits (0xC1 & 0x7F is `A`).
        for b in 0..=255u8 {
            let folded = fold_word(u64::from(b)) as u8;
            assert_eq!(
                folded,
                if b.is_ascii() {
                    b.to_ascii_lowercase()
                } else {
                    b
                },
                "{b:#x}"
            );
            assert_eq!(
                fold_word(u64::from_le_bytes([b; 8])),
                u64::from_le_bytes([folded; 8])
            );
        }
    }
}
