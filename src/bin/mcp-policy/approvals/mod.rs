//! `mcp-policy approvals`: the approvals console. It answers the filter's approval callouts (docs/approvals.md, "Require
//! approval") by holding each one until a person approves or denies the call on a web page, or the callout's
//! time runs out.
//!
//! - `callout.rs`: the protocol, console side (the callout body, the answer);
//! - `state.rs`: waiting calls, remembered approvals ("approve for N minutes"), recent decisions;
//! - `store.rs`: the decision log (JSON lines), read back at startup;
//! - `auth.rs`: approvers (Argon2id hashes), sessions, CSRF and origin checks;
//! - `web.rs`: the routes (axum); `page.html`, `login.html`, `app.js`, `style.css`: the page, no build step;
//! - `notify.rs`: the optional webhook when a call starts waiting.

mod auth;
mod callout;
mod notify;
mod state;
mod store;
mod web;

use crate::Out;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const LONG_ABOUT: &str = "\
Runs the approvals console: the service a policy's `approval` section points at (an Envoy
cluster), with a web page where approvers see every call that waits for approval (tool,
arguments, caller, the rule's reason, time left) and approve or deny it, optionally with a
reason the agent sees, or approve it for N minutes (later calls of the same caller and tool
are then approved without asking). Decisions are appended to a JSON-lines log (--decisions)
and shown again after a restart.

The filter POSTs each callout to --path (default /approve); the console holds it until a
person decides or its time runs out: the callout's `timeout_ms` (the filter sends the policy's
`approval.timeout_ms`), else --timeout-ms. A console that stops or restarts drops its waiting
callouts: the filter refuses those calls (fail closed).

\"Approve for N minutes\" answers the filter with `remember_seconds`: the filter then lets the
same caller's calls of that tool through without a callout for that long, but never longer than
--revoke-within (60 s), so that a revocation on the page reaches it within that time; the
console answers the filter's next callout itself while the approval runs.

Approvers log in with a name and a password, kept as Argon2id hashes in the --approvers file,
one `NAME:HASH` line each; make a line with
  mcp-policy approvals --hash-password NAME >> approvers.txt
Scripts use the same names and passwords with HTTP Basic authentication (the JSON API:
GET /api/pending, POST /api/pending/ID {\"approve\": true}; see docs/approvals.md).

The console listens on 127.0.0.1:8002 by default. To reach it from other machines, put it
behind TLS (a reverse proxy, or Envoy) and give --public-url, the address approvers open.";

const AFTER_HELP: &str = "\
examples:
  mcp-policy approvals --hash-password ana >> approvers.txt
  mcp-policy approvals --approvers approvers.txt --decisions approvals.jsonl
  mcp-policy approvals --approvers approvers.txt --timeout-ms 300000 \\
      --notify-url https://hooks.slack.com/services/... --public-url https://approvals.example.com

exit status: 0 stopped (SIGINT/SIGTERM) or a hash was printed; 1 cannot start (unreadable
approvers file, unwritable decision log, address in use); 2 usage error";

/// Run the approvals console: a web page where people approve or deny calls held for approval
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Options {
    /// Address to listen on (loopback by default)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8002")]
    pub listen: SocketAddr,
    /// The approvers: `NAME:ARGON2-HASH` lines (see --hash-password)
    #[arg(long, value_name = "FILE", required_unless_present = "hash_password")]
    pub approvers: Option<PathBuf>,
    /// Print an approvers-file line for NAME, with the password read from standard input, and exit
    #[arg(long, value_name = "NAME", value_parser = parse_name, conflicts_with = "approvers")]
    pub hash_password: Option<String>,
    /// The decision log (JSON lines), appended to and read back at startup
    #[arg(long, value_name = "FILE", default_value = "approvals.jsonl")]
    pub decisions: PathBuf,
    /// The path the filter POSTs callouts to: the policy's approval.path
    #[arg(long, value_name = "PATH", default_value = "/approve", value_parser = parse_path)]
    pub path: String,
    /// How long a call may wait, when its callout does not say: the policy's approval.timeout_ms
    #[arg(long, value_name = "MS", default_value = "30000",
          value_parser = clap::value_parser!(u64).range(1..=callout::MAX_TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Require `authorization: Bearer TOKEN` on callouts, TOKEN read from FILE (set the same header in the
    /// policy's approval.headers)
    #[arg(long, value_name = "FILE")]
    pub callout_token_file: Option<PathBuf>,
    /// The console's address as approvers open it (links in notifications; Host and Origin checks; https makes
    /// the session cookie Secure)
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// POST {"text": ...} (Slack incoming-webhook shape) to URL when a call starts waiting
    #[arg(long, value_name = "URL", value_parser = crate::client::parse_url)]
    pub notify_url: Option<String>,
    /// The longest "approve for N minutes" an approver may give
    #[arg(long, value_name = "MINUTES", default_value = "480",
          value_parser = clap::value_parser!(u64).range(1..=10_080))]
    pub max_remember_minutes: u64,
    /// An "approve for N minutes" is told to the filter for at most this long at a time (its remember_seconds),
    /// so that a revocation reaches the filter within it; 0: the filter asks the console every time
    #[arg(long, value_name = "SECONDS", default_value = "60",
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub revoke_within: u64,
    /// The largest callout body accepted
    #[arg(long, value_name = "BYTES", default_value = "16777216",
          value_parser = clap::value_parser!(u64).range(1024..=1_073_741_824))]
    pub max_callout_bytes: u64,
}

