//! Who may decide: approvers log in with a name and a password, checked against Argon2id hashes (RustCrypto's
//! `argon2`, PHC strings: `name:$argon2id$v=19$m=19456,t=2,p=1$salt$hash` lines in the approvers file). Argon2id is
//! OWASP's first choice for password storage: memory-hard, so a stolen approvers file is slow to attack with
//! GPUs; the PHC string carries its own salt and parameters, so they can be raised later without a format change.
//!
//! A login gets a session (a random id in an HttpOnly, SameSite=Lax cookie; sessions live in memory, a restart
//! logs everyone out) and a CSRF token. Every state-changing request made with the cookie must carry that token
//! (`x-csrf-token` header or `csrf` form field: the synchronizer token pattern) AND come from the console's own
//! origin (the `Origin` header, else `Referer`). Lax rather than Strict so that the link in a notification opens
//! the console logged in; cross-site POSTs carry no Lax cookie anyway, and the token and Origin checks stand on
//! their own. Scripts use HTTP Basic authentication instead (`curl -u name:password`): a header no cross-site page
//! can make a browser send, since the console never asks a browser for Basic credentials.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::http::{header, HeaderMap};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// How long a login lasts.
pub const SESSION_MS: u64 = 12 * 3600 * 1000;
/// The most sessions kept at once (the oldest goes first).
const MAX_SESSIONS: usize = 10_000;

/// Argon2id with RustCrypto's defaults (OWASP's minimum: 19 MiB, 2 passes, 1 lane) and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// A login name: letters, digits and `.`, `_`, `@`, `-`; 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// The approvers: login name -> Argon2 PHC string.
pub struct Approvers {
    hashes: HashMap<String, String>,
    /// Checked when the name is unknown, so that an unknown name takes as long as a wrong password.
    decoy: String,
}

impl Approvers {
    /// Reads an approvers file: `name:PHC-string` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Approvers, String> {
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = n + 1;
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("line {n}: expected NAME:HASH"));
            };
            if !valid_name(name) {
                return Err(format!(
                    "line {n}: \"{name}\" is not a valid name (letters, digits, . _ @ -; at most 64)"
                ));
            }
            match PasswordHash::new(hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                _ => {
                    return Err(format!(
                        "line {n}: the password of \"{name}\" is not an Argon2 hash: make the line with \
                         `mcp-policy approvals --hash-password {name}`"
                    ))
                }
            }
            if hashes.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(format!("line {n}: \"{name}\" appears twice"));
            }
        }
        if hashes.is_empty() {
            return Err(
                "no approver: add a line with `mcp-policy approvals --hash-password NAME`".into(),
            );
        }
        Ok(Approvers {
            hashes,
            decoy: hash_password("decoy")?,
        })
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether `password` is `name`'s (about as slow either way: Argon2 by design).
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(name) {
            Some(h) => (h.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    }
}

/// One login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    pub expires_ms: u64,
}

/// The logins, in memory.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`: (session id, its record).
    pub fn create(&self, user: &str, now_ms: u64) -> Result<(String, Session), String> {
        let id = super::random_id()?;
        let s = Session {
            user: user.to_owned(),
            csrf: super::random_id()?,
            expires_ms: now_ms.saturating_add(SESSION_MS),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires_ms > now_ms);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    pub fn get(&self, id: &str, now_ms: u64) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|s| s.expires_ms > now_ms).cloned()
    }

    pub fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// Constant-time equality of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// (name, password) of an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// Where the console may be reached, for the Host and Origin checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The `Host` values accepted for the console's pages and API (`None`: any). Refusing other names keeps a
    /// page that rebinds its own DNS name to 127.0.0.1 from talking to a loopback console.
    pub hosts: Option<Vec<String>>,
    /// `https` when the console is reached over TLS (its public URL says so): cookies are then `Secure`.
    pub https: bool,
}

