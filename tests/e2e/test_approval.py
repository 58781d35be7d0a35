"""Require approval (issue 5) through a real Envoy: the filter asks an approval service over an Envoy cluster and
forwards a call only on HTTP 200 {"approved": true}; everything else is refused with -31003, failing closed.

The approval service is the test suite's own webhook (approvals.py), whose every answer a test decides: approve,
deny with a reason, answer late, 500, garbage; plus a cluster on a closed port and a cluster Envoy does not have.
One test runs the example service (examples/approval_service.py) with the example policy
(envoy/examples/approval.yaml).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import conftest
from approvals import Webhook, deny
from conftest import REPO, free_port, stop_process, wait_for_port
from support import DENIED, Reply, assert_rpc_error, call, encode, post, same_id, send

NOT_APPROVED = -31003
RATE_LIMITED = -31002
HOUR = 3600
EXAMPLE_SERVICE = REPO / "examples" / "approval_service.py"
EXAMPLE_BOOTSTRAP = REPO / "envoy" / "examples" / "approval.yaml"

CREATE_REASON = "Creating experiments needs a human"
APPROVAL = {"cluster": "approvals", "authority": "approvals.test", "path": "/v1/approve", "timeout_ms": 5000,
            "headers": {"authorization": "Bearer e2e-token", "x-tenant": "e2e"}}
POLICY = {
    "version": "1",
    "default": "deny",
    "approval": APPROVAL,
    "tools": {
        "get_*": {},
        "create_experiment": {"action": "require_approval", "reason": CREATE_REASON},
        "transition_model_version_stage": {"action": "require_approval"},
        "register_model": {"action": "require_approval", "rate_limit": "1/hour"},
        "update_model_version": {"action": "require_approval", "rate_limit": "1/hour"},
        "copy_model_version": {"action": "require_approval", "rate_limit": "1/hour"},
        "set_model_alias": {"action": "require_approval", "reason": "Only staging aliases, with a human's approval",
                            "conditions": [{"path": "args.alias", "op": "eq", "value": "staging"}]},
        "delete_*": {"action": "deny", "reason": "no deletes"},
    },
}


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def webhook():
    w = Webhook()
    yield w
    w.close()


@pytest.fixture
def hook(webhook):
    """The module's approval webhook, approving and emptied for this test (and released after it)."""
    webhook.reset()
    yield webhook
    webhook.reset()


@pytest.fixture
def proxy(shared_envoy, upstream, hook):
    """Envoy with POLICY in front of the (emptied) recording upstream; cluster approvals -> the webhook."""
    return shared_envoy(POLICY, upstream.port, clusters={"approvals": hook.port})


@pytest.fixture
def sid(request):
    return lambda name="s": f"{request.node.name}-{name}"


# ------------------------------------------------------------------------------------------------ helpers

def use(url: str, tool: str, args: dict | None = None, *, session: str | None = None, id=1,
        headers: dict | None = None, timeout: float = 15.0) -> Reply:
    h = {"Mcp-Session-Id": session} if session else {}
    h.update(headers or {})
    return post(url, call(tool, args, id=id), headers=h, timeout=timeout)


def assert_forwarded_answer(r: Reply, id=1) -> None:
    assert r.status == 200 and r.json().get("result", {}).get("upstream") == "recorder", r
    assert same_id(r.json()["id"], id), r


def assert_not_approved_error(msg: dict, tool: str, decision: str, reason: str | None = None) -> dict:
    err = msg["error"]
    assert err["code"] == NOT_APPROVED, msg
    data = err.get("data")
    assert isinstance(data, dict) and set(data) == {"tool", "decision", "reason"}, msg
    assert data["tool"] == tool and data["decision"] == decision, msg
    assert isinstance(data["reason"], str) and data["reason"], msg
    if reason is not None:
        assert data["reason"] == reason, msg
    assert tool in err["message"] and data["reason"] in err["message"], msg
    # The message tells the agent whether a human said no or the service could not be asked.
    if decision == "approval_denied":
        assert "said no" in err["message"], msg
    else:
        assert "could not be reached" in err["message"] and "said no" not in err["message"], msg
    return data


def assert_not_approved(r: Reply, id, tool: str, decision: str, reason: str | None = None) -> dict:
    msg = assert_rpc_error(r, 200, NOT_APPROVED, id)
    assert r.headers.get("x-mcp-policy") == "rejected", r
    return assert_not_approved_error(msg, tool, decision, reason)


