//! The wire format of Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`):
//! an encoder for `RateLimitRequest` and a decoder for `RateLimitResponse`, plus gRPC's length-prefixed framing.
//! Pure: bytes in, bytes out; what the entries mean is `fleet.rs`'s business.
//!
//! Hand-written, not generated: the filter needs two small messages (and the few nested ones they carry), a
//! protobuf runtime and generated code for Envoy's API would add far more to the wasm module than these ~250 lines
//! of encoder and decoder, and a generator would be a build step for the whole crate. The bytes are checked
//! against the real Python protobuf classes (`tests/fixtures/rls/`, made by the script next to them), and the
//! decoder is fuzzed (`fuzz/fuzz_targets/rls_decode.rs`): it must never panic, whatever the service answers.
//! (Over 700 lines only because of its tests, half the file: the fixtures compared field by field, and the
//! garbage the decoder must refuse.)
//!
//! The messages (field numbers from `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`):
//!
//! ```text
//! RateLimitRequest     { string domain = 1; repeated RateLimitDescriptor descriptors = 2; uint32 hits_addend = 3; }
//! RateLimitDescriptor  { repeated Entry entries = 1; RateLimitOverride limit = 2;
//!                        google.protobuf.UInt64Value hits_addend = 3; }
//!   Entry              { string key = 1; string value = 2; }
//!   RateLimitOverride  { uint32 requests_per_unit = 1; envoy.type.v3.RateLimitUnit unit = 2; }
//! RateLimitResponse    { Code overall_code = 1; repeated DescriptorStatus statuses = 2; ... (3-7 skipped) }
//!   DescriptorStatus   { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3;
//!                        google.protobuf.Duration duration_until_reset = 4; ... (5 skipped) }
//!   RateLimit          { uint32 requests_per_unit = 1; Unit unit = 2; ... (3, name, skipped) }
//!   Duration           { int64 seconds = 1; int32 nanos = 2; }
//! ```
//!
//! The encoder writes fields in field-number order and leaves out proto3 defaults (empty strings, zeros), as the
//! reference implementations do, so its output is byte for byte what they produce. The decoder follows proto3:
//! unknown fields are skipped, a repeated singular field keeps its last value, and a message field given twice
//! is merged. Envoy's `dispatch_grpc_call` frames the request and unframes the answer itself, so the filter
//! sends and reads bare messages; [`frame`] and [`unframe`] are for callers that speak gRPC over plain HTTP/2.

/// The service and method of `dispatch_grpc_call`.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// A window unit of a descriptor's `limit` override (`envoy.type.v3.RateLimitUnit`), and of a status's
/// `current_limit` (`RateLimitResponse.RateLimit.Unit`, same numbers for these four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
}

impl Unit {
    /// The unit of a window of exactly that many seconds; `None` for any other window (the service counts only
    /// per second, minute, hour or day).
    pub fn of_window(secs: u64) -> Option<Unit> {
        match secs {
            1 => Some(Unit::Second),
            60 => Some(Unit::Minute),
            3_600 => Some(Unit::Hour),
            86_400 => Some(Unit::Day),
            _ => None,
        }
    }

    pub fn secs(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
        }
    }

    /// As the services' configuration files spell it: `second`, `minute`, `hour`, `day`.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
}

/// One `RateLimitRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub domain: &'a str,
    pub descriptors: Vec<Descriptor<'a>>,
    /// Units taken from every descriptor that has no `hits_addend` of its own (0 means 1 to the service).
    pub hits_addend: u32,
}

/// One `RateLimitDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor<'a> {
    /// `(key, value)` pairs, in order.
    pub entries: Vec<(&'a str, &'a str)>,
    /// The `limit` override: the limit this descriptor is counted against.
    pub limit: Option<Override>,
    /// Units taken from this descriptor (the wrapper is sent even for 0).
    pub hits_addend: Option<u64>,
}

/// `RateLimitDescriptor.RateLimitOverride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

/// `RateLimitResponse.Code`.
pub const CODE_UNKNOWN: i32 = 0;
pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

/// The parts of a `RateLimitResponse` the filter reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// [`CODE_OK`], [`CODE_OVER_LIMIT`], [`CODE_UNKNOWN`] or a number this build does not know.
    pub overall_code: i32,
    /// One per descriptor, in the request's order, when the service sends them (envoyproxy/ratelimit does,
    /// Limitador sends none).
    pub statuses: Vec<Status>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub code: i32,
    /// The limit the service applied, `None` when it applied none.
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    pub duration_until_reset: Option<Duration>,
}

