//! The core's [`Host`] over Envoy: each method is one status-returning host call of [`super::abi`] (or none,
//! when a per-worker cache answers), and the [`Store`] over proxy-wasm shared data.

use super::abi::{self, Status};
use crate::flow::{Counter, Host};
use crate::header_map::{self, HeaderMap};
use crate::label::Label;
use crate::limits::{SetError, Store, StoreError};
use crate::request::Event;
use log::Level;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, StreamType};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// [`Store`] over proxy-wasm shared data: one map per VM id, shared by every worker of the Envoy process.
pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::shared_data(key).map_err(|e| StoreError(format!("get_shared_data({key}): {e:?}")))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match abi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(Status::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(e) => Err(SetError::Other(format!("set_shared_data({key}): {e:?}"))),
        }
    }
}

/// The host of one request: Envoy, through the current context (proxy-wasm host calls act on the context
/// whose callback is running).
pub struct Envoy;

impl Host for Envoy {
    type Store = SharedData;

    /// One host call for the whole map: under load a host call that returns data costs about as much as the
    /// rest of a header callback, and reading the map once replaces a call per header.
    fn request_headers(&mut self) -> Option<HeaderMap> {
        HeaderMap::parse(abi::header_map_pairs(MapType::HttpRequestHeaders).ok()?)
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path).ok().flatten()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = abi::set_header(MapType::HttpRequestHeaders, name, value);
    }

    fn request_body(&mut self, size: usize) -> Result<Option<Vec<u8>>, String> {
        abi::buffer(BufferType::HttpRequestBody, 0, size).map_err(|e| format!("{e:?}"))
    }

    fn send_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), String> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        abi::send_local_response(status, &header_map::serialise(&headers), body)
            .map_err(|e| format!("{e:?}"))
    }

    fn reset_request(&mut self) {
        let _ = abi::reset(StreamType::HttpRequest);
    }

    fn resume_request(&mut self) -> Result<(), String> {
        abi::resume(StreamType::HttpRequest).map_err(|e| format!("{e:?}"))
    }

    /// Through the SDK, which registers the token so that the answer reaches this context (see the module
    /// documentation of `src/filter/`). It panics on a status other than Ok, BadArgument (Envoy: no such
    /// cluster, a missing pseudo-header) and InternalFailure (the request could not start), which Envoy does
    /// not return for valid memory.
    fn http_callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), vec![], timeout)
            .map_err(|e| format!("{e:?}"))
    }

    fn callout_response(&mut self, body_size: usize) -> (Option<u32>, Vec<u8>) {
        let status = abi::header(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u32>().ok());
        let body = abi::buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        (status, body)
    }

    /// Through the SDK, for the token registration (as `http_callout`). `cluster` is the cluster's name, never
    /// a serialized `GrpcService` (policy validation refuses names that would parse as one): for a name, Envoy
    /// answers ParseFailure when the cluster does not exist, InternalFailure when the call cannot start, both
    /// of which the SDK lists; BadArgument (a trap in the SDK) only when it cannot make a client for a cluster
    /// it found, which it does not do for a plain cluster.
    fn grpc_callout(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_grpc_call(cluster, service, method, vec![], Some(message), timeout)
            .map_err(|e| format!("{e:?}"))
    }

    fn grpc_response(&mut self, size: usize) -> Vec<u8> {
        abi::buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn response_header(&mut self, name: &str) -> Option<String> {
        let bytes = abi::header(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()?;
        Some(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        let _ = abi::set_header(MapType::HttpResponseHeaders, name, value);
    }

    fn response_body(&mut self, size: usize) -> Vec<u8> {
        abi::buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), String> {
        abi::set_buffer(BufferType::HttpResponseBody, 0, size, body).map_err(|e| format!("{e:?}"))
    }

    fn reset_response(&mut self) {
        let _ = abi::reset(StreamType::HttpResponse);
    }

    fn now_nanos(&mut self) -> u64 {
        abi::now_nanos().unwrap_or(0)
    }

    /// Asked of Envoy when the filter starts and on every tick of the root context (once a second, see
    /// `super::Root`), not per request: a host call per request costs more than the rest of the check, and an
    /// operator who turns the level up or down sees the change within a second.
    fn audit_enabled(&mut self) -> bool {
        AUDIT.with(|on| match on.get() {
            Some(on) => on,
            None => refresh_audit(),
        })
    }

    fn store(&self) -> &SharedData {
        &SharedData
    }

    /// Counts the decision (its total, and the tool's counter for a tool call) and writes the audit line.
    fn record(&mut self, e: &Event) {
        let ids = [
            decision_id(e.decision, e.profile.as_deref()),
            e.tool
                .as_deref()
                .and_then(|tool| tool_decision_id(tool, e.decision)),
        ];
        for id in ids.into_iter().flatten() {
            let _ = abi::increment(id, 1);
        }
        if !e.audit.is_empty() {
            let _ = abi::log(LogLevel::Info, &e.audit);
        }
    }

    fn count(&mut self, counter: Counter) {
        if let Some(id) = metric_id(&format!("mcp_policy.{}_total", counter.as_str())) {
            let _ = abi::increment(id, 1);
        }
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
            Level::Info => LogLevel::Info,
            Level::Debug => LogLevel::Debug,
            Level::Trace => LogLevel::Trace,
        };
        let _ = abi::log(level, message);
    }
}

thread_local! {
    /// Whether Envoy's log level lets `info` (audit lines) through, as last asked ([`refresh_audit`]).
    static AUDIT: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Asks Envoy for its log level (one host call) and keeps whether audit lines are on; on error they are.
pub fn refresh_audit() -> bool {
    let on = abi::log_level().map_or(true, |l| (l as u32) <= (LogLevel::Info as u32));
    AUDIT.with(|c| c.set(Some(on)));
    on
}

/// Distinct tool names that get their own per-tool counters; past this, tools count as `_other` (a client
/// can call made-up tool names at will: the stats must stay bounded).
pub const MAX_TOOL_METRICS: usize = 256;

/// Raw tool names whose counter ids are cached (a client can send made-up names at will: bounded).
const MAX_CACHED_TOOLS: usize = 4 * MAX_TOOL_METRICS;

/// Counter ids per label of one tool (or of the totals).
type LabelIds = [Option<u32>; Label::ALL.len()];

thread_local! {
    /// Metric name → id, for every metric defined so far.
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Stats-safe tool names that have their own counters.
    static TOOLS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The ids a decision counts into, so that a decision costs no string formatting: per label, its total;
    /// per (raw tool name, label), the tool's counter.
    static DECISION_IDS: Cell<LabelIds> = const { Cell::new([None; Label::ALL.len()]) };
    /// Per caller profile, its decision counters' ids (profiles are named by the policy: a bounded set).
    static PROFILE_IDS: RefCell<HashMap<String, LabelIds>> = RefCell::new(HashMap::new());
    static TOOL_IDS: RefCell<HashMap<String, LabelIds>> = RefCell::new(HashMap::new());
}

/// The id of a counter, defined on first use.
fn metric_id(name: &str) -> Option<u32> {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(id) = m.get(name) {
            return Some(*id);
        }
        let id = abi::define_counter(name).ok()?;
        m.insert(name.to_owned(), id);
        Some(id)
    })
}

