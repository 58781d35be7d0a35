//! The implementations `json::check_strict` and `mcp::inspect` had before the one-pass scanner: a serde
//! visitor over serde_json's own deserializer, then serde reads of the envelope and params. The fuzz targets
//! and the crate's unit tests (included there with `#[path]`) hold the current ones to these answers:
//! [`compare_strict`] (the verdict, and for a refusal its kind: each side words and places its errors its own
//! way) and [`compare_inspect`] (every field read, every message of an invalid request). Later changes of the
//! contract are made here too (the near-miss method check; malformed method and call names, issues 14 and 17).
#![allow(dead_code)]

use mcp_policy::json::{keys_collide, ErrorKind};
use mcp_policy::mcp::{Body, Kind, Message, RequestError, ToolCall};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

const DUP_PREFIX: &str = "duplicate key ";

/// serde_json's verdict on `bytes`, with duplicate keys refused: `Err` with the kind of the first error.
pub fn check_strict(bytes: &[u8]) -> Result<(), ErrorKind> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res = Checked::deserialize(&mut de).and_then(|_| de.end());
    res.map_err(|e| kind_of(&e))
}

/// The kind of a serde_json error, from its message (without the position serde_json appends).
fn kind_of(e: &serde_json::Error) -> ErrorKind {
    use ErrorKind::*;
    let text = e.to_string();
    if e.is_data() && text.starts_with(DUP_PREFIX) {
        return DuplicateKey;
    }
    let message = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    match message {
        "EOF while parsing a value" => EofInValue,
        "EOF while parsing a string" => EofInString,
        "EOF while parsing a list" => EofInArray,
        "EOF while parsing an object" => EofInObject,
        "expected value" => ExpectedValue,
        "expected ident" => ExpectedLiteral,
        "expected `:`" => ExpectedColon,
        "expected `,` or `]`" => ExpectedCommaOrArrayEnd,
        "expected `,` or `}`" => ExpectedCommaOrObjectEnd,
        "key must be a string" => KeyNotString,
        "trailing comma" => TrailingComma,
        "trailing characters" => TrailingCharacters,
        "invalid number" => InvalidNumber,
        "number out of range" => NumberOutOfRange,
        "invalid escape" => InvalidEscape,
        // A trailing surrogate first, a leading one without `\u` after it, or followed by no trailing one.
        "lone leading surrogate in hex escape" | "unexpected end of hex escape" => LoneSurrogate,
        "control character (\\u0000-\\u001F) found while parsing a string" => ControlCharacter,
        "invalid unicode code point" => InvalidUtf8,
        "recursion limit exceeded" => TooDeep,
        other => panic!("a serde_json error the oracle has no kind for: {other:?}"),
    }
}

/// `json::check_strict` against [`check_strict`]: the same verdict and, for a refusal, the same kind, at a
/// place inside the text.
pub fn compare_strict(doc: &[u8]) -> Result<(), String> {
    let new = mcp_policy::json::check_strict(doc);
    let old = check_strict(doc);
    if new.as_ref().map(|_| ()).map_err(|e| e.kind()) != old {
        return Err(format!(
            "check_strict says {new:?}, the reference {old:?}, on {:?}",
            String::from_utf8_lossy(doc)
        ));
    }
    if let Err(e) = &new {
        let at = e.position();
        if at.offset > doc.len() || at.line == 0 || at.column == 0 {
            return Err(format!("{e:?}: a place outside the text"));
        }
    }
    Ok(())
}

