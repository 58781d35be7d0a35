//! The policy: what the operator wrote (validated by [`parse`]) compiled into a form that decides fast.
//! This file is the compiled model; `parse/` validates the JSON into it (start with `parse/fields.rs`, the table
//! of every field the format has).

mod condition;
mod glob;
mod parse;
mod profile;

pub use condition::{json_eq, lookup, Condition, Op, OP_NAMES};
pub use glob::{is_glob, Glob};
pub use parse::{parse, ConfigError, ConfigErrors};
pub use profile::{Callers, ClaimPath, Jwt, Match, Profile, View};

use crate::limits::fleet::{FleetLimit, RateLimitService};
use crate::limits::{LimitSpec, Scope};
use crate::names::LookAlikes;
use std::collections::HashMap;

/// What a rule (or the default posture) does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Ask the approval service first (after conditions and rate limits).
    RequireApproval,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::RequireApproval => "require_approval",
        }
    }
}

/// `mode`: enforce decisions, or only log and count them (`audit`, for rolling out a new policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// `export_headers`: the upstream request headers that carry the MCP method, the tool and the caller's
/// profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeaders {
    pub method: String,
    pub tool: String,
    /// Set at the request headers when a caller profile applies (policies with `profiles`).
    pub profile: String,
}

/// The default names of the exported headers (method, tool, profile).
pub const EXPORTED: [&str; 3] = ["x-mcp-method", "x-mcp-tool", "x-mcp-profile"];

impl Default for ExportHeaders {
    fn default() -> Self {
        let [method, tool, profile] = EXPORTED.map(String::from);
        ExportHeaders {
            method,
            tool,
            profile,
        }
    }
}

/// `pins`: the tool definitions the operator reviewed, and what happens to tools without a pin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// (tool name (exact), `sha256:` and 64 lower-case hex digits ([`crate::pins`])), sorted by name. A sorted
    /// list rather than a map: a few dozen entries, and no second hash map type in the wasm.
    tools: Vec<(String, String)>,
    pub unpinned: Unpinned,
}

impl Pins {
    /// Adds or replaces the pin of `tool`.
    pub fn insert(&mut self, tool: &str, pin: String) {
        match self.tools.binary_search_by(|(t, _)| t.as_str().cmp(tool)) {
            Ok(i) => {
                if let Some(slot) = self.tools.get_mut(i) {
                    slot.1 = pin;
                }
            }
            Err(i) => self.tools.insert(i, (tool.to_owned(), pin)),
        }
    }

    /// The pin of `tool`.
    pub fn get(&self, tool: &str) -> Option<&str> {
        let i = self
            .tools
            .binary_search_by(|(t, _)| t.as_str().cmp(tool))
            .ok()?;
        self.tools.get(i).map(|(_, pin)| pin.as_str())
    }

    /// Every (tool, pin), by tool name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tools.iter().map(|(t, p)| (t.as_str(), p.as_str()))
    }
}

/// `pins.unpinned`: what becomes of a listed tool that has no pin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unpinned {
    /// Listed and callable as the rules say.
    #[default]
    Allow,
    /// Removed from tools/list answers and refused: a tool the server grew is not called unreviewed.
    Hide,
}

/// `tool_names`: which tool names a call may carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolNames {
    /// Any name that is not malformed ([`crate::names::malformed`]).
    #[default]
    Lenient,
    /// Only names in MCP's tool-name guidance ([`crate::names::in_guidance`]).
    Strict,
}

/// One entry of `tools`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The key as written: an exact tool name or a glob.
    pub key: String,
    pub action: Action,
    pub reason: Option<String>,
    /// All must hold, else the call is denied with `reason`.
    pub conditions: Vec<Condition>,
    /// All must have room, else the call is refused (-31002). Counted per rule: tools matched by one glob
    /// share its budget.
    pub limits: Vec<RateLimit>,
}

/// One entry of a rule's `rate_limit`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub spec: LimitSpec,
    /// `cost`: the argument path whose value is consumed instead of 1 (segments after `args`).
    pub cost: Option<(String, Vec<String>)>,
    /// Counted by the `rate_limit_service` (and what it is told), else by this Envoy (`None`).
    pub fleet: Option<FleetLimit>,
}

impl RateLimit {
    /// e.g. `10 calls per 60s`, `100000 units per 86400s (global)` or `5 calls per 60s (per caller)`.
    pub fn describe(&self) -> String {
        let what = if self.cost.is_some() {
            "units"
        } else {
            "calls"
        };
        let scope = match self.spec.scope {
            Scope::Session => "",
            Scope::Caller => " (per caller)",
            Scope::Global => " (global)",
        };
        format!(
            "{} {what} per {}s{scope}",
            self.spec.max, self.spec.window_secs
        )
    }
}

