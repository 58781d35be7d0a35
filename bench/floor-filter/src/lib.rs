//! The floor for `make bench` (configuration F): the least a body-inspecting proxy-wasm filter does.
//!
//! It holds the request headers until the body is complete, reads the whole body once from the host,
//! and lets the request go on unchanged. No parsing, no decision, no response callbacks: what Envoy + V8 +
//! the proxy-wasm ABI cost for that is the floor under any filter that has to look at an MCP call's body,
//! mcp-policy included.
//!
//! With a plugin configuration (F has none), it also makes the host calls it names, comma-separated, per
//! request: how much each kind of host call costs in Envoy, measured as the difference to the plain floor
//! (`bench/pair.py`, docs/benchmarks.md's breakdown). `headers` (every request header at once, at the
//! headers), `header` (one header by name, at the headers), `now`, `metric` (one counter increment),
//! `set_header` (a request header written, at the body: the headers are held; `proxy_replace_header_map_value`),
//! `add_header` (the same with `proxy_add_header_map_value`), `shared_get`, `shared_set`,
//! `property` (`source.address`), `log_level`. A name may repeat.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: Rc::new(Vec::new()), metric: 0 }) });
}}

#[derive(Clone, Copy, PartialEq)]
enum Call {
    Headers,
    Header,
    Now,
    Metric,
    SetHeader,
    AddHeader,
    SharedGet,
    SharedSet,
    Property,
    LogLevel,
}

struct Root {
    calls: Rc<Vec<Call>>,
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let mut calls = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            calls.push(match name {
                "headers" => Call::Headers,
                "header" => Call::Header,
                "now" => Call::Now,
                "metric" => Call::Metric,
                "set_header" => Call::SetHeader,
                "add_header" => Call::AddHeader,
                "shared_get" => Call::SharedGet,
                "shared_set" => Call::SharedSet,
                "property" => Call::Property,
                "log_level" => Call::LogLevel,
                _ => return false,
            });
        }
        if calls.contains(&Call::Metric) {
            self.metric =
                hostcalls::define_metric(MetricType::Counter, "floor.requests").unwrap_or(0);
        }
        if calls.contains(&Call::SharedGet) || calls.contains(&Call::SharedSet) {
            let _ = hostcalls::set_shared_data("floor/key", Some(&[0u8; 40]), None);
        }
        self.calls = Rc::new(calls);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            calls: self.calls.clone(),
            metric: self.metric,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    calls: Rc<Vec<Call>>,
    metric: u32,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        for c in self.calls.iter() {
            match c {
                Call::Headers => {
                    let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
                }
                Call::Header => {
                    let _ = hostcalls::get_map_value_bytes(
                        MapType::HttpRequestHeaders,
                        "mcp-session-id",
                    );
                }
                _ => {}
            }
        }
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        // Read it once, as a filter that inspects the body must; errors are ignored.
        let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        let mut cas = None;
        for (i, c) in self.calls.iter().enumerate() {
            match c {
                Call::Now => {
                    let _ = hostcalls::get_current_time();
                }
                Call::Metric => {
                    let _ = hostcalls::increment_metric(self.metric, 1);
                }
                Call::SetHeader => {
                    let name = format!("x-floor-{i}");
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &name, Some("v"));
                }
                Call::AddHeader => {
                    let name = format!("x-floor-{i}");
                    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, &name, "v");
                }
                Call::SharedGet => {
                    if let Ok((_, c)) = hostcalls::get_shared_data("floor/key") {
                        cas = c;
                    }
                }
                Call::SharedSet => {
                    let _ = hostcalls::set_shared_data("floor/key", Some(&[1u8; 40]), cas);
                }
                Call::Property => {
                    let _ = hostcalls::get_property(vec!["source", "address"]);
                }
                Call::LogLevel => {
                    let _ = hostcalls::get_log_level();
                }
                Call::Headers | Call::Header => {}
            }
        }
        Action::Continue
    }
}