/// `mcp::inspect` against [`inspect`]: the same answer, every field, id and raw value included (borrowed names
/// too). For a body that is not strict JSON, the same refusal: the error kind ([`compare_strict`]) and the
/// JSON-RPC error it becomes, whose message names the kind.
pub fn compare_inspect(body: &[u8]) -> Result<(), String> {
    let new = mcp_policy::mcp::inspect(body);
    let old = inspect(body);
    let shown = || String::from_utf8_lossy(body);
    if let Err(kind) = check_strict(body) {
        compare_strict(body)?;
        let names_kind = |m: &str| match kind {
            ErrorKind::DuplicateKey => m.contains("duplicate key"),
            kind => m.contains(kind.message()),
        };
        return match (&new, &old) {
            (Err(RequestError::Parse(m)), Err(RequestError::Parse(_)))
            | (
                Err(RequestError::InvalidRequest {
                    id: None,
                    message: m,
                }),
                Err(RequestError::InvalidRequest { id: None, .. }),
            ) if names_kind(m) => Ok(()),
            _ => Err(format!(
                "inspect says {new:?}, the reference {old:?}, on {:?}",
                shown()
            )),
        };
    }
    if format!("{new:?}") != format!("{old:?}") {
        return Err(format!(
            "inspect says {new:?}, the reference {old:?}, on {:?}",
            shown()
        ));
    }
    if let (Ok(new), Ok(old)) = (&new, &old) {
        for (n, o) in new.messages.iter().zip(&old.messages) {
            let borrowed = |c: Option<&ToolCall<'_>>| c.map(|c| matches!(c.name, Cow::Borrowed(_)));
            if borrowed(n.call()) != borrowed(o.call()) {
                return Err(format!(
                    "a name borrowed on one side only, on {:?}",
                    shown()
                ));
            }
        }
    }
    Ok(())
}

/// How many mutated inputs the unit tests' differentials try (`MUTATIONS=2000000 cargo test --release
/// matches_the_reference` for a longer run).
pub fn mutations() -> usize {
    std::env::var("MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// A small deterministic generator (xorshift64) for those mutations.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if let Some(prev) = seen.iter().find(|p| keys_collide(p, &k)) {
                let msg = if **prev == *k {
                    format!("{DUP_PREFIX}\"{k}\"")
                } else {
                    format!("{DUP_PREFIX}\"{k}\" (same as \"{prev}\" ignoring case)")
                };
                return Err(de::Error::custom(msg));
            }
            map.next_value::<Checked>()?;
            seen.push(k);
        }
        Ok(Checked)
    }
}

fn invalid(id: Option<&RawValue>, message: impl Into<String>) -> RequestError {
    RequestError::InvalidRequest {
        id: id.map(|r| r.get().to_owned()),
        message: message.into(),
    }
}

fn params_error(id: Option<&RawValue>, message: impl Into<String>) -> RequestError {
    RequestError::InvalidParams {
        id: id.map(|r| r.get().to_owned()),
        message: message.into(),
    }
}

/// Keeps `null` distinct from an absent field (serde maps both to `None` for a plain `Option`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    arguments: Option<&'a RawValue>,
}

/// The first non-whitespace byte of a JSON text, which tells its type.
fn lead(raw: &RawValue) -> u8 {
    raw.get()
        .bytes()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(b' ')
}

fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if lead(raw) != b'"' {
        return None;
    }
    // Borrow when the string has no escapes; decode into an owned string otherwise.
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Cow::Owned),
    }
}

/// The JSON-RPC envelope fields: a message may not carry a case variant of any of them.
const ENVELOPE_FIELDS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];
/// The `tools/call` params fields the policy reads.
const CALL_FIELDS: &[&str] = &["name", "arguments"];
const READ_FIELDS: &[&str] = &["uri"];

#[derive(Deserialize)]
struct ReadParams<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    uri: Option<&'a RawValue>,
}

