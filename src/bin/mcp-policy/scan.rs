//! `mcp-policy scan URL`: ask a live MCP server for its tools (streamable HTTP) and write a starting policy
//! that classifies each tool by the annotations the server gives it.
//!
//! The server is asked with the streamable HTTP client of `client.rs` (shared with `pin`).

use crate::client::{excerpt, fetch, Endpoint};
use crate::render::shell_word;
use crate::{pin, Out};
use mcp_policy::policy::{self, Unpinned};
use serde_json::{json, Value};
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Connects to a live MCP server over streamable HTTP (URL is its MCP endpoint, e.g.
http://127.0.0.1:8001/mcp), lists its tools (initialize, then tools/list following nextCursor),
and writes a policy with one rule per tool, classified by the tool's annotations:

  readOnlyHint: true                            allow
  not read-only, idempotentHint: true and
    destructiveHint: false                      allow with a rate limit (--rate-limit, 60/minute)
  anything else: destructive, or not said       deny (require_approval with --approve-destructive)

Hints a tool does not give take MCP's defaults: not read-only, destructive, not idempotent. Each rule
has a short reason starting with `scan:` (it doubles as a comment), and tools no rule names are
denied (default deny). With --approve-destructive the policy gets an `approval` section naming the
Envoy cluster `approvals`: a placeholder for your approval service.

With --pin the policy also pins each tool's definition (`pins`, with unpinned tools hidden): a tool
that changes later is unlisted and refused until you review it (`mcp-policy pin URL POLICY`). With
--out, the pinned definitions go to a file beside it (FILE with .tools.json for .json), which
`mcp-policy pin` diffs against.

Annotations are hints from the server, not guarantees: review the policy before using it
(`mcp-policy explain` shows what it does with a call). The policy is written to FILE (--out) or
standard output; a summary goes to standard error.";

const EXIT_STATUS: &str = "\
exit status: 0 the policy was written; 1 the server could not be scanned (connection, HTTP or
JSON-RPC error) or FILE could not be written; 2 usage error";

const DEFAULT_RATE_LIMIT: &str = "60/minute";

/// Write a starting policy for a live MCP server, from its tools' annotations
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    #[command(flatten)]
    pub server: Endpoint,
    /// Require approval instead of denying destructive and unknown tools
    #[arg(long)]
    pub approve_destructive: bool,
    /// The limit for idempotent, non-destructive writes
    #[arg(long, value_name = "LIMIT", default_value = DEFAULT_RATE_LIMIT, value_parser = parse_rate_limit)]
    pub rate_limit: String,
    /// Pin each tool's definition (pins), so a tool that changes is refused until reviewed
    #[arg(long)]
    pub pin: bool,
    /// Write the policy to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<String>,
}

/// The limit must be one the policy accepts: checked the way the filter will read it.
fn parse_rate_limit(limit: &str) -> Result<String, String> {
    let probe = json!({"version": "1", "tools": {"t": {"rate_limit": limit}}});
    match policy::parse(probe.to_string().as_bytes()) {
        Ok(_) => Ok(limit.to_owned()),
        Err(e) => Err(format!(
            "not a valid rate limit ({}); use e.g. 60/minute",
            e.0.first().map(|e| e.message.clone()).unwrap_or_default()
        )),
    }
}

// -------------------------------------------------------------------------------------------------
// Classification
// -------------------------------------------------------------------------------------------------

/// What a scanned tool gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Read-only: allowed.
    ReadOnly,
    /// Writes, but idempotent and not destructive: allowed with a rate limit.
    SafeWrite,
    /// Destructive, or not said to be harmless: denied (or approval).
    Risky { why: String },
}

fn hint(annotations: Option<&Value>, name: &str) -> Option<bool> {
    annotations
        .and_then(|a| a.get(name))
        .and_then(Value::as_bool)
}

