//! Rate-limit counting: fixed windows aligned to the Unix epoch, counted with compare-and-swap over a
//! [`Store`] (Envoy's shared data in the filter, a `HashMap` in tests), exact across Envoy workers.
//!
//! ## State layout (bounded)
//! - Session-scoped limits: an identity is hashed onto one of `max_tracked` **slots** (`rl/s/<n>`). A slot
//!   holds its owner's hash, when it was last touched, and one `(limit, window, count)` entry per limit the
//!   owner used. No key is ever made per window: a stale entry is overwritten by the next window.
//! - When an identity's slot is held by another identity that touched it less than the policy's longest
//!   window ago, the identity is counted in one of [`OVERFLOW_BUCKETS`] shared **overflow** buckets
//!   (`rl/o/<n>`), together with every other identity that landed there. A shared count can only run out
//!   sooner, so no identity ever gets more than its limit. A slot is given to a new owner only after a
//!   full longest-window of silence (so the old owner's counts have all expired), and the new owner starts
//!   from its overflow bucket's counts: it may have been counted there earlier in the same window, and a
//!   bucket's count is never below any of its members', so moving from the bucket to the slot never resets
//!   an identity's count.
//! - Caller-scoped limits (`scope: caller`): the same slots and overflow buckets, keyed by the caller instead
//!   of the session identity (hashed apart: a session header can never name a caller's slot).
//! - Global limits: one key per limit (`rl/g/<limit id>`).
//!
//! ## Creating keys
//! Envoy's shared data cannot create a key atomically (a `set` on a missing key ignores the CAS), so keys
//! are created only while holding a creation lock (`rl/lock`, itself created when the policy loads).
//!
//! ## Fleet-wide limits
//! With a `rate_limit_service` in the policy, limits are counted by Envoy's rate limit service instead (one
//! count for every Envoy of the fleet): [`fleet`] shapes what is asked and reads the answer, [`rls`] is the wire
//! format. Limits marked `"counted": "proxy"` stay here.

pub mod fleet;
pub mod rls;

use std::fmt;

/// Shared overflow buckets for identities whose slot is taken.
pub const OVERFLOW_BUCKETS: u64 = 64;
/// Default for `identity.max_tracked`.
pub const DEFAULT_MAX_TRACKED: u32 = 65_536;
/// CAS attempts before giving up on one key (each attempt means another worker wrote in between).
const CAS_ATTEMPTS: usize = 256;
/// Key prefix of every rate-limit entry in the store.
pub const PREFIX: &str = "mcp_policy/rl/";

/// The key of the creation lock.
pub fn lock_key() -> String {
    format!("{PREFIX}lock")
}

/// A key-value store with compare-and-swap, shaped like proxy-wasm shared data.
pub trait Store {
    /// The value and its CAS token, `None` when the key does not exist.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value`; with `cas`, only if the key still has that token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Other(String),
}

/// Whom a limit counts: each session identity, each caller, or everyone together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per session identity (`identity.headers`, else the caller, else the client IP).
    Session,
    /// Per verified caller (JWT subject, else certificate principal, else the client IP).
    Caller,
    /// One count for all callers.
    Global,
}

impl Scope {
    /// As the policy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Session => "session",
            Scope::Caller => "caller",
            Scope::Global => "global",
        }
    }
}

/// One limit as the counter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// Stable id (same rule, same limit → same id across reloads).
    pub id: u64,
    pub max: u64,
    pub window_secs: u64,
    pub scope: Scope,
}

/// Who the charges of one request count for: `session` for session-scoped limits, `caller` for caller-scoped
/// ones (see [`Scope`]; both already resolved to their fallbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    pub session: &'a str,
    pub caller: &'a str,
}

/// Units to take from one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub limit: LimitSpec,
    pub units: u64,
}

/// Units taken, kept so they can be given back (upstream 5xx, approval not granted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    key: String,
    limit_id: u64,
    window: u64,
    units: u64,
}

