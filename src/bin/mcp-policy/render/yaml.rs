//! YAML text for `render`: building and patching values, the comments of a template carried over to what is
//! rendered from it, and plain scalars quoted for YAML 1.1 readers.
//!
//! Why part of this is hand-written (the house rule: crates where they do the job). Values are serde_yaml_ng's:
//! it parses the templates and writes every rendered file. Two things it does not do are written here, kept small:
//! - Comments. serde_yaml_ng (like saphyr and yaml-rust2) drops them, and the templates' comments are the
//!   documentation of each setting (why headers are held, why FAIL_CLOSED, ...), which a rendered file should keep.
//!   The lossless editor yaml-edit (0.x, one maintainer) keeps them but edits text nodes in place, while render
//!   builds and moves whole subtrees (clusters, the listener into an LDS resource), which would then be emitted by
//!   hand. Instead, a template's comments are collected by the path of the line they stand before
//!   (`static_resources.listeners[0].address`) and put back before the line with that path in serde_yaml_ng's
//!   output. Both texts are block-style YAML (the templates are ours, the output serde_yaml_ng's), which a line's
//!   indentation and leading `- ` are enough to place; flow collections (`{ a: 1 }`) are values on their key's
//!   line. A comment that finds no line is reported by [`Comments::apply`] (the unit tests assert there is none).
//! - YAML 1.1 quoting for kubectl and Istio (Go's YAML 1.1 readers): serde_yaml_ng writes YAML 1.2, where `on` or
//!   `1_000` is a plain string; [`quote_for_yaml_1_1`] quotes those.

use serde_yaml_ng::{Mapping, Value as Yaml};

/// A string value.
pub fn s(text: &str) -> Yaml {
    Yaml::String(text.to_owned())
}

/// A number value.
pub fn n(value: u64) -> Yaml {
    Yaml::Number(value.into())
}

/// A mapping with these entries, in this order.
pub fn map<const N: usize>(entries: [(&str, Yaml); N]) -> Yaml {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Yaml::Mapping(m)
}

/// One step into a value: a mapping's key, a list's item, or the item of a list whose `name` is this.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Key(&'a str),
    Item(usize),
    Named(&'a str),
}

/// The value at `steps` under `root`, and its path as the comments name it; `Err` names the first step that
/// is missing (`what` says which file, for the message).
pub fn at<'v>(
    root: &'v mut Yaml,
    steps: &[Step<'_>],
    what: &str,
) -> Result<(&'v mut Yaml, String), String> {
    let mut path = String::new();
    let mut v = root;
    for step in steps {
        let next = match *step {
            Step::Key(k) => {
                push_key(&mut path, k);
                v.get_mut(k)
            }
            Step::Item(i) => {
                path.push_str(&format!("[{i}]"));
                v.get_mut(i)
            }
            Step::Named(name) => {
                let i = v.as_sequence().and_then(|items| {
                    items
                        .iter()
                        .position(|x| x.get("name").and_then(Yaml::as_str) == Some(name))
                });
                match i {
                    Some(i) => {
                        path.push_str(&format!("[{i}]"));
                        v.get_mut(i)
                    }
                    None => {
                        path.push_str(&format!("[name={name}]"));
                        None
                    }
                }
            }
        };
        v = next.ok_or_else(|| {
            format!("{what} has no {path}: mcp-policy's render no longer fits it (a bug: please report it)")
        })?;
    }
    Ok((v, path))
}

