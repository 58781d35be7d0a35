//! `mcp-policy scan URL`: ask a live MCP server for its tools (streamable HTTP) and write a starting policy
//! that classifies each tool by the annotations the server gives it.
//!
//! The client side of MCP's streamable HTTP transport, as much as `tools/list` needs: `initialize` (POST; the
//! answer is JSON or an SSE stream), the `mcp-session-id` the server hands out, `notifications/initialized`,
//! `tools/list` following `nextCursor`, and a closing `DELETE` of the session.

use crate::render::shell_word;
use crate::Out;
use mcp_policy::{policy, sse};
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

const LONG_ABOUT: &str = "\
Connects to a live MCP server over streamable HTTP (URL is its MCP endpoint, e.g.
http://127.0.0.1:8001/mcp), lists its tools (initialize, then tools/list following nextCursor),
and writes a policy with one rule per tool, classified by the tool's annotations:

  readOnlyHint: true                            allow
  not read-only, idempotentHint: true and
    destructiveHint: false                      allow with a rate limit (--rate-limit, 60/minute)
  anything else: destructive, or not said       deny (require_approval with --approve-destructive)

Hints a tool does not give take MCP's defaults: not read-only, destructive, not idempotent. Each rule
has a short reason starting with `scan:` (it doubles as a comment), and tools no rule names are
denied (default deny). With --approve-destructive the policy gets an `approval` section naming the
Envoy cluster `approvals`: a placeholder for your approval service.

Annotations are hints from the server, not guarantees: review the policy before using it
(`mcp-policy explain` shows what it does with a call). The policy is written to FILE (--out) or
standard output; a summary goes to standard error.";

const EXIT_STATUS: &str = "\
exit status: 0 the policy was written; 1 the server could not be scanned (connection, HTTP or
JSON-RPC error) or FILE could not be written; 2 usage error";

/// The MCP protocol version asked for; the server answers with the one it speaks, and that one is sent in
/// `MCP-Protocol-Version` afterwards. tools/list is the same in every version.
const PROTOCOL_VERSION: &str = "2025-06-18";
const DEFAULT_RATE_LIMIT: &str = "60/minute";
/// The most bytes read from one answer.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// The most tools/list pages followed.
const MAX_PAGES: usize = 10_000;

/// Write a starting policy for a live MCP server, from its tools' annotations
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    /// The server's MCP endpoint (http:// or https://), e.g. http://127.0.0.1:8001/mcp
    #[arg(value_name = "URL", value_parser = parse_url)]
    pub url: String,
    /// Send this header with every request (repeatable), e.g. 'authorization: Bearer …'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Require approval instead of denying destructive and unknown tools
    #[arg(long)]
    pub approve_destructive: bool,
    /// The limit for idempotent, non-destructive writes
    #[arg(long, value_name = "LIMIT", default_value = DEFAULT_RATE_LIMIT, value_parser = parse_rate_limit)]
    pub rate_limit: String,
    /// Write the policy to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<String>,
    /// For each request to the server
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_timeout, allow_negative_numbers = true)]
    pub timeout: Duration,
}

pub fn parse_url(url: &str) -> Result<String, String> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("the URL must start with http:// or https://".into());
    }
    if url.parse::<ureq::http::Uri>().is_err() {
        return Err("not a valid URL".into());
    }
    Ok(url.to_owned())
}

/// The limit must be one the policy accepts: checked the way the filter will read it.
fn parse_rate_limit(limit: &str) -> Result<String, String> {
    let probe = json!({"version": "1", "tools": {"t": {"rate_limit": limit}}});
    match policy::parse(probe.to_string().as_bytes()) {
        Ok(_) => Ok(limit.to_owned()),
        Err(e) => Err(format!(
            "not a valid rate limit ({}); use e.g. 60/minute",
            e.0.first().map(|e| e.message.clone()).unwrap_or_default()
        )),
    }
}

fn parse_timeout(t: &str) -> Result<Duration, String> {
    t.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "takes seconds, more than 0 and at most 3600".into())
}

