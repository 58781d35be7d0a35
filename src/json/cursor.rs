//! Walking JSON text that has already been checked (by the scanner, or by serde_json): skip a value, read a
//! string or a key, step through an object or an array, find the value at a path. Positions only: nothing is
//! built, and values that are not wanted are skipped, not read.
//!
//! Hand-written because serde_json has no cursor over borrowed text: reading one field of a document with it
//! builds (or at least visits through serde) the whole document. Every walker of the crate uses this one: the
//! engine's argument lookups ([`find`]) and the `tools/list` rewriting (`crate::tools_list`).
//!
//! The text must be valid JSON (that is what makes skipping this simple: strings are the only place a bracket
//! or a comma can hide). On text that is not, the walk stops with [`Lost`] rather than give a wrong answer.

use super::scan::skip_ws;
use super::string::decode;
use std::borrow::Cow;

/// The walk lost its place: the text is not the valid JSON it was said to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

/// Where a walk through an array or an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// An object entry: its key's span (quotes included) and where its value starts.
    Entry { key: (usize, usize), value: usize },
    /// An array element, starting here.
    Item(usize),
    /// The array or object ends before this position.
    End(usize),
}

/// A walk over valid JSON text. Positions are byte offsets into it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    text: &'a str,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text }
    }

    /// The byte at `i`.
    pub fn byte(&self, i: usize) -> Option<u8> {
        self.text.as_bytes().get(i).copied()
    }

    /// The text `span` (start, end).
    pub fn get(&self, span: (usize, usize)) -> Option<&'a str> {
        self.text.get(span.0..span.1)
    }

    /// The first position from `i` that is not whitespace.
    pub fn skip_ws(&self, i: usize) -> usize {
        skip_ws(self.text.as_bytes(), i)
    }

    /// The end of the value that starts at `at`.
    pub fn value_end(&self, at: usize) -> Result<usize, Lost> {
        let b = self.text.as_bytes();
        match b.get(at).ok_or(Lost)? {
            b'"' => self.string_end(at),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = at;
                loop {
                    match b.get(i).ok_or(Lost)? {
                        b'"' => {
                            i = self.string_end(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return Ok(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                let mut i = at;
                while !matches!(
                    b.get(i),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    i += 1;
                }
                Ok(i)
            }
        }
    }

    /// The end of the string whose opening quote is at `at` (the position after its closing quote).
    pub fn string_end(&self, at: usize) -> Result<usize, Lost> {
        let b = self.text.as_bytes();
        let mut i = at + 1;
        loop {
            let rest = b.get(i..).ok_or(Lost)?;
            i += rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .ok_or(Lost)?;
            if b.get(i) == Some(&b'"') {
                return Ok(i + 1);
            }
            i += 2; // a backslash and the character it escapes
        }
    }

    /// The value of the string `span` (quotes included); see [`string_value`].
    pub fn string(&self, span: (usize, usize)) -> Option<Cow<'a, str>> {
        string_value(self.get(span)?)
    }

    /// Whether the key `span` (quotes included) is `name`, escapes decoded, compared exactly.
    pub fn key_is(&self, span: (usize, usize), name: &str) -> bool {
        let Some(raw) = self.get((span.0 + 1, span.1.saturating_sub(1))) else {
            return false;
        };
        if !raw.contains('\\') {
            return raw == name;
        }
        let mut decoded = Vec::with_capacity(raw.len());
        decode(raw.as_bytes(), &mut decoded) && decoded == name.as_bytes()
    }

    /// The first step into the array or object at `at` (its `[` or `{`).
    pub fn open(&self, at: usize) -> Result<Step, Lost> {
        let object = match self.byte(at) {
            Some(b'{') => true,
            Some(b'[') => false,
            _ => return Err(Lost),
        };
        let i = self.skip_ws(at + 1);
        match self.byte(i) {
            Some(b'}') if object => Ok(Step::End(i + 1)),
            Some(b']') if !object => Ok(Step::End(i + 1)),
            _ => self.member(object, i),
        }
    }

    /// The step after a member whose value ends at `end`, in an object (`object`) or an array.
    pub fn next(&self, object: bool, end: usize) -> Result<Step, Lost> {
        let i = self.skip_ws(end);
        match self.byte(i) {
            Some(b',') => self.member(object, self.skip_ws(i + 1)),
            Some(b'}') if object => Ok(Step::End(i + 1)),
            Some(b']') if !object => Ok(Step::End(i + 1)),
            _ => Err(Lost),
        }
    }

    /// The member at `i`: an element, or a key, its colon and where the value starts.
    fn member(&self, object: bool, i: usize) -> Result<Step, Lost> {
        if !object {
            return Ok(Step::Item(i));
        }
        if self.byte(i) != Some(b'"') {
            return Err(Lost);
        }
        let key_end = self.string_end(i)?;
        let colon = self.skip_ws(key_end);
        if self.byte(colon) != Some(b':') {
            return Err(Lost);
        }
        Ok(Step::Entry {
            key: (i, key_end),
            value: self.skip_ws(colon + 1),
        })
    }

    /// Walks the object at `at` (its `{`): `each(key span, value start)` returns the value's end (having
    /// walked the value, or [`Cursor::value_end`]). Returns the object's end.
    pub fn entries<E: From<Lost>>(
        &self,
        at: usize,
        mut each: impl FnMut((usize, usize), usize) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.byte(at) != Some(b'{') {
            return Err(Lost.into());
        }
        let mut step = self.open(at)?;
        loop {
            step = match step {
                Step::Entry { key, value } => self.next(true, each(key, value)?)?,
                Step::End(end) => return Ok(end),
                Step::Item(_) => return Err(Lost.into()),
            };
        }
    }

    /// Walks the array at `at` (its `[`): `each(element start, index)` returns the element's end. Returns the
    /// array's end.
    pub fn items<E: From<Lost>>(
        &self,
        at: usize,
        mut each: impl FnMut(usize, usize) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.byte(at) != Some(b'[') {
            return Err(Lost.into());
        }
        let mut step = self.open(at)?;
        let mut n = 0;
        loop {
            step = match step {
                Step::Item(i) => {
                    let end = each(i, n)?;
                    n += 1;
                    self.next(false, end)?
                }
                Step::End(end) => return Ok(end),
                Step::Entry { .. } => return Err(Lost.into()),
            };
        }
    }

    /// Where the value at `segment` of the array or object at `at` starts: an object's key (escapes decoded,
    /// compared exactly), or an array's index (`segment.parse::<usize>()`), as `serde_json::Value` lookups
    /// follow them. Members before it are skipped, not read.
    fn child(&self, at: usize, segment: &str) -> Option<usize> {
        let index = match self.byte(at)? {
            b'{' => None,
            b'[' => Some(segment.parse::<usize>().ok()?),
            _ => return None,
        };
        let mut step = self.open(at).ok()?;
        let mut n = 0;
        loop {
            step = match step {
                Step::Entry { key, value } if self.key_is(key, segment) => return Some(value),
                Step::Entry { value, .. } => self.next(true, self.value_end(value).ok()?).ok()?,
                Step::Item(i) if index == Some(n) => return Some(i),
                Step::Item(i) => {
                    n += 1;
                    self.next(false, self.value_end(i).ok()?).ok()?
                }
                Step::End(_) => return None,
            };
        }
    }
}

/// In `json`, checked JSON text, the value at `segments` (see [`Cursor::child`]).
pub(crate) fn find<'a>(json: &'a str, segments: &[String]) -> Option<&'a str> {
    let c = Cursor::new(json);
    let mut at = c.skip_ws(0);
    for segment in segments {
        at = c.child(at, segment)?;
    }
    c.get((at, c.value_end(at).ok()?))
}

