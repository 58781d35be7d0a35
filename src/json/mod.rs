//! Strict JSON for bytes we must not misread, in one pass and without a tree.
//!
//! [`check_strict`] accepts exactly what `serde_json` (which the rest of the crate parses with) accepts, minus
//! ambiguous objects. It rejects:
//! - anything `serde_json` rejects: syntax, invalid UTF-8, lone surrogates, nesting deeper than 127 levels,
//!   numbers out of `f64` range; the error says what ([`ErrorKind`]) and where (byte offset, line, column);
//! - two keys of one object that are equal, or equal after case folding (`method` / `Method` / `METHOD`, and
//!   the Unicode letters that fold onto ASCII `s` and `k`), because some JSON decoders match field names
//!   case-insensitively. Keys are compared after their escapes are decoded: `"\u006dethod"` is `"method"`.
//!
//! Why hand-written: `serde_json` accepts duplicate keys (the last one wins, where other parsers keep the first:
//! a classic parser-differential bypass), and checking them through serde (a visitor collecting every key) was
//! the most expensive step of a request. This scanner does it in one pass over the bytes, with no recursion and
//! no allocation in the common case, and also serves [`crate::mcp`]: while it checks a request body it records
//! where the JSON-RPC envelope of each message is (`Watch`, `Outline`), so reading a message never scans the
//! body again. The differential oracle (`fuzz/fuzz_targets/reference.rs`: serde_json's own deserializer with a
//! key-collecting visitor) holds it to serde_json's verdict and error kind on every input, in the unit tests
//! below and in the fuzz targets.
//!
//! One concern per file; read them in this order:
//! - `scan.rs`: the grammar, one loop over the bytes with an explicit stack;
//! - `string.rs`: strings, 8 bytes at a time; escapes and their decoding;
//! - `number.rs`: numbers and serde_json's range check;
//! - `keys.rs`: duplicate keys (fingerprints, then a keyed hash map for big objects), [`keys_collide`];
//! - `outline.rs`: the recording for [`crate::mcp`];
//! - `error.rs`: [`JsonError`], [`ErrorKind`] and [`Position`];
//! - `cursor.rs`: walking text already checked (skip a value, read a string, step through an object or an
//!   array, find a path), shared by every walker of the crate.

mod cursor;
mod error;
mod keys;
mod number;
mod outline;
mod scan;
mod string;

pub(crate) use cursor::{find, string_value, Cursor, Lost};
pub use error::{DuplicateKey, ErrorKind, JsonError, Position, SyntaxError};
pub use keys::keys_collide;
pub(crate) use outline::{Outline, Watch};
pub(crate) use scan::scan;

/// Checks that `bytes` hold exactly one well-formed, unambiguous JSON value.
pub fn check_strict(bytes: &[u8]) -> Result<(), JsonError> {
    scan(bytes, None).map(|_| ())
}

#[cfg(test)]
mod tests;
