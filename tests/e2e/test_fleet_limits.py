"""Fleet-wide rate limits (issue 19) through real Envoys (``--concurrency 2`` each) in front of the recording
upstream, counted by the tests' rate limit service (tests/e2e/ratelimit.py: ShouldRateLimit over a real Redis,
envoyproxy/ratelimit's fixed windows) — which stands in for envoyproxy/ratelimit or Limitador here.

The service's clock is the test's (``Clock``): a round is one window of the service, and the next round starts
by moving the clock a window on, so no test waits for a minute to pass or depends on where in a window it
started. Limits counted by the proxy (``"counted": "proxy"``) use Envoy's real clock: the test that mixes both
makes sure its real window has room first (``window_room``) and did not cross a boundary (``same_window``).
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

import conftest
from conftest import REPO
from support import assert_rpc_error, call, post
from test_callers import Issuer, bearer, jwt_bootstrap
from test_rate_limits import same_window, window_room

RATE_LIMITED = -31002
EXAMPLE = REPO / "envoy" / "examples" / "fleet-ratelimit.yaml"


class Clock:
    """The rate limit service's time: starts at a window boundary (of every unit), moved on by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0 - 1_800_000_000 % 86400 + 86400

    def __call__(self) -> float:
        return self.now


def policy(**service) -> dict:
    return {
        "version": "1",
        "default": "deny",
        "identity": {"headers": ["x-agent-id", "mcp-session-id"]},
        "rate_limit_service": {"cluster": "ratelimit", "timeout_ms": 5000, **service},
        "tools": {
            "get_run": {},
            "create_run": {"rate_limit": {"max": 10, "window": "minute", "scope": "global"}},
            "search_runs": {"rate_limit": "3/minute"},
            "transfer_funds": {"rate_limit": {"max": 10, "window": "minute", "cost": "args.amount",
                                              "scope": "global"}},
            "set_tag": {"rate_limit": [{"max": 4, "window": "minute", "scope": "global"},
                                       {"max": 3, "window": 60, "scope": "global", "counted": "proxy"}]},
        },
    }


@pytest.fixture
def service(rate_limit_service):
    clock = Clock()
    rate_limit_service.clock = clock
    rate_limit_service.clock_ref = clock
    return rate_limit_service


@pytest.fixture
def fleet(envoy, upstream, service):
    """``fleet(policy, n=2)``: n Envoys (--concurrency 2) sharing the rate limit service, and the upstream."""

    def start(p: dict, n: int = 2, **opts) -> list:
        return [envoy(p, upstream.port, concurrency=2, grpc_clusters={"ratelimit": service.port}, **opts)
                for _ in range(n)]

    return start


def admitted(reply) -> bool:
    """True for an answer of the upstream, False for a -31002 refusal (anything else fails the test)."""
    msg = reply.json()
    if "result" in msg:
        return True
    assert msg["error"]["code"] == RATE_LIMITED, str(reply)
    return False


def tools_called(upstream, tool: str) -> int:
    return sum(1 for r in upstream.snapshot() if json.loads(r.body).get("params", {}).get("name") == tool)


def test_exactly_n_calls_per_window_across_two_envoys_and_64_clients(fleet, upstream, service):
    envoys = fleet(policy())
    for round_ in range(3):
        upstream.clear()

        def one(i: int):
            return post(envoys[i % 2].url, call("create_run", {"name": f"r{round_}-{i}"}, id=i),
                        headers={"Mcp-Session-Id": f"s{i}"})

        with ThreadPoolExecutor(64) as pool:
            replies = list(pool.map(one, range(64)))
        got = [admitted(r) for r in replies]
        assert sum(got) == 10, f"round {round_}: {sum(got)} admitted"
        assert tools_called(upstream, "create_run") == 10, f"round {round_}"
        refused = [r.json()["error"]["data"] for r, ok in zip(replies, got) if not ok]
        assert all(d["decision"] == "rate_limited" and d["limit"] == 10 and d["window_seconds"] == 60
                   for d in refused)
        # retry_after_seconds is the service's duration_until_reset (its clock is at a window's start).
        assert {d["retry_after_seconds"] for d in refused} == {60}
        service.clock_ref.now += 60
    # What the service was asked: one descriptor per call, the global limit without a session entry.
    asked = service.requests[-1]
    assert asked["domain"] == "mcp-policy"
    (d,) = asked["descriptors"]
    assert d["entries"] == [{"key": "mcp_rule", "value": 'tools["create_run"]'},
                            {"key": "mcp_limit", "value": "0:10/minute"}]
    assert d["limit"] == {"requestsPerUnit": 10, "unit": "MINUTE"} and d["hitsAddend"] == "1"


