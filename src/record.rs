//! One record per message of a request body: what the message is (method, id, the call it makes) and
//! everything decided about it (the decision, the rate-limit units it takes, how approval was granted).
//! The reply ([`crate::reply::refused`]), the approval asks, the audit lines and the metrics are all read from
//! the same records, in body order, so no two of them can disagree about which message got what.

use crate::engine::{Decision, Verdict};
use crate::label::Label;
use crate::limits::Charge;
use crate::mcp::{Kind, Message};
use serde_json::value::RawValue;

/// What a governed message (`tools/call`, `prompts/get`, `resources/read`) acts on.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: Kind,
    /// The tool or prompt name, or the resource URI.
    pub name: &'a str,
    /// `params.arguments` as the client sent them (`None`: absent or null).
    pub arguments: Option<&'a RawValue>,
}

/// One message and what became of it. Borrowed from the body (or from what was kept of it while approval
/// was asked, see [`crate::request::Awaiting`]) and from the policy.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The JSON-RPC method; `None` for a client's response to a server request.
    pub method: Option<&'a str>,
    /// The JSON-RPC id as the client wrote it (echoed byte for byte); `None` for a notification.
    pub id: Option<&'a RawValue>,
    /// The governed call, if the message is one.
    pub target: Option<Target<'a>>,
    /// `None` for a message that is not a governed call (always allowed by itself).
    pub decision: Option<Decision<'a>>,
    /// Units the call takes from its rule's rate limits, in the rule's order.
    pub charges: Vec<Charge>,
    /// The call needed approval and has it (`None`: it did not need it, or was not approved).
    pub granted: Option<Granted>,
    /// Why an allowed call went uncounted (the rate limit service could not be asked, `on_error: allow`): the
    /// reason of its audit line.
    pub note: Option<String>,
}

/// How a call that needed approval got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// The approval service said yes to this call.
    Asked,
    /// Not asked: the service said yes to the same caller's same call earlier, for a while that still runs.
    Remembered,
}

/// The audit reason of an allowed message that was not forwarded because another call of its batch was
/// refused.
pub const BATCH_REFUSED: &str = "not forwarded: the batch held a refused call";

impl<'a> Record<'a> {
    /// The record of `message`, with the engine's verdict on its call (`None` for other messages).
    pub fn new(message: &'a Message<'a>, verdict: Option<Verdict<'a>>) -> Self {
        let (decision, charges) = match verdict {
            Some(v) => (Some(v.decision), v.charges),
            None => (None, Vec::new()),
        };
        Record {
            method: message.method(),
            id: message.id(),
            target: message.call().map(|c| Target {
                kind: c.kind,
                name: &c.name,
                arguments: c.arguments,
            }),
            decision,
            charges,
            granted: None,
            note: None,
        }
    }

