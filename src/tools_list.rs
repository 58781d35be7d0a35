//! Rewriting a `tools/list` answer so that it lists only the tools a predicate keeps.
//!
//! The answer is edited, not re-serialised: each JSON-RPC response whose `result.tools` is an array has that
//! array replaced by the raw text of its kept elements (with the original separators), and every other byte
//! stays as the server wrote it: field order, `nextCursor`, `_meta`, unknown fields, numbers, escapes.
//! When nothing is removed the input is returned borrowed.
//!
//! Two formats (MCP streamable HTTP):
//! - `application/json`: one JSON-RPC message or a batch (array) of them.
//! - `text/event-stream`: events read by [`crate::sse`] (the SSE specification's line ends, comments, fields,
//!   multi-line `data:` joined with `\n`). Events whose data is empty (priming events) are left alone; every
//!   other event's data must be a JSON-RPC message or batch. Only events holding a tools list that loses a
//!   tool are rewritten: their `data:` lines become one `data:` line at the place of the first, ended like it;
//!   their other lines and every other event stay byte-identical. An unterminated last event is treated like
//!   any other (SSE clients drop it, but it must not leak either).
//!
//! The JSON is validated by serde_json (which, unlike [`crate::json::check_strict`], lets repeated keys through;
//! the keys this module reads are checked below), then walked once with the crate's JSON cursor
//! (`json/cursor.rs`) to find `result.tools`, its elements and their names.
//!
//! Strict by design: the caller turns an error into a JSON-RPC error instead of forwarding the list, so
//! anything that cannot be read with certainty is an error: invalid UTF-8 or JSON, a `tools` that is not an
//! array, an entry that is not an object with a string `name`, and a `result`, `tools` or `name` key repeated
//! or present in another letter case (a lenient client could read the copy this module did not filter).
//!
//! Length: about 440 lines of code; the rest of the file is its tests, against real server captures.

