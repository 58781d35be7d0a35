"""LONG TEST (about 2 minutes, the only one of its kind; marked `long_wait`): a call that waits 2+ minutes for a
person, with every timeout on its path set as docs/approvals.md ("Waiting minutes, not seconds") says:

- the policy's approval.timeout_ms: 180000 (3 minutes), which the callout tells the console (nothing to set there);
- Envoy: the HTTP connection manager's stream_idle_timeout 600s (default 5 minutes), the route's timeout 0s (default
  15 s) and idle_timeout 600s;
- the MCP Python SDK client: its httpx client's read timeout 600 s (the SDK's default is 300 s), and no per-request
  read timeout (ClientSession's read_timeout_seconds, None by default; set here to 10 minutes to show where).

An agent on the official MCP Python SDK calls set_run_tag on the real MLflow MCP server through Envoy; the call is
approved through the console's API after 125 s and completes. Deselect with `-m "not long_wait"`.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import conftest
from console import Console

WAIT_S = 125
TIMEOUT_MS = 180_000
POLICY = {
    "version": "1",
    "default": "deny",
    "approval": {"cluster": "approvals", "timeout_ms": TIMEOUT_MS},
    "tools": {"set_run_tag": {"action": "require_approval", "reason": "A human decides, however long it takes"}},
}


def bootstrap(upstream_port: int, approvals_port: int) -> dict:
    cfg = conftest.render_bootstrap(POLICY, upstream_port, clusters={"approvals": approvals_port})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stream_idle_timeout"] = "600s"
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    route["route"]["timeout"] = "0s"
    route["route"]["idle_timeout"] = "600s"
    return cfg


@pytest.mark.long_wait
def test_a_call_waits_more_than_two_minutes_for_a_person(envoy, mlflow_mcp, tmp_path):
    console = Console(tmp_path / "console").start()
    pool = ThreadPoolExecutor(1)
    try:
        proxy = envoy(None, 0, bootstrap=bootstrap(mlflow_mcp.port, console.port))
        run_id = mlflow_mcp.ids["runs"]["churn-model/baseline"]

        async def agent():
            http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=600))
            async with http, streamable_http_client(proxy.url, http_client=http) as (read, write, _):
                async with ClientSession(read, write, read_timeout_seconds=timedelta(minutes=10)) as session:
                    await session.initialize()
                    return await session.call_tool("set_run_tag", {"run_id": run_id, "key": "waited",
                                                                   "value": "minutes"})

        fut = pool.submit(asyncio.run, agent())
        (p,) = console.wait_pending(1, timeout=60)
        assert p["deadline_ms"] - p["received_ms"] == TIMEOUT_MS
        t0 = time.monotonic()
        while time.monotonic() - t0 < WAIT_S:
            time.sleep(5)
            assert not fut.done(), f"the call ended after {time.monotonic() - t0:.0f} s: {fut.result()}"
            assert [q["id"] for q in console.pending()] == [p["id"]]
        decision = console.decide(p["id"], True)
        assert decision["waited_ms"] >= WAIT_S * 1000
        result = fut.result(30)
        assert not result.isError, result
        assert mlflow_mcp.client().get_run(run_id).data.tags["waited"] == "minutes"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        console.stop()
