//! The audit trail: one single-line JSON object per decision, written through the proxy-wasm log.
//!
//! Every key is always present, in a fixed order, `null` when unknown, so that log pipelines see one schema:
//!
//! ```text
//! {"time":"2026-03-21T12:34:56.789Z","decision":"deny","mcp.method.name":"tools/call",
//!  "gen_ai.operation.name":"execute_tool","gen_ai.tool.name":"delete_run","gen_ai.prompt.name":null,
//!  "mcp.resource.uri":null,"jsonrpc.request.id":"7","rule":"delete_*","reason":"no deletes",
//!  "identity":"9f86d081884c","request_id":"0b5f…",
//!  "args_sha256":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
//!  "method":"tools/call","tool":"delete_run","jsonrpc_id":7}
//! ```
//!
//! (shown wrapped; the real line has no newline). What the message is, is said with OpenTelemetry's semantic
//! conventions for MCP (`mcp.method.name`; `gen_ai.tool.name`, `gen_ai.prompt.name` or `mcp.resource.uri` for
//! the call's target; `gen_ai.operation.name` `execute_tool` for a tool call; `jsonrpc.request.id`, the id as a
//! string), so pipelines that know them read these lines as they read MCP spans. `method`, `tool` (any target)
//! and `jsonrpc_id` (the id as the client wrote it) are the same facts under this project's first names,
//! deprecated: kept at the end of the line for one release. `mcp.session.id` is not written: the session id
//! is a bearer value for its session, and identities stay out of the log in clear (below).
//!
//! Arguments never appear in clear: only the SHA-256 of their raw bytes as the client sent them. The identity
//! is the first 12 hex digits of its SHA-256: enough to correlate one caller's lines, not a secret (an identity
//! from a small, guessable set can be recovered by hashing candidates).
//!
//! A policy with `callers` adds three keys after `identity`, in clear (an audit trail must say who, and what
//! Envoy verified is no client secret): `subject` (the JWT subject), `principal` (the client certificate's URI
//! SAN) and `profile` (the caller's profile; `null` when the top-level rules applied).

use crate::caller::Identified;
use crate::label::Label;
use crate::mcp::Kind;
use crate::sha256;
use serde_json::value::RawValue;

/// Hex digits of the identity hash kept in the line.
pub const IDENTITY_HEX_CHARS: usize = 12;

/// One decision, as borrowed from the request being decided.
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent<'a> {
    /// Wall-clock time of the decision, nanoseconds since the Unix epoch (proxy-wasm's current time).
    pub unix_nanos: u64,
    /// What became of the message ([`Label::as_str`] is written).
    pub decision: Label,
    /// The JSON-RPC method (`tools/call`, `tools/list`, ...); empty when unknown.
    pub method: &'a str,
    /// What a governed call acts on: the tool or prompt name, or the resource URI.
    pub target: Option<(Kind, &'a str)>,
    /// The policy key that matched (an exact name or a glob); `None` when the default posture decided.
    pub rule: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// The caller's identity in clear; only its short hash is written.
    pub identity: Option<&'a str>,
    /// The verified caller and its profile, for a policy with `callers` (written in clear).
    pub caller: Option<Identified<'a>>,
    /// `x-request-id`.
    pub request_id: Option<&'a str>,
    /// The JSON-RPC id, echoed as the JSON the client wrote.
    pub jsonrpc_id: Option<&'a RawValue>,
    /// `params.arguments` as the client sent them; only their SHA-256 is written.
    pub arguments: Option<&'a RawValue>,
}

