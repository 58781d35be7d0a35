"""The approvals console (`mcp-policy approvals`, issue 15) through a real Envoy: calls that need approval wait in the
console until a person decides through its JSON API (as scripts do; the browser tests click the page), or their
time runs out; "approve for N minutes"; a console restart mid-wait fails closed; the notification webhook; with
caller-aware rules (jwt_authn and `callers`), the caller shown and "approve for N minutes" held by the verified
caller across its sessions.

The upstream is the recording upstream (so "nothing forwarded" is checked byte for byte), except in the test with
the official MCP Python SDK client and the real MLflow MCP server.
"""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from approvals import Webhook
from conftest import render_bootstrap
from console import APPROVER, PASSWORD, Console
from support import send
from test_approval import assert_forwarded_answer, assert_not_approved, upstream_tools, use
from test_callers import JWT_CALLERS, Issuer, behind_jwt_authn, call_tool

TIMEOUT_MS = 20_000
RULE_REASON = "Creating experiments needs a human"
POLICY = {
    "version": "1",
    "default": "deny",
    "approval": {"cluster": "approvals", "timeout_ms": TIMEOUT_MS},
    "tools": {
        "get_*": {},
        "create_experiment": {"action": "require_approval", "reason": RULE_REASON},
        "set_run_tag": {"action": "require_approval"},
    },
}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """One console for the module (its --timeout-ms left at 30 s: the callouts say the policy's timeout_ms); tests
    use their own session ids."""
    c = Console(tmp_path_factory.mktemp("console")).start()
    yield c
    c.stop()


@pytest.fixture
def proxy(shared_envoy, upstream, console):
    return shared_envoy(POLICY, upstream.port, clusters={"approvals": console.port})


@pytest.fixture
def sid(request):
    return lambda name="s": f"{request.node.name}-{name}"


@pytest.fixture
def calls():
    """Runs calls in the background (each waits for its approval); ``calls.submit(fn, ...)`` -> Future."""
    pool = ThreadPoolExecutor(16)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def test_a_waiting_call_is_shown_then_approved(proxy, upstream, console, calls, sid):
    args = b'{"name": "exp-1", "n": 12345678901234567890, "tags": {"team": "ml"}}'
    body = (b'{"jsonrpc":"2.0","id":"c-1","method":"tools/call","params":{"name":"create_experiment",'
            b'"arguments":' + args + b'}}')
    session = sid()
    fut = calls.submit(send, proxy.url, body, headers={"Mcp-Session-Id": session, "x-request-id": "req-1"},
                       timeout=30)
    (p,) = console.wait_pending(1, identity=session)
    assert (p["method"], p["kind"], p["name"], p["rule_reason"], p["jsonrpc_id"], p["request_id"]) == (
        "tools/call", "tool", "create_experiment", RULE_REASON, '"c-1"', "req-1")
    # The arguments as the agent wrote them (the big number intact), pretty-printed.
    assert p["arguments"] == ('{\n  "name": "exp-1",\n  "n": 12345678901234567890,\n  "tags": {\n'
                              '    "team": "ml"\n  }\n}')
    assert p["deadline_ms"] - p["received_ms"] == TIMEOUT_MS
    assert 0 <= time.time() * 1000 - p["received_ms"] < 5000
    time.sleep(0.3)
    assert not fut.done(), "answered before a decision"
    upstream.assert_not_forwarded()

    d = console.decide(p["id"], True)
    assert (d["outcome"], d["by"], d["name"], d["identity"]) == ("approved", APPROVER, "create_experiment", session)
    r = fut.result(10)
    assert_forwarded_answer(r, "c-1")
    upstream.assert_forwarded(body)
    assert console.pending() == [] or all(q["identity"] != session for q in console.pending())
    # Recorded: the API's recent decisions and the log file.
    assert console.state()["recent"][0]["id"] == p["id"]
    (line,) = [x for x in console.records() if x["id"] == p["id"]]
    assert line["outcome"] == "approved" and line["by"] == APPROVER and line["waited_ms"] >= 300