/// Who a session-scoped limit counts: the first present header, else the client address.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Lower-case header names, in order of preference.
    pub headers: Vec<String>,
    /// Slots for distinct identities (bounded rate-limit state).
    pub max_tracked: u32,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            headers: vec!["mcp-session-id".into()],
            max_tracked: crate::limits::DEFAULT_MAX_TRACKED,
        }
    }
}

impl Identity {
    /// The identity of a request: the first non-empty configured header, else the verified caller's
    /// [limit key](crate::caller::Caller::limit_key) (policies with `callers`: without a session header,
    /// session-scoped limits count per caller), else the client IP (no port). `source_address` is only called
    /// when neither is there (asking Envoy for it costs a host call).
    pub fn resolve(
        &self,
        header: impl Fn(&str) -> Option<String>,
        caller: Option<&str>,
        source_address: impl FnOnce() -> Option<String>,
    ) -> String {
        for h in &self.headers {
            if let Some(v) = header(h).filter(|v| !v.is_empty()) {
                return v;
            }
        }
        if let Some(c) = caller {
            return c.to_owned();
        }
        client_ip(source_address)
    }
}

/// The client's IP (no port) from `source_address`, or `unknown`.
pub fn client_ip(source_address: impl FnOnce() -> Option<String>) -> String {
    source_address()
        .as_deref()
        .map(strip_port)
        .unwrap_or("unknown")
        .to_owned()
}

/// `1.2.3.4:5678` → `1.2.3.4`; `[::1]:80` → `::1`; anything else unchanged.
pub fn strip_port(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => addr,
    }
}

/// Default for `max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A validated, compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default: Action,
    pub max_body_bytes: usize,
    /// Hold the request headers while the body is read (`hold_headers`, default true). Must match the Wasm
    /// filter's `allow_on_headers_stop_iteration`: without that flag Envoy never delivers the body to a
    /// filter that paused the headers. When false the headers go upstream at once and only the body is held.
    pub hold_headers: bool,
    pub identity: Identity,
    /// Where `require_approval` calls are sent (required when any rule or the default requires approval).
    pub approval: Option<crate::approval::ApprovalConfig>,
    /// The rate limit service that counts every limit without `"counted": "proxy"`, fleet-wide.
    pub rate_limit_service: Option<RateLimitService>,
    /// `hide`: tools removed from tools/list and denied.
    pub hide: Vec<Glob>,
    /// `filter_tools_list`: also remove tools whose calls are always denied.
    pub filter_tools_list: bool,
    pub mode: Mode,
    /// `None` when `export_headers` is false.
    pub export: Option<ExportHeaders>,
    /// `tools` (with `default`), `prompts` (with `prompts_default`), `resources` (with `resources_default`).
    pub tools: RuleSet,
    pub prompts: RuleSet,
    pub resources: RuleSet,
    /// `callers`: where the verified identity comes from; `None` reads none (and `profiles` is empty).
    pub callers: Option<Callers>,
    /// `profiles`, in order, each with its rules merged with the top level's (see [`Policy::for_caller`]).
    pub profiles: Vec<Profile>,
    /// `pins` (`None` when the policy has none): the same for every caller (pins are what the server lists).
    pub pins: Option<Pins>,
    pub tool_names: ToolNames,
    /// The top level's governed keys of tools, then prompts ([`View::look_alikes`]; set by [`Policy::seal`]).
    look_alikes: [LookAlikes; 2],
    /// See [`Policy::hold_secs`] (set by [`Policy::seal`]).
    hold: u64,
    /// See [`Policy::unforgeable_headers`] (set by [`Policy::seal`]).
    unforgeable: Vec<String>,
    /// See [`Policy::counts`] (set by [`Policy::seal`]): session, caller, global.
    scopes: [bool; 3],
    /// See [`Policy::needs_clock`] (set by [`Policy::seal`]).
    clock: bool,
    /// See [`Policy::fleet_limit`] (set by [`Policy::seal`]). A list, not a map: a policy has a few limits, a
    /// call looks one or two up, and another `HashMap` type would add its own code to the wasm.
    fleet: Vec<(u64, FleetLimit)>,
}

/// The rules for one kind of target (tools, prompts or resources), compiled for lookup.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// What happens to a target no key matches.
    pub default: Action,
    rules: Vec<Rule>,
    exact: HashMap<String, usize>,
    /// Glob rules, most literal characters first, then by key: the first match wins.
    globs: Vec<(Glob, usize)>,
}

