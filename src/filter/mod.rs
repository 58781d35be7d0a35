//! The proxy-wasm glue, and only that: read the configuration, gather headers and body bytes, call the pure
//! core ([`crate::request`]), act on its answer. No policy logic lives here.
//!
//! Host calls go through `proxy_wasm::hostcalls` (which return `Result`) rather than the SDK's trait helpers
//! (which unwrap): a host error must fail the request closed, not trap the worker.

mod host;

use crate::approval::{read_answer, Answer};
use crate::limits::{self, Limiter, Reservation};
use crate::policy::{self, Mode, Policy};
use crate::reply::{self, Reply};
use crate::request::{self, Awaiting, Checked, Env, Head, ListPlan, Outcome, Summary};
use host::SharedData;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;
use std::time::Duration;

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
                        error!(
                            "mcp-policy: cannot initialise rate-limit state in shared data: {e}"
                        );
                        return false;
                    }
                }
                info!(
                    "mcp-policy: policy loaded ({} rules, default {})",
                    p.rules().len(),
                    p.default.as_str()
                );
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
            awaiting: None,
            callouts: Vec::new(),
            answers: Vec::new(),
            summary: Summary::default(),
            list: None,
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
    /// What is kept of the body while approval callouts are out.
    awaiting: Option<Awaiting>,
    /// Approval callouts in flight: (token, index into `answers`).
    callouts: Vec<(u32, usize)>,
    answers: Vec<Option<Answer>>,
    /// Methods and tools of the forwarded body (exported headers, tools/list handling).
    summary: Summary,
    /// Set while a tools/list answer is being filtered: (request id, plan).
    list: Option<(String, ListPlan)>,
}

impl Http {
    fn respond(&mut self, r: &Reply) -> Action {
        self.done = true;
        let headers = vec![
            ("content-type", "application/json"),
            ("x-mcp-policy", "rejected"),
        ];
        if let Err(e) = hostcalls::send_http_response(r.status, headers, Some(r.body.as_bytes())) {
            warn!("mcp-policy: could not send the local reply ({e:?}); resetting the request");
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    fn fail_closed(&mut self, why: &str) -> Action {
        error!("mcp-policy: {why}; refusing the request");
        self.respond(&reply::uninspectable(why))
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
        let now_nanos = host::now_nanos();
        let env = Env {
            store: &SharedData,
            now_nanos,
            audit: host::audit_enabled(now_nanos),
        };
        let Checked {
            outcome,
            events,
            summary,
        } = request::check_body(&policy, &self.head, &bytes, &env);
        events.iter().for_each(host::record);
        self.summary = summary;
        self.export(&policy);
        match outcome {
            Outcome::Forward(reservations) => {
                self.reservations = reservations;
                self.forward(&policy);
                Action::Continue
            }
            Outcome::Reply(r) => self.respond(&r),
            Outcome::Approve {
                reservations,
                asks,
                awaiting,
            } => {
                self.reservations = reservations;
                self.ask_approval(&policy, asks, awaiting)
            }
        }
    }

    /// Just before the request goes upstream: export the MCP facts as headers (when the headers are still
    /// held), and ask for an uncompressed tools/list answer, which the response path filters.
    fn forward(&mut self, policy: &Policy) {
        if let Some(id) = self
            .summary
            .tools_list_id
            .as_ref()
            .filter(|_| policy.mode == Mode::Enforce)
        {
            if policy.hold_headers {
                host::set_request_header("accept-encoding", None);
            }
            self.list = Some((
                id.clone(),
                ListPlan::Rewrite(crate::tools_list::Format::Json),
            ));
        }
    }

    /// Sets the exported `x-mcp-*` headers (when the headers are still held), for the upstream and for the
    /// access log, which sees them on refused requests too.
    fn export(&self, policy: &Policy) {
        if !policy.hold_headers {
            return;
        }
        if let Some(names) = &policy.export {
            let (method, tool) = (
                export_value(&self.summary.methods),
                export_value(&self.summary.tools),
            );
            // Any copy the client sent was removed with the headers: only values are set (a host call each).
            for (name, value) in [(&names.method, method), (&names.tool, tool)] {
                if let Some(v) = value {
                    host::set_request_header(name, Some(&v));
                }
            }
        }
    }

    fn limiter<'a>(policy: &Policy, store: &'a SharedData) -> Limiter<'a, SharedData> {
        Limiter {
            store,
            max_tracked: policy.identity.max_tracked,
            hold_secs: policy.hold_secs(),
        }
    }