impl AuditEvent<'_> {
    /// The audit line, without a trailing newline.
    pub fn to_json_line(&self) -> String {
        let named = |kind: Kind| {
            self.target
                .filter(|(k, _)| *k == kind)
                .map(|(_, name)| name)
        };
        let mut s = String::with_capacity(512);
        s.push_str("{\"time\":");
        push_str(&mut s, &rfc3339_millis(self.unix_nanos));
        s.push_str(",\"decision\":");
        push_str(&mut s, self.decision.as_str());
        s.push_str(",\"mcp.method.name\":");
        push_opt(&mut s, Some(self.method).filter(|m| !m.is_empty()));
        s.push_str(",\"gen_ai.operation.name\":");
        push_opt(
            &mut s,
            (self.method == Kind::Tool.method()).then_some("execute_tool"),
        );
        s.push_str(",\"gen_ai.tool.name\":");
        push_opt(&mut s, named(Kind::Tool));
        s.push_str(",\"gen_ai.prompt.name\":");
        push_opt(&mut s, named(Kind::Prompt));
        s.push_str(",\"mcp.resource.uri\":");
        push_opt(&mut s, named(Kind::Resource));
        s.push_str(",\"jsonrpc.request.id\":");
        push_opt(&mut s, self.jsonrpc_id.and_then(id_text).as_deref());
        s.push_str(",\"rule\":");
        push_opt(&mut s, self.rule);
        s.push_str(",\"reason\":");
        push_opt(&mut s, self.reason);
        s.push_str(",\"identity\":");
        push_opt(&mut s, self.identity.map(identity_hash).as_deref());
        if let Some(c) = &self.caller {
            s.push_str(",\"subject\":");
            push_opt(&mut s, c.caller.subject.as_deref());
            s.push_str(",\"principal\":");
            push_opt(&mut s, c.caller.principal.as_deref());
            s.push_str(",\"profile\":");
            push_opt(&mut s, c.profile);
        }
        s.push_str(",\"request_id\":");
        push_opt(&mut s, self.request_id);
        s.push_str(",\"args_sha256\":");
        push_opt(
            &mut s,
            self.arguments
                .map(|a| sha256::hex_digest(a.get().as_bytes()))
                .as_deref(),
        );
        // Deprecated names (see the module's documentation), last so that they can go without moving the rest.
        s.push_str(",\"method\":");
        push_str(&mut s, self.method);
        s.push_str(",\"tool\":");
        push_opt(&mut s, self.target.map(|(_, name)| name));
        s.push_str(",\"jsonrpc_id\":");
        match self.jsonrpc_id {
            // Raw JSON can only hold a line break as insignificant whitespace (never inside a string), so
            // replacing it keeps the value and the line whole.
            Some(id) => {
                s.extend(
                    id.get()
                        .chars()
                        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
                )
            }
            None => s.push_str("null"),
        }
        s.push('}');
        s
    }
}

/// `jsonrpc.request.id`: the id as a string (a string id's own text, a number as written); `None` for a `null`
/// id, which OpenTelemetry's conventions leave out like a missing one.
fn id_text(id: &RawValue) -> Option<String> {
    let raw = id.get().trim();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw == "null" {
        None
    } else {
        Some(raw.to_owned())
    }
}

/// The first [`IDENTITY_HEX_CHARS`] hex digits of the SHA-256 of `identity`.
pub fn identity_hash(identity: &str) -> String {
    let mut h = sha256::hex_digest(identity.as_bytes());
    h.truncate(IDENTITY_HEX_CHARS);
    h
}

fn push_opt(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) => push_str(out, v),
        None => out.push_str("null"),
    }
}

/// Appends `v` as a JSON string. Control characters are escaped, so the result never spans lines; so are
/// U+2028 and U+2029, which some log viewers and JavaScript treat as line breaks.
fn push_str(out: &mut String, v: &str) {
    crate::jcs::push_string(out, v, &['\u{2028}', '\u{2029}']);
}

