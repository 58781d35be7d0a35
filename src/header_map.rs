//! Envoy's serialised header map (the proxy-wasm ABI's `proxy_get_header_map_pairs`), read in place: one
//! buffer, byte ranges into it, no copy per header; and the same serialisation written ([`serialise`]). Pure,
//! so it is tested natively; the glue fetches and sends the bytes.

use std::ops::Range;

/// A header map as the host serialises it: u32 count, then (u32 name length, u32 value length) per header,
/// then each name and each value followed by a NUL. All integers little-endian.
pub struct HeaderMap {
    raw: Vec<u8>,
    /// (name, value) byte ranges in `raw`, in order.
    spans: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderMap {
    /// `None` if `raw` is malformed (lengths past the end, a truncated table).
    pub fn parse(raw: Vec<u8>) -> Option<Self> {
        let spans = spans(&raw)?;
        Some(HeaderMap { raw, spans })
    }

    /// Every value of `name` (compared ignoring ASCII case), one per header line, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans.iter().filter_map(move |(n, v)| {
            let key = self.raw.get(n.clone())?;
            if key.eq_ignore_ascii_case(name.as_bytes()) {
                self.raw.get(v.clone())
            } else {
                None
            }
        })
    }

    /// The first line's value; bytes that are not UTF-8 become U+FFFD (HTTP/1.1 allows obs-text such as 0xFF
    /// in a value; such a value is no known encoding and no MCP method or name).
    pub fn get(&self, name: &str) -> Option<String> {
        self.values(name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// The first of `names` that comes on more than one header line. Envoy keeps the repeated lines of such
    /// headers apart, [`HeaderMap::get`] sees only the first, and a server may read another.
    pub fn repeated(&self, names: &[&'static str]) -> Option<&'static str> {
        names
            .iter()
            .copied()
            .find(|n| self.values(n).nth(1).is_some())
    }
}

fn spans(raw: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    if raw.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = raw.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = word(0)?;
    let table_end = count.checked_mul(8)?.checked_add(4)?;
    if table_end > raw.len() {
        return None;
    }
    let mut at = table_end;
    let mut spans = Vec::with_capacity(count);
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (name_len, value_len) = (word(sizes)?, word(sizes + 4)?);
        let name = at..at.checked_add(name_len)?;
        let value_start = name.end.checked_add(1)?;
        let value = value_start..value_start.checked_add(value_len)?;
        at = value.end.checked_add(1)?;
        if at > raw.len() {
            return None;
        }
        spans.push((name, value));
    }
    Some(spans)
}

/// The host's serialisation of `pairs`, the format [`HeaderMap::parse`] reads: what the filter sends with a
/// local reply, and what a test host serves.
pub fn serialise(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let size = pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(4 + size);
    out.extend(len(pairs.len()));
    for (k, v) in pairs {
        out.extend(len(k.len()));
        out.extend(len(v.len()));
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(*v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_in_order_ignoring_name_case() {
        let m = HeaderMap::parse(serialise(&[
            (":method", b"POST"),
            ("mcp-name", b"get_run"),
            ("content-length", b"92"),
            ("MCP-NAME", b"delete_run"),
            ("x-empty", b""),
            ("x-bytes", b"a\xffb"),
        ]))
        .unwrap();
        assert_eq!(m.get(":method").as_deref(), Some("POST"));
        assert_eq!(m.get("Content-Length").as_deref(), Some("92"));
        assert_eq!(
            m.values("mcp-name").collect::<Vec<_>>(),
            [&b"get_run"[..], b"delete_run"]
        );
        assert_eq!(m.get("x-empty").as_deref(), Some(""));
        assert_eq!(m.get("x-bytes").as_deref(), Some("a\u{fffd}b"));
        assert!(m.has("x-empty") && !m.has("x-absent"));
        assert_eq!(m.repeated(&["mcp-method", "mcp-name"]), Some("mcp-name"));
        assert_eq!(m.repeated(&["mcp-method", ":method"]), None);
    }

    #[test]
    fn empty_and_malformed_maps() {
        assert!(HeaderMap::parse(Vec::new()).unwrap().get("a").is_none());
        assert!(HeaderMap::parse(serialise(&[])).unwrap().get("a").is_none());
        let good = serialise(&[("a", b"1"), ("bb", b"22")]);
        for cut in 1..good.len() {
            assert!(
                HeaderMap::parse(good[..cut].to_vec()).is_none(),
                "cut at {cut}"
            );
        }
        // a count far beyond the bytes, and lengths that overflow
        assert!(HeaderMap::parse(u32::MAX.to_le_bytes().to_vec()).is_none());
        let mut huge = serialise(&[("a", b"1")]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(huge).is_none());
    }
}
