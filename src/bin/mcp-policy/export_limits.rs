//! `mcp-policy export-limits`: the rate limit service's own configuration for the limits a policy has it
//! count, so that operators write their limits once, in the policy.
//!
//! What the filter asks for each call is `mcp_policy::limits::fleet` (read its module documentation first); this
//! file only writes the same descriptors the way each engine declares limits:
//! - envoyproxy/ratelimit: a config file (`domain` + a tree of `descriptors`): `mcp_rule` → `mcp_limit` →
//!   `mcp_session` (per-session limits) or `mcp_caller` (per-caller limits), the `rate_limit` on the last level. The filter also sends each limit
//!   as the descriptor's `limit` override, which the service honours for any descriptor of a domain its
//!   configuration declares; the tree makes the file complete on its own (and names each counter in its stats).
//! - Limitador: its limits file (a list of limits). Limitador binds descriptors by position, and the filter puts
//!   each limit at a position fixed when the policy loads (`FleetLimit::position`); every condition first checks
//!   that the request has that many descriptors, because a CEL index past the end is an evaluation error, not a
//!   false condition.

use crate::check::read;
use crate::extract::extract;
use crate::Out;
use mcp_policy::limits::fleet::{FleetLimit, LIMIT_KEY, RULE_KEY};
use mcp_policy::policy::{self, Policy};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Prints the rate limit service's own configuration for the limits of the policy in FILE that its
rate_limit_service counts (every limit without \"counted\": \"proxy\"), so that the limits are written
once, in the policy. FILE is read as `check` reads it (policy JSON, Envoy YAML or JSON, Istio WasmPlugin
or TrafficExtension; '-' is standard input) and must hold exactly one policy.

  --format envoy-ratelimit   a config file for envoyproxy/ratelimit (its runtime directory's config/):
                             the policy's domain and one descriptor per limit
  --format limitador         a limits file for Kuadrant's limitador-server (LIMITS_FILE)

The descriptors are the ones the filter sends: mcp_rule (the rule's JSON path; a profile's own rules are
named by the profile's name), mcp_limit (the limit's index and value) and, for per-session limits,
mcp_session (a hash of the session identity), for per-caller limits mcp_caller (a hash of the verified
caller, else of the client address). Export again after
every change to the policy's limits: a limit the service does not know is counted under its old numbers
or not at all (envoyproxy/ratelimit then answers without a limit, which the filter treats as the service
being unavailable).";

const EXIT_STATUS: &str = "\
exit status: 0 printed; 1 unreadable file, no policy or several, invalid policy, or no
rate_limit_service in the policy; 2 usage error";

/// Print the rate limit service's configuration (envoyproxy/ratelimit or Limitador) for a policy's limits
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    /// Which service's configuration to print
    #[arg(long, value_enum)]
    pub format: Format,
    /// Policy JSON, Envoy configuration (YAML or JSON) or Istio manifest; '-' reads standard input
    #[arg(value_name = "POLICY_OR_YAML")]
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// envoyproxy/ratelimit's config file
    EnvoyRatelimit,
    /// Limitador's limits file
    Limitador,
}

/// One level of envoyproxy/ratelimit's descriptor tree.
#[derive(Debug, Serialize)]
struct Node {
    key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<Rate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    descriptors: Vec<Node>,
}

#[derive(Debug, Serialize)]
struct Rate {
    unit: &'static str,
    requests_per_unit: u32,
}

#[derive(Debug, Serialize)]
struct RatelimitConfig<'a> {
    domain: &'a str,
    descriptors: Vec<Node>,
}

/// One limit of Limitador's limits file.
#[derive(Debug, Serialize)]
struct LimitadorLimit<'a> {
    namespace: &'a str,
    name: &'a str,
    max_value: u32,
    seconds: u64,
    conditions: Vec<String>,
    variables: Vec<String>,
}

