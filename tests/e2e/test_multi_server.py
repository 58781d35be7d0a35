"""Several MCP servers behind one Envoy, each with its own policy: envoy/examples/multi-server.yaml, rendered with
free ports (its two clusters pointed at two recording upstreams) and run as shipped.

One listener; /mlflow/mcp and /everything/mcp are rewritten to /mcp and routed to their own server; two
instances of the Wasm filter (separate name, root_id and vm_id), each switched off on the other's route. A route
without its own configuration gets both policies (the example's fail-closed choice).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import yaml

from conftest import ENVOY_TEMPLATE, REPO, WASM, Recorder
from support import assert_denied, assert_rpc_error, call, post

EXAMPLE = REPO / "envoy" / "examples" / "multi-server.yaml"
RATE_LIMITED = -31002
MLFLOW_DELETE = "Deleting MLflow data is not allowed for agents"
EVERYTHING_ENV = "Environment variables may hold secrets"


@pytest.fixture(scope="module")
def second():
    """A second recording upstream, for the second MCP server."""
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def upstreams(upstream, second):
    """(mlflow, everything) recording upstreams, both emptied."""
    second.clear()
    return upstream, second


def hcm_of(cfg: dict) -> dict:
    (listener,) = cfg["static_resources"]["listeners"]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def plugins_of(cfg: dict) -> dict[str, dict]:
    """HTTP filter name -> its Wasm plugin config."""
    return {f["name"]: f["typed_config"]["config"] for f in hcm_of(cfg)["http_filters"]
            if f["typed_config"]["@type"].endswith("envoy.extensions.filters.http.wasm.v3.Wasm")}


def render(mlflow_port: int, everything_port: int, policies: dict[str, dict] | None = None) -> dict:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (listener,) = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    ports = {"mlflow_mcp": mlflow_port, "everything_mcp": everything_port}
    for cluster in cfg["static_resources"]["clusters"]:
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1", "port_value": ports.pop(cluster["name"])}
    assert ports == {}, f"clusters missing from the example: {ports}"
    for name, plugin in plugins_of(cfg).items():
        plugin["vm_config"]["code"]["local"]["filename"] = str(WASM)
        if policies is not None:
            plugin["configuration"]["value"] = json.dumps(policies[name])
    return cfg


def tool(url: str, name: str, args: dict | None = None, *, id: Any = 1, session: str | None = None):
    return post(url, call(name, args or {}, id=id), headers={"Mcp-Session-Id": session} if session else None)


def assert_forwarded(reply, id: Any = 1) -> None:
    assert reply.status == 200, str(reply)
    msg = reply.json()
    assert msg.get("id") == id and msg.get("result", {}).get("upstream") == "recorder", f"not forwarded: {reply}"


def got(rec: Recorder) -> list[tuple[str, str]]:
    """(path, tool) of every whole request this upstream received."""
    return [(r.path, json.loads(r.body)["params"]["name"]) for r in rec.snapshot() if r.complete]


def test_example_shape():
    """Two filter instances with their own vm_id, each disabled on exactly the other server's route."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    plugins = plugins_of(cfg)
    assert set(plugins) == {"mcp_policy_mlflow", "mcp_policy_everything"}
    shipped = plugins_of(yaml.safe_load(ENVOY_TEMPLATE.read_text()))["envoy.filters.http.wasm"]
    for name, plugin in plugins.items():
        assert plugin["name"] == plugin["root_id"] == plugin["vm_config"]["vm_id"] == name
        assert plugin["failure_policy"] == "FAIL_CLOSED" and plugin["allow_on_headers_stop_iteration"] is True
        # Otherwise envoy/envoy.yaml's filter settings.
        same = lambda p: {k: v for k, v in p.items() if k not in ("name", "root_id", "configuration")}  # noqa: E731
        assert {**same(plugin), "vm_config": {**plugin["vm_config"], "vm_id": "mcp_policy"}} == same(shipped)
    routes = hcm_of(cfg)["route_config"]["virtual_hosts"][0]["routes"]
    own = {"/mlflow/mcp": "mcp_policy_mlflow", "/everything/mcp": "mcp_policy_everything"}
    assert [r["match"]["path_separated_prefix"] for r in routes] == list(own)
    for r in routes:
        disabled = {k for k, v in r["typed_per_filter_config"].items()
                    if v == {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}}
        assert disabled == set(plugins) - {own[r["match"]["path_separated_prefix"]]}
        assert r["route"]["prefix_rewrite"] == "/mcp"


