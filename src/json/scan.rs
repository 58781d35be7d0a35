//! The JSON grammar in one pass: one loop over the bytes, an explicit stack of open arrays and objects (no
//! recursion, so no stack to exhaust), the cursor in a local, no tree built.
//!
//! Hand-written for speed and strictness. It is on every request's path, where parsing into a tree (or
//! through serde's visitor, which this replaced) costs allocations per value; and it must refuse what
//! `serde_json` lets through: duplicate keys (see `keys.rs`). Everything else follows serde_json's
//! deserializer (`Deserializer::from_slice` and `deserialize_any`): what it accepts, and which error kind it
//! finds first. The differential oracle (`fuzz/fuzz_targets/reference.rs`, in the unit tests and the fuzz
//! targets) checks both on every input.
//!
//! Strings are scanned in `string.rs`, numbers in `number.rs`, keys compared in `keys.rs`; while it checks, the
//! scanner tells the recording (`outline.rs`) where values start and end at the top levels.

use super::error::{DuplicateKey, ErrorKind, JsonError, Position, SyntaxError};
use super::keys::{fingerprint, Big, Key, NOT_OWNED};
use super::number::number;
use super::outline::{Outline, Records, Role, Span, Watch};
use super::string::string;
use std::hash::RandomState;

/// serde_json refuses the 128th nested array or object.
pub(super) const MAX_DEPTH: usize = 127;

/// A failure: what, and the byte offset it is at. Small and `Copy`, so that results travel in registers; a
/// duplicate key's texts wait in [`Scanner::duplicate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fail {
    pub kind: ErrorKind,
    pub at: usize,
}

pub(super) type Res<T = ()> = Result<T, Fail>;

pub(super) fn fail(kind: ErrorKind, at: usize) -> Fail {
    Fail { kind, at }
}

/// Checks `bytes` like [`super::check_strict`] and, with a `watch`, records its messages.
pub(crate) fn scan<'a>(bytes: &'a [u8], watch: Option<&Watch>) -> Result<Outline<'a>, JsonError> {
    // UTF-8 of the whole body at once (fast); only when that fails is each string checked on its own, to
    // report the first error in the order serde_json finds it.
    let text = std::str::from_utf8(bytes);
    let mut s = Scanner {
        b: bytes,
        utf8_ok: text.is_ok(),
        levels: Vec::with_capacity(16),
        keys: Vec::with_capacity(64),
        owned: Vec::new(),
        bigs: Vec::new(),
        random: None,
        duplicate: None,
        watch,
        rec: Records::new(watch.is_some()),
    };
    if let Err(f) = s.run() {
        return Err(error(bytes, f, s.duplicate.take()));
    }
    match text {
        Ok(text) => Ok(s.rec.outline(text)),
        // Unreachable: outside strings only ASCII passes, and every string was checked.
        Err(e) => Err(error(
            bytes,
            fail(ErrorKind::InvalidUtf8, e.valid_up_to()),
            None,
        )),
    }
}

/// The error of a [`Fail`] in `bytes` (`duplicate`: the texts of a duplicate key). Out of line: the scanner's
/// loop stays small.
#[cold]
#[inline(never)]
fn error(bytes: &[u8], f: Fail, duplicate: Option<(String, String)>) -> JsonError {
    let at = Position::of(bytes, f.at);
    match f.kind {
        ErrorKind::DuplicateKey => {
            let (key, earlier) = duplicate.unwrap_or_default();
            JsonError::DuplicateKey(DuplicateKey { key, earlier, at })
        }
        kind => JsonError::Syntax(SyntaxError { kind, at }),
    }
}

/// An open array or object.
#[derive(Clone, Copy)]
pub(super) struct Level {
    object: bool,
    /// What the recording makes of it (`outline.rs`).
    pub role: Role,
    /// In a watched object: the watched key whose value is being read.
    pub pending: Option<u8>,
    start: usize,
    /// This object's keys are `keys[keys_start..]`, their decoded copies `owned[owned_start..]`.
    pub keys_start: usize,
    owned_start: usize,
}

/// The scanner's state: one struct, whose methods live with their concern (keys in `keys.rs`, the recording in
/// `outline.rs`). With the keys and the recording in structs of their own, the loop ran about 2 % more
/// instructions per byte (valgrind, on the microbenchmark's bodies).
pub(super) struct Scanner<'a, 'w> {
    pub b: &'a [u8],
    pub utf8_ok: bool,
    pub levels: Vec<Level>,
    /// The keys of every open object (see `keys.rs`).
    pub keys: Vec<Key>,
    pub owned: Vec<String>,
    pub bigs: Vec<Big>,
    pub random: Option<RandomState>,
    /// The key and the earlier key of a [`Fail`] for a duplicate key.
    pub duplicate: Option<(String, String)>,
    /// What to record, and the records (see `outline.rs`).
    pub watch: Option<&'w Watch>,
    pub rec: Records,
}

#[inline(always)]
pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

