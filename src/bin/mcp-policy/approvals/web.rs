//! The console's HTTP routes (axum): the callout the filter POSTs, the login, the page and its assets, the JSON
//! API (for the page and for scripts) and the live updates (Server-Sent Events).
//!
//! ```text
//! POST <callout path>               the filter's callout (docs/approvals.md "Require approval"); held until decided
//! GET  /healthz                     200, no login
//! GET  /login, POST /login          the login form (name, password)
//! POST /logout
//! GET  /                            the console page (plain HTML, CSS and JS embedded in the binary)
//! GET  /api/session                 {"user", "csrf_token"}
//! GET  /api/state                   {"now_ms", "pending" (newest first), "remembered", "recent"}
//! GET  /api/pending                 the waiting calls only
//! GET  /api/events                  the same state as Server-Sent Events ("state"), on every change
//! POST /api/pending/{id}            {"approve": true|false, "reason": "...", "remember_minutes": N}
//! POST /api/remembered/{id}/revoke  ends an "approve for N minutes"
//! ```
//!
//! Every page and API route needs a login (session cookie, or HTTP Basic for scripts) and an expected `Host`;
//! every state-changing one also passes the CSRF checks in `auth`.

use super::auth::{self, Approvers, Session, Sessions, Site};
use super::callout;
use super::notify::Notifier;
use super::now_ms;
use super::state::{Console, DecideError, Decision, Submitted};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

pub const SESSION_COOKIE: &str = "mcp_approvals_session";
const LOGIN_COOKIE: &str = "mcp_approvals_login";
/// The longest reason an approver may give (the agent reads it).
pub const MAX_REASON_CHARS: usize = 1000;
/// Paths the console's own routes use: the callout path may not be one of them.
pub const RESERVED_PATHS: &[&str] = &["/", "/login", "/logout", "/healthz"];
pub const RESERVED_PREFIXES: &[&str] = &["/api/", "/assets/"];

/// Everything the routes share.
pub struct App {
    pub console: Console,
    pub approvers: Approvers,
    pub sessions: Sessions,
    pub site: Site,
    pub callout_path: String,
    /// When set, callouts must carry `authorization: Bearer <token>` (the policy's `approval.headers`).
    pub callout_token: Option<String>,
    pub notifier: Option<Notifier>,
    pub default_timeout_ms: u64,
    pub max_remember_minutes: u64,
    pub max_callout_bytes: usize,
}

pub fn router(app: Arc<App>) -> Router {
    let console = Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/session", get(session_info))
        .route("/api/state", get(state))
        .route("/api/pending", get(pending))
        .route("/api/events", get(events))
        .route("/api/pending/{id}", post(decide))
        .route("/api/remembered/{id}/revoke", post(revoke))
        .layer(middleware::from_fn_with_state(app.clone(), check_host));
    Router::new()
        .merge(console)
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route(
            &app.callout_path,
            post(callout).layer(DefaultBodyLimit::max(app.max_callout_bytes)),
        )
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn check_host(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if app.site.host_allowed(req.headers()) {
        next.run(req).await
    } else {
        error(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host: open the console at its own address (or set --public-url)",
        )
    }
}

// ------------------------------------------------------------------------------------------------ the callout

/// Ends a waiting call as "withdrawn" if its handler is dropped before an answer (hyper drops it when the
/// filter's connection closes: Envoy's timeout, Envoy stopping).
struct Withdraw {
    app: Arc<App>,
    id: Option<String>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.app.console.end(&id, false, now_ms());
        }
    }
}

/// How much longer than a callout's own `timeout_ms` the console holds it (see [`callout`]).
const FILTER_FIRST: Duration = Duration::from_secs(1);

