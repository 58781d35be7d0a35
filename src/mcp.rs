//! Bytes to MCP messages: the JSON-RPC 2.0 envelope, batches, and the parts of a call the policy needs.
//!
//! [`inspect`] checks the whole body in one pass (well-formedness, duplicate keys: [`crate::json`]), which
//! also records where each message's envelope and call fields are; it reads nothing else. Parameters and
//! arguments stay borrowed raw JSON (`&RawValue`) until a rule actually needs them.
//!
//! Length: about 470 lines of code; the rest of the file is its tests (the differential against
//! `fuzz/fuzz_targets/reference.rs` among them).

use crate::json::{self, JsonError};
use crate::names;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// One JSON-RPC message from the client.
#[derive(Debug)]
pub enum Message<'a> {
    /// A request: has an `id` (raw JSON text, echoed verbatim in replies).
    Request {
        id: &'a RawValue,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
        call: Option<ToolCall<'a>>,
    },
    /// A notification: a method without an id.
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A client's response to a server request (`result` or `error`).
    Response { id: Option<&'a RawValue> },
}

impl<'a> Message<'a> {
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }
    pub fn id(&self) -> Option<&'a RawValue> {
        match self {
            Message::Request { id, .. } => Some(id),
            Message::Response { id } => *id,
            Message::Notification { .. } => None,
        }
    }
    /// The name the message acts on, as an `Mcp-Name` header would carry it: the tool of `tools/call`, else
    /// a string `params.name` (prompts/get) or `params.uri` (resources/read).
    pub fn target_name(&self) -> Option<Cow<'a, str>> {
        #[derive(Deserialize)]
        struct Named<'b> {
            #[serde(default, borrow)]
            name: Option<&'b RawValue>,
            #[serde(default, borrow)]
            uri: Option<&'b RawValue>,
        }
        match self {
            Message::Request { call: Some(c), .. } => Some(c.name.clone()),
            Message::Request {
                params: Some(p), ..
            }
            | Message::Notification {
                params: Some(p), ..
            } => {
                let n: Named<'a> = serde_json::from_str(p.get()).ok()?;
                n.name.or(n.uri).and_then(as_str)
            }
            _ => None,
        }
    }
    /// The `tools/call` of this message, if it is one.
    pub fn tool_call(&self) -> Option<&ToolCall<'a>> {
        self.call().filter(|c| c.kind == Kind::Tool)
    }
    /// The governed call (`tools/call`, `prompts/get`, `resources/read`) of this message, if it is one.
    pub fn call(&self) -> Option<&ToolCall<'a>> {
        match self {
            Message::Request { call, .. } => call.as_ref(),
            _ => None,
        }
    }
}

/// What a governed request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tools/call`: `params.name`.
    Tool,
    /// `prompts/get`: `params.name`.
    Prompt,
    /// `resources/read`: `params.uri`.
    Resource,
}

impl Kind {
    /// The governed method for this kind.
    pub fn method(self) -> &'static str {
        match self {
            Kind::Tool => "tools/call",
            Kind::Prompt => "prompts/get",
            Kind::Resource => "resources/read",
        }
    }
    /// The kind a method is governed as, if any.
    pub fn of(method: &str) -> Option<Kind> {
        match method {
            "tools/call" => Some(Kind::Tool),
            "prompts/get" => Some(Kind::Prompt),
            "resources/read" => Some(Kind::Resource),
            _ => None,
        }
    }
    /// The governed method that `method` nearly spells (other letter case, surrounding white space) without
    /// being it: a server that normalises method names would run it, so it is refused as ambiguous.
    pub fn near_miss(method: &str) -> Option<Kind> {
        [Kind::Tool, Kind::Prompt, Kind::Resource]
            .into_iter()
            .find(|k| method != k.method() && method.trim().eq_ignore_ascii_case(k.method()))
    }
    /// The name of the field holding the target, in replies (`data.tool`, `data.prompt`, `data.resource`).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }
}

/// The policy-relevant part of a governed request: `tools/call`, `prompts/get` or `resources/read`.
#[derive(Debug)]
pub struct ToolCall<'a> {
    pub kind: Kind,
    /// The tool or prompt name, or the resource URI.
    pub name: Cow<'a, str>,
    /// `params.arguments` as raw JSON, if present and not null.
    pub arguments: Option<&'a RawValue>,
}

