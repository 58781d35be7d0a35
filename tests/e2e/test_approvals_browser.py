"""The approvals console in a real browser: Debian's headless Chromium (/usr/bin/chromium; `make e2e` installs the
packages chromium and chromium-driver when missing) driven by Playwright, which never downloads a browser here.

An agent on the official MCP Python SDK calls the real MLflow MCP server through Envoy; its call waits; an approver
who logged in sees it on the page (who calls: the verified caller behind jwt_authn, or plainly none) and clicks.
Set APPROVALS_SCREENSHOTS=DIR to keep the screenshots (the README's come from here: APPROVALS_SCREENSHOTS=docs).
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from conftest import render_bootstrap
from console import APPROVER, PASSWORD, Console
from test_callers import JWT_CALLERS, Issuer, bearer, behind_jwt_authn

CHROMIUM = pathlib.Path("/usr/bin/chromium")
# What works on these machines (no network but loopback): no background requests, no QUIC, no GPU.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOT_APPROVED = -31003
POLICY = {
    "version": "1",
    "default": "deny",
    "approval": {"cluster": "approvals", "timeout_ms": 60_000},
    "tools": {
        "get_*": {},
        "search_*": {},
        "set_run_tag": {"action": "require_approval", "reason": "Agents tag runs only with a human's approval"},
        "set_experiment_tag": {"action": "require_approval",
                               "reason": "Agents tag experiments only with a human's approval"},
    },
}

# The same rules for callers that Envoy's jwt_authn verified: ml-admins (a group of the token) get a profile.
CALLERS_POLICY = {
    **POLICY,
    "callers": JWT_CALLERS,
    "profiles": [{"name": "ml-admins", "match": {"groups": ["ml-admins"]}, "tools": {"search_*": {}}}],
}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium: install Debian's chromium and chromium-driver "
                                       "(make e2e does)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright starts the browser with a fresh temporary --user-data-dir of its own.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = Console(tmp_path_factory.mktemp("console"), "--timeout-ms", str(POLICY["approval"]["timeout_ms"])).start()
    yield c
    c.stop()


@pytest.fixture
def proxy(shared_envoy, mlflow_mcp, console):
    return shared_envoy(POLICY, mlflow_mcp.port, clusters={"approvals": console.port})


@pytest.fixture
def agents():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def shots_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = os.environ.get("APPROVALS_SCREENSHOTS")
    return pathlib.Path(d) if d else tmp_path


def agent_call(url: str, tool: str, args: dict, token: str | None = None) -> tuple[str | None, object]:
    """One MCP session through Envoy (with a bearer ``token``, if given): initialize, call the tool. (session id,
    the result or the McpError)."""
    async def go():
        async with streamablehttp_client(url, headers=bearer(token) if token else None, timeout=30,
                                         sse_read_timeout=120) as (read, write, session_id):
            async with ClientSession(read, write) as session:
                await session.initialize()
                try:
                    return session_id(), await session.call_tool(tool, args)
                except McpError as e:
                    return session_id(), e

    return asyncio.run(go())


def log_in(page, console: Console, password: str = PASSWORD) -> None:
    page.goto(console.base + "/")
    assert page.url == console.base + "/login"
    page.fill("input[name=user]", APPROVER)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def open_console(context, console: Console):
    page = context.new_page()
    log_in(page, console)
    page.wait_for_url(console.base + "/")
    page.wait_for_selector("#live.ok")
    return page


def card(page, marker: str):
    """The waiting call whose arguments contain ``marker``, once the page shows it."""
    c = page.locator("article.call", has_text=marker)
    c.wait_for()
    return c


def wait_done(fut: Future, timeout: float = 20) -> tuple[str | None, object]:
    return fut.result(timeout)


def test_login_is_required(context, console):
    page = context.new_page()
    r = page.goto(console.base + "/api/state")
    assert r.status == 401
    log_in(page, console, password="not the password")
    page.wait_for_url(console.base + "/login?failed")
    assert "Wrong name or password" in page.inner_text(".message")
    assert not any(c["name"] == "mcp_approvals_session" for c in context.cookies())
    log_in(page, console)
    page.wait_for_url(console.base + "/")
    page.wait_for_selector("#live.ok")
    assert page.inner_text("#user") == APPROVER
    (cookie,) = [c for c in context.cookies() if c["name"] == "mcp_approvals_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
    assert page.evaluate("document.cookie") == "", "the session cookie is out of the page's scripts' reach"
    # Logging out ends the session.
    page.click("#logout button")
    page.wait_for_url(console.base + "/login?out")
    page.goto(console.base + "/")
    assert page.url == console.base + "/login"


def test_a_click_approves_the_agents_waiting_call(context, console, proxy, mlflow_mcp, agents):
    page = open_console(context, console)
    run_id = mlflow_mcp.ids["runs"]["churn-model/xgboost"]
    fut = agents.submit(agent_call, proxy.url, "set_run_tag", {"run_id": run_id, "key": "reviewed_by",
                                                                "value": "browser-approve"})
    c = card(page, "browser-approve")
    assert c.locator(".name").inner_text() == "set_run_tag"
    assert c.locator(".kind").inner_text().lower() == "tool"
    assert c.locator(".rule").inner_text() == "Agents tag runs only with a human's approval"
    assert run_id in c.locator("pre.args").inner_text()
    assert "left" in c.locator(".left").inner_text()
    identity = c.locator(".identity").inner_text()
    # Without `callers` in the policy no caller is verified, and the page says so: the identity is all there is.
    assert c.locator(".caller .unverified").inner_text() == "No verified caller"
    assert "(the policy verifies no callers)" in c.locator(".caller .note").inner_text()
    assert c.locator(".for-whom").inner_text() == "min, for this identity and tool only"
    assert page.inner_text("#count") == "1"
    assert page.title().startswith("(1) ")
    time.sleep(0.5)
    assert not fut.done(), "the call waits for the click"

    # A second waiting call.
    other = agents.submit(agent_call, proxy.url, "set_experiment_tag",
                          {"experiment_id": mlflow_mcp.ids["experiments"]["large-run"], "key": "stage",
                           "value": "second-call"})
    card(page, "second-call")

    c.locator("button.approve").click()
    session_id, result = wait_done(fut)
    assert not isinstance(result, McpError) and not result.isError, result
    assert session_id == identity
    assert mlflow_mcp.client().get_run(run_id).data.tags["reviewed_by"] == "browser-approve"
    c.wait_for(state="detached")
    row = page.locator("#recent tbody tr").first
    row.wait_for()
    assert "approved" in row.inner_text() and "set_run_tag" in row.inner_text() and APPROVER in row.inner_text()

    card(page, "second-call").locator("button.deny").click()
    _, err = wait_done(other)
    assert isinstance(err, McpError) and err.error.code == NOT_APPROVED, err
    page.locator("#count", has_text="0").wait_for()


def test_the_page_shows_who_calls(context, console, envoy, mlflow_mcp, agents, tmp_path):
    """Behind jwt_authn with `callers`: a verified caller's subject, how it was verified, its profile and groups;
    "approve for N minutes" says it is for that caller in any session; a call without a token says plainly that
    no caller is verified. Readable at a phone's width too (nothing wider than the screen). The README's
    screenshots are taken here, with these two calls waiting."""
    idp = Issuer()
    proxy = envoy(None, 0, bootstrap=behind_jwt_authn(
        render_bootstrap(CALLERS_POLICY, mlflow_mcp.port, clusters={"approvals": console.port}), idp))
    page = open_console(context, console)
    run_id = mlflow_mcp.ids["runs"]["churn-model/xgboost"]
    exp_id = mlflow_mcp.ids["experiments"]["large-run"]
    alice = idp.token("alice", groups=["ml-admins", "readers", "platform"])
    by_alice = agents.submit(agent_call, proxy.url, "set_run_tag",
                             {"run_id": run_id, "key": "reviewed_by", "value": "caller-alice"}, alice)
    a = card(page, "caller-alice")
    caller = a.locator(".caller")
    assert caller.locator(".subject").inner_text() == "alice"
    assert caller.locator(".via").inner_text() == "verified token"
    assert caller.locator(".profile").inner_text() == "profile ml-admins"
    assert caller.locator(".group").all_inner_texts() == ["ml-admins", "readers", "platform"]
    assert caller.locator(".unverified, .note, .principal").count() == 0
    assert a.locator(".for-whom").inner_text() == "min, for alice and this tool (any session)"
    (waiting,) = console.pending()
    assert a.locator(".identity").inner_text() == waiting["identity"] != "alice"

    by_nobody = agents.submit(agent_call, proxy.url, "set_experiment_tag",
                              {"experiment_id": exp_id, "key": "stage", "value": "caller-nobody"})
    n = card(page, "caller-nobody")
    assert n.locator(".caller .unverified").inner_text() == "No verified caller"
    note = n.locator(".caller .note").inner_text()
    assert note.startswith("Known only by the identity below") and "policy verifies no callers" not in note
    assert n.locator(".subject, .via, .profile, .group").count() == 0
    assert n.locator(".for-whom").inner_text() == "min, for this identity and tool only"
    assert n.locator(".identity").inner_text()

    out = shots_dir(tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "approvals-console-desktop.png"), full_page=True)
    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(console.base + "/")
    phone.wait_for_selector("#live.ok")
    pa, pn = card(phone, "caller-alice"), card(phone, "caller-nobody")
    assert pa.locator(".caller .subject").is_visible() and pa.locator(".caller .profile").is_visible()
    assert pn.locator(".caller .unverified").is_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "nothing wider than a phone"
    phone.screenshot(path=str(out / "approvals-console-phone.png"), full_page=True)
    phone.close()

    # A caller with many groups and markup in its name: the markup is text, the groups are cut to the first 12.
    many = [f"team-{i:02}" for i in range(15)]
    by_markup = agents.submit(agent_call, proxy.url, "set_run_tag",
                              {"run_id": run_id, "key": "k", "value": "caller-markup"},
                              idp.token("<b>bob</b>", groups=many))
    b = card(page, "caller-markup")
    assert b.locator(".caller .subject").inner_text() == "<b>bob</b>"
    assert b.locator(".caller b").count() == 0
    assert b.locator(".caller .group").all_inner_texts() == many[:12]
    assert b.locator(".caller .groups .more").inner_text() == "+3 more"
    assert b.locator(".caller .profile").count() == 0
    b.locator("button.deny").click()
    n.locator("button.deny").click()

    # Approve alice's call for 5 minutes: the list says it is alice's, in any session; the log names her.
    a.locator("select.minutes").select_option("5")
    a.locator("button.approve-for").click()
    _, result = wait_done(by_alice)
    assert not isinstance(result, McpError) and not result.isError, result
    for fut in (by_nobody, by_markup):
        _, err = wait_done(fut)
        assert isinstance(err, McpError) and err.error.code == NOT_APPROVED, err
    remembered = page.locator("#remembered li", has_text="set_run_tag")
    remembered.wait_for()
    assert "set_run_tag for alice (ml-admins), any session · approved by " + APPROVER in remembered.inner_text()
    row = page.locator("#recent tbody tr", has_text="alice")
    row.wait_for()
    assert "approved for 5 min" in row.inner_text()
    assert "not verified" in page.locator("#recent tbody tr", has_text="set_experiment_tag").first.inner_text()
    remembered.locator("button.revoke").click()
    remembered.wait_for(state="detached")


def test_deny_with_a_reason_reaches_the_agent(context, console, proxy, mlflow_mcp, agents):
    page = open_console(context, console)
    run_id = mlflow_mcp.ids["runs"]["churn-model/baseline"]
    fut = agents.submit(agent_call, proxy.url, "set_run_tag", {"run_id": run_id, "key": "k", "value": "browser-deny"})
    c = card(page, "browser-deny")
    c.locator("input.reason").fill("Baseline runs are frozen")
    c.locator("button.deny").click()
    _, err = wait_done(fut)
    assert isinstance(err, McpError), err
    assert err.error.code == NOT_APPROVED, err.error
    assert err.error.data["decision"] == "approval_denied", err.error
    assert err.error.data["reason"] == "Baseline runs are frozen", err.error
    assert "Baseline runs are frozen" in err.error.message
    assert "k" not in mlflow_mcp.client().get_run(run_id).data.tags
    row = page.locator("#recent tbody tr").first
    row.wait_for()
    assert "denied" in row.inner_text() and "Baseline runs are frozen" in row.inner_text()


def test_approve_for_n_minutes_lets_the_next_call_through_without_a_person(context, console, proxy, mlflow_mcp,
                                                                            agents):
    page = open_console(context, console)
    # Not churn-model: test_try_it compares the README's get_experiment_by_name("churn-model") output with the
    # shared MLflow store's, so the tests leave that experiment's tags as seeded.
    exp_id = mlflow_mcp.ids["experiments"]["large-run"]

    async def two_calls():
        async with streamablehttp_client(proxy.url, timeout=30, sse_read_timeout=120) as (read, write, sid):
            async with ClientSession(read, write) as session:
                await session.initialize()
                first = await session.call_tool("set_experiment_tag",
                                                {"experiment_id": exp_id, "key": "k1", "value": "remember-1"})
                t0 = time.monotonic()
                second = await session.call_tool("set_experiment_tag",
                                                 {"experiment_id": exp_id, "key": "k2", "value": "remember-2"})
                return sid(), first, second, time.monotonic() - t0

    fut = agents.submit(asyncio.run, two_calls())
    c = card(page, "remember-1")
    c.locator("select.minutes").select_option("5")
    c.locator("button.approve-for").click()
    session_id, first, second, second_took = fut.result(30)
    assert not first.isError and not second.isError, (first, second)
    assert second_took < 3, "the second call was let through without asking"
    tags = mlflow_mcp.client().get_experiment(exp_id).tags
    assert (tags["k1"], tags["k2"]) == ("remember-1", "remember-2")
    assert page.locator("article.call", has_text="remember-2").count() == 0
    remembered = page.locator("#remembered li", has_text="set_experiment_tag")
    remembered.wait_for()
    assert "approved by " + APPROVER in remembered.inner_text()
    # The filter remembered the approval: the second call never reached the console.
    outcomes = [r["outcome"] for r in console.records() if r["identity"] == session_id]
    assert outcomes == ["approved"]
    # Revoke: off the list (the filter asks again once what it remembers ends, within --revoke-within).
    remembered.locator("button.revoke").click()
    remembered.wait_for(state="detached")


class Forger:
    """Another origin's page (a different port on 127.0.0.1: same site, so even the Lax session cookie goes
    along) that makes the approver's browser POST a decision to the console, as a form and as a fetch."""

    def __init__(self, target: str) -> None:
        page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}" enctype="text/plain">