/// Why units could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The charge at this index (in the slice given to [`Limiter::reserve`]) is over its limit.
    Limited { index: usize, retry_after_secs: u64 },
    /// The store misbehaved or stayed contended: fail closed.
    Unavailable(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Limited {
                index,
                retry_after_secs,
            } => write!(f, "limit {index} reached, retry after {retry_after_secs}s"),
            Refusal::Unavailable(m) => write!(f, "rate-limit state unavailable: {m}"),
        }
    }
}

/// FNV-1a, 64 bit: a stable hash for identities and limit ids (same in every worker and across reloads).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so that ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The value of one key: owner (0 for shared keys), last touch (unix seconds), entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cell {
    owner: u64,
    touched: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    limit: u64,
    window: u64,
    count: u64,
}

/// Bytes of one cell: 16 + 24 per limit entry.
pub const CELL_HEADER_BYTES: usize = 16;
pub const CELL_ENTRY_BYTES: usize = 24;

impl Cell {
    fn decode(b: &[u8]) -> Option<Cell> {
        let word = |i: usize| -> Option<u64> {
            let s = b.get(i * 8..i * 8 + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Some(u64::from_le_bytes(a))
        };
        if b.is_empty() {
            return Some(Cell::default());
        }
        if b.len() < CELL_HEADER_BYTES
            || !(b.len() - CELL_HEADER_BYTES).is_multiple_of(CELL_ENTRY_BYTES)
        {
            return None;
        }
        let n = (b.len() - CELL_HEADER_BYTES) / CELL_ENTRY_BYTES;
        let mut entries = Vec::with_capacity(n + 1);
        for i in 0..n {
            let w = 2 + i * 3;
            entries.push(Entry {
                limit: word(w)?,
                window: word(w + 1)?,
                count: word(w + 2)?,
            });
        }
        Some(Cell {
            owner: word(0)?,
            touched: word(1)?,
            entries,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CELL_HEADER_BYTES + CELL_ENTRY_BYTES * self.entries.len());
        out.extend_from_slice(&self.owner.to_le_bytes());
        out.extend_from_slice(&self.touched.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.limit.to_le_bytes());
            out.extend_from_slice(&e.window.to_le_bytes());
            out.extend_from_slice(&e.count.to_le_bytes());
        }
        out
    }

    fn count(&self, limit: u64, window: u64) -> u64 {
        self.entries
            .iter()
            .find(|e| e.limit == limit && e.window == window)
            .map_or(0, |e| e.count)
    }

    fn put(&mut self, limit: u64, window: u64, count: u64) {
        self.entries.retain(|e| e.limit != limit);
        self.entries.push(Entry {
            limit,
            window,
            count,
        });
    }
}

/// `{PREFIX}{kind}{n}`, written without `format!`: every rate-limited call makes one, and the formatting
/// machinery costs more than the rest of the key (issue 16: about 1,000 instructions of a small call's 21,000).
fn numbered_key(kind: &str, n: u64) -> String {
    fn push_decimal(s: &mut String, n: u64) {
        if n >= 10 {
            push_decimal(s, n / 10);
        }
        s.push(char::from(b'0' + (n % 10) as u8));
    }
    let mut key = String::with_capacity(PREFIX.len() + kind.len() + 20);
    key.push_str(PREFIX);
    key.push_str(kind);
    push_decimal(&mut key, n);
    key
}

/// Counts over a store. `max_tracked` slots for session identities; `hold_secs` is the policy's longest
/// session window (a slot changes owner only after that much silence).
pub struct Limiter<'s, S: Store> {
    pub store: &'s S,
    pub max_tracked: u32,
    pub hold_secs: u64,
}

enum Target {
    /// A slot keyed by identity: give up (and use overflow) if another identity holds it.
    Slot(String),
    /// A shared key: overflow bucket or global limit.
    Shared(String),
}

/// Where a group of charges is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The slot of this identity hash (session or caller), else its overflow bucket.
    Slot(u64),
    /// The key of the global limit with this id.
    Global(u64),
}

/// The charges counted in one key, with their indexes. Groups are kept in the order of their first charge.
type Group<'c> = (Key, Vec<(usize, &'c Charge)>);

enum Step {
    Reserved(Vec<Reservation>),
    /// The charge at this index (into the charges given to [`Limiter::reserve`]) is over its limit.
    Limited(usize),
    Taken,
}

