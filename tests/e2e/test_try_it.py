"""README "Try it": the curl session, run as written against the demo's Envoy (envoy/demo.yaml's policy, the real
MLflow MCP server, the approvals console), must print what the README says it prints. Only what differs from one
machine or run to the next is left out of the comparison: session and experiment ids, paths, the date.
"""
from __future__ import annotations

import re
import subprocess

from conftest import REPO
from test_demo import approvals, demo_policy  # noqa: F401  (approvals: a fixture)

README = REPO / "README.md"
DEMO_URL = "http://127.0.0.1:10000/mcp"
HEADERS_FILE = "/tmp/mcp-headers"


def curl_session() -> tuple[str, str]:
    """(the commands, the output shown) of README's "A whole MCP session with curl"."""
    text = README.read_text()
    section = text[text.index("### A whole MCP session with curl"):]
    section = section[:section.index("\n### ")]
    (script,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    (output,) = re.findall(r"```text\n(.*?)```", section, re.S)
    return script, output


def normalized(text: str) -> list[str]:
    text = text.replace("\r", "")
    text = re.sub(r"\b[0-9a-f]{32}\b", "<hex>", text)           # session ids
    text = re.sub(r"\b[0-9]{15,20}\b", "<id>", text)             # MLflow experiment ids
    text = re.sub(r"file://[^\"\\\s]*", "<file>", text)          # the store's path
    text = re.sub(r"(?m)^date: .*$", "date: <date>", text)
    return text.rstrip("\n").split("\n")


def test_the_readme_curl_session_prints_what_the_readme_shows(mlflow_mcp, envoy, approvals, tmp_path):  # noqa: F811
    console, _ = approvals
    e = envoy(demo_policy(), mlflow_mcp.port, clusters={"approvals": console.port})
    script, shown = curl_session()
    assert script.count(DEMO_URL) >= 2 and HEADERS_FILE in script
    script = script.replace(DEMO_URL, e.url).replace(HEADERS_FILE, str(tmp_path / "mcp-headers"))
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 0 and run.stderr == "", (run.returncode, run.stderr)
    assert normalized(run.stdout) == normalized(shown), run.stdout
    # What the README says about it.
    assert "x-mcp-policy: rejected" in run.stdout and '"code":-31001' in run.stdout
    assert len(re.findall(r"\bget_\w+|\bquery_runs\b|\bset_run_tag\b|\btransition_model_version_stage\b",
                          run.stdout.split("HTTP/1.1 202 Accepted")[1].split("event:")[0])) == 24
