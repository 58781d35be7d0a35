"""`make run`'s demo: envoy/demo.yaml stays envoy/envoy.yaml plus a policy and the approvals cluster, and the
scripted demo of scripts/run_demo.py (the MCP Python SDK client through Envoy to the real MLflow MCP server, with
the approvals console, `mcp-policy approvals`, deciding through its JSON API) shows each decision: allowed,
denied, rate limited, approval granted for a while, then remembered without asking, and refused, each with its
audit line in Envoy's log. An invalid policy stops `make run` before anything starts, with the CLI's errors in the
terminal. Here on kernel-chosen loopback ports instead of make run's fixed ones.
"""
from __future__ import annotations

import asyncio
import copy
import json
import sys
import time

import pytest
import yaml

from conftest import REPO, SCRIPTS
from console import Console

sys.path.insert(0, str(SCRIPTS))
import run_demo  # noqa: E402

ENVOY_YAML = REPO / "envoy" / "envoy.yaml"
DEMO_YAML = REPO / "envoy" / "demo.yaml"


def _plugin(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]


def demo_policy() -> dict:
    return json.loads(_plugin(yaml.safe_load(DEMO_YAML.read_text()))["configuration"]["value"])


def test_demo_yaml_is_envoy_yaml_with_a_demo_policy():
    base, demo = yaml.safe_load(ENVOY_YAML.read_text()), yaml.safe_load(DEMO_YAML.read_text())
    base_policy = json.loads(_plugin(base)["configuration"]["value"])
    policy = demo_policy()
    # The policy: envoy.yaml's rules unchanged, plus a rate limit and two approvals.
    for key, rule in base_policy["tools"].items():
        assert policy["tools"][key] == rule, key
    added = {k: v for k, v in policy["tools"].items() if k not in base_policy["tools"]}
    assert added["query_runs"] == {"rate_limit": "3/minute"}
    assert {k for k, v in added.items() if v.get("action") == "require_approval"} == \
        {"set_run_tag", "transition_model_version_stage"}
    assert policy["approval"]["cluster"] == "approvals" and policy["default"] == base_policy["default"]
    # Everything else: the same bootstrap, plus the approvals cluster on 127.0.0.1:8002.
    (approvals,) = [c for c in demo["static_resources"]["clusters"] if c["name"] == "approvals"]
    assert approvals["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == \
        {"socket_address": {"address": "127.0.0.1", "port_value": run_demo.APPROVAL_PORT}}
    stripped = copy.deepcopy(demo)
    stripped["static_resources"]["clusters"].remove(approvals)
    for cfg in (stripped, base):
        _plugin(cfg)["configuration"]["value"] = "<policy>"
    assert stripped == base
    assert run_demo.CONFIG == "envoy/demo.yaml"


@pytest.fixture
def approvals(tmp_path):
    """The approvals console as make run starts it (its own approver login, made as run_demo makes it)."""
    approvers, password = run_demo.console_login(str(REPO / run_demo.CLI), tmp_path)
    assert (tmp_path / "console-password").stat().st_mode & 0o077 == 0, "the password file is the user's only"
    assert run_demo.console_login(str(REPO / run_demo.CLI), tmp_path) == (approvers, password), "made once"
    c = Console(tmp_path / "console")
    c.approvers = approvers
    c.start()
    try:
        yield c, run_demo.ConsoleLogin(c.base, run_demo.APPROVER, password)
    finally:
        c.stop()


def demo_log_levels() -> dict:
    """run_demo's Envoy log options as the envoy fixture's keyword arguments."""
    opts = dict(zip(run_demo.ENVOY_LOG_LEVELS[::2], run_demo.ENVOY_LOG_LEVELS[1::2]))
    return {"log_level": opts.pop("-l"), "component_log_level": opts.pop("--component-log-level"), **opts}


def test_the_scripted_demo(mlflow_mcp, envoy, approvals):
    console, login = approvals
    e = envoy(demo_policy(), mlflow_mcp.port, clusters={"approvals": console.port}, **demo_log_levels())
    lines = asyncio.run(run_demo.demo(e.url, mlflow_mcp.url, mlflow_mcp.ids, login))
    text = "\n".join(lines)
    labels = [line.split()[0] + (" " + line.split()[1] if line.split()[0] in ("rate", "approval") else "")
              for line in lines]
    assert labels == ["tools/list", "allowed", "denied", "rate limited", "approval granted", "remembered",
                      "approval refused"], text
    assert "of the server's 40 tools are listed" in lines[0], text
    assert "get_run -> forwarded; run 'xgboost' FINISHED, accuracy 0.87" in lines[1], text
    assert "delete_run -> JSON-RPC error -31001: Tool 'delete_run' denied by policy: Deleting MLflow data is not " \
           "allowed for agents" in lines[2], text
    assert "call 4 -> JSON-RPC error -31002: Tool 'query_runs' rate limited: rate limit of 3 calls per 60s" in lines[3] \
        or "-31002" in lines[3] and "calls 1-" in lines[3], text  # a minute boundary may fall between the calls
    assert "set_run_tag -> waited in the approvals console, approved there for 5 minutes" in lines[4] and \
        "forwarded: the run is tagged reviewed_by=mcp-policy demo" in lines[4], text
    assert "set_run_tag again -> forwarded without asking (approved for this session and tool for 5 minutes): " \
        "the run is tagged reviewed_at=once" in lines[5], text
    assert "transition_model_version_stage -> JSON-RPC error -31003: " in lines[6] and \
        f"the approver said no: {run_demo.DENY_REASON}" in lines[6], text
    run = mlflow_mcp.ids["runs"]["agent-evals/gpt-small"]
    tags = mlflow_mcp.client().get_run(run).data.tags
    assert (tags.get("reviewed_by"), tags.get("reviewed_at")) == ("mcp-policy demo", "once"), tags
    # The console was asked twice, decided by the demo's approver; the remembered call never reached it.
    decided = [(r["name"], r["outcome"], r["by"], r.get("remember_seconds")) for r in console.records()]
    assert decided == [("set_run_tag", "approved", "demo", 300),
                       ("transition_model_version_stage", "denied", "demo", None)], decided

    # The demo's Envoy log levels make every decision visible as an audit line in its log (README: "Audit log").
    want = {"allow", "deny", "rate_limited", "approval_granted", "approval_remembered", "approval_denied"}
    deadline = time.monotonic() + 5
    while not want <= {a["decision"] for a in run_demo.audit_lines(e.log_path)} and time.monotonic() < deadline:
        time.sleep(0.1)
    audit = run_demo.audit_lines(e.log_path)
    assert want <= {a["decision"] for a in audit}, audit
    (denied,) = [a for a in audit if a["decision"] == "deny"]
    assert denied["gen_ai.tool.name"] == "delete_run" and denied["rule"] == "delete_*", denied
    # Both SDK sessions are closed by now: the server's log has no traceback for their ended SSE streams.
    time.sleep(0.5)
    server_log = mlflow_mcp.log.read_text(errors="replace")
    assert "Error in standalone SSE writer" not in server_log and "ClosedResourceError" not in server_log, server_log


def test_make_run_checks_the_policy_first(tmp_path, monkeypatch, capfd):
    """A typo in the demo's policy: `make run` prints the CLI's errors (field and fix) and starts nothing."""
    if not (REPO / run_demo.CLI).exists():
        pytest.fail(f"{run_demo.CLI} is missing: run `make cli` first")
    assert "run: venv build cli" in (REPO / "Makefile").read_text()  # make run builds the CLI it checks with
    broken = tmp_path / "demo.yaml"
    text = DEMO_YAML.read_text()
    for good, bad in (('"default": "deny"', '"defualt": "deny"'), ('"op": "lte"', '"op": "less"')):
        assert good in text
        text = text.replace(good, bad)
    broken.write_text(text)

    def started(*args, **kwargs):
        raise AssertionError(f"something was started or probed after an invalid policy: {args}")

    monkeypatch.setattr(run_demo, "port_busy", started)
    monkeypatch.setattr(run_demo, "start", started)
    monkeypatch.setattr(sys, "argv", ["run_demo.py", "--config", str(broken)])
    with pytest.raises(SystemExit) as exit_:
        run_demo.main()
    out = capfd.readouterr().out
    message = str(exit_.value.code)
    assert "nothing was started" in message and str(broken) in message, message
    assert f"{run_demo.CLI} check {broken}" in out, out
    assert "invalid mcp-policy configuration (2 errors)" in out, out
    assert "- defualt: unknown field `defualt`; fix: did you mean `default`?" in out, out
    assert '- tools["search_runs"].conditions[0].op: unknown op "less"; fix: use one of eq, neq' in out, out


def test_make_run_shows_a_valid_policy_summary(capfd):
    run_demo.check_policy(str(REPO / run_demo.CLI), str(DEMO_YAML))
    out = capfd.readouterr().out
    assert "ok (7 rules, default deny)" in out, out