impl<S: Store> Limiter<'_, S> {
    fn slot_key(&self, identity: u64) -> String {
        numbered_key("s/", identity % u64::from(self.max_tracked.max(1)))
    }

    fn overflow_key(identity: u64) -> String {
        numbered_key("o/", (identity >> 32) % OVERFLOW_BUCKETS)
    }

    /// Takes every charge (in order) for `identity`, all or nothing; caller-scoped charges count for
    /// `identity` too (in the caller slots: see [`Limiter::reserve_for`], which names the caller apart).
    pub fn reserve(
        &self,
        identity: &str,
        charges: &[Charge],
        now: u64,
    ) -> Result<Vec<Reservation>, Refusal> {
        let who = Who {
            session: identity,
            caller: identity,
        };
        self.reserve_for(who, charges, now)
    }

    /// Takes every charge (in order), all or nothing: session-scoped ones for `who.session`, caller-scoped
    /// ones for `who.caller`.
    ///
    /// Charges that count in the same key (every session-scoped charge shares the identity's slot, every
    /// caller-scoped one the caller's; a global limit has its own key) are read and written together: one get
    /// and one compare-and-swap per key, however many limits a call carries. Keys are independent, so the
    /// charge refused is the one that charging one by one, in order, would refuse first.
    pub fn reserve_for(
        &self,
        who: Who<'_>,
        charges: &[Charge],
        now: u64,
    ) -> Result<Vec<Reservation>, Refusal> {
        let session = fnv1a(&[who.session.as_bytes()]);
        // A distinct first part: no session identity (UTF-8, so never a 0xff byte) hashes like a caller.
        let caller = fnv1a(&[b"caller", who.caller.as_bytes()]);
        let mut groups: Vec<Group> = Vec::new();
        for (index, c) in charges.iter().enumerate() {
            let key = match c.limit.scope {
                Scope::Session => Key::Slot(session),
                Scope::Caller => Key::Slot(caller),
                Scope::Global => Key::Global(c.limit.id),
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push((index, c)),
                None => groups.push((key, vec![(index, c)])),
            }
        }
        let mut taken: Vec<Reservation> = Vec::with_capacity(charges.len());
        let mut refused: Option<usize> = None;
        for (key, group) in &groups {
            let first = group.first().map_or(0, |(i, _)| *i);
            if refused.is_some_and(|r| r < first) {
                break; // no later group can hold an earlier refusal
            }
            let step = match *key {
                Key::Global(id) => self.take(
                    &Target::Shared(format!("{PREFIX}g/{id:016x}")),
                    session,
                    group,
                    now,
                ),
                Key::Slot(who) => {
                    match self.take(&Target::Slot(self.slot_key(who)), who, group, now) {
                        Ok(Step::Taken) => {
                            self.take(&Target::Shared(Self::overflow_key(who)), who, group, now)
                        }
                        s => s,
                    }
                }
            };
            match step {
                Ok(Step::Reserved(r)) => taken.extend(r),
                Ok(Step::Limited(index)) => refused = Some(refused.map_or(index, |r| r.min(index))),
                Ok(Step::Taken) => {
                    self.release(&taken);
                    return Err(Refusal::Unavailable(
                        "a shared key reported an owner".into(),
                    ));
                }
                Err(e) => {
                    self.release(&taken);
                    return Err(e);
                }
            }
        }
        let Some(index) = refused else {
            return Ok(taken);
        };
        self.release(&taken);
        let w = charges.get(index).map_or(1, |c| c.limit.window_secs.max(1));
        let retry_after_secs = ((now / w + 1) * w).saturating_sub(now).max(1);
        Err(Refusal::Limited {
            index,
            retry_after_secs,
        })
    }

    /// Takes `charges` (with their indexes) from one key, all or none, in one compare-and-swap.
    fn take(
        &self,
        target: &Target,
        who: u64,
        charges: &[(usize, &Charge)],
        now: u64,
    ) -> Result<Step, Refusal> {
        let (key, owned) = match target {
            Target::Slot(k) => (k, true),
            Target::Shared(k) => (k, false),
        };
        for _ in 0..CAS_ATTEMPTS {
            let Some((bytes, cas)) = self.get(key)? else {
                self.create(key)?;
                continue;
            };
            let mut cell = Cell::decode(&bytes)
                .ok_or_else(|| Refusal::Unavailable(format!("corrupt value at {key}")))?;
            if owned && cell.owner != who {
                let held = cell.owner != 0 && now.saturating_sub(cell.touched) < self.hold_secs;
                if held {
                    return Ok(Step::Taken);
                }
                // A slot changing owner starts from the new owner's overflow bucket: the new owner may have
                // been counted there earlier in this very window (the old owner's silence says nothing about
                // when), and must not start over. The bucket's counts are never below its own.
                let entries = if cell.owner == 0 {
                    Vec::new()
                } else {
                    self.bucket_entries(who)?
                };
                cell = Cell {
                    owner: who,
                    touched: now,
                    entries,
                };
            }
            let mut reserved = Vec::with_capacity(charges.len());
            for (index, c) in charges {
                let window = now / c.limit.window_secs.max(1);
                let next = cell.count(c.limit.id, window).saturating_add(c.units);
                if next > c.limit.max {
                    return Ok(Step::Limited(*index));
                }
                cell.put(c.limit.id, window, next);
                reserved.push(Reservation {
                    key: key.clone(),
                    limit_id: c.limit.id,
                    window,
                    units: c.units,
                });
            }
            if owned {
                cell.touched = now;
            }
            match self.store.set(key, &cell.encode(), Some(cas)) {
                Ok(()) => return Ok(Step::Reserved(reserved)),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Other(e)) => return Err(Refusal::Unavailable(e)),
            }
        }
        Err(Refusal::Unavailable(format!(
            "{key} stayed contended for {CAS_ATTEMPTS} attempts"
        )))
    }

    /// The entries of `who`'s overflow bucket (none if it was never used).
    fn bucket_entries(&self, who: u64) -> Result<Vec<Entry>, Refusal> {
        let key = Self::overflow_key(who);
        match self.get(&key)? {
            None => Ok(Vec::new()),
            Some((bytes, _)) => Cell::decode(&bytes)
                .map(|c| c.entries)
                .ok_or_else(|| Refusal::Unavailable(format!("corrupt value at {key}"))),
        }
    }

    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, Refusal> {
        self.store.get(key).map_err(|e| Refusal::Unavailable(e.0))
    }

    /// Creates `key` (empty) under the creation lock, unless another worker did first.
    fn create(&self, key: &str) -> Result<(), Refusal> {
        let lock = lock_key();
        for _ in 0..CAS_ATTEMPTS {
            let Some((state, cas)) = self.get(&lock)? else {
                return Err(Refusal::Unavailable(
                    "the creation lock is missing (policy not loaded?)".into(),
                ));
            };
            if state.first() == Some(&1) {
                continue; // held by another worker for a few microseconds
            }
            match self.store.set(&lock, &[1], Some(cas)) {
                Ok(()) => {}
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Other(e)) => return Err(Refusal::Unavailable(e)),
            }
            let made = match self.get(key) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => self
                    .store
                    .set(key, &[], None)
                    .map_err(|e| Refusal::Unavailable(format!("{e:?}"))),
                Err(e) => Err(e),
            };
            let released = self.store.set(&lock, &[0], None);
            made?;
            return released.map_err(|e| Refusal::Unavailable(format!("{e:?}")));
        }
        Err(Refusal::Unavailable("the creation lock stayed busy".into()))
    }

    /// Gives units back (same window only: a new window already started from zero).
    pub fn release(&self, reservations: &[Reservation]) {
        for r in reservations {
            for _ in 0..CAS_ATTEMPTS {
                let Ok(Some((bytes, cas))) = self.store.get(&r.key) else {
                    break;
                };
                let Some(mut cell) = Cell::decode(&bytes) else {
                    break;
                };
                let have = cell.count(r.limit_id, r.window);
                if have == 0 {
                    break;
                }
                cell.put(r.limit_id, r.window, have.saturating_sub(r.units));
                match self.store.set(&r.key, &cell.encode(), Some(cas)) {
                    Err(SetError::CasMismatch) => continue,
                    _ => break,
                }
            }
        }
    }
}

