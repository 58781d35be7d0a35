//! The life of one HTTP request through the filter: a state machine over a [`Host`], driven by the
//! proxy-wasm callbacks. Everything the filter decides or remembers between two callbacks is here, in
//! [`Flow`]; `src/filter/` only implements [`Host`] with proxy-wasm host calls and forwards each callback.
//! Every transition is unit-tested natively with a fake host (`fake.rs`) that records each host call.
//!
//! One file per step, in the order Envoy calls them:
//! - `headers.rs`: the request headers: forged exported headers removed, the verified caller and its
//!   profile (policies with `callers`), the rate-limit identities, [`crate::request::check_head`], hold or
//!   continue;
//! - `body.rs`: the request body: the size limit, [`crate::request::check_body`], the metrics and audit lines,
//!   the exported headers, then forward, reply, or ask for approval;
//! - `fleet.rs`: the rate limit service (fleet-wide limits): one gRPC call per request of the body, their
//!   answers in any order, then on to approval or upstream, or the refusal;
//! - `approval.rs`: the approval callouts (but for calls a remembered approval answers), their answers in any
//!   order, the client leaving while they are out;
//! - `response.rs`: the upstream's answer: rate-limit units given back on a 5xx, tools/list answers filtered.
//!
//! A host call costs about as much as the rest of a small request's check (measured in Envoy, issue 8):
//! each step makes the fewest it can, and the tests pin the exact host calls of the common paths.
//!
//! Where the next things go: what Envoy verified about the caller (JWT metadata, the peer certificate) is
//! read once in `headers.rs` through [`Host::property`] ([`crate::caller::read`]), only when the policy has
//! `callers`, and kept in the [`Head`] for the body's decision; a step that waits for the network gets a
//! [`Host`] method to start it, a `Pending` variant for its token, and a `Flow::on_..._response` in its own
//! file, which the filter's context calls (as `fleet.rs` does for the rate limit service's gRPC calls);
//! state shared across requests and workers (remembered approvals, as `crate::remember` does; pins) is read
//! and written through [`Host::store`].

mod approval;
mod body;
#[cfg(test)]
mod callers;
#[cfg(test)]
mod fake;
mod fleet;
mod headers;
mod response;

pub use response::{filter_list_answer, plan_list_answer, ListPlan};

use crate::header_map::HeaderMap;
use crate::limits::{self, Limiter, Reservation, Store};
use crate::policy::{self, Policy};
use crate::reply::{self, Reply};
use crate::request::{Env, Event, Head};
use approval::Approval;
use log::Level;
use response::ListAnswer;
use std::rc::Rc;
use std::time::Duration;

/// What Envoy does next with the stream, after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the headers or data go on.
    Continue,
    /// Hold them (buffering a body) until the filter resumes the stream or answers it.
    Pause,
}

/// A counter of something the filter did (not a decision: those are [`crate::label::Label`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A tools/list answer was rewritten (`mcp_policy.tools_list_filtered_total`).
    ToolsListFiltered,
    /// A tools/list answer showed a pinned tool with another definition than its pin, where the last one
    /// seen was the pinned one (`mcp_policy.tool_changed_total`): once per change, not per answer.
    ToolChanged,
    /// A request to the rate limit service got no usable answer: timeout, unreachable, a gRPC error, garbage
    /// (`mcp_policy.rate_limit_service_errors_total`), whatever `on_error` then did with the call.
    RateLimitServiceErrors,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::ToolsListFiltered => "tools_list_filtered",
            Counter::ToolChanged => "tool_changed",
            Counter::RateLimitServiceErrors => "rate_limit_service_errors",
        }
    }
}

/// What the core asks of Envoy. The filter's adapter makes one proxy-wasm host call per method (never one
/// that can trap the worker: see `src/filter/`); tests use a fake that records every call. Errors are the
/// host's status, as text for the logs.
pub trait Host {
    /// Shared data, where rate-limit counts and remembered approvals live (across Envoy's workers).
    type Store: Store;

    /// Every request header, read at once; `None` if the host refused or sent something unreadable.
    fn request_headers(&mut self) -> Option<HeaderMap>;
    /// A property of the stream (`["source", "address"]`), as the host serialises it; `None` if absent.
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets (`Some`) or removes (`None`) a request header. Only while the request headers are held.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The first `size` bytes of the buffered request body; `Ok(None)` when the host has none.
    fn request_body(&mut self, size: usize) -> Result<Option<Vec<u8>>, String>;
    /// Answers the request with a local reply instead of forwarding it.
    fn send_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String>;
    /// Resets the request stream (when even a local reply cannot be sent).
    fn reset_request(&mut self);
    /// Lets a paused request go on upstream.
    fn resume_request(&mut self) -> Result<(), String>;

