//! Strict JSON well-formedness for bytes we must not misread.
//!
//! `serde_json` on its own accepts duplicate object keys (the last one wins), while other parsers keep the
//! first: a classic parser-differential bypass. [`check_strict`] walks the whole document once, without
//! building a tree, and rejects:
//! - anything `serde_json` rejects (syntax, invalid UTF-8, lone surrogates, nesting deeper than 128, numbers
//!   out of `f64` range), with `serde_json`'s own error message and position;
//! - two keys of one object that are equal, or equal after case folding (`method` / `Method` / `METHOD`,
//!   and the Unicode letters that fold onto ASCII `s` and `k`), because some JSON decoders match field
//!   names case-insensitively.
//!
//! Keys are compared after their escapes are decoded, so `"\u006dethod"` collides with `"method"`.
//!
//! The scanner is hand-written (one pass, no tree, no recursion) and also serves [`crate::mcp`]: while it
//! checks a request body it records where the JSON-RPC envelope fields of each message are ([`Watch`],
//! [`Outline`]), so that reading a message never scans the body again.

use serde::de::value::{BorrowedStrDeserializer, MapDeserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

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
    scan(bytes, None).map(|_| ())
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

// ---------------------------------------------------------------------------------------------------------
// What the scanner records for its caller.

/// Where a value lies in the scanned document: bytes `start..end`, without surrounding whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

/// The most keys a [`Watch`] can name per level.
pub(crate) const MAX_WATCHED: usize = 6;

/// Which object keys [`scan`] records, in each message of the document: the document itself, or each element
/// of a top-level array (a batch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    /// Keys of the message object, and their fingerprints.
    fields: &'static [&'static str],
    fps: [u64; MAX_WATCHED],
    /// Keys recorded one level down, in the value of `fields[i]` when that value is an object.
    nested: Option<(usize, &'static [&'static str], [u64; MAX_WATCHED])>,
}

impl Watch {
    /// `fields` of each message object, and `nested` fields in the object value of one of them: each list
    /// ASCII, lower case, at most [`MAX_WATCHED`] keys (more are ignored), none a case variant of another.
    pub const fn new(
        fields: &'static [&'static str],
        nested: Option<(usize, &'static [&'static str])>,
    ) -> Watch {
        Watch {
            fields,
            fps: field_fingerprints(fields),
            nested: match nested {
                Some((i, list)) => Some((i, list, field_fingerprints(list))),
                None => None,
            },
        }
    }
}

/// [`fingerprint`] of each ASCII field, at compile time.
const fn field_fingerprints(fields: &[&str]) -> [u64; MAX_WATCHED] {
    let mut fps = [0u64; MAX_WATCHED];
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

/// One message (the document, or an element of a top-level array): where it is, and where its records
/// start in [`Outline::picks`] and [`Outline::variants`] (they end where the next message's start). Small,
/// as a batch may hold a message every three bytes.
#[derive(Debug, Clone, Copy)]
struct Item {
    span: Span,
    picks: usize,
    variants: usize,
}

/// The value of a watched key: `field` indexes [`Watch::fields`], or the nested list when `nested`.
#[derive(Debug, Clone, Copy)]
struct Pick {
    nested: bool,
    field: u8,
    span: Span,
}

/// A key that is not a watched key but a case variant of one ([`keys_collide`]), escapes decoded.
#[derive(Debug)]
struct Variant {
    nested: bool,
    field: u8,
    key: String,
}

/// A checked document and, when asked for with a [`Watch`], where its messages and watched keys are.
#[derive(Debug)]
pub(crate) struct Outline<'a> {
    text: &'a str,
    /// The document is an array: its elements are the messages. Otherwise the document itself is.
    pub batch: bool,
    items: Vec<Item>,
    picks: Vec<Pick>,
    variants: Vec<Variant>,
}

impl<'a> Outline<'a> {
    /// How many messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Where message `i` is.
    pub fn span(&self, i: usize) -> Option<Span> {
        self.items.get(i).map(|item| item.span)
    }
    /// The value of watched key `field` of message `i` (`nested`: of the nested object).
    pub fn value(&self, i: usize, nested: bool, field: usize) -> Option<Span> {
        let (start, end) = self.range(i, |item| item.picks, self.picks.len());
        self.picks
            .get(start..end)?
            .iter()
            .find(|p| p.nested == nested && usize::from(p.field) == field)
            .map(|p| p.span)
    }
    /// The keys of message `i` (`nested`: of its nested object) that are case variants of a watched key,
    /// with that key's index, in document order.
    pub fn variants(&self, i: usize, nested: bool) -> impl Iterator<Item = (&str, usize)> {
        let (start, end) = self.range(i, |item| item.variants, self.variants.len());
        self.variants
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter(move |v| v.nested == nested)
            .map(|v| (v.key.as_str(), usize::from(v.field)))
    }
    fn range(&self, i: usize, start: impl Fn(&Item) -> usize, len: usize) -> (usize, usize) {
        let first = self.items.get(i).map_or(len, &start);
        let end = self.items.get(i + 1).map_or(len, &start);
        (first, end)
    }
    /// The JSON text of a value of this document.
    pub fn text(&self, span: Span) -> &'a str {
        self.text.get(span.start..span.end).unwrap_or("")
    }
    /// The first byte of a value, which tells its type.
    pub fn lead(&self, span: Span) -> u8 {
        self.text
            .as_bytes()
            .get(span.start)
            .copied()
            .unwrap_or(b' ')
    }
    /// A value of this document as a borrowed [`RawValue`], without reading it again.
    pub fn raw(&self, span: Span) -> Result<&'a RawValue, serde_json::Error> {
        raw_value(self.text(span))
    }
}