fn parse_header(h: &str) -> Result<(String, String), String> {
    let Some((name, value)) = h.split_once(':') else {
        return Err("a header is written 'NAME: VALUE'".into());
    };
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("invalid header name {name:?}"));
    }
    let value = value.trim();
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("the value of header {name} has control characters"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

// -------------------------------------------------------------------------------------------------
// Classification
// -------------------------------------------------------------------------------------------------

/// What a scanned tool gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Read-only: allowed.
    ReadOnly,
    /// Writes, but idempotent and not destructive: allowed with a rate limit.
    SafeWrite,
    /// Destructive, or not said to be harmless: denied (or approval).
    Risky { why: String },
}

fn hint(annotations: Option<&Value>, name: &str) -> Option<bool> {
    annotations
        .and_then(|a| a.get(name))
        .and_then(Value::as_bool)
}

/// Classifies a tool (an entry of `tools/list`) by its annotations, with MCP's defaults for missing hints
/// (readOnlyHint false, destructiveHint true, idempotentHint false).
pub fn classify(tool: &Value) -> Class {
    let ann = tool.get("annotations").filter(|a| a.is_object());
    let read_only = hint(ann, "readOnlyHint");
    let destructive = hint(ann, "destructiveHint");
    let idempotent = hint(ann, "idempotentHint");
    if read_only == Some(true) {
        return Class::ReadOnly;
    }
    if destructive == Some(false) && idempotent == Some(true) {
        return Class::SafeWrite;
    }
    let why = if ann.is_none() {
        "no annotations, so it may write and destroy (MCP defaults)".to_owned()
    } else if destructive == Some(true) {
        "destructive per server annotations (destructiveHint)".to_owned()
    } else if destructive.is_none() {
        let idem = if idempotent == Some(true) {
            "idempotent, but "
        } else {
            ""
        };
        format!("may write; {idem}destructiveHint not given (MCP default: destructive)")
    } else {
        "writes, not idempotent per server annotations (idempotentHint)".to_owned()
    };
    Class::Risky { why }
}

/// Why a tool name cannot be a policy key naming exactly that tool (`None`: it can).
fn unusable_key(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("its name is empty")
    } else if name.contains(['*', '?']) {
        Some("its name contains '*' or '?', which a policy key reads as a glob")
    } else if name.contains(['[', ']', '{', '}', '\\']) {
        Some("its name contains one of [ ] { } \\, which policy keys may not")
    } else {
        None
    }
}

/// The scanned tools and the policy made of them.
pub struct Scanned {
    /// The policy text (pretty JSON, one rule a line, grouped: allowed, rate-limited, denied).
    pub policy: String,
    pub read_only: usize,
    pub safe_write: usize,
    pub risky: usize,
    /// Tools left to the default, with why.
    pub skipped: Vec<String>,
}

/// Builds the policy for `tools` (the entries of `tools/list`, in server order).
pub fn build_policy(tools: &[Value], o: &Options) -> Scanned {
    let mut groups: [Vec<(String, Value)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut seen: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    for tool in tools {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            skipped.push(format!(
                "a tools/list entry without a string name: {}",
                excerpt(&tool.to_string())
            ));
            continue;
        };
        let shown = Value::String(name.to_owned()).to_string();
        if let Some(why) = unusable_key(name) {
            skipped.push(format!("{shown}: {why}; it falls under the default (deny)"));
            continue;
        }
        // Policy keys may not repeat, not even in another letter case.
        if let Some(prev) = seen.iter().find(|s| s.eq_ignore_ascii_case(name)) {
            let what = if prev == name {
                "listed twice by the server; the first entry is used".to_owned()
            } else {
                format!(
                    "differs from {} only in letter case, which policy keys may not; it falls under the default (deny)",
                    Value::String(prev.clone())
                )
            };
            skipped.push(format!("{shown}: {what}"));
            continue;
        }
        seen.push(name.to_owned());
        let (group, rule) = match classify(tool) {
            Class::ReadOnly => (
                0,
                json!({"action": "allow", "reason": "scan: read-only per server annotations (readOnlyHint)"}),
            ),
            Class::SafeWrite => (
                1,
                json!({"action": "allow", "rate_limit": o.rate_limit,
                       "reason": "scan: writes, but idempotent and not destructive per server annotations; rate-limited"}),
            ),
            Class::Risky { why } if o.approve_destructive => (
                2,
                json!({"action": "require_approval", "reason": format!("scan: {why}; needs approval")}),
            ),
            Class::Risky { why } => (
                2,
                json!({"action": "deny", "reason": format!("scan: {why}")}),
            ),
        };
        if let Some(g) = groups.get_mut(group) {
            g.push((name.to_owned(), rule));
        }
    }
    let [read_only, safe_write, risky] = &groups;
    let mut text = String::from("{\n  \"version\": \"1\",\n  \"default\": \"deny\",\n");
    if o.approve_destructive && !risky.is_empty() {
        text.push_str("  \"approval\": {\"cluster\": \"approvals\"},\n");
    }
    let rules: Vec<String> = groups
        .iter()
        .flatten()
        .map(|(name, rule)| format!("    {}: {}", Value::String(name.clone()), rule_text(rule)))
        .collect();
    if rules.is_empty() {
        text.push_str("  \"tools\": {}\n}\n");
    } else {
        text.push_str("  \"tools\": {\n");
        text.push_str(&rules.join(",\n"));
        text.push_str("\n  }\n}\n");
    }
    Scanned {
        policy: text,
        read_only: read_only.len(),
        safe_write: safe_write.len(),
        risky: risky.len(),
        skipped,
    }
}

