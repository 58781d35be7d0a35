//! The caller side of the CLI: `explain --subject/--groups/--principal` (which profile a caller gets, and why)
//! and what `check` says about callers (profiles that can never match, budgets a client can renew).
//! The matching itself is the filter's (`Policy::profile_for`); only the narrative is worked out here.

use mcp_policy::caller::Caller;
use mcp_policy::limits::Scope;
use mcp_policy::policy::{Match, Policy};
use serde_json::Value;

/// The caller explained: what Envoy would have verified.
#[derive(Debug, Default, clap::Args)]
pub struct CallerArgs {
    /// The caller's verified JWT subject (for a policy with `callers`: which profile applies)
    #[arg(long, value_name = "NAME")]
    pub subject: Option<String>,
    /// The caller's groups from the token, comma-separated (needs --subject)
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// The URI SAN of the caller's client certificate, e.g. spiffe://cluster.local/ns/ci/sa/bot
    #[arg(long, value_name = "URI")]
    pub principal: Option<String>,
}

impl CallerArgs {
    pub fn caller(&self) -> Caller {
        Caller {
            subject: self.subject.clone().filter(|s| !s.is_empty()),
            groups: self
                .groups
                .iter()
                .filter(|g| !g.is_empty())
                .cloned()
                .collect(),
            principal: self.principal.clone().filter(|p| !p.is_empty()),
        }
    }

    /// Whether any of the options was given.
    pub fn given(&self) -> bool {
        self.subject.is_some() || !self.groups.is_empty() || self.principal.is_some()
    }

