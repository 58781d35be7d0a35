//! A [`Host`] for tests: it answers from fields the test sets, and records every host call it would have
//! made in Envoy (`calls`), so that tests pin both what the filter does and what it costs.

use super::{Action, Counter, Flow, Host};
use crate::header_map::{self, HeaderMap};
use crate::limits::memory::MemoryStore;
use crate::limits::{SetError, Store, StoreError};
use crate::policy::Policy;
use crate::request::Event;
use log::Level;
use std::rc::Rc;
use std::time::Duration;

pub struct FakeHost {
    /// The request headers; `None`: the host refuses to give them.
    pub request_headers: Option<Vec<(String, Vec<u8>)>>,
    /// Stream properties by path (`source.address`).
    pub properties: Vec<(String, Vec<u8>)>,
    pub request_body: Result<Option<Vec<u8>>, String>,
    /// Make these host calls fail.
    pub reply_fails: bool,
    pub resume_fails: bool,
    pub callout_fails: bool,
    pub set_body_fails: bool,
    /// The token the next callout gets.
    pub next_token: u32,
    /// What the reported callout answered: `:status` and body.
    pub callout_answer: (Option<u32>, Vec<u8>),
    /// Make gRPC calls fail to start.
    pub grpc_fails: bool,
    /// The message of the reported gRPC answer.
    pub grpc_answer: Vec<u8>,
    /// gRPC calls: token, cluster, service/method, timeout in ms, message.
    pub grpc_calls: Vec<(u32, String, String, u128, Vec<u8>)>,
    /// The response headers (updated by the filter's changes) and body.
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    pub now_nanos: u64,
    pub audit: bool,
    pub store: FakeStore,

    /// Every host call, in order, one line each.
    pub calls: Vec<String>,
    pub events: Vec<Event>,
    /// Local replies: status and body.
    pub replies: Vec<(u32, String)>,
    /// Headers of the local replies beyond the two every reply has.
    pub reply_headers: Vec<(String, String)>,
    /// Callouts: token, cluster, body.
    pub callouts: Vec<(u32, String, String)>,
    pub logs: Vec<(Level, String)>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            request_headers: Some(Vec::new()),
            properties: vec![("source.address".into(), b"10.0.0.7:41000".to_vec())],
            request_body: Ok(None),
            reply_fails: false,
            resume_fails: false,
            callout_fails: false,
            set_body_fails: false,
            next_token: 1,
            callout_answer: (Some(200), br#"{"approved": true}"#.to_vec()),
            grpc_fails: false,
            grpc_answer: vec![0x08, 0x01],
            grpc_calls: Vec::new(),
            response_headers: Vec::new(),
            response_body: Vec::new(),
            now_nanos: 1_700_000_000_000_000_000,
            audit: true,
            store: FakeStore::default(),
            calls: Vec::new(),
            events: Vec::new(),
            replies: Vec::new(),
            reply_headers: Vec::new(),
            callouts: Vec::new(),
            logs: Vec::new(),
        }
    }
}

impl FakeHost {
    /// A request with these headers (`:method` POST is added) and this body.
    pub fn request(headers: &[(&str, &str)], body: &str) -> Self {
        let mut h: Vec<(String, Vec<u8>)> = vec![(":method".into(), b"POST".to_vec())];
        h.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        FakeHost {
            request_headers: Some(h),
            request_body: Ok(Some(body.as_bytes().to_vec())),
            ..FakeHost::default()
        }
    }

    /// The upstream's answer.
    pub fn respond_with(&mut self, status: u32, headers: &[(&str, &str)], body: &str) {
        self.response_headers = vec![(":status".into(), status.to_string())];
        self.response_headers
            .extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.response_body = body.as_bytes().to_vec();
    }

    /// The body length the host reports.
    pub fn body_len(&self) -> usize {
        match &self.request_body {
            Ok(Some(b)) => b.len(),
            _ => 0,
        }
    }

    /// The labels of the recorded events.
    pub fn labels(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.decision.as_str()).collect()
    }

    /// The JSON of the one local reply.
    pub fn reply_json(&self) -> (u32, serde_json::Value) {
        assert_eq!(self.replies.len(), 1, "{:?}", self.replies);
        let (status, body) = &self.replies[0];
        (*status, serde_json::from_str(body).unwrap())
    }

    /// Forgets the calls made so far.
    pub fn clear_calls(&mut self) -> Vec<String> {
        std::mem::take(&mut self.calls)
    }

    fn call(&mut self, line: String) {
        self.calls.push(line);
    }
}

/// `name=value` or `name` (a removal).
fn change(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}"),
        None => format!("-{name}"),
    }
}

/// Shared data for tests: a [`MemoryStore`] (its fields through `Deref`) whose keys under `failing` fail every
/// get and set, as a host call can.
#[derive(Default)]
pub struct FakeStore {
    pub memory: MemoryStore,
    /// Gets and sets of keys starting with this fail.
    pub failing: Option<&'static str>,
}

impl FakeStore {
    fn fails(&self, key: &str) -> bool {
        self.failing.is_some_and(|p| key.starts_with(p))
    }
}

impl std::ops::Deref for FakeStore {
    type Target = MemoryStore;
    fn deref(&self) -> &MemoryStore {
        &self.memory
    }
}

impl Store for FakeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        if self.fails(key) {
            return Err(StoreError(format!(
                "get_shared_data({key}): InternalFailure"
            )));
        }
        self.memory.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if self.fails(key) {
            return Err(SetError::Other(format!(
                "set_shared_data({key}): InternalFailure"
            )));
        }
        self.memory.set(key, value, cas)
    }
}

