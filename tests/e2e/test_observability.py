"""What the rest of Envoy and the operator see, through a real Envoy and the filter:

- exported x-mcp-method / x-mcp-tool headers on the upstream request (a client cannot forge them);
- labelled decision counters on /stats/prometheus (with the stats_tags of envoy/envoy.yaml);
- the access log example (envoy/examples/access-log.yaml) naming the tool;
- Envoy's local rate limit per tool (envoy/examples/local-ratelimit-per-tool.yaml);
- audit lines and audit mode (would_deny, forwarded; arguments never in clear);
- a large get_run answer streams through unchanged and unbuffered.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import pathlib
import re
import time
import urllib.request
import uuid

import pytest
import yaml
from mcp import ClientSession

from conftest import EXAMPLE_POLICY, REPO, WASM, Raw
from support import DELETE_REASON, DENIED, assert_denied, assert_rpc_error, call, encode, post, same_id, send
from test_mcp_client import assert_denial, denial, with_session

EXAMPLES = REPO / "envoy" / "examples"
WASM_INFO = "wasm:info"  # audit lines are logged at info; the harness runs Envoy at -l warning

# ------------------------------------------------------------------------------------------------- helpers


def audit_lines(e) -> list[dict]:
    """Every audit line (one JSON object per decision) in the Envoy log, in order."""
    out = []
    for line in e.log_text().splitlines():
        if "wasm log" not in line or '{"time"' not in line:
            continue
        out.append(json.loads(line[line.index('{"time"'):]))
    return out


def wait_for(fn, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def prometheus(e) -> dict[tuple[str, frozenset], float]:
    """/stats/prometheus as {(metric, {(label, value), ...}): value}."""
    with urllib.request.urlopen(e.admin + "/stats/prometheus", timeout=5) as r:  # noqa: S310 (loopback)
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    out[("#text", frozenset())] = text  # type: ignore[assignment]
    return out


def labels(**kv) -> frozenset:
    return frozenset(kv.items())


def example_bootstrap(name: str, upstream_port: int, *, access_log: pathlib.Path | None = None) -> dict:
    """envoy/examples/NAME with test ports, the built wasm, and the access log written to ``access_log``."""
    cfg = yaml.safe_load((EXAMPLES / name).read_text())
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (listener,) = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    wasm["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    (cluster,) = cfg["static_resources"]["clusters"]
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": upstream_port}
    for log in hcm.get("access_log", []):
        assert access_log is not None, f"{name} has an access log: give access_log"
        log["typed_config"]["path"] = str(access_log)
    return cfg


def example_policy(name: str) -> dict:
    cfg = yaml.safe_load((EXAMPLES / name).read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return json.loads(wasm["typed_config"]["config"]["configuration"]["value"])


FORGED = {"X-MCP-Tool": "forged-tool", "x-mcp-method": "forged/method"}


def one(upstream):
    (rec,) = upstream.snapshot()
    return rec


# ------------------------------------------------------------------------------------------ exported headers

@pytest.fixture
def held_proxy(shared_envoy, upstream):
    return shared_envoy(EXAMPLE_POLICY, upstream.port)


def test_exported_headers_replace_forged_ones(held_proxy, upstream):
    """Held headers: the upstream gets the filter's x-mcp-method / x-mcp-tool, once, never the client's."""
    r = post(held_proxy.url, call("get_run", {"run_id": "r1"}, id=1), headers=FORGED)
    assert r.status == 200, r
    rec = one(upstream)
    assert rec.header_values("x-mcp-method") == ["tools/call"], rec.header_list
    assert rec.header_values("x-mcp-tool") == ["get_run"], rec.header_list
    assert "forged" not in json.dumps(rec.header_list)

    upstream.clear()
    batch = [call("get_run", {}, id=1), call("get_experiments", {}, id=2),
             {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    r = post(held_proxy.url, batch, headers=FORGED)
    assert r.status == 200, r
    rec = one(upstream)
    assert rec.header_values("x-mcp-method") == ["tools/call,notifications/initialized"], rec.header_list
    assert rec.header_values("x-mcp-tool") == ["get_run,get_experiments"], rec.header_list

    upstream.clear()
    r = post(held_proxy.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=FORGED)
    assert r.status == 200, r
    rec = one(upstream)
    assert rec.header_values("x-mcp-method") == ["tools/list"], rec.header_list
    assert rec.header_values("x-mcp-tool") == [], rec.header_list


def test_forged_headers_removed_on_requests_without_a_body(held_proxy, upstream):
    """A GET (the SSE stream) or DELETE (end of session) is not inspected, but the client's copies still go."""
    for method in ("GET", "DELETE"):
        upstream.clear()
        r = send(held_proxy.url, None, method=method, headers=FORGED, content_type=None)
        assert r.status == 200, r
        rec = one(upstream)
        assert rec.method == method
        assert rec.header_values("x-mcp-tool") == [] and rec.header_values("x-mcp-method") == [], rec.header_list