def test_each_route_enforces_its_own_policy(envoy, upstreams):
    mlflow, everything = upstreams
    e = envoy(None, 0, bootstrap=render(mlflow.port, everything.port))
    m, ev = e.base + "/mlflow/mcp", e.base + "/everything/mcp"

    # /mlflow/mcp: the MLflow policy only. get_run would be denied by the everything policy (not listed, default
    # deny): its passing shows that policy is off here.
    assert_forwarded(tool(m, "get_run", {"run_id": "r"}, id=1), 1)
    assert_denied(tool(m, "delete_run", {"run_id": "r"}, id=2), 2, "delete_run", MLFLOW_DELETE)
    assert_denied(tool(m, "get-sum", {"a": 1, "b": 2}, id=3), 3, "get-sum")  # an everything tool: not here

    # /everything/mcp: the everything policy only (get-sum would be denied by the MLflow policy).
    assert_forwarded(tool(ev, "get-sum", {"a": 1, "b": 2}, id=4), 4)
    assert_denied(tool(ev, "get-env", id=5), 5, "get-env", EVERYTHING_ENV)
    msg = assert_denied(tool(ev, "delete_run", {"run_id": "r"}, id=6), 6, "delete_run")
    assert msg["error"]["data"]["reason"] != MLFLOW_DELETE, "the MLflow policy decided on the everything route"
    assert_denied(tool(ev, "get_run", {"run_id": "r"}, id=7), 7, "get_run")

    # Each server got only its own allowed calls, at its own /mcp.
    assert got(mlflow) == [("/mcp", "get_run")]
    assert got(everything) == [("/mcp", "get-sum")]

    # A path with no route of its own passes through BOTH filters: what one policy allows, the other refuses.
    for i, (name, args) in enumerate([("get_run", {"run_id": "r"}), ("get-sum", {"a": 1, "b": 2})], start=8):
        assert_denied(tool(e.base + "/other/mcp", name, args, id=i), i, name)
    # /mlflow/mcpx is not /mlflow/mcp (path_separated_prefix): no route, so both policies, then Envoy's 404.
    assert_denied(tool(e.base + "/mlflow/mcpx", "get_run", {"run_id": "r"}, id=10), 10, "get_run")
    assert len(mlflow.snapshot()) == 1 and len(everything.snapshot()) == 1


def test_rate_limit_counts_are_per_server(envoy, upstreams):
    """The same rule key and limit in both policies, the same session on both routes: two budgets, because the
    instances have separate vm_ids (shared data is per vm_id)."""
    mlflow, everything = upstreams
    limited = {"version": "1", "default": "deny", "tools": {"query_runs": {"rate_limit": "3/hour"}}}
    e = envoy(None, 0, bootstrap=render(mlflow.port, everything.port,
                                        {"mcp_policy_mlflow": limited, "mcp_policy_everything": limited}))
    session = f"multi-{uuid.uuid4()}"
    # Windows are fixed and epoch-aligned: start with room left in this hour, and check we stayed in it.
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.05)
    hour0 = int(time.time()) // 3600
    for url, rec in ((e.base + "/mlflow/mcp", mlflow), (e.base + "/everything/mcp", everything)):
        for i in range(3):
            assert_forwarded(tool(url, "query_runs", id=i, session=session), i)
        msg = assert_rpc_error(tool(url, "query_runs", id=9, session=session), 200, RATE_LIMITED, 9)
        assert msg["error"]["data"]["decision"] == "rate_limited"
        assert got(rec) == [("/mcp", "query_runs")] * 3
    assert int(time.time()) // 3600 == hour0, "the test ran across an hour boundary"
