//! The proxy-wasm glue, and only that: read the configuration, gather headers and body bytes, call the pure
//! core ([`crate::request`]), act on its answer. No policy logic lives here.
//!
//! Host calls go through `proxy_wasm::hostcalls` (which return `Result`) rather than the SDK's trait helpers
//! (which unwrap): a host error must fail the request closed, not trap the worker.

use crate::limits::{self, Limiter, Reservation, SetError, Store, StoreError};
use crate::policy::{self, Policy};
use crate::reply::{self, Reply};
use crate::request::{self, Env, Head, Outcome};
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

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
        }
    }
}

impl Context for Http {}

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
        let identity = if policy.has_limits() {
            let source = hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            policy.identity.resolve(header, source.as_deref())
        } else {
            String::new()
        };
        self.head = Head {
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
            if let Some(p) = &self.policy {
                let limiter =
                    Limiter { store: &SharedData, max_tracked: p.identity.max_tracked, hold_secs: p.hold_secs() };
                limiter.release(&self.reservations);
            }
        }
        self.reservations.clear();
        Action::Continue
    }
}
