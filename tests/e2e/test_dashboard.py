"""The Grafana dashboard envoy/grafana/mcp-policy.json against a real Prometheus (Debian's `prometheus`, which
`make e2e` installs with apt-get when it is missing) scraping real Envoys' /stats/prometheus.

Two Envoys with the filter (one enforcing, one in audit mode) in front of the recording upstream, with an approval
service that grants one tool, refuses another and fails for a third. Scripted traffic makes every decision kind
(allow, deny, rate_limited, approval_granted, approval_remembered, approval_denied, approval_unavailable, invalid,
would_deny, would_rate_limit, would_require_approval) and filtered tools/list answers, in waves a few scrapes apart so that
counters grow while Prometheus watches. Then every panel's query, read from the dashboard JSON with Grafana's
variables filled in, must return data, and the panels must show what the traffic did. A third Envoy has no
stats_tags in its bootstrap (as under Istio): Prometheus scrapes it through the relabelling rules of
envoy/grafana/prometheus-without-stats-tags.yaml, and the dashboard shows it like the others.

With MCP_POLICY_DASHBOARD_SNAPSHOT=FILE the run is longer and each panel's results over the run are written to
FILE as JSON: docs/render_dashboard.py draws docs/dashboard.png from it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import REPO, Raw, _die_with_parent, free_port, render_bootstrap, stop_process
from support import call, encode, post, send
from test_observability import wait_for

DASHBOARD = REPO / "envoy" / "grafana" / "mcp-policy.json"
RELABEL = REPO / "envoy" / "grafana" / "prometheus-without-stats-tags.yaml"
SCRAPE_SECONDS = 1
# Grafana's variables, as Grafana would fill them in for this run (longest names first: $__range_s etc. are not
# used, but $__rate_interval must not be cut by $__range).
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "10m", "$instance": ".*"}
DECISIONS = {"allow", "deny", "rate_limited", "approval_granted", "approval_remembered", "approval_denied",
             "approval_unavailable", "invalid", "would_deny", "would_rate_limit", "would_require_approval"}
POLICY = {
    "version": "1",
    "default": "deny",
    "approval": {"cluster": "approvals", "timeout_ms": 5000},
    "tools": {
        "get_*": {},
        "delete_*": {"action": "deny", "reason": "Deleting MLflow data is not allowed for agents"},
        "query_runs": {"rate_limit": "2/hour"},
        "set_run_tag": {"action": "require_approval"},
        "set_experiment_tag": {"action": "require_approval"},
        "transition_model_version_stage": {"action": "require_approval"},
        "create_registered_model": {"action": "require_approval"},
    },
}
TOOLS_LIST = encode({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
    {"name": "get_run", "inputSchema": {"type": "object"}},
    {"name": "delete_run", "inputSchema": {"type": "object"}},
    {"name": "create_run", "inputSchema": {"type": "object"}},
]}})


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def promql(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def panel_queries() -> list[tuple[str, str, bool]]:
    """(panel title, PromQL with Grafana's variables filled in, instant) for every target of every panel."""
    return [(p["title"], promql(t["expr"]), bool(t.get("instant"))) for p in dashboard()["panels"]
            for t in p["targets"]]


def test_the_dashboard_imports_as_it_is():
    """What Grafana needs to import the file without editing: a uid, a Prometheus data source chosen on import
    (the `datasource` variable) used by every panel and query, distinct panel ids, panels inside the 24-column
    grid, and a query in every target."""
    d = dashboard()
    assert d["uid"] == "mcp-policy" and d["title"] and "__inputs" not in d
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip() and t["refId"], p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


# ------------------------------------------------------------------------------------------ the scripted run

class ApprovalService:
    """Grants set_run_tag, grants set_experiment_tag for an hour (the filter then grants the session's next calls of
    it without asking: approval_remembered), refuses transition_model_version_stage, answers 503 for anything else
    (the filter then refuses with approval_unavailable)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                tool = asked.get("tool")
                if tool == "set_run_tag":
                    status, body = 200, {"approved": True}
                elif tool == "set_experiment_tag":
                    status, body = 200, {"approved": True, "remember_seconds": 3600}
                elif tool == "transition_model_version_stage":
                    status, body = 200, {"approved": False, "reason": "not on the allow list"}
                else:
                    status, body = 503, {"error": "approver down"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping each Envoy admin's /stats/prometheus every SCRAPE_SECONDS;
    ``relabelled`` admins through the rules of RELABEL."""

    def __init__(self, binary: str, workdir, admins: list[str], relabelled: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

        def job(name: str, admins: list[str]) -> dict:
            return {"job_name": name, "metrics_path": "/stats/prometheus",
                    "static_configs": [{"targets": [a.removeprefix("http://") for a in admins]}]}

        config = {"global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS}s"},
                  "scrape_configs": [job("envoy", admins), {**job("envoy-without-stats-tags", relabelled),
                                                            "metric_relabel_configs": yaml.safe_load(RELABEL.read_text())}]}
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:  # noqa: S310 (loopback)
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not get ready:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.1)

    def api(self, path: str, **params) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}",  # noqa: S310
                                    timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("prometheus is not installed (Debian package `prometheus`; `make e2e` installs it with "
                    "apt-get when it can): the dashboard's queries were not run")
    return found


