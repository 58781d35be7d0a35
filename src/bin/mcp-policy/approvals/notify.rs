//! The optional notification when a call starts waiting: a POST of `{"text": "..."}`, the shape Slack's incoming
//! webhooks (and Mattermost's, and many chat bridges) accept, with a link to the console. The arguments are left
//! out (they may hold secrets); the console shows them to approvers who logged in.

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

/// The message for one waiting call.
pub fn message(c: &Callout, console_url: &str, timeout_ms: u64) -> serde_json::Value {
    let reason = c
        .rule_reason
        .as_deref()
        .map(|r| format!(" ({})", escape(r)))
        .unwrap_or_default();
    let text = format!(
        "Approval needed: `{}` wants to call {} `{}`{reason}. It waits {} s for a decision: <{}|open the approvals console>",
        escape(&c.identity),
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
}