/// How `serde_json` itself hands out a `&RawValue` (its private protocol): a map with one key, its token,
/// whose value is the borrowed JSON text. Feeding it ourselves wraps text we have already checked without
/// parsing it again (`serde_json::from_str::<&RawValue>` would re-read the whole value).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `json` (a complete value [`scan`] has checked) as a `&RawValue`. Falls back to a validating parse should
/// `serde_json` ever change its protocol, so the result never depends on the shortcut.
fn raw_value(json: &str) -> Result<&RawValue, serde_json::Error> {
    raw_value_unchecked(json).or_else(|_| serde_json::from_str(json))
}

fn raw_value_unchecked(json: &str) -> Result<&RawValue, serde_json::Error> {
    let entry = (
        BorrowedStrDeserializer::<serde_json::Error>::new(RAW_VALUE_TOKEN),
        BorrowedStrDeserializer::<serde_json::Error>::new(json),
    );
    <&RawValue>::deserialize(MapDeserializer::new(std::iter::once(entry)))
}

/// Checks `bytes` like [`check_strict`] and, with a `watch`, records its messages.
pub(crate) fn scan<'a>(bytes: &'a [u8], watch: Option<&Watch>) -> Result<Outline<'a>, JsonError> {
    // UTF-8 of the whole body at once (fast); only when that fails is each string checked on its own, to
    // report the first error where serde_json does.
    let text = std::str::from_utf8(bytes).ok();
    let mut s = Scanner {
        b: bytes,
        utf8_ok: text.is_some(),
        levels: Vec::with_capacity(16),
        keys: Vec::with_capacity(64),
        owned: Vec::new(),
        bigs: Vec::new(),
        random: None,
        duplicate: String::new(),
        watch,
        batch: false,
        // One message, and the (at most 9) fields it has, without growing: the common body.
        items: Vec::with_capacity(usize::from(watch.is_some())),
        picks: Vec::with_capacity(if watch.is_some() { 16 } else { 0 }),
        variants: Vec::new(),
    };
    if let Err(Fail { code, at }) = s.run() {
        let (line, column) = position(bytes, at);
        return Err(match code {
            Some(code) => {
                JsonError::Syntax(format!("{} at line {line} column {column}", code.message()))
            }
            None => {
                JsonError::DuplicateKey(format!("{} at line {line} column {column}", s.duplicate))
            }
        });
    }
    match text {
        Some(text) => Ok(Outline {
            text,
            batch: s.batch,
            items: s.items,
            picks: s.picks,
            variants: s.variants,
        }),
        // Unreachable: outside strings only ASCII passes, and every string was checked.
        None => Err(JsonError::Syntax(
            Code::InvalidUnicodeCodePoint.message().into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors, worded and placed as serde_json words and places them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    EofWhileParsingList,
    EofWhileParsingObject,
    EofWhileParsingString,
    EofWhileParsingValue,
    ExpectedColon,
    ExpectedListCommaOrEnd,
    ExpectedObjectCommaOrEnd,
    ExpectedSomeIdent,
    ExpectedSomeValue,
    InvalidEscape,
    InvalidNumber,
    NumberOutOfRange,
    InvalidUnicodeCodePoint,
    ControlCharacterWhileParsingString,
    KeyMustBeAString,
    LoneLeadingSurrogateInHexEscape,
    TrailingComma,
    TrailingCharacters,
    UnexpectedEndOfHexEscape,
    RecursionLimitExceeded,
}

impl Code {
    fn message(self) -> &'static str {
        match self {
            Code::EofWhileParsingList => "EOF while parsing a list",
            Code::EofWhileParsingObject => "EOF while parsing an object",
            Code::EofWhileParsingString => "EOF while parsing a string",
            Code::EofWhileParsingValue => "EOF while parsing a value",
            Code::ExpectedColon => "expected `:`",
            Code::ExpectedListCommaOrEnd => "expected `,` or `]`",
            Code::ExpectedObjectCommaOrEnd => "expected `,` or `}`",
            Code::ExpectedSomeIdent => "expected ident",
            Code::ExpectedSomeValue => "expected value",
            Code::InvalidEscape => "invalid escape",
            Code::InvalidNumber => "invalid number",
            Code::NumberOutOfRange => "number out of range",
            Code::InvalidUnicodeCodePoint => "invalid unicode code point",
            Code::ControlCharacterWhileParsingString => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            Code::KeyMustBeAString => "key must be a string",
            Code::LoneLeadingSurrogateInHexEscape => "lone leading surrogate in hex escape",
            Code::TrailingComma => "trailing comma",
            Code::TrailingCharacters => "trailing characters",
            Code::UnexpectedEndOfHexEscape => "unexpected end of hex escape",
            Code::RecursionLimitExceeded => "recursion limit exceeded",
        }
    }
}

/// A failure and the byte index serde_json reports it at (see [`position`]). Small and `Copy`, so that
/// results travel in registers; a duplicate key's message waits in [`Scanner::duplicate`].
#[derive(Debug, Clone, Copy)]
struct Fail {
    /// `None`: a duplicate key.
    code: Option<Code>,
    at: usize,
}

type Res<T = ()> = Result<T, Fail>;

/// A failure placed like serde_json's `error`: at index `at` (what was read so far).
fn fail(code: Code, at: usize) -> Fail {
    Fail {
        code: Some(code),
        at,
    }
}

/// A failure placed like serde_json's `peek_error`: on the byte at `at` (one past it, capped at the end).
fn peek_fail(b: &[u8], code: Code, at: usize) -> Fail {
    fail(code, (at + 1).min(b.len()))
}

/// serde_json's line (from 1) and column (bytes since the line's start) of index `i`.
fn position(b: &[u8], i: usize) -> (usize, usize) {
    let before = b.get(..i).unwrap_or(b);
    let start_of_line = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    let lines = before
        .get(..start_of_line)
        .unwrap_or(before)
        .iter()
        .filter(|&&c| c == b'\n')
        .count();
    (1 + lines, i.saturating_sub(start_of_line))
}

// ---------------------------------------------------------------------------------------------------------
// The scanner: one loop over the bytes, an explicit stack of open containers (no recursion), the cursor in
// a local. The grammar and every error follow serde_json's deserializer (`Deserializer::from_slice` and
// `deserialize_any`), which the tests check against the previous serde-based implementation.

/// serde_json refuses the 128th nested array or object.
const MAX_DEPTH: usize = 127;
/// Objects with more keys than this find collisions through a hash map instead of comparing with each key.
const LINEAR_KEYS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    /// The top-level array: its elements are messages.
    Batch,
    /// A message object: record [`Watch::fields`].
    Message,
    /// The watched nested object of a message: record the nested fields.
    Nested,
}