def window_room(window: int, need: float) -> None:
    left = window - time.time() % window
    if left < need:
        time.sleep(left + 0.05)


def upstream_tools(upstream) -> list[tuple[str, object]]:
    """(tool, id) of every tools/call the upstream received, batches flattened."""
    out = []
    for body in upstream.bodies():
        msg = json.loads(body)
        for m in msg if isinstance(msg, list) else [msg]:
            if m.get("method") == "tools/call":
                out.append((m["params"]["name"], m.get("id")))
    return out


# ------------------------------------------------------------------------------------------------ decisions

def test_approved_call_is_forwarded_unchanged(proxy, upstream, hook, sid):
    body = encode(call("create_experiment", {"name": "exp-1"}, id=5))
    r = send(proxy.url, body, headers={"Mcp-Session-Id": sid()})
    assert_forwarded_answer(r, 5)
    upstream.assert_forwarded(body)
    assert len(hook.snapshot()) == 1


def test_allowed_and_denied_calls_never_ask(proxy, upstream, hook):
    assert_forwarded_answer(use(proxy.url, "get_run", {"run_id": "r"}))
    r = use(proxy.url, "delete_run", {"run_id": "r"}, id=2)
    assert assert_rpc_error(r, 200, DENIED, 2)["error"]["data"]["reason"] == "no deletes"
    assert hook.snapshot() == []


def test_callout_body_and_headers(proxy, upstream, hook, sid):
    """POST to approval.path with :authority and the configured headers; the body carries tool, arguments (as
    the agent wrote them, byte for byte), identity, jsonrpc_id, request_id (x-request-id), the rule's reason and
    how long the filter waits (the policy's timeout_ms)."""
    args = b'{"name": "exp-1",  "n": 1.50, "tags": {"k": "v"}, "big": 12345678901234567890}'
    body = (b'{"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{"name":"create_experiment",'
            b'"arguments":' + args + b'}}')
    session = sid()
    r = send(proxy.url, body, headers={"Mcp-Session-Id": session, "x-request-id": "e2e-req-7"})
    assert_forwarded_answer(r, "call-7")
    (asked,) = hook.snapshot()
    assert (asked.method, asked.path) == ("POST", "/v1/approve")
    assert asked.headers["host"] == "approvals.test"
    assert asked.headers["authorization"] == "Bearer e2e-token" and asked.headers["x-tenant"] == "e2e"
    assert asked.headers["content-type"] == "application/json"
    assert int(asked.headers["content-length"]) == len(asked.body)
    (forwarded,) = upstream.snapshot()
    want = {"method": "tools/call", "tool": "create_experiment", "arguments": json.loads(args),
            "identity": session, "jsonrpc_id": "call-7", "request_id": forwarded.headers["x-request-id"],
            "reason": CREATE_REASON, "timeout_ms": APPROVAL["timeout_ms"]}
    assert asked.json() == want
    assert b'"arguments":' + args in asked.body, asked.body
    assert asked.json()["request_id"], "x-request-id is always set (by the client or by Envoy)"

    # No session header: the identity is the client address; a numeric id; a rule without a reason; no
    # arguments at all.
    hook.reset()
    upstream.clear()
    no_args = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "transition_model_version_stage"}}
    assert_forwarded_answer(post(proxy.url, no_args), 8)
    (asked,) = hook.snapshot()
    (forwarded,) = upstream.snapshot()
    assert asked.json() == {"method": "tools/call", "tool": "transition_model_version_stage", "arguments": {},
                            "identity": "127.0.0.1", "jsonrpc_id": 8,
                            "request_id": forwarded.headers["x-request-id"], "reason": None, "timeout_ms": 5000}


@pytest.mark.parametrize("reason,want", [("Not on a Friday", "Not on a Friday"), (None, "the approver declined")],
                         ids=["with_reason", "without_reason"])
def test_denied_with_reason(proxy, upstream, hook, reason, want):
    hook.decide = deny(reason)
    r = use(proxy.url, "create_experiment", {"name": "x"}, id="d-1")
    assert_not_approved(r, "d-1", "create_experiment", "approval_denied", want)
    upstream.assert_not_forwarded()
    assert len(hook.snapshot()) == 1