/// A key of the JSON object `raw` that is not one of `fields` but that a decoder matching keys
/// case-insensitively (Go's `encoding/json`, and so Go MCP servers) would bind to it: `("Method", "method")`.
/// Such a key is read by the upstream and ignored here, a bypass: `{"result":{},"Method":"tools/call",...}` is a
/// response to us and a tool call to a Go server.
/// `Err` (fail closed) if `raw` cannot be read as an object, which `inspect` has ruled out before.
fn case_variant(
    raw: &RawValue,
    fields: &[&'static str],
) -> Result<Option<(String, &'static str)>, String> {
    let obj: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    Ok(obj.into_keys().find_map(|k| {
        let field = fields.iter().find(|f| **f != k && keys_collide(f, &k))?;
        Some((k, *field))
    }))
}

fn variant_message(key: &str, field: &str) -> String {
    format!(
        "\"{key}\" is a case variant of \"{field}\": servers that match keys case-insensitively read it as \"{field}\"; \
         ambiguous and refused"
    )
}

/// Parses and validates a request body.
pub fn inspect(bytes: &[u8]) -> Result<Body<'_>, RequestError> {
    check_strict(bytes).map_err(|kind| match kind {
        ErrorKind::DuplicateKey => invalid(
            None,
            format!("Invalid Request: {kind}; duplicate or case-variant object keys are ambiguous and refused"),
        ),
        kind => RequestError::Parse(format!("Parse error: body is not valid JSON ({kind})")),
    })?;
    let first = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied()
        .unwrap_or(b' ');
    match first {
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_slice(bytes)
                .map_err(|e| RequestError::Parse(format!("Parse error: {e}")))?;
            if items.is_empty() {
                return Err(invalid(None, "Invalid Request: empty batch"));
            }
            let messages = items
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    message(raw).map_err(|e| match e {
                        RequestError::InvalidRequest { id, message } => {
                            RequestError::InvalidRequest {
                                id: None,
                                message: format!("{message} (batch element {i}{})", id_note(&id)),
                            }
                        }
                        RequestError::InvalidParams { id, message } => {
                            RequestError::InvalidParams {
                                id: None,
                                message: format!("{message} (batch element {i}{})", id_note(&id)),
                            }
                        }
                        other => other,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Body {
                batch: true,
                messages,
            })
        }
        b'{' => {
            let raw: &RawValue = serde_json::from_slice(bytes)
                .map_err(|e| RequestError::Parse(format!("Parse error: {e}")))?;
            Ok(Body {
                batch: false,
                messages: vec![message(raw)?],
            })
        }
        _ => Err(invalid(
            None,
            "Invalid Request: a JSON-RPC 2.0 message must be an object or a batch (array)",
        )),
    }
}

fn id_note(id: &Option<String>) -> String {
    id.as_ref().map(|i| format!(", id {i}")).unwrap_or_default()
}

