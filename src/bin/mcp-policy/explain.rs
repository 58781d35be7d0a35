//! `mcp-policy explain`: what a policy does with one call, and why.
//!
//! The decision, the reply and the rate-limit refusal are not re-implemented here: they come from the
//! filter's own pure core (`engine::judge`, `request::check_body`, `request::conclude`) run on the request
//! body the agent would send, with an in-memory rate-limit store. Only the narrative ("why") is worked out
//! beside it, from the same rule set, and follows the rule the engine picked.

use crate::extract::{extract, Found};
use crate::who::{self, CallerArgs};
use crate::Out;
use mcp_policy::approval::Answer;
use mcp_policy::caller::Caller;
use mcp_policy::engine::{judge, Decision};
use mcp_policy::limits::memory::MemoryStore;
use mcp_policy::limits::{init_store, Charge, Limiter, Scope};
use mcp_policy::mcp::{inspect, Kind};
use mcp_policy::policy::{self, is_glob, Action, Glob, Mode, Policy, RateLimit, Rule, RuleSet};
use mcp_policy::request::{check_body, conclude, Counting, Env, Head, Next, Outcome, ProfileRef};
use serde_json::Value;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Explains what the policy in FILE does with one call: tools/call NAME (--tool), prompts/get NAME
(--prompt) or resources/read URI (--resource), with the arguments --args (a JSON object; none when
omitted). FILE is read as `check` reads it (policy JSON, Envoy YAML or JSON, Istio WasmPlugin or
TrafficExtension; '-' is standard input); a file holding several policies is explained against each.

For a policy with `callers`, --subject, --groups and --principal say who calls (what Envoy would
have verified; none of them: an anonymous caller), and the report starts with:
  caller     the identity, and whether it is authenticated
  profile    the profile that applies, or none (the top-level rules), and each profile tried, in
             order, with the keys of its match that hold and those that do not

For each policy it prints:
  decision   allow | allow, rate limit applies | require approval | deny | unauthenticated
             (and audit mode)
  rule       the key that matched (and, under a profile, whether the profile or the top level
             wrote it), or the default
  why        hidden?, exact key or which glob won (and which others matched), conditions one by
             one, rate limits, approval
  reply      what the agent gets: forwarded, or the JSON-RPC error code and message; for rate
             limits the -31002 once a limit is spent; for approval the callout and the -31003 replies
  limits     the rate limits that count the call, and how many units it takes
  tools/list whether the tool is listed to the agent";

const EXIT_STATUS: &str = "\
exit status: 0 the call is allowed (also while a rate limit has room) by every policy in FILE;
1 some policy denies it or requires approval; 2 usage error, unreadable file, invalid policy or
no policy found (no decision could be explained)";

/// What the policy does with one call (a tool, prompt or resource), and why
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    /// Policy JSON, Envoy configuration (YAML or JSON) or Istio manifest; '-' reads standard input
    #[arg(value_name = "FILE")]
    pub file: String,
    #[command(flatten)]
    pub call: Call,
    /// The call's arguments, a JSON object (none when omitted; not with --resource)
    #[arg(long, value_name = "JSON", value_parser = json_text)]
    pub args: Option<String>,
    /// Who session-scoped rate limits count and what the approval service is told (default:
    /// <identity>; the filter takes it from the policy's identity.headers, else the client IP)
    #[arg(long, value_name = "ID")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub caller: CallerArgs,
}

/// The call explained: exactly one of the three.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Call {
    /// tools/call NAME
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// prompts/get NAME
    #[arg(long, value_name = "NAME")]
    pub prompt: Option<String>,
    /// resources/read URI
    #[arg(long, value_name = "URI")]
    pub resource: Option<String>,
}

