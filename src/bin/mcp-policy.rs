//! `mcp-policy`: the operator CLI, from the same crate as the filter (native only).
//!
//! Subcommands live in `src/bin/mcp-policy/<name>.rs`, each with `USAGE`, `parse_args` and `run`; to add
//! one, add its module, a [`Command`] variant, a line in [`USAGE`] and an arm in [`parse`] and [`main`].

#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/check.rs"]
mod check;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/explain.rs"]
mod explain;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/extract.rs"]
mod extract;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/scan.rs"]
mod scan;

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::{check, explain, scan};
    use std::fmt;
    use std::io::Write;
    use std::process::ExitCode;

    pub const USAGE: &str = "\
usage: mcp-policy COMMAND [ARGS]

commands:
  check FILE...   validate policies: policy JSON, Envoy configurations, Istio WasmPlugin and
                  TrafficExtension manifests
  explain FILE --tool NAME [--args JSON] [--identity ID]
                  what the policy does with one call (or --prompt NAME, --resource URI), and why
  scan URL [--header 'K: V']... [--approve-destructive] [--out FILE]
                  write a starting policy for a live MCP server, classifying its tools by their
                  annotations (hints from the server, not guarantees: review it)
  help [COMMAND]  this text, or a command's usage

`mcp-policy help COMMAND` describes each command. Exit status 2 means a usage error.";

    /// Standard output that never panics: once a write fails (e.g. a closed pipe), the rest is dropped.
    pub struct Out {
        out: std::io::StdoutLock<'static>,
        broken: bool,
    }

    impl Out {
        pub fn line(&mut self, args: fmt::Arguments<'_>) {
            if !self.broken && writeln!(self.out, "{args}").is_err() {
                self.broken = true;
            }
        }
    }

    pub enum Command {
        Check(check::Options),
        Explain(explain::Options),
        Scan(scan::Options),
        Help(Option<String>),
    }

    pub fn parse(args: &[String]) -> Result<Command, String> {
        let Some((cmd, rest)) = args.split_first() else {
            return Err("no command given".into());
        };
        match cmd.as_str() {
            "check" => {
                if rest.iter().any(|a| a == "-h" || a == "--help") {
                    return Ok(Command::Help(Some("check".into())));
                }
                check::parse_args(rest).map(Command::Check)
            }
            "explain" => {
                if rest.iter().any(|a| a == "-h" || a == "--help") {
                    return Ok(Command::Help(Some("explain".into())));
                }
                explain::parse_args(rest).map(Command::Explain)
            }
            "scan" => {
                if rest.iter().any(|a| a == "-h" || a == "--help") {
                    return Ok(Command::Help(Some("scan".into())));
                }
                scan::parse_args(rest).map(Command::Scan)
            }
            "help" | "-h" | "--help" => Ok(Command::Help(rest.first().cloned())),
            other => Err(format!("unknown command '{other}'")),
        }
    }

    fn usage_of(cmd: Option<&str>) -> Option<&'static str> {
        match cmd {
            None => Some(USAGE),
            Some("check") => Some(check::USAGE),
            Some("explain") => Some(explain::USAGE),
            Some("scan") => Some(scan::USAGE),
            Some(_) => None,
        }
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut out = Out {
            out: std::io::stdout().lock(),
            broken: false,
        };
        match parse(&args) {
            Ok(Command::Check(o)) => check::run(&o, &mut out),
            Ok(Command::Explain(o)) => explain::run(&o, &mut out),
            Ok(Command::Scan(o)) => scan::run(&o, &mut out),
            Ok(Command::Help(cmd)) => match usage_of(cmd.as_deref()) {
                Some(text) => {
                    out.line(format_args!("{text}"));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!(
                        "mcp-policy: no help for unknown command '{}'\n\n{USAGE}",
                        cmd.unwrap_or_default()
                    );
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                let text = match args.first().map(String::as_str) {
                    Some("check") => check::USAGE,
                    Some("explain") => explain::USAGE,
                    Some("scan") => scan::USAGE,
                    _ => USAGE,
                };
                eprintln!("mcp-policy: {e}\n\n{text}");
                ExitCode::from(2)
            }
        }
    }
}

/// Built for wasm32 (`cargo build --target wasm32-wasip1` without `--lib`) the CLI is an empty stub; the
/// filter is the library.
#[cfg(target_arch = "wasm32")]
fn main() {}