    /// Starts an HTTP call to an Envoy cluster; its answer comes to [`Flow::on_http_callout_response`]
    /// with the token returned here.
    fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The answer of the callout being reported: its `:status` (`None` when there was no HTTP answer:
    /// timeout, connection failure) and its body (`body_size` bytes; empty if unreadable).
    fn callout_response(&mut self, body_size: usize) -> (Option<u32>, Vec<u8>);

    /// Starts a unary gRPC call (`service`/`method`, the serialized request `message`) to an Envoy cluster;
    /// its answer comes to [`Flow::on_grpc_callout_response`] with the token returned here.
    fn grpc_callout(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The message of the gRPC answer being reported (`size` bytes; empty if unreadable).
    fn grpc_response(&mut self, size: usize) -> Vec<u8>;

    /// A response header's first value (bytes that are not UTF-8 become U+FFFD).
    fn response_header(&mut self, name: &str) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) a response header. Only while the response headers are held.
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    /// The first `size` bytes of the buffered response body (empty if unreadable).
    fn response_body(&mut self, size: usize) -> Vec<u8>;
    /// Replaces the first `size` bytes of the buffered response body with `body`.
    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), String>;
    /// Resets the response stream (when a response that must not go out cannot be rewritten).
    fn reset_response(&mut self);

    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now_nanos(&mut self) -> u64;
    /// Whether audit lines would be written (Envoy's log level lets `info` through). Not a host call per request:
    /// the filter asks Envoy when it starts and once a second after.
    fn audit_enabled(&mut self) -> bool;
    /// The rate-limit store.
    fn store(&self) -> &Self::Store;
    /// Counts a decision in the metrics and writes its audit line (if it has one).
    fn record(&mut self, event: &Event);
    /// Counts something the filter did.
    fn count(&mut self, counter: Counter);
    /// A diagnostic line in Envoy's log.
    fn log(&mut self, level: Level, message: &str);
}

/// A callout in flight. Envoy reports each answer with the token it gave the callout, in any order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The approval callout of the ask at this index (in body order).
    Approval(usize),
    /// The rate limit service request at this index (of [`crate::request::Counting::messages`]).
    RateLimit(usize),
}

/// The state of one request between callbacks.
pub struct Flow {
    /// `None` only if Envoy ran the filter without an accepted configuration: every body is then refused.
    policy: Option<Rc<Policy>>,
    /// What the request headers said (set at headers time).
    head: Head,
    /// Bytes buffered so far (Envoy reports the running total while the body is held).
    body_size: usize,
    /// The request has been decided (forwarded, answered, or waiting for approval): later request
    /// callbacks let it go on.
    decided: bool,
    /// Rate-limit units the request took: given back if the upstream answers 5xx, if approval is not
    /// granted, or if the client leaves while approval is asked.
    reservations: Vec<Reservation>,
    /// Callouts in flight, by token.
    pending: Vec<(u32, Pending)>,
    /// Set while the approval answers are awaited.
    approval: Option<Approval>,
    /// Set while the rate limit service's answers are awaited.
    fleet: Option<fleet::Fleet>,
    /// Set when the request holds a tools/list whose answer is filtered.
    list: Option<ListAnswer>,
}

impl Flow {
    pub fn new(policy: Option<Rc<Policy>>) -> Self {
        Flow {
            policy,
            head: Head::default(),
            body_size: 0,
            decided: false,
            reservations: Vec::new(),
            pending: Vec::new(),
            approval: None,
            fleet: None,
            list: None,
        }
    }

    /// Answers the request with `r` (or resets it if even that fails).
    fn respond<H: Host>(&mut self, host: &mut H, r: &Reply) -> Action {
        self.respond_with(host, r, None)
    }

