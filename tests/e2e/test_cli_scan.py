"""`mcp-policy scan` against the real servers: the MLflow MCP server (SSE and JSON answers) and
@modelcontextprotocol/server-everything, all on 127.0.0.1. The built CLI (target/release/mcp-policy, `make cli`)
is run as a user runs it; its policy must load (`mcp-policy check`), classify every tool as its annotations say,
and work in Envoy in front of the server it came from. The presets in envoy/policies/ must still name every tool
the servers list.
"""
from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from conftest import REPO
from test_mcp_client import assert_denial, denial, list_tools, with_session
from test_server_everything import everything  # noqa: F401 (the fixture)

CLI = REPO / "target" / "release" / "mcp-policy"
PRESETS = REPO / "envoy" / "policies"
MLFLOW_TOOLS = json.loads((REPO / "tests" / "fixtures" / "mlflow-mcp-0.4.1.tools-list.json").read_text())["result"]["tools"]
HINTS = "annotations are hints from the server, not guarantees"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not CLI.exists():
        pytest.fail(f"{CLI.relative_to(REPO)} is missing: run `make cli`")
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, input=stdin, timeout=60, cwd=REPO)


def scan(url: str, tmp_path: pathlib.Path, *extra: str) -> tuple[dict, str, pathlib.Path]:
    out = tmp_path / "scanned.json"
    r = cli("scan", url, "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", r.stdout
    assert HINTS in r.stderr, r.stderr
    check = cli("check", str(out))
    assert check.returncode == 0, check.stdout
    return json.loads(out.read_text()), r.stderr, out


def expected_action(tool: dict, risky: str = "deny") -> tuple[str, bool]:
    """The oracle, written from the MCP spec's defaults: (action, rate-limited)."""
    a = tool.get("annotations") or {}
    if a.get("readOnlyHint") is True:
        return "allow", False
    if a.get("destructiveHint") is False and a.get("idempotentHint") is True:
        return "allow", True
    return risky, False


def assert_classified(policy: dict, tools: list[dict], risky: str = "deny") -> None:
    assert policy["version"] == "1" and policy["default"] == "deny"
    assert sorted(policy["tools"]) == sorted(t["name"] for t in tools)
    for t in tools:
        rule = policy["tools"][t["name"]]
        action, limited = expected_action(t, risky)
        assert rule["action"] == action, (t["name"], t.get("annotations"), rule)
        assert ("rate_limit" in rule) == limited, (t["name"], rule)
        assert rule["reason"].startswith("scan: "), rule


@pytest.mark.parametrize("answers", ["sse", "json"])
def test_scan_the_mlflow_server(request, answers, tmp_path):
    server = request.getfixturevalue("mlflow_mcp" if answers == "sse" else "mlflow_mcp_json")
    policy, err, _ = scan(server.url, tmp_path)
    assert_classified(policy, MLFLOW_TOOLS)
    assert len(policy["tools"]) == 40
    assert "approval" not in policy
    assert f"scan: {server.url}: " in err and ", 40 tools" in err, err
    assert "27 allow (read-only), 0 allow with rate limit 60/minute (idempotent, not destructive), 13 deny" in err, err
    tools = policy["tools"]
    assert tools["get_run"]["reason"] == "scan: read-only per server annotations (readOnlyHint)"
    assert tools["delete_run"]["reason"] == "scan: destructive per server annotations (destructiveHint)"
    # Idempotent, but the server does not say "not destructive": MCP's default (destructive) holds.
    assert tools["set_run_tag"] == {"action": "deny", "reason": "scan: may write; idempotent, but destructiveHint "
                                                                "not given (MCP default: destructive)"}
    # Grouped for review: allowed first, then the rest, each group in the server's order.
    names = list(tools)
    assert names[:27] == [t["name"] for t in MLFLOW_TOOLS if t["annotations"].get("readOnlyHint")]


def test_scan_approve_destructive(mlflow_mcp, tmp_path):
    policy, err, out = scan(mlflow_mcp.url, tmp_path, "--approve-destructive", "--rate-limit", "5/hour")
    assert_classified(policy, MLFLOW_TOOLS, risky="require_approval")
    assert policy["approval"] == {"cluster": "approvals"}
    assert "13 require_approval" in err and 'Envoy cluster "approvals"' in err and "placeholder" in err, err
    assert policy["tools"]["delete_run"]["reason"].endswith("; needs approval")
    r = cli("explain", str(out), "--tool", "transition_model_version_stage")
    assert r.returncode == 1 and "decision    require approval" in r.stdout, r.stdout


def test_scan_server_everything(everything, tmp_path):  # noqa: F811
    url, _ = everything
    policy, err, _ = scan(url, tmp_path)
    direct = list_tools(url)
    assert_classified(policy, direct)
    assert len(direct) == 13
    tools = policy["tools"]
    assert tools["gzip-file-as-resource"]["rate_limit"] == "60/minute"
    assert tools["toggle-simulated-logging"]["reason"] == \
        "scan: writes, not idempotent per server annotations (idempotentHint)"
    # The point of "hints, not guarantees": get-env is annotated read-only and hands out the server's environment.
    assert tools["get-env"]["action"] == "allow"
    assert "9 allow (read-only), 1 allow with rate limit 60/minute" in err, err


def preset_matches_scan(preset: dict, scanned: dict) -> None:
    """Every tool the server lists has a rule in the preset and the preset has no other; a rule the review did not
    touch is exactly the scan's."""
    assert sorted(preset["tools"]) == sorted(scanned["tools"])
    for name, rule in preset["tools"].items():
        if rule["reason"].startswith("scan: "):
            assert rule == scanned["tools"][name], name
        else:
            assert rule["reason"].startswith("review: "), (name, rule)
            assert rule != scanned["tools"][name], name
    assert preset["default"] == "deny"


def test_mlflow_preset_names_every_tool(mlflow_mcp, tmp_path):
    scanned, _, _ = scan(mlflow_mcp.url, tmp_path)
    preset = json.loads((PRESETS / "mlflow-mcp.json").read_text())
    preset_matches_scan(preset, scanned)
    tools = preset["tools"]
    assert {n for n, r in tools.items() if r["action"] == "deny"} == {
        "delete_model_alias", "delete_model_version", "delete_registered_model", "delete_run", "delete_experiment"}
    assert {n for n, r in tools.items() if r["action"] == "require_approval"} == {
        "register_model", "set_model_alias", "transition_model_version_stage", "copy_model_version"}


def test_server_everything_preset_names_every_tool(everything, tmp_path):  # noqa: F811
    url, _ = everything
    scanned, _, _ = scan(url, tmp_path)
    preset = json.loads((PRESETS / "server-everything.json").read_text())
    preset_matches_scan(preset, scanned)
    assert preset["hide"] == ["get-env"]


def test_a_scanned_policy_in_envoy(mlflow_mcp, envoy, tmp_path):
    """The scanned policy, as written, in Envoy in front of the server it was scanned from."""
    policy, _, out = scan(mlflow_mcp.url, tmp_path)
    e = envoy(out.read_text(), mlflow_mcp.port)
    listed = {t["name"] for t in list_tools(e.url)}
    assert listed == {n for n, r in policy["tools"].items() if r["action"] != "deny"}
    assert len(listed) == 27

    async def go(s):
        return await s.call_tool("get_experiment_by_name", {"name": "churn-model"})

    result = with_session(e.url, go)
    assert not result.isError, result
    run_id = mlflow_mcp.ids["runs"]["churn-model/xgboost"]
    assert_denial(denial(e.url, "delete_run", {"run_id": run_id}), "delete_run",
                  "scan: destructive per server annotations (destructiveHint)")
    assert_denial(denial(e.url, "set_run_tag", {"run_id": run_id, "key": "k", "value": "v"}), "set_run_tag", None)