    fn give_back(&mut self) {
        if let Some(p) = &self.policy {
            Self::limiter(p, &SharedData).release(&self.reservations);
        }
        self.reservations.clear();
    }

    /// Sends one callout per ask; the request waits (other requests carry on) until every answer is in.
    fn ask_approval(&mut self, policy: &Policy, asks: Vec<String>, awaiting: Awaiting) -> Action {
        self.answers = vec![None; asks.len()];
        self.awaiting = Some(awaiting);
        let Some(cfg) = policy.approval.clone() else {
            for a in &mut self.answers {
                *a = Some(Answer::Unavailable(
                    "no approval service is configured".into(),
                ));
            }
            return self.conclude();
        };
        for (i, body) in asks.iter().enumerate() {
            let headers = cfg.headers(body.len());
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let timeout = Duration::from_millis(cfg.timeout_ms);
            match hostcalls::dispatch_http_call(
                &cfg.cluster,
                headers,
                Some(body.as_bytes()),
                vec![],
                timeout,
            ) {
                Ok(token) => self.callouts.push((token, i)),
                Err(e) => {
                    warn!(
                        "mcp-policy: approval callout to cluster '{}' failed: {e:?}",
                        cfg.cluster
                    );
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
            return self.conclude();
        }
        Action::Pause
    }

    /// Every answer is in: forward, or reply and give the rate-limit units back.
    fn conclude(&mut self) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed("no policy is loaded");
        };
        let Some(awaiting) = self.awaiting.take() else {
            return self.fail_closed("the approval state was lost");
        };
        let answers: Vec<Answer> = self
            .answers
            .drain(..)
            .map(|a| a.unwrap_or_else(|| Answer::Unavailable("no answer".into())))
            .collect();
        let now_nanos = host::now_nanos();
        let env = Env {
            store: &SharedData,
            now_nanos,
            audit: host::audit_enabled(now_nanos),
        };
        let (result, events) = awaiting.conclude(&self.head, &answers, &env);
        events.iter().for_each(host::record);
        match result {
            Ok(()) => {
                self.forward(&policy);
                Action::Continue
            }
            Err(r) => {
                self.give_back();
                self.respond(&r)
            }
        }
    }
}

/// The longest exported header value, in bytes: a batch of many calls, or one absurdly long tool name, would
/// otherwise make a header line the upstream refuses (Python's http.server stops at 64 KiB, many servers sooner).
const EXPORT_MAX: usize = 1024;