    /// Answers the request with `r` and one more header (or resets it if even that fails).
    fn respond_with<H: Host>(
        &mut self,
        host: &mut H,
        r: &Reply,
        extra: Option<(&str, &str)>,
    ) -> Action {
        self.decided = true;
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-mcp-policy", "rejected"),
        ];
        headers.extend(extra);
        if let Err(e) = host.send_reply(r.status, &headers, r.body.as_bytes()) {
            host.log(
                Level::Warn,
                &format!("mcp-policy: could not send the local reply ({e}); resetting the request"),
            );
            host.reset_request();
        }
        Action::Pause
    }

    /// Refuses a request the filter cannot inspect (fail closed).
    fn fail_closed<H: Host>(&mut self, host: &mut H, why: &str) -> Action {
        host.log(
            Level::Error,
            &format!("mcp-policy: {why}; refusing the request"),
        );
        self.respond(host, &reply::uninspectable(why))
    }

    /// Takes the callout in flight with this token, if it is one `is` accepts (HTTP and gRPC tokens are
    /// numbered apart, so a token alone does not say which callout it is).
    fn take_pending(&mut self, token: u32, is: fn(&Pending) -> bool) -> Option<Pending> {
        let pos = self
            .pending
            .iter()
            .position(|(t, p)| *t == token && is(p))?;
        Some(self.pending.swap_remove(pos).1)
    }

    /// True while callouts that `is` accepts are in flight.
    fn waiting_for(&self, is: fn(&Pending) -> bool) -> bool {
        self.pending.iter().any(|(_, p)| is(p))
    }

    /// Gives the request's rate-limit units back.
    fn give_back<H: Host>(&mut self, host: &H) {
        if let Some(p) = &self.policy {
            Limiter {
                store: host.store(),
                max_tracked: p.identity.max_tracked,
                hold_secs: p.hold_secs(),
            }
            .release(&self.reservations);
        }
        self.reservations.clear();
    }
}

/// After a wait (approval, the rate limit service) concluded from a callout's answer: lets the request go on
/// if it is to go on (`after` says after what, for the log line if Envoy refuses).
fn resume_after<H: Host>(host: &mut H, concluded: Action, after: &str) {
    if concluded == Action::Continue {
        if let Err(e) = host.resume_request() {
            host.log(
                Level::Warn,
                &format!("mcp-policy: could not resume the request after {after} ({e})"),
            );
        }
    }
}

/// The world as the core sees it for one decision: the store, the clock now (one host call), and whether
/// audit lines are on (no host call: see [`Host::audit_enabled`]).
fn env<H: Host>(host: &mut H) -> Env<'_, H::Store> {
    let now_nanos = host.now_nanos();
    env_at(host, now_nanos)
}

/// [`env`] with the clock already read.
fn env_at<H: Host>(host: &mut H, now_nanos: u64) -> Env<'_, H::Store> {
    let audit = host.audit_enabled();
    Env {
        store: host.store(),
        now_nanos,
        audit,
    }
}

/// [`env`] for a decision that needs the time only if `clock` (a rate limit, an approval) or for its audit line:
/// otherwise the clock is not read (a host call saved) and the time is 0, which nothing reads.
fn env_if<H: Host>(host: &mut H, clock: bool) -> Env<'_, H::Store> {
    if clock || host.audit_enabled() {
        env(host)
    } else {
        env_at(host, 0)
    }
}

/// Reads the plugin configuration: the policy, with the rate-limit state set up in `store` when the policy
/// has limits. `Ok` carries the line to log; `Err` the reason the configuration is refused.
pub fn configure<S: Store>(bytes: &[u8], store: &S) -> Result<(Policy, String), String> {
    let p = policy::parse(bytes).map_err(|errs| format!("mcp-policy: {errs}"))?;
    if p.has_limits() {
        limits::init_store(store).map_err(|e| {
            format!("mcp-policy: cannot initialise rate-limit state in shared data: {e}")
        })?;
    }
    let loaded = format!(
        "mcp-policy: policy loaded ({} rules, default {})",
        p.rules().len(),
        p.default.as_str()
    );
    Ok((p, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::memory::MemoryStore;

    #[test]
    fn configuration() {
        let store = MemoryStore::default();
        let (p, line) = configure(br#"{"version":"1","tools":{"a":{},"b":{}}}"#, &store).unwrap();
        assert_eq!(line, "mcp-policy: policy loaded (2 rules, default deny)");
        assert!(!p.has_limits());
        assert!(store.map.borrow().is_empty(), "no limits, no state");
        let (p, _) = configure(
            br#"{"version":"1","tools":{"a":{"rate_limit":"1/minute"}}}"#,
            &store,
        )
        .unwrap();
        assert!(p.has_limits());
        assert!(store.map.borrow().contains_key(&limits::lock_key()));
        let err = configure(
            br#"{"version":"1","tools":{"a":{"action":"nope"}}}"#,
            &store,
        )
        .err()
        .unwrap();
        assert!(err.starts_with("mcp-policy: "), "{err}");
        assert!(err.contains("nope"), "{err}");
    }
}
