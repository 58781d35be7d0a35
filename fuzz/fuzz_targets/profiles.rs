//! Arbitrary bytes as the `profiles` of a policy with `callers`: parsing must never panic, every rejection
//! explains itself, and whatever is accepted keeps the profile rules' promises:
//! - a view (a profile's rules merged with the top level's) holds each key once, and each key governs the
//!   name it spells (exact, or a glob matching its own text);
//! - a profile that inherits still has every top-level key (its own replacing the same spelling), and every
//!   top-level `hide` entry;
//! - the profile a caller gets is the first whose match holds, and a caller built to match a profile's
//!   `match` does match it;
//! - `check`'s "can never match" is sound: when `shadowed_profiles` says an earlier profile takes all the
//!   callers of a later one, no caller tried matches the later one without the earlier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::caller::Caller;
use mcp_policy::mcp::Kind;
use mcp_policy::policy::{self, Match, Policy};
use std::collections::HashSet;

const BEFORE: &str = r#"{"version":"1","approval":{"cluster":"a"},
 "callers":{"jwt":{"metadata":"m","groups":"g"},"peer_certificate":true},
 "tools":{"get_*":{},"delete_run":{"action":"deny"},"t":{"rate_limit":"5/minute"}},"hide":["secret_*"],
 "prompts":{"p":{}},"profiles":"#;

/// A caller that `m` holds for: wildcards filled in, the groups it names, authenticated as it says.
fn witness(m: &Match) -> Caller {
    let fill = |p: &str| p.replace('*', "").replace('?', "x");
    let mut c = Caller {
        subject: m
            .subject
            .as_ref()
            .map(|(t, _)| fill(t))
            .filter(|s| !s.is_empty()),
        groups: m.groups.clone(),
        principal: m
            .principal
            .as_ref()
            .map(|(t, _)| fill(t))
            .filter(|s| !s.is_empty()),
    };
    if (!c.groups.is_empty() || m.subject.is_some()) && c.subject.is_none() {
        c.subject = Some("w".into());
    }
    if m.principal.is_some() && c.principal.is_none() {
        c.principal = Some("p".into());
    }
    if m.authenticated == Some(true) && !c.authenticated() {
        c.subject = Some("w".into());
    }
    c
}

fn check(p: &Policy) {
    let top = p.view();
    for (i, prof) in p.profiles.iter().enumerate() {
        let view = p.view_of(Some(i));
        assert_eq!(view.profile, Some(prof.name.as_str()));
        for kind in [Kind::Tool, Kind::Prompt, Kind::Resource] {
            let set = view.set(kind);
            let mut seen = HashSet::new();
            for r in set.rules() {
                assert!(
                    seen.insert(r.key.as_str()),
                    "{} twice in {}",
                    r.key,
                    prof.name
                );
                assert!(
                    set.rule_for(&r.key).is_some(),
                    "no rule for its own key {:?}",
                    r.key
                );
            }
            if prof.inherit {
                for r in top.set(kind).rules() {
                    assert!(
                        seen.contains(r.key.as_str()),
                        "{} lost by {}",
                        r.key,
                        prof.name
                    );
                }
            }
        }
        if prof.inherit {
            assert!(
                view.is_hidden("secret_x"),
                "the top level's hide lost by {}",
                prof.name
            );
        }
        let w = witness(&prof.matcher);
        assert!(
            prof.matcher.holds(&w),
            "{:?} does not hold for {w:?}",
            prof.matcher
        );
    }
    let mut callers: Vec<Caller> = p.profiles.iter().map(|x| witness(&x.matcher)).collect();
    callers.push(Caller::ANONYMOUS);
    callers.push(Caller {
        subject: Some("alice".into()),
        groups: vec!["a".into(), "admins".into()],
        principal: Some("spiffe://cluster.local/ns/ci/sa/x".into()),
    });
    let shadowed = p.shadowed_profiles();
    for c in &callers {
        let first = p.profile_for(c);
        let want = p.profiles.iter().position(|x| x.matcher.holds(c));
        assert_eq!(first, want);
        let _ = p.for_caller(c).is_listed("get_run");
        for (later, earlier) in &shadowed {
            let holds = |k: usize| p.profiles.get(k).is_some_and(|x| x.matcher.holds(c));
            assert!(
                !holds(*later) || holds(*earlier),
                "profiles[{later}] said shadowed by profiles[{earlier}], yet {c:?} matches only the later"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(profiles) = std::str::from_utf8(data) else {
        return;
    };
    let doc = format!("{BEFORE}{profiles}}}");
    match policy::parse(doc.as_bytes()) {
        Ok(p) => check(&p),
        Err(errs) => {
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(!e.path.is_empty() && !e.fix.is_empty(), "{e:?}");
            }
            let _ = errs.to_string();
        }
    }
});
