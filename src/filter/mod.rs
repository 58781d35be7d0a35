//! The proxy-wasm glue, and only that: read the configuration, gather headers and body bytes, call the pure
//! core ([`crate::request`]), act on its answer. No policy logic lives here.
//!
//! Host calls go through `proxy_wasm::hostcalls` (which return `Result`) rather than the SDK's trait helpers
//! (which unwrap): a host error must fail the request closed, not trap the worker.

use crate::approval::{read_answer, Answer};
use crate::limits::{self, Limiter, Reservation, SetError, Store, StoreError};
use crate::policy::{self, Policy};
use crate::reply::{self, Reply};
use crate::request::{self, Env, Head, Outcome};
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// [`Store`] over proxy-wasm shared data: one map per VM id, shared by every worker of the Envoy process.
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), Some(cas))) => Ok(Some((v, cas))),
            Ok((None, Some(cas))) => Ok(Some((Vec::new(), cas))),
            Ok((_, None)) => Ok(None),
            Err(e) => Err(StoreError(format!("get_shared_data({key}): {e:?}"))),
        }
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(e) => Err(SetError::Other(format!("set_shared_data({key}): {e:?}"))),
        }
    }
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { policy: None }) });
}}

struct Root {
    policy: Option<Rc<Policy>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                error!("mcp-policy: cannot read the plugin configuration: {e:?}");
                return false;
            }
        };
        match policy::parse(&bytes) {
            Ok(p) => {
                if p.has_limits() {
                    if let Err(e) = limits::init_store(&SharedData) {
                        error!("mcp-policy: cannot initialise rate-limit state in shared data: {e}");
                        return false;
                    }
                }
                info!("mcp-policy: policy loaded ({} rules, default {})", p.rules().len(), p.default.as_str());
                self.policy = Some(Rc::new(p));
                true
            }
            Err(errs) => {
                error!("mcp-policy: {errs}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            policy: self.policy.clone(),
            head: Head::default(),
            body_size: 0,
            done: false,
            reservations: Vec::new(),
            held: Vec::new(),
            callouts: Vec::new(),
            answers: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    /// `None` only if Envoy ran the filter without an accepted configuration: every body is then refused.
    policy: Option<Rc<Policy>>,
    head: Head,
    /// Bytes buffered so far (Envoy reports the running total while we hold the body).
    body_size: usize,
    /// The request has been decided (forwarded or answered); later callbacks just continue.
    done: bool,
    /// Rate-limit units this forwarded request took: given back if the upstream answers 5xx.
    reservations: Vec<Reservation>,
    /// The body, kept only while approval callouts are out.
    held: Vec<u8>,
    /// Approval callouts in flight: (token, index into `answers`).
    callouts: Vec<(u32, usize)>,
    answers: Vec<Option<Answer>>,
}

fn header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
}

impl Http {
    fn respond(&mut self, r: &Reply) -> Action {
        self.done = true;
        let headers = vec![("content-type", "application/json"), ("x-mcp-policy", "rejected")];
        if let Err(e) = hostcalls::send_http_response(r.status, headers, Some(r.body.as_bytes())) {
            warn!("mcp-policy: could not send the local reply ({e:?}); resetting the request");
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    fn fail_closed(&mut self, why: &str) -> Action {
        error!("mcp-policy: {why}; refusing the request");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":{},"message":"mcp-policy could not inspect the request: {why}"}}}}"#,
            reply::INVALID_REQUEST
        );
        self.respond(&Reply { status: 500, body })
    }

    /// The whole body is in: decide.
    fn finish(&mut self) -> Action {
        self.done = true;
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed("no policy is loaded");
        };
        if self.body_size == 0 {
            return Action::Continue;
        }
        let bytes = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, self.body_size) {
            Ok(Some(b)) => b,
            Ok(None) => return self.fail_closed("the request body could not be read"),
            Err(e) => return self.fail_closed(&format!("reading the request body failed ({e:?})")),
        };
        let env = Env { store: &SharedData, now: now_secs() };
        match request::check_body(&policy, &self.head, &bytes, &env) {
            Outcome::Forward(reservations) => {
                self.reservations = reservations;
                Action::Continue
            }
            Outcome::Reply(r) => self.respond(&r),
            Outcome::Approve { reservations, asks } => {
                self.reservations = reservations;
                self.ask_approval(&policy, asks, bytes)
            }
        }
    }

    fn limiter<'a>(policy: &Policy, store: &'a SharedData) -> Limiter<'a, SharedData> {
        Limiter { store, max_tracked: policy.identity.max_tracked, hold_secs: policy.hold_secs() }
    }

    fn give_back(&mut self) {
        if let Some(p) = &self.policy {
            Self::limiter(p, &SharedData).release(&self.reservations);
        }
        self.reservations.clear();
    }

    /// Sends one callout per ask; the request waits (other requests carry on) until every answer is in.
    fn ask_approval(&mut self, policy: &Policy, asks: Vec<String>, bytes: Vec<u8>) -> Action {
        self.answers = vec![None; asks.len()];
        let Some(cfg) = policy.approval.clone() else {
            for a in &mut self.answers {
                *a = Some(Answer::Unavailable("no approval service is configured".into()));
            }
            return self.conclude(bytes);
        };
        for (i, body) in asks.iter().enumerate() {
            let headers = cfg.headers(body.len());
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let timeout = Duration::from_millis(cfg.timeout_ms);
            match hostcalls::dispatch_http_call(&cfg.cluster, headers, Some(body.as_bytes()), vec![], timeout) {
                Ok(token) => self.callouts.push((token, i)),
                Err(e) => {
                    warn!("mcp-policy: approval callout to cluster '{}' failed: {e:?}", cfg.cluster);
                    if let Some(a) = self.answers.get_mut(i) {
                        *a = Some(Answer::Unavailable(format!(
                            "the approval callout to Envoy cluster '{}' was refused ({e:?}); is the cluster defined?",
                            cfg.cluster
                        )));
                    }
                }
            }
        }
        if self.callouts.is_empty() {
            return self.conclude(bytes);
        }
        self.held = bytes;
        Action::Pause
    }

    /// Every answer is in: forward, or reply and give the rate-limit units back.
    fn conclude(&mut self, bytes: Vec<u8>) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed("no policy is loaded");
        };
        let answers: Vec<Answer> = self
            .answers
            .drain(..)
            .map(|a| a.unwrap_or_else(|| Answer::Unavailable("no answer".into())))
            .collect();
        match request::conclude(&policy, &bytes, &answers) {
            Ok(()) => Action::Continue,
            Err(r) => {
                self.give_back();
                self.respond(&r)
            }
        }
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(pos) = self.callouts.iter().position(|(t, _)| *t == token_id) else {
            return;
        };
        let (_, index) = self.callouts.swap_remove(pos);
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        if let Some(a) = self.answers.get_mut(index) {
            *a = Some(read_answer(status, &body));
        }
        if self.callouts.is_empty() {
            let bytes = std::mem::take(&mut self.held);
            if self.conclude(bytes) == Action::Continue {
                if let Err(e) = hostcalls::resume_http_request() {
                    warn!("mcp-policy: could not resume the request after approval ({e:?})");
                }
            }
        }
    }

    fn on_done(&mut self) -> bool {
        // The client went away while approval was pending: the call was never forwarded.
        if !self.callouts.is_empty() {
            self.callouts.clear();
            self.give_back();
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            // No body (a GET for the SSE stream, a DELETE of a session): nothing to inspect.
            self.done = true;
            return Action::Continue;
        }
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed("no policy is loaded");
        };
        let identity = if policy.has_limits() || policy.approval.is_some() {
            let source = hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            policy.identity.resolve(header, source.as_deref())
        } else {
            String::new()
        };
        self.head = Head {
            request_id: header("x-request-id"),
            content_encoding: header("content-encoding"),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            mcp_method: header("mcp-method"),
            mcp_name: header("mcp-name"),
            identity,
        };
        if let Some(r) = request::check_head(&policy, &self.head) {
            return self.respond(&r);
        }
        // Hold the headers until the body is decided. That needs the filter's allow_on_headers_stop_iteration:
        // true; without it (Istio) the policy sets hold_headers: false, the headers go on now, and the body
        // is still held in on_http_request_body until it is decided: the upstream never sees an undecided byte.
        if policy.hold_headers {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.done {
            return Action::Continue;
        }
        self.body_size = body_size;
        if let Some(p) = &self.policy {
            if body_size > p.max_body_bytes {
                let r = reply::too_large(p.max_body_bytes);
                return self.respond(&r);
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.done {
            return Action::Continue;
        }
        self.finish()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.reservations.is_empty() {
            return Action::Continue;
        }
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if status >= 500 {
            self.give_back();
        }
        self.reservations.clear();
        Action::Continue
    }
}