/// RFC 3339 UTC with milliseconds, like Envoy's access log `%START_TIME%`: `2026-03-21T12:34:56.789Z`.
pub fn rfc3339_millis(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos % 1_000_000_000) / 1_000_000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day numbers).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn event<'a>() -> AuditEvent<'a> {
        AuditEvent {
            unix_nanos: 1_774_096_496_789_123_456,
            decision: Label::Deny,
            method: "tools/call",
            target: None,
            rule: None,
            reason: None,
            identity: None,
            caller: None,
            request_id: None,
            jsonrpc_id: None,
            arguments: None,
        }
    }

    #[test]
    fn full_line_exact_shape() {
        let id = raw("7");
        let args = raw(r#"{"run_id":"abc"}"#);
        let e = AuditEvent {
            target: Some((Kind::Tool, "delete_run")),
            rule: Some("delete_*"),
            reason: Some("Deleting MLflow data is not allowed for agents"),
            identity: Some("test"),
            request_id: Some("0b5f3c2e-1d4a-4b8e-9f00-123456789abc"),
            jsonrpc_id: Some(&id),
            arguments: Some(&args),
            ..event()
        };
        let args_hash = sha256::hex_digest(br#"{"run_id":"abc"}"#);
        assert_eq!(
            e.to_json_line(),
            format!(
                concat!(
                    r#"{{"time":"2026-03-21T12:34:56.789Z","decision":"deny","mcp.method.name":"tools/call","#,
                    r#""gen_ai.operation.name":"execute_tool","gen_ai.tool.name":"delete_run","#,
                    r#""gen_ai.prompt.name":null,"mcp.resource.uri":null,"jsonrpc.request.id":"7","#,
                    r#""rule":"delete_*","reason":"Deleting MLflow data is not allowed for agents","#,
                    r#""identity":"9f86d081884c","request_id":"0b5f3c2e-1d4a-4b8e-9f00-123456789abc","#,
                    r#""args_sha256":"{}","method":"tools/call","tool":"delete_run","jsonrpc_id":7}}"#
                ),
                args_hash
            )
        );
    }

    #[test]
    fn absent_fields_are_null_and_keys_keep_their_order() {
        let line = event().to_json_line();
        assert_eq!(
            line,
            concat!(
                r#"{"time":"2026-03-21T12:34:56.789Z","decision":"deny","mcp.method.name":"tools/call","#,
                r#""gen_ai.operation.name":"execute_tool","gen_ai.tool.name":null,"gen_ai.prompt.name":null,"#,
                r#""mcp.resource.uri":null,"jsonrpc.request.id":null,"rule":null,"reason":null,"identity":null,"#,
                r#""request_id":null,"args_sha256":null,"method":"tools/call","tool":null,"jsonrpc_id":null}"#
            )
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 16);
    }

    /// The call's target under OpenTelemetry's name for its kind; `execute_tool` for tool calls only; an
    /// unknown method (a request refused before it was read) is null, and `method` keeps its empty string.
    #[test]
    fn targets_and_methods_under_opentelemetry_names() {
        let v = |e: AuditEvent| serde_json::from_str::<Value>(&e.to_json_line()).unwrap();
        let prompt = v(AuditEvent {
            method: "prompts/get",
            target: Some((Kind::Prompt, "review")),
            ..event()
        });
        let resource = v(AuditEvent {
            method: "resources/read",
            target: Some((Kind::Resource, "file:///etc/hosts")),
            ..event()
        });
        let list = v(AuditEvent {
            method: "tools/list",
            ..event()
        });
        let unknown = v(AuditEvent {
            method: "",
            ..event()
        });
        let keys = [
            "mcp.method.name",
            "gen_ai.operation.name",
            "gen_ai.tool.name",
            "gen_ai.prompt.name",
            "mcp.resource.uri",
            "method",
            "tool",
        ];
        let row = |v: &Value| keys.map(|k| v[k].clone());
        assert_eq!(
            row(&prompt),
            [
                json!("prompts/get"),
                Value::Null,
                Value::Null,
                json!("review"),
                Value::Null,
                json!("prompts/get"),
                json!("review")
            ]
        );
        assert_eq!(
            row(&resource),
            [
                json!("resources/read"),
                Value::Null,
                Value::Null,
                Value::Null,
                json!("file:///etc/hosts"),
                json!("resources/read"),
                json!("file:///etc/hosts")
            ]
        );
        assert_eq!(
            row(&list),
            [
                json!("tools/list"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                json!("tools/list"),
                Value::Null
            ]
        );
        assert_eq!(
            (&unknown["mcp.method.name"], &unknown["method"]),
            (&Value::Null, &json!(""))
        );
    }

    /// With `callers`, who called is written in clear (never the groups, never the arguments).
    #[test]
    fn callers_add_subject_principal_and_profile() {
        use crate::caller::Caller;
        let alice = Caller {
            subject: Some("alice@example.com".into()),
            groups: vec!["ml-admins".into()],
            principal: None,
        };
        let line = AuditEvent {
            identity: Some("s-1"),
            caller: Some(Identified {
                caller: &alice,
                profile: Some("ml-admins"),
            }),
            ..event()
        }
        .to_json_line();
        let v: Value = serde_json::from_str(&line).unwrap();
        let keys = [
            "time",
            "decision",
            "mcp.method.name",
            "gen_ai.operation.name",
            "gen_ai.tool.name",
            "gen_ai.prompt.name",
            "mcp.resource.uri",
            "jsonrpc.request.id",
            "rule",
            "reason",
            "identity",
            "subject",
            "principal",
            "profile",
            "request_id",
            "args_sha256",
            "method",
            "tool",
            "jsonrpc_id",
        ];
        assert_eq!(v.as_object().unwrap().len(), keys.len());
        let at: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert_eq!(
            (&v["subject"], &v["principal"], &v["profile"]),
            (
                &json!("alice@example.com"),
                &Value::Null,
                &json!("ml-admins")
            )
        );
        let anonymous = Caller::ANONYMOUS;
        let line = AuditEvent {
            caller: Some(Identified {
                caller: &anonymous,
                profile: None,
            }),
            ..event()
        }
        .to_json_line();
        assert!(
            line.contains(r#""subject":null,"principal":null,"profile":null,"#),
            "{line}"
        );
    }

    /// `jsonrpc.request.id` is the id as a string (OpenTelemetry's type for it; null for a null id);
    /// `jsonrpc_id` the JSON the client wrote.
    #[test]
    fn jsonrpc_ids_are_echoed_as_json() {
        for (id, want, text) in [
            (r#""abc""#, json!("abc"), json!("abc")),
            (
                "12345678901234567890",
                json!(12345678901234567890u64),
                json!("12345678901234567890"),
            ),
            ("-1.5e3", json!(-1.5e3), json!("-1.5e3")),
            ("null", Value::Null, Value::Null),
            (r#""a\"b\u00e9""#, json!("a\"bé"), json!("a\"bé")),
        ] {
            let r = raw(id);
            let line = AuditEvent {
                jsonrpc_id: Some(&r),
                ..event()
            }
            .to_json_line();
            assert!(line.contains(&format!(r#""jsonrpc_id":{id}}}"#)), "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["jsonrpc_id"], want);
            assert_eq!(v["jsonrpc.request.id"], text, "{line}");
        }
        // A raw value with line breaks (insignificant whitespace) still gives one line.
        let r = raw("[\n1,\r\n2]");
        let line = AuditEvent {
            jsonrpc_id: Some(&r),
            ..event()
        }
        .to_json_line();
        assert!(!line.contains(['\n', '\r']));
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap()["jsonrpc_id"],
            json!([1, 2])
        );
    }

    #[test]
    fn strings_are_escaped_onto_one_line() {
        let reason = "a \"quoted\" \\ back\nslash\r\t\u{1}\u{8}\u{c}\u{2028} é ✓";
        let line = AuditEvent {
            reason: Some(reason),
            target: Some((Kind::Tool, "x\"y")),
            ..event()
        }
        .to_json_line();
        assert!(!line.contains(['\n', '\r', '\u{2028}']), "{line}");
        assert!(
            line.contains(r#""reason":"a \"quoted\" \\ back\nslash\r\t\u0001\b\f\u2028 é ✓""#),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["reason"], reason);
        assert_eq!(
            (&v["tool"], &v["gen_ai.tool.name"]),
            (&json!("x\"y"), &json!("x\"y"))
        );
    }

    #[test]
    fn arguments_are_hashed_never_written() {
        let args = raw(r#"{"secret":"hunter2"}"#);
        let line = AuditEvent {
            arguments: Some(&args),
            ..event()
        }
        .to_json_line();
        assert!(!line.contains("hunter2"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["args_sha256"],
            sha256::hex_digest(br#"{"secret":"hunter2"}"#)
        );
        assert_eq!(v["args_sha256"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn identity_is_a_short_hash() {
        // SHA-256("test") = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        assert_eq!(identity_hash("test"), "9f86d081884c");
        assert_eq!(identity_hash(""), "e3b0c44298fc");
        let line = AuditEvent {
            identity: Some("alice@example.com"),
            ..event()
        }
        .to_json_line();
        assert!(!line.contains("alice"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["identity"].as_str().unwrap().len(), IDENTITY_HEX_CHARS);
    }

    #[test]
    fn decisions_are_written_as_given() {
        for d in Label::ALL {
            let line = AuditEvent {
                decision: d,
                ..event()
            }
            .to_json_line();
            assert!(line.contains(&format!(r#","decision":"{d}","#)), "{line}");
        }
    }

    #[test]
    fn times() {
        for (nanos, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (999_999_999, "1970-01-01T00:00:00.999Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000Z"),
            (951_868_800_000_000_000, "2000-03-01T00:00:00.000Z"),
            (1_700_000_000_123_000_000, "2023-11-14T22:13:20.123Z"),
            (1_709_251_199_000_000_000, "2024-02-29T23:59:59.000Z"),
            (4_102_444_799_000_000_000, "2099-12-31T23:59:59.000Z"),
            (4_107_542_400_000_000_000, "2100-03-01T00:00:00.000Z"),
            (u64::MAX, "2554-07-21T23:34:33.709Z"),
        ] {
            assert_eq!(rfc3339_millis(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn civil_from_days_agrees_with_counting_days() {
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(600 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