impl Scanner<'_, '_> {
    fn run(&mut self) -> Res {
        let b = self.b;
        let mut pos = 0;
        'value: loop {
            // A value is expected at `pos` (after whitespace).
            pos = skip_ws(b, pos);
            let start = pos;
            let Some(&c) = b.get(pos) else {
                return Err(fail(ErrorKind::EofInValue, pos));
            };
            let role = if self.watch.is_some() && self.levels.len() <= 2 {
                self.begin_value(start, c)
            } else {
                Role::Plain
            };
            match c {
                b'"' => {
                    pos = string(b, pos + 1, self.utf8_ok)?.0;
                    self.complete(start, pos);
                }
                b'-' | b'0'..=b'9' => {
                    pos = number(b, pos)?;
                    self.complete(start, pos);
                }
                b't' => {
                    pos = ident(b, pos + 1, b"rue")?;
                    self.complete(start, pos);
                }
                b'f' => {
                    pos = ident(b, pos + 1, b"alse")?;
                    self.complete(start, pos);
                }
                b'n' => {
                    pos = ident(b, pos + 1, b"ull")?;
                    self.complete(start, pos);
                }
                b'{' | b'[' => {
                    if self.levels.len() >= MAX_DEPTH {
                        return Err(fail(ErrorKind::TooDeep, pos));
                    }
                    let object = c == b'{';
                    self.levels.push(Level {
                        object,
                        role,
                        pending: None,
                        start,
                        keys_start: self.keys.len(),
                        owned_start: self.owned.len(),
                    });
                    pos = skip_ws(b, pos + 1);
                    match (object, b.get(pos)) {
                        (true, Some(b'}')) | (false, Some(b']')) => {
                            pos += 1;
                            self.close(pos);
                        }
                        (true, Some(b'"')) => {
                            pos = self.key(pos)?;
                            continue 'value;
                        }
                        (true, Some(_)) => return Err(fail(ErrorKind::KeyNotString, pos)),
                        (true, None) => return Err(fail(ErrorKind::EofInObject, pos)),
                        (false, Some(_)) => continue 'value,
                        (false, None) => return Err(fail(ErrorKind::EofInArray, pos)),
                    }
                }
                _ => return Err(fail(ErrorKind::ExpectedValue, pos)),
            }
            // A value ended: close containers until one wants another value.
            loop {
                let Some(top) = self.levels.last() else {
                    pos = skip_ws(b, pos);
                    if pos < b.len() {
                        return Err(fail(ErrorKind::TrailingCharacters, pos));
                    }
                    return Ok(());
                };
                let object = top.object;
                pos = skip_ws(b, pos);
                match (object, b.get(pos)) {
                    (_, Some(b',')) => {
                        let comma = pos;
                        pos = skip_ws(b, pos + 1);
                        match (object, b.get(pos)) {
                            (true, Some(b'"')) => {
                                pos = self.key(pos)?;
                                continue 'value;
                            }
                            (false, Some(b']')) | (true, Some(b'}')) => {
                                return Err(fail(ErrorKind::TrailingComma, comma))
                            }
                            (false, Some(_)) => continue 'value,
                            (true, Some(_)) => return Err(fail(ErrorKind::KeyNotString, pos)),
                            (_, None) => return Err(fail(ErrorKind::EofInValue, pos)),
                        }
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => {
                        pos += 1;
                        self.close(pos);
                    }
                    (true, Some(_)) => return Err(fail(ErrorKind::ExpectedCommaOrObjectEnd, pos)),
                    (false, Some(_)) => return Err(fail(ErrorKind::ExpectedCommaOrArrayEnd, pos)),
                    (true, None) => return Err(fail(ErrorKind::EofInObject, pos)),
                    (false, None) => return Err(fail(ErrorKind::EofInArray, pos)),
                }
            }
        }
    }

    /// Closes the innermost container, whose closing byte ends before `end`.
    #[inline]
    fn close(&mut self, end: usize) {
        if let Some(level) = self.levels.pop() {
            self.keys.truncate(level.keys_start);
            if self.owned.len() > level.owned_start {
                self.owned.truncate(level.owned_start);
            }
            if self
                .bigs
                .last()
                .is_some_and(|big| big.depth > self.levels.len())
            {
                self.bigs.pop();
            }
            self.complete(level.start, end);
        }
    }

    /// A value that started at `start` ends before `end`.
    #[inline(always)]
    fn complete(&mut self, start: usize, end: usize) {
        if self.watch.is_some() && self.levels.len() <= 3 {
            self.record(Span { start, end });
        }
    }

    /// An object key at `pos` (its opening quote): read, check against the object's other keys, note if
    /// watched. Returns the position after the colon.
    #[inline(always)]
    fn key(&mut self, pos: usize) -> Res<usize> {
        let b = self.b;
        let start = pos + 1;
        let (after, flags) = string(b, start, self.utf8_ok)?;
        let end = after - 1;
        let key = if flags == 0 {
            // The common key: ASCII, no escapes, read in place.
            Key {
                fp: fingerprint(b, start, end - start),
                start,
                end,
                owned: NOT_OWNED,
                ascii: true,
            }
        } else {
            self.unusual_key(start, end, flags)
        };
        self.check_duplicate(key, pos)?;
        if matches!(
            self.levels.last().map(|l| l.role),
            Some(Role::Message | Role::Nested)
        ) {
            self.watch_key(&key);
        }
        let pos = skip_ws(b, after);
        match b.get(pos) {
            Some(b':') => Ok(pos + 1),
            Some(_) => Err(fail(ErrorKind::ExpectedColon, pos)),
            None => Err(fail(ErrorKind::EofInObject, pos)),
        }
    }
}

/// A literal's remaining bytes `rest` from `i` (its first byte consumed). Returns the position after it.
#[inline(always)]
fn ident(b: &[u8], i: usize, rest: &[u8]) -> Res<usize> {
    if b.get(i..i + rest.len()) == Some(rest) {
        return Ok(i + rest.len());
    }
    ident_error(b, i, rest)
}

#[cold]
fn ident_error(b: &[u8], i: usize, rest: &[u8]) -> Res<usize> {
    for (at, &want) in (i..).zip(rest) {
        match b.get(at) {
            None => return Err(fail(ErrorKind::EofInValue, at)),
            Some(&c) if c != want => return Err(fail(ErrorKind::ExpectedLiteral, at)),
            Some(_) => {}
        }
    }
    Ok(i + rest.len())
}
