//! Who is calling: the identity Envoy verified, read once per request from stream properties, never from
//! anything the client writes. [`read`] is pure over a property reader (`get_property` in the filter, a map in
//! tests); the policy says what to read ([`Callers`]) and what a caller may do (`profiles`).
//!
//! ## What Envoy 1.40 (V8) returns (measured with a probe filter behind `jwt_authn`, `payload_in_metadata`)
//! Paths are `["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", <payload_in_metadata>, <claim>, …]`.
//! - A string claim: its UTF-8 bytes (`"alice"` → `616c696365`), also nested by path (`realm_access`,`roles`)
//!   and for a list item by index (`groups`,`0`). An empty string reads as none.
//! - A number (integer or not): 8 bytes, little-endian f64 (`12345` → `00000000801cc840`, `7` →
//!   `0000000000001c40`). A boolean: 1 byte, `01` / `00`. `null`: an error (serialization failure), as is any
//!   object or list that holds a `null` somewhere (the whole payload, for example).
//! - A list: proxy-wasm's pair serialization with each item as a key and an empty value: `["ml-admins",
//!   "readers"]` → `02000000` (count) `09000000 00000000 07000000 00000000` (key/value sizes) `ml-admins\0 \0
//!   readers\0 \0`; `[]` → `00000000`. An object: the same with its keys and values (`{"team": "ml"}` →
//!   key `team`, value `ml`). Items that are not strings keep their own bytes (a number's 8 bytes, a nested
//!   list's serialization) with no type tag.
//! - No token, a token that failed, a missing claim, or a path into a string or number (`scope`,`0`): none.
//! - mTLS: `["connection", "uri_san_peer_certificate"]` is the first URI SAN of the verified client
//!   certificate (the SPIFFE ID under Istio); none without a client certificate.
//!
//! Cost (issue 13): the first metadata read of a request costs about 6 µs of Envoy CPU, each later one about
//! 1.4 µs. So a claim is read whole, once: the groups claim is one read whatever its length (decoded from the
//! pair serialization here) rather than one read per item, the groups are not read when there is no subject,
//! and nothing at all is read for a policy without `callers`.
//!
//! ## Claims that are not what the policy says (fail closed)
//! A claim that is present but not text (a number, a boolean, an object, a list where a string is expected,
//! a list holding anything but strings), not UTF-8, holding control characters, or over the bounds below makes
//! [`read`] fail: the filter refuses the request as `unauthenticated` (HTTP 401, -31004) whatever `required`
//! says. Ignoring such a claim instead could only grant less, but it could also let a caller slip past a
//! profile that restricts a group: an identity that cannot be read exactly is not used at all. Bytes cannot
//! always tell types apart (Envoy sends no tags): a number whose 8 bytes all happen to be printable text
//! (only numbers above about 1e100 or tiny ones) reads as that text, and an object whose values are all empty
//! strings reads as the list of its keys. Neither can be sent by a client: both need the token issuer to sign
//! such a claim.

use crate::policy::{Callers, ClaimPath};
use std::fmt;

/// Longest subject (bytes).
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// Longest certificate principal (bytes): SPIFFE IDs are at most 2048.
pub const MAX_PRINCIPAL_BYTES: usize = 2048;
/// Longest group name (bytes).
pub const MAX_GROUP_BYTES: usize = 256;
/// Most groups a caller may have.
pub const MAX_GROUPS: usize = 256;
/// Largest groups claim as read (bytes, whatever its form).
pub const MAX_GROUPS_CLAIM_BYTES: usize = 64 * 1024;

/// Why a request without an identity is refused under `callers.required`.
pub const NONE_REQUIRED: &str = "no verified caller identity (callers.required: jwt_authn must verify a token, or the client present a certificate)";

/// The dynamic metadata namespace of Envoy's JWT filter.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// The verified identity of one request. Every field is empty for an anonymous caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The JWT subject claim (`callers.jwt.subject`).
    pub subject: Option<String>,
    /// The JWT groups claim (`callers.jwt.groups`): read only with a subject.
    pub groups: Vec<String>,
    /// The URI SAN of the verified client certificate (`callers.peer_certificate`).
    pub principal: Option<String>,
}