/// The limits of `policy` the service counts, as envoyproxy/ratelimit's config file (YAML).
fn envoy_ratelimit(policy: &Policy, domain: &str) -> Result<String, String> {
    let mut rules: Vec<Node> = Vec::new();
    for f in policy.fleet_limits() {
        let rate = Rate {
            unit: f.unit.name(),
            requests_per_unit: f.max,
        };
        let limit = match f.identity_key() {
            // Per session or per caller: a count per value of the last entry.
            Some(key) => Node {
                key: LIMIT_KEY,
                value: Some(f.limit.clone()),
                rate_limit: None,
                descriptors: vec![Node {
                    key,
                    value: None,
                    rate_limit: Some(rate),
                    descriptors: Vec::new(),
                }],
            },
            None => Node {
                key: LIMIT_KEY,
                value: Some(f.limit.clone()),
                rate_limit: Some(rate),
                descriptors: Vec::new(),
            },
        };
        match rules
            .iter_mut()
            .find(|r| r.value.as_deref() == Some(f.rule.as_str()))
        {
            Some(rule) => rule.descriptors.push(limit),
            None => rules.push(Node {
                key: RULE_KEY,
                value: Some(f.rule.clone()),
                rate_limit: None,
                descriptors: vec![limit],
            }),
        }
    }
    yaml(&RatelimitConfig {
        domain,
        descriptors: rules,
    })
}

/// `s` as a CEL string literal in single quotes. Rule paths are JSON-escaped already (no control characters);
/// what CEL reads specially in such a literal is the backslash and the quote.
fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The Limitador condition that holds exactly for requests whose descriptor at `f`'s position is `f`'s.
fn limitador_condition(f: &FleetLimit) -> String {
    let p = f.position;
    format!(
        "size(descriptors) > {p} && descriptors[{p}].{RULE_KEY} == {} && descriptors[{p}].{LIMIT_KEY} == {}",
        cel_string(&f.rule),
        cel_string(&f.limit)
    )
}

/// The limits of `policy` the service counts, as Limitador's limits file (YAML).
fn limitador(policy: &Policy, domain: &str) -> Result<String, String> {
    let limits: Vec<LimitadorLimit> = policy
        .fleet_limits()
        .map(|f| LimitadorLimit {
            namespace: domain,
            name: &f.path,
            max_value: f.max,
            seconds: f.unit.secs(),
            conditions: vec![limitador_condition(f)],
            variables: f
                .identity_key()
                .map(|key| format!("descriptors[{}].{key}", f.position))
                .into_iter()
                .collect(),
        })
        .collect();
    yaml(&limits)
}

fn yaml<T: Serialize>(v: &T) -> Result<String, String> {
    serde_yaml_ng::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}