/// A rule on one line, fields in the order action, rate_limit, reason.
fn rule_text(rule: &Value) -> String {
    let parts: Vec<String> = ["action", "rate_limit", "reason"]
        .iter()
        .filter_map(|k| rule.get(*k).map(|v| format!("\"{k}\": {v}")))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

// -------------------------------------------------------------------------------------------------
// Streamable HTTP client
// -------------------------------------------------------------------------------------------------

struct Client {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    session: Option<String>,
    protocol: Option<String>,
    next_id: u64,
}

/// True for a URL whose host is on this machine: never sent through an HTTP proxy from the environment.
pub fn is_loopback(url: &str) -> bool {
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    fn new(o: &Options) -> Client {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(o.timeout))
            .http_status_as_error(false)
            // Redirects are followed by hand (307/308 only, method and body kept).
            .max_redirects(0)
            .user_agent(concat!("mcp-policy-scan/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&o.url) {
            config = config.proxy(None);
        }
        Client {
            agent: config.build().into(),
            url: o.url.clone(),
            headers: o.headers.clone(),
            session: None,
            protocol: None,
            next_id: 1,
        }
    }

    /// Sends a request and returns its result (`Err` for transport, HTTP or JSON-RPC errors).
    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self.post(&body, Some(id), method)?;
        let Some(answer) = answer else {
            return Err(format!("{method}: the server sent no answer"));
        };
        if let Some(err) = answer.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "{method}: the server answered JSON-RPC error {code}: {msg}"
            ));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: the answer has neither result nor error"))
    }

    fn notify(&mut self, method: &str) -> Result<(), String> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        self.post(&body, None, method).map(|_| ())
    }

    /// POSTs one message; for a request (`id`), reads the answer as JSON or SSE until the response with `id`.
    fn post(&mut self, body: &Value, id: Option<u64>, what: &str) -> Result<Option<Value>, String> {
        let text = body.to_string();
        let mut hops = 0;
        let resp = loop {
            let mut req = self
                .agent
                .post(&self.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream");
            if let Some(s) = &self.session {
                req = req.header("mcp-session-id", s);
            }
            if let Some(p) = &self.protocol {
                req = req.header("mcp-protocol-version", p);
            }
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let resp = req
                .send(text.as_bytes())
                .map_err(|e| format!("{what}: POST {}: {e}", self.url))?;
            let status = resp.status().as_u16();
            if (status == 307 || status == 308) && hops < 5 {
                let to = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(|l| resolve(&self.url, l));
                if let Some(to) = to {
                    eprintln!("scan: {} redirects ({status}) to {to}", self.url);
                    self.url = to;
                    hops += 1;
                    continue;
                }
            }
            break resp;
        };
        let status = resp.status().as_u16();
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            if self.session.is_none() {
                self.session = Some(s.to_owned());
            }
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let reader = resp
            .into_body()
            .into_with_config()
            .limit(MAX_ANSWER_BYTES)
            .reader();
        if !(200..300).contains(&status) {
            let mut text = String::new();
            let _ = reader.take(2048).read_to_string(&mut text);
            let hint = match status {
                401 | 403 => "; the server wants credentials: pass them with --header 'authorization: Bearer …'",
                404 if self.session.is_some() => "; the server no longer knows this session",
                404 | 405 => "; is this the server's MCP endpoint (often /mcp)?",
                _ => "",
            };
            return Err(format!(
                "{what}: POST {} answered HTTP {status}{hint}{}",
                self.url,
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", excerpt(text.trim()))
                }
            ));
        }
        let Some(id) = id else {
            return Ok(None);
        };
        if content_type.starts_with("text/event-stream") {
            read_sse(reader, id).map_err(|e| format!("{what}: {e}"))
        } else if content_type.starts_with("application/json") {
            let mut buf = Vec::new();
            let mut reader = reader;
            reader
                .read_to_end(&mut buf)
                .map_err(|e| format!("{what}: reading the answer: {e}"))?;
            let v: Value = serde_json::from_slice(&buf)
                .map_err(|e| format!("{what}: the answer is not JSON ({e})"))?;
            Ok(find_response(v, id))
        } else {
            Err(format!(
                "{what}: the answer has content-type {:?}; a streamable HTTP MCP server answers application/json or text/event-stream",
                content_type
            ))
        }
    }

    /// Ends the session (politeness: the server may free it now). Errors are ignored.
    fn close(&self) {
        if let Some(s) = &self.session {
            let mut req = self.agent.delete(&self.url).header("mcp-session-id", s);
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let _ = req.call();
        }
    }
}