/// Creates the creation lock if it does not exist (call when the policy loads, before any traffic).
pub fn init_store<S: Store>(store: &S) -> Result<(), String> {
    let lock = lock_key();
    match store.get(&lock) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => store.set(&lock, &[0], None).map_err(|e| format!("{e:?}")),
        Err(e) => Err(e.0),
    }
}

/// A `HashMap` store with Envoy's shared-data semantics, for tests and the native CLI.
pub mod memory {
    use super::{SetError, Store, StoreError};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MemoryStore {
        pub map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: Cell<u32>,
        /// Test hook: fail this many upcoming CAS writes as if another worker had written first.
        pub conflicts: Cell<u32>,
        /// Gets and sets so far (what each would cost as a host call).
        pub ops: Cell<u32>,
    }

    impl MemoryStore {
        /// Bytes of keys and values held (what Envoy would hold, before its own per-entry overhead).
        pub fn bytes(&self) -> usize {
            self.map
                .borrow()
                .iter()
                .map(|(k, (v, _))| k.len() + v.len())
                .sum()
        }
    }

    impl Store for MemoryStore {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.ops.set(self.ops.get() + 1);
            Ok(self.map.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            self.ops.set(self.ops.get() + 1);
            let mut map = self.map.borrow_mut();
            if let (Some(c), Some((_, cur))) = (cas, map.get(key)) {
                if self.conflicts.get() > 0 {
                    self.conflicts.set(self.conflicts.get() - 1);
                    return Err(SetError::CasMismatch);
                }
                if c != *cur {
                    return Err(SetError::CasMismatch);
                }
            }
            let n = self.next_cas.get().wrapping_add(1).max(1);
            self.next_cas.set(n);
            map.insert(key.to_owned(), (value.to_vec(), n));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    fn spec(id: u64, max: u64, window_secs: u64) -> LimitSpec {
        LimitSpec {
            id,
            max,
            window_secs,
            scope: Scope::Session,
        }
    }

    const GLOBAL: LimitSpec = LimitSpec {
        id: 99,
        max: 100,
        window_secs: 60,
        scope: Scope::Global,
    };

    #[test]
    fn numbered_keys_are_what_format_writes() {
        for n in [0, 7, 10, 99, 65_535, 1_000_000_007, u64::MAX] {
            assert_eq!(numbered_key("s/", n), format!("{PREFIX}s/{n}"));
        }
        assert_eq!(
            Limiter::<MemoryStore>::overflow_key(u64::MAX),
            format!("{PREFIX}o/63")
        );
    }

    fn store() -> MemoryStore {
        let s = MemoryStore::default();
        init_store(&s).unwrap();
        s
    }

    fn lim<'s>(s: &'s MemoryStore, max_tracked: u32) -> Limiter<'s, MemoryStore> {
        Limiter {
            store: s,
            max_tracked,
            hold_secs: 60,
        }
    }

