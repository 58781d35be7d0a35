//! The floor for `make bench` (configuration F): the least a body-inspecting proxy-wasm filter does.
//!
//! It holds the request headers until the body is complete, reads the whole body once from the host,
//! and lets the request go on unchanged. No configuration, no parsing, no decision, no response
//! callbacks: what Envoy + V8 + the proxy-wasm ABI cost for that is the floor under any filter that
//! has to look at an MCP call's body, mcp-policy included.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Floor) });
}}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
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
        let _ = proxy_wasm::hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        Action::Continue
    }
}