/// Classifies a tool (an entry of `tools/list`) by its annotations, with MCP's defaults for missing hints
/// (readOnlyHint false, destructiveHint true, idempotentHint false).
pub fn classify(tool: &Value) -> Class {
    let ann = tool.get("annotations").filter(|a| a.is_object());
    let read_only = hint(ann, "readOnlyHint");
    let destructive = hint(ann, "destructiveHint");
    let idempotent = hint(ann, "idempotentHint");
    if read_only == Some(true) {
        return Class::ReadOnly;
    }
    if destructive == Some(false) && idempotent == Some(true) {
        return Class::SafeWrite;
    }
    let why = if ann.is_none() {
        "no annotations, so it may write and destroy (MCP defaults)".to_owned()
    } else if destructive == Some(true) {
        "destructive per server annotations (destructiveHint)".to_owned()
    } else if destructive.is_none() {
        let idem = if idempotent == Some(true) {
            "idempotent, but "
        } else {
            ""
        };
        format!("may write; {idem}destructiveHint not given (MCP default: destructive)")
    } else {
        "writes, not idempotent per server annotations (idempotentHint)".to_owned()
    };
    Class::Risky { why }
}

/// Why a tool name cannot be a policy key naming exactly that tool (`None`: it can).
fn unusable_key(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("its name is empty")
    } else if name.contains(['*', '?']) {
        Some("its name contains '*' or '?', which a policy key reads as a glob")
    } else if name.contains(['[', ']', '{', '}', '\\']) {
        Some("its name contains one of [ ] { } \\, which policy keys may not")
    } else {
        None
    }
}

/// The scanned tools and the policy made of them.
pub struct Scanned {
    /// The policy text (pretty JSON, one rule a line, grouped: allowed, rate-limited, denied).
    pub policy: String,
    pub read_only: usize,
    pub safe_write: usize,
    pub risky: usize,
    /// Tools left to the default, with why.
    pub skipped: Vec<String>,
}

/// Builds the policy for `tools` (the entries of `tools/list`, in server order).
pub fn build_policy(tools: &[Value], o: &Options) -> Scanned {
    let mut groups: [Vec<(String, Value)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut seen: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    for tool in tools {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            skipped.push(format!(
                "a tools/list entry without a string name: {}",
                excerpt(&tool.to_string())
            ));
            continue;
        };
        let shown = Value::String(name.to_owned()).to_string();
        if let Some(why) = unusable_key(name) {
            skipped.push(format!("{shown}: {why}; it falls under the default (deny)"));
            continue;
        }
        // Policy keys may not repeat, not even in another letter case.
        if let Some(prev) = seen.iter().find(|s| s.eq_ignore_ascii_case(name)) {
            let what = if prev == name {
                "listed twice by the server; the first entry is used".to_owned()
            } else {
                format!(
                    "differs from {} only in letter case, which policy keys may not; it falls under the default (deny)",
                    Value::String(prev.clone())
                )
            };
            skipped.push(format!("{shown}: {what}"));
            continue;
        }
        seen.push(name.to_owned());
        let (group, rule) = match classify(tool) {
            Class::ReadOnly => (
                0,
                json!({"action": "allow", "reason": "scan: read-only per server annotations (readOnlyHint)"}),
            ),
            Class::SafeWrite => (
                1,
                json!({"action": "allow", "rate_limit": o.rate_limit,
                       "reason": "scan: writes, but idempotent and not destructive per server annotations; rate-limited"}),
            ),
            Class::Risky { why } if o.approve_destructive => (
                2,
                json!({"action": "require_approval", "reason": format!("scan: {why}; needs approval")}),
            ),
            Class::Risky { why } => (
                2,
                json!({"action": "deny", "reason": format!("scan: {why}")}),
            ),
        };
        if let Some(g) = groups.get_mut(group) {
            g.push((name.to_owned(), rule));
        }
    }
    let [read_only, safe_write, risky] = &groups;
    let mut text = String::from("{\n  \"version\": \"1\",\n  \"default\": \"deny\",\n");
    if o.approve_destructive && !risky.is_empty() {
        text.push_str("  \"approval\": {\"cluster\": \"approvals\"},\n");
    }
    let rules: Vec<String> = groups
        .iter()
        .flatten()
        .map(|(name, rule)| format!("    {}: {}", Value::String(name.clone()), rule_text(rule)))
        .collect();
    if rules.is_empty() {
        text.push_str("  \"tools\": {}\n}\n");
    } else {
        text.push_str("  \"tools\": {\n");
        text.push_str(&rules.join(",\n"));
        text.push_str("\n  }\n}\n");
    }
    Scanned {
        policy: text,
        read_only: read_only.len(),
        safe_write: safe_write.len(),
        risky: risky.len(),
        skipped,
    }
}