    fn one(
        l: &Limiter<'_, MemoryStore>,
        who: &str,
        limit: LimitSpec,
        now: u64,
    ) -> Result<Vec<Reservation>, Refusal> {
        l.reserve(who, &[Charge { limit, units: 1 }], now)
    }

    #[test]
    fn counts_to_max_then_refuses_with_retry_after() {
        let s = store();
        let l = lim(&s, 16);
        let limit = spec(1, 3, 60);
        for _ in 0..3 {
            one(&l, "a", limit, 120).unwrap();
        }
        assert_eq!(
            one(&l, "a", limit, 130),
            Err(Refusal::Limited {
                index: 0,
                retry_after_secs: 50
            })
        );
        assert_eq!(
            one(&l, "a", limit, 179),
            Err(Refusal::Limited {
                index: 0,
                retry_after_secs: 1
            })
        );
        // The window rolls at 180 (epoch-aligned): counts start again.
        one(&l, "a", limit, 180).unwrap();
    }

    #[test]
    fn identities_count_apart_and_global_counts_together() {
        let s = store();
        let l = lim(&s, 1024);
        let limit = spec(1, 1, 60);
        one(&l, "a", limit, 0).unwrap();
        one(&l, "b", limit, 0).unwrap();
        assert!(one(&l, "a", limit, 0).is_err());
        let g = LimitSpec {
            scope: Scope::Global,
            ..spec(2, 1, 60)
        };
        one(&l, "a", g, 0).unwrap();
        assert!(one(&l, "b", g, 0).is_err());
    }