def test_a_denial_with_a_reason_reaches_the_agent(proxy, upstream, console, calls, sid):
    session = sid()
    fut = calls.submit(use, proxy.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, session=session,
                       id=9, timeout=30)
    (p,) = console.wait_pending(1, identity=session)
    assert p["rule_reason"] is None
    console.decide(p["id"], False, reason="Tags are set by the release job")
    assert_not_approved(fut.result(10), 9, "set_run_tag", "approval_denied", "Tags are set by the release job")
    upstream.assert_not_forwarded()
    # Without a reason the agent reads the filter's default.
    fut = calls.submit(use, proxy.url, "set_run_tag", {}, session=session, id=10, timeout=30)
    (p,) = console.wait_pending(1, identity=session)
    console.decide(p["id"], False)
    assert_not_approved(fut.result(10), 10, "set_run_tag", "approval_denied", "the approver declined")


def test_concurrent_waiting_calls_newest_first_each_decided_on_its_own(proxy, upstream, console, calls, sid):
    futures = {}
    for i in range(6):
        futures[i] = calls.submit(use, proxy.url, "create_experiment", {"name": f"e{i}"}, session=sid(f"s{i % 3}"),
                                  id=i, timeout=30)
        time.sleep(0.02)
    waiting = console.wait_pending(6, name="create_experiment")
    waiting = [p for p in waiting if p["identity"].startswith(sid(""))]
    assert len(waiting) == 6
    assert [p["received_ms"] for p in waiting] == sorted((p["received_ms"] for p in waiting), reverse=True)
    by_id = {json.loads(p["jsonrpc_id"]): p for p in waiting}
    # Meanwhile other calls go through at once.
    t0 = time.monotonic()
    assert_forwarded_answer(use(proxy.url, "get_run", {"run_id": "r"}, session=sid("s0"), id=100), 100)
    assert time.monotonic() - t0 < 1.0
    for i in (3, 0, 5, 1, 4, 2):
        console.decide(by_id[i]["id"], i % 2 == 0, reason=None if i % 2 == 0 else f"no {i}")
    for i, f in futures.items():
        if i % 2 == 0:
            assert_forwarded_answer(f.result(10), i)
        else:
            assert_not_approved(f.result(10), i, "create_experiment", "approval_denied", f"no {i}")
    assert sorted(i for t, i in upstream_tools(upstream) if t == "create_experiment") == [0, 2, 4]
    # Decided once only.
    status, body = console.api("POST", f"/api/pending/{by_id[0]['id']}", {"approve": False})
    assert status == 404, body


REVOKE_WITHIN = 3