/// A whole request body: one message, or a batch (a JSON array, MCP 2025-03-26).
#[derive(Debug)]
pub struct Body<'a> {
    pub batch: bool,
    pub messages: Vec<Message<'a>>,
}

/// What is wrong with a request body. Each maps to one JSON-RPC error code in [`crate::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not JSON (-32700).
    Parse(String),
    /// JSON, but not a valid JSON-RPC 2.0 message or batch, or ambiguous (-32600).
    InvalidRequest { id: Option<String>, message: String },
    /// A known method with unusable params (-32602).
    InvalidParams { id: Option<String>, message: String },
}

impl RequestError {
    fn invalid(id: Option<&RawValue>, message: impl Into<String>) -> Self {
        RequestError::InvalidRequest {
            id: id.map(|r| r.get().to_owned()),
            message: message.into(),
        }
    }
    fn params(id: Option<&RawValue>, message: impl Into<String>) -> Self {
        RequestError::InvalidParams {
            id: id.map(|r| r.get().to_owned()),
            message: message.into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Parse(m) => write!(f, "{m}"),
            RequestError::InvalidRequest { message, .. }
            | RequestError::InvalidParams { message, .. } => {
                write!(f, "{message}")
            }
        }
    }
}

/// The first byte of a JSON text, which tells its type.
fn lead(raw: &RawValue) -> u8 {
    raw.get()
        .bytes()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(b' ')
}

/// The value of a JSON string (borrowed when it has no escapes), `None` for any other value.
fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    json::string_value(raw.get())
}

/// Why a method name is refused (-32600) before anything else reads it: a control or invisible character, or
/// white space at an end ([`names::malformed`]). No method has one; a header carrying it would be refused by
/// Envoy (503), and a server that trims or drops them could run a method the policy did not see.
pub fn malformed_method(method: &str) -> Option<String> {
    let m = names::malformed(method)?;
    Some(format!("Invalid Request: the method name {m}; refused"))
}

/// Why the tool or prompt name, or resource URI, of a governed call is refused (-32602), whatever the policy:
/// a control or invisible character, or white space at an end ([`names::malformed`]). MCP's tool-name guidance
/// has no room for them, and a server that drops them could run a tool the policy did not see.
pub fn malformed_name(kind: Kind, name: &str) -> Option<String> {
    let m = names::malformed(name)?;
    let what = match kind {
        Kind::Resource => "resource URI",
        Kind::Tool => "tool name",
        Kind::Prompt => "prompt name",
    };
    Some(format!("Invalid params: the {what} {m}; refused"))
}

/// The JSON-RPC envelope fields: a message may not carry a case variant of any of them.
const ENVELOPE_FIELDS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
const JSONRPC: usize = 0;
const ID: usize = 1;
const METHOD: usize = 2;
const PARAMS: usize = 3;
const RESULT: usize = 4;
const ERROR: usize = 5;
/// The fields of an object `params` that governed calls read.
const PARAMS_FIELDS: &[&str] = &["name", "arguments", "uri"];
const NAME: usize = 0;
const ARGUMENTS: usize = 1;
const URI: usize = 2;
/// The `params` fields each kind reads: `tools/call` and `prompts/get`, and `resources/read`.
const CALL_FIELDS: &[usize] = &[NAME, ARGUMENTS];
const READ_FIELDS: &[usize] = &[URI];

/// What [`inspect`] has the scanner record about each message while it checks the body.
const WATCH: json::Watch = json::Watch::new(ENVELOPE_FIELDS, Some((PARAMS, PARAMS_FIELDS)));

/// A key of message `i` (`nested`: of its `params`) that is not one of `fields` (indexes into `names`) but that
/// a decoder matching keys case-insensitively (Go's `encoding/json`, and so Go MCP servers) would bind to it:
/// `("Method", "method")`. Such a key is read by the upstream and ignored here, a bypass:
/// `{"result":{},"Method":"tools/call",...}` is a response to us and a tool call to a Go server.
/// With several, the first in key order.
fn case_variant<'o>(
    outline: &'o json::Outline<'_>,
    i: usize,
    nested: bool,
    names: &[&'static str],
    fields: &[usize],
) -> Option<(&'o str, &'static str)> {
    outline
        .variants(i, nested)
        .filter(|(_, field)| fields.contains(field))
        .min_by(|a, b| a.0.cmp(b.0))
        .and_then(|(key, field)| Some((key, *names.get(field)?)))
}