/// `--args`: kept as written (the request body carries it verbatim), once it is known to be JSON.
fn json_text(a: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(a) {
        Ok(_) => Ok(a.to_owned()),
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

impl Options {
    /// The method's kind and the tool or prompt name, or the resource URI.
    pub fn call(&self) -> (Kind, &str) {
        let c = &self.call;
        match (&c.tool, &c.prompt, &c.resource) {
            (Some(n), _, _) => (Kind::Tool, n),
            (None, Some(n), _) => (Kind::Prompt, n),
            (None, None, Some(u)) => (Kind::Resource, u),
            // clap requires one of the three (a required group).
            (None, None, None) => (Kind::Tool, ""),
        }
    }

    pub fn kind(&self) -> Kind {
        self.call().0
    }

    pub fn name(&self) -> &str {
        self.call().1
    }

    /// What clap's attributes do not check: the message of a usage error.
    pub fn validate(&self) -> Result<(), String> {
        if self.args.is_some() && self.kind() == Kind::Resource {
            return Err(
                "--args does not apply to --resource (resources/read has no arguments)".into(),
            );
        }
        self.caller.validate()
    }
}

/// The request body the agent would send (JSON-RPC id 1).
fn request_body(o: &Options, kind: Kind) -> String {
    let name = Value::String(o.name().to_owned()).to_string();
    let params = match (kind, &o.args) {
        (Kind::Resource, _) => format!(r#"{{"uri":{name}}}"#),
        (_, Some(args)) => format!(r#"{{"name":{name},"arguments":{}}}"#, args.trim()),
        (_, None) => format!(r#"{{"name":{name}}}"#),
    };
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"{}","params":{params}}}"#,
        kind.method()
    )
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let name = if o.file == "-" {
        "(stdin)"
    } else {
        o.file.as_str()
    };
    let bytes = if o.file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(&o.file)
    };
    let found = match bytes
        .map_err(|e| format!("cannot read: {e}"))
        .and_then(|b| extract(name, &b))
    {
        Ok(f) => f,
        Err(e) => {
            out.line(format_args!("{name}: {e}"));
            return ExitCode::from(2);
        }
    };
    if found.is_empty() {
        out.line(format_args!(
            "{name}: no mcp-policy configuration found (no Envoy HTTP Wasm filter, no Istio WasmPlugin or TrafficExtension)"
        ));
        return ExitCode::from(2);
    }
    let (mut refused, mut trouble) = (false, false);
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.line(format_args!(""));
        }
        let label = if f.location.is_empty() {
            name.to_owned()
        } else {
            format!("{name}: {}", f.location)
        };
        match explain_one(o, f) {
            Ok((lines, allowed)) => {
                out.line(format_args!("{label}"));
                for l in lines {
                    out.line(format_args!("{l}"));
                }
                refused |= !allowed;
            }
            Err(e) => {
                out.line(format_args!("{label}: {e}"));
                trouble = true;
            }
        }
    }
    if trouble {
        ExitCode::from(2)
    } else if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Lines of a two-column report: a label, then text; continuation lines are indented under the text.
struct Report(Vec<String>);