impl Caller {
    /// A caller with nothing verified.
    pub const ANONYMOUS: Caller = Caller {
        subject: None,
        groups: Vec::new(),
        principal: None,
    };

    /// Something verified says who it is: a JWT subject or a certificate principal.
    pub fn authenticated(&self) -> bool {
        self.subject.is_some() || self.principal.is_some()
    }

    /// Whom `scope: caller` limits count: `jwt:<subject>`, else `peer:<principal>`; `None` when anonymous (the
    /// filter then counts by client address). The prefixes keep a subject from ever naming a principal's count.
    pub fn limit_key(&self) -> Option<String> {
        match (&self.subject, &self.principal) {
            (Some(s), _) => Some(format!("jwt:{s}")),
            (None, Some(p)) => Some(format!("peer:{p}")),
            (None, None) => None,
        }
    }
}

/// A caller and the profile it got, as audit lines and approval callouts report them (policies with
/// `callers` only).
#[derive(Debug, Clone, Copy)]
pub struct Identified<'a> {
    pub caller: &'a Caller,
    /// The profile's name; `None` when the top-level rules apply.
    pub profile: Option<&'a str>,
}

impl Identified<'_> {
    /// `{"subject": …, "groups": […], "principal": …, "profile": …}` (the approval callout's `caller`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "subject": self.caller.subject,
            "groups": self.caller.groups,
            "principal": self.caller.principal,
            "profile": self.profile,
        })
    }
}

/// A verified identity that is present but cannot be read exactly: the request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerError {
    /// What was read, e.g. ``the JWT claim `groups` ``.
    pub source: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for CallerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.source, self.problem)
    }
}

/// Reads the caller's verified identity with `property` (a stream property by path, as Envoy serialises it;
/// `None` when absent): the JWT subject, then its groups (only when there is a subject), then the certificate
/// principal, each only if `callers` asks for it. At most three reads.
pub fn read(
    callers: &Callers,
    mut property: impl FnMut(&[&str]) -> Option<Vec<u8>>,
) -> Result<Caller, CallerError> {
    let mut caller = Caller::default();
    if let Some(jwt) = &callers.jwt {
        fn claim<'a>(metadata: &'a str, path: &'a ClaimPath) -> Vec<&'a str> {
            let mut p: Vec<&str> = vec!["metadata", "filter_metadata", JWT_AUTHN_NAMESPACE];
            p.push(metadata);
            p.extend(path.segments.iter().map(String::as_str));
            p
        }
        let source = |path: &ClaimPath| format!("the JWT claim `{}`", path.text);
        if let Some(bytes) = property(&claim(&jwt.metadata, &jwt.subject)) {
            let subject = text(&bytes, MAX_SUBJECT_BYTES).map_err(|problem| CallerError {
                source: source(&jwt.subject),
                problem,
            })?;
            caller.subject = Some(subject);
            if let Some(path) = &jwt.groups {
                if let Some(bytes) = property(&claim(&jwt.metadata, path)) {
                    caller.groups = groups(&bytes).map_err(|problem| CallerError {
                        source: source(path),
                        problem,
                    })?;
                }
            }
        }
    }
    if callers.peer_certificate {
        if let Some(bytes) = property(&["connection", "uri_san_peer_certificate"]) {
            let principal = text(&bytes, MAX_PRINCIPAL_BYTES).map_err(|problem| CallerError {
                source: "the peer certificate's URI SAN".into(),
                problem,
            })?;
            caller.principal = Some(principal);
        }
    }
    Ok(caller)
}