def test_approve_for_n_minutes_answers_the_next_call_without_a_person(envoy, upstream, tmp_path, calls, sid):
    """"Approve for 2 minutes": the filter remembers it (remember_seconds) and lets the same caller's next calls of
    the tool through without a callout, for at most --revoke-within seconds at a time (3 here); after that its next
    callout is answered by the console at once from the approval, until the approval ends or is revoked."""
    c = Console(tmp_path / "console", "--revoke-within", str(REVOKE_WITHIN)).start()
    try:
        proxy = envoy(POLICY, upstream.port, clusters={"approvals": c.port}, component_log_level="wasm:info")
        session, other = sid("a"), sid("b")
        fut = calls.submit(use, proxy.url, "set_run_tag", {"key": "k1"}, session=session, id=1, timeout=30)
        (p,) = c.wait_pending(1, identity=session)
        d = c.decide(p["id"], True, remember_minutes=2)
        approved_at = time.monotonic()
        assert d["remember_seconds"] == 120
        assert_forwarded_answer(fut.result(10), 1)
        # The same caller and tool: forwarded at once, and the console never heard of it.
        assert_forwarded_answer(use(proxy.url, "set_run_tag", {"key": "k2"}, session=session, id=2), 2)
        assert time.monotonic() - approved_at < REVOKE_WITHIN - 1, "too slow to test what the filter remembers"
        assert [x["outcome"] for x in c.records() if x["identity"] == session] == ["approved"]
        assert [t for t, _ in upstream_tools(upstream)] == ["set_run_tag", "set_run_tag"]
        remembered = [a for a in audit_lines(proxy) if a["decision"] == "approval_remembered"]
        assert [(a["gen_ai.tool.name"], a["jsonrpc.request.id"]) for a in remembered] == [("set_run_tag", "2")], \
            remembered
        assert proxy.stats("mcp_policy.decisions_total")[
            "wasmcustom.mcp_policy.decisions_total.decision.approval_remembered"] == 1
        # What the filter remembers ends after --revoke-within: the next call is asked about, and the console
        # answers at once from the approval, with another stretch for the filter.
        time.sleep(max(0.0, approved_at + REVOKE_WITHIN + 1 - time.monotonic()))
        t0 = time.monotonic()
        assert_forwarded_answer(use(proxy.url, "set_run_tag", {"key": "k3"}, session=session, id=3), 3)
        assert time.monotonic() - t0 < 2
        assert [x["outcome"] for x in c.records() if x["identity"] == session] == ["approved", "remembered"]
        (g,) = [g for g in c.state()["remembered"] if g["identity"] == session]
        assert (g["name"], g["by"], g["id"]) == ("set_run_tag", APPROVER, p["id"])
        # The console's answer carries remember_seconds: at most --revoke-within of what is left.
        status, answer = c.api("POST", "/approve", {
            "method": "tools/call", "tool": "set_run_tag", "arguments": {}, "identity": session, "jsonrpc_id": 4,
            "request_id": None, "reason": None}, auth=None)
        assert status == 200 and answer["approved"] is True and answer["by"] == APPROVER, answer
        assert answer["remember_seconds"] == REVOKE_WITHIN, answer
        # Another caller, or another tool: asked.
        f2 = calls.submit(use, proxy.url, "set_run_tag", {}, session=other, id=5, timeout=30)
        f3 = calls.submit(use, proxy.url, "create_experiment", {"name": "x"}, session=session, id=6, timeout=30)
        (p2,) = c.wait_pending(1, identity=other)
        (p3,) = c.wait_pending(1, identity=session)
        c.decide(p2["id"], False, reason="no")
        c.decide(p3["id"], False, reason="no")
        assert_not_approved(f2.result(10), 5, "set_run_tag", "approval_denied", "no")
        assert_not_approved(f3.result(10), 6, "create_experiment", "approval_denied", "no")
        # Revoked: once what the filter remembers has ended (--revoke-within), asked again.
        status, body = c.api("POST", f"/api/remembered/{g['id']}/revoke")
        assert status == 200, body
        time.sleep(REVOKE_WITHIN + 1)
        f4 = calls.submit(use, proxy.url, "set_run_tag", {}, session=session, id=7, timeout=30)
        (p4,) = c.wait_pending(1, identity=session)
        c.decide(p4["id"], True)
        assert_forwarded_answer(f4.result(10), 7)
        assert [t for t, _ in upstream_tools(upstream)] == ["set_run_tag"] * 4
    finally:
        c.stop()