/// The value of a JSON string from its text `raw` (quotes included, escapes well-formed): borrowed when it has
/// no escapes. `None` when `raw` is not a string, or holds a `\u` escape of half a surrogate pair (which
/// serde_json lets through when it only skips a string, and refuses as a `String`).
pub(crate) fn string_value(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = Vec::with_capacity(inner.len());
    if !decode(inner.as_bytes(), &mut out) {
        return None;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const DOC: &str =
        r#" {"a" : [1, "x]}\"", {"b":{"c":null}}, -2.5e3 ] , "k\u0065y":true, "e":{}, "f":[] } "#;

    fn segments(path: &[&str]) -> Vec<String> {
        path.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_what_serde_json_value_lookups_find() {
        let whole: Value = serde_json::from_str(DOC).unwrap();
        for path in [
            &[][..],
            &["a"],
            &["a", "0"],
            &["a", "1"],
            &["a", "2", "b", "c"],
            &["a", "3"],
            &["a", "4"],
            &["a", "x"],
            &["a", "-1"],
            &["key"],
            &["k\\u0065y"],
            &["e"],
            &["e", "x"],
            &["f", "0"],
            &["a", "2", "B"],
            &["missing"],
            &["key", "x"],
        ] {
            let mut want = Some(&whole);
            for s in path {
                want = want.and_then(|v| match v {
                    Value::Object(m) => m.get(*s),
                    Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            let got = find(DOC, &segments(path)).map(|t| serde_json::from_str::<Value>(t).unwrap());
            assert_eq!(got.as_ref(), want, "{path:?}");
        }
        assert_eq!(find(DOC, &segments(&["a", "1"])), Some(r#""x]}\"""#));
    }

    #[test]
    fn walks_objects_and_arrays_member_by_member() {
        let c = Cursor::new(DOC);
        let at = c.skip_ws(0);
        let mut keys = Vec::new();
        let end = c
            .entries::<Lost>(at, |key, value| {
                keys.push(c.string(key).unwrap().into_owned());
                c.value_end(value)
            })
            .unwrap();
        assert_eq!(keys, ["a", "key", "e", "f"]);
        assert_eq!(end, DOC.len() - 1);
        let array = DOC.find('[').unwrap();
        let mut items = Vec::new();
        c.items::<Lost>(array, |i, n| {
            let end = c.value_end(i)?;
            items.push((n, c.get((i, end)).unwrap()));
            Ok(end)
        })
        .unwrap();
        assert_eq!(
            items,
            [
                (0, "1"),
                (1, r#""x]}\"""#),
                (2, r#"{"b":{"c":null}}"#),
                (3, "-2.5e3")
            ]
        );
        assert_eq!(c.entries::<Lost>(array, |_, v| Ok(v)), Err(Lost));
        assert_eq!(c.items::<Lost>(at, |i, _| Ok(i)), Err(Lost));
    }

    #[test]
    fn stops_on_text_that_is_not_json() {
        for bad in [
            r#"{"a" 1}"#,
            r#"{"a":1"#,
            r#"[1 2]"#,
            r#"{1:2}"#,
            r#"["abc"#,
        ] {
            let c = Cursor::new(bad);
            let walked = match bad.as_bytes()[0] {
                b'{' => c.entries::<Lost>(0, |_, v| c.value_end(v)),
                _ => c.items::<Lost>(0, |i, _| c.value_end(i)),
            };
            assert_eq!(walked, Err(Lost), "{bad}");
        }
    }

    #[test]
    fn strings_are_decoded_and_borrowed_when_they_can_be() {
        assert!(matches!(
            string_value(r#""plain""#),
            Some(Cow::Borrowed("plain"))
        ));
        assert_eq!(string_value(r#""a\u005fb\n""#).as_deref(), Some("a_b\n"));
        assert_eq!(
            string_value(r#""\ud83d\ude00""#).as_deref(),
            Some("\u{1f600}")
        );
        for not in ["5", "null", r#""\ud800""#, r#""\udc00x""#, "\""] {
            assert_eq!(string_value(not), None, "{not}");
        }
        let c = Cursor::new(r#"{"n\u0061me":1}"#);
        assert!(c.key_is((1, 12), "name"));
        assert!(!c.key_is((1, 12), "Name"));
    }
}
