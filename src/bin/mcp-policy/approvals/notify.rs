//! The optional notification when a call starts waiting: a POST of `{"text": "..."}`, the shape Slack's incoming
//! webhooks (and Mattermost's, and many chat bridges) accept, with a link to the console. It names the caller (its
//! verified subject, else its certificate principal, and its profile, for a policy with `callers`; else the
//! filter's identity). The arguments are left out (they may hold secrets); the console shows them to approvers who
//! logged in.

use super::callout::Callout;
use serde_json::json;
use std::time::Duration;

pub struct Notifier {
    pub url: String,
    /// Where approvers open the console (the link in the message).
    pub console_url: String,
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters: escape them in text that came from the agent.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Who asks, in the message: `alice` (profile `ml-admins`), or an anonymous caller `<identity>`, or `<identity>`.
fn caller(c: &Callout) -> String {
    let Some(k) = &c.caller else {
        return format!("`{}`", escape(&c.identity));
    };
    let mut who = match k.subject.as_deref().or(k.principal.as_deref()) {
        Some(name) => format!("`{}`", escape(name)),
        None => format!("an anonymous caller `{}`", escape(&c.identity)),
    };
    if let Some(p) = &k.profile {
        who.push_str(&format!(" (profile `{}`)", escape(p)));
    }
    who
}

/// The message for one waiting call.
pub fn message(c: &Callout, console_url: &str, timeout_ms: u64) -> serde_json::Value {
    let reason = c
        .rule_reason
        .as_deref()
        .map(|r| format!(" ({})", escape(r)))
        .unwrap_or_default();
    let text = format!(
        "Approval needed: {} wants to call {} `{}`{reason}. It waits {} s for a decision: <{}|open the approvals console>",
        caller(c),
        c.kind,
        escape(&c.name),
        timeout_ms / 1000,
        console_url,
    );
    json!({ "text": text })
}

impl Notifier {
    /// Sends the message in the background; a failure is reported on standard error and changes nothing else.
    pub fn send(&self, c: &Callout, timeout_ms: u64) {
        let url = self.url.clone();
        let body = message(c, &self.console_url, timeout_ms).to_string();
        tokio::task::spawn_blocking(move || {
            let mut config = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false);
            if crate::client::is_loopback(&url) {
                config = config.proxy(None);
            }
            let agent: ureq::Agent = config.build().into();
            match agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes())
            {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => eprintln!(
                    "mcp-policy approvals: the notification webhook answered HTTP {}",
                    r.status().as_u16()
                ),
                Err(e) => eprintln!("mcp-policy approvals: the notification webhook failed: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::callout::parse;

    #[test]
    fn the_message_links_the_console_and_escapes_the_agents_text() {
        let c = parse(
            br#"{"method":"tools/call","tool":"set_<run>_tag","arguments":{"secret":"hunter2"},
                 "identity":"a&b","jsonrpc_id":1,"reason":"Needs <b>a human</b>"}"#,
        )
        .unwrap();
        let m = message(&c, "http://127.0.0.1:8002/", 30_000);
        assert_eq!(
            m,
            json!({"text": "Approval needed: `a&amp;b` wants to call tool `set_&lt;run&gt;_tag` \
                (Needs &lt;b&gt;a human&lt;/b&gt;). It waits 30 s for a decision: \
                <http://127.0.0.1:8002/|open the approvals console>"})
        );
        assert!(!m.to_string().contains("hunter2"));
    }

    #[test]
    fn the_message_names_the_verified_caller_and_its_profile() {
        let text = |caller: &str| {
            let c = parse(
                format!(
                    r#"{{"method":"tools/call","tool":"set_run_tag","arguments":{{"secret":"hunter2"}},
                        "identity":"sess-1","jsonrpc_id":1,"caller":{caller}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            let m = message(&c, "http://127.0.0.1:8002/", 30_000);
            assert!(!m.to_string().contains("hunter2"));
            m["text"].as_str().unwrap().to_owned()
        };
        let prefix = |t: String| t.split(" wants to call").next().unwrap().to_owned();
        assert_eq!(
            prefix(text(
                r#"{"subject":"alice<b>","groups":["ml-admins"],"principal":"spiffe://x","profile":"ml-admins"}"#
            )),
            "Approval needed: `alice&lt;b&gt;` (profile `ml-admins`)"
        );
        assert_eq!(
            prefix(text(
                r#"{"subject":"bob","groups":[],"principal":null,"profile":null}"#
            )),
            "Approval needed: `bob`"
        );
        assert_eq!(
            prefix(text(
                r#"{"principal":"spiffe://cluster.local/ns/ci/sa/b","profile":"ci"}"#
            )),
            "Approval needed: `spiffe://cluster.local/ns/ci/sa/b` (profile `ci`)"
        );
        assert_eq!(
            prefix(text(
                r#"{"subject":null,"groups":[],"principal":null,"profile":"anonymous"}"#
            )),
            "Approval needed: an anonymous caller `sess-1` (profile `anonymous`)"
        );
    }
}