/// A byte Envoy's serialization of anything but a string would show: C0 controls (a count or size of the pair
/// serialization has NUL bytes; a boolean is 0 or 1; most numbers have NUL bytes), and DEL.
fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// The bytes as a text value: UTF-8, no control character, at most `max` bytes.
fn text(bytes: &[u8], max: usize) -> Result<String, String> {
    if bytes.len() > max {
        return Err(format!(
            "is {} bytes long, over the limit of {max}",
            bytes.len()
        ));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_owned())?;
    if s.chars().any(char::is_control) {
        return Err(
            "is not a text string (it has control bytes: a number, a boolean, a list or an object reads so)"
                .into(),
        );
    }
    Ok(s.to_owned())
}

/// A groups claim: a list of strings (pair serialization, items as keys) or a space-separated string (OAuth
/// `scope`). Empty names are skipped.
fn groups(bytes: &[u8]) -> Result<Vec<String>, String> {
    if bytes.len() > MAX_GROUPS_CLAIM_BYTES {
        return Err(format!(
            "is {} bytes long, over the limit of {MAX_GROUPS_CLAIM_BYTES}",
            bytes.len()
        ));
    }
    let names: Vec<String> = if bytes.iter().copied().any(is_control) {
        // Not a string: a string claim holds no control byte, and the pair serialization always does (its
        // count's high byte is 0).
        let items = pairs(bytes).ok_or_else(|| {
            "is neither a list of strings nor a string (a number or a boolean?)".to_owned()
        })?;
        let mut names = Vec::with_capacity(items.len());
        for (i, (item, value)) in items.into_iter().enumerate() {
            if !value.is_empty() {
                return Err("is an object, not a list of strings".into());
            }
            let name = text(item, MAX_GROUP_BYTES).map_err(|why| format!("item {i} {why}"))?;
            names.push(name);
        }
        names
    } else {
        let s = text(bytes, MAX_GROUPS_CLAIM_BYTES)?;
        let mut names = Vec::new();
        for word in s.split(' ') {
            if word.len() > MAX_GROUP_BYTES {
                return Err(format!(
                    "has a word of {} bytes, over the limit of {MAX_GROUP_BYTES}",
                    word.len()
                ));
            }
            names.push(word.to_owned());
        }
        names
    };
    let names: Vec<String> = names.into_iter().filter(|n| !n.is_empty()).collect();
    if names.len() > MAX_GROUPS {
        return Err(format!(
            "has {} groups, over the limit of {MAX_GROUPS}",
            names.len()
        ));
    }
    Ok(names)
}

