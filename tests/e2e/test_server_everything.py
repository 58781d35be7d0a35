"""A second real MCP server: @modelcontextprotocol/server-everything (the MCP reference server, Node.js,
Streamable HTTP with SSE answers carrying event ids and priming events), through a real Envoy and the filter,
with the official MCP client. Nothing in the filter is specific to the MLflow server: its tool names use
hyphens (get-env, get-sum), and the list, the allowed and the denied calls behave the same.

Installed by `make npm` (.npm/); skipped, saying so, when it is not there.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import urllib.request

import pytest
from mcp import ClientSession

from conftest import REPO, _die_with_parent, free_port, stop_process, wait_for_port
from test_mcp_client import assert_denial, denial, list_tools, with_session
from test_observability import labels, prometheus
from test_tools_list import HIDDEN, listed

PACKAGE = REPO / ".npm" / "node_modules" / "@modelcontextprotocol" / "server-everything"
ENTRY = PACKAGE / "dist" / "index.js"
LOOPBACK = pathlib.Path(__file__).with_name("node_loopback.cjs")

POLICY = {
    "version": "1",
    "default": "deny",
    "hide": ["get-env"],  # it would hand the agent the server's whole environment
    "tools": {
        "echo": {},
        "get-*": {},
        "get-tiny-image": {"action": "deny", "reason": "no images"},
        "toggle-*": {"rate_limit": "10/minute"},
        "trigger-*": {"action": "deny"},
    },
}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6), hex as the kernel
    writes them: 0100007F is 127.0.0.1, 00000000 is 0.0.0.0."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.add(addr)
    return found


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    node = shutil.which("node")
    if node is None or not ENTRY.exists():
        pytest.skip(f"@modelcontextprotocol/server-everything is not installed ({ENTRY.relative_to(REPO)} "
                    f"{'missing' if node else 'and node missing'}): run `make npm`")
    port = free_port()
    log = tmp_path_factory.mktemp("everything") / "server.log"
    env = {**os.environ, "PORT": str(port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([node, "--require", str(LOOPBACK), str(ENTRY), "streamableHttp"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=PACKAGE, preexec_fn=_die_with_parent)
    try:
        wait_for_port(port, proc, what="server-everything", log=log)
        assert _listening_addresses(port) == {"0100007F"}, "server-everything must listen on 127.0.0.1 only"
        yield f"http://127.0.0.1:{port}/mcp", port
    finally:
        stop_process(proc)


def test_tools_list_filtered(everything, shared_envoy):
    url, port = everything
    direct = list_tools(url)
    names = [t["name"] for t in direct]
    assert {"echo", "get-env", "get-sum", "get-tiny-image", "toggle-simulated-logging"} <= set(names), names
    e = shared_envoy(POLICY, port)
    proxied = list_tools(e.url)
    want = [t for t in direct if listed(POLICY, t["name"])]
    assert proxied == want, [t["name"] for t in proxied]
    got = {t["name"] for t in proxied}
    assert {"echo", "get-sum", "toggle-simulated-logging"} <= got
    assert not got & {"get-env", "get-tiny-image"}
    assert not any(n.startswith("trigger-") for n in got)


def test_allowed_and_denied_calls(everything, shared_envoy):
    url, port = everything
    e = shared_envoy(POLICY, port)

    async def go(s: ClientSession):
        return await s.call_tool("echo", {"message": "through the proxy"}), await s.call_tool("get-sum", {"a": 2, "b": 3})

    echo, total = with_session(e.url, go)
    assert not echo.isError and echo.content[0].text == "Echo: through the proxy", echo
    assert not total.isError and "5" in total.content[0].text, total
    assert_denial(denial(e.url, "get-env", {}), "get-env", HIDDEN)
    assert_denial(denial(e.url, "get-tiny-image", {}), "get-tiny-image", "no images")

    # Hyphenated tool names keep their names as Prometheus labels.
    prom = prometheus(e)
    assert prom.get(("mcp_policy_tool_calls_total", labels(gen_ai_tool_name="echo", tool="echo", decision="allow"))) == 1
    assert prom.get(("mcp_policy_tool_calls_total", labels(gen_ai_tool_name="get-env", tool="get-env", decision="deny"))) == 1
    assert prom.get(("mcp_policy_tool_calls_total", labels(gen_ai_tool_name="get-tiny-image", tool="get-tiny-image", decision="deny"))) == 1


def test_control_the_server_answers_get_env_directly(everything):
    """Control for the denial above: straight to the server, get-env answers (with its environment)."""
    url, _ = everything

    async def go(s: ClientSession):
        return await s.call_tool("get-env", {})

    result = with_session(url, go)
    assert not result.isError and '"PORT"' in result.content[0].text, result