impl Host for FakeHost {
    type Store = FakeStore;

    fn request_headers(&mut self) -> Option<HeaderMap> {
        self.call("request_headers".into());
        let pairs = self.request_headers.as_ref()?;
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        HeaderMap::parse(header_map::serialise(&pairs))
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        let path = path.join(".");
        self.call(format!("property {path}"));
        self.properties
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.clone())
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.call(format!("request_header {}", change(name, value)));
    }

    fn request_body(&mut self, size: usize) -> Result<Option<Vec<u8>>, String> {
        self.call(format!("request_body {size}"));
        self.request_body.clone()
    }

    fn send_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String> {
        self.call(format!("send_reply {status}"));
        assert_eq!(
            headers[..2],
            [
                ("content-type", "application/json"),
                ("x-mcp-policy", "rejected")
            ]
        );
        self.reply_headers.extend(
            headers[2..]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        if self.reply_fails {
            return Err("BadArgument".into());
        }
        self.replies
            .push((status, String::from_utf8(body.to_vec()).unwrap()));
        Ok(())
    }

    fn reset_request(&mut self) {
        self.call("reset_request".into());
    }

    fn resume_request(&mut self) -> Result<(), String> {
        self.call("resume_request".into());
        if self.resume_fails {
            return Err("BadArgument".into());
        }
        Ok(())
    }

    fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, String> {
        self.call(format!("http_callout {cluster} {}ms", timeout.as_millis()));
        assert!(headers.contains(&(":method", "POST")));
        if self.callout_fails {
            return Err("BadArgument".into());
        }
        let token = self.next_token;
        self.next_token += 1;
        self.callouts.push((
            token,
            cluster.to_owned(),
            String::from_utf8(body.to_vec()).unwrap(),
        ));
        Ok(token)
    }

    fn callout_response(&mut self, body_size: usize) -> (Option<u32>, Vec<u8>) {
        self.call(format!("callout_response {body_size}"));
        self.callout_answer.clone()
    }

    fn grpc_callout(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, String> {
        self.call(format!("grpc_callout {cluster} {}ms", timeout.as_millis()));
        if self.grpc_fails {
            return Err("ParseFailure".into());
        }
        let token = self.next_token;
        self.next_token += 1;
        self.grpc_calls.push((
            token,
            cluster.to_owned(),
            format!("{service}/{method}"),
            timeout.as_millis(),
            message.to_vec(),
        ));
        Ok(token)
    }

    fn grpc_response(&mut self, size: usize) -> Vec<u8> {
        self.call(format!("grpc_response {size}"));
        self.grpc_answer.clone()
    }

    fn response_header(&mut self, name: &str) -> Option<String> {
        self.call(format!("response_header {name}"));
        self.response_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.call(format!("response_header {}", change(name, value)));
        self.response_headers.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.response_headers.push((name.into(), v.into()));
        }
    }

    fn response_body(&mut self, size: usize) -> Vec<u8> {
        self.call(format!("response_body {size}"));
        self.response_body.clone()
    }

    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), String> {
        self.call(format!("set_response_body {size}"));
        if self.set_body_fails {
            return Err("BadArgument".into());
        }
        self.response_body = body.to_vec();
        Ok(())
    }

    fn reset_response(&mut self) {
        self.call("reset_response".into());
    }

    fn now_nanos(&mut self) -> u64 {
        self.call("now".into());
        self.now_nanos
    }

    fn audit_enabled(&mut self) -> bool {
        // The adapter asks Envoy at most once a second: not a host call per request.
        self.audit
    }

    fn store(&self) -> &FakeStore {
        &self.store
    }

    fn record(&mut self, event: &Event) {
        // Envoy: one increment per counter (the decision's total, the tool's), and the audit line.
        self.call(format!("record {}", event.decision));
        self.events.push(event.clone());
    }

    fn count(&mut self, counter: Counter) {
        self.call(format!("count {}", counter.as_str()));
    }

    fn log(&mut self, level: Level, message: &str) {
        self.call(format!("log {level}"));
        self.logs.push((level, message.to_owned()));
    }
}

/// The policy of a test, loaded as the filter loads it (rate-limit state set up in `host`'s store).
pub fn load(host: &FakeHost, json: &str) -> Option<Rc<Policy>> {
    let (p, _) = super::configure(json.as_bytes(), &host.store).unwrap();
    Some(Rc::new(p))
}

/// A `tools/call` body.
pub fn tools_call(id: u32, name: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}"}}}}"#)
}

/// Envoy's request callbacks: the headers, then (unless they were answered) the whole body at once.
pub fn send(flow: &mut Flow, host: &mut FakeHost) -> (Action, Action) {
    let headers = flow.on_request_headers(host, false);
    if !host.replies.is_empty() {
        return (headers, Action::Pause);
    }
    let body = flow.on_request_body(host, host.body_len(), true);
    (headers, body)
}

/// The upstream's answer (200, JSON) to a forwarded call goes through without a single host call: not even its
/// status is read.
pub fn answer_untouched(flow: &mut Flow, host: &mut FakeHost) {
    host.clear_calls();
    host.respond_with(200, &[("content-type", "application/json")], "{}");
    assert_eq!(flow.on_response_headers(host), Action::Continue);
    assert_eq!(flow.on_response_body(host, 2, true), Action::Continue);
    flow.on_done(host);
    assert!(host.calls.is_empty(), "{:?}", host.calls);
}