def test_without_held_headers_the_client_copies_are_still_removed(shared_envoy, upstream):
    """Without allow_on_headers_stop_iteration the headers leave before the body is read: nothing can be
    exported, but a forged copy is removed all the same."""
    upstream.strict = False
    e = shared_envoy({**EXAMPLE_POLICY, "hold_headers": False}, upstream.port, hold_headers=False)
    r = post(e.url, call("get_run", {}, id=1), headers=FORGED)
    assert r.status == 200, r
    rec = one(upstream)
    assert rec.complete
    assert rec.header_values("x-mcp-tool") == [] and rec.header_values("x-mcp-method") == [], rec.header_list


def test_export_header_names_and_off(envoy, upstream):
    e = envoy({**EXAMPLE_POLICY, "export_headers": {"method": "x-rpc-method", "tool": "X-Rpc-Tool"}}, upstream.port)
    r = post(e.url, call("get_run", {}, id=1), headers={"x-rpc-tool": "forged", "x-rpc-method": "forged"})
    assert r.status == 200, r
    rec = one(upstream)
    assert rec.header_values("x-rpc-tool") == ["get_run"], rec.header_list
    assert rec.header_values("x-rpc-method") == ["tools/call"], rec.header_list
    assert rec.header_values("x-mcp-tool") == [] and rec.header_values("x-mcp-method") == [], rec.header_list

    upstream.clear()
    # Off: nothing is set, and the client's copies of the default names are still removed (something
    # downstream may key on them, as envoy/examples/local-ratelimit-per-tool.yaml does).
    e = envoy({**EXAMPLE_POLICY, "export_headers": False}, upstream.port)
    r = post(e.url, call("get_run", {}, id=1), headers=FORGED)
    assert r.status == 200, r
    rec = one(upstream)
    assert [k for k, _ in rec.header_list if k.startswith("x-mcp-") or k.startswith("x-rpc-")] == [], rec.header_list


# --------------------------------------------------------------------------------------------------- metrics

STATS_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "get_run": {"rate_limit": "2/minute"},
        "get_*": {},
        "delete_*": {"action": "deny", "reason": DELETE_REASON},
    },
}