/// The id of the decision counter of `label`; with a caller profile, the profile's own counter
/// (`mcp_policy.decisions_total.profile.<name>.decision.<label>`: profile names are letters, digits, `-` and
/// `_`, so one stat segment).
fn decision_id(label: Label, profile: Option<&str>) -> Option<u32> {
    let Some(profile) = profile else {
        return total_id(label);
    };
    let cached = PROFILE_IDS.with(|t| {
        t.borrow()
            .get(profile)?
            .get(label.index())
            .copied()
            .flatten()
    });
    cached.or_else(|| {
        let id = metric_id(&format!(
            "mcp_policy.decisions_total.profile.{profile}.decision.{label}"
        ))?;
        PROFILE_IDS.with(|t| {
            let mut t = t.borrow_mut();
            let ids = t
                .entry(profile.to_owned())
                .or_insert([None; Label::ALL.len()]);
            if let Some(slot) = ids.get_mut(label.index()) {
                *slot = Some(id);
            }
        });
        Some(id)
    })
}

fn total_id(label: Label) -> Option<u32> {
    let cached = DECISION_IDS.with(|d| d.get().get(label.index()).copied().flatten());
    cached.or_else(|| {
        let id = metric_id(&format!("mcp_policy.decisions_total.decision.{label}"))?;
        DECISION_IDS.with(|d| {
            let mut ids = d.get();
            if let Some(slot) = ids.get_mut(label.index()) {
                *slot = Some(id);
            }
            d.set(ids);
        });
        Some(id)
    })
}

fn tool_decision_id(tool: &str, label: Label) -> Option<u32> {
    let cached = TOOL_IDS.with(|t| t.borrow().get(tool)?.get(label.index()).copied().flatten());
    cached.or_else(|| {
        let id = metric_id(&format!(
            "mcp_policy.tool_calls_total.tool.{}.decision.{label}",
            stat_tool(tool)
        ))?;
        TOOL_IDS.with(|t| {
            let mut t = t.borrow_mut();
            if !t.contains_key(tool) && t.len() < MAX_CACHED_TOOLS {
                t.insert(tool.to_owned(), [None; Label::ALL.len()]);
            }
            if let Some(slot) = t.get_mut(tool).and_then(|ids| ids.get_mut(label.index())) {
                *slot = Some(id);
            }
        });
        Some(id)
    })
}

/// Stats-safe tool name: dots and other separators become `_` (Envoy splits stat names on dots).
fn stat_tool(tool: &str) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    TOOLS.with(|t| {
        let mut t = t.borrow_mut();
        if t.contains(&clean) {
            return clean;
        }
        if t.len() < MAX_TOOL_METRICS {
            t.insert(clean.clone());
            return clean;
        }
        "_other".into()
    })
}
