//! Server-sent events (`text/event-stream`: the streamed answers of MCP's streamable HTTP transport), read as
//! the HTML standard's event stream interpretation reads them:
//! - a line ends at `\r\n`, `\n` or a bare `\r`; a UTF-8 byte order mark may open the stream;
//! - a line starting with `:` is a comment; any other is `field: value` (one space after the colon dropped; a
//!   line without a colon is a field with an empty value); only `data` matters here (`event`, `id` and `retry`
//!   do not change what a message is);
//! - the `data` lines of an event are joined with `\n`; a blank line dispatches the event, and an event without
//!   a `data` line dispatches nothing.
//!
//! One departure, on the side of failing closed: the last event counts even without the blank line that should
//! close it (the standard drops it; a rewriter must not let it pass unfiltered, and a client waiting for an
//! answer must not miss it).
//!
//! Two readers over the same rules ([`Line`]): [`Events`] reads a whole text in place, keeping where each line
//! is and how it ends (`tools_list` rewrites an answer byte for byte); [`Decoder`] reads a stream as its bytes
//! arrive (the CLI's `scan`, which stops at the answer it waits for while the stream stays open). Both pure.
//!
//! Hand-written: the rules are these few lines, the filter (wasm) must stay small, and SSE crates are async
//! clients or hand out parsed events without the line positions a byte-exact rewrite needs.

use std::borrow::Cow;
use std::collections::VecDeque;

const BOM: char = '\u{feff}';

/// One line of an event stream: `text` starts at byte `start` and is followed by `eol` ("" at the end of the
/// text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub start: usize,
    pub text: &'a str,
    pub eol: &'a str,
}

impl<'a> Line<'a> {
    /// Where the line ends, its line end included.
    pub fn end(&self) -> usize {
        self.start + self.text.len() + self.eol.len()
    }
    /// A blank line: it dispatches the event.
    pub fn is_blank(&self) -> bool {
        self.text.is_empty()
    }
    /// The field of this line, and its value (one leading space removed); `None` for a comment or a blank line.
    pub fn field(&self) -> Option<(&'a str, &'a str)> {
        if self.text.is_empty() || self.text.starts_with(':') {
            return None;
        }
        let (field, value) = self.text.split_once(':').unwrap_or((self.text, ""));
        Some((field, value.strip_prefix(' ').unwrap_or(value)))
    }
    /// The value of a `data` line, `None` for any other line.
    pub fn data(&self) -> Option<&'a str> {
        match self.field() {
            Some(("data", value)) => Some(value),
            _ => None,
        }
    }
}

/// The lines of a text, from a position.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Lines<'a> {
        Lines { text, pos: 0 }
    }
    /// Whether every line has been read.
    pub fn done(&self) -> bool {
        self.pos >= self.text.len()
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;
    fn next(&mut self) -> Option<Line<'a>> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let (text, eol) = match rest.find(['\r', '\n']) {
            None => (rest, ""),
            Some(i) => {
                let after = rest.get(i..).unwrap_or("");
                let eol = if after.starts_with("\r\n") {
                    "\r\n"
                } else if after.starts_with('\r') {
                    "\r"
                } else {
                    "\n"
                };
                (rest.get(..i).unwrap_or(""), eol)
            }
        };
        let line = Line {
            start: self.pos,
            text,
            eol,
        };
        self.pos = line.end();
        Some(line)
    }
}

/// One event of a whole text: its `data` lines (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub data_lines: Vec<Line<'a>>,
}