def test_prometheus_shows_labelled_counters(envoy, upstream, monkeypatch):
    crafted = ('{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"get_run"},{"name":"delete_run"}]}}').encode()

    def answer(rec):
        if b"tools/list" in rec.body:
            return 200, Raw(crafted, {"Content-Type": "application/json"})
        return upstream.__class__.answer(rec)

    monkeypatch.setattr(upstream, "answer", answer)
    e = envoy(STATS_POLICY, upstream.port)
    session = {"mcp-session-id": "stats-session"}
    for i in range(3):
        r = post(e.url, call("get_run", {"run_id": "r"}, id=i), headers=session)
        assert r.status == 200, r
    assert r.json()["error"]["code"] == -31002, r  # the third one is rate limited
    assert_denied(post(e.url, call("delete_run", {}, id=4), headers=session), 4, "delete_run", DELETE_REASON)
    assert "result" in post(e.url, call("get_experiments", {}, id=5), headers=session).json()
    assert_rpc_error(send(e.url, b"{not json", headers=session), 400, -32700, None)
    r = post(e.url, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=session)
    assert json.loads(r.body)["result"]["tools"] == [{"name": "get_run"}], r

    prom = prometheus(e)
    text = prom.pop(("#text", frozenset()))
    def tool(name: str, decision: str) -> tuple[str, frozenset]:
        # gen_ai_tool_name: OpenTelemetry's gen_ai.tool.name; tool: its first name, deprecated (kept one release).
        return "mcp_policy_tool_calls_total", labels(gen_ai_tool_name=name, tool=name, decision=decision)

    want = {
        tool("get_run", "allow"): 2,
        tool("get_run", "rate_limited"): 1,
        tool("delete_run", "deny"): 1,
        tool("get_experiments", "allow"): 1,
        # tools/call x4 allowed or refused, plus tools/list (allow), plus the unparseable body (invalid)
        ("mcp_policy_decisions_total", labels(decision="allow")): 4,
        ("mcp_policy_decisions_total", labels(decision="rate_limited")): 1,
        ("mcp_policy_decisions_total", labels(decision="deny")): 1,
        ("mcp_policy_decisions_total", labels(decision="invalid")): 1,
        ("mcp_policy_tools_list_filtered_total", labels()): 1,
    }
    got = {k: v for k, v in prom.items() if k[0].startswith("mcp_policy")}
    assert got == want, text
    assert "# TYPE mcp_policy_tool_calls_total counter" in text, text


# -------------------------------------------------------------------------------------- access-log example

def _plugin(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return {k: v for k, v in wasm["typed_config"]["config"].items() if k != "configuration"}


@pytest.mark.parametrize("name", ["access-log.yaml", "local-ratelimit-per-tool.yaml"])
def test_examples_use_the_shipped_filter_settings(name):
    """The examples are envoy/envoy.yaml plus what they show: same plugin settings (held headers, fail
    closed), same upstream, a policy the shipped one's tools agree with."""
    shipped = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())
    example = yaml.safe_load((EXAMPLES / name).read_text())
    assert _plugin(example) == _plugin(shipped)
    assert example["static_resources"]["clusters"] == shipped["static_resources"]["clusters"]
    shipped_tools = EXAMPLE_POLICY["tools"]
    assert all(shipped_tools[k] == v for k, v in example_policy(name)["tools"].items())



ACCESS_LINE = re.compile(r'^\[[^\]]+\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>\S+)" (?P<status>\d+) (?P<flags>\S+) '
                         r'mcp_method=(?P<mcp_method>\S+) mcp_tool=(?P<mcp_tool>\S+) policy=(?P<policy>\S+) '
                         r'(?P<rx>\d+) (?P<tx>\d+) (?P<ms>\d+)ms "(?P<request_id>[^"]*)" "(?P<upstream>[^"]*)"$')


def test_access_log_example_names_the_tool(envoy, upstream, tmp_path):
    log = tmp_path / "access.log"
    e = envoy(None, 0, bootstrap=example_bootstrap("access-log.yaml", upstream.port, access_log=log))
    sent = [
        ("al-get", call("get_run", {"run_id": "r"}, id=1), FORGED),
        ("al-batch", [call("get_run", {}, id=1), call("get_experiments", {}, id=2)], {}),
        ("al-list", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, {}),
        ("al-denied", call("delete_run", {"run_id": "r"}, id=4), FORGED),
    ]
    for rid, msg, extra in sent:
        assert post(e.url, msg, headers={"x-request-id": rid, **extra}).status == 200

    # Envoy writes access log files in batches (every 10 s, --file-flush-interval-msec) and on exit.
    e.stop()
    got = {}
    for line in log.read_text().splitlines():
        m = ACCESS_LINE.match(line)
        assert m, f"unexpected access log line: {line!r}"
        got[m["request_id"]] = m.groupdict()
    view = {rid: (g["status"], g["mcp_method"], g["mcp_tool"], g["policy"]) for rid, g in got.items()}
    assert view == {
        "al-get": ("200", "tools/call", "get_run", "-"),
        "al-batch": ("200", "tools/call", "get_run,get_experiments", "-"),
        "al-list": ("200", "tools/list", "-", "-"),
        # Refused requests name their (real, not forged) method and tool too.
        "al-denied": ("200", "tools/call", "delete_run", "rejected"),
    }, got
    assert got["al-get"]["upstream"] == f"127.0.0.1:{upstream.port}"
    assert got["al-denied"]["upstream"] == "-"