fn variant_message(key: &str, field: &str) -> String {
    format!(
        "\"{key}\" is a case variant of \"{field}\": servers that match keys case-insensitively read it as \"{field}\"; \
         ambiguous and refused"
    )
}

/// Parses and validates a request body.
///
/// One pass over the body checks all of it (well-formedness, duplicate keys: [`json`]) and records where
/// each message's envelope fields and `params.name` / `params.uri` / `params.arguments` are; the messages
/// are then built from those places, without reading the body again.
pub fn inspect(bytes: &[u8]) -> Result<Body<'_>, RequestError> {
    let outline = json::scan(bytes, Some(&WATCH)).map_err(|e| match e {
        JsonError::Syntax(m) => RequestError::Parse(format!("Parse error: body is not valid JSON ({m})")),
        JsonError::DuplicateKey(m) => RequestError::invalid(
            None,
            format!("Invalid Request: {m}; duplicate or case-variant object keys are ambiguous and refused"),
        ),
    })?;
    if outline.batch {
        if outline.len() == 0 {
            return Err(RequestError::invalid(None, "Invalid Request: empty batch"));
        }
        let messages = (0..outline.len())
            .map(|i| {
                message(&outline, i).map_err(|e| match e {
                    RequestError::InvalidRequest { id, message } => RequestError::InvalidRequest {
                        id: None,
                        message: format!("{message} (batch element {i}{})", id_note(&id)),
                    },
                    RequestError::InvalidParams { id, message } => RequestError::InvalidParams {
                        id: None,
                        message: format!("{message} (batch element {i}{})", id_note(&id)),
                    },
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Body {
            batch: true,
            messages,
        });
    }
    match outline.span(0) {
        Some(span) if outline.lead(span) == b'{' => Ok(Body {
            batch: false,
            messages: vec![message(&outline, 0)?],
        }),
        _ => Err(RequestError::invalid(
            None,
            "Invalid Request: a JSON-RPC 2.0 message must be an object or a batch (array)",
        )),
    }
}

fn id_note(id: &Option<String>) -> String {
    id.as_ref().map(|i| format!(", id {i}")).unwrap_or_default()
}

/// The value the scanner recorded for a watched field of message `i` (`nested`: of its `params`), borrowed
/// from the body.
fn picked<'a>(
    outline: &json::Outline<'a>,
    i: usize,
    nested: bool,
    field: usize,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    outline
        .value(i, nested, field)
        .map(|span| outline.raw(span))
        .transpose()
}

/// Message `i` of the body.
fn message<'a>(outline: &json::Outline<'a>, i: usize) -> Result<Message<'a>, RequestError> {
    if outline.span(i).map(|span| outline.lead(span)) != Some(b'{') {
        return Err(RequestError::invalid(
            None,
            "Invalid Request: a JSON-RPC 2.0 message must be an object",
        ));
    }
    let field = |field| {
        picked(outline, i, false, field)
            .map_err(|e| RequestError::invalid(None, format!("Invalid Request: {e}")))
    };
    let (jsonrpc, id, method, params) =
        (field(JSONRPC)?, field(ID)?, field(METHOD)?, field(PARAMS)?);
    let (result, error) = (field(RESULT)?, field(ERROR)?);
    if let Some((key, field)) = case_variant(
        outline,
        i,
        false,
        ENVELOPE_FIELDS,
        &[JSONRPC, ID, METHOD, PARAMS, RESULT, ERROR],
    ) {
        return Err(RequestError::invalid(
            None,
            format!("Invalid Request: {}", variant_message(key, field)),
        ));
    }
    if let Some(id) = id {
        if !matches!(lead(id), b'"' | b'-' | b'0'..=b'9' | b'n') {
            return Err(RequestError::invalid(
                None,
                "Invalid Request: id must be a string, a number or null",
            ));
        }
    }
    if jsonrpc.and_then(as_str).as_deref() != Some("2.0") {
        return Err(RequestError::invalid(
            id,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    let is_response = result.is_some() || error.is_some();
    match (method, is_response) {
        (Some(_), true) => Err(RequestError::invalid(
            id,
            "Invalid Request: a message cannot carry both \"method\" and \"result\"/\"error\"",
        )),
        (None, true) => {
            if result.is_some() && error.is_some() {
                return Err(RequestError::invalid(id, "Invalid Request: a response cannot carry both \"result\" and \"error\""));
            }
            if params.is_some() {
                return Err(RequestError::invalid(id, "Invalid Request: a response cannot carry \"params\""));
            }
            Ok(Message::Response { id })
        }
        (None, false) => Err(RequestError::invalid(
            id,
            "Invalid Request: a message needs \"method\" (request or notification) or \"result\"/\"error\" (response)",
        )),
        (Some(m), false) => {
            let method = as_str(m)
                .ok_or_else(|| RequestError::invalid(id, "Invalid Request: \"method\" must be a string"))?;
            if let Some(p) = params {
                if !matches!(lead(p), b'{' | b'[') {
                    return Err(RequestError::invalid(id, "Invalid Request: \"params\" must be an object or an array"));
                }
            }
            if let Some(kind) = Kind::near_miss(&method) {
                return Err(RequestError::invalid(
                    id,
                    format!("Invalid Request: method \"{method}\" is a near miss of \"{}\"; ambiguous and refused", kind.method()),
                ));
            }
            if let Some(why) = malformed_method(&method) {
                return Err(RequestError::invalid(id, why));
            }
            let call = match Kind::of(&method) {
                Some(kind) => Some(governed_call(kind, id, params, outline, i)?),
                None => None,
            };
            match id {
                Some(id) => Ok(Message::Request { id, method, params, call }),
                None if call.is_some() => Err(RequestError::invalid(
                    None,
                    format!("Invalid Request: {method} must be a request with an \"id\""),
                )),
                None => Ok(Message::Notification { method, params }),
            }
        }
    }
}

/// `i`: the message in `outline`, whose `params` (when an object) the scanner read.
fn governed_call<'a>(
    kind: Kind,
    id: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
    outline: &json::Outline<'a>,
    i: usize,
) -> Result<ToolCall<'a>, RequestError> {
    let method = kind.method();
    if !matches!(params, Some(p) if lead(p) == b'{') {
        return Err(RequestError::params(
            id,
            format!("Invalid params: {method} needs \"params\" as an object"),
        ));
    }
    let field = |field| {
        picked(outline, i, true, field)
            .map_err(|e| RequestError::params(id, format!("Invalid params: {e}")))
    };
    let fields = if kind == Kind::Resource {
        READ_FIELDS
    } else {
        CALL_FIELDS
    };
    if let Some((key, field)) = case_variant(outline, i, true, PARAMS_FIELDS, fields) {
        return Err(RequestError::params(
            id,
            format!("Invalid params: params.{}", variant_message(key, field)),
        ));
    }
    if kind == Kind::Resource {
        let name = field(URI)?.and_then(as_str).ok_or_else(|| {
            RequestError::params(
                id,
                "Invalid params: resources/read needs a string \"params.uri\"",
            )
        })?;
        if let Some(why) = malformed_name(kind, &name) {
            return Err(RequestError::params(id, why));
        }
        return Ok(ToolCall {
            kind,
            name,
            arguments: None,
        });
    }
    let name = field(NAME)?.and_then(as_str).ok_or_else(|| {
        RequestError::params(
            id,
            format!("Invalid params: {method} needs a string \"params.name\""),
        )
    })?;
    if let Some(why) = malformed_name(kind, &name) {
        return Err(RequestError::params(id, why));
    }
    let arguments = match field(ARGUMENTS)? {
        None => None,
        Some(a) if lead(a) == b'n' => None,
        Some(a) if lead(a) == b'{' => Some(a),
        Some(_) => {
            return Err(RequestError::params(
                id,
                "Invalid params: \"params.arguments\" must be an object",
            ));
        }
    };
    Ok(ToolCall {
        kind,
        name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    /// Both implementations' answers (every field, id and raw value included; see `compare_inspect`).
    fn same_as_reference(body: &[u8]) {
        if let Err(e) = reference::compare_inspect(body) {
            panic!("{e}");
        }
    }

    const BODIES: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_run","arguments":{"run_id":"x"}}}"#,
        r#" { "jsonrpc" : "2.0" , "id" : "a" , "method" : "tools\/call" , "params" : { "name" : "delete\u005frun" , "arguments" : null } } "#,
        r#"{"jsonrpc":"2.0","id":1.50,"method":"prompts/get","params":{"name":"p","arguments":{"x":"1"},"Uri":1}}"#,
        r#"{"jsonrpc":"2.0","id":-3,"method":"resources/read","params":{"uri":"file:///a","Name":"x","ARGUMENTS":1}}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"resources/read","params":{"uri":null}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","nAME":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"a","arguments":{},"argumentſ":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"Name":1,"name":2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"x","Name":1}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"method":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"x\u007fy","params":{}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"get\x7frun\"}}",
        r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"a\u0085"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///\u0000"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1},"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1},"params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"Method":"tools/call","PARAMS":{},"iD":2,"JsonRpc":1,"Error":0,"Result":0}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"metho\u0064":"x"}"#,
        r#"{"jsonrpc":"2.\u0030","id":"\u0031","method":"\u0070ing"}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":[{"a":1,"A":2}]}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"k":1e400}}}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"a"}},1]"#,
        r#"[1,{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#"[{"jsonrpc":"2.0","id":"q","method":"tools/call"}]"#,
        r#"[]"#,
        r#"[[]]"#,
        r#"{}"#,
        r#"null"#,
        r#""{}""#,
        r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{},"Params":{"name":"x"}}]"#,
        r#"{"params":{"name":"a","Name":"b"},"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"params":{"params":{"Name":"b"}},"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
    ];

    #[test]
    fn matches_the_reference_on_crafted_bodies() {
        for body in BODIES {
            same_as_reference(body.as_bytes());
        }
    }

    #[test]
    fn matches_the_reference_on_the_fuzz_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/inspect_decide");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            same_as_reference(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 10);
    }

    #[test]
    fn matches_the_reference_on_mutations() {
        let mut next = reference::xorshift(0x2545_f491_4f6c_dd1d);
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            " ",
            "\"Method\"",
            "\"method\"",
            "\"params\"",
            "\"Params\"",
            "\"name\"",
            "\"NAME\"",
            "\"uri\"",
            "\"Uri\"",
            "\"arguments\"",
            "\"Arguments\"",
            "\"id\"",
            "\"ID\"",
            "\"result\"",
            "\"error\"",
            "\"jsonrpc\"",
            "\"2.0\"",
            "\"tools/call\"",
            "\"resources/read\"",
            "\"prompts/get\"",
            "null",
            "1",
            "{}",
            "[]",
            "\"x\"",
            "\\u0041",
            "\u{17f}",
            "\u{212a}",
        ];
        for _ in 0..reference::mutations() {
            let mut body = BODIES[(next() % BODIES.len() as u64) as usize]
                .as_bytes()
                .to_vec();
            for _ in 0..(next() % 6) {
                let piece = PIECES[(next() % PIECES.len() as u64) as usize].as_bytes();
                let at = (next() % (body.len() as u64 + 1)) as usize;
                match next() % 3 {
                    0 if !body.is_empty() => {
                        let end = (at + (next() % 12) as usize).min(body.len());
                        body.drain(at.min(body.len() - 1)..end.max(at.min(body.len() - 1)));
                    }
                    _ => {
                        body.splice(at..at, piece.iter().copied());
                    }
                }
            }
            same_as_reference(&body);
        }
    }

    fn one(body: &str) -> Message<'_> {
        let mut b = inspect(body.as_bytes()).unwrap();
        assert!(!b.batch);
        b.messages.remove(0)
    }

    #[test]
    fn reads_a_tool_call() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_run","arguments":{"run_id":"x"}}}"#,
        );
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.id().unwrap().get(), "7");
        let c = m.tool_call().unwrap();
        assert_eq!(c.name, "get_run");
        assert!(matches!(c.name, Cow::Borrowed(_)));
        assert_eq!(c.arguments.unwrap().get(), r#"{"run_id":"x"}"#);
    }

    #[test]
    fn decodes_escapes_in_names() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools\/call","params":{"name":"delete\u005frun"}}"#,
        );
        assert_eq!(m.tool_call().unwrap().name, "delete_run");
        assert_eq!(m.id().unwrap().get(), "\"a\"");
    }

    #[test]
    fn other_messages() {
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Message::Notification { .. }
        ));
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Message::Response { .. }
        ));
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Message::Request { call: None, .. }
        ));
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            Message::Request { .. }
        ));
    }

    #[test]
    fn prompts_and_resources_are_governed_calls() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summarise","arguments":{"x":"1"}}}"#,
        );
        let c = m.call().unwrap();
        assert_eq!((c.kind, c.name.as_ref()), (Kind::Prompt, "summarise"));
        assert!(m.tool_call().is_none());
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#,
        );
        assert_eq!(m.call().unwrap().name, "file:///etc/passwd");
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":5}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","URI":"b"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read"}"#,
        ] {
            assert!(
                matches!(
                    inspect(body).unwrap_err(),
                    RequestError::InvalidParams { .. } | RequestError::InvalidRequest { .. }
                ),
                "{body:?}"
            );
        }
        assert!(matches!(
            inspect(br#"{"jsonrpc":"2.0","method":"prompts/get","params":{"name":"p"}}"#)
                .unwrap_err(),
            RequestError::InvalidRequest { .. }
        ));
    }

    #[test]
    fn near_misses_of_governed_methods_are_refused() {
        for m in [
            "Tools/Call",
            "tools/call ",
            " prompts/get",
            "RESOURCES/READ",
        ] {
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{m}","params":{{"name":"x"}}}}"#);
            match inspect(body.as_bytes()).unwrap_err() {
                RequestError::InvalidRequest { id, message } => {
                    assert_eq!(id.as_deref(), Some("1"));
                    assert!(message.contains("near miss"), "{message}");
                }
                e => panic!("{m}: {e:?}"),
            }
        }
        assert!(inspect(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_ok());
    }

    /// Issue 17's bodies and their kin: a control or invisible character in a method is an invalid request
    /// (-32600), in a tool, prompt or resource name invalid params (-32602); white space at either end too.
    /// Whatever the method (a notification's as well), with the id echoed.
    #[test]
    fn control_and_invisible_characters_in_methods_and_names_are_refused() {
        for (body, want) in [
            ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tool\x7f/call\",\"params\":{\"name\":\"search_runs\",\"arguments\":{}}}", "method name has a control character (U+007F)"),
            ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x\x7fy\",\"params\":{}}", "method name has a control character (U+007F)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"x\u0001y"}"#, "method name has a control character (U+0001)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"tools/list\u200b"}"#, "method name has an invisible character (U+200B)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":" tools/list"}"#, "method name starts or ends with white space"),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized\u0000"}"#, "method name has a control character (U+0000)"),
        ] {
            match inspect(body.as_bytes()).unwrap_err() {
                RequestError::InvalidRequest { id, message } => {
                    assert!(message.contains(want), "{body:?}: {message}");
                    assert_eq!(id.as_deref(), body.contains("\"id\":3").then_some("3"), "{body:?}");
                }
                e => panic!("{body:?}: {e:?}"),
            }
            same_as_reference(body.as_bytes());
        }
        for (body, want) in [
            ("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"get\x7frun\",\"arguments\":{}}}", "tool name has a control character (U+007F)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\u0001run","arguments":{}}}"#, "tool name has a control character (U+0001)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_run\u200d"}}"#, "tool name has an invisible character (U+200D)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_run "}}"#, "tool name starts or ends with white space"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"\u202eadmin"}}"#, "prompt name has an invisible character (U+202E)"),
            (r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a\nb"}}"#, "resource URI has a control character (U+000A)"),
        ] {
            match inspect(body.as_bytes()).unwrap_err() {
                RequestError::InvalidParams { id, message } => {
                    assert!(message.contains(want), "{body:?}: {message}");
                    assert_eq!(id.as_deref(), Some("3"));
                }
                e => panic!("{body:?}: {e:?}"),
            }
            same_as_reference(body.as_bytes());
        }
        // In a batch: the batch is refused, the element named.
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a\u0007"}}]"#;
        match inspect(batch.as_bytes()).unwrap_err() {
            RequestError::InvalidParams { id: None, message } => {
                assert!(message.ends_with("(batch element 1, id 2)"), "{message}")
            }
            e => panic!("{e:?}"),
        }
        // Names inside may have white space and anything printable.
        assert!(inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a b\u00e9"}}"#
        )
        .is_ok());
    }

    #[test]
    fn batches() {
        let b = inspect(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"n"}]"#).unwrap();
        assert!(b.batch);
        assert_eq!(b.messages.len(), 2);
    }

    fn err(body: &[u8]) -> RequestError {
        inspect(body).unwrap_err()
    }

    #[test]
    fn bad_json_is_a_parse_error() {
        assert!(matches!(err(b"{\"jsonrpc\":"), RequestError::Parse(_)));
        assert!(matches!(err(b"\xff\xfe"), RequestError::Parse(_)));
        assert!(matches!(
            err(b"{\"jsonrpc\":\"2.0\",\"method\":\"\xc3\x28\"}"),
            RequestError::Parse(_)
        ));
    }

    #[test]
    fn invalid_requests() {
        for (body, want_id) in [
            (&b"42"[..], None),
            (b"\"x\"", None),
            (b"[]", None),
            (b"[1]", None),
            (br#"{"id":1,"method":"ping"}"#, Some("1")),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, Some("1")),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#, Some("1")),
            (br#"{"jsonrpc":"2.0","id":1}"#, Some("1")),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, Some("1")),
            (br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, None),
            (br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#, None),
            (br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"},"id":4}"#, None),
            (br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{"a":1,"a":2}}}"#, None),
        ] {
            match err(body) {
                RequestError::InvalidRequest { id, .. } => assert_eq!(id.as_deref(), want_id, "{body:?}"),
                e => panic!("{body:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn invalid_params() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#[..],
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":1}}"#,
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":["get_run"]}"#,
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"a","arguments":[1]}}"#,
        ] {
            match err(body) {
                RequestError::InvalidParams { id, .. } => assert_eq!(id.as_deref(), Some("9"), "{body:?}"),
                e => panic!("{body:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn case_variant_envelope_keys_are_refused() {
        // A response to us, a tools/call to a Go server (encoding/json binds "Method" and "Params" to method and
        // params, and a message with a method is a request there). fuzz/inspect_decide's case-insensitive
        // differential flags it (seed case_only_method_response).
        for body in [
            &br#"{"jsonrpc":"2.0","id":10,"result":{},"Method":"tools/call","Params":{"name":"delete_run"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"},"METHOD":"tools/call"}"#,
            br#"{"jsonrpc":"2.0","ID":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","Params":{}}"#,
            br#"{"JSONRPC":"2.0","id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{},"param\u017f":{"name":"delete_run"}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"result":{},"Method":"tools/call"}]"#,
        ] {
            match err(body) {
                RequestError::InvalidRequest { message, .. } => assert!(message.contains("case variant"), "{message}"),
                e => panic!("{}: {e:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn case_variant_call_params_are_refused() {
        // "Arguments" would escape conditions that hold when an argument is absent (exists false, neq, not_in).
        for body in [
            &br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"a","Arguments":{"filter":"x"}}}"#[..],
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"a","\u0041rguments":{"filter":"x"}}}"#,
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"Name":"delete_run"}}"#,
        ] {
            match err(body) {
                RequestError::InvalidParams { id, message } => {
                    assert_eq!(id.as_deref(), Some("9"));
                    assert!(message.contains("case variant"), "{message}");
                }
                e => panic!("{}: {e:?}", String::from_utf8_lossy(body)),
            }
        }
        // Other keys, and case variants inside arguments (the policy's conditions decide on those), pass.
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{},"arguments":{"Name":1}},"x":1}"#,
        );
        assert_eq!(m.tool_call().unwrap().name, "a");
    }

    #[test]
    fn batch_element_errors_name_the_element() {
        let e = err(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#);
        assert!(e.to_string().contains("batch element 1"), "{e}");
    }
}