fn message(raw: &RawValue) -> Result<Message<'_>, RequestError> {
    if lead(raw) != b'{' {
        return Err(invalid(
            None,
            "Invalid Request: a JSON-RPC 2.0 message must be an object",
        ));
    }
    let env: Envelope<'_> = serde_json::from_str(raw.get())
        .map_err(|e| invalid(None, format!("Invalid Request: {e}")))?;
    let id = env.id;
    match case_variant(raw, ENVELOPE_FIELDS) {
        Ok(None) => {}
        Ok(Some((key, field))) => {
            return Err(invalid(
                None,
                format!("Invalid Request: {}", variant_message(&key, field)),
            ))
        }
        Err(e) => return Err(invalid(None, format!("Invalid Request: {e}"))),
    }
    if let Some(i) = id {
        if !matches!(lead(i), b'"' | b'-' | b'0'..=b'9' | b'n') {
            return Err(invalid(
                None,
                "Invalid Request: id must be a string, a number or null",
            ));
        }
    }
    if env.jsonrpc.and_then(as_str).as_deref() != Some("2.0") {
        return Err(invalid(id, "Invalid Request: \"jsonrpc\" must be \"2.0\""));
    }
    let is_response = env.result.is_some() || env.error.is_some();
    match (env.method, is_response) {
        (Some(_), true) => Err(invalid(
            id,
            "Invalid Request: a message cannot carry both \"method\" and \"result\"/\"error\"",
        )),
        (None, true) => {
            if env.result.is_some() && env.error.is_some() {
                return Err(invalid(id, "Invalid Request: a response cannot carry both \"result\" and \"error\""));
            }
            if env.params.is_some() {
                return Err(invalid(id, "Invalid Request: a response cannot carry \"params\""));
            }
            Ok(Message::Response { id })
        }
        (None, false) => Err(invalid(
            id,
            "Invalid Request: a message needs \"method\" (request or notification) or \"result\"/\"error\" (response)",
        )),
        (Some(m), false) => {
            let method = as_str(m)
                .ok_or_else(|| invalid(id, "Invalid Request: \"method\" must be a string"))?;
            if let Some(p) = env.params {
                if !matches!(lead(p), b'{' | b'[') {
                    return Err(invalid(id, "Invalid Request: \"params\" must be an object or an array"));
                }
            }
            if let Some(kind) = Kind::near_miss(&method) {
                return Err(invalid(
                    id,
                    format!("Invalid Request: method \"{method}\" is a near miss of \"{}\"; ambiguous and refused", kind.method()),
                ));
            }
            if let Some(why) = mcp_policy::mcp::malformed_method(&method) {
                return Err(invalid(id, why));
            }
            let call = match Kind::of(&method) {
                Some(kind) => Some(governed_call(kind, id, env.params)?),
                None => None,
            };
            match id {
                Some(id) => Ok(Message::Request { id, method, params: env.params, call }),
                None if call.is_some() => Err(invalid(
                    None,
                    format!("Invalid Request: {method} must be a request with an \"id\""),
                )),
                None => Ok(Message::Notification { method, params: env.params }),
            }
        }
    }
}

fn governed_call<'a>(
    kind: Kind,
    id: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
) -> Result<ToolCall<'a>, RequestError> {
    let method = kind.method();
    let params = match params {
        Some(p) if lead(p) == b'{' => p,
        _ => {
            return Err(params_error(
                id,
                format!("Invalid params: {method} needs \"params\" as an object"),
            ))
        }
    };
    if kind == Kind::Resource {
        let p: ReadParams<'a> = serde_json::from_str(params.get())
            .map_err(|e| params_error(id, format!("Invalid params: {e}")))?;
        match case_variant(params, READ_FIELDS) {
            Ok(None) => {}
            Ok(Some((key, field))) => {
                return Err(params_error(
                    id,
                    format!("Invalid params: params.{}", variant_message(&key, field)),
                ))
            }
            Err(e) => return Err(params_error(id, format!("Invalid params: {e}"))),
        }
        let name = p.uri.and_then(as_str).ok_or_else(|| {
            params_error(
                id,
                "Invalid params: resources/read needs a string \"params.uri\"",
            )
        })?;
        if let Some(why) = mcp_policy::mcp::malformed_name(kind, &name) {
            return Err(params_error(id, why));
        }
        return Ok(ToolCall {
            kind,
            name,
            arguments: None,
        });
    }
    let p: CallParams<'a> = serde_json::from_str(params.get())
        .map_err(|e| params_error(id, format!("Invalid params: {e}")))?;
    match case_variant(params, CALL_FIELDS) {
        Ok(None) => {}
        Ok(Some((key, field))) => {
            return Err(params_error(
                id,
                format!("Invalid params: params.{}", variant_message(&key, field)),
            ))
        }
        Err(e) => return Err(params_error(id, format!("Invalid params: {e}"))),
    }
    let name = p.name.and_then(as_str).ok_or_else(|| {
        params_error(
            id,
            format!("Invalid params: {method} needs a string \"params.name\""),
        )
    })?;
    if let Some(why) = mcp_policy::mcp::malformed_name(kind, &name) {
        return Err(params_error(id, why));
    }
    let arguments = match p.arguments {
        None => None,
        Some(a) if lead(a) == b'n' => None,
        Some(a) if lead(a) == b'{' => Some(a),
        Some(_) => {
            return Err(params_error(
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
