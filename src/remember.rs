//! Remembered approvals: an approval whose answer carries `"remember_seconds": N` lets the same caller make the
//! same call (method, and tool or prompt name or resource URI) again without asking the approval service, until
//! N seconds have passed. Conditions and rate limits are still checked on every call first: a remembered
//! approval only replaces the callout.
//!
//! ## State layout (bounded)
//! Kept in Envoy's shared data through a [`Store`] (one map for every worker of the process), bounded like the
//! rate-limit slots of `crate::limits`: no key per caller, a fixed number of slots, stale entries overwritten.
//! - [`SLOTS`] keys at most, `mcp_policy/ra/<n>`, each made the first time an approval is remembered in it.
//!   An approval is hashed onto one slot, which holds its [`Key`] (32 bytes) and when it ends (unix seconds,
//!   8 bytes little-endian): 40 bytes a slot, 58 with its name; under 240 KiB when every slot is in use.
//! - A newer remembered approval overwrites whatever its slot held, ended or not; two workers writing one slot
//!   at once keep one of the two (a plain `set`: no compare-and-swap, no creation lock). An approval lost that
//!   way costs its later calls a callout, as if it had never been remembered (the approvals console answers
//!   those at once: it remembers its approvals too). So the bound is fixed, not a policy setting: a slot taken
//!   by another approval never grants anything, it only asks.
//! - A call is granted from a slot only on an exact match of its 32-byte key, before the slot's end. A store
//!   that fails, or a slot that holds anything the filter does not write (another length, an end further ahead
//!   than [`MAX_REMEMBER_SECONDS`] and a minute), is reported and the call is asked about as usual: fail closed.
//!
//! The key is SHA-256, not the FNV-1a of the rate-limit slots: a slot's key decides a grant, and part of it is
//! what the client says (a session id), so it must be a hash whose collisions cannot be made at will.

use crate::approval::{ApprovalConfig, MAX_REMEMBER_SECONDS};
use crate::limits::Store;

/// Slots for remembered approvals.
pub const SLOTS: u64 = 4096;
/// Key prefix of every remembered approval in the store.
pub const PREFIX: &str = "mcp_policy/ra/";
/// Bytes of a slot's value: the key, then the end.
const VALUE_BYTES: usize = 40;

/// Whom an approval is remembered for. The two kinds never match each other (a session id that spells a
/// verified caller's name is still a session id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum For<'a> {
    /// The request's rate-limit identity: a session id or another configured header, or the client address.
    Session(&'a str),
    /// A caller Envoy verified (`jwt:<subject>`, `peer:<principal>`).
    Caller(&'a str),
}

/// What one remembered approval is for: the approval service that gave it (cluster, authority, path), whom,
/// and the call (method and name). SHA-256 of those parts, each prefixed with its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    pub fn new(approval: &ApprovalConfig, who: For<'_>, method: &str, name: &str) -> Key {
        let (kind, id) = match who {
            For::Session(s) => ("session", s),
            For::Caller(c) => ("caller", c),
        };
        let parts = [
            "mcp-policy remembered approval 1",
            &approval.cluster,
            &approval.authority,
            &approval.path,
            kind,
            id,
            method,
            name,
        ];
        let mut data = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
        for p in parts {
            data.extend_from_slice(&(p.len() as u64).to_le_bytes());
            data.extend_from_slice(p.as_bytes());
        }
        Key(crate::sha256::digest(&data))
    }

    fn slot(&self) -> String {
        let first = self.0.first_chunk::<8>().copied().unwrap_or_default();
        format!("{PREFIX}{}", u64::from_le_bytes(first) % SLOTS)
    }
}

/// Whether an approval for `key` is remembered at `now_secs`. `Err`: the store failed or its slot holds
/// something the filter never writes (the caller asks, as if nothing were remembered).
pub fn holds<S: Store>(store: &S, key: &Key, now_secs: u64) -> Result<bool, String> {
    let slot = key.slot();
    let Some((value, _)) = store.get(&slot).map_err(|e| e.0)? else {
        return Ok(false);
    };
    let Some((held, end)) = value
        .split_first_chunk::<32>()
        .filter(|_| value.len() == VALUE_BYTES)
        .and_then(|(k, rest)| Some((k, u64::from_le_bytes(*rest.first_chunk::<8>()?))))
    else {
        return Err(format!(
            "{slot} holds {} bytes, not a remembered approval",
            value.len()
        ));
    };
    if held != &key.0 || end <= now_secs {
        return Ok(false);
    }
    // A worker may read with a clock taken a moment before another wrote: a minute of slack.
    if end - now_secs > MAX_REMEMBER_SECONDS + 60 {
        return Err(format!(
            "{slot} ends in {}s, longer than any approval is remembered",
            end - now_secs
        ));
    }
    Ok(true)
}