    /// A caller-scoped limit counts per caller whatever the session, and a session identity spelled like a
    /// caller never shares its count.
    #[test]
    fn callers_count_apart_from_sessions() {
        let s = store();
        let l = lim(&s, 1024);
        let per_caller = LimitSpec {
            scope: Scope::Caller,
            ..spec(1, 2, 60)
        };
        let per_session = spec(2, 1, 60);
        let take = |session: &str, caller: &str, limit: LimitSpec| {
            l.reserve_for(Who { session, caller }, &[Charge { limit, units: 1 }], 0)
        };
        take("s1", "jwt:alice", per_caller).unwrap();
        // A new session is no new budget for alice.
        take("s2", "jwt:alice", per_caller).unwrap();
        assert!(take("s3", "jwt:alice", per_caller).is_err());
        take("s3", "jwt:bob", per_caller).unwrap();
        // Session-scoped limits still count per session, for the same caller.
        take("s1", "jwt:alice", per_session).unwrap();
        take("s2", "jwt:alice", per_session).unwrap();
        assert!(take("s2", "jwt:alice", per_session).is_err());
        // A session identity equal to a caller's key is another slot.
        let same = LimitSpec {
            scope: Scope::Caller,
            ..spec(3, 1, 60)
        };
        let session_same = LimitSpec {
            id: 3,
            ..per_session
        };
        take("x", "jwt:carol", same).unwrap();
        take("jwt:carol", "y", session_same).unwrap();
        assert!(take("z", "jwt:carol", same).is_err());
        // Both scopes in one call: two slots, all or nothing.
        let both = [
            Charge {
                limit: LimitSpec {
                    scope: Scope::Caller,
                    ..spec(4, 5, 60)
                },
                units: 1,
            },
            Charge {
                limit: spec(5, 1, 60),
                units: 1,
            },
        ];
        let who = Who {
            session: "s9",
            caller: "jwt:dave",
        };
        l.reserve_for(who, &both, 0).unwrap();
        assert!(matches!(
            l.reserve_for(who, &both, 0),
            Err(Refusal::Limited { index: 1, .. })
        ));
        // The refused call took nothing from the caller's budget: 4 more fit.
        for _ in 0..4 {
            take("other", "jwt:dave", both[0].limit).unwrap();
        }
        assert!(take("other", "jwt:dave", both[0].limit).is_err());
    }

    #[test]
    fn cost_and_all_or_nothing() {
        let s = store();
        let l = lim(&s, 16);
        let budget = spec(1, 100, 86_400);
        let per_min = spec(2, 2, 60);
        l.reserve(
            "a",
            &[
                Charge {
                    limit: budget,
                    units: 60,
                },
                Charge {
                    limit: per_min,
                    units: 1,
                },
            ],
            0,
        )
        .unwrap();
        // 60 + 50 > 100: refused at index 0, and the per-minute unit of this call is not taken either.
        let e = l.reserve(
            "a",
            &[
                Charge {
                    limit: per_min,
                    units: 1,
                },
                Charge {
                    limit: budget,
                    units: 50,
                },
            ],
            0,
        );
        assert!(matches!(e, Err(Refusal::Limited { index: 1, .. })));
        l.reserve(
            "a",
            &[
                Charge {
                    limit: per_min,
                    units: 1,
                },
                Charge {
                    limit: budget,
                    units: 40,
                },
            ],
            0,
        )
        .unwrap();
        assert!(one(&l, "a", per_min, 0).is_err());
    }