# --------------------------------------------------------------------------------- local rate limit example

def test_local_ratelimit_example_limits_per_tool(envoy, upstream):
    name = "local-ratelimit-per-tool.yaml"
    e = envoy(None, 0, bootstrap=example_bootstrap(name, upstream.port))
    assert example_policy(name)["tools"]["get_run"] == {}  # the policy itself does not limit get_run

    def get(tool: str, i: int, headers=None):
        return post(e.url, call(tool, {"run_id": "r"}, id=i), headers=headers)

    # A client cannot spend another tool's budget by sending its header: 6 get_experiments calls claiming to be
    # get_run all pass (their own bucket), and get_run still has its 5.
    for i in range(6):
        r = get("get_experiments", i, {"x-mcp-tool": "get_run"})
        assert r.status == 200 and "x-local-rate-limit" not in r.headers, r
    for i in range(5):
        r = get("get_run", 10 + i)
        assert r.status == 200 and same_id(r.json()["id"], 10 + i), r
    # The 6th get_run in the minute is refused by Envoy, whatever header the client claims.
    for headers in (None, {"x-mcp-tool": "get_experiments"}):
        r = get("get_run", 20, headers)
        assert r.status == 429, r
        assert r.headers.get("x-local-rate-limit") == "true", r
    # Other tools and methods are not limited by get_run's bucket; neither is a denied call (the filter
    # answers it before the rate limit filter).
    assert get("get_runs", 30).status == 200
    assert get("get_experiments", 31).status == 200
    assert post(e.url, {"jsonrpc": "2.0", "id": 32, "method": "tools/list"}).status == 200
    assert_denied(get("delete_run", 33), 33, "delete_run", DELETE_REASON)
    forwarded = [json.loads(r.body) for r in upstream.snapshot()]
    assert sum(1 for m in forwarded if m.get("params", {}).get("name") == "get_run") == 5
    stats = e.stats("mcp_tool_ratelimit")
    assert stats.get("mcp_tool_ratelimit.http_local_rate_limit.rate_limited") == 2, stats


# ------------------------------------------------------------------------------------------------ audit log

SECRET = "hunter2-" + uuid.uuid4().hex