/// Remembers an approval for `key` from `now_secs` for `secs` (at most [`MAX_REMEMBER_SECONDS`]), in place of
/// whatever its slot held.
pub fn remember<S: Store>(store: &S, key: &Key, now_secs: u64, secs: u64) -> Result<(), String> {
    let end = now_secs.saturating_add(secs.min(MAX_REMEMBER_SECONDS));
    let mut value = Vec::with_capacity(VALUE_BYTES);
    value.extend_from_slice(&key.0);
    value.extend_from_slice(&end.to_le_bytes());
    store
        .set(&key.slot(), &value, None)
        .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::memory::MemoryStore;
    use crate::limits::{SetError, StoreError};

    fn service(cluster: &str) -> ApprovalConfig {
        ApprovalConfig {
            cluster: cluster.into(),
            authority: cluster.into(),
            path: "/approve".into(),
            timeout_ms: 1000,
            headers: Vec::new(),
        }
    }

    fn key(who: For<'_>, name: &str) -> Key {
        Key::new(&service("approvals"), who, "tools/call", name)
    }

    #[test]
    fn remembered_until_it_ends_for_that_caller_and_call_only() {
        let s = MemoryStore::default();
        let k = key(For::Session("s-1"), "set_run_tag");
        assert_eq!(holds(&s, &k, 100), Ok(false), "nothing remembered yet");
        remember(&s, &k, 100, 60).unwrap();
        assert_eq!(holds(&s, &k, 100), Ok(true));
        assert_eq!(holds(&s, &k, 159), Ok(true));
        assert_eq!(holds(&s, &k, 160), Ok(false), "ended");
        for other in [
            key(For::Session("s-2"), "set_run_tag"),
            key(For::Session("s-1"), "set_run_tagx"),
            key(For::Caller("s-1"), "set_run_tag"),
            Key::new(
                &service("approvals"),
                For::Session("s-1"),
                "prompts/get",
                "set_run_tag",
            ),
            Key::new(
                &service("other"),
                For::Session("s-1"),
                "tools/call",
                "set_run_tag",
            ),
            // Parts are length-prefixed: moving a byte from one part to the next is another key.
            key(For::Session("s-1s"), "et_run_tag"),
        ] {
            assert_ne!(other, k);
            assert_eq!(holds(&s, &other, 100), Ok(false), "{other:?}");
        }
    }

    #[test]
    fn bounded_by_the_slots_and_a_newer_approval_takes_a_slot_over() {
        let s = MemoryStore::default();
        let keys: Vec<Key> = (0..3 * SLOTS)
            .map(|i| key(For::Session(&format!("s-{i}")), "t"))
            .collect();
        for k in &keys {
            remember(&s, k, 0, 3600).unwrap();
        }
        assert!(s.map.borrow().len() as u64 <= SLOTS);
        assert!(s.bytes() as u64 <= SLOTS * 58 && SLOTS * 58 < 240 * 1024);
        assert!(s.map.borrow().keys().all(|k| k.starts_with(PREFIX)));
        assert!(s.map.borrow().values().all(|(v, _)| v.len() == VALUE_BYTES));
        // Every slot holds its newest approval; the ones it overwrote are asked about again.
        let held = keys.iter().filter(|k| holds(&s, k, 1) == Ok(true)).count();
        assert_eq!(held, s.map.borrow().len());
        let last = keys.last().unwrap();
        assert_eq!(holds(&s, last, 1), Ok(true));
        let first_in_its_slot = keys.iter().find(|k| k.slot() == last.slot()).unwrap();
        assert_eq!(holds(&s, first_in_its_slot, 1), Ok(false));
    }

    #[test]
    fn capped_at_seven_days() {
        let s = MemoryStore::default();
        let k = key(For::Session("s"), "t");
        remember(&s, &k, 1000, u64::MAX).unwrap();
        assert_eq!(holds(&s, &k, 1000 + MAX_REMEMBER_SECONDS - 1), Ok(true));
        assert_eq!(holds(&s, &k, 1000 + MAX_REMEMBER_SECONDS), Ok(false));
    }

    #[test]
    fn what_the_filter_does_not_write_is_an_error() {
        let s = MemoryStore::default();
        let k = key(For::Session("s"), "t");
        s.set(&k.slot(), b"garbage", None).unwrap();
        assert!(holds(&s, &k, 0).unwrap_err().contains("holds 7 bytes"));
        // The right key, but an end no approval may have.
        let mut v = k.0.to_vec();
        v.extend_from_slice(&(MAX_REMEMBER_SECONDS + 70).to_le_bytes());
        s.set(&k.slot(), &v, None).unwrap();
        assert!(holds(&s, &k, 5).unwrap_err().contains("longer than"));
    }

    /// Shared data that refuses every call.
    struct Broken;
    impl Store for Broken {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Err(StoreError("BadArgument".into()))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
            Err(SetError::Other("BadArgument".into()))
        }
    }

    #[test]
    fn a_failing_store_is_an_error() {
        let k = key(For::Session("s"), "t");
        assert_eq!(holds(&Broken, &k, 0), Err("BadArgument".into()));
        assert!(remember(&Broken, &k, 0, 60)
            .unwrap_err()
            .contains("BadArgument"));
    }
}
