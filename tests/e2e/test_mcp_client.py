"""The official MCP Python client, through a real Envoy with the filter, to the real MLflow MCP server
(mlflow-mcp 0.4.1 over Streamable HTTP, on a seeded MLflow file store).

Each test runs against the server in both answer modes: SSE streams and plain application/json.
"""
from __future__ import annotations

import asyncio
import fnmatch
import json
from typing import Any, Awaitable, Callable

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from conftest import EXAMPLE_POLICY
from support import DELETE_REASON, DENIED, SEARCH_REASON


async def _session(url: str, fn: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    async with streamablehttp_client(url, timeout=30, sse_read_timeout=60) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await fn(session)


def with_session(url: str, fn: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    """Open an MCP session on ``url`` (initialize included), run ``fn(session)``, close, return its result."""
    return asyncio.run(_session(url, fn))


def denial(url: str, tool: str, args: dict) -> McpError:
    async def go(s: ClientSession):
        with pytest.raises(McpError) as exc:
            await s.call_tool(tool, args)
        # The session is still usable after a denial.
        assert (await s.send_ping()) is not None
        return exc.value

    return with_session(url, go)


def assert_denial(err: McpError, tool: str, reason: str | None) -> None:
    assert err.error.code == DENIED, err.error
    data = err.error.data
    assert isinstance(data, dict), err.error
    assert data["tool"] == tool and data["decision"] == "deny", data
    assert data["reason"] and data["reason"] in err.error.message, err.error
    assert tool in err.error.message, err.error
    if reason is not None:
        assert data["reason"] == reason, data


@pytest.fixture(params=["sse", "json"])
def server(request):
    """The MLflow MCP server (SSE or JSON answers)."""
    return request.getfixturevalue("mlflow_mcp" if request.param == "sse" else "mlflow_mcp_json")


@pytest.fixture
def proxy(shared_envoy, server):
    return shared_envoy(EXAMPLE_POLICY, server.port)


def structured(result) -> dict:
    """A FastMCP tool result as a dict (structuredContent, else the JSON text content)."""
    if result.structuredContent is not None:
        sc = result.structuredContent
        return sc.get("result", sc) if isinstance(sc, dict) and set(sc) == {"result"} else sc
    return json.loads(result.content[0].text)


def list_tools(url: str) -> list[dict]:
    async def go(s: ClientSession):
        return await s.list_tools()

    return [t.model_dump(exclude_none=True) for t in with_session(url, go).tools]


def test_initialize_and_tools_list_pass(envoy, server):
    """With tools/list filtering off, initialize and tools/list pass through untouched."""
    e = envoy({**EXAMPLE_POLICY, "filter_tools_list": False}, server.port)
    direct = list_tools(server.url)
    assert len(direct) == 40, [t["name"] for t in direct]
    assert list_tools(e.url) == direct


def test_tools_list_shows_only_callable_tools(proxy, server):
    """By default, tools the policy denies whatever the arguments are left out of tools/list; every other tool
    comes through exactly as the server described it, in its order."""
    direct = list_tools(server.url)
    proxied = list_tools(proxy.url)
    # example policy: get_run and get_* allowed, search_runs conditional (not a tool of this server), rest denied
    want = [t for t in direct if fnmatch.fnmatchcase(t["name"], "get_*")]
    assert proxied == want, sorted(t["name"] for t in proxied)
    assert len(want) == 21


def test_get_run_returns_the_run(proxy, server):
    run_id = server.ids["runs"]["churn-model/xgboost"]

    async def go(s: ClientSession):
        return await s.call_tool("get_run", {"run_id": run_id})

    result = with_session(proxy.url, go)
    assert not result.isError, result
    run = structured(result)
    assert run["run_id"] == run_id
    assert run["params"]["model"] == "xgboost"
    assert run["metrics"]["accuracy"] == pytest.approx(0.87)


def test_get_run_with_a_large_answer(proxy, server):
    """max_body_bytes limits requests only: a get_run answer of more than 1 MB comes back whole."""
    run_id = server.ids["large_run"]

    async def go(s: ClientSession):
        return await s.call_tool("get_run", {"run_id": run_id})

    result = with_session(proxy.url, go)
    assert not result.isError
    size = len(result.content[0].text)
    assert size > 1_048_576, size
    run = structured(result)
    assert run["run_id"] == run_id
    want = server.ids["large_run_size"]
    assert len(run["params"]) == want["params"] and len(run["metrics"]) == want["metrics"]
    assert len(run["tags"]) >= want["tags"]  # plus MLflow's own mlflow.* tags


def test_get_star_glob_allows_other_getters(proxy, server):
    async def go(s: ClientSession):
        return await s.call_tool("get_experiments", {})

    result = with_session(proxy.url, go)
    assert not result.isError, result
    names = {e["name"] for e in structured(result)}
    assert {"churn-model", "price-forecast", "agent-evals", "large-run"} <= names


def test_delete_run_is_denied_and_the_run_survives(proxy, server):
    run_id = server.ids["runs"]["churn-model/baseline"]
    err = denial(proxy.url, "delete_run", {"run_id": run_id})
    assert_denial(err, "delete_run", DELETE_REASON)
    run = server.client().get_run(run_id)
    assert run.info.lifecycle_stage == "active", run.info


def test_delete_run_without_the_proxy_does_delete(mlflow_mcp):
    """Control for the test above: straight to the MLflow MCP server, delete_run really deletes."""
    run_id = mlflow_mcp.ids["runs"]["agent-evals/gpt-small"]

    async def go(s: ClientSession):
        return await s.call_tool("delete_run", {"run_id": run_id})

    result = with_session(mlflow_mcp.url, go)
    assert not result.isError, result
    assert mlflow_mcp.client().get_run(run_id).info.lifecycle_stage == "deleted"


def test_unlisted_tool_is_denied_by_default(proxy, server):
    run_id = server.ids["runs"]["price-forecast/arima"]
    err = denial(proxy.url, "set_run_tag", {"run_id": run_id, "key": "owner", "value": "agent"})
    assert_denial(err, "set_run_tag", None)
    assert "owner" not in server.client().get_run(run_id).data.tags


def test_search_runs_over_the_limit_is_denied(proxy):
    err = denial(proxy.url, "search_runs", {"max_results": 500})
    assert_denial(err, "search_runs", SEARCH_REASON)


def test_search_runs_within_the_limit_is_allowed(proxy):
    """Allowed by the policy, so it reaches MLflow — which (mlflow-mcp 0.4.1) has no tool of that name and
    says so in a tool result. A policy denial would have raised McpError instead."""
    async def go(s: ClientSession):
        return await s.call_tool("search_runs", {"max_results": 10})

    result = with_session(proxy.url, go)
    assert result.isError
    assert "Unknown tool: search_runs" in result.content[0].text, result


def test_get_runs_with_a_condition_policy(envoy, server):
    """A condition on a real MLflow tool: get_runs with limit <= 5 is served, limit 50 is denied."""
    policy = {"version": "1", "tools": {"get_runs": {"conditions": [{"path": "args.limit", "op": "lte", "value": 5}],
                                                      "reason": "at most 5 runs per call"}}}
    e = envoy(policy, server.port)
    exp_id = server.ids["experiments"]["churn-model"]

    async def go(s: ClientSession):
        return await s.call_tool("get_runs", {"experiment_id": exp_id, "limit": 2})

    result = with_session(e.url, go)
    assert not result.isError, result
    assert len(structured(result)) == 2
    err = denial(e.url, "get_runs", {"experiment_id": exp_id, "limit": 50})
    assert_denial(err, "get_runs", "at most 5 runs per call")