def test_per_session_and_per_agent_scopes_count_across_the_fleet(fleet, upstream, service):
    envoys = fleet(policy())
    # Per session (the identity header: x-agent-id, else the session id), 3 a minute each, whichever Envoy.
    for headers in ({"X-Agent-Id": "agent-a"}, {"X-Agent-Id": "agent-b"}, {"Mcp-Session-Id": "session-c"}):
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: post(envoys[i % 2].url, call("search_runs", id=i), headers=headers),
                                    range(8)))
        assert sum(admitted(r) for r in replies) == 3, headers
    assert tools_called(upstream, "search_runs") == 9
    # The same agent through a new session is the same budget; the identity never reaches the service in clear.
    r = post(envoys[0].url, call("search_runs", id=9), headers={"X-Agent-Id": "agent-a", "Mcp-Session-Id": "new"})
    assert not admitted(r)
    sessions = {d["entries"][2]["value"] for req in service.requests for d in req["descriptors"]}
    assert len(sessions) == 3 and all(len(s) == 32 and "agent" not in s for s in sessions)
    # Next window: the budgets are back.
    service.clock_ref.now += 60
    assert admitted(post(envoys[1].url, call("search_runs", id=10), headers={"X-Agent-Id": "agent-a"}))


def test_cost_is_the_calls_hits_addend(fleet, upstream, service):
    envoys = fleet(policy())
    amounts = [4, 4, 4, 1]
    got = [admitted(post(envoys[i % 2].url, call("transfer_funds", {"amount": a}, id=i)))
           for i, a in enumerate(amounts)]
    # 4 + 4 fit in 10; the third is refused, and (as envoyproxy/ratelimit does) counted anyway: 12, so the 1
    # after it is refused too. README: a refused call still consumed the service's count.
    assert got == [True, True, False, False]
    hits = [req["descriptors"][0]["hitsAddend"] for req in service.requests]
    assert hits == ["4", "4", "4", "1"]
    assert [req["hitsAddend"] for req in service.requests] == [4, 4, 4, 1]
    # A cost of 0 asks nothing; a cost above the limit is refused without asking.
    before = service.calls
    assert admitted(post(envoys[0].url, call("transfer_funds", {"amount": 0}, id=5)))
    r = post(envoys[0].url, call("transfer_funds", {"amount": 11}, id=6))
    assert not admitted(r) and r.json()["error"]["data"]["limit"] == 10
    assert service.calls == before


def test_a_proxy_counted_limit_next_to_a_fleet_one(fleet, upstream, service):
    """set_tag: 4 a minute fleet-wide (the service) and 3 a minute per Envoy (``counted: proxy``, shared data).
    The proxy's limit is checked first: a call it refuses is never shown to the service; a call the service
    refuses gives back the unit the proxy had counted."""
    envoys = fleet(policy())
    window_room(60, need=20)
    t0 = time.time()
    got = [admitted(post(envoys[i % 2].url, call("set_tag", id=i))) for i in range(8)]
    assert got == [True] * 4 + [False] * 4
    assert tools_called(upstream, "set_tag") == 4
    asked = service.calls
    assert asked == 8, "every call had room in its Envoy, so each was asked"
    # A new window of the service; the proxies' windows go on. Each Envoy counted 2 (the refused calls' units
    # came back), so each has one more call, asked of the service; the next is refused by the proxy alone.
    service.clock_ref.now += 60
    got = [admitted(post(e.url, call("set_tag", id=10 + i))) for i, e in enumerate([envoys[0], envoys[0],
                                                                                     envoys[1], envoys[1]])]
    assert got == [True, False, True, False]
    assert service.calls == asked + 2, "the calls the proxy refused were not asked"
    same_window(t0, time.time(), 60)


@pytest.mark.parametrize("how", ["down", "slow", "garbage", "redis stopped", "unknown domain"])
def test_no_usable_answer_under_deny_refuses_and_forwards_nothing(fleet, upstream, service, redis_server, how):
    envoys = fleet(policy(timeout_ms=300), n=1, log_level="info")
    (e,) = envoys
    assert admitted(post(e.url, call("create_run", id=1)))
    if how == "down":
        service.stop()
    elif how == "slow":
        service.mode, service.slow_seconds = "slow", 2.0
    elif how == "garbage":
        service.mode = "garbage"
    elif how == "redis stopped":
        redis_server.stop()
    else:
        service.domains = {"some-other-domain"}
    upstream.clear()
    t0 = time.monotonic()
    r = post(e.url, call("create_run", id=2))
    took = time.monotonic() - t0
    msg = assert_rpc_error(r, 200, RATE_LIMITED, 2)
    data = msg["error"]["data"]
    assert data["decision"] == "rate_limit_unavailable" and data["tool"] == "create_run"
    want = {"down": "gRPC status 14", "slow": "gRPC status", "garbage": "not a RateLimitResponse",
            "redis stopped": "gRPC status 14", "unknown domain": "applied no limit"}[how]
    assert want in data["reason"], data
    if how == "slow":
        assert took < 1.5, f"the call waited {took:.2f}s, past timeout_ms"
    upstream.assert_not_forwarded(grace=0.2)
    # The worker keeps serving: a call without limits passes, and so do limited ones once the service is back.
    assert admitted(post(e.url, call("get_run", id=3)))
    stats = e.stats("wasmcustom.mcp_policy")
    assert stats.get("wasmcustom.mcp_policy.rate_limit_service_errors_total", 0) >= 1, stats
    assert stats.get("wasmcustom.mcp_policy.decisions_total.decision.rate_limit_unavailable", 0) >= 1, stats
    assert '"decision":"rate_limit_unavailable"' in e.log_text()
    if how == "down":
        service.start()
    elif how == "redis stopped":
        redis_server.start()
    service.mode, service.domains = "ok", None
    deadline = time.monotonic() + 10
    while not admitted(post(e.url, call("create_run", id=4))):
        assert time.monotonic() < deadline, "the service is back, yet calls are still refused"
        time.sleep(0.2)