/// A rule on one line, fields in the order action, rate_limit, reason.
fn rule_text(rule: &Value) -> String {
    let parts: Vec<String> = ["action", "rate_limit", "reason"]
        .iter()
        .filter_map(|k| rule.get(*k).map(|v| format!("\"{k}\": {v}")))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let server = match fetch(&o.server, "scan") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scan: {e}");
            return ExitCode::from(1);
        }
    };
    let scanned = build_policy(&server.values(), o);
    // The policy must load as the filter would load it; anything else is a bug here.
    if let Err(errs) = policy::parse(scanned.policy.as_bytes()) {
        eprintln!("scan: the generated policy does not validate (a bug in scan): {errs}");
        return ExitCode::from(1);
    }
    eprintln!(
        "scan: {}: {} (protocol {}), {} tool{}",
        o.server.url,
        server.name,
        server.protocol,
        server.tools.len(),
        if server.tools.len() == 1 { "" } else { "s" }
    );
    let risky_action = if o.approve_destructive {
        "require_approval"
    } else {
        "deny"
    };
    eprintln!(
        "scan: {} allow (read-only), {} allow with rate limit {} (idempotent, not destructive), {} {risky_action} (destructive, or not annotated as safe); default deny",
        scanned.read_only, scanned.safe_write, o.rate_limit, scanned.risky
    );
    for s in &scanned.skipped {
        eprintln!("scan: not in the policy: {s}");
    }
    eprintln!(
        "scan: annotations are hints from the server, not guarantees: a server can label any tool read-only. \
         Review every rule before use (mcp-policy explain FILE --tool NAME shows what a rule does)."
    );
    if o.approve_destructive && scanned.risky > 0 {
        eprintln!(
            "scan: approval is asked from the Envoy cluster \"approvals\" (\"approval\": {{\"cluster\": \"approvals\"}}): \
             a placeholder. Define that cluster for your approval service in Envoy, or change approval.cluster \
             (docs/approvals.md, \"Require approval\"; examples/approval_service.py is an example service)."
        );
    }
    let mut text = scanned.policy;
    let mut definitions = None;
    if o.pin {
        let (pinned, skipped) = pin::pin_tools(&server.tools);
        for s in &skipped {
            eprintln!("scan: not pinned: {s}");
        }
        let value = pin::pins_value(&pinned, Unpinned::Hide, "");
        text = match pin::with_pins(&text, &value) {
            Ok(t) if policy::parse(t.as_bytes()).is_ok() => t,
            _ => {
                eprintln!("scan: the policy with pins does not validate (a bug in scan)");
                return ExitCode::from(1);
            }
        };
        eprintln!(
            "scan: pinned the definitions of {}; tools without a pin are unlisted and refused (\"unpinned\": \"hide\")",
            pin::tools(pinned.len())
        );
        definitions = Some(pin::definitions_text(&pinned));
    }
    match &o.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &text) {
                eprintln!("scan: cannot write {path}: {e}");
                return ExitCode::from(1);
            }
            eprintln!("scan: wrote {path}");
            if let Some(defs) = definitions {
                let defs_path = pin::definitions_path(path);
                if let Err(e) = std::fs::write(&defs_path, defs) {
                    eprintln!("scan: cannot write {defs_path}: {e}");
                    return ExitCode::from(1);
                }
                eprintln!("scan: wrote the pinned definitions to {defs_path}");
            }
            let (file, url) = (shell_word(path), shell_word(&o.server.url));
            eprintln!(
                "scan: next: review it, `mcp-policy check {file}`, then `mcp-policy render {file} --format envoy \
                 --upstream {url} --out envoy-mcp.yaml` writes an Envoy bootstrap that enforces it (README, \"Try it\")"
            );
        }
        None => out.line(format_args!("{}", text.trim_end())),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn opts(args: &[&str]) -> Result<Options, String> {
        match crate::testing::parse(&[&["scan"], args].concat())? {
            crate::Command::Scan(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    fn tool(name: &str, ann: Value) -> Value {
        json!({"name": name, "inputSchema": {"type": "object"}, "annotations": ann})
    }

    #[test]
    fn classification_follows_mcp_defaults() {
        let c = |ann: Value| classify(&tool("t", ann));
        assert_eq!(c(json!({"readOnlyHint": true})), Class::ReadOnly);
        // readOnlyHint wins: destructiveHint only means something for tools that write.
        assert_eq!(
            c(json!({"readOnlyHint": true, "destructiveHint": true})),
            Class::ReadOnly
        );
        assert_eq!(
            c(json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": true})),
            Class::SafeWrite
        );
        let risky = |ann: Value| match c(ann) {
            Class::Risky { why } => why,
            other => panic!("{other:?}"),
        };
        assert!(risky(
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true})
        )
        .starts_with("destructive per server annotations"));
        // Idempotent but silent on destructiveHint: MCP's default is destructive.
        assert_eq!(
            risky(json!({"readOnlyHint": false, "idempotentHint": true})),
            "may write; idempotent, but destructiveHint not given (MCP default: destructive)"
        );
        assert_eq!(
            risky(json!({"readOnlyHint": false})),
            "may write; destructiveHint not given (MCP default: destructive)"
        );
        assert!(risky(json!({"destructiveHint": false})).contains("not idempotent"));
        assert!(
            risky(json!({"destructiveHint": false, "idempotentHint": "yes"}))
                .contains("not idempotent")
        );
        assert!(classify(&json!({"name": "t"})) != Class::ReadOnly);
        assert!(risky(json!(null)).starts_with("no annotations"));
        // Strings are not booleans.
        assert!(matches!(
            c(json!({"readOnlyHint": "true"})),
            Class::Risky { .. }
        ));
    }

    #[test]
    fn policy_groups_and_validates() {
        let o = opts(&["http://127.0.0.1:1/mcp"]).unwrap();
        let tools = vec![
            tool(
                "delete_run",
                json!({"readOnlyHint": false, "destructiveHint": true}),
            ),
            tool("get_run", json!({"readOnlyHint": true})),
            tool(
                "set_tag",
                json!({"destructiveHint": false, "idempotentHint": true}),
            ),
            tool("get_*", json!({"readOnlyHint": true})),
            tool("Get_Run", json!({"readOnlyHint": true})),
            tool("get_run", json!({"readOnlyHint": false})),
            json!({"title": "no name"}),
        ];
        let s = build_policy(&tools, &o);
        assert_eq!(
            s.policy,
            r#"{
  "version": "1",
  "default": "deny",
  "tools": {
    "get_run": {"action": "allow", "reason": "scan: read-only per server annotations (readOnlyHint)"},
    "set_tag": {"action": "allow", "rate_limit": "60/minute", "reason": "scan: writes, but idempotent and not destructive per server annotations; rate-limited"},
    "delete_run": {"action": "deny", "reason": "scan: destructive per server annotations (destructiveHint)"}
  }
}
"#
        );
        assert_eq!((s.read_only, s.safe_write, s.risky), (1, 1, 1));
        assert_eq!(s.skipped.len(), 4, "{:?}", s.skipped);
        assert!(s.skipped[0].starts_with("\"get_*\": its name contains '*'"));
        assert!(s.skipped[1].contains("differs from \"get_run\" only in letter case"));
        assert!(s.skipped[2].contains("listed twice"));
        assert!(s.skipped[3].starts_with("a tools/list entry without a string name"));
        policy::parse(s.policy.as_bytes()).unwrap();

        let o = opts(&[
            "http://127.0.0.1:1/mcp",
            "--approve-destructive",
            "--rate-limit",
            "5/hour",
        ])
        .unwrap();
        let s = build_policy(&tools, &o);
        let p: Value = serde_json::from_str(&s.policy).unwrap();
        assert_eq!(p["approval"], json!({"cluster": "approvals"}));
        assert_eq!(p["tools"]["delete_run"]["action"], "require_approval");
        assert_eq!(p["tools"]["set_tag"]["rate_limit"], "5/hour");
        policy::parse(s.policy.as_bytes()).unwrap();
        // Nothing risky: no approval section needed.
        let s = build_policy(&tools[1..2], &o);
        assert!(!s.policy.contains("approval"));
        let s = build_policy(&[], &o);
        assert_eq!(
            s.policy,
            "{\n  \"version\": \"1\",\n  \"default\": \"deny\",\n  \"tools\": {}\n}\n"
        );
        policy::parse(s.policy.as_bytes()).unwrap();
    }

    #[test]
    fn arguments() {
        let o = opts(&[
            "http://127.0.0.1:8001/mcp",
            "--header",
            "Authorization: Bearer a:b",
            "-H",
            "x-k:v",
            "--out",
            "p.json",
            "--timeout",
            "2.5",
        ])
        .unwrap();
        assert_eq!(
            o.server.headers,
            vec![
                ("Authorization".into(), "Bearer a:b".into()),
                ("x-k".into(), "v".into())
            ]
        );
        assert_eq!(o.out.as_deref(), Some("p.json"));
        assert_eq!(o.server.timeout, Duration::from_millis(2500));
        assert_eq!(o.rate_limit, "60/minute");
        let o = opts(&["HTTPS://example.com/mcp", "-o", "q.json"]).unwrap();
        assert_eq!(o.out.as_deref(), Some("q.json"));
        assert_eq!(o.server.timeout, Duration::from_secs(30));
        assert!(o.server.headers.is_empty() && !o.approve_destructive);
        // Usage errors: clap's messages for the command line's grammar, ours for what the values mean.
        let err = |args: &[&str]| opts(args).unwrap_err();
        assert!(err(&[]).contains("required arguments were not provided:\n  <URL>"));
        assert!(err(&["ftp://x/mcp"]).contains(
            "invalid value 'ftp://x/mcp' for '<URL>': the URL must start with http:// or https://"
        ));
        assert!(err(&["http://a b/mcp"]).contains("not a valid URL"));
        assert!(
            err(&["http://a/mcp", "http://b/mcp"]).contains("unexpected argument 'http://b/mcp'")
        );
        assert!(err(&["http://a/mcp", "--header", "novalue"])
            .contains("for '--header <NAME: VALUE>': a header is written 'NAME: VALUE'"));
        assert!(err(&["http://a/mcp", "--header", "bad name: v"])
            .contains("invalid header name \"bad name\""));
        assert!(err(&["http://a/mcp", "-H", "k: a\u{1}b"])
            .contains("the value of header k has control characters"));
        assert!(err(&["http://a/mcp", "--rate-limit", "10/fortnight"])
            .contains("for '--rate-limit <LIMIT>': not a valid rate limit"));
        for t in ["0", "-1", "3601", "NaN", "inf", "soon"] {
            assert!(
                err(&["http://a/mcp", "--timeout", t])
                    .contains(&format!("invalid value '{t}' for '--timeout <SECONDS>'")),
                "{t}"
            );
        }
        assert!(err(&["http://a/mcp", "--frob"]).contains("unexpected argument '--frob'"));
        assert!(err(&["http://a/mcp", "--out"]).contains("a value is required for '--out <FILE>'"));
    }
}
