//! `mcp-policy`: the operator CLI, from the same crate as the filter (native only).
//!
//! Arguments are parsed by clap (derive). Each subcommand is one file, `src/bin/mcp-policy/<name>.rs`, holding
//! its `Options` (a `clap::Args` struct: its flags, `about`, `long_about` and `after_help`) and
//! `run(&Options, &mut Out) -> ExitCode` (a larger one is a folder, `src/bin/mcp-policy/<name>/mod.rs`). To add a command: add the file, a `mod` line below, a [`Command`]
//! variant and an arm in [`run`]. Checks across several options (what clap's attributes cannot say) go in an
//! `Options::validate` that returns the message of a usage error.

#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/approvals/mod.rs"]
mod approvals;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/check.rs"]
mod check;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/client.rs"]
mod client;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/explain.rs"]
mod explain;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/export_limits.rs"]
mod export_limits;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/extract.rs"]
mod extract;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/pin.rs"]
mod pin;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/pretty.rs"]
mod pretty;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/render/mod.rs"]
mod render;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/scan.rs"]
mod scan;
#[cfg(not(target_arch = "wasm32"))]
#[path = "mcp-policy/who.rs"]
mod who;

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::{approvals, check, explain, export_limits, pin, render, scan};
    use clap::{CommandFactory, Parser, Subcommand};
    use std::fmt;
    use std::io::Write;
    use std::process::ExitCode;

    const EXAMPLES: &str = "\
examples:
  mcp-policy check FILE...                        validate every policy in the files (policy JSON,
                                                  Envoy YAML, Istio manifests)
  mcp-policy explain FILE --tool NAME --args '{\"max_results\": 500}'
                                                  what the policy does with that call, and why
  mcp-policy explain FILE --tool NAME --subject alice --groups ml-admins,readers
                                                  the same, for that caller (its profile, and why)
  mcp-policy scan http://127.0.0.1:8001/mcp --pin --out policy.json
                                                  a starting policy for a live MCP server, its
                                                  tools' definitions pinned
  mcp-policy pin http://127.0.0.1:8001/mcp policy.json
                                                  refresh the pins, showing what changed
  mcp-policy render policy.json --format envoy --upstream http://127.0.0.1:8001/mcp --out envoy-mcp.yaml
                                                  a ready Envoy bootstrap for it (also: lds,
                                                  wasmplugin, trafficextension)
  mcp-policy export-limits --format limitador policy.json > limits.yaml
                                                  the rate limit service's configuration for
                                                  the limits it counts (or envoy-ratelimit)
  mcp-policy approvals --approvers approvers.txt  the approvals console on http://127.0.0.1:8002/

`mcp-policy help COMMAND` (or `mcp-policy COMMAND --help`) describes each command.
Exit status 2 means a usage error.";

    /// Checks, explains and writes policies of mcp-policy, the Envoy filter enforcing per-tool policy on
    /// Model Context Protocol calls.
    #[derive(Debug, Parser)]
    #[command(name = "mcp-policy", version, after_help = EXAMPLES)]
    pub struct Cli {
        #[command(subcommand)]
        pub command: Command,
    }

    #[derive(Debug, Subcommand)]
    pub enum Command {
        Check(check::Options),
        Explain(explain::Options),
        Scan(scan::Options),
        Pin(pin::Options),
        Render(render::Options),
        ExportLimits(export_limits::Options),
        Approvals(approvals::Options),
    }

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

    /// Parses the command line as the CLI does, including the checks across options: a usage error is a
    /// `clap::Error` (exit status 2, the message and the command's usage on standard error).
    pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let invalid = match &cli.command {
            Command::Explain(o) => o.validate().err().map(|e| ("explain", e)),
            Command::Render(o) => o.validate().err().map(|e| ("render", e)),
            Command::Check(_)
            | Command::Scan(_)
            | Command::Pin(_)
            | Command::ExportLimits(_)
            | Command::Approvals(_) => None,
        };
        match invalid {
            Some((name, message)) => Err(usage_error(name, &message)),
            None => Ok(cli),
        }
    }

    /// A usage error of the subcommand `name`, rendered by clap like its own (message, usage, hint).
    fn usage_error(name: &str, message: &str) -> clap::Error {
        let mut cmd = Cli::command();
        // Gives each subcommand its full name ("mcp-policy explain") for the usage line.
        cmd.build();
        let kind = clap::error::ErrorKind::ArgumentConflict;
        match cmd.find_subcommand_mut(name) {
            Some(sub) => sub.error(kind, message),
            None => cmd.error(kind, message),
        }
    }

    fn run(cli: &Cli, out: &mut Out) -> ExitCode {
        match &cli.command {
            Command::Check(o) => check::run(o, out),
            Command::Explain(o) => explain::run(o, out),
            Command::Scan(o) => scan::run(o, out),
            Command::Pin(o) => pin::run(o, out),
            Command::Render(o) => render::run(o, out),
            Command::ExportLimits(o) => export_limits::run(o, out),
            Command::Approvals(o) => approvals::run(o, out),
        }
    }

    pub fn main() -> ExitCode {
        let cli = match parse(std::env::args_os()) {
            Ok(cli) => cli,
            // Help and --version go to standard output with status 0; usage errors to standard error with 2.
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        };
        let mut out = Out {
            out: std::io::stdout().lock(),
            broken: false,
        };
        run(&cli, &mut out)
    }

    #[cfg(test)]
    pub mod testing {
        /// Parses `args` after the program name, as the CLI does; `Err` is the rendered usage error.
        pub fn parse(args: &[&str]) -> Result<super::Command, String> {
            super::parse(std::iter::once("mcp-policy").chain(args.iter().copied()))
                .map(|cli| cli.command)
                .map_err(|e| e.to_string())
        }

        #[test]
        fn the_command_line_interface_is_well_formed() {
            use clap::CommandFactory;
            super::Cli::command().debug_assert();
        }
    }
}

/// Built for wasm32 (`cargo build --target wasm32-wasip1` without `--lib`) the CLI is an empty stub; the
/// filter is the library.
#[cfg(target_arch = "wasm32")]
fn main() {}