impl Report {
    const WIDTH: usize = 11;
    fn item(&mut self, label: &str, first: impl Into<String>) {
        self.0
            .push(format!("  {label:<w$} {}", first.into(), w = Self::WIDTH));
    }
    fn more(&mut self, text: impl Into<String>) {
        self.0
            .push(format!("  {:<w$} {}", "", text.into(), w = Self::WIDTH));
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Explains one call against one found policy: the report's lines and whether the call is allowed.
fn explain_one(o: &Options, f: &Found) -> Result<(Vec<String>, bool), String> {
    let bytes = f.policy.as_ref().map_err(Clone::clone)?;
    let policy = policy::parse(bytes).map_err(|e| e.to_string())?;
    // Only for the names of the `hide` entries (the compiled globs do not keep their text) and the keys a
    // profile wrote itself.
    let raw: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let kind = o.kind();
    let body = request_body(o, kind);
    let mut r = Report(Vec::new());

    // Who calls, and which rules that caller gets.
    let caller = o.caller.caller();
    let profile = match &policy.callers {
        None => {
            if o.caller.given() {
                r.item(
                    "caller",
                    "ignored: the policy has no `callers` section, so the filter reads no identity and every caller gets the same rules",
                );
            }
            None
        }
        Some(callers) => {
            r.item("caller", who::describe(&caller));
            if callers.required && !caller.authenticated() {
                let reply = mcp_policy::reply::unauthenticated(mcp_policy::caller::NONE_REQUIRED);
                if policy.mode != Mode::Audit {
                    r.item(
                        "decision",
                        "unauthenticated (callers.required: a request without a verified identity is refused)",
                    );
                    r.item("reply", reply_text(&reply.body, reply.status));
                    return Ok((r.0, false));
                }
                r.item(
                    "required",
                    "no verified identity: mode audit logs it as would_deny and lets the request through as anonymous",
                );
                r.more(format!(
                    "enforced, it would get {}",
                    reply_text(&reply.body, reply.status)
                ));
            }
            let (index, lines) = who::profile(&policy, &caller);
            let mut lines = lines.into_iter();
            if let Some(first) = lines.next() {
                r.item("profile", first);
            }
            for l in lines {
                r.more(l);
            }
            index
        }
    };
    let profile_raw = profile.and_then(|i| raw.get("profiles")?.get(i));
    // The caller's rules, as the filter's request path (`check_body`) reads them from the head.
    let view = policy.view_of(profile);
    let identity = o.identity.clone().unwrap_or_else(|| "<identity>".into());
    let head = Head {
        identity: identity.clone(),
        caller: policy.callers.as_ref().map(|_| caller.clone()),
        profile: profile.and_then(|index| {
            let name = policy.profiles.get(index)?.name.clone();
            Some(ProfileRef { index, name })
        }),
        caller_identity: caller
            .limit_key()
            .unwrap_or_else(|| "ip:<client IP>".into()),
        ..Head::default()
    };
    let now_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Audit mode forwards everything; the reply shown is the one enforcement would give.
    let mut enforced = policy.clone();
    enforced.mode = Mode::Enforce;
    let checked = with_store(
        |env| check_body(&enforced, &head, body.as_bytes(), env),
        now_nanos,
    );

    let args_text = match (&o.args, kind) {
        (_, Kind::Resource) => String::new(),
        (Some(a), _) => format!(", arguments {}", a.trim()),
        (None, _) => ", no arguments".into(),
    };
    r.item(
        "call",
        format!("{} {}{args_text}", kind.method(), quote(o.name())),
    );

    let parsed = inspect(body.as_bytes());
    let call = parsed
        .as_ref()
        .ok()
        .and_then(|b| b.messages.first())
        .and_then(|m| m.call());
    let Some(call) = call else {
        // The request itself is refused before any rule is read (e.g. non-object arguments).
        r.item(
            "decision",
            "invalid request (refused before the policy is consulted)",
        );
        if let Outcome::Reply(reply) = &checked.outcome {
            r.item("reply", reply_text(&reply.body, reply.status));
        }
        return Ok((r.0, false));
    };
    let verdict = judge(view, call);
    let set = view.set(kind);
    let hidden = kind == Kind::Tool && view.is_hidden(o.name());
    let rule = if hidden { None } else { set.rule_for(o.name()) };

    let limits: &[RateLimit] = match (&verdict.decision, rule) {
        (Decision::Allow { .. } | Decision::NeedsApproval { .. }, Some(rule)) => &rule.limits,
        _ => &[],
    };
    let decision = match &verdict.decision {
        Decision::Allow { .. } if limits.is_empty() => "allow".to_owned(),
        Decision::Allow { .. } => "allow, rate limit applies".to_owned(),
        Decision::NeedsApproval { .. } if limits.is_empty() => "require approval".to_owned(),
        Decision::NeedsApproval { .. } => "require approval (rate limit applies first)".to_owned(),
        Decision::Deny { .. } => "deny".to_owned(),
        other => format!("{other:?}"),
    };
    let allowed = verdict.decision.is_allow();
    if policy.mode == Mode::Audit && !allowed {
        let logged = match verdict.decision {
            Decision::NeedsApproval { .. } => "would_require_approval",
            _ => "would_deny",
        };
        r.item(
            "decision",
            format!(
                "{decision} (mode audit: logged as {logged}, and the call is forwarded anyway)"
            ),
        );
    } else {
        r.item("decision", decision);
    }
    // Under a profile: who wrote the rule (or the default) that decided.
    let field = match kind {
        Kind::Tool => "tools",
        Kind::Prompt => "prompts",
        Kind::Resource => "resources",
    };
    let origin = |written: bool| match profile_raw {
        None => String::new(),
        Some(_) if written => format!(", from profile {}", quote(profile_name(&policy, profile))),
        Some(_) => ", from the top level".to_owned(),
    };
    let own_key = |key: &str| {
        profile_raw
            .and_then(|p| p.get(field))
            .and_then(|t| t.get(key))
            .is_some()
    };
    let own_default = profile_raw
        .and_then(|p| p.get(default_field(kind)))
        .is_some()
        || profile.is_some_and(|i| policy.profiles.get(i).is_some_and(|p| !p.inherit));
    r.item(
        "rule",
        match (rule, hidden) {
            (_, true) => "none: hidden by policy (hide)".to_owned(),
            (Some(rule), _) if is_glob(&rule.key) => {
                format!("{} (glob{})", quote(&rule.key), origin(own_key(&rule.key)))
            }
            (Some(rule), _) => format!(
                "{} (exact key{})",
                quote(&rule.key),
                origin(own_key(&rule.key))
            ),
            (None, _) => format!(
                "default ({} {}{})",
                default_field(kind),
                set.default.as_str(),
                origin(own_default)
            ),
        },
    );

    // Why.
    let mut why = Vec::new();
    if hidden {
        let top_hide = raw
            .get("hide")
            .filter(|_| profile.is_none_or(|i| policy.profiles.get(i).is_some_and(|p| p.inherit)));
        let entry = [top_hide, profile_raw.and_then(|p| p.get("hide"))]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .find(|p| Glob::new(p).is_ok_and(|g| g.matches(o.name())));
        why.push(match entry {
            Some(p) => format!(
                "{} matches the hide entry {}: a hidden tool is denied whatever the rules say",
                quote(o.name()),
                quote(p)
            ),
            None => "the tool is hidden (hide): denied whatever the rules say".into(),
        });
    } else {
        why.push(precedence(set, o.name(), kind, rule));
        if let Some(rule) = rule {
            why.extend(rule_steps(rule, o.args.as_deref(), &verdict.decision));
        }
    }
    let mut lines = why.into_iter();
    if let Some(first) = lines.next() {
        r.item("why", first);
    }
    for l in lines {
        r.more(l);
    }

    // The reply.
    match &checked.outcome {
        Outcome::Reply(reply) if policy.mode == Mode::Audit => {
            r.item("reply", "none in audit mode: the call is forwarded to the MCP server");
            r.more(format!(
                "enforced, it would get {}",
                reply_text(&reply.body, reply.status)
            ));
        }
        Outcome::Reply(reply) => r.item("reply", reply_text(&reply.body, reply.status)),
        Outcome::Forward(_) => r.item("reply", "none from the filter: the call is forwarded to the MCP server"),
        Outcome::Approve { .. } if policy.mode == Mode::Audit => r.item(
            "reply",
            "none in audit mode: the call is forwarded to the MCP server without asking for approval",
        ),
        // Said by `fleet_reply` below.
        Outcome::Count { .. } => {}
        Outcome::Approve { asks, .. } => {
            let a = policy.approval.as_ref();
            let (cluster, path, authority, timeout) = a.map_or(
                (String::new(), String::new(), String::new(), 0),
                |a| (a.cluster.clone(), a.path.clone(), a.authority.clone(), a.timeout_ms),
            );
            r.item(
                "reply",
                format!("held until the approval service answers: POST {path} to Envoy cluster {} (authority {authority}, timeout {timeout} ms), body:", quote(&cluster)),
            );
            for ask in asks {
                r.more(format!("  {ask}"));
            }
            r.more("approved ({\"approved\": true}): the call is forwarded");
            for (what, answer) in [
                ("refused", Answer::Denied("<the approver's reason>".into())),
                (
                    "no usable answer",
                    Answer::Unavailable("<what went wrong>".into()),
                ),
            ] {
                let (res, _) = with_store(
                    |env| conclude(&enforced, &head, body.as_bytes(), std::slice::from_ref(&answer), env),
                    now_nanos,
                );
                if let Err(reply) = res {
                    r.more(format!("{what}: {}", reply_text(&reply.body, reply.status)));
                }
            }
        }
    }

    if let Outcome::Count { counting, .. } = &checked.outcome {
        fleet_reply(&mut r, &enforced, &head, counting, now_nanos);
    }

    // Rate limits that count the call.
    if limits.is_empty() {
        let none = match &verdict.decision {
            Decision::Deny { .. } => "none: a refused call counts against nothing",
            _ => "none",
        };
        r.item("limits", none);
    } else {
        let key = rule.map_or("", |r| r.key.as_str());
        for (i, (l, c)) in limits.iter().zip(&verdict.charges).enumerate() {
            let text = format!(
                "{}; this call takes {}",
                describe_limit(l, &identity, &policy, &caller),
                plural(c.units as usize, "unit", "units")
            );
            if i == 0 {
                r.item("limits", text);
            } else {
                r.more(text);
            }
            let spent = spent_reply(&enforced, &head, body.as_bytes(), l, now_nanos);
            r.more(format!("  once spent: {spent}"));
        }
        if is_glob(key) {
            r.more(format!(
                "counted per rule: every tool {} matches shares these budgets",
                quote(key)
            ));
        }
        if matches!(verdict.decision, Decision::NeedsApproval { .. }) {
            r.more("units are taken before approval is asked, and given back if it is not granted");
        }
    }

    if kind == Kind::Tool {
        let listed = if view.is_listed(o.name()) {
            "listed".to_owned()
        } else if hidden {
            "removed from tools/list answers (hidden)".to_owned()
        } else {
            "removed from tools/list answers (its calls are always denied; filter_tools_list)"
                .to_owned()
        };
        let listed = if policy.mode == Mode::Audit {
            "listed (audit mode leaves tools/list answers unchanged)".to_owned()
        } else {
            listed
        };
        r.item("tools/list", listed);
    }
    Ok((r.0, allowed))
}

/// The reply of a call whose fleet limits the rate limit service is asked about: where the request goes, and
/// what the call gets when the service says yes or cannot say.
fn fleet_reply(r: &mut Report, policy: &Policy, head: &Head, counting: &Counting, now_nanos: u64) {
    let Some(s) = &policy.rate_limit_service else {
        return;
    };
    let requests = counting.messages().count();
    r.item(
        "reply",
        format!(
            "held until the rate limit service answers: {} to Envoy cluster {} (domain {}, timeout {} ms)",
            plural(requests, "ShouldRateLimit request", "ShouldRateLimit requests"),
            quote(&s.cluster),
            quote(&s.domain),
            s.timeout_ms
        ),
    );
    let room = counting.simulated(policy, None);
    let down = vec![Err("<what went wrong>".to_owned()); requests];
    for (what, answers) in [("room", room), ("no usable answer", down)] {
        let counted = with_store(
            |env| counting.clone().conclude(policy, head, &answers, env),
            now_nanos,
        );
        let text = match counted.next {
            Next::Forward if what == "room" => "the call is forwarded".to_owned(),
            Next::Forward => "forwarded without counting (on_error allow)".to_owned(),
            Next::Approve { .. } => "the approval service is asked next".to_owned(),
            Next::Reply(reply) => reply_text(&reply.body, reply.status),
        };
        r.more(format!("{what}: {text}"));
    }
}

fn profile_name(policy: &Policy, index: Option<usize>) -> &str {
    index
        .and_then(|i| policy.profiles.get(i))
        .map_or("", |p| p.name.as_str())
}

fn with_store<T>(f: impl FnOnce(&Env<'_, MemoryStore>) -> T, now_nanos: u64) -> T {
    let store = MemoryStore::default();
    // A fresh in-memory store cannot fail; a failure would show as the filter's own fail-closed reply.
    let _ = init_store(&store);
    f(&Env {
        store: &store,
        now_nanos,
        audit: false,
    })
}

/// The reply once limit `l` is spent: the limit filled to its max, then the call checked.
fn spent_reply(policy: &Policy, head: &Head, body: &[u8], l: &RateLimit, now_nanos: u64) -> String {
    with_store(
        |env| {
            let limiter = Limiter {
                store: env.store,
                max_tracked: policy.identity.max_tracked,
                hold_secs: policy.hold_secs(),
            };
            if l.fleet.is_some() {
                // Counted by the service: its answer says the limit is spent.
                return match check_body(policy, head, body, env).outcome {
                    Outcome::Count { counting, .. } => {
                        let answers = counting.simulated(policy, Some(l.spec.id));
                        match counting.conclude(policy, head, &answers, env).next {
                            Next::Reply(reply) => reply_text(&reply.body, reply.status),
                            _ => "this call takes no units of it, so it is never refused by it"
                                .to_owned(),
                        }
                    }
                    Outcome::Reply(reply) => reply_text(&reply.body, reply.status),
                    _ => "this call takes no units of it, so it is never refused by it".to_owned(),
                };
            }
            let fill = [Charge {
                limit: l.spec,
                units: l.spec.max,
            }];
            if limiter
                .reserve_for(head.who(), &fill, now_nanos / 1_000_000_000)
                .is_err()
            {
                return "(could not be simulated)".to_owned();
            }
            match check_body(policy, head, body, env).outcome {
                Outcome::Reply(reply) => reply_text(&reply.body, reply.status),
                _ => "this call takes no units of it, so it is never refused by it".to_owned(),
            }
        },
        now_nanos,
    )
}

fn default_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Tool => "default",
        Kind::Prompt => "prompts_default",
        Kind::Resource => "resources_default",
    }
}

/// Which key governs `name`, and why that one: exact key, or the glob precedence.
fn precedence(set: &RuleSet, name: &str, kind: Kind, winner: Option<&Rule>) -> String {
    let mut globs: Vec<(&str, usize)> = set
        .rules()
        .iter()
        .filter(|r| is_glob(&r.key))
        .filter_map(|r| {
            let g = Glob::new(&r.key).ok()?;
            g.matches(name)
                .then_some((r.key.as_str(), g.literal_chars()))
        })
        .collect();
    // The engine's order: most literal characters, then the smallest key in byte order.
    globs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let list = |gs: &[(&str, usize)]| {
        gs.iter()
            .map(|(k, n)| {
                format!(
                    "{} ({})",
                    quote(k),
                    plural(*n, "literal character", "literal characters")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let noun = kind.noun();
    match winner {
        None => format!(
            "no key matches {noun} {}: the default applies ({} is {})",
            quote(name),
            default_field(kind),
            set.default.as_str()
        ),
        Some(rule) if !is_glob(&rule.key) => {
            if globs.is_empty() {
                format!("exact key {}", quote(&rule.key))
            } else {
                format!(
                    "exact key {}: an exact key wins over every glob (also matching: {})",
                    quote(&rule.key),
                    list(&globs)
                )
            }
        }
        Some(rule) => {
            let others: Vec<(&str, usize)> = globs
                .iter()
                .copied()
                .filter(|(k, _)| *k != rule.key)
                .collect();
            let lits = globs
                .iter()
                .find(|(k, _)| *k == rule.key)
                .map_or(0, |(_, n)| *n);
            if others.is_empty() {
                format!(
                    "no exact key {}; the only matching glob is {} ({})",
                    quote(name),
                    quote(&rule.key),
                    plural(lits, "literal character", "literal characters")
                )
            } else {
                let tied: Vec<&str> = others
                    .iter()
                    .filter(|(_, n)| *n == lits)
                    .map(|(k, _)| *k)
                    .collect();
                let how = if tied.is_empty() {
                    format!("it has the most literal characters ({lits})")
                } else {
                    format!(
                        "it ties at {} with {} and is the smallest key in byte order",
                        plural(lits, "literal character", "literal characters"),
                        tied.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
                    )
                };
                format!(
                    "no exact key {}; glob {} wins: {how}; also matching: {}",
                    quote(name),
                    quote(&rule.key),
                    list(&others)
                )
            }
        }
    }
}

/// What the matched rule does with the call: action, conditions one by one, limits, approval.
fn rule_steps(rule: &Rule, args: Option<&str>, decision: &Decision<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let reason = rule
        .reason
        .as_deref()
        .map(|r| format!(" (reason {})", quote(r)))
        .unwrap_or_default();
    if rule.action == Action::Deny {
        out.push(format!("the rule denies: action deny{reason}"));
        return out;
    }
    let args: Option<Value> = args.and_then(|a| serde_json::from_str(a).ok());
    let mut failed = false;
    for (i, c) in rule.conditions.iter().enumerate() {
        let at = format!(
            "condition {} of {}: {}",
            i + 1,
            rule.conditions.len(),
            c.describe()
        );
        if failed {
            out.push(format!("{at}: not checked (an earlier condition failed)"));
            continue;
        }
        let value = match c.lookup(args.as_ref()) {
            Some(v) => format!("{} is {v}", c.path),
            None => format!("{} is missing", c.path),
        };
        if c.holds(args.as_ref()) {
            out.push(format!("{at}: holds ({value})"));
        } else {
            failed = true;
            let said = if rule.reason.is_some() {
                "the call is denied with the rule's reason"
            } else {
                "the call is denied"
            };
            out.push(format!("{at}: FAILS ({value}): {said}"));
        }
    }
    if failed {
        return out;
    }
    if let Decision::Deny { reason, .. } = decision {
        // Conditions hold, but the call cannot be counted (a rate-limit cost argument), or its arguments
        // could not be read: the engine's reason says which.
        out.push(format!("the call is denied: {reason}"));
        return out;
    }
    match rule.action {
        Action::RequireApproval => out.push(format!(
            "the rule requires approval{reason}{}",
            if rule.conditions.is_empty() {
                ""
            } else {
                " once its conditions hold"
            }
        )),
        _ if rule.conditions.is_empty() && rule.limits.is_empty() => {
            out.push("the rule allows the call".into())
        }
        _ if rule.conditions.is_empty() => {
            out.push("the rule allows the call while its rate limits have room".into())
        }
        _ => out.push("every condition holds: the rule allows the call".into()),
    }
    out
}

fn window_text(secs: u64) -> String {
    match secs {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86400 => "day".into(),
        s => format!("{s} s"),
    }
}

fn describe_limit(l: &RateLimit, identity: &str, policy: &Policy, caller: &Caller) -> String {
    let what = match &l.cost {
        Some((path, _)) => format!("units (cost {path})"),
        None => "calls".into(),
    };
    let then = if policy.callers.is_some() {
        "else the caller, else the client IP"
    } else {
        "else the client IP"
    };
    let who = match l.spec.scope {
        Scope::Global => "all callers together (scope global)".to_owned(),
        Scope::Session => format!(
            "per identity (scope session; identity {}, from header {} {then})",
            quote(identity),
            policy.identity.headers.join(" or ")
        ),
        Scope::Caller => match caller.limit_key() {
            Some(key) => format!("per caller (scope caller; caller {})", quote(&key)),
            None => "per caller (scope caller; an anonymous caller is counted by its client IP)"
                .to_owned(),
        },
    };
    let counted = if l.fleet.is_some() {
        ", counted by the rate limit service (fleet-wide)"
    } else if policy.rate_limit_service.is_some() {
        ", counted by each Envoy (counted: proxy)"
    } else {
        ""
    };
    format!(
        "{} {what} per {}, {who}{counted}",
        l.spec.max,
        window_text(l.spec.window_secs)
    )
}

/// `error CODE (HTTP S, decision D): MESSAGE` from a reply body written by the filter.
fn reply_text(body: &str, status: u32) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let err = v.get("error");
    let field = |k: &str| err.and_then(|e| e.get(k));
    let code = field("code").and_then(Value::as_i64).unwrap_or(0);
    let message = field("message").and_then(Value::as_str).unwrap_or(body);
    let decision = field("data")
        .and_then(|d| d.get("decision"))
        .and_then(Value::as_str)
        .map(|d| format!(", {d}"))
        .unwrap_or_default();
    format!("JSON-RPC error {code} (HTTP {status}{decision}): {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Options, String> {
        match crate::testing::parse(&[&["explain"], args].concat())? {
            crate::Command::Explain(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments() {
        let o = opts(&[
            "p.json",
            "--tool",
            "get_run",
            "--args",
            "{\"a\":1}",
            "--identity",
            "me",
        ])
        .unwrap();
        assert_eq!(
            (o.file.as_str(), o.kind(), o.name()),
            ("p.json", Kind::Tool, "get_run")
        );
        assert_eq!(o.args.as_deref(), Some("{\"a\":1}"));
        assert_eq!(o.identity.as_deref(), Some("me"));
        let o = opts(&["-", "--resource", "mlflow://runs/1"]).unwrap();
        assert_eq!(
            (o.file.as_str(), o.kind(), o.name()),
            ("-", Kind::Resource, "mlflow://runs/1")
        );
        assert_eq!(opts(&["p", "--prompt", "x"]).unwrap().kind(), Kind::Prompt);
        // Usage errors: clap's messages for the command line's grammar, ours for what the values mean.
        let err = |args: &[&str]| opts(args).unwrap_err();
        assert!(err(&["p.json"])
            .contains("required arguments were not provided:\n  <--tool <NAME>|--prompt <NAME>|--resource <URI>>"));
        assert!(err(&["--tool", "x"]).contains("required arguments were not provided:\n  <FILE>"));
        assert!(err(&["p", "--tool", "x", "--prompt", "y"])
            .contains("the argument '--tool <NAME>' cannot be used with '--prompt <NAME>'"));
        assert!(err(&["p", "--tool"]).contains("a value is required for '--tool <NAME>'"));
        assert!(err(&["p", "--tool", "x", "--args", "{"])
            .contains("invalid value '{' for '--args <JSON>': not valid JSON"));
        assert!(err(&["p", "--resource", "x", "--args", "{}"]).contains(
            "--args does not apply to --resource (resources/read has no arguments)\n\nUsage: mcp-policy explain"
        ));
        assert!(err(&["p", "q", "--tool", "x"]).contains("unexpected argument 'q'"));
    }

    #[test]
    fn bodies() {
        let mut o = opts(&["p", "--tool", "a\"b"]).unwrap();
        assert_eq!(
            request_body(&o, Kind::Tool),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\"b"}}"#
        );
        o.args = Some(" {\"n\": 1} ".into());
        assert_eq!(
            request_body(&o, Kind::Prompt),
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"a\"b","arguments":{"n": 1}}}"#
        );
        assert_eq!(
            request_body(&o, Kind::Resource),
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a\"b"}}"#
        );
    }
}