/// `path` followed by the key `key`, as [`at`] and the comment paths write it.
pub fn child(path: &str, key: &str) -> String {
    let mut p = path.to_owned();
    push_key(&mut p, key);
    p
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// Sets `key` in the mapping `m`: in place when it is there, else right after `after` (or at the end).
pub fn set_after(m: &mut Yaml, after: &str, key: &str, value: Yaml) {
    let Yaml::Mapping(map) = m else { return };
    if let Some(slot) = map.get_mut(key) {
        *slot = value;
        return;
    }
    let mut out = Mapping::with_capacity(map.len() + 1);
    let mut placed = false;
    for (k, v) in std::mem::take(map) {
        let here = k.as_str() == Some(after);
        out.insert(k, v);
        if here {
            out.insert(s(key), value.clone());
            placed = true;
        }
    }
    if !placed {
        out.insert(s(key), value);
    }
    *map = out;
}

/// YAML text of `v` (block style, as serde_yaml_ng writes it).
pub fn text(v: &Yaml) -> Result<String, String> {
    serde_yaml_ng::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}

// -------------------------------------------------------------------------------------------------
// Where a line is
// -------------------------------------------------------------------------------------------------

/// Follows block-style YAML line by line, knowing the path of each line.
#[derive(Default)]
struct Tracker {
    frames: Vec<Frame>,
    /// Inside a block scalar (`value: |`): the lines indented more than this are its text.
    block: Option<usize>,
}

struct Frame {
    indent: usize,
    seg: Seg,
}

enum Seg {
    Key(String),
    Item(usize),
}

enum Line {
    Blank,
    /// A whole-line comment, without its indentation.
    Comment(String),
    /// A line that starts a key (its path) or a list item (the item's path).
    Content(String),
    /// The text of a block scalar, or a document marker.
    Text,
}

impl Tracker {
    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.frames {
            match &f.seg {
                Seg::Key(k) => push_key(&mut p, k),
                Seg::Item(i) => p.push_str(&format!("[{i}]")),
            }
        }
        p
    }

    fn line(&mut self, line: &str) -> Line {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let trimmed = content.trim_end();
        if let Some(b) = self.block {
            if trimmed.is_empty() || indent > b {
                return Line::Text;
            }
            self.block = None;
        }
        if trimmed.is_empty() {
            return Line::Blank;
        }
        if trimmed.starts_with('#') {
            return Line::Comment(trimmed.to_owned());
        }
        if trimmed == "---" || trimmed == "..." {
            self.frames.clear();
            return Line::Text;
        }
        let mut rest = trimmed;
        let mut item = None;
        while rest == "-" || rest.starts_with("- ") {
            let at = indent + trimmed.len() - rest.len();
            while self.frames.last().is_some_and(|f| f.indent > at) {
                self.frames.pop();
            }
            let index = match self.frames.last() {
                Some(Frame {
                    indent: i,
                    seg: Seg::Item(n),
                }) if *i == at => {
                    let next = n + 1;
                    self.frames.pop();
                    next
                }
                _ => 0,
            };
            self.frames.push(Frame {
                indent: at,
                seg: Seg::Item(index),
            });
            item.get_or_insert_with(|| self.path());
            rest = rest.get(1..).unwrap_or_default().trim_start_matches(' ');
        }
        let at = indent + trimmed.len() - rest.len();
        if let Some((key, value)) = split_key(rest) {
            while self.frames.last().is_some_and(|f| f.indent >= at) {
                self.frames.pop();
            }
            self.frames.push(Frame {
                indent: at,
                seg: Seg::Key(key),
            });
            if value.starts_with('|') || value.starts_with('>') {
                self.block = Some(at);
            }
        }
        Line::Content(item.unwrap_or_else(|| self.path()))
    }
}

/// `key: value` (or `key:`) to the key and the value's text; `None` for anything else (a scalar, flow text).
fn split_key(rest: &str) -> Option<(String, &str)> {
    let (key, after) = match rest.chars().next()? {
        '"' => {
            let mut escaped = false;
            let end = rest.char_indices().skip(1).find_map(|(i, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close.then_some(i)
            })?;
            (rest.get(1..end)?.to_owned(), rest.get(end + 1..)?)
        }
        '\'' => {
            let end = rest.get(1..)?.find('\'')? + 1;
            (rest.get(1..end)?.to_owned(), rest.get(end + 1..)?)
        }
        '{' | '[' | '|' | '>' | '#' => return None,
        _ => {
            let colon = rest
                .match_indices(':')
                .map(|(i, _)| i)
                .find(|&i| matches!(rest.get(i + 1..i + 2), None | Some(" ")))?;
            (rest.get(..colon)?.trim_end().to_owned(), rest.get(colon..)?)
        }
    };
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with(' ')) {
        return None;
    }
    Some((key, value.trim_start()))
}