    #[test]
    fn one_get_and_one_set_per_key_whatever_the_number_of_limits() {
        let s = store();
        let l = lim(&s, 16);
        let (hour, day, global) = (spec(1, 10, 3600), spec(2, 10, 86_400), GLOBAL);
        let charges = |units| [hour, day, global, hour].map(|limit| Charge { limit, units });
        l.reserve("a", &charges(1), 0).unwrap(); // creates the slot and the global key
        s.ops.set(0);
        let taken = l.reserve("a", &charges(1), 0).unwrap();
        assert_eq!(taken.len(), 4);
        assert_eq!(s.ops.get(), 4, "slot: get + set, global key: get + set");
        // `hour` is charged twice per call: it holds 4 after two calls; 3 + 3 more makes 10, its max.
        assert_eq!(l.reserve("a", &charges(3), 0).unwrap().len(), 4);
        // The next charge of `hour` refuses at index 0, and nothing else is taken.
        let before = s.map.borrow().clone();
        let e = l.reserve("a", &charges(1), 0);
        assert!(matches!(e, Err(Refusal::Limited { index: 0, .. })), "{e:?}");
        assert_eq!(*s.map.borrow(), before);
    }

    #[test]
    fn the_first_refused_charge_is_named_across_keys() {
        let s = store();
        let l = lim(&s, 16);
        let tight_global = LimitSpec { max: 0, ..GLOBAL };
        let tight_session = spec(1, 0, 60);
        let loose = spec(2, 10, 60);
        let c = |limit| Charge { limit, units: 1 };
        // session charges at 0 and 2, the global at 1: the global is refused first (index 1), even though the
        // session key is read first.
        let e = l.reserve("a", &[c(loose), c(tight_global), c(tight_session)], 0);
        assert!(matches!(e, Err(Refusal::Limited { index: 1, .. })), "{e:?}");
        let e = l.reserve("a", &[c(tight_global), c(tight_session)], 0);
        assert!(matches!(e, Err(Refusal::Limited { index: 0, .. })), "{e:?}");
        let e = l.reserve("a", &[c(loose), c(tight_session), c(tight_global)], 0);
        assert!(matches!(e, Err(Refusal::Limited { index: 1, .. })), "{e:?}");
        // nothing was kept by the refused calls
        assert!(l.reserve("a", &[c(loose); 10], 0).is_ok());
    }

    #[test]
    fn refunds_return_units_in_the_same_window_only() {
        let s = store();
        let l = lim(&s, 16);
        let limit = spec(1, 1, 60);
        let r = one(&l, "a", limit, 0).unwrap();
        assert!(one(&l, "a", limit, 0).is_err());
        l.release(&r);
        let r2 = one(&l, "a", limit, 1).unwrap();
        // A refund after the window rolled must not credit the new window.
        one(&l, "a", limit, 60).unwrap();
        l.release(&r2);
        assert!(one(&l, "a", limit, 61).is_err());
    }

    #[test]
    fn survives_cas_conflicts() {
        let s = store();
        let l = lim(&s, 16);
        let limit = spec(1, 5, 60);
        s.conflicts.set(20);
        for _ in 0..5 {
            one(&l, "a", limit, 0).unwrap();
        }
        assert!(one(&l, "a", limit, 0).is_err());
        // Endless conflicts fail closed.
        s.conflicts.set(u32::MAX);
        assert!(matches!(
            one(&l, "b", limit, 0),
            Err(Refusal::Unavailable(_))
        ));
    }

    #[test]
    fn bounded_state_and_overflow_never_exceeds_the_limit() {
        let s = store();
        let l = lim(&s, 8);
        let limit = spec(1, 2, 60);
        let mut admitted = 0;
        for i in 0..1000 {
            for _ in 0..3 {
                if one(&l, &format!("session-{i}"), limit, 5).is_ok() {
                    admitted += 1;
                }
            }
        }
        let keys = s.map.borrow().len();
        assert!(keys <= 1 + 8 + OVERFLOW_BUCKETS as usize, "{keys} keys");
        // At most `max` per slot owner plus `max` per overflow bucket, whatever the flood.
        assert!(
            admitted <= 2 * (8 + OVERFLOW_BUCKETS as usize),
            "{admitted}"
        );
        // Every slot owner got exactly its limit.
        assert!(admitted >= 2 * 8);
    }

