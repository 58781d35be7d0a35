//! Caller-aware policy, compiled: where identities come from ([`Callers`]), the ordered `profiles` with their
//! match ([`Match`]) and their rules already merged with the top level's, and the [`View`] a caller is judged
//! by. Merging happens once, when the policy loads; per request there is only [`Policy::profile_for`] (the first
//! profile whose match holds: a few comparisons) and a [`View`] of borrowed rule sets.

use super::{is_glob, Action, Glob, Pins, Policy, Rule, RuleSet, ToolNames, Unpinned};
use crate::caller::Caller;
use crate::mcp::Kind;
use crate::names::LookAlikes;

/// `callers`: which verified identities the filter reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callers {
    pub jwt: Option<Jwt>,
    /// Read the URI SAN of the verified client certificate (`connection.uri_san_peer_certificate`).
    pub peer_certificate: bool,
    /// A request without an identity is refused (HTTP 401, -31004).
    pub required: bool,
}

/// `callers.jwt`: the payload `envoy.filters.http.jwt_authn` verified and stored as dynamic metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    /// The filter's `payload_in_metadata` (under Istio's RequestAuthentication: the issuer).
    pub metadata: String,
    pub subject: ClaimPath,
    pub groups: Option<ClaimPath>,
}

/// A claim inside the JWT payload: `realm_access.roles` is the path `["realm_access", "roles"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    /// As the policy wrote it (dotted), for messages.
    pub text: String,
    pub segments: Vec<String>,
}

/// A profile's `match`: every given key must hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// The subject, exact or glob (the text as written, and compiled).
    pub subject: Option<(String, Glob)>,
    /// Any of these groups (exact names).
    pub groups: Vec<String>,
    /// The certificate principal, exact or glob.
    pub principal: Option<(String, Glob)>,
    pub authenticated: Option<bool>,
}

impl Match {
    /// True when every given key holds for `caller`. A key on something the caller lacks (a subject glob, and
    /// no subject) does not hold.
    pub fn holds(&self, caller: &Caller) -> bool {
        let glob = |g: &Option<(String, Glob)>, v: &Option<String>| match (g, v) {
            (None, _) => true,
            (Some((_, g)), Some(v)) => g.matches(v),
            (Some(_), None) => false,
        };
        glob(&self.subject, &caller.subject)
            && glob(&self.principal, &caller.principal)
            && (self.groups.is_empty() || self.groups.iter().any(|g| caller.groups.contains(g)))
            && self
                .authenticated
                .is_none_or(|a| a == caller.authenticated())
    }
}

impl Match {
    /// True when every caller `other` matches is matched by `self` too (so a profile with `other`'s match
    /// placed after one with `self`'s can never apply). Conservative: `false` when it cannot tell.
    pub fn covers(&self, other: &Match) -> bool {
        // What `other` guarantees of a caller it matches: the groups claim is read only with a subject.
        let has_subject = other.subject.is_some() || !other.groups.is_empty();
        let has_principal = other.principal.is_some();
        let authenticated = other.authenticated == Some(true) || has_subject || has_principal;
        let pattern =
            |mine: &Option<(String, Glob)>, theirs: &Option<(String, Glob)>, present: bool| {
                match (mine, theirs) {
                    (None, _) => true,
                    // Only `*` (any value) holds for every caller that merely has one.
                    (Some((t, _)), None) => present && t.chars().all(|c| c == '*'),
                    (Some((t, g)), Some((u, _))) => {
                        t.chars().all(|c| c == '*') || t == u || (!is_glob(u) && g.matches(u))
                    }
                }
            };
        pattern(&self.subject, &other.subject, has_subject)
            && pattern(&self.principal, &other.principal, has_principal)
            && (self.groups.is_empty()
                || (!other.groups.is_empty()
                    && other.groups.iter().all(|g| self.groups.contains(g))))
            && match self.authenticated {
                None => true,
                Some(true) => authenticated,
                Some(false) => other.authenticated == Some(false),
            }
    }
}

