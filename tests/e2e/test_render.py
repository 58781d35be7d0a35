"""`mcp-policy render`: from a scanned policy to a running Envoy, as the README's edit loop goes (scan, check,
render, run; edit, check, render again, restart or reload). The built CLI (target/release/mcp-policy) is run as a
user runs it, in front of the real MLflow MCP server on 127.0.0.1:

- ``--format envoy``: the bootstrap passes ``envoy --mode validate`` and, run as written, enforces the policy;
- ``--format lds --bootstrap``: the same, and a policy rendered again is reloaded without a restart;
- ``--format wasmplugin`` / ``trafficextension``: the manifests are checked as test_istio.py checks the shipped
  ones, and their policy runs in the Istio-like Envoy of test_istio.py;
- a policy with an error is refused with the errors `check` prints, and nothing is written.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import time

import pytest
import yaml

from conftest import REPO, envoy_binary, free_port
from test_cli_scan import cli, scan
from test_istio import assert_same_deployment, assert_wasmplugin, istio_bootstrap
from test_mcp_client import assert_denial, denial, list_tools, with_session

DELETE_REASON = "scan: destructive per server annotations (destructiveHint)"
READ_ONLY = 27  # tools the MLflow server annotates read-only: what a scanned policy lets the agent see


def render(policy: pathlib.Path, fmt: str, out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    r = cli("render", str(policy), "--format", fmt, "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", r.stdout
    return r


def validate(config: pathlib.Path) -> None:
    """Envoy's own check of a bootstrap (it loads the filter and its policy too), from the repository root as
    the rendered file's relative module path wants."""
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and f"configuration '{config}' OK" in r.stdout + r.stderr, r.stdout + r.stderr


def get_experiment(url: str):
    async def go(s):
        return await s.call_tool("get_experiment_by_name", {"name": "churn-model"})
    return with_session(url, go)


def assert_enforced(url: str, mlflow) -> None:
    """An allowed call is answered by the server; a denied one by the filter, with the policy's reason."""
    assert len(list_tools(url)) == READ_ONLY
    result = get_experiment(url)
    assert not result.isError, result
    run_id = mlflow.ids["runs"]["churn-model/xgboost"]
    assert_denial(denial(url, "delete_run", {"run_id": run_id}), "delete_run", DELETE_REASON)


def deny_get_experiment(policy_file: pathlib.Path) -> None:
    """The user's edit: get_experiment_by_name denied from now on."""
    policy = json.loads(policy_file.read_text())
    policy["tools"]["get_experiment_by_name"] = {"action": "deny", "reason": "edited: not today"}
    policy_file.write_text(json.dumps(policy, indent=2))
    assert cli("check", str(policy_file)).returncode == 0


def test_scan_render_run_an_envoy(mlflow_mcp, envoy, tmp_path):
    _, err, policy = scan(mlflow_mcp.url, tmp_path)
    assert f"mcp-policy render {policy} --format envoy --upstream {mlflow_mcp.url}" in err, err
    config = tmp_path / "envoy-mcp.yaml"
    # Ports 0: the kernel picks (the test harness asks the admin interface where Envoy listens).
    r = render(policy, "envoy", config, "--upstream", mlflow_mcp.url, "--listen", "127.0.0.1:0",
               "--admin", "127.0.0.1:0")
    assert f"render: wrote {config}" in r.stderr, r.stderr
    text = config.read_text()
    assert text.startswith("# Envoy bootstrap: mcp-policy in front of an MCP server."), text[:300]
    validate(config)

    e = envoy(None, 0, bootstrap=text)
    assert_enforced(e.url, mlflow_mcp)

    # Rendering again without a change leaves the file alone.
    r = render(policy, "envoy", config, "--upstream", mlflow_mcp.url, "--listen", "127.0.0.1:0",
               "--admin", "127.0.0.1:0")
    assert f"render: {config} unchanged" in r.stderr, r.stderr

    # The loop: edit, check, render again, restart.
    deny_get_experiment(policy)
    render(policy, "envoy", config, "--upstream", mlflow_mcp.url, "--listen", "127.0.0.1:0",
           "--admin", "127.0.0.1:0")
    e.stop()
    e = envoy(None, 0, bootstrap=config.read_text())
    assert_denial(denial(e.url, "get_experiment_by_name", {"name": "churn-model"}), "get_experiment_by_name",
                  "edited: not today")


def test_render_lds_is_reloaded_without_a_restart(mlflow_mcp, envoy, tmp_path):
    _, _, policy = scan(mlflow_mcp.url, tmp_path)
    xds = tmp_path / "xds"
    xds.mkdir()
    lds, boot = xds / "lds.yaml", tmp_path / "envoy-mcp.yaml"
    args = ("--upstream", mlflow_mcp.url, "--listen", f"127.0.0.1:{free_port()}", "--admin", "127.0.0.1:0",
            "--bootstrap", str(boot))
    r = render(policy, "lds", lds, *args)
    assert f"render: wrote {boot}" in r.stderr and f"render: wrote {lds}" in r.stderr, r.stderr
    validate(boot)
    e = envoy(None, 0, bootstrap=boot.read_text())
    assert_enforced(e.url, mlflow_mcp)

    deny_get_experiment(policy)
    r = render(policy, "lds", lds, *args)
    assert f"render: {boot} unchanged" in r.stderr and f"render: wrote {lds}" in r.stderr, r.stderr
    version = yaml.safe_load(lds.read_text())["version_info"]
    deadline = time.monotonic() + 10
    while e.stats("listener_manager.lds.version_text").get("listener_manager.lds.version_text") != version:
        assert time.monotonic() < deadline, e.stats("listener_manager")
        time.sleep(0.1)
    assert_denial(denial(e.url, "get_experiment_by_name", {"name": "churn-model"}), "get_experiment_by_name",
                  "edited: not today")
    assert e.proc.poll() is None


def test_render_istio_manifests(mlflow_mcp, envoy, tmp_path):
    """Rendered with the defaults, the manifests are the shipped deployment (test_istio.py's checks) with the
    scanned policy, which render sets to hold_headers: false; that policy runs as Istio would run it."""
    _, _, policy = scan(mlflow_mcp.url, tmp_path)
    docs = {}
    for fmt in ("wasmplugin", "trafficextension"):
        out = tmp_path / f"{fmt}.yaml"
        render(policy, fmt, out)
        (docs[fmt],) = list(yaml.safe_load_all(out.read_text()))
        assert cli("check", str(out)).returncode == 0
    wp, te = docs["wasmplugin"], docs["trafficextension"]
    assert_wasmplugin(wp)
    assert_same_deployment(wp, te)
    scanned = json.loads(policy.read_text())
    assert wp["spec"]["pluginConfig"] == {**scanned, "hold_headers": False}

    e = envoy(None, 0, bootstrap=istio_bootstrap(wp, mlflow_mcp.port))
    assert_enforced(e.url, mlflow_mcp)


@pytest.mark.parametrize("fmt", ["envoy", "lds", "wasmplugin", "trafficextension"])
def test_an_invalid_policy_is_refused_with_checks_errors(fmt, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "deny",
                                  "tools": {"get_run": {"action": "alow", "rate_limt": "5/minute"}}}))
    check = cli("check", str(policy))
    assert check.returncode == 1
    assert "rate_limt: unknown field `rate_limt`; fix: did you mean `rate_limit`?" in check.stdout, check.stdout
    out = tmp_path / "out.yaml"
    r = cli("render", str(policy), "--format", fmt, "--out", str(out))
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr == check.stdout, (r.stderr, check.stdout)
    assert not out.exists()