def test_on_error_allow_forwards_uncounted_and_says_so(fleet, upstream, service):
    (e,) = fleet(policy(on_error="allow", timeout_ms=300), n=1, log_level="info")
    service.stop()
    upstream.clear()
    r = post(e.url, call("create_run", id=1))
    assert admitted(r)
    assert tools_called(upstream, "create_run") == 1
    line = next(json.loads(x[x.index("{"):]) for x in e.log_text().splitlines()
                if '"tool":"create_run"' in x and '"jsonrpc_id":1' in x)
    assert line["decision"] == "allow" and "forwarded without counting" in line["reason"], line
    stats = e.stats("wasmcustom.mcp_policy")
    assert stats.get("wasmcustom.mcp_policy.rate_limit_service_errors_total", 0) == 1, stats


def test_a_cluster_envoy_does_not_have_is_refused_without_harm(fleet, upstream, service):
    """The policy names a cluster this Envoy lacks: Envoy answers the gRPC call ParseFailure, which the SDK
    returns (no trap): the call is refused (on_error deny), and the worker goes on serving."""
    p = policy()
    p["rate_limit_service"]["cluster"] = "no_such_cluster"
    (e,) = fleet(p, n=1, log_level="info")
    for i in range(3):
        msg = assert_rpc_error(post(e.url, call("create_run", id=i)), 200, RATE_LIMITED, i)
        assert "could not be made" in msg["error"]["data"]["reason"], msg
        assert admitted(post(e.url, call("get_run", id=10 + i)))
    assert tools_called(upstream, "create_run") == 0
    assert "rate limit service call to cluster 'no_such_cluster' failed" in e.log_text()


# ------------------------------------------------------------------------------------------------ callers

def identity_hash(key: str) -> str:
    """What the filter sends as mcp_caller (and mcp_session): the first 32 hex digits of the key's SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def test_per_caller_limits_count_across_the_fleet_for_verified_callers(envoy, upstream, service):
    """The callers example's policy (envoy/examples/callers-jwt.yaml: JWTs that jwt_authn verifies; query_runs 3 a
    minute per caller, the ml-admins profile's own 30) given a rate_limit_service, through two Envoys: a verified
    caller has one budget across both Envoys and all its sessions, an ml-admin the profile's; the service is told
    the caller's key hashed (mcp_caller), never the subject."""
    idp = Issuer()
    cfg = jwt_bootstrap(upstream.port, idp)
    plugin = conftest.wasm_config(cfg)
    p = json.loads(plugin["configuration"]["value"])
    assert p["tools"]["query_runs"] == {"rate_limit": "3/minute"} and "scope" not in json.dumps(p)
    p["rate_limit_service"] = {"cluster": "ratelimit", "timeout_ms": 5000}
    plugin["configuration"]["value"] = json.dumps(p)
    conftest.add_clusters(cfg, grpc_clusters={"ratelimit": service.port})
    envoys = [envoy(None, 0, bootstrap=cfg, concurrency=2) for _ in range(2)]
    callers = {"bob": (idp.token("bob", groups=["readers"]), 3), "carol": (idp.token("carol"), 3),
               "alice": (idp.token("alice", groups=["readers", "ml-admins"]), 30)}
    query = {"experiment_id": "1", "query": ""}

    def calls(who: str, n: int, first: int = 0) -> list:
        token = callers[who][0]

        def one(i: int):
            # A new MCP session per call, alternating Envoys: neither is a new budget.
            return post(envoys[i % 2].url, call("query_runs", query, id=i),
                        headers={**bearer(token), "Mcp-Session-Id": f"{who}-{i}"})

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(first, first + n)))

    for who, (_, budget) in callers.items():
        replies = calls(who, budget + 4)
        assert sum(admitted(r) for r in replies) == budget, who
        refused = [r.json()["error"]["data"] for r in replies if "error" in r.json()]
        assert {d["limit"] for d in refused} == {budget}, (who, refused)
    assert tools_called(upstream, "query_runs") == 36
    # What the service counted: one descriptor per call, the caller's key hashed; ml-admins' own rule.
    seen = {tuple(e["value"] for e in d["entries"]) + (d["entries"][2]["key"],)
            for req in service.requests for d in req["descriptors"]}
    assert seen == {('tools["query_runs"]', "0:3/minute", identity_hash("jwt:bob"), "mcp_caller"),
                    ('tools["query_runs"]', "0:3/minute", identity_hash("jwt:carol"), "mcp_caller"),
                    ('profiles["ml-admins"].tools["query_runs"]', "0:30/minute", identity_hash("jwt:alice"),
                     "mcp_caller")}, seen
    assert not any(name in str(service.requests) for name in callers)
    # The next window of the service: each budget is back.
    service.clock_ref.now += 60
    assert admitted(calls("bob", 1, first=100)[0])