// -------------------------------------------------------------------------------------------------
// Comments
// -------------------------------------------------------------------------------------------------

/// The comments of a YAML text: its header (the comment lines before its first content line) and the others by
/// the path of the line they stand before.
#[derive(Debug, Default, Clone)]
pub struct Comments {
    pub header: Vec<String>,
    pub at: Vec<(String, Vec<String>)>,
}

impl Comments {
    /// Reads the comments of `text`.
    pub fn of(text: &str) -> Comments {
        let mut t = Tracker::default();
        let mut c = Comments::default();
        let mut pending = Vec::new();
        let mut started = false;
        for line in text.lines() {
            match t.line(line) {
                Line::Comment(l) => pending.push(l),
                Line::Content(path) => {
                    if !started {
                        c.header = std::mem::take(&mut pending);
                        started = true;
                    }
                    if !pending.is_empty() {
                        c.add(&path, std::mem::take(&mut pending));
                    }
                }
                Line::Blank | Line::Text => {}
            }
        }
        c
    }

    /// Adds comment lines (each starting with `#`) before the line at `path`, after any already there.
    pub fn add(&mut self, path: &str, lines: Vec<String>) {
        match self.at.iter_mut().find(|(p, _)| p == path) {
            Some((_, have)) => have.extend(lines),
            None => self.at.push((path.to_owned(), lines)),
        }
    }

    /// Adds one comment, `text` wrapped into `#` lines of at most about 110 characters.
    pub fn say(&mut self, path: &str, text: &str) {
        self.add(path, wrap(text));
    }

    /// Drops the comments at `path` for which `drop` holds.
    pub fn drop_at(&mut self, path: &str, drop: impl Fn(&str) -> bool) {
        for (p, lines) in &mut self.at {
            if p == path {
                lines.retain(|l| !drop(l));
            }
        }
        self.at.retain(|(_, lines)| !lines.is_empty());
    }

