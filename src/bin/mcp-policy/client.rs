//! The client side of MCP's streamable HTTP transport, as much as `tools/list` needs (`scan`, `pin`):
//! `initialize` (POST; the answer is JSON or an SSE stream), the `mcp-session-id` the server hands out,
//! `notifications/initialized`, `tools/list` following `nextCursor`, and a closing `DELETE` of the session.
//! Answers are kept as the server wrote them (`RawValue`): a tool's pin is a hash of its own text, numbers
//! spelt as sent (serde_json's `Value` would read long ones approximately).

use mcp_policy::sse;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

/// The MCP protocol version asked for; the server answers with the one it speaks, and that one is sent in
/// `MCP-Protocol-Version` afterwards. tools/list is the same in every version.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// The most bytes read from one answer.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;
/// The most tools/list pages followed.
const MAX_PAGES: usize = 10_000;

/// Where the server is and how to reach it: the arguments `scan` and `pin` share.
#[derive(Debug, clap::Args)]
pub struct Endpoint {
    /// The server's MCP endpoint (http:// or https://), e.g. http://127.0.0.1:8001/mcp
    #[arg(value_name = "URL", value_parser = parse_url)]
    pub url: String,
    /// Send this header with every request (repeatable), e.g. 'authorization: Bearer …'
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
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

/// At most 200 characters of `s`.
pub fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

struct Client {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    /// The command, for what it prints (`scan`, `pin`).
    who: &'static str,
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
    fn new(o: &Endpoint, who: &'static str) -> Client {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(o.timeout))
            .http_status_as_error(false)
            // Redirects are followed by hand (307/308 only, method and body kept).
            .max_redirects(0)
            .user_agent(format!("mcp-policy-{who}/{}", env!("CARGO_PKG_VERSION")));
        if is_loopback(&o.url) {
            config = config.proxy(None);
        }
        Client {
            agent: config.build().into(),
            url: o.url.clone(),
            headers: o.headers.clone(),
            who,
            session: None,
            protocol: None,
            next_id: 1,
        }
    }

    /// Sends a request and returns its result as the server wrote it (`Err` for transport, HTTP or JSON-RPC
    /// errors).
    fn request(&mut self, method: &str, params: Value) -> Result<Box<RawValue>, String> {
        #[derive(Deserialize)]
        struct Answer {
            result: Option<Box<RawValue>>,
            error: Option<Value>,
        }
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self.post(&body, Some(id), method)?;
        let Some(answer) = answer else {
            return Err(format!("{method}: the server sent no answer"));
        };
        let answer: Answer = serde_json::from_str(answer.get())
            .map_err(|e| format!("{method}: unreadable answer ({e})"))?;
        if let Some(err) = answer.error {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "{method}: the server answered JSON-RPC error {code}: {msg}"
            ));
        }
        answer
            .result
            .ok_or_else(|| format!("{method}: the answer has neither result nor error"))
    }

    fn notify(&mut self, method: &str) -> Result<(), String> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        self.post(&body, None, method).map(|_| ())
    }

    /// POSTs one message; for a request (`id`), reads the answer as JSON or SSE until the response with `id`.
    fn post(
        &mut self,
        body: &Value,
        id: Option<u64>,
        what: &str,
    ) -> Result<Option<Box<RawValue>>, String> {
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
                    eprintln!("{}: {} redirects ({status}) to {to}", self.who, self.url);
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
            let mut buf = String::new();
            let mut reader = reader;
            reader
                .read_to_string(&mut buf)
                .map_err(|e| format!("{what}: reading the answer: {e}"))?;
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&buf) {
                return Err(format!("{what}: the answer is not JSON ({e})"));
            }
            Ok(find_response(&buf, id))
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

/// The response with `id` in `text`, a message or a batch, as the server wrote it.
fn find_response(text: &str, id: u64) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Probe {
        id: Option<Value>,
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    let is_it = |m: &RawValue| {
        serde_json::from_str::<Probe>(m.get()).is_ok_and(|p| {
            p.id.as_ref().and_then(Value::as_u64) == Some(id)
                && (p.result.is_some() || p.error.is_some())
        })
    };
    let text = text.trim_start();
    if text.starts_with('[') {
        let batch: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
        return batch.into_iter().find(|m| is_it(m));
    }
    let message: Box<RawValue> = serde_json::from_str(text).ok()?;
    is_it(&message).then_some(message)
}

/// Reads an SSE stream (`mcp_policy::sse`: every line end, comments, multi-line data) until the event carrying
/// the response to `id`, as its bytes arrive (the server may keep the stream open after it); other events
/// (notifications, server requests, priming events without data) are skipped.
fn read_sse(mut reader: impl Read, id: u64) -> Result<Option<Box<RawValue>>, String> {
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
            if let Some(found) = find_response(&data, id) {
                return Ok(Some(found));
            }
        }
        if n == 0 {
            return Err("the event stream ended without the answer".into());
        }
    }
}

/// What the server says about itself and its tools.
pub struct Server {
    pub name: String,
    pub protocol: String,
    /// Each entry of its tools/list answers, as the server wrote it (a pin is a hash of exactly this).
    pub tools: Vec<Box<RawValue>>,
}

impl Server {
    /// The tools as JSON values (an entry that is not JSON cannot be: the answer was read as JSON).
    pub fn values(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|t| serde_json::from_str(t.get()).unwrap_or(Value::Null))
            .collect()
    }
}

/// Connects to the server at `e` (initialize, initialized), lists its tools following `nextCursor`, and closes
/// the session. `who` names the command in what is printed.
pub fn fetch(e: &Endpoint, who: &'static str) -> Result<Server, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        tools: Option<Vec<Box<RawValue>>>,
        next_cursor: Option<Value>,
    }
    let mut c = Client::new(e, who);
    let init = c.request(
        "initialize",
        json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": format!("mcp-policy-{who}"), "version": env!("CARGO_PKG_VERSION")}
        }),
    )?;
    let init: Value = serde_json::from_str(init.get()).unwrap_or(Value::Null);
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
            "{who}: the server does not announce tools (no capabilities.tools); asking anyway"
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
            let no_list = || "tools/list: the answer has no tools list".to_owned();
            let page: Page = serde_json::from_str(page.get()).map_err(|_| no_list())?;
            tools.extend(page.tools.ok_or_else(no_list)?);
            match page.next_cursor.as_ref().and_then(Value::as_str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(raw: &RawValue) -> Value {
        serde_json::from_str(raw.get()).unwrap()
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
        assert_eq!(value(&got)["result"]["ok"], true);
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
        let batch = r#"[{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}},{"jsonrpc":"2.0","id":2,"result":{ "a" : 1.50 }}]"#;
        // As the server wrote it: the number's spelling and the spaces are kept.
        assert_eq!(
            find_response(batch, 2).unwrap().get(),
            r#"{"jsonrpc":"2.0","id":2,"result":{ "a" : 1.50 }}"#
        );
        assert!(find_response(batch, 3).is_none());
        assert!(find_response("{\"id\":2}", 2).is_none());
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
            assert_eq!(value(&got)["result"]["ok"], true, "in chunks of {size}");
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