async fn callout(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &app.callout_token {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !auth::same_secret(got, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let c = match callout::parse(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let timeout_ms = c.timeout_ms.unwrap_or(app.default_timeout_ms);
    // The filter said how long it waits: its own timeout ends the call (Envoy closes the callout: "withdrawn"),
    // and the console, which heard of the call a moment later, waits a little longer rather than race it.
    let grace = if c.timeout_ms.is_some() {
        FILTER_FIRST
    } else {
        Duration::ZERO
    };
    let for_notice = app.notifier.as_ref().map(|_| c.clone());
    let (id, deadline_ms, reply) = match app.console.submit(c, now_ms()) {
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(Submitted::Answered(v)) => return Json(v.to_json()).into_response(),
        Ok(Submitted::Waiting {
            id,
            deadline_ms,
            reply,
        }) => (id, deadline_ms, reply),
    };
    if let (Some(n), Some(c)) = (&app.notifier, &for_notice) {
        n.send(c, timeout_ms);
    }
    let mut guard = Withdraw {
        app: app.clone(),
        id: Some(id),
    };
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms())) + grace;
    let answer = tokio::time::timeout(left, reply).await;
    let id = guard.id.take().unwrap_or_default();
    match answer {
        Ok(Ok(v)) => Json(v.to_json()).into_response(),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the console is shutting down",
        ),
        Err(_) => {
            app.console.end(&id, true, now_ms());
            error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no one decided within {timeout_ms} ms"),
            )
        }
    }
}

// ------------------------------------------------------------------------------------------------ who is asking

enum Via {
    Cookie(Session),
    Basic,
}

struct Who {
    user: String,
    via: Via,
}

fn session_of(app: &App, headers: &HeaderMap) -> Option<Session> {
    auth::cookie(headers, SESSION_COOKIE).and_then(|id| app.sessions.get(id, now_ms()))
}

/// The logged-in approver: a session cookie, else HTTP Basic credentials (checked off the async threads:
/// Argon2 takes tens of milliseconds on purpose).
async fn who(app: &Arc<App>, headers: &HeaderMap) -> Option<Who> {
    if let Some(s) = session_of(app, headers) {
        return Some(Who {
            user: s.user.clone(),
            via: Via::Cookie(s),
        });
    }
    let (name, password) = auth::basic_credentials(headers)?;
    let app = app.clone();
    let checked =
        tokio::task::spawn_blocking(move || app.approvers.verify(&name, &password).then_some(name));
    checked.await.ok().flatten().map(|user| Who {
        user,
        via: Via::Basic,
    })
}

fn unauthorized() -> Response {
    // No WWW-Authenticate: a browser must never be asked for (and then remember) Basic credentials.
    error(
        StatusCode::UNAUTHORIZED,
        "log in first (the console's login page, or HTTP Basic authentication for scripts)",
    )
}

/// CSRF: a state-changing request with the session cookie must come from the console's own origin and carry
/// the session's token; one with Basic credentials may not come from another origin.
fn may_change(
    app: &App,
    headers: &HeaderMap,
    who: &Who,
    form_token: Option<&str>,
) -> Result<(), &'static str> {
    let refused = |why: &'static str| Err(why);
    match &who.via {
        Via::Cookie(s) => {
            if !app.site.same_origin(headers, true) {
                return refused("cross-site request refused (Origin)");
            }
            let token = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .or(form_token)
                .unwrap_or("");
            if !auth::same_secret(token, &s.csrf) {
                return refused("missing or wrong CSRF token");
            }
            Ok(())
        }
        Via::Basic => {
            if app.site.same_origin(headers, false) {
                Ok(())
            } else {
                refused("cross-site request refused (Origin)")
            }
        }
    }
}

fn session_cookie(app: &App, value: &str, max_age_s: u64) -> String {
    let secure = if app.site.https { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}")
}