impl RuleSet {
    pub(crate) fn new(default: Action, rules: Vec<(Rule, Option<Glob>)>) -> RuleSet {
        let mut exact = HashMap::new();
        let mut globs = Vec::new();
        let mut plain = Vec::with_capacity(rules.len());
        for (i, (rule, glob)) in rules.into_iter().enumerate() {
            match glob {
                Some(g) => globs.push((g, i)),
                None => {
                    exact.insert(rule.key.clone(), i);
                }
            }
            plain.push(rule);
        }
        let order = |(ga, ia): &(Glob, usize), (gb, ib): &(Glob, usize)| {
            let ka = plain.get(*ia).map(|r| r.key.as_str()).unwrap_or("");
            let kb = plain.get(*ib).map(|r| r.key.as_str()).unwrap_or("");
            gb.literal_chars()
                .cmp(&ga.literal_chars())
                .then_with(|| ka.cmp(kb))
        };
        // A stable binary insertion sort rather than `sort_by`: this runs once per policy load on a few
        // globs, and core's stable sort is about 8 KB of wasm for this one element type.
        let mut sorted: Vec<(Glob, usize)> = Vec::with_capacity(globs.len());
        for g in globs {
            let at = sorted.partition_point(|x| order(x, &g) != std::cmp::Ordering::Greater);
            sorted.insert(at, g);
        }
        RuleSet {
            default,
            rules: plain,
            exact,
            globs: sorted,
        }
    }

    /// True when `name` is one of the exact (not glob) keys.
    pub fn has_exact(&self, name: &str) -> bool {
        self.exact.contains_key(name)
    }

