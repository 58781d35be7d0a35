//! What the scanner records for [`crate::mcp`] while it checks a request body: where each message (the
//! document, or each element of a top-level array) is, where the values of some keys are ([`Watch`]), and
//! which keys are case variants of those. The result, an [`Outline`], lets `mcp` build its messages from
//! places in the body without reading the body again.
//!
//! Hand-written because it rides on the hand-written scanner (see `scan.rs`): recording costs a few
//! comparisons per value at the top three levels, and nothing below.

use super::keys::{collide, field_fingerprints, Key};
use super::scan::Scanner;
use serde::de::value::{BorrowedStrDeserializer, MapDeserializer};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Where a value lies in the scanned document: bytes `start..end`, without surrounding whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The most keys a [`Watch`] can name per level.
pub(crate) const MAX_WATCHED: usize = 6;

/// Which object keys the scanner records, in each message of the document.
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

/// A key that is not a watched key but a case variant of one ([`super::keys_collide`]), escapes decoded.
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

/// `json` (a complete value the scanner has checked) as a `&RawValue`. Falls back to a validating parse should
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

/// What an open container is to the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Plain,
    /// The top-level array: its elements are messages.
    Batch,
    /// A message object: record [`Watch::fields`].
    Message,
    /// The watched nested object of a message: record the nested fields.
    Nested,
}

/// What the recording keeps while the scanner runs (a field of the scanner, which reads `watch` itself on every
/// value).
pub(super) struct Records {
    /// The document is an array.
    pub batch: bool,
    items: Vec<Item>,
    picks: Vec<Pick>,
    variants: Vec<Variant>,
}

impl Records {
    pub fn new(watching: bool) -> Records {
        Records {
            batch: false,
            // One message, and the (at most 9) fields it has, without growing: the common body.
            items: Vec::with_capacity(usize::from(watching)),
            picks: Vec::with_capacity(if watching { 16 } else { 0 }),
            variants: Vec::new(),
        }
    }

    /// The records, for the checked document `text`.
    pub fn outline(self, text: &str) -> Outline<'_> {
        Outline {
            text,
            batch: self.batch,
            items: self.items,
            picks: self.picks,
            variants: self.variants,
        }
    }
}

// The recording: the scanner calls these as values start and end at the top levels, when it has a watch.
impl Scanner<'_, '_> {
    /// Watching: a value starts at `start` with byte `c`; opens its message and says what it is.
    pub(super) fn begin_value(&mut self, start: usize, c: u8) -> Role {
        let Some(watch) = self.watch else {
            return Role::Plain;
        };
        let rec = &mut self.rec;
        match self.levels.last() {
            None if c == b'[' => {
                rec.batch = true;
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
        rec.items.push(Item {
            span: Span { start, end: start },
            picks: rec.picks.len(),
            variants: rec.variants.len(),
        });
        if c == b'{' {
            Role::Message
        } else {
            Role::Plain
        }
    }

    /// A value ended at `span`.
    pub(super) fn record(&mut self, span: Span) {
        let rec = &mut self.rec;
        let Some(level) = self.levels.last_mut() else {
            // The document itself.
            if !rec.batch {
                if let Some(item) = rec.items.last_mut() {
                    item.span = span;
                }
            }
            return;
        };
        match level.role {
            Role::Batch => {
                if let Some(item) = rec.items.last_mut() {
                    item.span = span;
                }
            }
            Role::Message | Role::Nested => {
                if let Some(field) = level.pending.take() {
                    rec.picks.push(Pick {
                        nested: level.role == Role::Nested,
                        field,
                        span,
                    });
                }
            }
            Role::Plain => {}
        }
    }

    /// The innermost object is watched: note its last key if it is a watched one, or a case variant of one.
    pub(super) fn watch_key(&mut self, key: &Key) {
        let (Some(watch), Some(level)) = (self.watch, self.levels.last()) else {
            return;
        };
        let (fields, fps, nested) = match (level.role, &watch.nested) {
            (Role::Message, _) => (watch.fields, &watch.fps, false),
            (Role::Nested, Some((_, list, fps))) => (*list, fps, true),
            _ => return,
        };
        let mut pending = None;
        for (i, (field, &fp)) in fields.iter().zip(fps).enumerate() {
            // Keys that collide have equal fingerprints.
            if fp != key.fp {
                continue;
            }
            let field = field.as_bytes();
            let text = self.key_text(key);
            let index = u8::try_from(i).unwrap_or(u8::MAX);
            if text == field {
                pending = Some(index);
            } else if collide(text, key.ascii, field, true) {
                let key = self.key_string(key);
                self.rec.variants.push(Variant {
                    nested,
                    field: index,
                    key,
                });
            } else {
                continue;
            }
            break;
        }
        if let Some(level) = self.levels.last_mut() {
            level.pending = pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan;
    use super::*;

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

    const WATCH: Watch = Watch::new(&["id", "method", "params"], Some((2, &["name"])));

    #[test]
    fn records_watched_values_and_case_variants_per_message() {
        let text = r#"[{"id":1,"method":"a","params":{"NAME":"x"}},{"Method":"b","id":[2],"params":{"name":5}}, 3]"#;
        let o = scan(text.as_bytes(), Some(&WATCH)).unwrap();
        assert!(o.batch);
        assert_eq!(o.len(), 3);
        let value = |i, nested, field| o.value(i, nested, field).map(|s| o.text(s));
        assert_eq!(value(0, false, 0), Some("1"));
        assert_eq!(value(0, false, 1), Some("\"a\""));
        assert_eq!(value(0, true, 0), None);
        assert_eq!(o.variants(0, true).collect::<Vec<_>>(), [("NAME", 0)]);
        assert_eq!(value(1, true, 0), Some("5"));
        assert_eq!(value(1, false, 0), Some("[2]"));
        assert_eq!(value(1, false, 1), None);
        assert_eq!(o.variants(1, false).collect::<Vec<_>>(), [("Method", 1)]);
        assert_eq!(o.span(2).map(|s| o.text(s)), Some("3"));
        assert_eq!(o.span(3), None);
    }
}