# ------------------------------------------------------------------------------------------------ the example

def example_bootstrap(upstream_port: int, ratelimit_port: int) -> dict:
    """envoy/examples/fleet-ratelimit.yaml as shipped, with test ports, the built wasm, and a longer timeout_ms
    (the tests' service is Python on a machine shared with the rest of the suite)."""
    cfg = conftest.shipped_bootstrap(EXAMPLE, {"mlflow_mcp": (8001, upstream_port),
                                               "ratelimit": (8081, ratelimit_port)})
    configuration = conftest.wasm_config(cfg)["configuration"]
    p = json.loads(configuration["value"])
    assert p["rate_limit_service"]["timeout_ms"] == 100
    p["rate_limit_service"]["timeout_ms"] = 5000
    configuration["value"] = json.dumps(p)
    return cfg


def test_the_example_bootstrap_counts_fleet_wide(envoy, upstream, service):
    """Two Envoys run envoy/examples/fleet-ratelimit.yaml (as shipped but for ports): search_runs allows 20 a
    minute per session across both; get_run keeps each Envoy's per-second burst guard."""
    cfg = example_bootstrap(upstream.port, service.port)
    envoys = [envoy(None, 0, bootstrap=cfg, concurrency=2) for _ in range(2)]
    s = {"Mcp-Session-Id": "agent-1"}
    got = [admitted(post(envoys[i % 2].url, call("search_runs", id=i), headers=s)) for i in range(24)]
    assert sum(got) == 20 and got[:20] == [True] * 20
    assert tools_called(upstream, "search_runs") == 20
    assert service.requests[-1]["descriptors"][0]["entries"][1] == {"key": "mcp_limit", "value": "0:20/minute"}
    # get_run: 5 a second per Envoy, counted by the proxy, next to 600 a minute counted by the service.
    window_room(1, need=0.6)
    t0 = time.time()
    with ThreadPoolExecutor(7) as pool:
        replies = list(pool.map(lambda i: post(envoys[0].url, call("get_run", id=100 + i), headers=s), range(7)))
    same_window(t0, time.time(), 1)
    assert sum(admitted(r) for r in replies) == 5


# ------------------------------------------------------------------------------------------------ README

def test_the_readme_kubernetes_manifests_hang_together():
    """docs/fleet-limits.md's Kubernetes manifests for envoyproxy/ratelimit: valid YAML, and what envoyproxy/ratelimit reads
    (RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/*.yaml, its settings' names, gRPC on 8081) agrees with the mount and
    the Service, which Istio must see as gRPC (a port named grpc, appProtocol grpc)."""
    section = (REPO / "docs" / "fleet-limits.md").read_text()
    blocks = [b for b in section.split("```yaml\n")[1:]]
    docs = [d for b in blocks for d in yaml.safe_load_all(b.split("```")[0]) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}, kinds.keys()
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["REDIS_SOCKET_TYPE"] == "tcp" and env["REDIS_URL"].endswith(":6379")
    assert set(env) <= {"USE_STATSD", "REDIS_SOCKET_TYPE", "REDIS_URL", "RUNTIME_ROOT", "RUNTIME_SUBDIRECTORY",
                        "RUNTIME_WATCH_ROOT", "LOG_LEVEL", "GRPC_PORT"}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == f'{env["RUNTIME_ROOT"]}/{env["RUNTIME_SUBDIRECTORY"]}/config'
    (port,) = container["ports"]
    (svc_port,) = kinds["Service"]["spec"]["ports"]
    assert port["containerPort"] == svc_port["targetPort"] == svc_port["port"] == 8081
    assert svc_port["name"] == "grpc" and svc_port["appProtocol"] == "grpc"
    assert kinds["Service"]["spec"]["selector"] == kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