/// An open array or object.
#[derive(Clone, Copy)]
struct Level {
    object: bool,
    role: Role,
    /// In a watched object: the watched key whose value is being read.
    pending: Option<u8>,
    start: usize,
    /// This object's keys are `keys[keys_start..]`, their decoded copies `owned[owned_start..]`.
    keys_start: usize,
    owned_start: usize,
}

/// An object past [`LINEAR_KEYS`] keys: keyed hashes of its folded keys, so that crafted keys cannot all
/// land on one hash.
struct Big {
    /// The level of the object (the length of `levels` while it is open).
    depth: usize,
    /// Hash to the index (in `keys`) of the last key with that hash; for each key of the object (from
    /// `Level::keys_start`), the previous key with the same hash.
    map: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    chains: Vec<Option<usize>>,
}

/// One key of an open object.
#[derive(Clone, Copy)]
struct Key {
    /// See [`fingerprint`]: equal for keys that collide.
    fp: u64,
    /// The key's text: `b[start..end]`, or `owned[owned]` when it had escapes.
    start: usize,
    end: usize,
    owned: u32,
    ascii: bool,
}

const NOT_OWNED: u32 = u32::MAX;
/// Set in the fingerprint of keys longer than 7 folded bytes, whose fingerprint is not the whole key.
const LONG: u64 = 1 << 63;

/// [`Scanner::string`] flags.
const ESCAPED: u8 = 1;
const NON_ASCII: u8 = 2;

