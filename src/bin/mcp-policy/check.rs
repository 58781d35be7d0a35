//! `mcp-policy check`: validate every policy found in the given files, the way the filter would.

use crate::extract::{extract, Found, Host};
use crate::who;
use crate::Out;
use mcp_policy::policy;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Validates each mcp-policy configuration found in each FILE ('-' reads standard input):
  - a policy JSON file (*.json, or any file whose text starts with '{');
  - an Envoy configuration, YAML or JSON: every HTTP Wasm filter
    (@type envoy.extensions.filters.http.wasm.v3.Wasm, or a TypedStruct of that type, at any
    depth: filter chains, ECDS, typed_per_filter_config, Istio EnvoyFilter patches) must carry
    the policy JSON as a google.protobuf.StringValue `configuration`;
  - Istio WasmPlugin and TrafficExtension manifests (extensions.istio.io): spec.pluginConfig
    (TrafficExtension: spec.wasm.pluginConfig) is the policy, as YAML.
YAML files may hold several documents.

Prints `FILE: ok (N rules, default X)` per policy (and `, N profiles`), or every error with its
path and fix. Warnings (the policy is valid, exit status 0) follow as `  warning: ...` lines: a
caller profile that can never match because an earlier profile takes all its callers, and
session-scoped rate limits counted per MCP session, whose budget a client renews by opening a new
session (a note when they count per another identity header, which Envoy must set).
Also checks that each policy can run where it is: `hold_headers` (default true) needs the Envoy
Wasm filter's `allow_on_headers_stop_iteration: true`, and must be false in an Istio WasmPlugin or
TrafficExtension (which cannot set that flag); otherwise every request would hang.";

const EXIT_STATUS: &str = "\
exit status: 0 all valid; 1 an invalid policy, an unreadable file, or a file (without
--skip-missing: any file) with no mcp-policy configuration; 2 usage error";

/// Validate policies: policy JSON, Envoy configurations, Istio WasmPlugin and TrafficExtension manifests
#[derive(Debug, Default, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    /// A file without any mcp-policy configuration is reported as skipped instead of failing (at least
    /// one policy must still be found among all files)
    #[arg(long)]
    pub skip_missing: bool,
    /// Policy JSON, Envoy configuration (YAML or JSON) or Istio manifest; '-' reads standard input
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

/// The bytes of `file` ('-': standard input), or why not.
pub fn read(file: &str) -> Result<Vec<u8>, String> {
    let res = if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(file)
    };
    res.map_err(|e| format!("cannot read: {e}"))
}

/// Validates one found configuration; prints the verdict. True when valid.
fn verdict(out: &mut Out, label: &str, found: &Found) -> bool {
    let bytes = match &found.policy {
        Ok(b) => b,
        Err(problem) => {
            out.line(format_args!("{label}: {problem}"));
            return false;
        }
    };
    match policy::parse(bytes) {
        Ok(p) => {
            let n = p.rules().len();
            let mut summary = format!(
                "{n} rule{}, default {}",
                if n == 1 { "" } else { "s" },
                p.default.as_str()
            );
            let profiles = p.profiles.len();
            if profiles > 0 {
                summary.push_str(&format!(
                    ", {profiles} profile{}",
                    if profiles == 1 { "" } else { "s" }
                ));
            }
            let fits = match held_headers(p.hold_headers, &found.host) {
                Held::Fine => {
                    out.line(format_args!("{label}: ok ({summary})"));
                    true
                }
                Held::Note(note) => {
                    out.line(format_args!("{label}: ok ({summary})"));
                    out.line(format_args!("  note: {note}"));
                    true
                }
                Held::Hangs(error) => {
                    out.line(format_args!(
                        "{label}: the policy is valid ({summary}) but cannot run here (1 error)"
                    ));
                    out.line(format_args!("  - {error}"));
                    false
                }
            };
            for r in who::remarks(&p) {
                match r {
                    who::Remark::Warning(w) => out.line(format_args!("  warning: {w}")),
                    who::Remark::Note(n) => out.line(format_args!("  note: {n}")),
                }
            }
            fits
        }
        Err(errs) => {
            out.line(format_args!("{label}: {errs}"));
            false
        }
    }
}