fn parse_name(name: &str) -> Result<String, String> {
    if auth::valid_name(name) {
        Ok(name.to_owned())
    } else {
        Err("letters, digits and . _ @ - only, at most 64".into())
    }
}

fn parse_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ', '{', '}', '*']) {
        return Err("a path such as /approve (no query, braces or wildcards)".into());
    }
    if web::RESERVED_PATHS.contains(&path)
        || web::RESERVED_PREFIXES.iter().any(|p| path.starts_with(p))
    {
        return Err(format!(
            "the console's own pages use it (reserved: {}, {}*)",
            web::RESERVED_PATHS.join(", "),
            web::RESERVED_PREFIXES.join("*, ")
        ));
    }
    Ok(path.to_owned())
}

fn parse_public_url(url: &str) -> Result<String, String> {
    let url = crate::client::parse_url(url)?;
    let uri: axum::http::Uri = url.parse().map_err(|_| "not a valid URL".to_owned())?;
    if uri.authority().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// 128 random bits, hex: ids of calls and sessions, CSRF tokens.
pub fn random_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The Host values the console answers to (see `auth::Site`).
fn site(listen: SocketAddr, public_url: Option<&str>) -> auth::Site {
    let port = listen.port();
    let mut hosts = vec![listen.to_string()];
    if listen.ip().is_loopback() {
        hosts.extend([
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]);
    }
    let public = public_url.and_then(|u| u.parse::<axum::http::Uri>().ok());
    if let Some(a) = public.as_ref().and_then(|u| u.authority()) {
        hosts.push(a.as_str().to_owned());
    }
    let any = public.is_none() && !listen.ip().is_loopback();
    auth::Site {
        hosts: (!any).then_some(hosts),
        https: public_url.is_some_and(|u| u.to_ascii_lowercase().starts_with("https://")),
    }
}

fn hash_password_line(name: &str, out: &mut Out) -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {name}: "))
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| {
            line.strip_suffix('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .unwrap_or(&line)
                .to_owned()
        })
    };
    let password = match password {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("mcp-policy approvals: empty password");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("mcp-policy approvals: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    match auth::hash_password(&password) {
        Ok(h) => {
            out.line(format_args!("{name}:{h}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-policy approvals: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_secret(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!("{}: expected one token, no spaces", path.display()));
    }
    Ok(token.to_owned())
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    if let Some(name) = &o.hash_password {
        return hash_password_line(name, out);
    }
    match start(o, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-policy approvals: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(o: &Options, out: &mut Out) -> Result<(), String> {
    let approvers_file = o.approvers.as_ref().ok_or("--approvers FILE is required")?;
    let text = std::fs::read_to_string(approvers_file)
        .map_err(|e| format!("{}: {e}", approvers_file.display()))?;
    let approvers =
        auth::Approvers::parse(&text).map_err(|e| format!("{}: {e}", approvers_file.display()))?;
    let callout_token = o.callout_token_file.as_ref().map(read_secret).transpose()?;
    let (log, loaded) = store::DecisionLog::open(&o.decisions)?;
    if !loaded.skipped.is_empty() {
        eprintln!(
            "mcp-policy approvals: {}: skipped unreadable line(s) {:?}",
            o.decisions.display(),
            loaded.skipped
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", o.listen))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let console_url = o
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}/"));
        if !local.ip().is_loopback() && !console_url.starts_with("https://") {
            eprintln!(
                "mcp-policy approvals: warning: listening on {local} without TLS: passwords and session \
                 cookies cross the network in the clear; put the console behind TLS and set --public-url"
            );
        }
        let app = Arc::new(web::App {
            console: state::Console::new(
                log,
                loaded.records,
                o.timeout_ms,
                o.revoke_within,
                now_ms(),
            ),
            approvers,
            sessions: auth::Sessions::default(),
            site: site(local, o.public_url.as_deref()),
            callout_path: o.path.clone(),
            callout_token,
            notifier: o.notify_url.clone().map(|url| notify::Notifier {
                url,
                console_url: console_url.clone(),
            }),
            default_timeout_ms: o.timeout_ms,
            max_remember_minutes: o.max_remember_minutes,
            max_callout_bytes: usize::try_from(o.max_callout_bytes).unwrap_or(usize::MAX),
        });
        out.line(format_args!(
            "mcp-policy approvals: console on {console_url} ({} approver(s)); callouts: POST http://{local}{}; \
             decision log: {}",
            app.approvers.len(),
            o.path,
            app.console.log_path().display()
        ));
        let serve = axum::serve(listener, web::router(app.clone()));
        tokio::select! {
            r = serve => r.map_err(|e| format!("the server stopped: {e}")),
            () = stopped() => {
                // Every waiting callout is answered 503 (the filter refuses the call) before the process ends.
                app.console.close();
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            }
        }
    })
}

/// SIGINT or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::parse;
    use crate::Command;

    fn options(args: &[&str]) -> Options {
        match parse(args).unwrap() {
            Command::Approvals(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_and_defaults() {
        let o = options(&["approvals", "--approvers", "a.txt"]);
        assert_eq!(o.listen, "127.0.0.1:8002".parse().unwrap());
        assert_eq!((o.path.as_str(), o.timeout_ms), ("/approve", 30_000));
        assert_eq!(o.revoke_within, 60);
        assert!(options(&["approvals", "--hash-password", "ana"])
            .approvers
            .is_none());
        for (args, fragment) in [
            (&["approvals"][..], "--approvers"),
            (
                &["approvals", "--approvers", "a", "--path", "/api/x"],
                "reserved",
            ),
            (
                &["approvals", "--approvers", "a", "--path", "approve"],
                "a path such as",
            ),
            (
                &["approvals", "--approvers", "a", "--path", "/"],
                "reserved",
            ),
            (
                &["approvals", "--approvers", "a", "--timeout-ms", "0"],
                "--timeout-ms",
            ),
            (
                &["approvals", "--approvers", "a", "--revoke-within", "604801"],
                "--revoke-within",
            ),
            (
                &["approvals", "--approvers", "a", "--public-url", "ftp://x"],
                "http://",
            ),
            (
                &["approvals", "--approvers", "a", "--notify-url", "nope"],
                "http://",
            ),
            (&["approvals", "--hash-password", "a b"], "letters"),
            (&["approvals", "--listen", "localhost"], "--listen"),
        ] {
            let err = parse(args).err().unwrap();
            assert!(err.contains(fragment), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_console_answers_to_its_own_names() {
        let s = site("127.0.0.1:8002".parse().unwrap(), None);
        let hosts = s.hosts.unwrap();
        assert!(
            hosts.contains(&"localhost:8002".to_owned())
                && hosts.contains(&"127.0.0.1:8002".to_owned())
        );
        assert!(!s.https);
        let s = site(
            "0.0.0.0:8002".parse().unwrap(),
            Some("https://approvals.example.com"),
        );
        assert_eq!(
            s.hosts.unwrap(),
            vec!["0.0.0.0:8002", "approvals.example.com"]
        );
        assert!(s.https);
        assert!(site("0.0.0.0:8002".parse().unwrap(), None).hosts.is_none());
    }

    #[test]
    fn ids_are_random() {
        let a = random_id().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_id().unwrap());
    }
}