@pytest.mark.parametrize("status,payload,fragment", [
    (500, {"approved": True}, "HTTP 500"),
    (403, {"approved": True}, "HTTP 403"),
    (201, {"approved": True}, "HTTP 201"),
    (200, b"yes", "not valid JSON"),
    (200, b"", "not valid JSON"),
    (200, b'{"approved": true', "not valid JSON"),
    (200, b'{"approved": false, "approved": true}', "not valid JSON"),
    (200, {"approved": "true"}, "no boolean"),
    (200, {"approved": 1}, "no boolean"),
    (200, {}, "no boolean"),
    (200, [True], "not a JSON object"),
], ids=["500", "403", "201", "garbage", "empty", "truncated", "duplicate_key", "string_true", "one", "no_field",
        "array"])
def test_anything_but_a_decision_fails_closed(proxy, upstream, hook, status, payload, fragment):
    hook.decide = lambda _: (status, payload)
    r = use(proxy.url, "create_experiment", {"name": "x"}, id=3)
    data = assert_not_approved(r, 3, "create_experiment", "approval_unavailable")
    assert fragment in data["reason"], data
    upstream.assert_not_forwarded()


def test_slow_service_beyond_timeout(envoy, upstream, hook):
    """timeout_ms 300, the service answers (yes) after 1.5 s: refused at ~300 ms, and the late yes changes nothing."""
    policy = {**POLICY, "approval": {**APPROVAL, "timeout_ms": 300}}
    proxy = envoy(policy, upstream.port, clusters={"approvals": hook.port})
    answered = threading.Event()

    def late(_):
        time.sleep(1.5)
        answered.set()
        return 200, {"approved": True}

    hook.decide = late
    t0 = time.monotonic()
    r = use(proxy.url, "create_experiment", {"name": "slow"}, id=4)
    elapsed = time.monotonic() - t0
    data = assert_not_approved(r, 4, "create_experiment", "approval_unavailable")
    assert "timeout_ms" in data["reason"], data
    assert 0.28 <= elapsed < 1.3, f"answered after {elapsed:.3f}s, want ~0.3s (the service answers at 1.5s)"
    assert answered.wait(5)
    upstream.assert_not_forwarded(grace=0.2)  # the late yes reached Envoy meanwhile
    # Envoy and the filter are fine afterwards.
    hook.decide = lambda _: (200, {"approved": True})
    assert_forwarded_answer(use(proxy.url, "create_experiment", {"name": "fast"}))


def test_service_not_listening(envoy, upstream):
    closed = free_port()  # bound and released: nothing listens there
    proxy = envoy(POLICY, upstream.port, clusters={"approvals": closed})
    t0 = time.monotonic()
    r = use(proxy.url, "create_experiment", {"name": "x"}, id=6)
    data = assert_not_approved(r, 6, "create_experiment", "approval_unavailable")
    assert "could not be reached" in data["reason"], data
    assert time.monotonic() - t0 < 3
    upstream.assert_not_forwarded()


def test_unknown_cluster_is_named(envoy, upstream):
    policy = {**POLICY, "approval": {**APPROVAL, "cluster": "no_such_cluster"}}
    proxy = envoy(policy, upstream.port)  # Envoy has no such cluster: it starts, the callout is refused
    r = use(proxy.url, "create_experiment", {"name": "x"}, id=7)
    data = assert_not_approved(r, 7, "create_experiment", "approval_unavailable")
    assert "'no_such_cluster'" in data["reason"], data
    upstream.assert_not_forwarded()
    assert_forwarded_answer(use(proxy.url, "get_run"))


# ------------------------------------------------------------------------------------------------ concurrency