/// Whether a policy's `hold_headers` fits what runs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    Fine,
    /// Works, but gives something up; said, not an error.
    Note(String),
    /// Every request with a body would hang: an error, with the field and the fix.
    Hangs(String),
}

/// Compares the policy's `hold_headers` with the Wasm filter's `allow_on_headers_stop_iteration`. A filter
/// that stops iteration on request headers without that flag never gets the body from Envoy.
pub fn held_headers(hold_headers: bool, host: &Host) -> Held {
    match (hold_headers, host) {
        (_, Host::PolicyFile) => Held::Fine,
        (true, Host::EnvoyWasm { stop_iteration: Some(true), .. }) => Held::Fine,
        (true, Host::EnvoyWasm { stop_iteration, field }) => Held::Hangs(format!(
            "hold_headers: the policy holds request headers until the body is decided (hold_headers: true, the default), \
             but {field} is {}: Envoy would never deliver the body to the filter and every request with a body would hang; \
             fix: set `allow_on_headers_stop_iteration: true` in the filter's config, or, where it cannot be set, \
             \"hold_headers\": false in the policy",
            match stop_iteration {
                Some(_) => "false",
                None => "absent (false)",
            }
        )),
        (false, Host::EnvoyWasm { stop_iteration: Some(true), field }) => Held::Note(format!(
            "hold_headers is false although {field} is true: the filter sends the headers on at once, so it \
             sets no x-mcp-* headers and sends filtered tools/list answers chunked; remove \"hold_headers\": false \
             unless the policy is meant for Istio"
        )),
        (false, Host::EnvoyWasm { .. }) => Held::Fine,
        (true, Host::Istio { kind, config }) => Held::Hangs(format!(
            "hold_headers: must be false in an Istio {kind}, which cannot set the Envoy Wasm filter's \
             allow_on_headers_stop_iteration: a filter holding headers would never get the body and every request \
             with a body would hang (hold_headers is true by default); fix: add `hold_headers: false` under {config}"
        )),
        (false, Host::Istio { .. }) => Held::Fine,
    }
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let (mut checked, mut bad) = (0usize, 0usize);
    for file in &o.files {
        let name = if file == "-" {
            "(stdin)"
        } else {
            file.as_str()
        };
        let found = match read(file).and_then(|bytes| extract(name, &bytes)) {
            Ok(f) => f,
            Err(e) => {
                out.line(format_args!("{name}: {e}"));
                bad += 1;
                continue;
            }
        };
        if found.is_empty() {
            let what = "no mcp-policy configuration found (no Envoy HTTP Wasm filter, no Istio WasmPlugin or TrafficExtension)";
            if o.skip_missing {
                out.line(format_args!("{name}: skipped: {what}"));
            } else {
                out.line(format_args!("{name}: {what}"));
                bad += 1;
            }
            continue;
        }
        for f in &found {
            let label = if f.location.is_empty() {
                name.to_owned()
            } else {
                format!("{name}: {}", f.location)
            };
            checked += 1;
            if !verdict(out, &label, f) {
                bad += 1;
            }
        }
    }
    if checked == 0 && bad == 0 {
        out.line(format_args!(
            "no mcp-policy configuration found in any file"
        ));
        return ExitCode::from(1);
    }
    if o.files.len() > 1 {
        out.line(format_args!(
            "check: {checked} polic{} checked, {bad} problem{}",
            if checked == 1 { "y" } else { "ies" },
            if bad == 1 { "" } else { "s" }
        ));
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Options, String> {
        match crate::testing::parse(&[&["check"], args].concat())? {
            crate::Command::Check(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments() {
        let o = opts(&["a.json", "-", "--skip-missing", "b.yaml"]).unwrap();
        assert!(o.skip_missing);
        assert_eq!(o.files, ["a.json", "-", "b.yaml"]);
        // After `--`, everything is a file, even what looks like an option.
        let o = opts(&["--", "--skip-missing", "-x"]).unwrap();
        assert!(!o.skip_missing);
        assert_eq!(o.files, ["--skip-missing", "-x"]);
        assert!(opts(&[])
            .unwrap_err()
            .contains("required arguments were not provided:\n  <FILE>..."));
        assert!(opts(&["--nope", "x"])
            .unwrap_err()
            .contains("unexpected argument '--nope'"));
    }
}
