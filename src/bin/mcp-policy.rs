//! `mcp-policy`: the operator CLI. Native only; see `check` for what it validates.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("usage: mcp-policy check FILE...");
    std::process::exit(2);
}

/// Built for wasm32 (e.g. `cargo build --target wasm32-wasip1` without `--lib`) the CLI is an empty stub.
#[cfg(target_arch = "wasm32")]
fn main() {}