    #[test]
    fn a_slot_changes_owner_only_after_the_longest_window_of_silence() {
        let s = store();
        let l = lim(&s, 1); // one slot: every identity collides
        let limit = spec(1, 1, 10);
        one(&l, "a", limit, 0).unwrap();
        // b is counted in an overflow bucket while a holds the slot (hold_secs = 60).
        one(&l, "b", limit, 30).unwrap();
        assert!(one(&l, "b", limit, 35).is_err());
        // After 60 s without a, b takes the slot over.
        one(&l, "b", limit, 60).unwrap();
        let v = s
            .map
            .borrow()
            .get(&format!("{PREFIX}s/0"))
            .cloned()
            .unwrap();
        assert_eq!(Cell::decode(&v.0).unwrap().owner, fnv1a(&[b"b"]));
    }

    #[test]
    fn taking_a_slot_over_mid_window_keeps_what_the_bucket_counted() {
        // hold_secs 60 = the window. a is last admitted at 30, so it holds the slot until 90; b, counted in its
        // overflow bucket at 61, takes the slot over at 90 — still window [60, 120), where it already used its
        // one call. Starting the slot from zero would admit b twice in that window.
        let s = store();
        let l = lim(&s, 1);
        let limit = spec(1, 1, 60);
        one(&l, "a", limit, 30).unwrap();
        one(&l, "b", limit, 61).unwrap();
        assert!(one(&l, "b", limit, 62).is_err());
        assert!(
            matches!(
                one(&l, "b", limit, 90),
                Err(Refusal::Limited {
                    index: 0,
                    retry_after_secs: 30
                })
            ),
            "b got a second call in one window by moving from its bucket to the slot"
        );
        // In the next window b gets its call, now in the slot it took over, and no more.
        one(&l, "b", limit, 120).unwrap();
        let v = s
            .map
            .borrow()
            .get(&format!("{PREFIX}s/0"))
            .cloned()
            .unwrap();
        assert_eq!(Cell::decode(&v.0).unwrap().owner, fnv1a(&[b"b"]));
        assert!(one(&l, "b", limit, 121).is_err());
    }

    #[test]
    fn a_fresh_slot_starts_from_zero_whatever_its_bucket_holds() {
        // Bucket counts are carried only when a slot changes owner: an identity that gets a never-used slot is
        // counted exactly from its first call, whatever others used in its bucket.
        let s = store();
        let l = lim(&s, 2);
        let limit = spec(1, 1, 60);
        let h = |x: &str| fnv1a(&[x.as_bytes()]);
        let bucket = |x: &str| (h(x) >> 32) % OVERFLOW_BUCKETS;
        let ids: Vec<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
        // a and c share slot 0; b has slot 1 and c's overflow bucket.
        let a = ids.iter().find(|x| h(x) % 2 == 0).unwrap();
        let c = ids.iter().find(|x| h(x) % 2 == 0 && *x != a).unwrap();
        let b = ids
            .iter()
            .find(|x| h(x) % 2 == 1 && bucket(x) == bucket(c))
            .unwrap();
        one(&l, a, limit, 0).unwrap(); // owns slot 0
        one(&l, c, limit, 0).unwrap(); // counted in the bucket, now full
        one(&l, b, limit, 0).unwrap(); // slot 1, fresh
        assert!(one(&l, b, limit, 0).is_err());
    }

    #[test]
    fn cells_round_trip_and_reject_garbage() {
        let c = Cell {
            owner: 7,
            touched: 9,
            entries: vec![Entry {
                limit: 1,
                window: 2,
                count: 3,
            }],
        };
        assert_eq!(Cell::decode(&c.encode()), Some(c));
        assert_eq!(Cell::decode(&[1, 2, 3]), None);
        let s = store();
        s.set(&format!("{PREFIX}s/0"), &[9; 5], None).unwrap();
        assert!(matches!(
            one(&lim(&s, 1), "x", spec(1, 1, 1), 0),
            Err(Refusal::Unavailable(_))
        ));
    }

    #[test]
    fn missing_lock_fails_closed() {
        let s = MemoryStore::default();
        assert!(matches!(
            one(&lim(&s, 4), "a", spec(1, 1, 1), 0),
            Err(Refusal::Unavailable(_))
        ));
    }
}