/// A `Location` against the URL it came from: absolute URLs as they are, absolute paths on the same origin.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    let origin = base.get(..origin_end).unwrap_or(base);
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        format!("{origin}/{location}")
    }
}

/// The response with `id` in a message or a batch.
fn find_response(v: Value, id: u64) -> Option<Value> {
    let is_it = |m: &Value| {
        m.get("id").and_then(Value::as_u64) == Some(id)
            && (m.get("result").is_some() || m.get("error").is_some())
    };
    match v {
        Value::Array(items) => items.into_iter().find(is_it),
        m if is_it(&m) => Some(m),
        _ => None,
    }
}

/// Reads an SSE stream (`mcp_policy::sse`: every line end, comments, multi-line data) until the event carrying
/// the response to `id`, as its bytes arrive (the server may keep the stream open after it); other events
/// (notifications, server requests, priming events without data) are skipped.
fn read_sse(mut reader: impl Read, id: u64) -> Result<Option<Value>, String> {
    let mut events = sse::Decoder::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the event stream: {e}")),
        };
        match buf.get(..n) {
            Some(chunk) if n > 0 => events.push(chunk),
            _ => events.finish(),
        }
        while let Some(data) = events.event() {
            if data.is_empty() {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                if let Some(found) = find_response(v, id) {
                    return Ok(Some(found));
                }
            }
        }
        if n == 0 {
            return Err("the event stream ended without the answer".into());
        }
    }
}

/// What the scan found on the server.
pub struct Server {
    pub name: String,
    pub protocol: String,
    pub tools: Vec<Value>,
}