/// The configuration text for `policy` read from `source`, with a header saying what it is.
pub fn export(policy: &Policy, format: Format, source: &str) -> Result<String, String> {
    let Some(service) = &policy.rate_limit_service else {
        return Err("the policy has no rate_limit_service: each Envoy counts its limits, there is nothing for a service to know (add \"rate_limit_service\": {\"cluster\": ...} to count them fleet-wide)".into());
    };
    let (what, body) = match format {
        Format::EnvoyRatelimit => (
            "envoyproxy/ratelimit config file",
            envoy_ratelimit(policy, &service.domain)?,
        ),
        Format::Limitador => ("Limitador limits file", limitador(policy, &service.domain)?),
    };
    let n = policy.fleet_limits().count();
    let mut text = format!(
        "# {what}: the {n} rate limit{} that the rate_limit_service counts for the policy in {source}\n\
         # (domain {:?}). Written by `mcp-policy export-limits`: change the policy, then export again.\n",
        if n == 1 { "" } else { "s" },
        service.domain
    );
    if n == 0 {
        text.push_str("# No limit of the policy is counted by the service (all say \"counted\": \"proxy\", or there are none).\n");
    }
    text.push_str(&body);
    Ok(text)
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{message}");
    ExitCode::from(1)
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let name = if o.file == "-" {
        "(stdin)"
    } else {
        o.file.as_str()
    };
    let found = match read(&o.file).and_then(|bytes| extract(name, &bytes)) {
        Ok(f) => f,
        Err(e) => return fail(&format!("{name}: {e}")),
    };
    let one = match found.as_slice() {
        [one] => one,
        [] => return fail(&format!("{name}: no mcp-policy configuration found")),
        many => {
            let places: Vec<&str> = many.iter().map(|f| f.location.as_str()).collect();
            return fail(&format!(
                "{name}: {} policies found ({}); export-limits reads one: give it a file holding one policy",
                many.len(),
                places.join("; ")
            ));
        }
    };
    let label = if one.location.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {}", one.location)
    };
    let bytes = match &one.policy {
        Ok(b) => b,
        Err(problem) => return fail(&format!("{label}: {problem}")),
    };
    let policy = match policy::parse(bytes) {
        Ok(p) => p,
        Err(errs) => return fail(&format!("{label}: {errs}")),
    };
    match export(&policy, o.format, &label) {
        Ok(text) => {
            out.line(format_args!("{}", text.trim_end()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{label}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_policy::limits::fleet::{plan, Fleet, Plan};
    use mcp_policy::limits::{Scope, Who};
    use serde_yaml_ng::Value as Yaml;

    const POLICY: &str = r#"{"version":"1","rate_limit_service":{"cluster":"rl","domain":"mcp-prod"},
      "tools":{
        "search_runs": {"rate_limit": "10/minute"},
        "transfer_*": {"rate_limit": ["100/hour", {"max": 5, "window": 1, "counted": "proxy"},
                                      {"max": 1000, "window": "day", "cost": "args.amount", "scope": "global"}]},
        "it's": {"rate_limit": {"max": 2, "window": "second", "scope": "global"}}},
      "prompts": {"search_runs": {"rate_limit": "3/hour"}}}"#;

    fn policy() -> Policy {
        policy::parse(POLICY.as_bytes()).unwrap()
    }

    fn opts(args: &[&str]) -> Result<Options, String> {
        match crate::testing::parse(&[&["export-limits"], args].concat())? {
            crate::Command::ExportLimits(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments() {
        let o = opts(&["--format", "envoy-ratelimit", "p.json"]).unwrap();
        assert_eq!(
            (o.format, o.file.as_str()),
            (Format::EnvoyRatelimit, "p.json")
        );
        assert_eq!(
            opts(&["--format=limitador", "-"]).unwrap().format,
            Format::Limitador
        );
        let e = opts(&["--format", "redis", "p.json"]).unwrap_err();
        assert!(
            e.contains("invalid value 'redis'") && e.contains("envoy-ratelimit, limitador"),
            "{e}"
        );
        assert!(opts(&["p.json"]).unwrap_err().contains("--format <FORMAT>"));
    }

    #[test]
    fn envoy_ratelimit_declares_every_descriptor_the_filter_sends() {
        let text = export(&policy(), Format::EnvoyRatelimit, "p.json").unwrap();
        assert!(
            text.starts_with("# envoyproxy/ratelimit config file: the 5 rate limits"),
            "{text}"
        );
        let y: Yaml = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(y["domain"], "mcp-prod");
        let rules = y["descriptors"].as_sequence().unwrap();
        let keys: Vec<&str> = rules.iter().map(|r| r["value"].as_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                r#"tools["it's"]"#,
                r#"tools["search_runs"]"#,
                r#"tools["transfer_*"]"#,
                r#"prompts["search_runs"]"#
            ]
        );
        // Per session: rule → limit → session, the limit on the session level.
        let search = &rules[1];
        assert_eq!(search["key"], "mcp_rule");
        let limit = &search["descriptors"][0];
        assert_eq!(
            (limit["key"].as_str(), limit["value"].as_str()),
            (Some("mcp_limit"), Some("0:10/minute"))
        );
        assert!(limit.get("rate_limit").is_none());
        let session = &limit["descriptors"][0];
        assert_eq!(session["key"], "mcp_session");
        assert!(session.get("value").is_none());
        assert_eq!(session["rate_limit"]["unit"], "minute");
        assert_eq!(session["rate_limit"]["requests_per_unit"], 10);
        // Global: the limit on the mcp_limit level. The proxy-counted limit (index 1) is not there.
        let transfer: Vec<&str> = rules[2]["descriptors"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|d| d["value"].as_str().unwrap())
            .collect();
        assert_eq!(transfer, ["0:100/hour", "2:1000/day"]);
        assert_eq!(rules[2]["descriptors"][1]["rate_limit"]["unit"], "day");
    }

    /// Reads a CEL string literal as `cel_string` writes it.
    fn unquote(s: &str) -> String {
        let inner = s.strip_prefix('\'').unwrap().strip_suffix('\'').unwrap();
        inner.replace("\\'", "'").replace("\\\\", "\\")
    }

    #[test]
    fn limitador_conditions_bind_the_positions_the_filter_sends() {
        let p = policy();
        let text = export(&p, Format::Limitador, "p.json").unwrap();
        let y: Vec<Yaml> = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(y.len(), 5);
        for l in &y {
            assert_eq!(l["namespace"], "mcp-prod");
        }
        let by_name = |n: &str| {
            y.iter()
                .find(|l| l["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let cost = by_name(r#"tools["transfer_*"].rate_limit[2]"#);
        assert_eq!(
            (cost["max_value"].as_u64(), cost["seconds"].as_u64()),
            (Some(1000), Some(86400))
        );
        assert_eq!(cost["variables"].as_sequence().unwrap().len(), 0);
        // Every fleet limit of every rule: the condition names the position the filter's request puts it at,
        // with the values the filter sends there; the session variable reads the same position.
        let top = p.view();
        for (rule_key, args) in [
            ("search_runs", "{}"),
            ("transfer_x", r#"{"amount": 3}"#),
            ("it's", "{}"),
        ] {
            let asks = binds_positions(&y, top, rule_key);
            assert_eq!(asks, if rule_key == "transfer_x" { 2 } else { 1 }, "{args}");
        }
    }

    /// Checks that each Limitador limit of `y` binds the position at which the filter sends the fleet limits
    /// of the tool `tool`'s rule in `view`, with the values it sends there and the variable of its scope's
    /// entry; returns how many requests a call makes.
    fn binds_positions(y: &[Yaml], view: policy::View, tool: &str) -> usize {
        let by_name = |n: &str| {
            y.iter()
                .find(|l| l["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let rule = view.rule_for(tool).unwrap();
        let fleets: Vec<Fleet> = rule
            .limits
            .iter()
            .filter_map(|l| {
                Some(Fleet {
                    limit: l.fleet.as_ref()?,
                    units: 1,
                })
            })
            .collect();
        let who = Who {
            session: "session-1",
            caller: "jwt:alice",
        };
        let Plan::Ask(asks) = plan("mcp-prod", &fleets, who) else {
            panic!()
        };
        for ask in &asks {
            for (position, charge) in ask.charges.iter().enumerate() {
                let f = fleets[*charge].limit;
                let l = by_name(&f.path);
                let cond = l["conditions"][0].as_str().unwrap();
                let want = format!(
                    "size(descriptors) > {position} && descriptors[{position}].mcp_rule == {} && descriptors[{position}].mcp_limit == {}",
                    cel_string(&f.rule),
                    cel_string(&f.limit)
                );
                assert_eq!(cond, want);
                let quoted = cond
                    .split(" == ")
                    .nth(1)
                    .unwrap()
                    .split(" && ")
                    .next()
                    .unwrap();
                assert_eq!(unquote(quoted), f.rule);
                let vars = l["variables"].as_sequence().unwrap();
                match f.scope {
                    Scope::Session => assert_eq!(
                        vars[..],
                        [format!("descriptors[{position}].mcp_session").as_str()]
                    ),
                    Scope::Caller => assert_eq!(
                        vars[..],
                        [format!("descriptors[{position}].mcp_caller").as_str()]
                    ),
                    Scope::Global => assert!(vars.is_empty()),
                }
            }
        }
        asks.len()
    }

    /// Callers and a profile: per-caller limits (the default with `callers`) count by `mcp_caller`; the
    /// profile's own rule is another rule (named by the profile's name), an inherited one the top level's.
    const CALLERS: &str = r#"{"version":"1","rate_limit_service":{"cluster":"rl","domain":"mcp-prod"},
      "callers":{"jwt":{"metadata":"jwt_payload","groups":"groups"}},
      "tools":{
        "search_runs": {"rate_limit": ["10/minute", {"max": 100, "window": "hour", "scope": "session"}]},
        "get_run": {"rate_limit": {"max": 1000, "window": "day", "scope": "global"}}},
      "profiles":[{"name":"ml-admins","match":{"groups":["admins"]},
                   "tools":{"search_runs":{"rate_limit":"50/minute"}}}]}"#;

    #[test]
    fn per_caller_and_profile_limits() {
        let p = policy::parse(CALLERS.as_bytes()).unwrap();
        let text = export(&p, Format::EnvoyRatelimit, "p.json").unwrap();
        assert!(
            text.starts_with("# envoyproxy/ratelimit config file: the 4 rate limits"),
            "{text}"
        );
        let y: Yaml = serde_yaml_ng::from_str(&text).unwrap();
        let rules = y["descriptors"].as_sequence().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r["value"].as_str().unwrap()).collect();
        // get_run once: the profile inherits the top level's limit and its count.
        assert_eq!(
            names,
            [
                r#"tools["get_run"]"#,
                r#"tools["search_runs"]"#,
                r#"profiles["ml-admins"].tools["search_runs"]"#
            ]
        );
        let last = |rule: &Yaml, i: usize| {
            let limit = &rule["descriptors"][i];
            let leaf = &limit["descriptors"][0];
            (
                limit["value"].as_str().unwrap().to_owned(),
                leaf["key"].as_str().unwrap_or("").to_owned(),
                leaf["rate_limit"]["requests_per_unit"].as_u64(),
            )
        };
        let owned = |v: &str, k: &str, n: u64| (v.to_owned(), k.to_owned(), Some(n));
        assert_eq!(last(&rules[1], 0), owned("0:10/minute", "mcp_caller", 10));
        assert_eq!(last(&rules[1], 1), owned("1:100/hour", "mcp_session", 100));
        assert_eq!(last(&rules[2], 0), owned("0:50/minute", "mcp_caller", 50));
        assert_eq!(rules[0]["descriptors"][0]["rate_limit"]["unit"], "day");

        let text = export(&p, Format::Limitador, "p.json").unwrap();
        let y: Vec<Yaml> = serde_yaml_ng::from_str(&text).unwrap();
        let names: Vec<&str> = y.iter().map(|l| l["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                r#"tools["get_run"].rate_limit"#,
                r#"tools["search_runs"].rate_limit[0]"#,
                r#"tools["search_runs"].rate_limit[1]"#,
                r#"profiles[0].tools["search_runs"].rate_limit"#
            ]
        );
        let admins = p.view_of(Some(0));
        for (view, tool) in [
            (p.view(), "search_runs"),
            (p.view(), "get_run"),
            (admins, "search_runs"),
            (admins, "get_run"),
        ] {
            assert_eq!(binds_positions(&y, view, tool), 1, "{tool}");
        }
    }

    #[test]
    fn cel_strings_escape_what_cel_reads_specially() {
        assert_eq!(cel_string(r#"tools["it's"]"#), r#"'tools["it\'s"]'"#);
        assert_eq!(
            cel_string(r#"tools["a\"b\\c"]"#),
            r#"'tools["a\\"b\\\\c"]'"#
        );
        assert_eq!(cel_string("a\u{7f}b"), "'a\\u007fb'");
        assert_eq!(cel_string("ü"), "'ü'");
    }

    #[test]
    fn without_a_service_or_fleet_limits() {
        let local =
            policy::parse(br#"{"version":"1","tools":{"a":{"rate_limit":"1/minute"}}}"#).unwrap();
        let e = export(&local, Format::Limitador, "p.json").unwrap_err();
        assert!(e.contains("no rate_limit_service"), "{e}");
        let none = policy::parse(
            br#"{"version":"1","rate_limit_service":{"cluster":"rl"},"tools":{"a":{"rate_limit":{"max":1,"window":7,"counted":"proxy"}}}}"#,
        )
        .unwrap();
        let text = export(&none, Format::EnvoyRatelimit, "p.json").unwrap();
        assert!(
            text.contains("No limit of the policy is counted by the service"),
            "{text}"
        );
        let y: Yaml = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(y["domain"], "mcp-policy");
        assert_eq!(y["descriptors"].as_sequence().unwrap().len(), 0);
        let text = export(&none, Format::Limitador, "p.json").unwrap();
        let y: Vec<Yaml> = serde_yaml_ng::from_str(&text).unwrap();
        assert!(y.is_empty());
    }
}