def test_20_waiting_calls_do_not_hold_up_other_requests(proxy, upstream, hook, sid):
    """One Envoy worker. 20 calls wait for approval (the service holds them); meanwhile 10 unrelated calls,
    from the same sessions and others, each complete at once. Then the 20 are approved and forwarded."""
    hook.hold()
    waiting = ThreadPoolExecutor(20)
    futures = [waiting.submit(use, proxy.url, "create_experiment", {"name": f"e{i}"}, session=sid(f"s{i % 4}"),
                              id=i) for i in range(20)]
    try:
        hook.wait_for(20)
        times = []
        for j in range(10):
            t0 = time.monotonic()
            assert_forwarded_answer(use(proxy.url, "get_run", {"run_id": f"r{j}"}, session=sid(f"s{j % 5}"),
                                        id=100 + j), 100 + j)
            times.append(time.monotonic() - t0)
        assert not any(f.done() for f in futures), "a call was answered before its approval"
        assert max(times) < 1.0, times
        assert sorted(upstream_tools(upstream)) == [("get_run", 100 + j) for j in range(10)]
        released = time.monotonic()
    finally:
        hook.release()
        waiting.shutdown(wait=True)
    for i, f in enumerate(futures):
        assert_forwarded_answer(f.result(), i)
    assert sorted(i for t, i in upstream_tools(upstream) if t == "create_experiment") == list(range(20))
    assert len(hook.snapshot()) == 20
    assert all(a.at < released for a in hook.snapshot())


def open_h2_call(url: str, msg: dict, headers: dict[str, str]) -> socket.socket:
    """Sends one whole request over HTTP/2 (h2c, prior knowledge) and returns the socket without reading."""
    import h2.config
    import h2.connection

    u = urllib.parse.urlsplit(url)
    body = encode(msg)
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":path", u.path), (":scheme", "http"),
                            (":authority", f"{u.hostname}:{u.port}"), ("content-type", "application/json"),
                            ("content-length", str(len(body)))] + [(k.lower(), v) for k, v in headers.items()])
    conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


def test_client_gone_while_waiting_gives_the_unit_back(proxy, upstream, hook, sid):
    """update_model_version: approval + 1/hour. An HTTP/2 client goes away while its call waits: the call is never
    forwarded (even though the service says yes afterwards) and its unit is given back.

    (HTTP/2: Envoy sees the connection close at once. An HTTP/1.1 client's close is not seen while its request
    waits — Envoy stops reading a connection once it has a whole request — so such a call is still forwarded
    when approved, and counted.)"""
    window_room(HOUR, 20)
    s = sid()
    hook.hold()
    sock = open_h2_call(proxy.url, call("update_model_version", {}, id=1), {"mcp-session-id": s})
    try:
        hook.wait_for(1)
    finally:
        sock.close()
    deadline = time.monotonic() + 5
    while proxy.stats("http.mcp.downstream_cx_active").get("http.mcp.downstream_cx_active") and \
            time.monotonic() < deadline:
        time.sleep(0.02)  # until Envoy has seen the close
    hook.release()
    time.sleep(0.2)  # the service's late yes reaches Envoy
    upstream.assert_not_forwarded()
    # The unit is back: the next call is asked (not rate limited) and forwarded.
    assert_forwarded_answer(use(proxy.url, "update_model_version", session=s, id=2), 2)
    assert len(hook.snapshot()) == 2
    assert upstream_tools(upstream) == [("update_model_version", 2)]


# ------------------------------------------------------------------------------------------------ with rate limits

def test_not_granted_gives_the_rate_limit_unit_back(proxy, upstream, hook, sid):
    """register_model: approval + 1/hour. A denied or unavailable approval gives the unit back, so the next call
    is asked again rather than rate limited; once one is granted, the next is rate limited without asking."""
    window_room(HOUR, 20)
    s = sid()
    hook.decide = deny("no")
    assert_not_approved(use(proxy.url, "register_model", session=s, id=1), 1, "register_model", "approval_denied", "no")
    hook.decide = lambda _: (500, b"oops")
    assert_not_approved(use(proxy.url, "register_model", session=s, id=2), 2, "register_model", "approval_unavailable")
    hook.decide = lambda _: (200, {"approved": True})
    assert_forwarded_answer(use(proxy.url, "register_model", session=s, id=3), 3)
    assert len(hook.snapshot()) == 3
    r = use(proxy.url, "register_model", session=s, id=4)
    msg = assert_rpc_error(r, 200, RATE_LIMITED, 4)
    assert msg["error"]["data"]["decision"] == "rate_limited", msg
    assert len(hook.snapshot()) == 3, "a call that is rate limited anyway must not bother the approver"
    assert upstream_tools(upstream) == [("register_model", 3)]


