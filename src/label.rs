//! The name of every outcome mcp-policy reports, in one place: the same word is written in a reply's
//! `error.data.decision`, in an audit line's `decision`, and in the Envoy stats
//! (`mcp_policy.decisions_total.decision.<label>`, `mcp_policy.tool_calls_total.tool.<tool>.decision.<label>`).
//! Operators build dashboards and alerts on these words: [`Label::as_str`] must never change a spelling.

/// What became of one message (or, for [`Label::Invalid`], of a request that could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// Forwarded.
    Allow,
    /// Refused by a rule or the default posture, or not forwarded because its batch held a refused call.
    Deny,
    /// Refused: over a rate limit (or the rate-limit state could not be kept: fail closed).
    RateLimited,
    /// Refused: the rate limit service could not say whether a fleet-counted limit has room, and the policy's
    /// `rate_limit_service.on_error` is `deny`.
    RateLimitUnavailable,
    /// The approval service said yes: forwarded.
    ApprovalGranted,
    /// Forwarded without asking: the approval service said yes earlier to the same caller's same call, for a
    /// while that has not ended (`remember_seconds`).
    ApprovalRemembered,
    /// The approval service said no.
    ApprovalDenied,
    /// The approval service could not be asked or gave no usable answer: refused (fail closed).
    ApprovalUnavailable,
    /// Refused: the tool's definition is not the pinned one. Also the decision of the one audit line written
    /// when a tools/list answer shows a pinned tool changed.
    ToolChanged,
    /// Only in the one audit line written when a tools/list answer shows a changed tool's pinned definition
    /// again (its calls are allowed again).
    ToolRestored,
    /// The body is not a valid (or not an unambiguous) JSON-RPC request, or mcp-policy could not decide it.
    Invalid,
    /// Audit mode: would have been denied, forwarded.
    WouldDeny,
    /// Audit mode: would have been rate limited, forwarded.
    WouldRateLimit,
    /// Audit mode: would have waited for approval, forwarded without asking.
    WouldRequireApproval,
    /// Audit mode: would have been refused because the rate limit service could not say, forwarded.
    WouldRateLimitUnavailable,
    /// Refused at the request headers: no verified caller identity under `callers.required`, or one that
    /// cannot be read exactly (HTTP 401).
    Unauthenticated,
}

impl Label {
    /// Every label, in declaration order ([`Label::index`] is the position here).
    pub const ALL: [Label; 16] = [
        Label::Allow,
        Label::Deny,
        Label::RateLimited,
        Label::RateLimitUnavailable,
        Label::ApprovalGranted,
        Label::ApprovalRemembered,
        Label::ApprovalDenied,
        Label::ApprovalUnavailable,
        Label::ToolChanged,
        Label::ToolRestored,
        Label::Invalid,
        Label::WouldDeny,
        Label::WouldRateLimit,
        Label::WouldRequireApproval,
        Label::WouldRateLimitUnavailable,
        Label::Unauthenticated,
    ];

    /// The label as written in replies, audit lines and stat names.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Allow => "allow",
            Label::Deny => "deny",
            Label::RateLimited => "rate_limited",
            Label::RateLimitUnavailable => "rate_limit_unavailable",
            Label::ApprovalGranted => "approval_granted",
            Label::ApprovalRemembered => "approval_remembered",
            Label::ApprovalDenied => "approval_denied",
            Label::ApprovalUnavailable => "approval_unavailable",
            Label::ToolChanged => "tool_changed",
            Label::ToolRestored => "tool_restored",
            Label::Invalid => "invalid",
            Label::WouldDeny => "would_deny",
            Label::WouldRateLimit => "would_rate_limit",
            Label::WouldRequireApproval => "would_require_approval",
            Label::WouldRateLimitUnavailable => "would_rate_limit_unavailable",
            Label::Unauthenticated => "unauthenticated",
        }
    }

    /// A small dense number per label, for tables indexed by label (the filter's stat ids).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests (and callers) compare a label with its spelling: `assert_eq!(event.decision, "allow")`.
impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_the_documented_ones() {
        let words: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(
            words,
            [
                "allow",
                "deny",
                "rate_limited",
                "rate_limit_unavailable",
                "approval_granted",
                "approval_remembered",
                "approval_denied",
                "approval_unavailable",
                "tool_changed",
                "tool_restored",
                "invalid",
                "would_deny",
                "would_rate_limit",
                "would_require_approval",
                "would_rate_limit_unavailable",
                "unauthenticated"
            ]
        );
        for (i, l) in Label::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
            assert_eq!(l.to_string(), l.as_str());
            // Stat names are split on dots by Envoy: a label is one segment.
            assert!(l
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
