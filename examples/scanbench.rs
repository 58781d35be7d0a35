//! The JSON scanner alone on large bodies (the shapes of `make bench`'s large requests), for profiling it:
//!
//!     cargo run --release --example scanbench            # natively
//!     node --no-liftoff bench/wasi.mjs target/wasm32-wasip1/release/examples/scanbench.wasm   # in V8
//!
//! Prints the fastest of several timed batches (ns per call, MB/s): on a shared machine the minimum is the
//! figure least disturbed by other work.

use mcp_policy::{json, mcp};
use std::hint::black_box;
use std::time::Instant;

/// The microbenchmark's large body: many small fields (`examples/microbench.rs`'s `blob_args`).
fn rows(bytes: usize) -> String {
    let mut s = String::from(r#"{"run_id":"4f1c0a9e","limit":10,"rows":["#);
    let row = r#"{"k":"metric_name","v":0.123456789,"step":12,"tags":["a","b"]},"#;
    while s.len() + row.len() < bytes {
        s.push_str(row);
    }
    s.pop();
    s.push_str("]}");
    s
}

/// `make bench`'s args256k: one object of ~40-byte entries (`bench/gen.py`'s `tags_filler`).
fn tags(bytes: usize) -> String {
    let mut s = String::from(r#"{"experiment_id":"1","limit":100,"offset":0,"tags":{"#);
    let mut i = 0;
    while s.len() + 40 < bytes {
        s.push_str(&format!(
            r#""tag_{i:05}":"value-{i:05}-{}","#,
            "x".repeat(16)
        ));
        i += 1;
    }
    s.pop();
    s.push_str("}}");
    s
}

/// Long string values (documents, file contents passed as arguments).
fn text(bytes: usize) -> String {
    let chunk =
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, \\\"quoted\\\" and a tab\\t. ";
    let mut s = String::from(r#"{"path":"/tmp/a.txt","content":""#);
    while s.len() + chunk.len() + 2 < bytes {
        s.push_str(chunk);
    }
    s.push_str("\"}");
    s
}

fn call(args: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_run","arguments":{args}}}}}"#)
        .into_bytes()
}

fn row(name: &str, bytes: usize, mut f: impl FnMut()) {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_millis() < 20 {
        f();
        n += 1;
    }
    let per_batch = (n * 30 / 20).max(1);
    let best = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .fold(f64::INFINITY, f64::min);
    println!(
        "{:<36} {:>9} {:>11.0} {:>8.0}",
        name,
        bytes,
        best,
        bytes as f64 / best * 1e3
    );
}

fn main() {
    let cases = [
        ("rows, 1 MiB", call(&rows(1024 * 1024 - 200))),
        ("rows, 256 KB", call(&rows(256 * 1024))),
        ("tags object, 256 KB (args256k)", call(&tags(256 * 1024))),
        ("long string, 1 MiB", call(&text(1024 * 1024))),
    ];
    for (_, body) in &cases {
        assert!(json::check_strict(body).is_ok());
        assert!(mcp::inspect(body).is_ok());
    }
    // SCANBENCH_ONLY=<n>: only case n, checked 5 times, untimed (for valgrind --tool=callgrind).
    if let Some(n) = std::env::var("SCANBENCH_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        if let Some((_, body)) = cases.get(n) {
            for _ in 0..5 {
                let _ = black_box(mcp::inspect(black_box(body)));
            }
        }
        return;
    }
    println!(
        "{:<36} {:>9} {:>11} {:>8}",
        "json::check_strict", "bytes", "ns/call", "MB/s"
    );
    for (name, body) in &cases {
        row(name, body.len(), || {
            let _ = black_box(json::check_strict(black_box(body)));
        });
    }
    println!(
        "{:<36} {:>9} {:>11} {:>8}",
        "mcp::inspect", "bytes", "ns/call", "MB/s"
    );
    for (name, body) in &cases {
        row(name, body.len(), || {
            let _ = black_box(mcp::inspect(black_box(body)));
        });
    }
}