def test_granted_call_failing_upstream_with_5xx_is_refunded(proxy, upstream, hook, sid, monkeypatch):
    """copy_model_version: approval + 1/hour. Approved, forwarded, answered 500 by the upstream: the unit comes
    back, so the next call is asked and forwarded; after that one (200), the next is rate limited."""
    window_room(HOUR, 20)
    s = sid()
    first = []

    def answer(rec):
        if not first:
            first.append(rec)
            return 500, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "upstream broke"}}
        return conftest.Recorder.answer(rec)

    monkeypatch.setattr(upstream, "answer", answer)
    assert use(proxy.url, "copy_model_version", session=s, id=1).status == 500
    assert_forwarded_answer(use(proxy.url, "copy_model_version", session=s, id=2), 2)
    r = use(proxy.url, "copy_model_version", session=s, id=3)
    assert assert_rpc_error(r, 200, RATE_LIMITED, 3)["error"]["data"]["decision"] == "rate_limited"
    assert len(hook.snapshot()) == 2
    assert upstream_tools(upstream) == [("copy_model_version", 1), ("copy_model_version", 2)]


def test_conditions_are_checked_before_asking(proxy, upstream, hook):
    r = use(proxy.url, "set_model_alias", {"alias": "production"}, id=1)
    msg = assert_rpc_error(r, 200, DENIED, 1)
    assert msg["error"]["data"]["reason"] == "Only staging aliases, with a human's approval", msg
    assert hook.snapshot() == []
    assert_forwarded_answer(use(proxy.url, "set_model_alias", {"alias": "staging"}, id=2), 2)
    assert [a.json()["tool"] for a in hook.snapshot()] == ["set_model_alias"]


# ------------------------------------------------------------------------------------------------ batches

def batch() -> list:
    return [
        call("create_experiment", {"name": "b"}, id=1),
        call("get_run", {"run_id": "r"}, id=2),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        call("transition_model_version_stage", {"stage": "Production"}, id="three"),
    ]


def test_batch_asks_per_element_and_forwards_when_all_granted(proxy, upstream, hook):
    body = encode(batch())
    r = send(proxy.url, body)
    assert r.status == 200 and [m["id"] for m in r.json()] == [1, 2, "three"], r
    upstream.assert_forwarded(body)
    asked = sorted((a.json()["tool"], json.dumps(a.json()["jsonrpc_id"])) for a in hook.snapshot())
    assert asked == [("create_experiment", "1"), ("transition_model_version_stage", '"three"')]


def test_batch_with_one_element_not_granted_forwards_nothing(proxy, upstream, hook):
    def decide(a):
        if a.json()["tool"] == "transition_model_version_stage":
            return 200, {"approved": False, "reason": "not to Production"}
        return 200, {"approved": True}

    hook.decide = decide
    r = post(proxy.url, batch())
    assert r.status == 200, r
    replies = r.json()
    assert [m["id"] for m in replies] == [1, 2, "three"], r
    assert_not_approved_error(replies[2], "transition_model_version_stage", "approval_denied", "not to Production")
    for m in replies[:2]:
        assert m["error"]["code"] == DENIED and "batch" in m["error"]["data"]["reason"], m
    upstream.assert_not_forwarded()
    assert len(hook.snapshot()) == 2


# ------------------------------------------------------------------------------------------------ headers not held

@pytest.fixture
def streamed(shared_envoy, upstream, hook):
    """POLICY with hold_headers false, as under Istio's WasmPlugin: the headers go upstream at once and only the
    body waits for the approval."""
    upstream.strict = False
    return shared_envoy({**POLICY, "hold_headers": False}, upstream.port, hold_headers=False,
                        clusters={"approvals": hook.port})


def test_streamed_headers_approved_body_follows(streamed, upstream, hook):
    body = encode(call("create_experiment", {"name": "s"}, id=1))
    r = send(streamed.url, body)
    assert_forwarded_answer(r, 1)
    upstream.assert_forwarded(body)
    assert len(hook.snapshot()) == 1


@pytest.mark.parametrize("answer", [(200, {"approved": False, "reason": "no"}), (500, b"")], ids=["denied", "500"])
def test_streamed_headers_not_granted_body_never_sent(streamed, upstream, hook, answer):
    hook.decide = lambda _: answer
    r = use(streamed.url, "create_experiment", {"name": "s"}, id=2)
    assert_not_approved(r, 2, "create_experiment", "approval_denied" if answer[0] == 200 else "approval_unavailable")
    upstream.assert_not_forwarded(grace=0.2)