    /// The tool of a `tools/call` (per-tool metrics and the batch replies name tools only).
    pub fn tool(&self) -> Option<&'a str> {
        self.target.filter(|t| t.kind == Kind::Tool).map(|t| t.name)
    }

    /// Denied, rate limited or not approved.
    pub fn is_refusal(&self) -> bool {
        self.decision.as_ref().is_some_and(Decision::is_refusal)
    }

    /// The policy key that decided, `None` when the default posture did or for an ungoverned message.
    pub fn rule(&self) -> Option<&'a str> {
        self.decision.as_ref().and_then(Decision::rule)
    }

    /// The label and the audit reason of this message. `refused`: the request was answered with a refusal
    /// (an allowed message of a refused batch is then not forwarded either); `audit_mode`: refusals are
    /// reported as what they would have been, and the message is forwarded.
    pub fn label(&self, refused: bool, audit_mode: bool) -> (Label, Option<&str>) {
        match &self.decision {
            None | Some(Decision::Allow { .. }) if refused => (Label::Deny, Some(BATCH_REFUSED)),
            None | Some(Decision::Allow { .. }) => match self.granted {
                None => (Label::Allow, self.note.as_deref()),
                Some(Granted::Asked) => (Label::ApprovalGranted, None),
                Some(Granted::Remembered) => (Label::ApprovalRemembered, None),
            },
            Some(Decision::Deny { reason, .. }) if audit_mode => (Label::WouldDeny, Some(reason)),
            Some(Decision::Deny { reason, .. }) => (Label::Deny, Some(reason)),
            Some(Decision::RateLimited { reason, .. }) if audit_mode => {
                (Label::WouldRateLimit, Some(reason))
            }
            Some(Decision::RateLimited { reason, .. }) => (Label::RateLimited, Some(reason)),
            Some(Decision::ToolChanged { reason, .. }) if audit_mode => {
                (Label::WouldDeny, Some(reason))
            }
            Some(Decision::ToolChanged { reason, .. }) => (Label::ToolChanged, Some(reason)),
            Some(Decision::RateLimitUnavailable { reason, .. }) if audit_mode => {
                (Label::WouldRateLimitUnavailable, Some(reason))
            }
            Some(Decision::RateLimitUnavailable { reason, .. }) => {
                (Label::RateLimitUnavailable, Some(reason))
            }
            Some(Decision::NeedsApproval { .. }) if refused => (Label::Deny, Some(BATCH_REFUSED)),
            Some(Decision::NeedsApproval { reason, .. }) => (Label::WouldRequireApproval, *reason),
            Some(Decision::NotApproved {
                reason,
                unavailable: true,
                ..
            }) => (Label::ApprovalUnavailable, Some(reason)),
            Some(Decision::NotApproved { reason, .. }) => (Label::ApprovalDenied, Some(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::inspect;

    #[test]
    fn a_record_per_message() {
        let b = inspect(
            br#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t","arguments":{"x":1}}},
                {"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":3,"result":{}},
                {"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"p"}}]"#,
        )
        .unwrap();
        let r: Vec<Record<'_>> = b.messages.iter().map(|m| Record::new(m, None)).collect();
        assert_eq!(r[0].method, Some("tools/call"));
        assert_eq!(r[0].id.map(RawValue::get), Some("\"a\""));
        assert_eq!(r[0].tool(), Some("t"));
        assert_eq!(r[0].target.unwrap().arguments.unwrap().get(), r#"{"x":1}"#);
        assert_eq!(
            (r[1].method, r[1].id.is_none()),
            (Some("notifications/initialized"), true)
        );
        assert_eq!((r[2].method, r[2].id.map(RawValue::get)), (None, Some("3")));
        // A prompt is a governed call, but not a tool.
        assert_eq!((r[3].target.unwrap().name, r[3].tool()), ("p", None));
    }

    #[test]
    fn labels() {
        let b = inspect(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#)
            .unwrap();
        let m = &b.messages[0];
        let with = |d: Decision<'static>| Record {
            decision: Some(d),
            ..Record::new(m, None)
        };
        let allow = || with(Decision::Allow { rule: None });
        assert_eq!(allow().label(false, false), (Label::Allow, None));
        assert_eq!(
            allow().label(true, false),
            (Label::Deny, Some(BATCH_REFUSED))
        );
        let granted = Record {
            granted: Some(Granted::Asked),
            ..allow()
        };
        assert_eq!(granted.label(false, false), (Label::ApprovalGranted, None));
        let remembered = Record {
            granted: Some(Granted::Remembered),
            ..allow()
        };
        assert_eq!(
            remembered.label(false, false),
            (Label::ApprovalRemembered, None)
        );
        assert_eq!(
            remembered.label(true, false),
            (Label::Deny, Some(BATCH_REFUSED))
        );
        let deny = with(Decision::Deny {
            rule: Some("t"),
            reason: "no".into(),
        });
        assert_eq!(deny.label(true, false), (Label::Deny, Some("no")));
        assert_eq!(deny.label(false, true), (Label::WouldDeny, Some("no")));
        assert_eq!(deny.rule(), Some("t"));
        let asked = with(Decision::NeedsApproval {
            rule: None,
            reason: Some("human"),
        });
        assert_eq!(
            asked.label(false, true),
            (Label::WouldRequireApproval, Some("human"))
        );
        assert_eq!(asked.label(true, false), (Label::Deny, Some(BATCH_REFUSED)));
        for (unavailable, label) in [
            (true, Label::ApprovalUnavailable),
            (false, Label::ApprovalDenied),
        ] {
            let r = with(Decision::NotApproved {
                rule: None,
                reason: "r".into(),
                unavailable,
            });
            assert!(r.is_refusal());
            assert_eq!(r.label(true, false), (label, Some("r")));
        }
        let none = Record::new(m, None);
        assert!(!none.is_refusal());
        assert_eq!(none.label(false, false), (Label::Allow, None));
    }
}
