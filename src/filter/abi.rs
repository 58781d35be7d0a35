//! The proxy-wasm host calls of the filter, declared here so that each returns the host's status instead of
//! trapping the worker. Hand-written on purpose: `proxy_wasm::hostcalls` 0.2.5 returns `Result` but panics
//! (`panic!("unexpected status: ...")`, which aborts the VM: `panic = "abort"`) on every status it does not
//! list, and its import declarations return the SDK's `Status` enum, which cannot hold the ABI's other
//! statuses (5, 6, 9, 11, 12): a host returning one is undefined behaviour before it is a panic. Here every
//! import returns a plain `u32`, and every wrapper turns a status other than `Ok` into `Err`.
//!
//! Memory the host returns was allocated in this VM through the SDK's `proxy_on_memory_allocate` (a boxed
//! slice of exactly `size` bytes); it is taken back as a `Vec` of that length and capacity, as the SDK does.
//!
//! Not here: `proxy_http_call` and `proxy_grpc_call`, which must go through the SDK (`hostcalls::
//! dispatch_http_call`, `dispatch_grpc_call`) because the SDK's dispatcher routes an answer to the context
//! that made the call only if it registered the token, and does so in a private function. See the module
//! documentation of `src/filter/` for what that costs.

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, StreamType};
use std::fmt;
use std::ptr::{null, null_mut};

/// A proxy-wasm status other than `Ok`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const NOT_FOUND: Status = Status(1);
    pub const CAS_MISMATCH: Status = Status(8);
}

/// The ABI's names (proxy-wasm spec, `WasmResult` in the C++ host), as the SDK's `Status` prints them.
impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            n => return write!(f, "Status({n})"),
        };
        f.write_str(name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

fn ok(status: u32) -> Result<(), Status> {
    match status {
        0 => Ok(()),
        s => Err(Status(s)),
    }
}

/// Takes back `size` bytes the host allocated at `data` (see the module documentation).
///
/// # Safety
/// `data` is null, or the start of an allocation of exactly `size` bytes made by `proxy_on_memory_allocate`
/// and not owned by anything else.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: see the function's contract.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Calls a host function that returns bytes through (`data`, `size`) out-pointers. `Ok(None)`: the host
/// returned none (a null pointer); `NotFound` is an `Err` for the caller to read as absence if it wants.
fn bytes_out(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    ok(call(&mut data, &mut size))?;
    // SAFETY: on `Ok` the host wrote a pointer it allocated for us (or null) and its size.
    Ok(unsafe { take(data, size) })
}

/// Writes a line to Envoy's log (the wasm logger, at `level`).
pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    // SAFETY: a valid slice for the duration of the call.
    ok(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

pub fn log_level() -> Result<LogLevel, Status> {
    let mut level: u32 = 0;
    // SAFETY: a valid out-pointer.
    ok(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64, Status> {
    let mut t: u64 = 0;
    // SAFETY: a valid out-pointer.
    ok(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// Up to `max_size` bytes of a buffer from `start`; `Ok(None)` when the host has no such buffer (now).
pub fn buffer(kind: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: valid out-pointers.
    match bytes_out(|d, s| unsafe { proxy_get_buffer_bytes(kind as u32, start, max_size, d, s) }) {
        Err(Status::NOT_FOUND) => Ok(None),
        r => r,
    }
}

/// Replaces `size` bytes of a buffer from `start` with `value`.
pub fn set_buffer(kind: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    // SAFETY: a valid slice for the duration of the call.
    ok(unsafe { proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len()) })
}

/// The raw serialised header map (see `crate::header_map`), without copying each header as the SDK's
/// `get_map_bytes` does (which also unwraps each name's UTF-8 conversion).
pub fn header_map_pairs(map: MapType) -> Result<Vec<u8>, Status> {
    // SAFETY: valid out-pointers.
    let bytes = bytes_out(|d, s| unsafe { proxy_get_header_map_pairs(map as u32, d, s) })?;
    Ok(bytes.unwrap_or_default())
}

/// A header's first value, as bytes (the SDK's `get_map_value` unwraps a UTF-8 conversion: a byte like 0xFF
/// in a header would trap the VM); `Ok(None)` when the header is absent.
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let found = bytes_out(|d, s| {
        // SAFETY: a valid slice and valid out-pointers.
        unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s) }
    });
    match found {
        Ok(v) => Ok(Some(v.unwrap_or_default())),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets (`Some`) or removes (`None`) a header.
pub fn set_header(map: MapType, name: &str, value: Option<&str>) -> Result<(), Status> {
    // SAFETY: valid slices for the duration of the call.
    ok(unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    })
}

/// A property of the stream (`["source", "address"]`); `Ok(None)` when it is absent.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    // The ABI's path: the segments, each followed by a NUL but the last.
    let mut p: Vec<u8> = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            p.push(0);
        }
        p.extend_from_slice(seg.as_bytes());
    }
    // SAFETY: a valid slice and valid out-pointers.
    match bytes_out(|d, s| unsafe { proxy_get_property(p.as_ptr(), p.len(), d, s) }) {
        Err(Status::NOT_FOUND) => Ok(None),
        r => r,
    }
}

/// A shared-data value and its CAS token; `Ok(None)` when the key does not exist.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: a valid slice and valid out-pointers.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match ok(status) {
        Ok(()) => {
            // SAFETY: on `Ok` the host wrote a pointer it allocated for us (or null) and its size.
            let value = unsafe { take(data, size) }.unwrap_or_default();
            // CAS 0 is no token: the SDK reads it as "no such key", and so does this.
            Ok((cas != 0).then_some((value, cas)))
        }
        Err(Status::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a shared-data value; with `cas`, only if the key still has that token (else `CAS_MISMATCH`).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: valid slices for the duration of the call.
    ok(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Lets a paused stream go on (Envoy does it once the callback returns).
pub fn resume(stream: StreamType) -> Result<(), Status> {
    // SAFETY: no pointers.
    ok(unsafe { proxy_continue_stream(stream as u32) })
}

/// Resets a stream (Envoy does it once the callback returns).
pub fn reset(stream: StreamType) -> Result<(), Status> {
    // SAFETY: no pointers.
    ok(unsafe { proxy_close_stream(stream as u32) })
}

/// Answers the request locally (Envoy sends it once the callback returns). `headers` is the host's map
/// serialisation ([`crate::header_map::serialise`]).
pub fn send_local_response(status: u32, headers: &[u8], body: &[u8]) -> Result<(), Status> {
    // SAFETY: valid slices for the duration of the call; no details string (null, 0).
    ok(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1, // not a gRPC reply: no grpc-status
        )
    })
}

/// Defines a counter (or finds the one of that name) and returns its id.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: a valid slice and a valid out-pointer.
    ok(unsafe {
        proxy_define_metric(
            MetricType::Counter as u32,
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    })?;
    Ok(id)
}

pub fn increment(id: u32, by: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    ok(unsafe { proxy_increment_metric(id, by) })
}

/// Asks Envoy to call the root context's `on_tick` every `millis` milliseconds (0: never).
pub fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    ok(unsafe { proxy_set_tick_period_milliseconds(millis) })
}
