//! Host adapters: the [`Store`] over proxy-wasm shared data, Envoy stats, the clock, header access. Every
//! host call returns a `Result` here; none may trap the worker.

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

/// True when Envoy's log level lets `info` through, i.e. audit lines would be written.
pub fn audit_enabled() -> bool {
    hostcalls::get_log_level().map_or(true, |l| (l as u32) <= (LogLevel::Info as u32))
}

/// A request header's value (the first line's, when the header is repeated).
pub fn request_header(name: &str) -> Option<String> {
    header_value(MapType::HttpRequestHeaders, name)
}

/// A header's value, read as bytes: the SDK's `get_map_value` unwraps a UTF-8 conversion, so a single byte like
/// 0xFF in a client's header (HTTP/1.1 allows such obs-text) would trap the VM, and under FAIL_CLOSED every
/// later request on that worker would get a 503. Bytes that are not UTF-8 become U+FFFD: such a value is no
/// known encoding and no MCP method or name.
fn header_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok().flatten()?;
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The first of `names` (lower case) that the request carries on more than one header line. Envoy keeps the
/// repeated lines of such headers apart, [`request_header`] sees only the first, and a server may read another.
/// If the headers cannot be read, the first of `names` (fail closed). (`get_map_bytes` converts header names to
/// UTF-8 with an unwrap; names are tokens, Envoy refuses any other, so that cannot fail.)
pub fn repeated_request_header(names: &[&'static str]) -> Option<&'static str> {
    let Ok(all) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
        return names.first().copied();
    };
    names
        .iter()
        .copied()
        .find(|n| all.iter().filter(|(k, _)| k == n).count() > 1)
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn response_header(name: &str) -> Option<String> {
    header_value(MapType::HttpResponseHeaders, name)
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

/// Distinct tool names that get their own per-tool counters; past this, tools count as `_other` (a client
/// can call made-up tool names at will: the stats must stay bounded).
pub const MAX_TOOL_METRICS: usize = 256;

thread_local! {
    static METRICS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    static TOOLS: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

fn bump(name: &str) {
    METRICS.with(|m| {
        let mut m = m.borrow_mut();
        let id = match m.get(name) {
            Some(id) => Some(*id),
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    m.insert(name.to_owned(), id);
                    Some(id)
                }
                Err(_) => None,
            },
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    });
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
    bump(&format!(
        "mcp_policy.decisions_total.decision.{}",
        e.decision
    ));
    if let Some(tool) = &e.tool {
        bump(&format!(
            "mcp_policy.tool_calls_total.tool.{}.decision.{}",
            stat_tool(tool),
            e.decision
        ));
    }
    if !e.audit.is_empty() {
        info!("{}", e.audit);
    }
}

/// Counts one event of the filter itself (e.g. `tools_list_filtered`).
pub fn count(name: &str) {
    bump(&format!("mcp_policy.{name}_total"));
}
