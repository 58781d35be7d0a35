//! The policy: what the operator wrote (validated by [`parse`]) compiled into a form that decides fast.

mod condition;
mod glob;
mod parse;

pub use condition::{json_eq, Condition, Op, OP_NAMES};
pub use glob::{is_glob, Glob};
pub use parse::{parse, ConfigError, ConfigErrors};

use std::collections::HashMap;

/// What a rule (or the default posture) does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
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
    rules: Vec<Rule>,
    exact: HashMap<String, usize>,
    /// Glob rules, most literal characters first, then by key: the first match wins.
    globs: Vec<(Glob, usize)>,
}

impl Policy {
    pub(crate) fn new(default: Action, max_body_bytes: usize, rules: Vec<(Rule, Option<Glob>)>) -> Policy {
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
        globs.sort_by(|(ga, ia), (gb, ib)| {
            let ka = plain.get(*ia).map(|r| r.key.as_str()).unwrap_or("");
            let kb = plain.get(*ib).map(|r| r.key.as_str()).unwrap_or("");
            gb.literal_chars().cmp(&ga.literal_chars()).then_with(|| ka.cmp(kb))
        });
        Policy { default, max_body_bytes, hold_headers: true, rules: plain, exact, globs }
    }

    /// The rule that governs `tool`: the exact key, else the most specific matching glob.
    pub fn rule_for(&self, tool: &str) -> Option<&Rule> {
        if let Some(i) = self.exact.get(tool) {
            return self.rules.get(*i);
        }
        self.globs.iter().find(|(g, _)| g.matches(tool)).and_then(|(_, i)| self.rules.get(*i))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}
