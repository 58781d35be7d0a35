//! mcp-policy: an Envoy (proxy-wasm) filter that enforces a per-tool policy on Model Context Protocol calls.
//!
//! The pure core (no host calls, tested natively): [`policy`] (the model and its validation), [`caller`] (who
//! is calling, from what Envoy verified), [`json`] and [`mcp`] (bytes to JSON-RPC messages), [`engine`]
//! (decisions), [`record`] and [`label`] (what became of each message, and its name in replies, audit lines
//! and metrics), [`remember`] (approvals given for a while), [`reply`] (what the agent sees), [`request`] (one
//! request body, one pass) and [`flow`] (the per-request state machine over a [`flow::Host`]). The proxy-wasm
//! glue is `filter`, compiled for wasm32 only: the `Host` implementation and the contexts.

pub mod approval;
pub mod audit;
pub mod caller;
pub mod engine;
pub mod flow;
pub mod header_map;
pub mod jcs;
pub mod json;
pub mod label;
pub mod limits;
pub mod mcp;
pub mod names;
pub mod pins;
pub mod policy;
pub mod record;
pub mod remember;
pub mod reply;
pub mod request;
pub mod sha256;
pub mod sse;
pub mod tools_list;

#[cfg(target_arch = "wasm32")]
mod filter;

// The implementations of `json::check_strict` and `mcp::inspect` before the one-pass scanner: the oracle of the
// unit tests here and of the fuzz differentials (verdicts, error kinds, every field read), kept in one file (it
// names this crate `mcp_policy`).
#[cfg(test)]
extern crate self as mcp_policy;
#[cfg(test)]
#[path = "../fuzz/fuzz_targets/reference.rs"]
mod reference;