impl Site {
    pub fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
    }

    /// Whether a state-changing request comes from the console's own pages: its `Origin` (else the origin of
    /// its `Referer`) is this console's scheme and `Host`. `required`: a request with neither header is refused
    /// (browsers send `Origin` with every POST; scripts using Basic authentication send none).
    pub fn same_origin(&self, headers: &HeaderMap, required: bool) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let scheme = if self.https { "https" } else { "http" };
        let expected = format!("{scheme}://{host}");
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        match origin {
            // "null": a sandboxed frame, a file, a redirect across origins: never ours.
            Some(o) => o.eq_ignore_ascii_case(&expected),
            None => match headers.get(header::REFERER).and_then(|r| r.to_str().ok()) {
                Some(r) => {
                    let lower = r.to_ascii_lowercase();
                    let e = expected.to_ascii_lowercase();
                    lower == e || lower.starts_with(&format!("{e}/"))
                }
                None => !required,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn passwords_are_stored_hashed_and_checked() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert_ne!(
            hash,
            hash_password("correct horse").unwrap(),
            "a random salt each time"
        );
        let a = Approvers::parse(&format!("# approvers\n\nana:{hash}\n")).unwrap();
        assert_eq!(a.len(), 1);
        assert!(a.verify("ana", "correct horse"));
        assert!(!a.verify("ana", "correct horse "));
        assert!(!a.verify("ana", ""));
        assert!(!a.verify("bob", "correct horse"));
        assert!(
            !a.verify("bob", "decoy"),
            "the decoy hash never logs anyone in"
        );
    }

    #[test]
    fn the_approvers_file_refuses_what_is_not_a_hash() {
        let hash = hash_password("x").unwrap();
        for (text, fragment) in [
            ("ana:secret".to_owned(), "not an Argon2 hash"),
            ("ana".to_owned(), "expected NAME:HASH"),
            (format!("an a:{hash}"), "not a valid name"),
            (format!("ana:{hash}\nana:{hash}"), "appears twice"),
            ("# nobody".to_owned(), "no approver"),
            (
                "ana:$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA".to_owned(),
                "not an Argon2 hash",
            ),
        ] {
            let err = Approvers::parse(&text).err().unwrap();
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::default();
        let (id, sess) = s.create("ana", 1000).unwrap();
        assert_eq!(id.len(), 32);
        assert_ne!(id, sess.csrf);
        assert_eq!(s.get(&id, 2000).unwrap().user, "ana");
        assert!(s.get(&id, 1000 + SESSION_MS).is_none());
        assert!(s.get("nope", 2000).is_none());
        s.remove(&id);
        assert!(s.get(&id, 2000).is_none());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }

    #[test]
    fn cookies_and_basic_credentials() {
        let h = headers(&[
            ("cookie", "a=1; mcp_approvals_session=xyz"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(cookie(&h, "mcp_approvals_session"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let h = headers(&[("authorization", "Basic YW5hOnMzY3I6ZXQ=")]); // ana:s3cr:et
        assert_eq!(
            basic_credentials(&h),
            Some(("ana".into(), "s3cr:et".into()))
        );
        for bad in ["Bearer YW5hOnM=", "Basic !!!", "Basic YW5h"] {
            assert_eq!(
                basic_credentials(&headers(&[("authorization", bad)])),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn origin_and_host_checks() {
        let site = Site {
            hosts: Some(vec!["127.0.0.1:8002".into(), "localhost:8002".into()]),
            https: false,
        };
        let ok = headers(&[
            ("host", "127.0.0.1:8002"),
            ("origin", "http://127.0.0.1:8002"),
        ]);
        assert!(site.host_allowed(&ok) && site.same_origin(&ok, true));
        let referer = headers(&[
            ("host", "localhost:8002"),
            ("referer", "http://localhost:8002/?x"),
        ]);
        assert!(site.same_origin(&referer, true));
        for h in [
            headers(&[
                ("host", "127.0.0.1:8002"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:8002"), ("origin", "null")]),
            headers(&[
                ("host", "127.0.0.1:8002"),
                ("origin", "https://127.0.0.1:8002"),
            ]),
            headers(&[
                ("host", "127.0.0.1:8002"),
                ("referer", "http://127.0.0.1:8002.evil.example/"),
            ]),
            headers(&[("host", "127.0.0.1:8002")]),
        ] {
            assert!(!site.same_origin(&h, true), "{h:?}");
        }
        // A script (Basic authentication) sends no Origin: fine when not required; a foreign one never is.
        assert!(site.same_origin(&headers(&[("host", "127.0.0.1:8002")]), false));
        assert!(!site.same_origin(
            &headers(&[
                ("host", "127.0.0.1:8002"),
                ("origin", "http://evil.example")
            ]),
            false
        ));
        // DNS rebinding: a foreign name pointing at 127.0.0.1.
        assert!(!site.host_allowed(&headers(&[("host", "evil.example:8002")])));
        assert!(!site.host_allowed(&HeaderMap::new()));
        let anywhere = Site {
            hosts: None,
            https: true,
        };
        let h = headers(&[
            ("host", "approvals.example"),
            ("origin", "https://approvals.example"),
        ]);
        assert!(anywhere.host_allowed(&h) && anywhere.same_origin(&h, true));
    }
}