/// `RateLimitResponse.RateLimit` (its `name` is skipped). `unit` is the raw enum number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    pub unit: i32,
}

/// `google.protobuf.Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration {
    pub seconds: i64,
    pub nanos: i32,
}

impl Duration {
    /// Whole seconds, rounded up; 0 for a zero or negative duration.
    pub fn ceil_secs(self) -> u64 {
        let secs = u64::try_from(self.seconds).unwrap_or(0);
        if self.seconds >= 0 && self.nanos > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
    }
}

impl Response {
    /// The serialized `RateLimitResponse` (proto3 defaults left out), as a service would answer: for the CLI's
    /// simulations and the tests (the filter only reads answers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, i64::from(self.overall_code) as u64);
        for s in &self.statuses {
            let mut m = Vec::new();
            put_uint(&mut m, 1, i64::from(s.code) as u64);
            if let Some(l) = s.current_limit {
                let mut c = Vec::new();
                put_uint(&mut c, 1, u64::from(l.requests_per_unit));
                put_uint(&mut c, 2, i64::from(l.unit) as u64);
                put_len_field(&mut m, 2, c.len());
                m.extend(c);
            }
            put_uint(&mut m, 3, u64::from(s.limit_remaining));
            if let Some(d) = s.duration_until_reset {
                let mut c = Vec::new();
                put_uint(&mut c, 1, d.seconds as u64);
                put_uint(&mut c, 2, i64::from(d.nanos) as u64);
                put_len_field(&mut m, 4, c.len());
                m.extend(c);
            }
            put_len_field(&mut out, 2, m.len());
            out.extend(m);
        }
        out
    }
}

/// Why bytes are not a `RateLimitResponse` (or a gRPC frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// The most statuses a response may carry: far above any request the filter sends (one descriptor per limit of
/// one rule), low enough that garbage cannot make the decoder allocate much.
pub const MAX_STATUSES: usize = 1024;

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u8) {
    put_varint(out, field << 3 | u64::from(wire));
}

/// Bytes of a field holding `len` bytes (length-delimited), key included (every field number here is < 16).
fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes of a varint field, key included; 0 for a proto3 default.
fn varint_field(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

fn put_len_field(out: &mut Vec<u8>, field: u64, len: usize) {
    put_key(out, field, LEN);
    put_varint(out, len as u64);
}

fn put_str(out: &mut Vec<u8>, field: u64, s: &str) {
    if !s.is_empty() {
        put_len_field(out, field, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_key(out, field, VARINT);
        put_varint(out, v);
    }
}

fn str_field(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(s.len())
    }
}

fn entry_len(key: &str, value: &str) -> usize {
    str_field(key) + str_field(value)
}

fn override_len(o: &Override) -> usize {
    varint_field(u64::from(o.requests_per_unit)) + varint_field(o.unit as u64)
}

impl Descriptor<'_> {
    fn len(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|(k, v)| len_field(entry_len(k, v)))
            .sum();
        let limit = self
            .limit
            .as_ref()
            .map_or(0, |o| len_field(override_len(o)));
        let hits = self.hits_addend.map_or(0, |h| len_field(varint_field(h)));
        entries + limit + hits
    }

    fn put(&self, out: &mut Vec<u8>) {
        for (k, v) in &self.entries {
            put_len_field(out, 1, entry_len(k, v));
            put_str(out, 1, k);
            put_str(out, 2, v);
        }
        if let Some(o) = &self.limit {
            put_len_field(out, 2, override_len(o));
            put_uint(out, 1, u64::from(o.requests_per_unit));
            put_uint(out, 2, o.unit as u64);
        }
        if let Some(h) = self.hits_addend {
            put_len_field(out, 3, varint_field(h));
            put_uint(out, 1, h);
        }
    }
}

impl Request<'_> {
    /// The serialized `RateLimitRequest` (a bare message: no gRPC frame).
    pub fn encode(&self) -> Vec<u8> {
        let size = str_field(self.domain)
            + self
                .descriptors
                .iter()
                .map(|d| len_field(d.len()))
                .sum::<usize>()
            + varint_field(u64::from(self.hits_addend));
        let mut out = Vec::with_capacity(size);
        put_str(&mut out, 1, self.domain);
        for d in &self.descriptors {
            put_len_field(&mut out, 2, d.len());
            d.put(&mut out);
        }
        put_uint(&mut out, 3, u64::from(self.hits_addend));
        out
    }
}