    /// The message of a usage error, if the options describe a caller the filter can never see.
    pub fn validate(&self) -> Result<(), String> {
        if !self.groups.is_empty() && self.subject.is_none() {
            return Err(
                "--groups needs --subject (the filter reads the groups only from a token with a subject)"
                    .into(),
            );
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn quoted(list: &[String]) -> String {
    list.iter().map(|g| quote(g)).collect::<Vec<_>>().join(", ")
}

/// `subject "alice", groups "a", "b", no principal (authenticated)`.
pub fn describe(c: &Caller) -> String {
    let mut parts = Vec::new();
    parts.push(match &c.subject {
        Some(s) => format!("subject {}", quote(s)),
        None => "no subject".into(),
    });
    if c.subject.is_some() {
        parts.push(if c.groups.is_empty() {
            "no groups".into()
        } else {
            format!("groups {}", quoted(&c.groups))
        });
    }
    parts.push(match &c.principal {
        Some(p) => format!("principal {}", quote(p)),
        None => "no principal".into(),
    });
    let auth = if c.authenticated() {
        "authenticated"
    } else {
        "anonymous: nothing verified"
    };
    format!("{} ({auth})", parts.join(", "))
}

/// Each key of `m`, whether it holds for `c`, and why.
fn keys(m: &Match, c: &Caller) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let glob =
        |what: &str, pattern: &(String, mcp_policy::policy::Glob), v: &Option<String>| match v {
            Some(v) => (
                pattern.1.matches(v),
                format!(
                    "{what} {} {} {}",
                    quote(&pattern.0),
                    if pattern.1.matches(v) {
                        "matches"
                    } else {
                        "does not match"
                    },
                    quote(v)
                ),
            ),
            None => (
                false,
                format!("{what} {}: the caller has no {what}", quote(&pattern.0)),
            ),
        };
    if let Some(p) = &m.subject {
        out.push(glob("subject", p, &c.subject));
    }
    if !m.groups.is_empty() {
        let hit: Vec<String> = m
            .groups
            .iter()
            .filter(|g| c.groups.contains(g))
            .cloned()
            .collect();
        out.push(if hit.is_empty() {
            (
                false,
                format!(
                    "groups any of {}: the caller is in none of them",
                    quoted(&m.groups)
                ),
            )
        } else {
            (
                true,
                format!(
                    "groups any of {}: the caller is in {}",
                    quoted(&m.groups),
                    quoted(&hit)
                ),
            )
        });
    }
    if let Some(p) = &m.principal {
        out.push(glob("principal", p, &c.principal));
    }
    if let Some(a) = m.authenticated {
        let holds = a == c.authenticated();
        let is = if c.authenticated() {
            "is authenticated"
        } else {
            "is not authenticated"
        };
        out.push((holds, format!("authenticated {a}: the caller {is}")));
    }
    out
}

/// The profile `c` gets (its index) and the report lines saying why: each profile tried, in order, up to
/// the first that matches.
pub fn profile(policy: &Policy, c: &Caller) -> (Option<usize>, Vec<String>) {
    let chosen = policy.profile_for(c);
    let mut lines = Vec::new();
    lines.push(match chosen.and_then(|i| Some((i, policy.profiles.get(i)?))) {
        Some((i, p)) => format!(
            "{} (profiles[{i}]): {}",
            quote(&p.name),
            if p.inherit {
                "its rules are added to the top level's (a profile key replaces the same top-level key)"
            } else {
                "its rules are the caller's whole policy (inherit false)"
            }
        ),
        None if policy.profiles.is_empty() => {
            "none: the policy has no profiles; the top-level rules apply".into()
        }
        None => "none: no profile matches; the top-level rules apply".into(),
    });
    for (i, p) in policy.profiles.iter().enumerate() {
        let ks = keys(&p.matcher, c);
        let holds = ks.iter().all(|(h, _)| *h);
        let why = if ks.is_empty() {
            "an empty match holds for every caller".to_owned()
        } else {
            ks.iter()
                .map(|(h, t)| format!("{}{t}", if *h { "" } else { "NOT: " }))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let verdict = if holds { "matches" } else { "no match" };
        lines.push(format!(
            "profiles[{i}] {}: {verdict}: {why}",
            quote(&p.name)
        ));
        if holds {
            if i + 1 < policy.profiles.len() {
                lines.push("later profiles are not tried: the first match applies".into());
            }
            break;
        }
    }
    (chosen, lines)
}

/// A remark of `check` on a valid policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Remark {
    /// Probably not what was meant.
    Warning(String),
    /// Fine if the deployment does its part (said so the operator can make sure).
    Note(String),
}

/// What `check` says about a valid policy: profiles that can never match, budgets a client can renew.
pub fn remarks(policy: &Policy) -> Vec<Remark> {
    let mut out = Vec::new();
    for (later, earlier) in policy.shadowed_profiles() {
        let (Some(l), Some(e)) = (policy.profiles.get(later), policy.profiles.get(earlier)) else {
            continue;
        };
        out.push(Remark::Warning(format!(
            "profiles[{later}] ({}) can never match: every caller it matches is matched first by profiles[{earlier}] ({}); fix: move it before profiles[{earlier}], or narrow profiles[{earlier}]'s match",
            quote(&l.name),
            quote(&e.name)
        )));
    }
    let session: Vec<String> = policy
        .all_rules()
        .filter(|r| r.limits.iter().any(|l| l.spec.scope == Scope::Session))
        .map(|r| quote(&r.key))
        .fold(Vec::new(), |mut keys, k| {
            if !keys.contains(&k) {
                keys.push(k);
            }
            keys
        });
    if !session.is_empty() {
        let headers = &policy.identity.headers;
        let shown: Vec<&str> = session.iter().take(3).map(String::as_str).collect();
        let which = match session.len() {
            n if n > 3 => format!("{} and {} more", shown.join(", "), n - 3),
            _ => shown.join(", "),
        };
        let fix = if policy.callers.is_some() {
            "use scope \"caller\" (the default when `callers` is set: remove \"scope\": \"session\") or \"global\""
        } else {
            "add `callers` (a verified JWT or client certificate) and count per caller, have Envoy set the identity header from authentication, or use scope \"global\""
        };
        out.push(if headers.iter().any(|h| h == "mcp-session-id") {
            Remark::Warning(format!(
                "session-scoped rate limits ({which}) count per MCP session (mcp-session-id), which the client picks: a client that opens a new session gets a fresh budget; fix: {fix}"
            ))
        } else {
            Remark::Note(format!(
                "session-scoped rate limits ({which}) count per the header {}: make sure Envoy sets it from authentication and removes the client's copy (a client could otherwise name itself), or {fix}",
                headers.join(" or ")
            ))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_policy::policy::parse;

    #[test]
    fn remarks_on_shadowed_profiles_and_renewable_budgets() {
        let p = parse(
            br#"{"version":"1","callers":{"jwt":{"metadata":"m","groups":"g"}},
            "tools":{"a":{"rate_limit":{"max":1,"window":60,"scope":"session"}},"b":{"rate_limit":"1/minute"}},
            "profiles":[{"name":"admins","match":{"groups":["admins","ops"]}},
                        {"name":"ops","match":{"groups":["ops"]}}]}"#,
        )
        .unwrap();
        let w = remarks(&p);
        assert_eq!(w.len(), 2, "{w:#?}");
        let Remark::Warning(shadowed) = &w[0] else {
            panic!("{w:?}")
        };
        assert!(shadowed.starts_with("profiles[1] (\"ops\") can never match: every caller it matches is matched first by profiles[0] (\"admins\")"), "{shadowed}");
        let Remark::Warning(renewable) = &w[1] else {
            panic!("{w:?}")
        };
        assert!(
            renewable.starts_with("session-scoped rate limits (\"a\") count per MCP session"),
            "{renewable}"
        );
        assert!(
            renewable.contains("remove \"scope\": \"session\""),
            "{renewable}"
        );
        // A header of the operator's choosing may be set by Envoy from authentication: a note, not a warning.
        let plain = parse(br#"{"version":"1","identity":{"headers":["x-agent"]},"tools":{"a":{"rate_limit":"1/minute"}}}"#).unwrap();
        let w = remarks(&plain);
        let [Remark::Note(note)] = &w[..] else {
            panic!("{w:?}")
        };
        assert!(
            note.contains("per the header x-agent: make sure Envoy sets it"),
            "{note}"
        );
        assert!(note.contains("add `callers`"), "{note}");
        let global = parse(br#"{"version":"1","tools":{"a":{"rate_limit":{"max":1,"window":1,"scope":"global"}}}}"#).unwrap();
        assert!(remarks(&global).is_empty());
    }

    #[test]
    fn the_profile_narrative_stops_at_the_first_match() {
        let p = parse(
            br#"{"version":"1","callers":{"jwt":{"metadata":"m","groups":"g"},"peer_certificate":true},
            "profiles":[{"name":"ci","match":{"principal":"spiffe://ci/*"}},
                        {"name":"admins","match":{"groups":["admins"],"subject":"a*"}},
                        {"name":"rest","match":{}}]}"#,
        )
        .unwrap();
        let c = Caller {
            subject: Some("alice".into()),
            groups: vec!["admins".into(), "x".into()],
            principal: None,
        };
        let (i, lines) = profile(&p, &c);
        assert_eq!(i, Some(1));
        assert_eq!(
            lines,
            [
                "\"admins\" (profiles[1]): its rules are added to the top level's (a profile key replaces the same top-level key)",
                "profiles[0] \"ci\": no match: NOT: principal \"spiffe://ci/*\": the caller has no principal",
                "profiles[1] \"admins\": matches: subject \"a*\" matches \"alice\"; groups any of \"admins\": the caller is in \"admins\"",
                "later profiles are not tried: the first match applies",
            ]
        );
        assert_eq!(
            describe(&c),
            "subject \"alice\", groups \"admins\", \"x\", no principal (authenticated)"
        );
        assert_eq!(
            describe(&Caller::ANONYMOUS),
            "no subject, no principal (anonymous: nothing verified)"
        );
        let (i, lines) = profile(&p, &Caller::ANONYMOUS);
        assert_eq!(i, Some(2));
        assert_eq!(
            lines[3],
            "profiles[2] \"rest\": matches: an empty match holds for every caller"
        );
    }
}