impl<'a> Event<'a> {
    /// The event's data: its `data` values joined with `\n`.
    pub fn data(&self) -> Cow<'a, str> {
        match self.data_lines.as_slice() {
            [one] => Cow::Borrowed(one.data().unwrap_or("")),
            many => Cow::Owned(
                many.iter()
                    .map(|l| l.data().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }
}

/// The events of a whole text, in order.
#[derive(Debug, Clone)]
pub struct Events<'a> {
    lines: Lines<'a>,
}

impl<'a> Events<'a> {
    /// The events of `text`, a whole stream (a byte order mark may open it).
    pub fn new(text: &'a str) -> Events<'a> {
        let pos = if text.starts_with(BOM) {
            BOM.len_utf8()
        } else {
            0
        };
        Events {
            lines: Lines { text, pos },
        }
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;
    fn next(&mut self) -> Option<Event<'a>> {
        let mut data_lines = Vec::new();
        while let Some(line) = self.lines.next() {
            if line.data().is_some() {
                data_lines.push(line);
            }
            // A blank line dispatches the event; so does the end of the text.
            if (line.is_blank() || self.lines.done()) && !data_lines.is_empty() {
                return Some(Event { data_lines });
            }
        }
        None
    }
}

/// The events of a stream, read as its bytes arrive: [`Decoder::push`] each chunk, [`Decoder::finish`] at the
/// end, and take the events completed so far with [`Decoder::event`]. Bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes after the last line end.
    pending: Vec<u8>,
    /// The data of the event being read, once it has a `data` line.
    data: Option<String>,
    /// The last line ended with `\r`: a `\n` first in the next chunk belongs to it.
    after_cr: bool,
    /// A line has been read (a byte order mark can only open the stream).
    started: bool,
    ready: VecDeque<String>,
}

impl Decoder {
    /// The next bytes of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        let mut chunk = chunk;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
        }
        self.pending.extend_from_slice(chunk);
        // Complete lines only: a line end cannot fall inside a UTF-8 sequence, so they decode on their own.
        let Some(last) = self.pending.iter().rposition(|&c| c == b'\r' || c == b'\n') else {
            return;
        };
        let lines: Vec<u8> = self.pending.drain(..=last).collect();
        self.after_cr = lines.last() == Some(&b'\r');
        self.read(&lines);
    }

    /// The end of the stream: its last event counts even without the blank line that should close it.
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.read(&rest);
        if let Some(data) = self.data.take() {
            self.ready.push_back(data);
        }
    }

    /// The data of the next event completed, in order.
    pub fn event(&mut self) -> Option<String> {
        self.ready.pop_front()
    }

    fn read(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut text: &str = &text;
        if !self.started && !text.is_empty() {
            self.started = true;
            text = text.strip_prefix(BOM).unwrap_or(text);
        }
        for line in Lines::new(text) {
            if line.is_blank() {
                if let Some(data) = self.data.take() {
                    self.ready.push_back(data);
                }
            } else if let Some(value) = line.data() {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const MLFLOW: &str = include_str!("../tests/fixtures/mlflow-mcp-0.4.1.tools-list.sse");
    const EVERYTHING: &str = include_str!("../tests/fixtures/server-everything.tools-list.sse");
    const PROGRESS: &str =
        include_str!("../tests/fixtures/server-everything.progress-then-result.sse");

    fn data(text: &str) -> Vec<String> {
        Events::new(text).map(|e| e.data().into_owned()).collect()
    }

    /// The stream fed to a [`Decoder`] in chunks of `size` bytes.
    fn decoded(text: &str, size: usize) -> Vec<String> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(size) {
            d.push(chunk);
            out.extend(std::iter::from_fn(|| d.event()));
        }
        d.finish();
        out.extend(std::iter::from_fn(|| d.event()));
        out
    }

    fn with_line_ends(text: &str, eol: &str) -> String {
        text.replace("\r\n", "\n").replace('\n', eol)
    }

    fn json(data: &str) -> Value {
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn mlflow_answers_in_one_event_with_crlf_line_ends() {
        assert!(MLFLOW.contains("\r\n"));
        let events: Vec<Event<'_>> = Events::new(MLFLOW).collect();
        assert_eq!(events.len(), 1);
        let line = events[0].data_lines[0];
        assert_eq!((line.start, line.eol), ("event: message\r\n".len(), "\r\n"));
        assert!(MLFLOW[line.start..line.end()].starts_with("data: {\"jsonrpc\""));
        let answer = json(&events[0].data());
        assert_eq!(answer["result"]["tools"].as_array().unwrap().len(), 40);
    }

    #[test]
    fn server_everything_primes_then_answers() {
        let got = data(EVERYTHING);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "");
        assert_eq!(
            json(&got[1])["result"]["tools"].as_array().unwrap().len(),
            13
        );
    }

    #[test]
    fn server_everything_sends_progress_before_the_result() {
        let got = data(PROGRESS);
        assert_eq!(got.len(), 5);
        for (i, d) in got[..4].iter().enumerate() {
            assert_eq!(json(d)["params"]["progress"], i + 1);
        }
        assert_eq!(json(&got[4])["id"], 5);
    }

    #[test]
    fn both_readers_read_the_captures_alike_with_any_line_end_and_chunking() {
        for capture in [MLFLOW, EVERYTHING, PROGRESS] {
            let want = data(capture);
            for eol in ["\n", "\r\n", "\r"] {
                let text = with_line_ends(capture, eol);
                assert_eq!(data(&text), want, "{eol:?}");
                for size in [1, 2, 3, 7, 64, 4096, text.len()] {
                    assert_eq!(decoded(&text, size), want, "{eol:?} in chunks of {size}");
                }
            }
        }
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let text = ": comment\ndata\ndata:x\ndata:  two spaces\nevent: e\nid: 1\nretry: 5\ndatum: no\n\n\n";
        assert_eq!(data(text), ["\nx\n two spaces"]);
        assert_eq!(decoded(text, 1), ["\nx\n two spaces"]);
        // No data line, no event; data lines without a blank line after them at the end still count.
        assert_eq!(
            data("event: e\nid: 2\n\n: only a comment\n"),
            Vec::<String>::new()
        );
        assert_eq!(data("data: a\n\ndata: b"), ["a", "b"]);
        assert_eq!(decoded("data: a\r\rdata: b", 1), ["a", "b"]);
    }

    #[test]
    fn a_byte_order_mark_opens_the_stream_only() {
        let text = "\u{feff}data: a\n\n\u{feff}data: b\n\n";
        assert_eq!(data(text), ["a"]);
        assert_eq!(decoded(text, 1), ["a"]);
        assert_eq!(decoded(text, 2), ["a"]);
    }

    #[test]
    fn a_bare_cr_dispatches_at_once() {
        // A stream that stays open after an event ended by `\r\r`: the event is complete without a next byte.
        let mut d = Decoder::default();
        d.push(b"data: {}\r");
        assert_eq!(d.event(), None);
        d.push(b"\r");
        assert_eq!(d.event().as_deref(), Some("{}"));
        // The `\n` that may follow belongs to that line end: it is not a second blank line.
        d.push(b"\ndata: x\r");
        d.push(b"\n");
        d.push(b"\r\n");
        assert_eq!(d.event().as_deref(), Some("x"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        let mut d = Decoder::default();
        d.push(b"data: caf\xc3");
        d.push(b"\xa9 \xff\n\n");
        assert_eq!(d.event().as_deref(), Some("caf\u{e9} \u{fffd}"));
    }
}