struct Scanner<'a, 'w> {
    b: &'a [u8],
    utf8_ok: bool,
    levels: Vec<Level>,
    keys: Vec<Key>,
    owned: Vec<String>,
    bigs: Vec<Big>,
    random: Option<RandomState>,
    /// The message of a [`Fail`] for a duplicate key.
    duplicate: String,
    watch: Option<&'w Watch>,
    batch: bool,
    items: Vec<Item>,
    picks: Vec<Pick>,
    variants: Vec<Variant>,
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
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
                return Err(peek_fail(b, Code::EofWhileParsingValue, pos));
            };
            let role = if self.watch.is_some() && self.levels.len() <= 2 {
                self.begin_value(start, c)
            } else {
                Role::Plain
            };
            match c {
                b'"' => {
                    pos = self.string(pos + 1)?.0;
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
                        return Err(peek_fail(b, Code::RecursionLimitExceeded, pos));
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
                        (true, Some(_)) => return Err(peek_fail(b, Code::KeyMustBeAString, pos)),
                        (true, None) => return Err(peek_fail(b, Code::EofWhileParsingObject, pos)),
                        (false, Some(_)) => continue 'value,
                        (false, None) => return Err(peek_fail(b, Code::EofWhileParsingList, pos)),
                    }
                }
                _ => return Err(peek_fail(b, Code::ExpectedSomeValue, pos)),
            }
            // A value ended: close containers until one wants another value.
            loop {
                let Some(top) = self.levels.last() else {
                    pos = skip_ws(b, pos);
                    if pos < b.len() {
                        return Err(peek_fail(b, Code::TrailingCharacters, pos));
                    }
                    return Ok(());
                };
                let object = top.object;
                pos = skip_ws(b, pos);
                match (object, b.get(pos)) {
                    (_, Some(b',')) => {
                        pos = skip_ws(b, pos + 1);
                        match (object, b.get(pos)) {
                            (true, Some(b'"')) => {
                                pos = self.key(pos)?;
                                continue 'value;
                            }
                            (false, Some(b']')) | (true, Some(b'}')) => {
                                return Err(peek_fail(b, Code::TrailingComma, pos))
                            }
                            (false, Some(_)) => continue 'value,
                            (true, Some(_)) => {
                                return Err(peek_fail(b, Code::KeyMustBeAString, pos))
                            }
                            (_, None) => return Err(peek_fail(b, Code::EofWhileParsingValue, pos)),
                        }
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => {
                        pos += 1;
                        self.close(pos);
                    }
                    (true, Some(_)) => {
                        return Err(peek_fail(b, Code::ExpectedObjectCommaOrEnd, pos))
                    }
                    (false, Some(_)) => {
                        return Err(peek_fail(b, Code::ExpectedListCommaOrEnd, pos))
                    }
                    (true, None) => return Err(peek_fail(b, Code::EofWhileParsingObject, pos)),
                    (false, None) => return Err(peek_fail(b, Code::EofWhileParsingList, pos)),
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

    /// Watching: a value starts at `start` with byte `c`; opens its message and says what it is.
    fn begin_value(&mut self, start: usize, c: u8) -> Role {
        let Some(watch) = self.watch else {
            return Role::Plain;
        };
        match self.levels.last() {
            None if c == b'[' => {
                self.batch = true;
                return Role::Batch;
            }
            // The document, or an element of the batch: a message.
            None => {}
            Some(level) if level.role == Role::Batch => {}
            Some(level) => {
                return match (level.role, level.pending, watch.nested) {
                    (Role::Message, Some(p), Some((n, _, _)))
                        if usize::from(p) == n && c == b'{' =>
                    {
                        Role::Nested
                    }
                    _ => Role::Plain,
                };
            }
        }
        self.items.push(Item {
            span: Span { start, end: start },
            picks: self.picks.len(),
            variants: self.variants.len(),
        });
        if c == b'{' {
            Role::Message
        } else {
            Role::Plain
        }
    }

    /// A value that started at `start` ends before `end`.
    #[inline(always)]
    fn complete(&mut self, start: usize, end: usize) {
        if self.watch.is_some() && self.levels.len() <= 3 {
            self.record(Span { start, end });
        }
    }

    fn record(&mut self, span: Span) {
        let Some(level) = self.levels.last_mut() else {
            // The document itself.
            if !self.batch {
                if let Some(item) = self.items.last_mut() {
                    item.span = span;
                }
            }
            return;
        };
        match level.role {
            Role::Batch => {
                if let Some(item) = self.items.last_mut() {
                    item.span = span;
                }
            }
            Role::Message | Role::Nested => {
                if let Some(field) = level.pending.take() {
                    self.picks.push(Pick {
                        nested: level.role == Role::Nested,
                        field,
                        span,
                    });
                }
            }
            Role::Plain => {}
        }
    }

    /// An object key at `pos` (its opening quote): read, check against the object's other keys, note if
    /// watched. Returns the position after the colon.
    #[inline(always)]
    fn key(&mut self, pos: usize) -> Res<usize> {
        let b = self.b;
        let start = pos + 1;
        let (after, flags) = self.string(start)?;
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
        self.check_duplicate(key, after)?;
        if matches!(
            self.levels.last().map(|l| l.role),
            Some(Role::Message | Role::Nested)
        ) {
            self.watch_key();
        }
        let pos = skip_ws(b, after);
        match b.get(pos) {
            Some(b':') => Ok(pos + 1),
            Some(_) => Err(peek_fail(b, Code::ExpectedColon, pos)),
            None => Err(peek_fail(b, Code::EofWhileParsingObject, pos)),
        }
    }

    /// A key with escapes (decoded into [`Scanner::owned`]) or non-ASCII characters.
    #[cold]
    fn unusual_key(&mut self, start: usize, end: usize, flags: u8) -> Key {
        let raw = self.b.get(start..end).unwrap_or_default();
        let mut owned = NOT_OWNED;
        if flags & ESCAPED != 0 {
            let mut buf = Vec::with_capacity(raw.len());
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

    /// Refuses `key` (its closing quote before `after`) if it collides with an earlier key of the innermost
    /// object, else adds it.
    #[inline(always)]
    fn check_duplicate(&mut self, key: Key, after: usize) -> Res {
        let Some(level) = self.levels.last() else {
            return Ok(());
        };
        let first = level.keys_start;
        let earlier = self.keys.get(first..).unwrap_or_default();
        if earlier.len() < LINEAR_KEYS {
            for (i, k) in earlier.iter().enumerate() {
                // A short key's fingerprint is the whole folded key; a long one's only a prefix.
                if k.fp == key.fp && (key.fp & LONG == 0 || self.collide(k, &key)) {
                    return Err(self.duplicate_error(first + i, &key, after));
                }
            }
            self.keys.push(key);
            return Ok(());
        }
        self.check_duplicate_hashed(key, after)
    }

    /// [`Self::check_duplicate`] past [`LINEAR_KEYS`] keys: through a map of keyed hashes, built when the
    /// object gets that big.
    #[cold]
    #[inline(never)]
    fn check_duplicate_hashed(&mut self, key: Key, after: usize) -> Res {
        let depth = self.levels.len();
        let first = self.levels.last().map_or(0, |l| l.keys_start);
        let random = self.random.get_or_insert_with(RandomState::new);
        if self.bigs.last().is_none_or(|big| big.depth != depth) {
            let mut big = Big {
                depth,
                map: HashMap::default(),
                chains: Vec::new(),
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
        let mut at = big.map.get(&h).copied();
        while let Some(i) = at {
            let Some(k) = self.keys.get(i) else { break };
            if collide(key_text(self.b, &self.owned, k), k.ascii, text, key.ascii) {
                return Err(self.duplicate_error(i, &key, after));
            }
            at = big.chains.get(i - first).copied().flatten();
        }
        big.chains.push(big.map.insert(h, self.keys.len()));
        self.keys.push(key);
        Ok(())
    }

    fn collide(&self, a: &Key, b: &Key) -> bool {
        collide(
            key_text(self.b, &self.owned, a),
            a.ascii,
            key_text(self.b, &self.owned, b),
            b.ascii,
        )
    }

    /// `key` collides with the earlier key `keys[i]`: the message, placed as serde_json places it.
    #[cold]
    fn duplicate_error(&mut self, i: usize, key: &Key, after: usize) -> Fail {
        let prev = self
            .keys
            .get(i)
            .map(|k| key_str(self.b, &self.owned, k))
            .unwrap_or_default();
        let k = key_str(self.b, &self.owned, key);
        self.duplicate = if prev == k {
            format!("{DUP_PREFIX}\"{k}\"")
        } else {
            format!("{DUP_PREFIX}\"{k}\" (same as \"{prev}\" ignoring case)")
        };
        // serde_json places the error where it stops ending the object: after the whitespace that follows
        // the key, and after a `}` there.
        let pos = skip_ws(self.b, after);
        let at = if self.b.get(pos) == Some(&b'}') {
            pos + 1
        } else {
            pos
        };
        Fail { code: None, at }
    }

    /// The innermost object is watched: note its last key if it is a watched one, or a case variant of one.
    fn watch_key(&mut self) {
        let (Some(watch), Some(level), Some(key)) =
            (self.watch, self.levels.last_mut(), self.keys.last())
        else {
            return;
        };
        let (fields, fps, nested) = match (level.role, &watch.nested) {
            (Role::Message, _) => (watch.fields, &watch.fps, false),
            (Role::Nested, Some((_, list, fps))) => (*list, fps, true),
            _ => return,
        };
        level.pending = None;
        for (i, (field, &fp)) in fields.iter().zip(fps).enumerate() {
            // Keys that collide have equal fingerprints.
            if fp != key.fp {
                continue;
            }
            let field = field.as_bytes();
            let text = key_text(self.b, &self.owned, key);
            let index = u8::try_from(i).unwrap_or(u8::MAX);
            if text == field {
                level.pending = Some(index);
            } else if collide(text, key.ascii, field, true) {
                self.variants.push(Variant {
                    nested,
                    field: index,
                    key: key_str(self.b, &self.owned, key).to_owned(),
                });
            } else {
                continue;
            }
            return;
        }
    }

    /// The rest of a string from `i` (its opening quote consumed), up to and including the closing quote.
    /// Returns the position after it, and [`ESCAPED`] and [`NON_ASCII`] flags.
    #[inline(always)]
    fn string(&self, start: usize) -> Res<(usize, u8)> {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        let b = self.b;
        let mut i = start;
        let mut flags = 0;
        // The high bits of every byte passed: non-ASCII text.
        let mut high = 0u64;
        loop {
            // To the next `"`, `\` or control character, 8 bytes at a time while the buffer has them.
            loop {
                let Some(chunk) = b.get(i..i + 8) else {
                    while let Some(&c) = b.get(i) {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        high |= u64::from(c);
                        i += 1;
                    }
                    break;
                };
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
                    high |= v & ((1u64 << (8 * n)) - 1);
                    i += n;
                    break;
                }
                high |= v;
                i += 8;
            }
            match b.get(i) {
                Some(b'"') => {
                    if high & HIGH != 0 {
                        flags |= NON_ASCII;
                        if !self.utf8_ok {
                            self.check_utf8(start, i, flags & ESCAPED != 0)?;
                        }
                    }
                    return Ok((i + 1, flags));
                }
                Some(b'\\') => {
                    flags |= ESCAPED;
                    i = escape(b, i + 1)?;
                }
                None => return Err(fail(Code::EofWhileParsingString, i)),
                Some(_) => return Err(fail(Code::ControlCharacterWhileParsingString, i + 1)),
            }
        }
    }

    /// UTF-8 of the string `b[start..end]` (`end`: its closing quote), placed as serde_json places it:
    /// counted back from after the closing quote, in the decoded string.
    #[cold]
    fn check_utf8(&self, start: usize, end: usize, escaped: bool) -> Res {
        let raw = self.b.get(start..end).unwrap_or_default();
        if std::str::from_utf8(raw).is_ok() {
            return Ok(());
        }
        let mut decoded = Vec::new();
        let content = if escaped {
            decode(raw, &mut decoded);
            &decoded[..]
        } else {
            raw
        };
        let valid = match std::str::from_utf8(content) {
            Ok(_) => content.len(),
            Err(e) => e.valid_up_to(),
        };
        let after = end + 1;
        let (_, column) = position(self.b, after);
        // On the closing quote's line, `column` counted back.
        let back = (content.len() - valid).min(column);
        Err(fail(Code::InvalidUnicodeCodePoint, after - back))
    }
}

/// An escape at `i` (its backslash consumed), checked as serde_json checks it. Returns the position after it.
#[cold]
fn escape(b: &[u8], i: usize) -> Res<usize> {
    let Some(&c) = b.get(i) else {
        return Err(fail(Code::EofWhileParsingString, i));
    };
    let i = i + 1;
    match c {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i),
        b'u' => {
            let (n, mut i) = hex4(b, i)?;
            if (0xDC00..=0xDFFF).contains(&n) {
                return Err(fail(Code::LoneLeadingSurrogateInHexEscape, i));
            }
            if !(0xD800..=0xDBFF).contains(&n) {
                return Ok(i);
            }
            // A leading surrogate: a trailing one must follow, as `\uDC00`-`\uDFFF`.
            for want in [b'\\', b'u'] {
                match b.get(i) {
                    None => return Err(fail(Code::EofWhileParsingString, i)),
                    Some(&c) => {
                        i += 1;
                        if c != want {
                            return Err(fail(Code::UnexpectedEndOfHexEscape, i));
                        }
                    }
                }
            }
            let (n2, i) = hex4(b, i)?;
            if (0xDC00..=0xDFFF).contains(&n2) {
                Ok(i)
            } else {
                Err(fail(Code::LoneLeadingSurrogateInHexEscape, i))
            }
        }
        _ => Err(fail(Code::InvalidEscape, i)),
    }
}

fn hex4(b: &[u8], i: usize) -> Res<(u16, usize)> {
    let Some(digits) = b.get(i..i + 4) else {
        return Err(fail(Code::EofWhileParsingString, b.len()));
    };
    match hex_value(digits) {
        Some(n) => Ok((n, i + 4)),
        None => Err(fail(Code::InvalidEscape, i + 4)),
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
fn ident_error(b: &[u8], mut i: usize, rest: &[u8]) -> Res<usize> {
    for &want in rest {
        let Some(&c) = b.get(i) else {
            return Err(fail(Code::EofWhileParsingValue, i));
        };
        i += 1;
        if c != want {
            return Err(fail(Code::ExpectedSomeIdent, i));
        }
    }
    Ok(i)
}

/// A number at `start` (its `-` or first digit), with serde_json's grammar and its range check: the value
/// it would compute as an `f64` must be finite. Returns the position after it.
#[inline(always)]
fn number(b: &[u8], start: usize) -> Res<usize> {
    // Fast path, the common numbers: at most 18 integer digits and no exponent cannot be out of range, so
    // only the grammar is checked. Anything else (and every error) takes the exact path.
    let int_start = start + usize::from(b.get(start) == Some(&b'-'));
    let mut i = int_start;
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len > 0 && int_len <= 18 && (int_len == 1 || b.get(int_start) != Some(&b'0')) {
        if b.get(i) == Some(&b'.') {
            let frac_start = i + 1;
            i = frac_start;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == frac_start {
                return Number { b, pos: start }.parse();
            }
        }
        if !matches!(b.get(i), Some(b'e' | b'E')) {
            return Ok(i);
        }
    }
    Number { b, pos: start }.parse()
}

/// A number as serde_json reads it (`parse_integer` and what follows, without `float_roundtrip`).
struct Number<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Number<'_> {
    fn err(&self, code: Code) -> Fail {
        fail(code, self.pos)
    }
    fn peek_err(&self, code: Code) -> Fail {
        peek_fail(self.b, code, self.pos)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[cold]
    fn parse(mut self) -> Res<usize> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let Some(c) = self.peek() else {
            return Err(self.err(Code::EofWhileParsingValue));
        };
        self.pos += 1;
        let mut significand: u64 = match c {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_err(Code::InvalidNumber));
                }
                0
            }
            b'1'..=b'9' => u64::from(c - b'0'),
            _ => return Err(self.err(Code::InvalidNumber)),
        };
        if c != b'0' {
            while let Some(d @ b'0'..=b'9') = self.peek() {
                let digit = u64::from(d - b'0');
                if overflows_u64(significand, digit) {
                    return self.long_integer(significand);
                }
                self.pos += 1;
                significand = significand * 10 + digit;
            }
        }
        match self.peek() {
            Some(b'.') => self.decimal(significand, 0),
            Some(b'e' | b'E') => self.exponent(significand, 0),
            _ => Ok(self.pos),
        }
    }

    fn long_integer(mut self, significand: u64) -> Res<usize> {
        let mut exponent: i32 = 0;
        loop {
            match self.peek() {
                Some(b'0'..=b'9') => {
                    self.pos += 1;
                    exponent = exponent.wrapping_add(1);
                }
                Some(b'.') => return self.decimal(significand, exponent),
                Some(b'e' | b'E') => return self.exponent(significand, exponent),
                _ => return self.in_range(significand, exponent),
            }
        }
    }

    fn decimal(mut self, mut significand: u64, exponent_before: i32) -> Res<usize> {
        self.pos += 1;
        let mut exponent_after: i32 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            let digit = u64::from(d - b'0');
            if overflows_u64(significand, digit) {
                // Further digits are ignored.
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                let exponent = exponent_before.wrapping_add(exponent_after);
                return match self.peek() {
                    Some(b'e' | b'E') => self.exponent(significand, exponent),
                    _ => self.in_range(significand, exponent),
                };
            }
            self.pos += 1;
            significand = significand * 10 + digit;
            exponent_after = exponent_after.wrapping_sub(1);
        }
        if exponent_after == 0 {
            return Err(match self.peek() {
                Some(_) => self.peek_err(Code::InvalidNumber),
                None => self.peek_err(Code::EofWhileParsingValue),
            });
        }
        let exponent = exponent_before.wrapping_add(exponent_after);
        match self.peek() {
            Some(b'e' | b'E') => self.exponent(significand, exponent),
            _ => self.in_range(significand, exponent),
        }
    }

    fn exponent(mut self, significand: u64, starting: i32) -> Res<usize> {
        self.pos += 1;
        let positive = match self.peek() {
            Some(b'+') => {
                self.pos += 1;
                true
            }
            Some(b'-') => {
                self.pos += 1;
                false
            }
            _ => true,
        };
        let Some(c) = self.peek() else {
            return Err(self.err(Code::EofWhileParsingValue));
        };
        self.pos += 1;
        let mut exp: i32 = match c {
            b'0'..=b'9' => i32::from(c - b'0'),
            _ => return Err(self.err(Code::InvalidNumber)),
        };
        while let Some(d @ b'0'..=b'9') = self.peek() {
            self.pos += 1;
            let digit = i32::from(d - b'0');
            if exp >= i32::MAX / 10 && (exp > i32::MAX / 10 || digit > i32::MAX % 10) {
                // An exponent past i32: infinite unless the number is zero or the exponent negative.
                if significand != 0 && positive {
                    return Err(self.err(Code::NumberOutOfRange));
                }
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                return Ok(self.pos);
            }
            exp = exp * 10 + digit;
        }
        let exponent = if positive {
            starting.saturating_add(exp)
        } else {
            starting.saturating_sub(exp)
        };
        self.in_range(significand, exponent)
    }

    /// serde_json's `f64_from_parts` (without `float_roundtrip`): `significand * 10^exponent` must be finite.
    fn in_range(self, significand: u64, exponent: i32) -> Res<usize> {
        if exponent < 0 || significand == 0 {
            return Ok(self.pos);
        }
        let exponent = exponent.unsigned_abs() as usize;
        // Below 10^289, even u64::MAX * 10^exponent is finite.
        let Some(first) = exponent.checked_sub(289) else {
            return Ok(self.pos);
        };
        match POW10_289.get(first) {
            Some(pow) if (significand as f64 * pow).is_finite() => Ok(self.pos),
            _ => Err(self.err(Code::NumberOutOfRange)),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading one value out of a checked document, without a tree.

/// In `json`, a value [`scan`] has checked, the value at `segments`: each an object key (escapes decoded,
/// compared exactly), or an index when the value there is an array (`segment.parse::<usize>()`), as
/// `serde_json::Value` lookups would follow them. Values before the one wanted are skipped, not read.
pub(crate) fn find<'a>(json: &'a str, segments: &[String]) -> Option<&'a str> {
    let b = json.as_bytes();
    let mut at = skip_ws(b, 0);
    for segment in segments {
        let (close, index) = match b.get(at)? {
            b'{' => (b'}', None),
            b'[' => (b']', Some(segment.parse::<usize>().ok()?)),
            _ => return None,
        };
        let mut i = skip_ws(b, at + 1);
        if b.get(i) == Some(&close) {
            return None;
        }
        let mut n = 0;
        at = loop {
            let found = match index {
                Some(index) => n == index,
                None => {
                    // A key, its colon, then the value.
                    let end = skip_string(b, i + 1)?;
                    let key = b.get(i + 1..end)?;
                    let found = if key.contains(&b'\\') {
                        let mut decoded = Vec::with_capacity(key.len());
                        decode(key, &mut decoded);
                        decoded == segment.as_bytes()
                    } else {
                        key == segment.as_bytes()
                    };
                    i = skip_ws(b, skip_ws(b, end + 1) + 1);
                    found
                }
            };
            if found {
                break i;
            }
            i = skip_ws(b, skip_value(b, i)?);
            if b.get(i) != Some(&b',') {
                return None;
            }
            i = skip_ws(b, i + 1);
            n += 1;
        };
    }
    json.get(at..skip_value(b, at)?)
}

/// The end of the valid JSON value at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i + 1).map(|end| end + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = i;
            loop {
                match b.get(i)? {
                    b'"' => i = skip_string(b, i + 1)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = i;
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\t' | b'\r') {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
    }
}

/// The closing quote of the valid string whose content starts at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match b.get(i)? {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// `10^289` to `10^308`, as serde_json's table has them (correctly rounded literals).
const POW10_289: [f64; 20] = [
    1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, 1e300, 1e301,
    1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
];

fn overflows_u64(significand: u64, digit: u64) -> bool {
    significand >= u64::MAX / 10 && (significand > u64::MAX / 10 || digit > u64::MAX % 10)
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

/// Decodes the content of a string whose escapes are valid (a lone surrogate, impossible here, becomes
/// U+FFFD). Bytes other than escapes are copied as they are.
fn decode(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = raw.get(i) else { break };
        i += 1;
        let ch = match e {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = raw.get(i..i + 4).and_then(hex_value).unwrap_or(0xFFFD);
                i += 4;
                let mut code = u32::from(n);
                if (0xD800..=0xDBFF).contains(&n) {
                    let low = raw.get(i + 2..i + 6).and_then(hex_value).unwrap_or(0);
                    i += 6;
                    code = 0x10000
                        + ((code - 0xD800) << 10)
                        + (u32::from(low).wrapping_sub(0xDC00) & 0x3FF);
                }
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            other => char::from(other),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
}

fn key_text<'s>(b: &'s [u8], owned: &'s [String], k: &Key) -> &'s [u8] {
    match k.owned {
        NOT_OWNED => b.get(k.start..k.end).unwrap_or_default(),
        i => owned.get(i as usize).map_or(&[][..], |s| s.as_bytes()),
    }
}

fn key_str<'s>(b: &'s [u8], owned: &'s [String], k: &Key) -> &'s str {
    std::str::from_utf8(key_text(b, owned, k)).unwrap_or_default()
}

/// [`keys_collide`] on key texts, with their ASCII-ness known.
fn collide(a: &[u8], a_ascii: bool, b: &[u8], b_ascii: bool) -> bool {
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
fn fingerprint(src: &[u8], start: usize, len: usize) -> u64 {
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

/// A DoS-resistant (randomly keyed) hash of the folded key.
fn keyed_hash(random: &RandomState, text: &[u8], ascii: bool) -> u64 {
    let mut h = random.build_hasher();
    feed_folded(&mut h, text, ascii);
    h.finish()
}

/// Feeds the folded key to `h`, one byte at a time (ASCII and non-ASCII keys that fold alike feed alike).
fn feed_folded(h: &mut impl Hasher, text: &[u8], ascii: bool) {
    match std::str::from_utf8(text) {
        Ok(s) if !ascii => {
            for c in s.chars().map(fold) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    h.write_u8(b);
                }
            }
        }
        _ => {
            for &b in text {
                h.write_u8(b.to_ascii_lowercase());
            }
        }
    }
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
pub(crate) mod tests {
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

    use crate::reference;

    fn same_as_reference(doc: &[u8]) {
        assert_eq!(
            check_strict(doc),
            reference::check_strict(doc),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
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

    /// A small deterministic generator of JSON-ish text and byte mutations of the crafted cases.
    /// `MUTATIONS=2000000 cargo test --release matches_the_reference` for a longer run.
    fn mutations() -> usize {
        std::env::var("MUTATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000)
    }

    #[test]
    fn matches_the_reference_on_mutations() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
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
        for _ in 0..mutations() {
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
    fn watched_fields_fingerprint_like_keys() {
        let fields: &[&str] = &["jsonrpc", "id", "arguments", "", "a", "exactly8"];
        let fps = field_fingerprints(fields);
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
    fn raw_values_are_wrapped_without_reading_them_again() {
        // The shortcut must work with the serde_json in use (else every span is parsed a second time).
        let text = r#"{"a":[1,2,{"b":null}]}"#;
        let raw = raw_value_unchecked(text).unwrap();
        assert!(std::ptr::eq(raw.get(), text));
        let outline = scan(text.as_bytes(), None).unwrap();
        assert_eq!(
            outline.raw(Span { start: 5, end: 21 }).unwrap().get(),
            r#"[1,2,{"b":null}]"#
        );
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
            Err(JsonError::DuplicateKey(m)) => {
                assert!(
                    m.starts_with(
                        "duplicate key \"KEY123456\" (same as \"key123456\" ignoring case)"
                    ),
                    "{m}"
                )
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
}