def wave(url: str, session: str) -> None:
    """One round of every decision kind through one Envoy, in a fresh session."""
    h = {"mcp-session-id": session}
    for i in range(3):
        post(url, call("get_run", {"run_id": "r"}, id=i), headers=h)
    post(url, call("delete_run", {"run_id": "r"}, id=10), headers=h)
    post(url, call("create_run", {"experiment_id": "0"}, id=11), headers=h)
    for i in range(3):  # 2/hour per session: the third is rate limited
        post(url, call("query_runs", {"experiment_id": "0"}, id=20 + i), headers=h)
    for i, tool in enumerate(("set_run_tag", "set_experiment_tag", "set_experiment_tag",
                              "transition_model_version_stage", "create_registered_model")):
        post(url, call(tool, {"name": "x"}, id=30 + i), headers=h)
    send(url, b"{not json", headers=h)
    post(url, {"jsonrpc": "2.0", "id": 40, "method": "tools/list"}, headers=h)


def labels(result: list[dict], name: str) -> set[str]:
    return {r["metric"].get(name) for r in result}


def test_every_panel_query_returns_data(envoy, upstream, monkeypatch, tmp_path, prometheus_binary):
    def answer(rec):
        if b'"tools/list"' in rec.body:
            return 200, Raw(TOOLS_LIST, {"Content-Type": "application/json"})
        return upstream.__class__.answer(rec)

    monkeypatch.setattr(upstream, "answer", answer)
    approvals = ApprovalService()
    prometheus = None
    try:
        enforce = envoy(POLICY, upstream.port, clusters={"approvals": approvals.port})
        audit = envoy({**POLICY, "mode": "audit"}, upstream.port, clusters={"approvals": approvals.port})
        untagged_cfg = render_bootstrap(POLICY, upstream.port, clusters={"approvals": approvals.port})
        del untagged_cfg["stats_config"]
        untagged = envoy(None, 0, bootstrap=untagged_cfg)
        prometheus = Prometheus(prometheus_binary, tmp_path, [enforce.admin, audit.admin], [untagged.admin])
        started = time.time()
        snapshot = os.environ.get("MCP_POLICY_DASHBOARD_SNAPSHOT")
        waves = 40 if snapshot else 3

        for n in range(waves):
            wave(enforce.url, f"enforce-{n}")
            wave(untagged.url, f"untagged-{n}")
            if not snapshot or n % 3 == 0:
                wave(audit.url, f"audit-{n}")
            if n == 0:
                # Prometheus has seen every counter before the next waves make them grow.
                wait_for(lambda: labels(prometheus.query("mcp_policy_decisions_total"), "decision") >= DECISIONS,
                           30, "every decision's counter in Prometheus")
            # A few scrapes between waves (longer and uneven in a snapshot run, for a readable picture).
            time.sleep(SCRAPE_SECONDS * (2.5 + (n % 5 if snapshot else 0)))
        time.sleep(SCRAPE_SECONDS * 3)

        results = {}
        for title, expr, _ in panel_queries():
            results[(title, expr)] = wait_for(lambda: prometheus.query(expr), 20, f"data for panel {title!r}: {expr}")

        def panel(title: str) -> list[dict]:
            (got,) = [r for (t, _), r in results.items() if t == title]
            return got

        assert labels(panel("Decisions per second, by decision"), "decision") == DECISIONS
        share = float(panel("Refused share")[0]["value"][1])
        assert 0 < share < 1, share
        tools = panel("tools/call per second, by tool and decision")
        assert {"get_run", "delete_run", "create_run", "query_runs", "set_run_tag"} <= labels(tools, "gen_ai_tool_name")
        top = {r["metric"]["gen_ai_tool_name"]: float(r["value"][1]) for r in panel("Top denied tools")}
        assert set(top) == {"delete_run", "create_run"} and all(v > 0 for v in top.values()), top
        limited = panel("Rate-limited calls per second, by tool")
        assert labels(limited, "gen_ai_tool_name") == {"query_runs"}
        assert labels(limited, "decision") == {"rate_limited", "would_rate_limit"}
        outcomes = {r["metric"]["decision"]: float(r["value"][1]) for r in panel("Approval outcomes")}
        assert set(outcomes) == {"approval_granted", "approval_remembered", "approval_denied",
                                 "approval_unavailable"}, outcomes
        assert all(v > 0 for v in outcomes.values()), outcomes
        assert labels(panel("Approvals per second, by tool"), "gen_ai_tool_name") == \
            {"set_run_tag", "set_experiment_tag", "transition_model_version_stage", "create_registered_model"}
        assert panel("tools/list answers filtered per second")
        assert labels(panel("Audit mode: what enforcing would refuse"), "decision") == \
            {"would_deny", "would_rate_limit", "would_require_approval"}
        # The Envoy without stats_tags, relabelled, has the same labelled counters as the enforcing one.
        instances = {name: e.admin.removeprefix("http://") for name, e in (("enforce", enforce), ("untagged", untagged))}
        series = {name: prometheus.query(f'mcp_policy_tool_calls_total{{instance="{addr}"}}')
                  for name, addr in instances.items()}
        seen = {name: {(r["metric"]["gen_ai_tool_name"], r["metric"]["decision"]) for r in got}
                for name, got in series.items()}
        assert seen["untagged"] == seen["enforce"] and ("query_runs", "rate_limited") in seen["untagged"], seen
        # The label's first name, deprecated, still comes with it (one release), tagged and relabelled alike.
        assert all(r["metric"]["tool"] == r["metric"]["gen_ai_tool_name"] for got in series.values() for r in got), series
        decided = labels(prometheus.query(f'mcp_policy_decisions_total{{instance="{instances["untagged"]}"}}'), "decision")
        assert decided == DECISIONS - {"would_deny", "would_rate_limit", "would_require_approval"}, decided

        if snapshot:
            end = time.time()
            out = {"start": started, "end": end, "panels": []}
            for p in dashboard()["panels"]:
                for t in p["targets"]:
                    expr = promql(t["expr"])
                    got = (prometheus.query(expr) if t.get("instant") else
                           prometheus.api("query_range", query=expr, start=started, end=end, step=SCRAPE_SECONDS))
                    out["panels"].append({"title": p["title"], "type": p["type"], "legend": t.get("legendFormat", ""),
                                          "unit": p.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                                          "instant": bool(t.get("instant")), "result": got})
            with open(snapshot, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        if prometheus is not None:
            prometheus.stop()
        approvals.close()