<input name='{{"approve": true, "x": "' value='"}}'></form>
<script>
fetch("{target}", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"content-type": "text/plain"}}, body: '{{"approve": true}}'}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_forged_cross_site_post_is_refused(context, console, proxy, mlflow_mcp, agents):
    page = open_console(context, console)
    run_id = mlflow_mcp.ids["runs"]["churn-model/baseline"]
    fut = agents.submit(agent_call, proxy.url, "set_run_tag", {"run_id": run_id, "key": "forged", "value": "csrf"})
    c = card(page, "csrf")
    call_id = c.get_attribute("data-id")
    forger = Forger(f"{console.base}/api/pending/{call_id}")
    try:
        evil = context.new_page()
        statuses = []
        evil.on("response", lambda r: statuses.append((r.request.method, r.url, r.status)))
        evil.goto(forger.url)
        evil.wait_for_url(f"{console.base}/api/pending/{call_id}")
        posts = [s for m, u, s in statuses if m == "POST" and u.endswith(call_id)]
        assert posts and all(s == 403 for s in posts), statuses
        assert "cross-site request refused" in evil.inner_text("body")
    finally:
        forger.close()
    time.sleep(0.3)
    assert not fut.done(), "the forged approval was refused: the call still waits"
    assert [p["id"] for p in console.pending()] == [call_id]
    c.locator("input.reason").fill("not via a forged request")
    c.locator("button.deny").click()
    _, err = wait_done(fut)
    assert isinstance(err, McpError) and err.error.data["reason"] == "not via a forged request", err
    assert "forged" not in mlflow_mcp.client().get_run(run_id).data.tags