def raw_call(tool: str, args_text: str, id: int = 7) -> bytes:
    """A tools/call whose arguments are exactly ``args_text`` (so their SHA-256 is known)."""
    return ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}'
            % (id, tool, args_text)).encode()


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_audit_lines_and_audit_mode(envoy, upstream, mode):
    """enforce: delete_run is denied; audit: it is forwarded and the line says would_deny. Both: one line per
    decision with rule, reason, hashed identity, x-request-id, JSON-RPC id, the arguments' SHA-256 and never
    the arguments themselves."""
    upstream.strict = True
    e = envoy({**EXAMPLE_POLICY, "mode": mode}, upstream.port, component_log_level=WASM_INFO)
    args_text = '{"run_id": "r-1", "note": "%s"}' % SECRET
    body = raw_call("delete_run", args_text)
    session = {"mcp-session-id": "audit-session-1", "x-request-id": "audit-req-1"}
    r = send(e.url, body, headers=session)
    if mode == "enforce":
        assert_denied(r, 7, "delete_run", DELETE_REASON)
        upstream.assert_not_forwarded()
    else:
        assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", r
        upstream.assert_forwarded(body)
    upstream.clear()
    allowed = raw_call("get_run", '{"run_id":"r-2"}', id=8)
    assert send(e.url, allowed, headers={"mcp-session-id": "audit-session-2", "x-request-id": "audit-req-2"}).status == 200
    upstream.assert_forwarded(allowed)

    lines = wait_for(lambda: (ls := audit_lines(e)) and len(ls) >= 2 and ls, what="two audit lines")
    assert len(lines) == 2, lines
    first, second = lines
    # OpenTelemetry's MCP names first; the deprecated first names (method, tool, jsonrpc_id) last.
    assert list(first) == ["time", "decision", "mcp.method.name", "gen_ai.operation.name", "gen_ai.tool.name",
                           "gen_ai.prompt.name", "mcp.resource.uri", "jsonrpc.request.id", "rule", "reason",
                           "identity", "request_id", "args_sha256", "method", "tool", "jsonrpc_id"], first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"]), first
    assert {k: first[k] for k in first if k != "time"} == {
        "decision": "deny" if mode == "enforce" else "would_deny",
        "mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "delete_run",
        "gen_ai.prompt.name": None, "mcp.resource.uri": None, "jsonrpc.request.id": "7",
        "rule": "delete_*", "reason": DELETE_REASON,
        "identity": hashlib.sha256(b"audit-session-1").hexdigest()[:12],
        "request_id": "audit-req-1",
        "args_sha256": hashlib.sha256(args_text.encode()).hexdigest(),
        "method": "tools/call", "tool": "delete_run", "jsonrpc_id": 7,
    }, first
    assert {k: second[k] for k in ("decision", "gen_ai.tool.name", "rule", "reason", "request_id",
                                   "jsonrpc.request.id", "tool", "jsonrpc_id")} == {
        "decision": "allow", "gen_ai.tool.name": "get_run", "rule": "get_run", "reason": None,
        "request_id": "audit-req-2", "jsonrpc.request.id": "8", "tool": "get_run", "jsonrpc_id": 8}, second
    assert second["identity"] != first["identity"] and re.fullmatch(r"[0-9a-f]{12}", second["identity"])
    # Never the arguments in clear, nor the identity, anywhere in Envoy's log.
    log = e.log_text()
    assert SECRET not in log and "audit-session-1" not in log and '"r-1"' not in log
    stats = e.stats("wasmcustom.mcp_policy")
    label = "deny" if mode == "enforce" else "would_deny"
    assert stats.get(f"wasmcustom.mcp_policy.tool_calls_total.tool.delete_run.decision.{label}") == 1, stats
    assert stats.get(f"wasmcustom.mcp_policy.decisions_total.decision.{label}") == 1, stats