    /// The rule that governs `name`: the exact key, else the most specific matching glob.
    pub fn rule_for(&self, name: &str) -> Option<&Rule> {
        if let Some(i) = self.exact.get(name) {
            return self.rules.get(*i);
        }
        self.globs
            .iter()
            .find(|(g, _)| g.matches(name))
            .and_then(|(_, i)| self.rules.get(*i))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Policy {
    pub(crate) fn new(
        default: Action,
        max_body_bytes: usize,
        rules: Vec<(Rule, Option<Glob>)>,
    ) -> Policy {
        Policy {
            default,
            max_body_bytes,
            hold_headers: true,
            identity: Identity::default(),
            approval: None,
            rate_limit_service: None,
            hide: Vec::new(),
            filter_tools_list: true,
            mode: Mode::Enforce,
            export: Some(ExportHeaders::default()),
            tools: RuleSet::new(default, rules),
            prompts: RuleSet::new(Action::Allow, Vec::new()),
            resources: RuleSet::new(Action::Allow, Vec::new()),
            callers: None,
            profiles: Vec::new(),
            pins: None,
            tool_names: ToolNames::default(),
            look_alikes: Default::default(),
            hold: 1,
            unforgeable: Vec::new(),
            scopes: [false; 3],
            clock: false,
            fleet: Vec::new(),
        }
    }

    /// The top level's rule that governs the tool `tool` (see [`RuleSet::rule_for`]).
    pub fn rule_for(&self, tool: &str) -> Option<&Rule> {
        self.tools.rule_for(tool)
    }

    /// The top level's tool rules.
    pub fn rules(&self) -> &[Rule] {
        self.tools.rules()
    }

    /// Every rule of every kind, the top level's then each profile's (inherited ones again).
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        let top = [&self.tools, &self.prompts, &self.resources];
        let profiles = self
            .profiles
            .iter()
            .flat_map(|p| [&p.tools, &p.prompts, &p.resources]);
        top.into_iter().chain(profiles).flat_map(|s| s.rules())
    }

    /// Request headers removed from every client request, whatever its method: the exported names, or the
    /// default ones when `export_headers` is false. A client must never be able to set them, not even with
    /// export off (something downstream, such as a rate limit keyed on `x-mcp-tool`, may still read them).
    pub fn unforgeable_headers(&self) -> &[String] {
        &self.unforgeable
    }

    /// True when any rule has a rate limit (the filter then keeps counts in shared data).
    pub fn has_limits(&self) -> bool {
        self.all_rules().any(|r| !r.limits.is_empty())
    }

    /// True when some rate limit (of the top level or of a profile, counted here or by the rate limit service)
    /// has this scope.
    pub fn counts(&self, scope: Scope) -> bool {
        self.scopes.get(scope as usize).copied().unwrap_or(false)
    }

    /// The longest session- or caller-scoped window counted here: a rate-limit slot changes owner only after
    /// this much silence.
    pub fn hold_secs(&self) -> u64 {
        self.hold
    }

    /// True when a decision of this policy can depend on the time: a rate limit (windows), an approval (remembered
    /// approvals expire). Without either, a request reads the clock only for its audit line, and none when audit
    /// lines are off.
    pub fn needs_clock(&self) -> bool {
        self.clock
    }

    /// What the rate limit service is told about the limit with this id (a charge's `limit.id`); `None` for a
    /// limit this Envoy counts.
    pub fn fleet_limit(&self, id: u64) -> Option<&FleetLimit> {
        self.fleet.iter().find(|(i, _)| *i == id).map(|(_, f)| f)
    }

    /// Every limit the rate limit service counts, once each, in the policy's order (the top level's tools,
    /// prompts, resources, then each profile's own; rules in the order of their set). A top-level limit a
    /// profile inherits is one limit: its counts are shared, as in this Envoy.
    pub fn fleet_limits(&self) -> impl Iterator<Item = &FleetLimit> {
        self.fleet.iter().map(|(_, f)| f)
    }

    /// Works out, once, what the per-request paths would otherwise recompute: the longest session or caller
    /// window counted here, which scopes are used, the header names to strip, the fleet limits by id. Called
    /// when parsing is done.
    pub(crate) fn seal(&mut self) {
        let mut fleet: Vec<(u64, FleetLimit)> = Vec::new();
        for l in self.all_rules().flat_map(|r| &r.limits) {
            if let Some(f) = &l.fleet {
                if !fleet.iter().any(|(id, _)| *id == l.spec.id) {
                    fleet.push((l.spec.id, f.clone()));
                }
            }
        }
        self.fleet = fleet;
        self.hold = self
            .all_rules()
            .flat_map(|r| &r.limits)
            .filter(|l| l.spec.scope != Scope::Global && l.fleet.is_none())
            .map(|l| l.spec.window_secs)
            .max()
            .unwrap_or(1);
        for scope in [Scope::Session, Scope::Caller, Scope::Global] {
            let used = self
                .all_rules()
                .flat_map(|r| &r.limits)
                .any(|l| l.spec.scope == scope);
            if let Some(slot) = self.scopes.get_mut(scope as usize) {
                *slot = used;
            }
        }
        self.clock = self.approval.is_some() || self.has_limits();
        let mut names: Vec<String> = EXPORTED.map(String::from).to_vec();
        if let Some(n) = &self.export {
            for h in [&n.method, &n.tool, &n.profile] {
                if !names.contains(h) {
                    names.push(h.clone());
                }
            }
        }
        self.unforgeable = names;
        self.look_alikes = look_alikes(&self.tools, &self.prompts, &self.hide, self.pins.as_ref());
        for p in &mut self.profiles {
            p.look_alikes = look_alikes(&p.tools, &p.prompts, &p.hide, self.pins.as_ref());
        }
    }
}

/// The governed keys of one caller's rules, tools then prompts: every key that does more than allow, for tools
/// also `hide` and the pinned names (pins are the same for every caller).
fn look_alikes(
    tools: &RuleSet,
    prompts: &RuleSet,
    hide: &[Glob],
    pins: Option<&Pins>,
) -> [LookAlikes; 2] {
    let pinned = pins
        .into_iter()
        .flat_map(|p| p.iter().map(|(tool, _)| tool));
    let tools = LookAlikes::new(
        governed(tools)
            .chain(hide.iter().map(Glob::pattern))
            .chain(pinned),
    );
    [tools, LookAlikes::new(governed(prompts))]
}

/// The keys of a rule set that do more than allow: deny, require approval, conditions, rate limits.
fn governed(set: &RuleSet) -> impl Iterator<Item = &str> {
    set.rules()
        .iter()
        .filter(|r| r.action != Action::Allow || !r.conditions.is_empty() || !r.limits.is_empty())
        .map(|r| r.key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_most_literal_first_then_by_key() {
        let keys = [
            "*", "a*", "ab*", "b*", "a?c*", "*z", "get_*", "get_run*", "?", "??", "*_run", "zz*",
            "ab?", "a*b*c",
        ];
        let rules = keys
            .iter()
            .map(|k| {
                let rule = Rule {
                    key: (*k).to_owned(),
                    action: Action::Allow,
                    reason: None,
                    conditions: Vec::new(),
                    limits: Vec::new(),
                };
                (rule, Some(Glob::new(k).unwrap()))
            })
            .collect();
        let set = RuleSet::new(Action::Deny, rules);
        let got: Vec<&str> = set.globs.iter().map(|(_, i)| keys[*i]).collect();
        let mut want: Vec<&str> = keys.to_vec();
        want.sort_by(|a, b| {
            let lit = |k: &str| Glob::new(k).unwrap().literal_chars();
            lit(b).cmp(&lit(a)).then_with(|| a.cmp(b))
        });
        assert_eq!(got, want);
    }
}