    /// The comments under `from` (itself included) moved under `to`; the others dropped.
    pub fn moved(&self, from: &str, to: &str) -> Comments {
        let at = self
            .at
            .iter()
            .filter_map(|(p, lines)| {
                let rest = p.strip_prefix(from)?;
                (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
                    .then(|| (format!("{to}{rest}"), lines.clone()))
            })
            .collect();
        Comments {
            header: Vec::new(),
            at,
        }
    }

    /// The comments of everything below `path` put before `path` itself (e.g. where a value is written as flow
    /// text whose lines are not placed).
    pub fn fold_into(&mut self, path: &str) {
        let mut folded = Vec::new();
        self.at.retain(|(p, lines)| {
            let below = p.len() > path.len()
                && p.starts_with(path)
                && matches!(p.as_bytes().get(path.len()), Some(b'.' | b'['));
            if below {
                folded.extend(lines.iter().cloned());
            }
            !below
        });
        if !folded.is_empty() {
            self.add(path, folded);
        }
    }

    /// `text` (block-style YAML) with the header first, then each comment before the line at its path, indented
    /// like it; a blank line before each top-level key but the first, unless both it and the key before it are
    /// one line. Also returns the paths of the comments that found no line.
    pub fn apply(&self, text: &str) -> (String, Vec<String>) {
        let mut out = String::new();
        for l in &self.header {
            out.push_str(l);
            out.push('\n');
        }
        let mut left: Vec<(&str, &Vec<String>)> =
            self.at.iter().map(|(p, l)| (p.as_str(), l)).collect();
        let mut t = Tracker::default();
        // Lines since the last top-level key (`None` before the first).
        let mut below: Option<usize> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            below = below.map(|n| n + 1);
            if let Line::Content(path) = t.line(line) {
                let indent = line.len() - line.trim_start_matches(' ').len();
                if indent == 0 && !line.starts_with('-') {
                    // A blank line after the header and around blocks; one-line keys in a row stay together
                    // (`apiVersion: ...` then `kind: WasmPlugin`).
                    let block = lines
                        .peek()
                        .is_some_and(|next| next.starts_with([' ', '-']));
                    let commented = left.iter().any(|(p, _)| *p == path);
                    let blank = match below {
                        None => !self.header.is_empty(),
                        Some(n) => n > 1 || block || commented,
                    };
                    if blank {
                        out.push('\n');
                    }
                    below = Some(0);
                }
                if let Some(i) = left.iter().position(|(p, _)| *p == path) {
                    let (_, lines) = left.swap_remove(i);
                    for l in lines {
                        out.push_str(&" ".repeat(indent));
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        (out, left.into_iter().map(|(p, _)| p.to_owned()).collect())
    }
}

/// `text` as `# ` lines of at most about 110 characters (words are not split).
pub fn wrap(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::from("#");
        for word in para.split(' ') {
            if line.len() > 1 && line.len() + 1 + word.len() > 110 {
                lines.push(std::mem::replace(&mut line, String::from("#")));
            }
            line.push(' ');
            line.push_str(word);
        }
        lines.push(line.trim_end().to_owned());
    }
    lines
}

// -------------------------------------------------------------------------------------------------
// YAML 1.1 readers
// -------------------------------------------------------------------------------------------------

/// `text` with every plain scalar that a YAML 1.1 reader (Go's yaml, which kubectl and Istio use) would take
/// for something else than the string serde_yaml_ng (YAML 1.2) wrote double-quoted: `on`, `no`, `y`,
/// `1_000`, `12:30`, `2001-12-14`. Block scalars and comments are left as they are.
pub fn quote_for_yaml_1_1(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut t = Tracker::default();
    for line in text.lines() {
        let kind = t.line(line);
        let fixed = match kind {
            Line::Content(_) => requote_line(line),
            _ => None,
        };
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The line with its value quoted, when it needs it.
fn requote_line(line: &str) -> Option<String> {
    let mut rest = line.trim_start_matches(' ');
    while let Some(r) = rest.strip_prefix("- ") {
        rest = r.trim_start_matches(' ');
    }
    let value = match split_key(rest) {
        Some((_, v)) => v,
        None => rest,
    };
    if value.is_empty() || !misread_by_yaml_1_1(value) {
        return None;
    }
    let still_string = matches!(serde_yaml_ng::from_str::<Yaml>(value), Ok(Yaml::String(_)));
    if !still_string {
        return None;
    }
    let start = line.len() - value.len();
    let quoted = serde_json::to_string(value).ok()?;
    Some(format!("{}{quoted}", line.get(..start)?))
}

/// A plain scalar YAML 1.1 may read as a boolean, null, number, timestamp or merge key (over-approximated:
/// quoting a string that did not need it changes nothing).
fn misread_by_yaml_1_1(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<", "=", ".inf",
        "-.inf", "+.inf", ".nan",
    ];
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    let numeric = |c: char| c.is_ascii_hexdigit() || "_.:+-xXoObBeE".contains(c);
    v.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) && v.chars().all(numeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        let mut t = Tracker::default();
        text.lines()
            .filter_map(|l| match t.line(l) {
                Line::Content(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lines_are_placed_by_indentation() {
        let text = "\
a:
  b: { x: 1, y: 2 }
  list:
  - name: one
    sub:
      - k: v
      - k: w
  - name: two
  \"@type\": t
  'q': |
    text: not a key
    - not an item

  c: x
d: http://x
";
        assert_eq!(
            paths(text),
            [
                "a",
                "a.b",
                "a.list",
                "a.list[0]",
                "a.list[0].sub",
                "a.list[0].sub[0]",
                "a.list[0].sub[1]",
                "a.list[1]",
                "a.@type",
                "a.q",
                "a.c",
                "d"
            ]
        );
    }

    #[test]
    fn comments_move_to_the_lines_with_their_paths() {
        let template = "\
# header
# more header
a:
  # about b
  b: { x: 1 }
  list:
  # the first item
  - name: one
    # about value
    value: |
      # not a comment: text
";
        let c = Comments::of(template);
        assert_eq!(c.header, ["# header", "# more header"]);
        assert_eq!(
            c.at,
            [
                ("a.b".to_owned(), vec!["# about b".to_owned()]),
                ("a.list[0]".to_owned(), vec!["# the first item".to_owned()]),
                (
                    "a.list[0].value".to_owned(),
                    vec!["# about value".to_owned()]
                ),
            ]
        );
        let rendered =
            "a:\n  b:\n    x: 1\n  list:\n  - name: one\n    value: |\n      text\nz: 1\n";
        let (out, left) = c.apply(rendered);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            out,
            "# header\n# more header\n\na:\n  # about b\n  b:\n    x: 1\n  list:\n  # the first item\n  - name: one\n    # about value\n    value: |\n      text\n\nz: 1\n"
        );
        // Moved under another path; folded into a parent.
        let m = c.moved("a.list[0]", "resources[0]");
        assert_eq!(m.at[0].0, "resources[0]");
        assert_eq!(m.at[1].0, "resources[0].value");
        let mut f = c.clone();
        f.fold_into("a.list");
        assert_eq!(
            f.at[1],
            (
                "a.list".to_owned(),
                vec!["# the first item".to_owned(), "# about value".to_owned()]
            )
        );
    }

    #[test]
    fn blank_lines_set_blocks_apart_not_one_line_keys() {
        let c = Comments {
            header: vec!["# h".into()],
            at: vec![("d".into(), vec!["# about d".into()])],
        };
        let (out, _) = c.apply("a: 1\nb: 2\nc:\n  x: 1\nd: 3\ne: 4\nl:\n- 1\n");
        assert_eq!(
            out,
            "# h\n\na: 1\nb: 2\n\nc:\n  x: 1\n\n# about d\nd: 3\ne: 4\n\nl:\n- 1\n"
        );
    }

    #[test]
    fn setting_keys_in_order() {
        let mut m = map([("a", n(1)), ("c", n(3))]);
        set_after(&mut m, "a", "b", n(2));
        set_after(&mut m, "c", "a", n(0));
        set_after(&mut m, "zz", "d", n(4));
        assert_eq!(text(&m).unwrap(), "a: 0\nb: 2\nc: 3\nd: 4\n");
        let mut doc: Yaml =
            serde_yaml_ng::from_str("l: [{name: x, v: 1}, {name: y, v: 2}]").unwrap();
        let (v, path) = at(&mut doc, &[Step::Key("l"), Step::Named("y")], "t").unwrap();
        assert_eq!((path.as_str(), v["v"].as_u64()), ("l[1]", Some(2)));
        let e = at(&mut doc, &[Step::Key("l"), Step::Named("z")], "t.yaml").unwrap_err();
        assert!(e.starts_with("t.yaml has no l[name=z]"), "{e}");
        let e = at(
            &mut doc,
            &[Step::Key("l"), Step::Item(0), Step::Key("w")],
            "t",
        )
        .unwrap_err();
        assert!(e.starts_with("t has no l[0].w"), "{e}");
    }

    #[test]
    fn plain_scalars_yaml_1_1_misreads_are_quoted() {
        let mut m = Mapping::new();
        for v in [
            "on",
            "No",
            "y",
            "1_000",
            "12:30",
            "2001-12-14",
            "<<",
            "0x1F",
            "mcp",
            "v8001",
            "a:b",
        ] {
            m.insert(s(v), s(v));
        }
        m.insert(s("port"), n(8001));
        m.insert(s("list"), Yaml::Sequence(vec![s("off"), s("fine")]));
        let out = quote_for_yaml_1_1(&text(&Yaml::Mapping(m)).unwrap());
        assert_eq!(
            out,
            "on: \"on\"\nNo: \"No\"\ny: \"y\"\n1_000: \"1_000\"\n12:30: \"12:30\"\n2001-12-14: \"2001-12-14\"\n<<: \"<<\"\n\
             '0x1F': '0x1F'\nmcp: mcp\nv8001: v8001\na:b: a:b\nport: 8001\nlist:\n- \"off\"\n- fine\n"
        );
        // Still the same strings for a YAML 1.2 reader.
        let back: Yaml = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(back["on"], s("on"));
        assert_eq!(back["list"][0], s("off"));
    }

    #[test]
    fn wrapping() {
        let long = "word ".repeat(40);
        let lines = wrap(long.trim());
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= 110 && l.starts_with("# ")));
        assert_eq!(wrap("a\nb"), ["# a", "# b"]);
    }
}