/// proxy-wasm's pair serialization: a little-endian u32 count, then a (key size, value size) u32 pair per
/// entry, then each key and each value followed by a NUL byte. `None` unless `bytes` is exactly that.
fn pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = word(0)?;
    // Each entry takes at least 10 bytes (two sizes, two NULs): a count beyond that is not this format.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = bytes.get(at..at.checked_add(key_len)?)?;
        at += key_len;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        let value = bytes.get(at..at.checked_add(value_len)?)?;
        at += value_len;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at += 1;
        out.push((key, value));
    }
    (at == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;
    use std::collections::HashMap;

    /// What Envoy returned for each claim shape (the probe's hex, see the top of this file).
    const LIST: &str =
        "02000000090000000000000007000000000000006d6c2d61646d696e730000726561646572730000";
    const OBJECT: &str = "020000000100000004000000040000000200000030007a65726f007465616d006d6c00";
    const NESTED: &str =
        "010000001a0000000000000002000000010000000000000001000000000000006100006200000000";
    const MIXED: &str =
        "0300000001000000000000000800000000000000010000000000000061000000000000000014400000010000";
    const EMPTY_LIST: &str = "00000000";
    const NUMBER: &str = "00000000801cc840";
    const TRUE: &str = "01";
    const NUL_IN_STRING: &str = "c3a90078";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const POLICY: &str = r#"{"version":"1","callers":{"jwt":{"metadata":"jwt_payload","subject":"sub",
        "groups":"realm_access.roles"},"peer_certificate":true}}"#;

    /// Reads with a fake Envoy holding `props` (paths joined with `/`), and the paths read, in order.
    fn read_with(
        policy: &str,
        props: &[(&str, Vec<u8>)],
    ) -> (Result<Caller, CallerError>, Vec<String>) {
        let p = parse(policy.as_bytes()).unwrap();
        let map: HashMap<String, Vec<u8>> = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut asked = Vec::new();
        let got = read(p.callers.as_ref().unwrap(), |path| {
            let key = path.join("/");
            asked.push(key.clone());
            map.get(&key).cloned()
        });
        (got, asked)
    }

    const SUB: &str = "metadata/filter_metadata/envoy.filters.http.jwt_authn/jwt_payload/sub";
    const ROLES: &str =
        "metadata/filter_metadata/envoy.filters.http.jwt_authn/jwt_payload/realm_access/roles";
    const SAN: &str = "connection/uri_san_peer_certificate";

    #[test]
    fn reads_subject_groups_and_principal_once_each() {
        let (got, asked) = read_with(
            POLICY,
            &[
                (SUB, b"alice".to_vec()),
                (ROLES, hex(LIST)),
                (SAN, b"spiffe://cluster.local/ns/ci/sa/bot".to_vec()),
            ],
        );
        assert_eq!(
            got.unwrap(),
            Caller {
                subject: Some("alice".into()),
                groups: vec!["ml-admins".into(), "readers".into()],
                principal: Some("spiffe://cluster.local/ns/ci/sa/bot".into()),
            }
        );
        assert_eq!(asked, [SUB, ROLES, SAN]);
    }

    #[test]
    fn no_subject_reads_no_groups_and_nothing_is_read_that_the_policy_does_not_use() {
        let (got, asked) = read_with(POLICY, &[(ROLES, hex(LIST))]);
        let c = got.unwrap();
        assert_eq!(c, Caller::ANONYMOUS);
        assert!(!c.authenticated() && c.limit_key().is_none());
        assert_eq!(asked, [SUB, SAN]);
        let jwt_only = r#"{"version":"1","callers":{"jwt":{"metadata":"https://issuer.example"}}}"#;
        let (got, asked) = read_with(
            jwt_only,
            &[(
                "metadata/filter_metadata/envoy.filters.http.jwt_authn/https://issuer.example/sub",
                b"u1".to_vec(),
            )],
        );
        assert_eq!(got.unwrap().limit_key().as_deref(), Some("jwt:u1"));
        assert_eq!(
            asked.len(),
            1,
            "no groups claim configured, no peer certificate"
        );
        let peer_only = r#"{"version":"1","callers":{"peer_certificate":true}}"#;
        let (got, asked) = read_with(peer_only, &[(SAN, b"spiffe://x/y".to_vec())]);
        let c = got.unwrap();
        assert!(c.authenticated());
        assert_eq!(c.limit_key().as_deref(), Some("peer:spiffe://x/y"));
        assert_eq!(asked, [SAN]);
    }

    #[test]
    fn groups_as_a_space_separated_string() {
        let (got, _) = read_with(
            POLICY,
            &[
                (SUB, b"a".to_vec()),
                (ROLES, b" read  write admin ".to_vec()),
            ],
        );
        assert_eq!(got.unwrap().groups, ["read", "write", "admin"]);
        assert_eq!(groups(&hex(EMPTY_LIST)).unwrap(), Vec::<String>::new());
    }

    /// Every shape that is not a string (or, for groups, a list of strings) fails the read: never a group.
    #[test]
    fn claims_of_the_wrong_type_fail_closed() {
        for (shape, bytes) in [
            ("object", hex(OBJECT)),
            ("nested list", hex(NESTED)),
            ("list with a number and a boolean", hex(MIXED)),
            ("number", hex(NUMBER)),
            ("boolean", hex(TRUE)),
            ("string with NUL", hex(NUL_IN_STRING)),
            ("not UTF-8", vec![0xff, 0xfe]),
        ] {
            let (got, _) = read_with(POLICY, &[(SUB, b"alice".to_vec()), (ROLES, bytes.clone())]);
            let e = got.unwrap_err();
            assert_eq!(e.source, "the JWT claim `realm_access.roles`", "{shape}");
            assert!(!e.problem.is_empty(), "{shape}");
            // The same bytes as a subject fail too (a list is no subject).
            let (got, _) = read_with(POLICY, &[(SUB, bytes)]);
            assert_eq!(got.unwrap_err().source, "the JWT claim `sub`", "{shape}");
        }
        let (got, _) = read_with(POLICY, &[(SAN, vec![b'a', 0, b'b'])]);
        assert_eq!(
            got.unwrap_err().to_string(),
            "the peer certificate's URI SAN is not a text string (it has control bytes: a number, a boolean, a list or an object reads so)"
        );
        assert_eq!(
            groups(&hex(OBJECT)).unwrap_err(),
            "is an object, not a list of strings"
        );
        assert_eq!(
            groups(&hex(MIXED)).unwrap_err(),
            "item 1 is not a text string (it has control bytes: a number, a boolean, a list or an object reads so)"
        );
        assert!(groups(&hex(NUMBER)).unwrap_err().starts_with("is neither"));
        assert!(groups(&[1]).unwrap_err().starts_with("is neither"));
    }

    #[test]
    fn huge_claims_fail_closed() {
        let long = |n: usize| vec![b'a'; n];
        assert!(text(&long(MAX_SUBJECT_BYTES), MAX_SUBJECT_BYTES).is_ok());
        let (got, _) = read_with(POLICY, &[(SUB, long(MAX_SUBJECT_BYTES + 1))]);
        assert_eq!(
            got.unwrap_err().to_string(),
            "the JWT claim `sub` is 1025 bytes long, over the limit of 1024"
        );
        let (got, _) = read_with(POLICY, &[(SAN, long(MAX_PRINCIPAL_BYTES + 1))]);
        assert!(got.is_err());
        assert!(groups(&long(MAX_GROUPS_CLAIM_BYTES + 1)).is_err());
        assert!(groups(&long(MAX_GROUP_BYTES + 1))
            .unwrap_err()
            .starts_with("has a word of 257 bytes"));
        let many = vec!["g"; MAX_GROUPS + 1].join(" ");
        assert_eq!(
            groups(many.as_bytes()).unwrap_err(),
            "has 257 groups, over the limit of 256"
        );
        assert_eq!(
            groups(vec!["g"; MAX_GROUPS].join(" ").as_bytes())
                .unwrap()
                .len(),
            MAX_GROUPS
        );
        // The list form, with the same bounds.
        let list = |items: &[&[u8]]| {
            let mut b = u32::try_from(items.len()).unwrap().to_le_bytes().to_vec();
            for i in items {
                b.extend(u32::try_from(i.len()).unwrap().to_le_bytes());
                b.extend(0u32.to_le_bytes());
            }
            for i in items {
                b.extend_from_slice(i);
                b.extend([0, 0]);
            }
            b
        };
        assert_eq!(list(&[b"ml-admins", b"readers"]), hex(LIST));
        let big = long(MAX_GROUP_BYTES + 1);
        assert!(groups(&list(&[b"a", &big]))
            .unwrap_err()
            .starts_with("item 1 is 257 bytes"));
        let items: Vec<&[u8]> = vec![b"g"; MAX_GROUPS + 1];
        assert!(groups(&list(&items)).is_err());
    }

    #[test]
    fn pair_serialization_is_read_exactly() {
        assert_eq!(
            pairs(&hex(OBJECT)).unwrap(),
            [(&b"0"[..], &b"zero"[..]), (&b"team"[..], &b"ml"[..])]
        );
        let list = hex(LIST);
        for cut in 0..list.len() {
            assert!(pairs(&list[..cut]).is_none(), "{cut}");
        }
        let mut longer = list.clone();
        longer.push(0);
        assert!(pairs(&longer).is_none());
        // A missing terminator.
        let mut bad = list;
        bad[20 + 9] = b'x';
        assert!(pairs(&bad).is_none());
        // Counts and sizes that point past the end, or overflow.
        assert!(pairs(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(pairs(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]).is_none());
    }
}
