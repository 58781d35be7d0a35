//! The proxy-wasm glue, and only that: the root context reads the configuration; each HTTP context forwards
//! every callback to its [`Flow`] (the per-request state machine of the pure core, `src/flow/`) with
//! [`host::Envoy`], the core's [`crate::flow::Host`] over Envoy's host calls. No decision is taken here.
//!
//! - `abi.rs`: the host calls, declared to return the host's status (never to trap);
//! - `host.rs`: `Envoy` (the `Host`), `SharedData` (the rate-limit `Store`), the stat ids;
//! - this file: the contexts.
//!
//! # What can trap the worker (proxy-wasm Rust SDK 0.2.5)
//!
//! A panic aborts the wasm VM (`panic = "abort"`), and with it every request on that Envoy worker. In the
//! SDK, these panic:
//! - **`proxy_wasm::hostcalls::*`**: each returns `Result`, yet panics (`unexpected status`) on any status
//!   missing from its own short list: `get_buffer` accepts Ok and NotFound; `get_shared_data` Ok and NotFound;
//!   `set_shared_data` Ok and CasMismatch; `get_property` Ok, NotFound, SerializationFailure and
//!   InternalFailure; `dispatch_http_call` Ok, BadArgument and InternalFailure; `dispatch_grpc_call` Ok,
//!   ParseFailure and InternalFailure; every other call (`set_map_value`, `get_map_value(_bytes)`,
//!   `set_buffer`, `send_http_response`, `resume_http_request`, `reset_http_request`, `log`, `get_log_level`,
//!   `get_current_time`, `define_metric`, `increment_metric`, ...) Ok only. Envoy answers BadArgument for a
//!   header map or buffer that is not there in the current callback: e.g. the request headers once they went
//!   on (`getMap` is null after Continue), so the SDK's `set_map_value` on them traps. Envoy's `grpcCall`
//!   (`source/extensions/common/wasm/context.cc`) answers BadArgument when it cannot make the gRPC client, which `dispatch_grpc_call` does not
//!   list: a trap. The imports are declared to return the SDK's `Status` enum, which has no variant for the
//!   ABI's statuses 5, 6, 9, 11 and 12.
//! - **UTF-8 unwraps**: `get_map_value` unwraps the value's UTF-8 conversion (a header byte 0xFF traps);
//!   `get_map` and `get_map_bytes` unwrap every name's (and `get_map` every value's); `get_grpc_status` the
//!   message's.
//! - **Trait helpers** (`traits.rs`: `get_http_request_header`, `set_http_response_header`,
//!   `get_http_request_body`, `send_http_response`, `resume_http_request`, `dispatch_http_call`,
//!   `get_property`, `get_shared_data`, `get_current_time`, ...) `.unwrap()` the calls above: any error
//!   status traps.
//! - **The logger** (`log` macros after `proxy_wasm::set_log_level`) unwraps `hostcalls::log`; so does the
//!   panic hook it installs (after a panic, which aborts anyway).
//! - **The dispatcher** (`dispatcher.rs`, not our code): an `on_http_call_response` whose token it did not
//!   register panics (`invalid token_id`), which is why callouts must be made with
//!   `hostcalls::dispatch_http_call` (registration is private to the SDK); before handing a callout answer
//!   to a context it unwraps `set_effective_context`; a callback for a context id it does not know panics
//!   (`invalid context_id`); `create_http_context` returning `None` panics; a callback re-entering the
//!   dispatcher while it holds its `RefCell` borrow would panic (Envoy defers a local reply, continue, close
//!   and callout answers until the running callback returns, so it does not happen).
//!
//! What this filter does about it: every host call on a request path goes through `abi.rs`, whose imports
//! return a plain `u32` and whose wrappers return `Err` for any status but Ok; the core fails the request
//! closed (or, for best-effort calls such as a metric, goes on). The one SDK call left on a request path is
//! `hostcalls::dispatch_http_call` (approval callouts), for the token registration: Envoy returns it only
//! Ok, BadArgument or InternalFailure for valid memory, all three listed. The same holds for
//! `hostcalls::dispatch_grpc_call` (the rate limit service), with the BadArgument gap above closed by what it
//! is given: the cluster's plain name, which policy validation refuses when it would parse as a serialized
//! `GrpcService` (Envoy then answers a missing cluster with ParseFailure, listed; see `host.rs`). Its answers
//! come with their gRPC status as an argument, so `get_grpc_status` (which unwraps UTF-8) is never called. `proxy_wasm::set_log_level` runs once at VM start (it installs the panic hook);
//! nothing here logs through the `log` macros. The contexts always return `Some` from
//! `create_http_context`.

mod abi;
mod host;

use crate::flow::{self, Action, Flow};
use crate::policy::Policy;
use host::{Envoy, SharedData};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, BufferType, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { policy: None }) });
}}

struct Root {
    policy: Option<Rc<Policy>>,
}

impl Context for Root {}

/// How often the root context re-reads Envoy's log level (see `host::refresh_audit`).
const TICK_MILLIS: u32 = 1000;

impl RootContext for Root {
    fn on_tick(&mut self) {
        host::refresh_audit();
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match abi::buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                let why = format!("mcp-policy: cannot read the plugin configuration: {e:?}");
                let _ = abi::log(LogLevel::Error, &why);
                return false;
            }
        };
        match flow::configure(&bytes, &SharedData) {
            Ok((p, loaded)) => {
                let _ = abi::log(LogLevel::Info, &loaded);
                self.policy = Some(Rc::new(p));
                // Whether audit lines are on is asked now and on each tick, never per request (`host.rs`).
                host::refresh_audit();
                if let Err(e) = abi::set_tick_period(TICK_MILLIS) {
                    let why = format!("mcp-policy: no ticks ({e:?}): the log level is read once");
                    let _ = abi::log(LogLevel::Warn, &why);
                }
                true
            }
            Err(why) => {
                let _ = abi::log(LogLevel::Error, &why);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http(Flow::new(self.policy.clone()))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: its [`Flow`].
struct Http(Flow);

fn action(a: Action) -> types::Action {
    match a {
        Action::Continue => types::Action::Continue,
        Action::Pause => types::Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.0
            .on_http_callout_response(&mut Envoy, token_id, body_size);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.0
            .on_grpc_callout_response(&mut Envoy, token_id, status_code, response_size);
    }

    fn on_done(&mut self) -> bool {
        self.0.on_done(&mut Envoy);
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> types::Action {
        action(self.0.on_request_headers(&mut Envoy, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        action(self.0.on_request_body(&mut Envoy, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> types::Action {
        action(self.0.on_request_trailers(&mut Envoy))
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> types::Action {
        action(self.0.on_response_headers(&mut Envoy))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        action(
            self.0
                .on_response_body(&mut Envoy, body_size, end_of_stream),
        )
    }
}