/// An exported header value: none when empty; NUL, CR and LF, which Envoy refuses in a header value (it would
/// fail an allowed request with a 503), become `?`; cut to [`EXPORT_MAX`] bytes at a character boundary, ending
/// in `...`. The header is for access logs and rate-limit keys: the body, not the header, is what is forwarded.
fn export_value(v: &str) -> Option<std::borrow::Cow<'_, str>> {
    let bad = |c: char| matches!(c, '\0' | '\r' | '\n');
    if v.is_empty() {
        return None;
    }
    if v.len() <= EXPORT_MAX && !v.contains(bad) {
        return Some(v.into());
    }
    let mut out: String = v.chars().map(|c| if bad(c) { '?' } else { c }).collect();
    if out.len() > EXPORT_MAX {
        let mut end = EXPORT_MAX - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    Some(out.into())
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(pos) = self.callouts.iter().position(|(t, _)| *t == token_id) else {
            return;
        };
        let (_, index) = self.callouts.swap_remove(pos);
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some(a) = self.answers.get_mut(index) {
            *a = Some(read_answer(status, &body));
        }
        if self.callouts.is_empty() && self.conclude() == Action::Continue {
            if let Err(e) = hostcalls::resume_http_request() {
                warn!("mcp-policy: could not resume the request after approval ({e:?})");
            }
        }
    }

    fn on_done(&mut self) -> bool {
        // The client went away while approval was pending: the call was never forwarded.
        if !self.callouts.is_empty() {
            self.callouts.clear();
            self.awaiting = None;
            self.give_back();
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.fail_closed("no policy is loaded");
        };
        let Some(headers) = host::request_headers() else {
            return self.fail_closed("the request headers could not be read");
        };
        // A client must not be able to forge the exported headers, nor have them reach the upstream (not even
        // with export off).
        for name in policy.unforgeable_headers() {
            if headers.has(name) {
                host::set_request_header(name, None);
            }
        }
        if end_of_stream {
            // No body (a GET for the SSE stream, a DELETE of a session): nothing to inspect.
            self.done = true;
            return Action::Continue;
        }
        if !policy.hold_headers && headers.has("accept-encoding") {
            // The headers leave now, before the method is known: ask for uncompressed answers so that a
            // tools/list answer can be filtered.
            host::set_request_header("accept-encoding", None);
        }
        // The client's address is asked of Envoy only when no identity header is present.
        let identity = policy.identity.resolve(
            |h| headers.get(h),
            || {
                hostcalls::get_property(vec!["source", "address"])
                    .ok()
                    .flatten()
                    .and_then(|b| String::from_utf8(b).ok())
            },
        );
        self.head = Head {
            request_id: headers.get("x-request-id"),
            content_encoding: headers.get("content-encoding"),
            content_length: headers
                .values("content-length")
                .next()
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()),
            mcp_method: headers.get("mcp-method"),
            mcp_name: headers.get("mcp-name"),
            repeated_mcp_header: headers.repeated(&["mcp-method", "mcp-name"]),
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
        if self.reservations.is_empty() && self.list.is_none() {
            // Nothing to give back and no tools/list to filter: not even the status is needed.
            return Action::Continue;
        }
        let status = host::response_header(":status")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        if !self.reservations.is_empty() {
            if status >= 500 {
                self.give_back();
            }
            self.reservations.clear();
        }
        let Some((id, _)) = self.list.take() else {
            return Action::Continue;
        };
        if !(200..300).contains(&status) {
            return Action::Continue;
        }
        let plan = request::plan_list_answer(
            host::response_header("content-type").as_deref(),
            host::response_header("content-encoding").as_deref(),
        );
        // The body will change size; a replaced answer is plain JSON.
        host::set_response_header("content-length", None);
        if let ListPlan::Replace(_) = &plan {
            host::set_response_header("content-encoding", None);
            host::set_response_header("content-type", Some("application/json"));
        }
        self.list = Some((id, plan));
        let hold = self.policy.as_ref().is_some_and(|p| p.hold_headers);
        if hold {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.list.is_none() {
            // Every other answer streams through untouched.
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let (Some((id, plan)), Some(policy)) = (self.list.take(), self.policy.clone()) else {
            return Action::Continue;
        };
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let out = request::filter_list_answer(&policy, &id, &plan, &body);
        if out.as_ref() != body.as_slice() {
            if hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out).is_err() {
                warn!(
                    "mcp-policy: could not rewrite the tools/list answer; resetting the response"
                );
                let _ = hostcalls::reset_http_response();
                return Action::Pause;
            }
            host::count("tools_list_filtered");
        }
        if policy.hold_headers {
            host::set_response_header("content-length", Some(&out.len().to_string()));
        }
        Action::Continue
    }
}
