//! Why a document failed the strict check: an [`ErrorKind`] and where, as a byte offset (and the line and
//! column a person reads).
//!
//! Our own kinds and words, not `serde_json`'s texts: the differential oracle (`fuzz/fuzz_targets/reference.rs`)
//! holds the scanner to serde_json's verdict and error *kind* on every input, not to its wording or to the
//! places it reports (which follow its reader's internals, not the input).

use std::fmt;

/// What is wrong with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The text ends where a value should start, or inside a number or literal.
    EofInValue,
    /// The text ends inside a string.
    EofInString,
    /// The text ends inside an array.
    EofInArray,
    /// The text ends inside an object.
    EofInObject,
    /// A byte that starts no JSON value.
    ExpectedValue,
    /// A misspelt `true`, `false` or `null`.
    ExpectedLiteral,
    /// An object key not followed by `:`.
    ExpectedColon,
    /// An array element not followed by `,` or `]`.
    ExpectedCommaOrArrayEnd,
    /// An object entry not followed by `,` or `}`.
    ExpectedCommaOrObjectEnd,
    /// An object key that is not a string.
    KeyNotString,
    /// A `,` right before `]` or `}`.
    TrailingComma,
    /// More than one value, or anything but whitespace after the value.
    TrailingCharacters,
    /// A number outside JSON's grammar (`01`, `1.`, `-`, `1e`).
    InvalidNumber,
    /// A number whose value is beyond a 64-bit float's range (`1e400`).
    NumberOutOfRange,
    /// A backslash escape JSON does not have, or a `\u` without four hex digits.
    InvalidEscape,
    /// A `\u` escape that is half of a UTF-16 surrogate pair without its other half.
    LoneSurrogate,
    /// A raw control character (U+0000 to U+001F) in a string.
    ControlCharacter,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Arrays and objects nested more than 127 levels deep (serde_json's limit).
    TooDeep,
    /// An object key repeated, or equal to another ignoring case ([`keys_collide`](super::keys_collide)).
    DuplicateKey,
}

impl ErrorKind {
    /// What a person reads.
    pub fn message(self) -> &'static str {
        match self {
            ErrorKind::EofInValue => "the text ends where a value should be",
            ErrorKind::EofInString => "the text ends inside a string",
            ErrorKind::EofInArray => "the text ends inside an array",
            ErrorKind::EofInObject => "the text ends inside an object",
            ErrorKind::ExpectedValue => "expected a value",
            ErrorKind::ExpectedLiteral => "expected `true`, `false` or `null`",
            ErrorKind::ExpectedColon => "expected `:` after an object key",
            ErrorKind::ExpectedCommaOrArrayEnd => "expected `,` or `]` after an array element",
            ErrorKind::ExpectedCommaOrObjectEnd => "expected `,` or `}` after an object entry",
            ErrorKind::KeyNotString => "an object key must be a string",
            ErrorKind::TrailingComma => "a trailing comma",
            ErrorKind::TrailingCharacters => "characters after the end of the JSON value",
            ErrorKind::InvalidNumber => "an invalid number",
            ErrorKind::NumberOutOfRange => "a number out of range (beyond a 64-bit float)",
            ErrorKind::InvalidEscape => "an invalid escape in a string",
            ErrorKind::LoneSurrogate => {
                "a \\u escape of half a surrogate pair, without the other half"
            }
            ErrorKind::ControlCharacter => {
                "a raw control character (U+0000 to U+001F) in a string: it must be escaped"
            }
            ErrorKind::InvalidUtf8 => "bytes that are not UTF-8",
            ErrorKind::TooDeep => "arrays and objects nested more than 127 levels deep",
            ErrorKind::DuplicateKey => "a duplicate object key",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Where in a document: a byte offset, and the line and column (both from 1; the column counts bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (at most its length: the end of the text).
    pub fn of(text: &[u8], offset: usize) -> Position {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1);
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        Position {
            offset: before.len(),
            line,
            column: before.len() - line_start + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

/// Not JSON: what, and where it was found (the offending byte; the end of the text when it ends too soon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    pub kind: ErrorKind,
    pub at: Position,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.at)
    }
}

/// A repeated key: the key (escapes decoded), the earlier key it collides with, and where the repeated key
/// starts (its opening quote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub key: String,
    pub earlier: String,
    pub at: Position,
}

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, earlier) = (&self.key, &self.earlier);
        if key == earlier {
            write!(f, "duplicate key \"{key}\" at {}", self.at)
        } else {
            write!(
                f,
                "duplicate key \"{key}\" (same as \"{earlier}\" ignoring case) at {}",
                self.at
            )
        }
    }
}

/// Why a document failed [`check_strict`](super::check_strict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all: syntax, encoding, truncation, a number out of range or nesting depth.
    Syntax(SyntaxError),
    /// Well-formed JSON with an ambiguous object: a repeated key (or two keys equal ignoring case).
    DuplicateKey(DuplicateKey),
}

impl JsonError {
    /// What is wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            JsonError::Syntax(e) => e.kind,
            JsonError::DuplicateKey(_) => ErrorKind::DuplicateKey,
        }
    }
    /// Where.
    pub fn position(&self) -> Position {
        match self {
            JsonError::Syntax(e) => e.at,
            JsonError::DuplicateKey(e) => e.at,
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(e) => e.fmt(f),
            JsonError::DuplicateKey(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for JsonError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_bytes_from_one() {
        let text = b"{\n  \"a\": 1,\n  x";
        let p = |offset| {
            let p = Position::of(text, offset);
            (p.offset, p.line, p.column)
        };
        assert_eq!(p(0), (0, 1, 1));
        assert_eq!(p(1), (1, 1, 2));
        assert_eq!(p(2), (2, 2, 1));
        assert_eq!(p(14), (14, 3, 3));
        // The end of the text, and past it (clamped).
        assert_eq!(p(15), (15, 3, 4));
        assert_eq!(p(99), (15, 3, 4));
    }
}