def audit_lines(proxy) -> list[dict]:
    """The filter's audit lines in an Envoy's log (run with component_log_level="wasm:info")."""
    deadline = time.monotonic() + 3  # Envoy writes its log asynchronously
    while True:
        lines = [json.loads(line[line.index('{"time"'):]) for line in proxy.log_text().splitlines()
                 if "wasm log" in line and '{"time"' in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_nobody_decides_in_time_the_filter_refuses_and_the_console_lets_go(envoy, upstream, console, sid):
    """The policy waits 1.5 s, which the callout tells the console (its --timeout-ms is 20 s); the console holds
    the call a second longer, so the filter's own timeout refuses it at 1.5 s and Envoy closes the callout; the
    console sees its connection go and drops the call ("withdrawn")."""
    policy = {**POLICY, "approval": {**POLICY["approval"], "timeout_ms": 1500}}
    proxy = envoy(policy, upstream.port, clusters={"approvals": console.port})
    session = sid()
    t0 = time.monotonic()
    r = use(proxy.url, "create_experiment", {"name": "late"}, session=session, id=1, timeout=30)
    elapsed = time.monotonic() - t0
    data = assert_not_approved(r, 1, "create_experiment", "approval_unavailable")
    assert "timeout_ms" in data["reason"], data
    assert 1.4 <= elapsed < 4, elapsed
    deadline = time.monotonic() + 5
    while any(p["identity"] == session for p in console.pending()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p["identity"] == session for p in console.pending())
    (line,) = [x for x in console.records() if x["identity"] == session]
    assert line["outcome"] == "withdrawn" and line["by"] is None, line
    upstream.assert_not_forwarded()


def test_the_consoles_own_time_runs_out(envoy, upstream, tmp_path, calls, sid):
    """--timeout-ms is for callouts that do not say how long they wait: the filter's do (the policy's timeout_ms,
    here 5 s, over --timeout-ms 1000); a callout without timeout_ms is answered 504 after --timeout-ms."""
    c = Console(tmp_path / "short", "--timeout-ms", "1000").start()
    try:
        policy = {**POLICY, "approval": {**POLICY["approval"], "timeout_ms": 5000}}
        proxy = envoy(policy, upstream.port, clusters={"approvals": c.port})
        session = sid()
        fut = calls.submit(use, proxy.url, "create_experiment", {"name": "x"}, session=session, id=1, timeout=30)
        (p,) = c.wait_pending(1, identity=session)
        assert p["deadline_ms"] - p["received_ms"] == 5000
        time.sleep(1.5)
        assert not fut.done(), "the console's --timeout-ms (1 s) ended a call the filter waits 5 s for"
        c.decide(p["id"], False, reason="no")
        assert_not_approved(fut.result(10), 1, "create_experiment", "approval_denied", "no")
        # A callout that does not say (another sender): 504 after --timeout-ms.
        t0 = time.monotonic()
        status, body = c.api("POST", "/approve", {
            "method": "tools/call", "tool": "create_experiment", "arguments": {}, "identity": session,
            "jsonrpc_id": 2, "request_id": None, "reason": None}, auth=None)
        assert status == 504, body
        assert 0.9 <= time.monotonic() - t0 < 4
        assert [x["outcome"] for x in c.records()] == ["denied", "expired"]
        assert c.pending() == []
        upstream.assert_not_forwarded()
    finally:
        c.stop()


@pytest.mark.parametrize("how", ["crash", "stop"])
def test_console_restart_mid_wait_fails_closed(envoy, upstream, tmp_path, calls, sid, how):
    """The console dies (SIGKILL) or is stopped (SIGTERM) while a call waits: the filter refuses it as unavailable,
    nothing is forwarded. Started again, it shows the decisions made before and decides new calls."""
    c = Console(tmp_path / "console").start()
    try:
        proxy = envoy(POLICY, upstream.port, clusters={"approvals": c.port})
        session = sid()
        fut = calls.submit(use, proxy.url, "create_experiment", {"name": "before"}, session=session, id=1, timeout=30)
        (p,) = c.wait_pending(1)
        c.decide(p["id"], True)
        assert_forwarded_answer(fut.result(10), 1)
        fut = calls.submit(use, proxy.url, "create_experiment", {"name": "during"}, session=session, id=2, timeout=30)
        c.wait_pending(1)
        t0 = time.monotonic()
        if how == "crash":
            c.kill()
        else:
            c.stop()
        data = assert_not_approved(fut.result(10), 2, "create_experiment", "approval_unavailable")
        assert time.monotonic() - t0 < 3
        if how == "stop":
            assert "HTTP 503" in data["reason"], data  # the console answered every waiting call before exiting
        assert upstream_tools(upstream) == [("create_experiment", 1)]
        # Started again: the earlier decision is still listed; a new call waits and is decided.
        c.start()
        assert [r["outcome"] for r in c.state()["recent"]][-1] == "approved"
        assert c.pending() == []
        fut = calls.submit(use, proxy.url, "create_experiment", {"name": "after"}, session=session, id=3, timeout=30)
        (p,) = c.wait_pending(1)
        c.decide(p["id"], True)
        assert_forwarded_answer(fut.result(10), 3)
        assert upstream_tools(upstream) == [("create_experiment", 1), ("create_experiment", 3)]
    finally:
        c.stop()


def test_the_notification_webhook(envoy, upstream, tmp_path, calls, sid):
    """--notify-url: a Slack-shaped {"text": ...} POST when a call starts waiting, linking the console; no arguments."""
    hook = Webhook()
    try:
        c = Console(tmp_path / "console", "--notify-url", f"http://127.0.0.1:{hook.port}/hook",
                    "--public-url", "http://approvals.test:8002").start()
        try:
            proxy = envoy(POLICY, upstream.port, clusters={"approvals": c.port})
            session = sid()
            fut = calls.submit(use, proxy.url, "create_experiment", {"secret": "hunter2"}, session=session, id=1,
                               timeout=30)
            (asked,) = hook.wait_for(1)
            assert (asked.method, asked.path, asked.headers["content-type"]) == ("POST", "/hook", "application/json")
            msg = asked.json()
            assert set(msg) == {"text"}, msg
            text = msg["text"]
            assert "create_experiment" in text and session in text and RULE_REASON in text, text
            assert "<http://approvals.test:8002|open the approvals console>" in text, text
            assert "hunter2" not in text
            (p,) = c.wait_pending(1)
            c.decide(p["id"], False, reason="no")
            assert_not_approved(fut.result(10), 1, "create_experiment", "approval_denied", "no")
            assert len(hook.snapshot()) == 1
        finally:
            c.stop()
    finally:
        hook.close()


CALLERS_POLICY = {
    "version": "1",
    "default": "deny",
    "approval": {"cluster": "approvals", "timeout_ms": TIMEOUT_MS},
    "callers": JWT_CALLERS,
    "tools": {"get_*": {}, "set_run_tag": {"action": "require_approval", "reason": "Tagging needs a human"}},
    "profiles": [{"name": "ml-admins", "match": {"groups": ["ml-admins"]}, "tools": {"search_*": {}}}],
}


def test_a_verified_callers_approval_for_n_minutes_holds_across_its_sessions_and_for_it_alone(
        envoy, mlflow_mcp, tmp_path, calls):
    """jwt_authn verifies alice's and bob's tokens; the policy has `callers`. The console shows who asks (subject,
    groups, profile; the MCP session as secondary). "Approve for 2 minutes" for alice holds for alice in NEW MCP
    sessions (the official MCP client opens one per call here): first from the filter's memory (jwt:alice), then,
    past --revoke-within, from the console's (its grant is alice's, not her first session's). Bob's call still
    waits for a person, and so does an anonymous call whose session id spells alice's key."""
    c = Console(tmp_path / "console", "--revoke-within", str(REVOKE_WITHIN)).start()
    try:
        idp = Issuer()
        cfg = behind_jwt_authn(render_bootstrap(CALLERS_POLICY, mlflow_mcp.port, clusters={"approvals": c.port}),
                               idp)
        proxy = envoy(None, 0, bootstrap=cfg, component_log_level="wasm:info")
        alice, bob = idp.token("alice", groups=["ml-admins", "readers"]), idp.token("bob", groups=["readers"])
        run_id = mlflow_mcp.ids["runs"]["churn-model/baseline"]
        tag = lambda value: {"run_id": run_id, "key": "grant_" + value, "value": value}  # noqa: E731

        fut = calls.submit(call_tool, proxy.url, alice, "set_run_tag", tag("alice1"))
        (p,) = c.wait_pending(1, name="set_run_tag", timeout=30)
        assert p["caller"] == {"subject": "alice", "groups": ["ml-admins", "readers"], "principal": None,
                               "profile": "ml-admins"}, p
        assert p["grantee"] == {"caller": "jwt:alice"}, p
        first_session = p["identity"]
        assert first_session and first_session != "jwt:alice", p
        assert p["rule_reason"] == "Tagging needs a human"
        d = c.decide(p["id"], True, remember_minutes=2)
        approved_at = time.monotonic()
        assert d["caller"]["subject"] == "alice" and d["remember_seconds"] == 120, d
        r = fut.result(30)
        assert not r.isError, r

        # Alice again, in a new MCP session: forwarded without a person (normally the filter's memory; on a slow
        # machine, past --revoke-within, the console's at once).
        r = call_tool(proxy.url, alice, "set_run_tag", tag("alice2"))
        assert not r.isError, r
        # Past anything the filter remembers (--revoke-within after the last answer), in yet another session: the
        # console answers at once from alice's grant.
        time.sleep(REVOKE_WITHIN + 1)
        r = call_tool(proxy.url, alice, "set_run_tag", tag("alice3"))
        assert not r.isError, r
        assert c.pending() == []
        recorded = [(x["outcome"], x["caller"]["subject"], x["identity"]) for x in c.records()]
        assert recorded[0] == ("approved", "alice", first_session), recorded
        assert [o for o, *_ in recorded[1:]] in (["remembered"], ["remembered", "remembered"]), recorded
        assert all(who == "alice" and session != first_session for _, who, session in recorded[1:]), recorded
        assert time.monotonic() - approved_at < 120, "within the 2 minutes"
        tags = mlflow_mcp.client().get_run(run_id).data.tags
        assert [tags.get("grant_" + v) for v in ("alice1", "alice2", "alice3")] == ["alice1", "alice2", "alice3"]
        audit = [a for a in audit_lines(proxy) if a["tool"] == "set_run_tag"]
        assert all(a["subject"] == "alice" for a in audit), audit
        assert "approval_remembered" in [a["decision"] for a in audit], audit

        # Bob: asked, with his own caller; no profile.
        fut = calls.submit(call_tool, proxy.url, bob, "set_run_tag", tag("bob"))
        (p,) = c.wait_pending(1, name="set_run_tag", timeout=30)
        assert (p["caller"]["subject"], p["caller"]["profile"], p["grantee"]) == ("bob", None, {"caller": "jwt:bob"})
        time.sleep(0.3)
        assert not fut.done(), "bob's call waits for a person"
        c.decide(p["id"], False, reason="not bob")
        err = fut.result(30)
        assert isinstance(err, McpError) and err.error.data["decision"] == "approval_denied", err
        # Anonymous, with a session id that spells alice's key: a session id is no caller. Asked too.
        fut = calls.submit(use, proxy.url, "set_run_tag", tag("forged"), session="jwt:alice", id=9, timeout=30)
        (p,) = c.wait_pending(1, name="set_run_tag")
        assert (p["identity"], p["grantee"]) == ("jwt:alice", {"identity": "jwt:alice"}), p
        assert p["caller"] == {"subject": None, "groups": [], "principal": None, "profile": None}, p
        c.decide(p["id"], False, reason="no")
        assert_not_approved(fut.result(30), 9, "set_run_tag", "approval_denied", "no")
        tags = mlflow_mcp.client().get_run(run_id).data.tags
        assert "grant_bob" not in tags and "grant_forged" not in tags
        # The log says who was refused.
        assert [(x["outcome"], x["caller"]["subject"]) for x in c.records()][-2:] == [("denied", "bob"),
                                                                                       ("denied", None)]
    finally:
        c.stop()


def test_the_api_needs_a_login(console):
    for auth in [None, (APPROVER, "wrong"), ("nobody", PASSWORD)]:
        status, body = console.api("GET", "/api/pending", auth=auth)
        assert status == 401, (auth, body)
        status, body = console.api("POST", "/api/pending/x", {"approve": True}, auth=auth)
        assert status == 401, (auth, body)
    # A script may not be driven from another site's page either.
    status, body = console.api("POST", "/api/pending/x", {"approve": True}, headers={"Origin": "http://evil.test"})
    assert status == 403, body
    status, body = console.api("GET", "/healthz", auth=None)
    assert (status, body) == (200, {"ok": True})


def test_the_official_mcp_client_waits_for_the_approval(shared_envoy, mlflow_mcp, console, calls):
    """An agent on the MCP Python SDK calls set_run_tag on the real MLflow MCP server through Envoy: the call waits
    in the console, an approver approves it, the tag is set."""
    policy = {**POLICY, "tools": {**POLICY["tools"], "search_*": {}}}
    proxy = shared_envoy(policy, mlflow_mcp.port, clusters={"approvals": console.port})
    run_id = mlflow_mcp.ids["runs"]["churn-model/baseline"]

    async def agent():
        async with streamablehttp_client(proxy.url, timeout=30, sse_read_timeout=60) as (read, write, session_id):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("set_run_tag", {"run_id": run_id, "key": "approved_in",
                                                                 "value": "console"})
                return session_id(), result

    fut = calls.submit(asyncio.run, agent())
    (p,) = console.wait_pending(1, name="set_run_tag", timeout=30)
    assert json.loads(p["arguments"]) == {"run_id": run_id, "key": "approved_in", "value": "console"}
    console.decide(p["id"], True)
    session_id, result = fut.result(30)
    assert not result.isError, result
    assert p["identity"] == session_id
    assert mlflow_mcp.client().get_run(run_id).data.tags["approved_in"] == "console"


def test_the_example_bootstrap_with_the_console(envoy, upstream, tmp_path, calls):
    """envoy/examples/approval.yaml (as shipped but for ports) with the console started as its header says."""
    from test_approval import example_bootstrap

    c = Console(tmp_path / "console").start()
    try:
        proxy = envoy(None, 0, bootstrap=example_bootstrap(upstream.port, c.port))
        fut = calls.submit(use, proxy.url, "transition_model_version_stage", {"name": "m", "stage": "Production"},
                           session="agent-1", id=1, timeout=30)
        (p,) = c.wait_pending(1)
        assert (p["name"], p["identity"], p["rule_reason"]) == (
            "transition_model_version_stage", "agent-1", "Stage changes need a human")
        assert p["deadline_ms"] - p["received_ms"] == 300_000
        c.decide(p["id"], True)
        assert_forwarded_answer(fut.result(10), 1)
        assert upstream_tools(upstream) == [("transition_model_version_stage", 1)]
    finally:
        c.stop()