fn login_cookie(app: &App, value: &str, max_age_s: u64) -> String {
    let secure = if app.site.https { "; Secure" } else { "" };
    format!("{LOGIN_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

fn with_cookies(mut r: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

// ------------------------------------------------------------------------------------------------ login

async fn login_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if session_of(&app, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    let Ok(token) = super::random_id() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let message = match q.as_deref() {
        Some("failed") => "Wrong name or password.",
        Some("out") => "You are logged out.",
        Some("expired") => "The login form expired: try again.",
        _ => "",
    };
    let page = LOGIN
        .replace("{{csrf}}", &token)
        .replace("{{message}}", message);
    with_cookies(
        Html(page).into_response(),
        &[login_cookie(&app, &token, 3600)],
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !app.site.same_origin(&headers, true) {
        return error(StatusCode::FORBIDDEN, "cross-site request refused (Origin)");
    }
    let expected = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !auth::same_secret(&f.csrf, expected) {
        return Redirect::to("/login?expired").into_response();
    }
    let checker = app.clone();
    let user = f.user.clone();
    let ok = tokio::task::spawn_blocking(move || checker.approvers.verify(&user, &f.password))
        .await
        .unwrap_or(false);
    if !ok {
        eprintln!("mcp-policy approvals: failed login for {:?}", f.user);
        return Redirect::to("/login?failed").into_response();
    }
    match app.sessions.create(&f.user, now_ms()) {
        Ok((id, _)) => with_cookies(
            Redirect::to("/").into_response(),
            &[
                session_cookie(&app, &id, auth::SESSION_MS / 1000),
                login_cookie(&app, "", 0),
            ],
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let Some(s) = session_of(&app, &headers) else {
        return Redirect::to("/login").into_response();
    };
    let who = Who {
        user: s.user.clone(),
        via: Via::Cookie(s),
    };
    if let Err(r) = may_change(&app, &headers, &who, f.csrf.as_deref()) {
        return error(StatusCode::FORBIDDEN, r);
    }
    if let Some(id) = auth::cookie(&headers, SESSION_COOKIE) {
        app.sessions.remove(id);
    }
    with_cookies(
        Redirect::to("/login?out").into_response(),
        &[session_cookie(&app, "", 0)],
    )
}

// ------------------------------------------------------------------------------------------------ page

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if session_of(&app, &headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    Html(PAGE).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

// ------------------------------------------------------------------------------------------------ API

async fn session_info(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match who(&app, &headers).await {
        None => unauthorized(),
        Some(w) => {
            let csrf = match &w.via {
                Via::Cookie(s) => Value::String(s.csrf.clone()),
                Via::Basic => Value::Null,
            };
            Json(json!({"user": w.user, "csrf_token": csrf,
                        "max_remember_minutes": app.max_remember_minutes}))
            .into_response()
        }
    }
}

async fn state(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if who(&app, &headers).await.is_none() {
        return unauthorized();
    }
    Json(app.console.snapshot(now_ms())).into_response()
}

async fn pending(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if who(&app, &headers).await.is_none() {
        return unauthorized();
    }
    Json(json!({"pending": app.console.snapshot(now_ms()).pending})).into_response()
}

async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(w) = who(&app, &headers).await else {
        return unauthorized();
    };
    let session = auth::cookie(&headers, SESSION_COOKIE)
        .filter(|_| matches!(w.via, Via::Cookie(_)))
        .map(str::to_owned);
    let rx = app.console.subscribe();
    let stream = futures_util::stream::unfold((rx, true), move |(mut rx, first)| {
        let app = app.clone();
        let session = session.clone();
        async move {
            if first {
                rx.mark_unchanged();
            } else if rx.changed().await.is_err() {
                return None;
            }
            // A logout (or the session's end) ends the stream.
            if let Some(id) = &session {
                app.sessions.get(id, now_ms())?;
            }
            let event = Event::default()
                .event("state")
                .json_data(app.console.snapshot(now_ms()));
            Some((event, (rx, false)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    approve: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    remember_minutes: Option<u64>,
}

/// The approver's reason as the agent will read it: trimmed, control characters made spaces, none if empty.
fn clean_reason(r: Option<String>) -> Result<Option<String>, String> {
    let Some(r) = r else { return Ok(None) };
    let r: String = r
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        ));
    }
    Ok(Some(r).filter(|r| !r.is_empty()))
}

async fn decide(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(w) = who(&app, &headers).await else {
        return unauthorized();
    };
    if let Err(r) = may_change(&app, &headers, &w, None) {
        return error(StatusCode::FORBIDDEN, r);
    }
    let b: DecideBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"approve\": true|false, \"reason\": \"...\", \"remember_minutes\": N}}: {e}"),
            )
        }
    };
    let reason = match clean_reason(b.reason) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let remember_seconds = match b.remember_minutes {
        None => None,
        Some(_) if !b.approve => {
            return error(
                StatusCode::BAD_REQUEST,
                "remember_minutes goes with an approval only",
            )
        }
        Some(m) if (1..=app.max_remember_minutes).contains(&m) => Some(m * 60),
        Some(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "remember_minutes {m} is not between 1 and {}",
                    app.max_remember_minutes
                ),
            )
        }
    };
    let decision = Decision {
        approve: b.approve,
        reason,
        remember_seconds,
    };
    match app.console.decide(&id, decision, &w.user, now_ms()) {
        Ok(r) => Json(json!({"ok": true, "decision": r})).into_response(),
        Err(e) => decide_error(e),
    }
}

fn decide_error(e: DecideError) -> Response {
    match e {
        DecideError::NotWaiting => error(
            StatusCode::NOT_FOUND,
            "no such call is waiting (already decided, expired or withdrawn)",
        ),
        DecideError::TooLate => error(
            StatusCode::CONFLICT,
            "too late: the call stopped waiting (the filter gave up); nothing was decided",
        ),
        DecideError::Log(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the decision log cannot be written, so nothing was decided: {e}"),
        ),
    }
}

async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(w) = who(&app, &headers).await else {
        return unauthorized();
    };
    if let Err(r) = may_change(&app, &headers, &w, None) {
        return error(StatusCode::FORBIDDEN, r);
    }
    match app.console.revoke(&id, &w.user, now_ms()) {
        Ok(r) => Json(json!({"ok": true, "decision": r})).into_response(),
        Err(e) => decide_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::store::{tests::temp_path, DecisionLog};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const HOST: &str = "127.0.0.1:8002";
    const ORIGIN: &str = "http://127.0.0.1:8002";

    fn app() -> Arc<App> {
        let (log, loaded) = DecisionLog::open(&temp_path("d.jsonl")).unwrap();
        let hash = auth::hash_password("pw").unwrap();
        Arc::new(App {
            console: Console::new(log, loaded.records, 30_000, 60, now_ms()),
            approvers: Approvers::parse(&format!("ana:{hash}")).unwrap(),
            sessions: Sessions::default(),
            site: Site {
                hosts: Some(vec![HOST.into()]),
                https: false,
            },
            callout_path: "/approve".into(),
            callout_token: Some("t0k".into()),
            notifier: None,
            default_timeout_ms: 30_000,
            max_remember_minutes: 60,
            max_callout_bytes: 1 << 20,
        })
    }

    async fn send(app: &Arc<App>, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let r = router(app.clone()).oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    }

    /// Logs in through the form; returns (cookie header, csrf token).
    async fn log_in(app: &Arc<App>) -> (String, String) {
        let (status, headers, page) = send(app, req("GET", "/login", &[], "")).await;
        assert_eq!(status, StatusCode::OK);
        let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let token = set
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        assert!(page.contains(&format!("value=\"{token}\"")));
        let form = format!("user=ana&password=pw&csrf={token}");
        let login_cookie = format!("{LOGIN_COOKIE}={token}");
        let (status, headers, _) = send(
            app,
            req(
                "POST",
                "/login",
                &[
                    ("origin", ORIGIN),
                    ("cookie", &login_cookie),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &form,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = set.iter().find(|c| c.starts_with(SESSION_COOKIE)).unwrap();
        assert!(
            session.contains("HttpOnly")
                && session.contains("SameSite=Lax")
                && !session.contains("Secure"),
            "{session}"
        );
        let cookie = session.split(';').next().unwrap().to_owned();
        let (_, _, info) = send(app, req("GET", "/api/session", &[("cookie", &cookie)], "")).await;
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["user"], "ana");
        (cookie, info["csrf_token"].as_str().unwrap().to_owned())
    }

    fn waiting(app: &Arc<App>) -> String {
        let c = callout::parse(
            br#"{"method":"tools/call","tool":"t","arguments":{},"identity":"i","jsonrpc_id":1}"#,
        )
        .unwrap();
        match app.console.submit(c, now_ms()).unwrap() {
            Submitted::Waiting { id, reply, .. } => {
                std::mem::forget(reply); // kept open: the call waits
                id
            }
            Submitted::Answered(_) => panic!("answered"),
        }
    }

    #[tokio::test]
    async fn pages_and_api_need_a_login() {
        let app = app();
        let (status, headers, _) = send(&app, req("GET", "/", &[], "")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers.get(header::LOCATION).unwrap(), "/login");
        for path in ["/api/state", "/api/pending", "/api/events", "/api/session"] {
            let (status, headers, _) = send(&app, req("GET", path, &[], "")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        }
        let (status, ..) = send(
            &app,
            req(
                "GET",
                "/api/state",
                &[("authorization", "Basic YW5hOnB3")],
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "ana:pw");
        let (status, ..) = send(
            &app,
            req(
                "GET",
                "/api/state",
                &[("authorization", "Basic YW5hOng=")],
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "ana:x");
        let (cookie, _) = log_in(&app).await;
        let (status, headers, page) = send(&app, req("GET", "/", &[("cookie", &cookie)], "")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("/assets/app.js"));
        assert!(headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }

    #[tokio::test]
    async fn a_wrong_password_or_a_forged_login_gets_no_session() {
        let app = app();
        let cookie = format!("{LOGIN_COOKIE}=abc");
        let ct = ("content-type", "application/x-www-form-urlencoded");
        let (status, headers, _) = send(
            &app,
            req(
                "POST",
                "/login",
                &[("origin", ORIGIN), ("cookie", &cookie), ct],
                "user=ana&password=no&csrf=abc",
            ),
        )
        .await;
        assert_eq!(
            (
                status,
                headers.get(header::LOCATION).unwrap().to_str().unwrap()
            ),
            (StatusCode::SEE_OTHER, "/login?failed")
        );
        assert!(headers.get(header::SET_COOKIE).is_none());
        let (status, headers, _) = send(
            &app,
            req(
                "POST",
                "/login",
                &[("origin", "http://evil.example"), ("cookie", &cookie), ct],
                "user=ana&password=pw&csrf=abc",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.get(header::SET_COOKIE).is_none());
        let (status, headers, _) = send(
            &app,
            req(
                "POST",
                "/login",
                &[("origin", ORIGIN), ct],
                "user=ana&password=pw&csrf=abc",
            ),
        )
        .await;
        assert_eq!(
            headers.get(header::LOCATION).unwrap(),
            "/login?expired",
            "{status}"
        );
    }

    #[tokio::test]
    async fn deciding_needs_the_csrf_token_and_the_consoles_origin() {
        let app = app();
        let (cookie, csrf) = log_in(&app).await;
        let id = waiting(&app);
        let path = format!("/api/pending/{id}");
        let body = r#"{"approve": true}"#;
        for (headers, why) in [
            (
                vec![("cookie", cookie.as_str()), ("origin", ORIGIN)],
                "no token",
            ),
            (
                vec![
                    ("cookie", cookie.as_str()),
                    ("origin", ORIGIN),
                    ("x-csrf-token", "wrong"),
                ],
                "wrong token",
            ),
            (
                vec![("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())],
                "no Origin",
            ),
            (
                vec![
                    ("cookie", cookie.as_str()),
                    ("origin", "http://evil.example"),
                    ("x-csrf-token", csrf.as_str()),
                ],
                "foreign Origin",
            ),
        ] {
            let (status, ..) = send(&app, req("POST", &path, &headers, body)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
        }
        assert_eq!(
            app.console.snapshot(now_ms()).pending.len(),
            1,
            "still waiting"
        );
        // A foreign Host (DNS rebinding) is refused before anything else.
        let r = Request::builder()
            .method("POST")
            .uri(&path)
            .header("host", "evil.example:8002")
            .header("origin", "http://evil.example:8002")
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .body(Body::from(body))
            .unwrap();
        assert_eq!(send(&app, r).await.0, StatusCode::MISDIRECTED_REQUEST);
        let ok = [
            ("cookie", cookie.as_str()),
            ("origin", ORIGIN),
            ("x-csrf-token", csrf.as_str()),
        ];
        for bad in [
            r#"{"approve": true, "remember_minutes": 61}"#,
            r#"{"approve": false, "remember_minutes": 5}"#,
            r#"{"approve": "yes"}"#,
            r#"{"approve": true, "extra": 1}"#,
        ] {
            let (status, _, text) = send(&app, req("POST", &path, &ok, bad)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {text}");
        }
        let (status, _, text) = send(
            &app,
            req(
                "POST",
                &path,
                &ok,
                r#"{"approve": false, "reason": " no\nway "}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (
                v["decision"]["by"].as_str(),
                v["decision"]["reason"].as_str()
            ),
            (Some("ana"), Some("no way"))
        );
        let (status, ..) = send(&app, req("POST", &path, &ok, body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "decided already");
    }

    #[tokio::test]
    async fn scripts_decide_with_basic_authentication() {
        let app = app();
        let id = waiting(&app);
        let basic = ("authorization", "Basic YW5hOnB3");
        let path = format!("/api/pending/{id}");
        let (status, ..) = send(
            &app,
            req(
                "POST",
                &path,
                &[basic, ("origin", "http://evil.example")],
                r#"{"approve": true}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, text) = send(
            &app,
            req(
                "POST",
                &path,
                &[basic],
                r#"{"approve": true, "remember_minutes": 5}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let snap = app.console.snapshot(now_ms());
        assert_eq!(snap.remembered.len(), 1);
        let revoke = format!("/api/remembered/{}/revoke", snap.remembered[0].id);
        let (status, ..) = send(&app, req("POST", &revoke, &[], "")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, ..) = send(&app, req("POST", &revoke, &[basic], "")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(app.console.snapshot(now_ms()).remembered.is_empty());
    }

    #[tokio::test]
    async fn the_callout_needs_its_token_and_a_proper_body() {
        let app = app();
        let body = r#"{"method":"tools/call","tool":"t","arguments":{},"identity":"i","jsonrpc_id":1,"timeout_ms":50}"#;
        let (status, ..) = send(&app, req("POST", "/approve", &[], body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let bearer = ("authorization", "Bearer t0k");
        let (status, ..) = send(&app, req("POST", "/approve", &[bearer], "{}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Any Host: Envoy sends the policy's approval.authority.
        let r = Request::builder()
            .method("POST")
            .uri("/approve")
            .header("host", "approvals")
            .header("authorization", "Bearer t0k")
            .body(Body::from(body))
            .unwrap();
        let started = std::time::Instant::now();
        let (status, _, text) = send(&app, r).await;
        assert_eq!(
            status,
            StatusCode::GATEWAY_TIMEOUT,
            "nobody decided in 50 ms: {text}"
        );
        // The filter's own timeout (50 ms) comes first: the console waits FILTER_FIRST longer.
        assert!(started.elapsed() >= Duration::from_millis(50) + FILTER_FIRST);
        let snap = app.console.snapshot(now_ms());
        assert!(snap.pending.is_empty());
        assert_eq!(
            snap.recent[0].outcome,
            crate::approvals::store::Outcome::Expired
        );
    }

    /// The API shows the caller of a policy with `callers` as the filter sent it, and whom "approve for N
    /// minutes" would cover; the recent decisions keep it.
    #[tokio::test]
    async fn the_api_shows_the_caller() {
        let app = app();
        let body = r#"{"method":"tools/call","tool":"t","arguments":{},"identity":"sess-1","jsonrpc_id":1,
            "timeout_ms":60000,"caller":{"subject":"alice","groups":["ml-admins","readers"],"principal":null,
            "profile":"ml-admins"}}"#;
        let bearer = ("authorization", "Bearer t0k");
        let callout = req("POST", "/approve", &[bearer], body);
        let filter = app.clone();
        let post = tokio::spawn(async move { send(&filter, callout).await });
        let basic = ("authorization", "Basic YW5hOnB3");
        let p = loop {
            let (_, _, text) = send(&app, req("GET", "/api/pending", &[basic], "")).await;
            let v: Value = serde_json::from_str(&text).unwrap();
            if let Some(p) = v["pending"].get(0) {
                break p.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            (&p["caller"], &p["grantee"], &p["identity"]),
            (
                &json!({"subject": "alice", "groups": ["ml-admins", "readers"], "principal": null,
                        "profile": "ml-admins"}),
                &json!({"caller": "jwt:alice"}),
                &json!("sess-1")
            )
        );
        let path = format!("/api/pending/{}", p["id"].as_str().unwrap());
        let for_5_minutes = r#"{"approve": true, "remember_minutes": 5}"#;
        let (status, _, text) = send(&app, req("POST", &path, &[basic], for_5_minutes)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let (status, _, answer) = post.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (_, _, text) = send(&app, req("GET", "/api/state", &[basic], "")).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["recent"][0]["caller"]["subject"], "alice");
        assert_eq!(
            v["remembered"][0]["grantee"],
            json!({"caller": "jwt:alice"})
        );
        assert_eq!(v["remembered"][0]["caller"]["profile"], "ml-admins");
        // A callout whose caller is not what the filter sends is refused.
        let bad = body.replace(r#""subject":"alice""#, r#""subject":["alice"]"#);
        let (status, ..) = send(&app, req("POST", "/approve", &[bearer], &bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn reasons_are_cleaned() {
        assert_eq!(clean_reason(None), Ok(None));
        assert_eq!(clean_reason(Some("  ".into())), Ok(None));
        assert_eq!(
            clean_reason(Some(" a\tb\u{7}c ".into())),
            Ok(Some("a b c".into()))
        );
        assert!(clean_reason(Some("x".repeat(MAX_REASON_CHARS + 1))).is_err());
    }
}