use crate::json::{keys_collide, Cursor, Lost};
use crate::sse::{Event, Events};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The encoding of a `tools/list` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`
    Json,
    /// `text/event-stream`
    Sse,
}

/// The format of an answer from its `Content-Type` (parameters such as `charset` are ignored).
pub fn format_of(content_type: &str) -> Result<Format, RewriteError> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(Format::Json)
    } else if essence.eq_ignore_ascii_case("text/event-stream") {
        Ok(Format::Sse)
    } else {
        Err(RewriteError::UnknownFormat(content_type.to_owned()))
    }
}

/// A rewritten answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten<'a> {
    /// The answer to send: borrowed (the input itself) exactly when nothing was removed.
    pub body: Cow<'a, [u8]>,
    /// Tools listed in the answer as sent.
    pub kept: usize,
    /// Tools removed.
    pub removed: usize,
}

impl Rewritten<'_> {
    /// True when the body differs from the input (and so needs a new Content-Length).
    pub fn changed(&self) -> bool {
        self.removed > 0
    }
}

/// Why an answer could not be rewritten with certainty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// A Content-Type other than `application/json` or `text/event-stream`.
    UnknownFormat(String),
    /// The body is not UTF-8.
    NotUtf8,
    /// A JSON document does not parse.
    NotJson(String),
    /// JSON, but neither a JSON-RPC message (an object) nor a batch of them.
    NotJsonRpc(String),
    /// `result`, `tools` or `name` repeated, or present in another letter case.
    Ambiguous(String),
    /// A `result.tools` that is not an array of objects with a string `name`.
    BadTools(String),
    /// An error in the data of one SSE event (0-based, counting the events that have a `data` line).
    InEvent {
        event: usize,
        error: Box<RewriteError>,
    },
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::UnknownFormat(ct) => write!(
                f,
                "unsupported Content-Type '{ct}' for a tools/list answer (expected application/json or text/event-stream)"
            ),
            RewriteError::NotUtf8 => f.write_str("the tools/list answer is not valid UTF-8"),
            RewriteError::NotJson(m) => write!(f, "the tools/list answer is not valid JSON ({m})"),
            RewriteError::NotJsonRpc(m) => write!(f, "the tools/list answer is not JSON-RPC: {m}"),
            RewriteError::Ambiguous(m) => write!(f, "the tools/list answer is ambiguous: {m}"),
            RewriteError::BadTools(m) => write!(f, "the tools/list answer has an unreadable tools list: {m}"),
            RewriteError::InEvent { event, error } => write!(f, "{error} (SSE event {event})"),
        }
    }
}

impl std::error::Error for RewriteError {}

/// A walk over text serde_json has validated cannot lose its place; if it does, the answer is not forwarded.
impl From<Lost> for RewriteError {
    fn from(_: Lost) -> RewriteError {
        RewriteError::NotJson("internal: the walk lost its place".into())
    }
}

/// Whether a listed tool stays: `keep(name, tool)`, `tool` being the tool object's JSON text as listed.
pub type Keep<'k> = dyn Fn(&str, &str) -> bool + 'k;

/// Removes from every tools list in `body` the tools `keep` rejects.
pub fn rewrite<'a>(
    body: &'a [u8],
    format: Format,
    keep: &Keep<'_>,
) -> Result<Rewritten<'a>, RewriteError> {
    let text = std::str::from_utf8(body).map_err(|_| RewriteError::NotUtf8)?;
    let mut edits = Edits::default();
    match format {
        Format::Json => document(text, 0, keep, &mut edits)?,
        Format::Sse => event_stream(text, keep, &mut edits)?,
    }
    let body = if edits.removed == 0 {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(edits.apply(text).into_bytes())
    };
    Ok(Rewritten {
        body,
        kept: edits.kept,
        removed: edits.removed,
    })
}

/// Replacements of byte ranges of a text, in increasing, non-overlapping order.
#[derive(Default)]
struct Edits {
    list: Vec<(usize, usize, String)>,
    kept: usize,
    removed: usize,
}

impl Edits {
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (start, end, with) in &self.list {
            out.push_str(text.get(pos..*start).unwrap_or(""));
            out.push_str(with);
            pos = *end;
        }
        out.push_str(text.get(pos..).unwrap_or(""));
        out
    }
}

fn not_json(e: serde_json::Error) -> RewriteError {
    RewriteError::NotJson(e.to_string())
}

/// One JSON document (a message or a batch). Edit offsets are `base` + offsets in `doc`.
///
/// serde_json validates the document once; a single walk over the validated text then finds `result.tools`,
/// its elements and their names (each byte is read twice in all, whatever the nesting).
fn document(
    doc: &str,
    base: usize,
    keep: &Keep<'_>,
    edits: &mut Edits,
) -> Result<(), RewriteError> {
    serde_json::from_str::<&RawValue>(doc).map_err(not_json)?;
    let c = Cursor::new(doc);
    let start = c.skip_ws(0);
    match c.byte(start) {
        Some(b'{') => message(c, base, start, keep, edits).map(|_| ()),
        Some(b'[') => c
            .items::<RewriteError>(start, |at, _| {
                if c.byte(at) != Some(b'{') {
                    return Err(RewriteError::NotJsonRpc(
                        "a batch element is not an object".into(),
                    ));
                }
                message(c, base, at, keep, edits)
            })
            .map(|_| ()),
        _ => Err(RewriteError::NotJsonRpc(
            "a JSON-RPC message must be an object or a batch (array)".into(),
        )),
    }
}

/// The message (an object) at `at`: filters its `result.tools`, if it has one. Returns the message's end.
fn message(
    c: Cursor<'_>,
    base: usize,
    at: usize,
    keep: &Keep<'_>,
    edits: &mut Edits,
) -> Result<usize, RewriteError> {
    let mut list: Option<Tools> = None;
    // An error of the tools list waits until the message is read: a repeated `result` or `tools` key is
    // reported first (the list read may not be the one a client reads).
    let mut pending: Option<RewriteError> = None;
    let mut result_seen = false;
    let end = c.entries::<RewriteError>(at, |key, value| {
        if !claim(c, key, "result", &mut result_seen)? {
            return Ok(c.value_end(value)?);
        }
        if c.byte(value) != Some(b'{') {
            // Requests, notifications and errors have no `result`; a result that is not an object lists no tools.
            return Ok(c.value_end(value)?);
        }
        let mut tools_seen = false;
        c.entries::<RewriteError>(value, |key, value| {
            if !claim(c, key, "tools", &mut tools_seen)? {
                return Ok(c.value_end(value)?);
            }
            let (tools, end) = tools_list(c, value);
            match tools {
                Ok(t) => list = Some(t),
                Err(e) => pending = pending.take().or(Some(e)),
            }
            Ok(end)
        })
    })?;
    if let Some(e) = pending {
        return Err(e);
    }
    let Some(tools) = list else {
        return Ok(end);
    };
    let keeps: Vec<bool> = tools
        .names
        .iter()
        .zip(&tools.spans)
        .map(|(n, span)| keep(n, c.get(*span).unwrap_or("")))
        .collect();
    let kept = keeps.iter().filter(|k| **k).count();
    edits.kept += kept;
    if kept == keeps.len() {
        return Ok(end);
    }
    edits.removed += keeps.len() - kept;
    let (start, stop) = tools.array;
    edits.list.push((
        base + start,
        base + stop,
        filtered_array(c, tools.array, &tools.spans, &keeps),
    ));
    Ok(end)
}

/// A `result.tools` array as read: its span, and each element's span and name.
struct Tools<'a> {
    array: (usize, usize),
    spans: Vec<(usize, usize)>,
    names: Vec<Cow<'a, str>>,
}

/// The `tools` value at `at`, and where it ends (known even when the list is unreadable, so the walk goes on).
fn tools_list(c: Cursor<'_>, at: usize) -> (Result<Tools<'_>, RewriteError>, usize) {
    if c.byte(at) != Some(b'[') {
        let e = RewriteError::BadTools("\"result.tools\" is not an array".into());
        return match c.value_end(at) {
            Ok(end) => (Err(e), end),
            Err(lost) => (Err(lost.into()), at),
        };
    }
    let mut tools = Tools {
        array: (at, at),
        spans: Vec::new(),
        names: Vec::new(),
    };
    let mut first_error: Option<RewriteError> = None;
    let walked = c.items::<RewriteError>(at, |item, i| {
        let end = if c.byte(item) == Some(b'{') {
            let mut name: Option<(usize, usize)> = None;
            let mut seen = false;
            let mut ambiguous: Option<RewriteError> = None;
            let end = c.entries::<RewriteError>(item, |key, value| {
                let end = c.value_end(value)?;
                match claim(c, key, "name", &mut seen) {
                    Ok(true) => name = Some((value, end)),
                    Ok(false) => {}
                    Err(e) => ambiguous = ambiguous.take().or(Some(e)),
                }
                Ok(end)
            })?;
            if first_error.is_none() {
                let bad = |what: &str| RewriteError::BadTools(format!("tools[{i}] {what}"));
                let read = match (ambiguous, name) {
                    (Some(e), _) => Err(e),
                    (None, None) => Err(bad("has no \"name\"")),
                    (None, Some(span)) => c
                        .string(span)
                        .ok_or_else(|| bad("has a \"name\" that is not a string")),
                };
                match read {
                    Ok(n) => tools.names.push(n),
                    Err(e) => first_error = Some(e),
                }
            }
            end
        } else {
            if first_error.is_none() {
                first_error = Some(RewriteError::BadTools(format!(
                    "tools[{i}] is not an object"
                )));
            }
            c.value_end(item)?
        };
        tools.spans.push((item, end));
        Ok(end)
    });
    let end = match walked {
        Ok(end) => end,
        Err(e) => return (Err(e), at),
    };
    tools.array = (at, end);
    match first_error {
        Some(e) => (Err(e), end),
        None => (Ok(tools), end),
    }
}

/// Whether the object key `key` (its raw text, quotes included) is `name`. A repeated `name`, or a key that is
/// `name` in another letter case, is an error: a lenient client could read the copy this module did not filter.
fn claim(
    c: Cursor<'_>,
    key: (usize, usize),
    name: &str,
    seen: &mut bool,
) -> Result<bool, RewriteError> {
    let k = c
        .string(key)
        .ok_or_else(|| RewriteError::NotJson("internal: an unreadable key".into()))?;
    if !keys_collide(&k, name) {
        return Ok(false);
    }
    if *seen {
        return Err(RewriteError::Ambiguous(format!(
            "{AMBIGUOUS}\"{name}\" appears twice"
        )));
    }
    if *k != *name {
        return Err(RewriteError::Ambiguous(format!(
            "{AMBIGUOUS}\"{k}\" is a case variant of \"{name}\""
        )));
    }
    *seen = true;
    Ok(true)
}

/// The text of the array at `array` with only the elements marked in `keeps` (`spans`: each element's span),
/// keeping the original text around and between elements (so a pretty-printed list stays pretty-printed).
fn filtered_array(
    c: Cursor<'_>,
    array: (usize, usize),
    spans: &[(usize, usize)],
    keeps: &[bool],
) -> String {
    let (start, stop) = array;
    let (Some(&(first, _)), Some(&(_, last))) = (spans.first(), spans.last()) else {
        return c.get(array).unwrap_or("[]").to_owned();
    };
    let mut out = String::with_capacity(stop.saturating_sub(start));
    let mut prev_end: Option<usize> = None;
    let mut wrote_any = false;
    for ((s, e), &k) in spans.iter().zip(keeps) {
        if k {
            // Before the first kept element: the text before the first element ("[", indentation);
            // before the others: the separator that preceded this element (",", line break, indentation).
            let before = match (wrote_any, prev_end) {
                (true, Some(p)) => c.get((p, *s)),
                _ => c.get((start, first)),
            };
            out.push_str(before.unwrap_or("["));
            out.push_str(c.get((*s, *e)).unwrap_or(""));
            wrote_any = true;
        }
        prev_end = Some(*e);
    }
    if !wrote_any {
        return "[]".to_owned();
    }
    out.push_str(c.get((last, stop)).unwrap_or("]"));
    out
}

const AMBIGUOUS: &str = "key ";

fn event_stream(text: &str, keep: &Keep<'_>, edits: &mut Edits) -> Result<(), RewriteError> {
    for (event, e) in Events::new(text).enumerate() {
        sse_event(&e, keep, edits).map_err(|error| RewriteError::InEvent {
            event,
            error: Box::new(error),
        })?;
    }
    Ok(())
}

/// One event (it has `data:` lines).
fn sse_event(event: &Event<'_>, keep: &Keep<'_>, edits: &mut Edits) -> Result<(), RewriteError> {
    let data = event.data();
    if data.trim_matches([' ', '\t', '\n']).is_empty() {
        // A priming event (an `id:` and an empty `data:`): no message.
        return Ok(());
    }
    let mut inner = Edits::default();
    document(&data, 0, keep, &mut inner)?;
    edits.kept += inner.kept;
    if inner.removed == 0 {
        return Ok(());
    }
    edits.removed += inner.removed;
    // Line breaks in JSON can only be whitespace between tokens: a space keeps the value on one line.
    let new = inner.apply(&data).replace('\n', " ");
    let mut first = true;
    for l in &event.data_lines {
        let with = if first {
            format!("data: {new}{}", l.eol)
        } else {
            String::new()
        };
        edits.list.push((l.start, l.end(), with));
        first = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const MLFLOW_JSON: &[u8] = include_bytes!("../tests/fixtures/mlflow-mcp-0.4.1.tools-list.json");
    const MLFLOW_SSE: &[u8] = include_bytes!("../tests/fixtures/mlflow-mcp-0.4.1.tools-list.sse");
    const EVERYTHING_SSE: &str = include_str!("../tests/fixtures/server-everything.tools-list.sse");
    const PROGRESS_SSE: &str =
        include_str!("../tests/fixtures/server-everything.progress-then-result.sse");

    const MLFLOW_TOOLS: [&str; 40] = [
        "get_experiments",
        "search_experiments",
        "get_experiment_by_name",
        "get_experiment_metrics",
        "get_experiment_params",
        "get_experiment_tags",
        "get_runs",
        "get_run",
        "get_parent_run",
        "query_runs",
        "get_run_artifacts",
        "get_run_artifact",
        "get_run_metrics",
        "get_run_metric",
        "get_best_run",
        "compare_runs",
        "get_registered_models",
        "get_model_versions",
        "get_model_version",
        "get_registered_model",
        "get_model_version_by_alias",
        "get_latest_versions",
        "search_runs_by_tags",
        "get_artifact_content",
        "search_logged_models",
        "get_logged_model",
        "register_model",
        "set_registered_model_tag",
        "set_model_alias",
        "set_run_tag",
        "set_experiment_tag",
        "update_model_version",
        "transition_model_version_stage",
        "copy_model_version",
        "delete_model_alias",
        "delete_model_version",
        "delete_registered_model",
        "delete_run",
        "delete_experiment",
        "health",
    ];

    fn all(_: &str) -> bool {
        true
    }
    fn none(_: &str) -> bool {
        false
    }
    fn get_(name: &str) -> bool {
        name.starts_with("get_")
    }

    fn json<'a>(body: &'a [u8], keep: &dyn Fn(&str) -> bool) -> Rewritten<'a> {
        rewrite(body, Format::Json, &|n, _| keep(n)).unwrap()
    }
    fn sse<'a>(body: &'a [u8], keep: &dyn Fn(&str) -> bool) -> Rewritten<'a> {
        rewrite(body, Format::Sse, &|n, _| keep(n)).unwrap()
    }
    fn text(r: &Rewritten<'_>) -> String {
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    /// Tool names of a JSON-RPC response's `result.tools`.
    fn names(doc: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(doc).unwrap();
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The `data:` payloads of an event stream with `\n` or `\r\n` line ends, one per line.
    fn data_payloads(stream: &str) -> Vec<&str> {
        stream
            .split('\n')
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix("data: "))
            .collect()
    }

    #[test]
    fn content_types() {
        assert_eq!(format_of("application/json"), Ok(Format::Json));
        assert_eq!(
            format_of("Application/JSON; charset=utf-8"),
            Ok(Format::Json)
        );
        assert_eq!(format_of("text/event-stream"), Ok(Format::Sse));
        assert_eq!(
            format_of(" text/event-stream ;charset=UTF-8"),
            Ok(Format::Sse)
        );
        for bad in [
            "",
            "text/html",
            "application/jsonl",
            "text/plain; x=application/json",
        ] {
            assert_eq!(format_of(bad), Err(RewriteError::UnknownFormat(bad.into())));
        }
    }

    #[test]
    fn mlflow_fixture_is_what_we_think() {
        assert_eq!(
            names(std::str::from_utf8(MLFLOW_JSON).unwrap()),
            MLFLOW_TOOLS
        );
    }

    #[test]
    fn mlflow_json_keep_all_is_the_input_itself() {
        let r = json(MLFLOW_JSON, &all);
        assert!(matches!(r.body, Cow::Borrowed(b) if std::ptr::eq(b, MLFLOW_JSON)));
        assert_eq!((r.kept, r.removed, r.changed()), (40, 0, false));
    }

    #[test]
    fn mlflow_json_keep_get() {
        let r = json(MLFLOW_JSON, &get_);
        let out = text(&r);
        let want: Vec<&str> = MLFLOW_TOOLS
            .iter()
            .copied()
            .filter(|n| n.starts_with("get_"))
            .collect();
        assert_eq!(want.len(), 21);
        assert_eq!(names(&out), want);
        assert_eq!((r.kept, r.removed, r.changed()), (21, 19, true));
        // Byte level: the envelope is untouched and the list is the kept tools' original text, comma-joined.
        let original: Value = serde_json::from_slice(MLFLOW_JSON).unwrap();
        let raw: Value = serde_json::from_str(&out).unwrap();
        let prefix = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":["#;
        assert!(out.starts_with(prefix) && out.ends_with("]}}"));
        let src = std::str::from_utf8(MLFLOW_JSON).unwrap();
        let kept_text = &out[prefix.len()..out.len() - 3];
        let mut rebuilt = Vec::new();
        for t in original["result"]["tools"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            if name.starts_with("get_") {
                // The tool's raw text in the source: from its opening `{"name":"…"` to the next tool.
                let at = src.find(&format!(r#"{{"name":"{name}","#)).unwrap();
                let end = src[at..]
                    .find(r#"},{"name":""#)
                    .map(|e| at + e + 1)
                    .unwrap_or(src.len() - 3);
                rebuilt.push(&src[at..end]);
            }
        }
        assert_eq!(kept_text, rebuilt.join(","));
        // Non-ASCII text survives byte for byte (MLflow's descriptions use U+2014).
        assert!(out.contains("Keep small — each run"));
        assert_eq!(raw["id"], 2);
    }

    #[test]
    fn mlflow_json_keep_none() {
        let r = json(MLFLOW_JSON, &none);
        assert_eq!(
            text(&r),
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}"#
        );
        assert_eq!((r.kept, r.removed), (0, 40));
    }

    #[test]
    fn mlflow_sse_crlf() {
        assert!(MLFLOW_SSE.starts_with(b"event: message\r\ndata: {"));
        let r = sse(MLFLOW_SSE, &all);
        assert!(matches!(r.body, Cow::Borrowed(b) if std::ptr::eq(b, MLFLOW_SSE)));
        assert_eq!(r.kept, 40);

        let r = sse(MLFLOW_SSE, &get_);
        assert_eq!((r.kept, r.removed), (21, 19));
        // Same data as the JSON answer rewritten, framed exactly as the server framed it.
        let json_out = text(&json(MLFLOW_JSON, &get_));
        assert_eq!(
            text(&r),
            format!("event: message\r\ndata: {json_out}\r\n\r\n")
        );
    }

    #[test]
    fn server_everything_sse() {
        let tools = [
            "echo",
            "get-annotated-message",
            "get-env",
            "get-resource-links",
            "get-resource-reference",
            "get-structured-content",
            "get-sum",
            "get-tiny-image",
            "gzip-file-as-resource",
            "toggle-simulated-logging",
            "toggle-subscriber-updates",
            "trigger-long-running-operation",
            "simulate-research-query",
        ];
        let payloads = data_payloads(EVERYTHING_SSE);
        assert_eq!(payloads[0], "");
        assert_eq!(names(payloads[1]), tools);
        assert!(payloads[1].starts_with(r#"{"result":{"tools":["#));

        let r = sse(EVERYTHING_SSE.as_bytes(), &all);
        assert!(matches!(r.body, Cow::Borrowed(_)));
        assert_eq!((r.kept, r.removed), (13, 0));

        let r = sse(EVERYTHING_SSE.as_bytes(), &|n: &str| n.starts_with("get-"));
        let out = text(&r);
        assert_eq!((r.kept, r.removed), (7, 6));
        // The priming event and the id/event lines are kept as they were, with `\n` line ends.
        let (head, _) = EVERYTHING_SSE.split_once("data: {").unwrap();
        assert!(head.starts_with(
            "id: ac455e3b-caba-4473-9ac7-97aea96c03ec\ndata: \n\nevent: message\nid: 89d15cbc"
        ));
        assert!(out.starts_with(head));
        assert!(!out.contains('\r'));
        assert!(out.ends_with("]},\"jsonrpc\":\"2.0\",\"id\":1}\n\n"));
        let payloads = data_payloads(&out);
        assert_eq!(payloads.len(), 2);
        assert_eq!(
            names(payloads[1]),
            tools
                .iter()
                .filter(|n| n.starts_with("get-"))
                .copied()
                .collect::<Vec<_>>()
        );
        // `result` still comes before `jsonrpc` and `id`.
        assert!(payloads[1].starts_with(r#"{"result":{"tools":[{"name":"get-annotated-message","#));
    }

    #[test]
    fn progress_then_result_has_no_tools_list() {
        let r = sse(PROGRESS_SSE.as_bytes(), &none);
        assert!(matches!(r.body, Cow::Borrowed(_)));
        assert_eq!((r.kept, r.removed), (0, 0));
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"x":1},"tools":[{"name":"get_a","n":1.0e3},{"name":"del_b"},{"name":"get_c","s":"\u00e9\n"}],"nextCursor":"abc","zzz":[1,2]}}"#;

    #[test]
    fn other_fields_and_order_are_kept() {
        let r = json(LIST.as_bytes(), &get_);
        assert_eq!(
            text(&r),
            r#"{"jsonrpc":"2.0","id":1,"result":{"_meta":{"x":1},"tools":[{"name":"get_a","n":1.0e3},{"name":"get_c","s":"\u00e9\n"}],"nextCursor":"abc","zzz":[1,2]}}"#
        );
        let r = json(LIST.as_bytes(), &|n: &str| n == "get_c");
        assert!(
            text(&r).contains(r#""tools":[{"name":"get_c","s":"\u00e9\n"}],"nextCursor":"abc""#)
        );
    }

    #[test]
    fn pretty_printed_lists_keep_their_layout() {
        let body = "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"result\": {\n    \"tools\": [\n      {\"name\": \"a\"},\n      {\"name\": \"b\"},\n      {\"name\": \"c\"}\n    ],\n    \"nextCursor\": \"x\"\n  }\n}\n";
        let r = json(body.as_bytes(), &|n: &str| n != "b");
        assert_eq!(text(&r), body.replace("      {\"name\": \"b\"},\n", ""));
        let r = json(body.as_bytes(), &|n: &str| n == "c");
        assert_eq!(
            text(&r),
            body.replace("      {\"name\": \"a\"},\n      {\"name\": \"b\"},\n", "")
        );
        let r = json(body.as_bytes(), &|n: &str| n == "a");
        assert_eq!(
            text(&r),
            body.replace(",\n      {\"name\": \"b\"},\n      {\"name\": \"c\"}", "")
        );
    }

    #[test]
    fn names_are_decoded_before_the_predicate_sees_them() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get\u005frun"},{"name":"x"}]}}"#;
        let r = json(body, &|n: &str| n == "get_run");
        assert_eq!(
            text(&r),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get\u005frun"}]}}"#
        );
    }

    #[test]
    fn batches_and_messages_without_tools() {
        let body = format!(
            r#"[{{"jsonrpc":"2.0","id":0,"error":{{"code":-1,"message":"m"}}}}, {LIST} ,{{"jsonrpc":"2.0","id":2,"result":{{}}}},{{"jsonrpc":"2.0","id":3,"result":"s"}},{{"jsonrpc":"2.0","method":"n","params":{{"tools":5}}}}]"#
        );
        let r = json(body.as_bytes(), &get_);
        assert_eq!((r.kept, r.removed), (2, 1));
        assert_eq!(text(&r), body.replace(r#"{"name":"del_b"},"#, ""));
        for untouched in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"}]}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
        ] {
            let r = json(untouched.as_bytes(), &none);
            assert!(matches!(r.body, Cow::Borrowed(_)), "{untouched}");
        }
    }

    fn stream(eol: &str) -> String {
        [
            ": keep-alive comment",
            "retry: 1000",
            "id: 0",
            "data:",
            "",
            "event: message",
            "id: 1",
            r#"data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
            "",
            "",
            "event: message",
            "id: 2",
            r#"data: {"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"get_a"},{"name":"del_b"}],"nextCursor":"c"}}"#,
            "",
            r#"data: {"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            "",
        ]
        .join(eol)
    }

    #[test]
    fn sse_line_ends_are_kept() {
        for eol in ["\n", "\r\n", "\r"] {
            let input = stream(eol);
            let r = sse(input.as_bytes(), &get_);
            assert_eq!((r.kept, r.removed), (1, 1), "{eol:?}");
            let want = input.replace(
                r#"{"name":"get_a"},{"name":"del_b"}"#,
                r#"{"name":"get_a"}"#,
            );
            assert_eq!(text(&r), want, "{eol:?}");
            let r = sse(input.as_bytes(), &all);
            assert!(matches!(r.body, Cow::Borrowed(_)));
        }
    }

    #[test]
    fn sse_multi_line_data_becomes_one_line() {
        for eol in ["\n", "\r\n"] {
            let input = [
                "event: message",
                r#"data: {"jsonrpc":"2.0","id":7,"#,
                "id: 9",
                r#"data:"result":{"tools":["#,
                r#"data:   {"name":"get_a"},"#,
                r#"data:   {"name":"del_b"}"#,
                "data: ]}}",
                ": trailing comment",
                "",
                "",
            ]
            .join(eol);
            let r = sse(input.as_bytes(), &get_);
            let want = [
                "event: message",
                r#"data: {"jsonrpc":"2.0","id":7, "result":{"tools":[   {"name":"get_a"} ]}}"#,
                "id: 9",
                ": trailing comment",
                "",
                "",
            ]
            .join(eol);
            assert_eq!(text(&r), want, "{eol:?}");
            let r = sse(input.as_bytes(), &all);
            assert!(matches!(r.body, Cow::Borrowed(_)));
        }
    }

    #[test]
    fn sse_unterminated_last_event_is_rewritten_too() {
        let input = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}";
        let r = sse(input.as_bytes(), &|n: &str| n == "a");
        assert_eq!(
            text(&r),
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"a\"}]}}"
        );
    }

    #[test]
    fn sse_with_a_byte_order_mark() {
        let input = format!("\u{feff}{}", stream("\n"));
        let r = sse(input.as_bytes(), &get_);
        assert!(text(&r).starts_with("\u{feff}: keep-alive comment\n"));
        assert_eq!(r.removed, 1);
    }

    fn err(body: &[u8], format: Format) -> RewriteError {
        rewrite(body, format, &|n, _| all(n)).unwrap_err()
    }

    #[test]
    fn errors() {
        use RewriteError::*;
        let j = Format::Json;
        assert!(matches!(err(b"{\"jsonrpc\":", j), NotJson(_)));
        assert!(matches!(err(b"", j), NotJson(_)));
        assert!(matches!(err(b"\xef\xbb\xbf{}", j), NotJson(_)));
        assert_eq!(err(b"{\"a\":\"\xff\"}", j), NotUtf8);
        assert!(matches!(err(b"42", j), NotJsonRpc(_)));
        assert!(matches!(err(b"[{}, 1]", j), NotJsonRpc(_)));
        for (body, want) in [
            (
                r#"{"result":{"tools":{"name":"a"}}}"#,
                "\"result.tools\" is not an array",
            ),
            (
                r#"{"result":{"tools":null}}"#,
                "\"result.tools\" is not an array",
            ),
            (
                r#"{"result":{"tools":[{"name":"a"},"b"]}}"#,
                "tools[1] is not an object",
            ),
            (
                r#"{"result":{"tools":[{"title":"a"}]}}"#,
                "tools[0] has no \"name\"",
            ),
            (
                r#"{"result":{"tools":[{"name":5}]}}"#,
                "tools[0] has a \"name\" that is not a string",
            ),
            (
                r#"{"result":{"tools":[{"name":null}]}}"#,
                "tools[0] has a \"name\" that is not a string",
            ),
        ] {
            match err(body.as_bytes(), j) {
                BadTools(m) => assert_eq!(m, want, "{body}"),
                e => panic!("{body}: {e:?}"),
            }
        }
        for body in [
            r#"{"result":{"tools":[],"tools":[{"name":"a"}]}}"#,
            r#"{"result":{"tools":[],"Tools":[{"name":"a"}]}}"#,
            r#"{"result":{},"RESULT":{"tools":[{"name":"a"}]}}"#,
            r#"{"result":{"tools":[{"name":"a","name":"b"}]}}"#,
            r#"{"result":{"tools":[{"name":"a","\u004eame":"b"}]}}"#,
        ] {
            assert!(matches!(err(body.as_bytes(), j), Ambiguous(_)), "{body}");
        }
        let s = Format::Sse;
        assert_eq!(err(b"data: \xff\n\n", s), NotUtf8);
        match err(
            b"data: {\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n\ndata: not json\n\n",
            s,
        ) {
            InEvent { event: 1, error } => assert!(matches!(*error, NotJson(_))),
            e => panic!("{e:?}"),
        }
        let e = err(
            b"event: message\r\ndata: {\"result\":{\"tools\":[{}]}}\r\n\r\n",
            s,
        );
        assert_eq!(e.to_string(), "the tools/list answer has an unreadable tools list: tools[0] has no \"name\" (SSE event 0)");
        assert!(format_of("text/html")
            .unwrap_err()
            .to_string()
            .contains("text/html"));
    }
}
