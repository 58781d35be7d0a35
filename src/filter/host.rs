//! Host adapters: the [`Store`] over proxy-wasm shared data, Envoy stats, the clock, header access. Every
//! host call returns a `Result` here; none may trap the worker.

use crate::header_map::HeaderMap;
use crate::limits::{SetError, Store, StoreError};
use crate::request::Event;
use log::info;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType, MetricType, Status};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::UNIX_EPOCH;

/// [`Store`] over proxy-wasm shared data: one map per VM id, shared by every worker of the Envoy process.
pub struct SharedData;

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

pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// True when Envoy's log level lets `info` through, i.e. audit lines would be written. Asked of Envoy at most
/// once a second (`now_nanos`: the request's clock): a host call per request costs more than the rest of the
/// check, and an operator who turns the level up or down sees the change within a second.
pub fn audit_enabled(now_nanos: u64) -> bool {
    thread_local! {
        /// (when last asked, the answer)
        static LEVEL: std::cell::Cell<Option<(u64, bool)>> = const { std::cell::Cell::new(None) };
    }
    LEVEL.with(|cached| match cached.get() {
        Some((asked, on))
            if now_nanos.saturating_sub(asked) < 1_000_000_000 && now_nanos >= asked =>
        {
            on
        }
        _ => {
            let on =
                hostcalls::get_log_level().map_or(true, |l| (l as u32) <= (LogLevel::Info as u32));
            cached.set(Some((now_nanos, on)));
            on
        }
    })
}

/// Every request header, read with one host call (one copy, one allocation). Under load a host call that
/// returns data costs about as much as the rest of a header callback; reading the map once replaces a call per
/// header. `None` if the host refuses or sends something that does not parse (the caller fails closed).
pub fn request_headers() -> Option<HeaderMap> {
    HeaderMap::parse(read_map_pairs(MapType::HttpRequestHeaders)?)
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// The raw serialised header map. The SDK's `get_map_bytes` would copy every name and value into its own
/// allocation and unwrap each name's UTF-8 conversion; this takes the host's one buffer as it is.
fn read_map_pairs(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated in this VM's memory through the SDK's
    // `proxy_on_memory_allocate` (a `Vec<u8>` with capacity `size`, forgotten); we take that allocation back
    // exactly as the SDK's own `get_map_bytes` does.
    unsafe {
        if proxy_get_header_map_pairs(map as u32, &mut data, &mut size) != Status::Ok as u32 {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// A response header's value (the first line's), read as bytes: the SDK's `get_map_value` unwraps a UTF-8
/// conversion, so a byte like 0xFF in a header would trap the VM. Bytes that are not UTF-8 become U+FFFD.
pub fn response_header(name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()?;
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// Distinct tool names that get their own per-tool counters; past this, tools count as `_other` (a client
/// can call made-up tool names at will: the stats must stay bounded).
pub const MAX_TOOL_METRICS: usize = 256;

/// Raw tool names whose counter ids are cached (a client can send made-up names at will: bounded).
const MAX_CACHED_TOOLS: usize = 4 * MAX_TOOL_METRICS;

thread_local! {
    /// Metric name → id, for every metric defined so far.
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Stats-safe tool names that have their own counters.
    static TOOLS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The ids a decision counts into, so that a decision costs no string formatting: per decision, its total;
    /// per (raw tool name, decision), the tool's counter.
    static DECISION_IDS: RefCell<Vec<(&'static str, u32)>> = const { RefCell::new(Vec::new()) };
    static TOOL_IDS: RefCell<HashMap<String, Vec<(&'static str, u32)>>> = RefCell::new(HashMap::new());
}

/// The id of a counter, defined on first use.
fn metric_id(name: &str) -> Option<u32> {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(id) = m.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(MetricType::Counter, name).ok()?;
        m.insert(name.to_owned(), id);
        Some(id)
    })
}

fn bump(name: &str) {
    if let Some(id) = metric_id(name) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn decision_id(decision: &'static str) -> Option<u32> {
    let cached = DECISION_IDS.with(|d| {
        d.borrow()
            .iter()
            .find(|(k, _)| *k == decision)
            .map(|(_, id)| *id)
    });
    cached.or_else(|| {
        let id = metric_id(&format!("mcp_policy.decisions_total.decision.{decision}"))?;
        DECISION_IDS.with(|d| d.borrow_mut().push((decision, id)));
        Some(id)
    })
}

fn tool_decision_id(tool: &str, decision: &'static str) -> Option<u32> {
    let cached = TOOL_IDS.with(|t| {
        t.borrow()
            .get(tool)?
            .iter()
            .find(|(k, _)| *k == decision)
            .map(|(_, id)| *id)
    });
    cached.or_else(|| {
        let id = metric_id(&format!(
            "mcp_policy.tool_calls_total.tool.{}.decision.{decision}",
            stat_tool(tool)
        ))?;
        TOOL_IDS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(ids) = t.get_mut(tool) {
                ids.push((decision, id));
            } else if t.len() < MAX_CACHED_TOOLS {
                t.insert(tool.to_owned(), vec![(decision, id)]);
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

/// Counts a decision and writes its audit line.
pub fn record(e: &Event) {
    let ids = [
        decision_id(e.decision.as_str()),
        e.tool
            .as_deref()
            .and_then(|tool| tool_decision_id(tool, e.decision.as_str())),
    ];
    for id in ids.into_iter().flatten() {
        let _ = hostcalls::increment_metric(id, 1);
    }
    if !e.audit.is_empty() {
        info!("{}", e.audit);
    }
}

/// Counts one event of the filter itself (e.g. `tools_list_filtered`).
pub fn count(name: &str) {
    bump(&format!("mcp_policy.{name}_total"));
}