/// A cursor over protobuf bytes.
struct Reader<'b> {
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .rest
                .split_first()
                .ok_or(DecodeError("truncated varint"))?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, DecodeError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err(DecodeError("field number 0"));
        }
        Ok(Some((field, (k & 7) as u8)))
    }

    fn take(&mut self, n: u64) -> Result<&'b [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError("length too large"))?;
        if n > self.rest.len() {
            return Err(DecodeError("truncated field"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'b [u8], DecodeError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// The value of a field of wire type `wire` this decoder does not read.
    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.take(8).map(|_| ()),
            LEN => self.bytes().map(|_| ()),
            FIXED32 => self.take(4).map(|_| ()),
            // Groups (3, 4) are not proto3; 6 and 7 do not exist.
            _ => Err(DecodeError("unsupported wire type")),
        }
    }

    /// A varint field's value; any other wire type for a field declared varint is an error.
    fn varint_of(&mut self, wire: u8) -> Result<u64, DecodeError> {
        if wire != VARINT {
            return Err(DecodeError("wrong wire type for a varint field"));
        }
        self.varint()
    }

    fn message_of(&mut self, wire: u8) -> Result<Reader<'b>, DecodeError> {
        if wire != LEN {
            return Err(DecodeError("wrong wire type for a message field"));
        }
        Ok(Reader {
            rest: self.bytes()?,
        })
    }
}

// Protobuf's int32 and enum fields keep the low 32 bits of the varint (negative values are sent sign-extended);
// uint32 fields keep the low 32 bits too.
fn low32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

fn int32(v: u64) -> i32 {
    low32(v) as i32
}

/// Reads a serialized `RateLimitResponse` (a bare message: no gRPC frame).
pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
    let mut r = Reader { rest: bytes };
    let mut resp = Response::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => resp.overall_code = int32(r.varint_of(wire)?),
            2 => {
                if resp.statuses.len() >= MAX_STATUSES {
                    return Err(DecodeError("too many statuses"));
                }
                let mut s = Status::default();
                status(&mut r.message_of(wire)?, &mut s)?;
                resp.statuses.push(s);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(resp)
}