def test_audit_lines_follow_the_log_level_changed_at_run_time(envoy, upstream):
    """The filter asks Envoy for its log level at most once a second: raising the wasm logger to info through
    the admin endpoint turns audit lines on within about a second, lowering it turns them off again."""
    e = envoy(EXAMPLE_POLICY, upstream.port)  # -l warning: no audit lines

    def call(n: int) -> None:
        body = raw_call("get_run", '{"run_id":"r"}', id=n)
        assert send(e.url, body, headers={"x-request-id": f"level-{n}"}).status == 200

    def set_level(level: str) -> None:
        req = urllib.request.Request(f"{e.admin}/logging?wasm={level}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (loopback)
            assert r.status == 200

    def ids() -> set[str]:
        return {line["request_id"] for line in audit_lines(e)}

    call(1)
    set_level("info")
    time.sleep(1.1)
    call(2)
    wait_for(lambda: "level-2" in ids(), what="an audit line after the level was raised")
    set_level("warning")
    time.sleep(1.1)
    call(3)
    time.sleep(0.3)
    assert ids() == {"level-2"}, ids()


def test_audit_mode_forwards_to_mlflow_what_enforce_denies(shared_envoy, envoy, mlflow_mcp):
    """The real server, through the MCP client: set_run_tag (no rule, default deny) is refused by the example
    policy, and really runs under the same policy in audit mode."""
    run_id = mlflow_mcp.ids["runs"]["churn-model/xgboost-tuned"]
    key = "audit_probe_" + uuid.uuid4().hex[:8]
    args = {"run_id": run_id, "key": key, "value": SECRET}
    enforce = shared_envoy(EXAMPLE_POLICY, mlflow_mcp.port)
    assert_denial(denial(enforce.url, "set_run_tag", args), "set_run_tag", None)
    assert key not in mlflow_mcp.client().get_run(run_id).data.tags

    audit = envoy({**EXAMPLE_POLICY, "mode": "audit"}, mlflow_mcp.port, component_log_level=WASM_INFO)

    async def go(s: ClientSession):
        return await s.call_tool("set_run_tag", args)

    result = with_session(audit.url, go)
    assert not result.isError, result
    assert mlflow_mcp.client().get_run(run_id).data.tags.get(key) == SECRET
    calls = [l for l in audit_lines(audit) if l["method"] == "tools/call"]
    assert [(l["decision"], l["tool"], l["rule"]) for l in calls] == [("would_deny", "set_run_tag", None)], calls
    assert re.fullmatch(r"[0-9a-f]{12}", calls[0]["identity"]) and len(calls[0]["args_sha256"]) == 64, calls
    assert SECRET not in audit.log_text()


# ------------------------------------------------------------------------------------------ large answers

def raw_session(url: str) -> dict[str, str]:
    """initialize + notifications/initialized over raw HTTP; the headers to send with the session's calls."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}
    r = post(url, init)
    assert r.status == 200, r
    headers = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    r = post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert r.status == 202, r
    return headers


SMALL_BUFFER = 64 * 1024


@pytest.fixture(params=["sse", "json"])
def server(request):
    return request.getfixturevalue("mlflow_mcp" if request.param == "sse" else "mlflow_mcp_json")


def test_large_get_run_streams_through_unchanged_and_unbuffered(envoy, server):
    """A get_run answer of more than 1 MB through an Envoy whose buffers hold 64 KiB: had the filter buffered
    it, Envoy would have failed the response. It arrives byte for byte as the server sends it directly."""
    run_id = server.ids["large_run"]
    e = envoy(EXAMPLE_POLICY, server.port, buffer_limit=SMALL_BUFFER)
    body = encode(call("get_run", {"run_id": run_id}, id=42))
    direct = send(server.url, body, headers=raw_session(server.url))
    proxied = send(e.url, body, headers=raw_session(e.url))
    assert direct.status == 200 and len(direct.body) > 1_048_576, direct.status
    assert proxied.status == 200, proxied
    assert proxied.headers.get("content-type") == direct.headers.get("content-type")
    assert proxied.body == direct.body
    assert run_id.encode() in proxied.body


@pytest.mark.parametrize("held", [True, False], ids=["held", "streamed"])
def test_tools_list_over_the_buffer_limit_is_not_leaked(envoy, upstream, monkeypatch, held):
    """Control for the test above: a tools/list answer is buffered, so with 64 KiB buffers a 300 KB list
    fails — closed: Envoy answers 500 (held headers), or resets the answer after its headers (without), and
    not one tool reaches the client."""
    tools = [{"name": f"delete_thing_{i}", "description": "x" * 200} for i in range(1500)]
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).encode()
    assert len(big) > 4 * SMALL_BUFFER
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(big, {"Content-Type": "application/json"})))
    upstream.strict = held
    policy = EXAMPLE_POLICY if held else {**EXAMPLE_POLICY, "hold_headers": False}
    e = envoy(policy, upstream.port, buffer_limit=SMALL_BUFFER, hold_headers=held)
    if held:
        r = post(e.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status == 500 and b"delete_thing" not in r.body, r
    else:
        with pytest.raises(http.client.IncompleteRead) as cut:
            post(e.url, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert b"delete_thing" not in cut.value.partial