/// One entry of `profiles`, its rules merged with the top level's when it inherits.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub matcher: Match,
    /// `inherit` (default true): false made the profile the caller's whole policy.
    pub inherit: bool,
    pub tools: RuleSet,
    pub prompts: RuleSet,
    pub resources: RuleSet,
    /// The top level's `hide` (when inheriting) and the profile's.
    pub hide: Vec<Glob>,
    /// Its governed keys of tools, then prompts ([`View::look_alikes`]; set when the policy is sealed).
    pub(crate) look_alikes: [LookAlikes; 2],
}

/// The rules one caller is judged by: the top level's, or those of the profile that matched.
#[derive(Debug, Clone, Copy)]
pub struct View<'p> {
    /// The profile's name; `None` for the top level.
    pub profile: Option<&'p str>,
    pub tools: &'p RuleSet,
    pub prompts: &'p RuleSet,
    pub resources: &'p RuleSet,
    pub hide: &'p [Glob],
    pub filter_tools_list: bool,
    /// The policy's `pins` (the same for every caller: pins are what the server lists).
    pub pins: Option<&'p Pins>,
    pub tool_names: ToolNames,
    look_alikes: &'p [LookAlikes; 2],
}

impl<'p> View<'p> {
    /// The rules governing one kind of target.
    pub fn set(&self, kind: Kind) -> &'p RuleSet {
        match kind {
            Kind::Tool => self.tools,
            Kind::Prompt => self.prompts,
            Kind::Resource => self.resources,
        }
    }

    /// The rule that governs the tool `tool` (see [`RuleSet::rule_for`]).
    pub fn rule_for(&self, tool: &str) -> Option<&'p Rule> {
        self.tools.rule_for(tool)
    }

    /// What happens to a tool no key matches.
    pub fn default(&self) -> Action {
        self.tools.default
    }

    /// True when `hide` names the tool.
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.hide.iter().any(|g| g.matches(tool))
    }

    /// True when the tool has no pin and `pins.unpinned` is `hide`.
    pub fn is_unpinned_hidden(&self, tool: &str) -> bool {
        self.pins
            .is_some_and(|p| p.unpinned == Unpinned::Hide && p.get(tool).is_none())
    }

    /// The governed keys of tools or prompts, for telling look-alike names ([`crate::names`]): every key whose
    /// rule denies, requires approval, has conditions or a rate limit; for tools also `hide` and the pinned
    /// names. `None` for resources (their URIs are checked by the engine instead).
    pub fn look_alikes(&self, kind: Kind) -> Option<&'p LookAlikes> {
        match kind {
            Kind::Tool => self.look_alikes.first(),
            Kind::Prompt => self.look_alikes.get(1),
            Kind::Resource => None,
        }
    }

    /// True when the tool belongs in a tools/list answer: not hidden, not unpinned under `pins.unpinned:
    /// hide` and, with `filter_tools_list`, not a tool whose every call is denied (a deny rule, or no rule under
    /// `default: deny`). Tools with conditions, limits or approval stay listed.
    pub fn is_listed(&self, tool: &str) -> bool {
        if self.is_hidden(tool) || self.is_unpinned_hidden(tool) {
            return false;
        }
        if !self.filter_tools_list {
            return true;
        }
        let action = self.rule_for(tool).map_or(self.default(), |r| r.action);
        action != Action::Deny
    }
}

impl<'p> From<&'p Policy> for View<'p> {
    fn from(p: &'p Policy) -> View<'p> {
        p.view()
    }
}