fn status(r: &mut Reader, s: &mut Status) -> Result<(), DecodeError> {
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => s.code = int32(r.varint_of(wire)?),
            2 => {
                let mut m = r.message_of(wire)?;
                let l = s.current_limit.get_or_insert_with(CurrentLimit::default);
                while let Some((field, wire)) = m.key()? {
                    match field {
                        1 => l.requests_per_unit = low32(m.varint_of(wire)?),
                        2 => l.unit = int32(m.varint_of(wire)?),
                        _ => m.skip(wire)?,
                    }
                }
            }
            3 => s.limit_remaining = low32(r.varint_of(wire)?),
            4 => {
                let mut m = r.message_of(wire)?;
                let d = s.duration_until_reset.get_or_insert_with(Duration::default);
                while let Some((field, wire)) = m.key()? {
                    match field {
                        1 => d.seconds = m.varint_of(wire)? as i64,
                        2 => d.nanos = int32(m.varint_of(wire)?),
                        _ => m.skip(wire)?,
                    }
                }
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

/// Whether protobuf could read `bytes` as a message (of any type: every field unknown, groups allowed). Envoy's
/// proxy-wasm `grpc_call` takes either an Envoy cluster's name or a serialized `GrpcService`, and tries the
/// second first: a cluster name for which this is true would be taken for a `GrpcService` without a cluster,
/// and the call would fail with a status the proxy-wasm SDK traps on. Errs on the side of true (a name refused
/// needlessly is renamed; one let through would trap the worker).
pub fn is_wire_format(bytes: &[u8]) -> bool {
    /// Reads fields up to the end (`group`: `None`) or to the end of the group of that field number.
    fn fields(r: &mut Reader, group: Option<u64>, depth: u32) -> Option<()> {
        loop {
            if r.rest.is_empty() {
                return group.is_none().then_some(());
            }
            let key = r.varint().ok()?;
            let field = key >> 3;
            if field == 0 {
                return None;
            }
            match (key & 7) as u8 {
                VARINT => r.varint().ok().map(|_| ())?,
                FIXED64 => r.take(8).ok().map(|_| ())?,
                LEN => r.bytes().ok().map(|_| ())?,
                FIXED32 => r.take(4).ok().map(|_| ())?,
                3 if depth > 0 => fields(r, Some(field), depth - 1)?,
                4 => return (group == Some(field)).then_some(()),
                _ => return None,
            }
        }
    }
    fields(&mut Reader { rest: bytes }, None, 100).is_some()
}

/// gRPC's length-prefixed message: a compressed flag (0) and the length (4 bytes, big-endian), then the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// The message of one gRPC frame that is all of `bytes`. Compressed messages are refused (the filter never
/// asks for compression).
pub fn unframe(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let (&flag, rest) = bytes.split_first().ok_or(DecodeError("empty frame"))?;
    if flag != 0 {
        return Err(DecodeError("compressed or unknown frame"));
    }
    let (len, message) = rest
        .split_first_chunk::<4>()
        .ok_or(DecodeError("truncated frame header"))?;
    if usize::try_from(u32::from_be_bytes(*len)).ok() != Some(message.len()) {
        return Err(DecodeError("frame length does not match"));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/rls/fixtures.json`: protobuf bytes made by the real Python classes (xds-protos), with the
    /// message each holds written as JSON. Made by `tests/fixtures/rls/make_fixtures.py`.
    fn fixtures() -> serde_json::Value {
        serde_json::from_str(include_str!("../../tests/fixtures/rls/fixtures.json")).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn unit(name: &str) -> Unit {
        match name {
            "SECOND" => Unit::Second,
            "MINUTE" => Unit::Minute,
            "HOUR" => Unit::Hour,
            "DAY" => Unit::Day,
            other => panic!("unit {other}"),
        }
    }

    /// A request as the fixture's JSON (protobuf's JSON mapping, as `MessageToDict` writes it) describes it.
    fn request_of(j: &serde_json::Value) -> Request<'_> {
        let descriptors = j["descriptors"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| Descriptor {
                        entries: d["entries"]
                            .as_array()
                            .map(|es| {
                                es.iter()
                                    .map(|e| {
                                        (
                                            e["key"].as_str().unwrap_or(""),
                                            e["value"].as_str().unwrap_or(""),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        limit: d.get("limit").map(|l| Override {
                            requests_per_unit: l["requestsPerUnit"].as_u64().unwrap_or(0) as u32,
                            unit: unit(l["unit"].as_str().unwrap()),
                        }),
                        hits_addend: d
                            .get("hitsAddend")
                            .map(|h| h.as_str().map_or(0, |s| s.parse().unwrap())),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Request {
            domain: j["domain"].as_str().unwrap_or(""),
            descriptors,
            hits_addend: j["hitsAddend"].as_u64().unwrap_or(0) as u32,
        }
    }

    #[test]
    fn requests_encode_as_the_reference_implementation_does() {
        let f = fixtures();
        let requests = f["requests"].as_array().unwrap();
        assert!(requests.len() >= 5);
        for case in requests {
            let want = unhex(case["hex"].as_str().unwrap());
            let got = request_of(&case["message"]).encode();
            assert_eq!(
                sha(&got),
                sha(&want),
                "{}: got {got:02x?}, want {want:02x?}",
                case["name"]
            );
        }
    }

    fn sha(b: &[u8]) -> String {
        crate::sha256::hex(b)
    }

    #[test]
    fn responses_decode_as_the_reference_implementation_reads_them() {
        let f = fixtures();
        let responses = f["responses"].as_array().unwrap();
        assert!(responses.len() >= 5);
        for case in responses {
            let bytes = unhex(case["hex"].as_str().unwrap());
            let got = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", case["name"]));
            let j = &case["message"];
            let code = |v: &serde_json::Value| match v.as_str() {
                None | Some("UNKNOWN") => CODE_UNKNOWN,
                Some("OK") => CODE_OK,
                Some("OVER_LIMIT") => CODE_OVER_LIMIT,
                Some(other) => panic!("code {other}"),
            };
            let want = Response {
                overall_code: code(&j["overallCode"]),
                statuses: j["statuses"]
                    .as_array()
                    .map(|ss| {
                        ss.iter()
                            .map(|s| Status {
                                code: code(&s["code"]),
                                current_limit: s.get("currentLimit").map(|l| CurrentLimit {
                                    requests_per_unit: l["requestsPerUnit"].as_u64().unwrap_or(0)
                                        as u32,
                                    unit: l["unit"].as_str().map_or(0, |u| unit(u) as i32),
                                }),
                                limit_remaining: s["limitRemaining"].as_u64().unwrap_or(0) as u32,
                                duration_until_reset: s.get("durationUntilReset").map(|d| {
                                    let text = d.as_str().unwrap().trim_end_matches('s');
                                    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
                                    let nanos = if frac.is_empty() {
                                        0
                                    } else {
                                        format!("{frac:0<9}").parse().unwrap()
                                    };
                                    Duration {
                                        seconds: secs.parse().unwrap(),
                                        nanos,
                                    }
                                }),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            assert_eq!(got, want, "{}", case["name"]);
        }
    }

    #[test]
    fn responses_written_back_are_what_the_reference_implementation_writes() {
        let f = fixtures();
        let mut same_bytes = 0;
        for case in f["responses"].as_array().unwrap() {
            let bytes = unhex(case["hex"].as_str().unwrap());
            let r = decode(&bytes).unwrap();
            assert_eq!(decode(&r.encode()).as_ref(), Ok(&r), "{}", case["name"]);
            // Responses with only the fields modelled here come back byte for byte.
            let name = case["name"].as_str().unwrap();
            if !name.contains("skips") && !name.contains("headers") {
                assert_eq!(r.encode(), bytes, "{name}");
                same_bytes += 1;
            }
        }
        assert!(same_bytes >= 5);
    }

    #[test]
    fn encoder_leaves_out_defaults_and_keeps_an_explicit_zero_hits_addend() {
        let r = Request {
            domain: "",
            descriptors: vec![Descriptor {
                entries: vec![("k", "")],
                limit: None,
                hits_addend: Some(0),
            }],
            hits_addend: 0,
        };
        // descriptors { entries { key: "k" } hits_addend {} }
        assert_eq!(
            r.encode(),
            [0x12, 0x07, 0x0a, 0x03, 0x0a, 0x01, b'k', 0x1a, 0x00]
        );
        assert!(Request {
            domain: "",
            descriptors: vec![],
            hits_addend: 0
        }
        .encode()
        .is_empty());
    }

    #[test]
    fn long_fields_get_multi_byte_lengths() {
        let long = "v".repeat(300);
        let r = Request {
            domain: "d",
            descriptors: vec![Descriptor {
                entries: vec![("k", &long)],
                limit: Some(Override {
                    requests_per_unit: u32::MAX,
                    unit: Unit::Day,
                }),
                hits_addend: Some(u64::MAX),
            }],
            hits_addend: u32::MAX,
        };
        let b = r.encode();
        assert_eq!(b.len(), r.descriptors[0].len() + 3 + 3 + 6);
        // The descriptor's length is 2 bytes (> 127), its entry's too.
        assert_eq!(&b[..3], &[0x0a, 0x01, b'd']);
        assert_eq!(b[3], 0x12);
        assert!(b[4] >= 0x80 && b[5] < 0x80);
    }

    #[test]
    fn decoder_skips_unknown_fields_merges_repeated_messages_and_takes_the_last_scalar() {
        // A known field with another wire type than its declared one is garbage, not an unknown field.
        let bytes = [
            0x08, 0x01, // overall_code OK
            0x1a, 0x02, 0x0a, 0x00, // response_headers_to_add (skipped)
            0x2a, 0x01, 0xff, // raw_body (skipped)
            0x09, 1, 2, 3, 4, 5, 6, 7, 8, // overall_code again, as a fixed64
        ];
        assert_eq!(
            decode(&bytes),
            Err(DecodeError("wrong wire type for a varint field"))
        );
        let bytes = [
            0x08, 0x01, // overall_code OK
            0x3d, 1, 2, 3, 4, // field 7 fixed32 (unknown here)
            0x12, 0x08, // status
            0x12, 0x02, 0x08, 0x05, // current_limit { requests_per_unit: 5 }
            0x12, 0x02, 0x10, 0x02, // current_limit { unit: MINUTE } (merged)
            0x08, 0x02, 0x08, 0x01, // overall_code OVER_LIMIT, then OK (last wins)
        ];
        let r = decode(&bytes).unwrap();
        assert_eq!(r.overall_code, CODE_OK);
        assert_eq!(
            r.statuses[0].current_limit,
            Some(CurrentLimit {
                requests_per_unit: 5,
                unit: 2
            })
        );
    }

    #[test]
    fn decoder_refuses_garbage_without_panicking() {
        for bad in [
            &[0x08][..],             // truncated varint
            &[0x12, 0x05, 0x08][..], // truncated message
            &[0x00, 0x01][..],       // field 0
            &[0x0b][..],             // group start
            &[0x08; 11][..],         // overlong varint after a key
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[0x12, 0x02, 0x22, 0x05][..], // duration longer than its status
            &[0x10, 0x01][..],             // statuses as a varint
        ] {
            assert!(decode(bad).is_err(), "{bad:02x?}");
        }
        // Many statuses: refused past MAX_STATUSES.
        let many: Vec<u8> = [0x12, 0x00].repeat(MAX_STATUSES + 1);
        assert_eq!(decode(&many), Err(DecodeError("too many statuses")));
        assert_eq!(
            decode(&many[..2 * MAX_STATUSES]).unwrap().statuses.len(),
            MAX_STATUSES
        );
        // Empty bytes are the empty message: code UNKNOWN.
        assert_eq!(decode(&[]).unwrap(), Response::default());
    }

    #[test]
    fn negative_enums_and_durations() {
        // code: -1 (sign-extended to 10 bytes); duration { seconds: -3, nanos: 5 }
        let mut bytes = vec![0x08];
        put_varint(&mut bytes, -1i64 as u64);
        bytes.extend([0x12, 0x00]);
        let r = decode(&bytes).unwrap();
        assert_eq!(r.overall_code, -1);
        let d = Duration {
            seconds: -3,
            nanos: 5,
        };
        assert_eq!(d.ceil_secs(), 0);
        assert_eq!(
            Duration {
                seconds: 2,
                nanos: 1
            }
            .ceil_secs(),
            3
        );
        assert_eq!(
            Duration {
                seconds: 2,
                nanos: 0
            }
            .ceil_secs(),
            2
        );
    }

    #[test]
    fn framing_round_trips_and_checks_the_length() {
        let m = b"\x08\x01";
        let f = frame(m);
        assert_eq!(f, [0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(unframe(&f), Ok(&m[..]));
        assert_eq!(unframe(&frame(&[])), Ok(&[][..]));
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &[1, 0, 0, 0, 0][..],
            &[0, 0, 0, 0, 3, 8, 1][..],
            &[0, 0, 0, 0, 1, 8, 1][..],
        ] {
            assert!(unframe(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_that_protobuf_would_read_as_a_message() {
        // Typical cluster names are not messages.
        for name in [
            "ratelimit",
            "rate_limit",
            "rate-limit-service",
            "rls",
            "limitador",
            "ext-authz",
            "outbound|8081||ratelimit.default.svc.cluster.local",
            "kuadrant-ratelimit-service",
        ] {
            assert!(!is_wire_format(name.as_bytes()), "{name}");
        }
        // These are: an unknown varint field; a group; an empty message.
        for name in ["H0", "#$", "", "H0H1"] {
            assert!(is_wire_format(name.as_bytes()), "{name:?}");
        }
        // A real serialized GrpcService { envoy_grpc { cluster_name: "rl" } }.
        assert!(is_wire_format(&[0x0a, 0x04, 0x0a, 0x02, b'r', b'l']));
        // Unbalanced or mismatched groups are not.
        for bad in [&b"#"[..], &b"$"[..], &[0x1b, 0x24][..]] {
            assert!(!is_wire_format(bad), "{bad:?}");
        }
    }

    #[test]
    fn units_are_exactly_second_minute_hour_day() {
        for (secs, u) in [
            (1, Unit::Second),
            (60, Unit::Minute),
            (3600, Unit::Hour),
            (86_400, Unit::Day),
        ] {
            assert_eq!(Unit::of_window(secs), Some(u));
            assert_eq!(u.secs(), secs);
        }
        for secs in [0, 2, 30, 59, 61, 120, 7200, 604_800] {
            assert_eq!(Unit::of_window(secs), None);
        }
    }
}