fn fetch(o: &Options) -> Result<Server, String> {
    let mut c = Client::new(o);
    let init = c.request(
        "initialize",
        json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-policy-scan", "version": env!("CARGO_PKG_VERSION")}
        }),
    )?;
    let protocol = init
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(PROTOCOL_VERSION)
        .to_owned();
    c.protocol = Some(protocol.clone());
    let info = init.get("serverInfo");
    let name = [
        info.and_then(|i| i.get("name")).and_then(Value::as_str),
        info.and_then(|i| i.get("version")).and_then(Value::as_str),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    if init
        .get("capabilities")
        .and_then(|c| c.get("tools"))
        .is_none()
    {
        eprintln!(
            "scan: the server does not announce tools (no capabilities.tools); asking anyway"
        );
    }
    let result = (|| {
        c.notify("notifications/initialized")?;
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        let mut cursors = Vec::new();
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(cur) => json!({"cursor": cur}),
                None => json!({}),
            };
            let page = c.request("tools/list", params)?;
            match page.get("tools") {
                Some(Value::Array(list)) => tools.extend(list.iter().cloned()),
                _ => return Err("tools/list: the answer has no tools list".to_owned()),
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    if cursors.iter().any(|c: &String| c == next) {
                        return Err(format!(
                            "tools/list: the server gave the cursor {next:?} twice; stopping"
                        ));
                    }
                    cursors.push(next.to_owned());
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(tools),
            }
        }
        Err(format!("tools/list: more than {MAX_PAGES} pages; stopping"))
    })();
    c.close();
    Ok(Server {
        name: if name.is_empty() {
            "(unnamed server)".into()
        } else {
            name
        },
        protocol,
        tools: result?,
    })
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let server = match fetch(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scan: {e}");
            return ExitCode::from(1);
        }
    };
    let scanned = build_policy(&server.tools, o);
    // The policy must load as the filter would load it; anything else is a bug here.
    if let Err(errs) = policy::parse(scanned.policy.as_bytes()) {
        eprintln!("scan: the generated policy does not validate (a bug in scan): {errs}");
        return ExitCode::from(1);
    }
    eprintln!(
        "scan: {}: {} (protocol {}), {} tool{}",
        o.url,
        server.name,
        server.protocol,
        server.tools.len(),
        if server.tools.len() == 1 { "" } else { "s" }
    );
    let risky_action = if o.approve_destructive {
        "require_approval"
    } else {
        "deny"
    };
    eprintln!(
        "scan: {} allow (read-only), {} allow with rate limit {} (idempotent, not destructive), {} {risky_action} (destructive, or not annotated as safe); default deny",
        scanned.read_only, scanned.safe_write, o.rate_limit, scanned.risky
    );
    for s in &scanned.skipped {
        eprintln!("scan: not in the policy: {s}");
    }
    eprintln!(
        "scan: annotations are hints from the server, not guarantees: a server can label any tool read-only. \
         Review every rule before use (mcp-policy explain FILE --tool NAME shows what a rule does)."
    );
    if o.approve_destructive && scanned.risky > 0 {
        eprintln!(
            "scan: approval is asked from the Envoy cluster \"approvals\" (\"approval\": {{\"cluster\": \"approvals\"}}): \
             a placeholder. Define that cluster for your approval service in Envoy, or change approval.cluster \
             (docs/approvals.md, \"Require approval\"; examples/approval_service.py is an example service)."
        );
    }
    match &o.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &scanned.policy) {
                eprintln!("scan: cannot write {path}: {e}");
                return ExitCode::from(1);
            }
            eprintln!("scan: wrote {path}");
            let (file, url) = (shell_word(path), shell_word(&o.url));
            eprintln!(
                "scan: next: review it, `mcp-policy check {file}`, then `mcp-policy render {file} --format envoy \
                 --upstream {url} --out envoy-mcp.yaml` writes an Envoy bootstrap that enforces it (README, \"Try it\")"
            );
        }
        None => out.line(format_args!("{}", scanned.policy.trim_end())),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Options, String> {
        match crate::testing::parse(&[&["scan"], args].concat())? {
            crate::Command::Scan(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    fn tool(name: &str, ann: Value) -> Value {
        json!({"name": name, "inputSchema": {"type": "object"}, "annotations": ann})
    }

    #[test]
    fn classification_follows_mcp_defaults() {
        let c = |ann: Value| classify(&tool("t", ann));
        assert_eq!(c(json!({"readOnlyHint": true})), Class::ReadOnly);
        // readOnlyHint wins: destructiveHint only means something for tools that write.
        assert_eq!(
            c(json!({"readOnlyHint": true, "destructiveHint": true})),
            Class::ReadOnly
        );
        assert_eq!(
            c(json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": true})),
            Class::SafeWrite
        );
        let risky = |ann: Value| match c(ann) {
            Class::Risky { why } => why,
            other => panic!("{other:?}"),
        };
        assert!(risky(
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true})
        )
        .starts_with("destructive per server annotations"));
        // Idempotent but silent on destructiveHint: MCP's default is destructive.
        assert_eq!(
            risky(json!({"readOnlyHint": false, "idempotentHint": true})),
            "may write; idempotent, but destructiveHint not given (MCP default: destructive)"
        );
        assert_eq!(
            risky(json!({"readOnlyHint": false})),
            "may write; destructiveHint not given (MCP default: destructive)"
        );
        assert!(risky(json!({"destructiveHint": false})).contains("not idempotent"));
        assert!(
            risky(json!({"destructiveHint": false, "idempotentHint": "yes"}))
                .contains("not idempotent")
        );
        assert!(classify(&json!({"name": "t"})) != Class::ReadOnly);
        assert!(risky(json!(null)).starts_with("no annotations"));
        // Strings are not booleans.
        assert!(matches!(
            c(json!({"readOnlyHint": "true"})),
            Class::Risky { .. }
        ));
    }

    #[test]
    fn policy_groups_and_validates() {
        let o = opts(&["http://127.0.0.1:1/mcp"]).unwrap();
        let tools = vec![
            tool(
                "delete_run",
                json!({"readOnlyHint": false, "destructiveHint": true}),
            ),
            tool("get_run", json!({"readOnlyHint": true})),
            tool(
                "set_tag",
                json!({"destructiveHint": false, "idempotentHint": true}),
            ),
            tool("get_*", json!({"readOnlyHint": true})),
            tool("Get_Run", json!({"readOnlyHint": true})),
            tool("get_run", json!({"readOnlyHint": false})),
            json!({"title": "no name"}),
        ];
        let s = build_policy(&tools, &o);
        assert_eq!(
            s.policy,
            r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "get_run": {"action": "allow", "reason": "scan: read-only per server annotations (readOnlyHint)"},
    "set_tag": {"action": "allow", "rate_limit": "60/minute", "reason": "scan: writes, but idempotent and not destructive per server annotations; rate-limited"},
    "delete_run": {"action": "deny", "reason": "scan: destructive per server annotations (destructiveHint)"}
  }
}
"#
        );
        assert_eq!((s.read_only, s.safe_write, s.risky), (1, 1, 1));
        assert_eq!(s.skipped.len(), 4, "{:?}", s.skipped);
        assert!(s.skipped[0].starts_with("\"get_*\": its name contains '*'"));
        assert!(s.skipped[1].contains("differs from \"get_run\" only in letter case"));
        assert!(s.skipped[2].contains("listed twice"));
        assert!(s.skipped[3].starts_with("a tools/list entry without a string name"));
        policy::parse(s.policy.as_bytes()).unwrap();

        let o = opts(&[
            "http://127.0.0.1:1/mcp",
            "--approve-destructive",
            "--rate-limit",
            "5/hour",
        ])
        .unwrap();
        let s = build_policy(&tools, &o);
        let p: Value = serde_json::from_str(&s.policy).unwrap();
        assert_eq!(p["approval"], json!({"cluster": "approvals"}));
        assert_eq!(p["tools"]["delete_run"]["action"], "require_approval");
        assert_eq!(p["tools"]["set_tag"]["rate_limit"], "5/hour");
        policy::parse(s.policy.as_bytes()).unwrap();
        // Nothing risky: no approval section needed.
        let s = build_policy(&tools[1..2], &o);
        assert!(!s.policy.contains("approval"));
        let s = build_policy(&[], &o);
        assert_eq!(
            s.policy,
            "{\n  \"version\": \"1\",\n  \"default\": \"deny\",\n  \"tools\": {}\n}\n"
        );
        policy::parse(s.policy.as_bytes()).unwrap();
    }

    #[test]
    fn arguments() {
        let o = opts(&[
            "http://127.0.0.1:8001/mcp",
            "--header",
            "Authorization: Bearer a:b",
            "-H",
            "x-k:v",
            "--out",
            "p.json",
            "--timeout",
            "2.5",
        ])
        .unwrap();
        assert_eq!(
            o.headers,
            vec![
                ("Authorization".into(), "Bearer a:b".into()),
                ("x-k".into(), "v".into())
            ]
        );
        assert_eq!(o.out.as_deref(), Some("p.json"));
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.rate_limit, "60/minute");
        let o = opts(&["HTTPS://example.com/mcp", "-o", "q.json"]).unwrap();
        assert_eq!(o.out.as_deref(), Some("q.json"));
        assert_eq!(o.timeout, Duration::from_secs(30));
        assert!(o.headers.is_empty() && !o.approve_destructive);
        // Usage errors: clap's messages for the command line's grammar, ours for what the values mean.
        let err = |args: &[&str]| opts(args).unwrap_err();
        assert!(err(&[]).contains("required arguments were not provided:\n  <URL>"));
        assert!(err(&["ftp://x/mcp"]).contains(
            "invalid value 'ftp://x/mcp' for '<URL>': the URL must start with http:// or https://"
        ));
        assert!(err(&["http://a b/mcp"]).contains("not a valid URL"));
        assert!(
            err(&["http://a/mcp", "http://b/mcp"]).contains("unexpected argument 'http://b/mcp'")
        );
        assert!(err(&["http://a/mcp", "--header", "novalue"])
            .contains("for '--header <NAME: VALUE>': a header is written 'NAME: VALUE'"));
        assert!(err(&["http://a/mcp", "--header", "bad name: v"])
            .contains("invalid header name \"bad name\""));
        assert!(err(&["http://a/mcp", "-H", "k: a\u{1}b"])
            .contains("the value of header k has control characters"));
        assert!(err(&["http://a/mcp", "--rate-limit", "10/fortnight"])
            .contains("for '--rate-limit <LIMIT>': not a valid rate limit"));
        for t in ["0", "-1", "3601", "NaN", "inf", "soon"] {
            assert!(
                err(&["http://a/mcp", "--timeout", t])
                    .contains(&format!("invalid value '{t}' for '--timeout <SECONDS>'")),
                "{t}"
            );
        }
        assert!(err(&["http://a/mcp", "--frob"]).contains("unexpected argument '--frob'"));
        assert!(err(&["http://a/mcp", "--out"]).contains("a value is required for '--out <FILE>'"));
    }

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:8001/mcp",
            "http://localhost/mcp",
            "http://[::1]:3001/mcp",
            "http://127.9.9.9/",
        ] {
            assert!(is_loopback(u), "{u}");
        }
        for u in ["http://10.0.0.1/mcp", "https://example.com/mcp"] {
            assert!(!is_loopback(u), "{u}");
        }
    }

    #[test]
    fn sse_and_json_answers() {
        let stream = "id: a\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n\
                      event: message\r\ndata: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":2,\"result\":{\"ok\":true}}\r\n\r\n";
        let got = read_sse(stream.as_bytes(), 2).unwrap().unwrap();
        assert_eq!(got["result"]["ok"], true);
        assert!(read_sse(stream.as_bytes(), 3)
            .unwrap_err()
            .contains("ended without"));
        // The last event without a closing blank line still counts.
        let got = read_sse(
            "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}".as_bytes(),
            1,
        )
        .unwrap();
        assert!(got.is_some());
        let batch = json!([{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}},{"jsonrpc":"2.0","id":2,"result":{}}]);
        assert_eq!(find_response(batch, 2).unwrap()["result"], json!({}));
    }

    /// A reader that hands out its bytes `size` at a time, as a network stream may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn sse_with_bare_cr_line_ends() {
        // The standard's third line end: a bare `\r`. Before the shared reader, scan saw one long line here and
        // never found the answer.
        let stream = "id: a\rdata: \r\revent: message\rdata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\r\
                      event: message\rdata: {\"jsonrpc\":\"2.0\",\rdata: \"id\":2,\"result\":{\"ok\":true}}\r\r";
        for size in [1, 2, 5, stream.len()] {
            let got = read_sse(Trickle(stream.as_bytes(), size), 2)
                .unwrap()
                .unwrap();
            assert_eq!(got["result"]["ok"], true, "in chunks of {size}");
        }
        assert!(read_sse(stream.as_bytes(), 3)
            .unwrap_err()
            .contains("ended without"));
    }

    #[test]
    fn sse_answers_are_found_before_the_stream_ends() {
        // The answer, then a stream that would block: read_sse must not read past the event it waits for.
        struct Answer<'a>(Trickle<'a>);
        impl Read for Answer<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.read(buf)? {
                    0 => panic!("read past the answer"),
                    n => Ok(n),
                }
            }
        }
        let stream =
            b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\r\n\r\n";
        assert!(read_sse(Answer(Trickle(stream, 3)), 7).unwrap().is_some());
        let cr = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\r\r";
        assert!(read_sse(Answer(Trickle(cr, 1)), 7).unwrap().is_some());
    }

    #[test]
    fn redirects_resolve() {
        assert_eq!(resolve("http://h:1/mcp", "/mcp/"), "http://h:1/mcp/");
        assert_eq!(resolve("http://h:1/mcp", "https://o/x"), "https://o/x");
        assert_eq!(resolve("http://h:1", "/x"), "http://h:1/x");
    }
}