impl Policy {
    /// The top level's rules: for a policy without profiles, and for a caller no profile matches.
    pub fn view(&self) -> View<'_> {
        View {
            profile: None,
            tools: &self.tools,
            prompts: &self.prompts,
            resources: &self.resources,
            hide: &self.hide,
            filter_tools_list: self.filter_tools_list,
            pins: self.pins.as_ref(),
            tool_names: self.tool_names,
            look_alikes: &self.look_alikes,
        }
    }

    /// The index of the first profile whose match holds for `caller`.
    pub fn profile_for(&self, caller: &Caller) -> Option<usize> {
        self.profiles.iter().position(|p| p.matcher.holds(caller))
    }

    /// The rules of the profile at `index` (from [`Policy::profile_for`]), or the top level's for `None`.
    pub fn view_of(&self, index: Option<usize>) -> View<'_> {
        match index.and_then(|i| self.profiles.get(i)) {
            None => self.view(),
            Some(p) => View {
                profile: Some(&p.name),
                tools: &p.tools,
                prompts: &p.prompts,
                resources: &p.resources,
                hide: &p.hide,
                filter_tools_list: self.filter_tools_list,
                pins: self.pins.as_ref(),
                tool_names: self.tool_names,
                look_alikes: &p.look_alikes,
            },
        }
    }

    /// The rules `caller` is judged by.
    pub fn for_caller(&self, caller: &Caller) -> View<'_> {
        self.view_of(self.profile_for(caller))
    }

    /// Profiles that can never apply, each with the earlier profile that takes all its callers:
    /// `(later, earlier)` indexes (see [`Match::covers`]).
    pub fn shadowed_profiles(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in self.profiles.iter().enumerate() {
            let earlier = self.profiles.iter().take(j);
            if let Some(i) = earlier
                .into_iter()
                .position(|e| e.matcher.covers(&later.matcher))
            {
                out.push((j, i));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::caller::Caller;
    use crate::policy::{parse, Action, Policy};

    fn caller(subject: Option<&str>, groups: &[&str], principal: Option<&str>) -> Caller {
        Caller {
            subject: subject.map(String::from),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            principal: principal.map(String::from),
        }
    }

    const ISSUE: &str = r#"{"version":"1","default":"deny",
      "callers":{"jwt":{"metadata":"jwt_payload","subject":"sub","groups":"groups"},"peer_certificate":true},
      "approval":{"cluster":"approvals"},
      "tools":{"get_run":{},"get_*":{},"delete_run":{"action":"deny","reason":"top"},"set_tag":{"action":"deny"}},
      "profiles":[
        {"name":"ml-admins","match":{"groups":["ml-admins"]},
         "tools":{"delete_run":{"action":"require_approval"},"set_*":{}}},
        {"name":"ci","match":{"principal":"spiffe://cluster.local/ns/ci/sa/*"},
         "default":"deny","tools":{"get_run":{"rate_limit":"600/minute"}}},
        {"name":"alice","match":{"subject":"alice"},"inherit":false,"tools":{"search_runs":{}}},
        {"name":"anonymous","match":{"authenticated":false},"default":"deny","hide":["get_*"],"tools":{}}
      ]}"#;

    fn policy() -> Policy {
        parse(ISSUE.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn profile<'p>(p: &'p Policy, c: &Caller) -> Option<&'p str> {
        p.for_caller(c).profile
    }

    #[test]
    fn the_first_matching_profile_wins_and_no_match_is_the_top_level() {
        let p = policy();
        let admin = caller(Some("bob"), &["readers", "ml-admins"], None);
        assert_eq!(profile(&p, &admin), Some("ml-admins"));
        let ci = caller(None, &[], Some("spiffe://cluster.local/ns/ci/sa/builder"));
        assert_eq!(profile(&p, &ci), Some("ci"));
        // alice is an ml-admin too: the earlier profile wins.
        let alice_admin = caller(Some("alice"), &["ml-admins"], None);
        assert_eq!(profile(&p, &alice_admin), Some("ml-admins"));
        assert_eq!(
            profile(&p, &caller(Some("alice"), &[], None)),
            Some("alice")
        );
        assert_eq!(profile(&p, &Caller::ANONYMOUS), Some("anonymous"));
        // Authenticated, no profile: the top level.
        let carol = caller(Some("carol"), &["readers"], Some("spiffe://other/x"));
        assert_eq!(profile(&p, &carol), None);
        assert_eq!(p.profile_for(&carol), None);
        assert_eq!(p.view_of(Some(99)).profile, None);
    }

    #[test]
    fn match_keys_all_hold() {
        let p = parse(
            br#"{"version":"1","callers":{"jwt":{"metadata":"m","groups":"g"},"peer_certificate":true},
            "profiles":[{"name":"x","match":{"subject":"svc-*","groups":["a","b"],"principal":"spiffe://p/*","authenticated":true}}]}"#,
        )
        .unwrap();
        let m = &p.profiles[0].matcher;
        assert!(m.holds(&caller(Some("svc-1"), &["b"], Some("spiffe://p/q"))));
        assert!(!m.holds(&caller(Some("svc-1"), &["c"], Some("spiffe://p/q"))));
        assert!(!m.holds(&caller(Some("usr-1"), &["a"], Some("spiffe://p/q"))));
        assert!(!m.holds(&caller(Some("svc-1"), &["a"], None)));
        assert!(!m.holds(&caller(None, &["a"], Some("spiffe://p/q"))));
        // Group names are exact: no glob, no case folding.
        assert!(!m.holds(&caller(Some("svc-1"), &["A"], Some("spiffe://p/q"))));
    }

    #[test]
    fn a_profile_key_replaces_the_same_top_level_key_then_the_usual_precedence_decides() {
        let p = policy();
        let admin = p.for_caller(&caller(Some("bob"), &["ml-admins"], None));
        // The profile's exact key replaced the top level's deny.
        assert_eq!(
            admin.rule_for("delete_run").unwrap().action,
            Action::RequireApproval
        );
        // The top level's exact key `set_tag` (deny) still beats the profile's glob `set_*`.
        assert_eq!(admin.rule_for("set_tag").unwrap().action, Action::Deny);
        assert_eq!(admin.rule_for("set_x").unwrap().key, "set_*");
        // Inherited.
        assert_eq!(admin.rule_for("get_run").unwrap().key, "get_run");
        assert_eq!(admin.default(), Action::Deny);
        // The top level is unchanged.
        assert_eq!(
            p.view().rule_for("delete_run").unwrap().action,
            Action::Deny
        );
        assert!(p.view().rule_for("set_x").is_none());
        // ci's get_run carries its own limit, counted apart from anything at the top level.
        let ci = p.for_caller(&caller(
            None,
            &[],
            Some("spiffe://cluster.local/ns/ci/sa/b"),
        ));
        let limit = &ci.rule_for("get_run").unwrap().limits[0];
        assert_eq!(limit.spec.max, 600);
        assert!(p.view().rule_for("get_run").unwrap().limits.is_empty());
    }

    #[test]
    fn inherit_false_is_the_whole_policy() {
        let p = policy();
        let alice = p.for_caller(&caller(Some("alice"), &[], None));
        assert_eq!(alice.rule_for("search_runs").unwrap().key, "search_runs");
        assert!(alice.rule_for("get_run").is_none());
        // The format's defaults, not the top level's.
        assert_eq!(alice.default(), Action::Deny);
        assert_eq!(alice.prompts.default, Action::Allow);
        assert!(alice.is_listed("search_runs") && !alice.is_listed("get_run"));
    }

    #[test]
    fn tools_list_follows_the_caller() {
        let p = policy();
        let anon = p.for_caller(&Caller::ANONYMOUS);
        // Hidden by the profile's own hide, on top of the top level's (none here).
        assert!(!anon.is_listed("get_run") && anon.is_hidden("get_run"));
        let top = p.view();
        assert!(top.is_listed("get_run") && !top.is_listed("set_x"));
        let admin = p.for_caller(&caller(Some("bob"), &["ml-admins"], None));
        assert!(admin.is_listed("set_x") && admin.is_listed("delete_run"));
        assert!(!admin.is_listed("set_tag"));
        // Hides add up: a profile cannot unhide what the top level hides (only `inherit: false` can).
        let h = parse(
            br#"{"version":"1","default":"allow","hide":["secret"],"callers":{"peer_certificate":true},
            "profiles":[{"name":"a","match":{},"hide":["x"]},{"name":"b","match":{},"inherit":false}]}"#,
        )
        .unwrap();
        let a = h.view_of(Some(0));
        assert!(a.is_hidden("secret") && a.is_hidden("x"));
        let b = h.view_of(Some(1));
        assert!(!b.is_hidden("secret"));
    }

    #[test]
    fn shadowed_profiles_are_found_when_provable() {
        let shadowed = |profiles: &str| {
            let doc = format!(
                r#"{{"version":"1","callers":{{"jwt":{{"metadata":"m","groups":"g"}},"peer_certificate":true}},"profiles":{profiles}}}"#
            );
            parse(doc.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"))
                .shadowed_profiles()
        };
        let p = |n: usize, m: &str| format!(r#"{{"name":"p{n}","match":{m}}}"#);
        let two = |a: &str, b: &str| shadowed(&format!("[{},{}]", p(0, a), p(1, b)));
        // Covered: nothing narrower can follow a catch-all; same or narrower keys.
        for (a, b) in [
            ("{}", r#"{"subject":"x"}"#),
            ("{}", "{}"),
            (r#"{"subject":"x"}"#, r#"{"subject":"x"}"#),
            (r#"{"subject":"svc-*"}"#, r#"{"subject":"svc-1"}"#),
            (
                r#"{"subject":"svc-*"}"#,
                r#"{"subject":"svc-*","groups":["g"]}"#,
            ),
            (r#"{"subject":"*"}"#, r#"{"groups":["g"]}"#),
            (r#"{"groups":["a","b"]}"#, r#"{"groups":["b"]}"#),
            (
                r#"{"groups":["a"]}"#,
                r#"{"groups":["a"],"principal":"spiffe://x"}"#,
            ),
            (r#"{"authenticated":true}"#, r#"{"groups":["a"]}"#),
            (r#"{"authenticated":true}"#, r#"{"principal":"spiffe://*"}"#),
            (r#"{"authenticated":false}"#, r#"{"authenticated":false}"#),
            (r#"{"principal":"*"}"#, r#"{"principal":"spiffe://a/b"}"#),
        ] {
            assert_eq!(two(a, b), [(1, 0)], "{a} then {b}");
        }
        // Not covered (or not provably).
        for (a, b) in [
            (r#"{"subject":"x"}"#, "{}"),
            (r#"{"subject":"svc-1"}"#, r#"{"subject":"svc-*"}"#),
            (r#"{"subject":"svc-*"}"#, r#"{"subject":"*-1"}"#),
            (r#"{"groups":["a"]}"#, r#"{"groups":["a","b"]}"#),
            (r#"{"groups":["a"]}"#, r#"{"subject":"x"}"#),
            (r#"{"subject":"*"}"#, r#"{"principal":"spiffe://x"}"#),
            (r#"{"authenticated":true}"#, r#"{"authenticated":false}"#),
            (r#"{"authenticated":true}"#, "{}"),
            (r#"{"authenticated":false}"#, "{}"),
            (
                r#"{"principal":"spiffe://a/*"}"#,
                r#"{"principal":"spiffe://b/c"}"#,
            ),
        ] {
            assert!(two(a, b).is_empty(), "{a} then {b}");
        }
        // The first earlier profile that covers is named; several can be shadowed.
        assert_eq!(
            shadowed(&format!(
                "[{},{},{},{}]",
                p(0, r#"{"groups":["a"]}"#),
                p(1, "{}"),
                p(2, r#"{"groups":["a"]}"#),
                p(3, r#"{"subject":"s"}"#)
            )),
            [(2, 0), (3, 1)]
        );
    }
}