# ------------------------------------------------------------------------------------------------ the example

def example_bootstrap(upstream_port: int, approvals_port: int) -> dict:
    """envoy/examples/approval.yaml as shipped, with test ports and the built wasm: mlflow_mcp -> the recording
    upstream, approvals -> the example service."""
    return conftest.shipped_bootstrap(
        EXAMPLE_BOOTSTRAP, {"mlflow_mcp": (8001, upstream_port), "approvals": (8002, approvals_port)})


@pytest.fixture
def example_service(tmp_path):
    """examples/approval_service.py on a free port, allowing set_run_tag and set_experiment_*; its log file."""
    port = free_port()
    log = tmp_path / "approval_service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE_SERVICE), "--host", "127.0.0.1", "--port", str(port),
                                 "--allow", "set_run_tag", "--allow", "set_experiment_*"],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=conftest._die_with_parent)
    try:
        wait_for_port(port, proc, what="example approval service", log=log)
        yield proc, port, log
    finally:
        stop_process(proc)


def test_example_service_with_the_example_bootstrap(envoy, upstream, example_service):
    """envoy/examples/approval.yaml (as shipped but for ports) with examples/approval_service.py."""
    proc, port, log = example_service
    proxy = envoy(None, 0, bootstrap=example_bootstrap(upstream.port, port))
    s = {"Mcp-Session-Id": "agent-1"}

    assert_forwarded_answer(use(proxy.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, headers=s, id=1), 1)
    r = use(proxy.url, "transition_model_version_stage", {"name": "m", "version": "1", "stage": "Production"},
            headers=s, id=2)
    assert_not_approved(r, 2, "transition_model_version_stage", "approval_denied",
                        "'transition_model_version_stage' is not on the approval service's allow list")
    assert_forwarded_answer(use(proxy.url, "get_run", {"run_id": "r"}, headers=s, id=3), 3)
    assert assert_rpc_error(use(proxy.url, "delete_run", headers=s, id=4), 200, DENIED, 4)
    assert upstream_tools(upstream) == [("set_run_tag", 1), ("get_run", 3)]

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [(x["tool"], x["identity"], x["jsonrpc_id"], x["decision"]) for x in lines] == [
        ("set_run_tag", "agent-1", 1, "approved"), ("transition_model_version_stage", "agent-1", 2, "denied")]
    assert all("arguments" not in x for x in lines), "arguments are logged only with --log-arguments"

    # The service stops: calls that need approval fail closed; the others still pass.
    stop_process(proc)
    r = use(proxy.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, headers=s, id=5)
    assert_not_approved(r, 5, "set_run_tag", "approval_unavailable")
    assert_forwarded_answer(use(proxy.url, "get_run", {"run_id": "r"}, headers=s, id=6), 6)


def test_example_service_answers_errors_not_decisions_to_bad_requests(tmp_path):
    """What is not a proper approval request gets an HTTP error (so the filter fails closed), never a yes."""
    port = free_port()
    log = tmp_path / "svc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE_SERVICE), "--port", str(port), "--allow", "*",
                                 "--token", "t0k", "--path", "/v1/approve"],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=conftest._die_with_parent)
    try:
        wait_for_port(port, proc, what="example approval service", log=log)
        base = f"http://127.0.0.1:{port}"
        good = {"method": "tools/call", "tool": "x", "arguments": {}, "identity": "i", "jsonrpc_id": 1,
                "request_id": "r", "reason": None}

        def ask(body: bytes, path: str = "/v1/approve", token: str | None = "t0k") -> tuple[int, dict]:
            h = {"Content-Type": "application/json"}
            if token:
                h["Authorization"] = f"Bearer {token}"
            req = urllib.request.Request(base + path, data=body, headers=h, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (loopback)
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert ask(json.dumps(good).encode()) == (200, {"approved": True})
        assert ask(json.dumps(good).encode(), token=None)[0] == 401
        assert ask(json.dumps(good).encode(), token="wrong")[0] == 401
        assert ask(json.dumps(good).encode(), path="/approve")[0] == 404
        assert ask(b"not json")[0] == 400
        assert ask(json.dumps({"tool": "x"}).encode())[0] == 400
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:  # noqa: S310
            assert r.status == 200
    finally:
        stop_process(proc)
