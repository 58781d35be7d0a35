"""Pinned tool definitions (issue 14) against the real servers: `mcp-policy scan --pin` pins every tool the MLflow MCP
server and server-everything list, each pin is what the one-line Python recipe of the README computes, and the
presets in envoy/policies/ carry the pins of the servers as they are (`mcp-policy pin --check`).
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from test_cli_scan import PRESETS, cli
from test_mcp_client import list_tools
from test_server_everything import everything  # noqa: F401 (the fixture)


def python_pin(tool: dict) -> str:
    """The README's recipe: json.dumps with sorted keys, no spaces, UTF-8; the tool without _meta."""
    t = {k: v for k, v in tool.items() if k != "_meta"}
    text = json.dumps(t, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def has_float(v) -> bool:
    if isinstance(v, float):
        return True
    if isinstance(v, dict):
        return any(has_float(x) for x in v.values())
    if isinstance(v, list):
        return any(has_float(x) for x in v)
    return False


def scan_pins(url: str, tmp_path) -> tuple[dict, dict]:
    out = tmp_path / "pinned.json"
    r = cli("scan", url, "--pin", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "not pinned" not in r.stderr, r.stderr
    assert cli("check", str(out)).returncode == 0
    policy = json.loads(out.read_text())
    definitions = json.loads((tmp_path / "pinned.tools.json").read_text())
    return policy, definitions


@pytest.mark.parametrize("server", ["mlflow_mcp", "mlflow_mcp_json", "everything"])
def test_scan_pins_every_tool_as_the_recipe_does(request, server, tmp_path):
    s = request.getfixturevalue(server)
    url = s[0] if server == "everything" else s.url
    direct = list_tools(url)
    policy, definitions = scan_pins(url, tmp_path)
    pins = policy["pins"]
    assert pins["unpinned"] == "hide"
    assert sorted(pins["tools"]) == sorted(t["name"] for t in direct)
    for t in direct:
        # No tool of these servers has a number the recipe writes differently (a fraction, or beyond 2^53).
        assert not has_float(t), t["name"]
        assert pins["tools"][t["name"]] == python_pin(t), t["name"]
        assert definitions[t["name"]] == {k: v for k, v in t.items() if k != "_meta"}


@pytest.mark.parametrize("preset, server", [("mlflow-mcp", "mlflow_mcp"), ("server-everything", "everything")])
def test_presets_carry_the_pins_of_the_servers(request, preset, server, tmp_path):
    s = request.getfixturevalue(server)
    url = s[0] if server == "everything" else s.url
    for suffix in (".json", ".tools.json"):
        shutil.copy(PRESETS / f"{preset}{suffix}", tmp_path / f"{preset}{suffix}")
    r = cli("pin", url, str(tmp_path / f"{preset}.json"), "--check")
    n = len(json.loads((PRESETS / f"{preset}.json").read_text())["pins"]["tools"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"{n} unchanged, 0 changed, 0 new, 0 gone\n", r.stdout
