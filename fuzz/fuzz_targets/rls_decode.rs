//! Arbitrary bytes as the rate limit service's answer: `rls::decode`, `rls::unframe` and `fleet::read` must never
//! panic (a panic traps the Envoy worker), whatever a broken or hostile service sends. What decodes is written
//! back (`Response::encode`) and must decode to the same thing (proto3: unknown fields skipped, the last scalar
//! wins, a message given twice merges).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_policy::limits::fleet::{read, Ask, Fleet, FleetLimit, Outcome};
use mcp_policy::limits::rls::{self, Unit, MAX_STATUSES};
use mcp_policy::limits::Scope;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = rls::decode(data) {
        assert!(r.statuses.len() <= MAX_STATUSES);
        assert_eq!(rls::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(m) = rls::unframe(data) {
        assert_eq!(rls::frame(m), data);
    }
    let a = FleetLimit::new("a".into(), "r".into(), 0, 10, Unit::Minute, Scope::Caller);
    let b = FleetLimit::new("b".into(), "r".into(), 1, 1, Unit::Second, Scope::Global);
    let charges = [
        Fleet {
            limit: &a,
            units: 1,
        },
        Fleet {
            limit: &b,
            units: 1,
        },
    ];
    let ask = Ask {
        message: Vec::new(),
        charges: vec![0, 1],
    };
    match read(&ask, &charges, Ok(data)) {
        Outcome::Limited {
            charge,
            retry_after_secs,
        } => {
            assert!(charge < 2 && retry_after_secs >= 1);
        }
        Outcome::Allowed | Outcome::Unavailable(_) => {}
    }
});
