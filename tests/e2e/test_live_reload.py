"""Live policy change without restarting Envoy: envoy/examples/live-reload/ (a bootstrap whose listener comes from
lds.yaml through file-based dynamic resources, ``watched_directory``), rendered with free ports into tmp_path and
run as shipped, in front of the recording upstream.

Every edit is made the way the README says: write a whole new lds.yaml under another name in the watched folder
and rename it over the old one. A test then waits until Envoy reports the update applied (or rejected) and
checks the policy through the listener on fresh connections (``send`` uses ``Connection: close``).

Measured with Envoy 1.40 and asserted here: an edit of the policy alone creates no new long-lived Wasm VM (the
existing VMs get a new root context; one short-lived VM, the configuration canary, is created and destroyed per
edit), the vm_id is unchanged, and rate-limit counts (shared data keyed by vm_id, rule key and limit) carry over.
"""
from __future__ import annotations

import json
import os
import pathlib
import time
import urllib.request
import uuid
from typing import Any, Callable

import yaml

from conftest import ENVOY_TEMPLATE, REPO, WASM, free_port
from support import assert_denied, assert_rpc_error, call, post

LIVE = REPO / "envoy" / "examples" / "live-reload"
RATE_LIMITED = -31002
HOUR = 3600
# The shipped policy: query_runs has "10/hour" per session; set_run_tag is not listed (default deny).
LIMIT = 10
DELETE_REASON = "Deleting MLflow data is not allowed for agents"
UPDATE_TIMEOUT = 10.0


# ------------------------------------------------------------------------------------------------ helpers

def window_room(window: int, need: float) -> None:
    """Sleeps, if needed, until the current epoch-aligned window has ``need`` seconds left (counts must not reset
    in the middle of a test)."""
    left = window - time.time() % window
    if left < need:
        time.sleep(left + 0.05)


def plugin_of(lds: dict) -> dict:
    (listener,) = lds["resources"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]


class LiveReload:
    """The shipped example, rendered: ``envoy`` runs the bootstrap; ``lds`` is the watched file."""

    def __init__(self, tmp_path: pathlib.Path, envoy_factory, upstream_port: int):
        boot = yaml.safe_load((LIVE / "envoy.yaml").read_text())
        boot["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
        self.dir = tmp_path / "xds"
        self.dir.mkdir()
        self.lds = self.dir / "lds.yaml"
        source = boot["dynamic_resources"]["lds_config"]["path_config_source"]
        assert source["path"] == "envoy/examples/live-reload/lds.yaml"
        assert source["watched_directory"] == {"path": "envoy/examples/live-reload"}
        source["path"], source["watched_directory"]["path"] = str(self.lds), str(self.dir)
        (cluster,) = boot["static_resources"]["clusters"]
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1", "port_value": upstream_port}

        doc = yaml.safe_load((LIVE / "lds.yaml").read_text())
        (listener,) = doc["resources"]
        listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": free_port()}
        plugin_of(doc)["vm_config"]["code"]["local"]["filename"] = str(WASM)
        self.lds.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.envoy = envoy_factory(None, 0, bootstrap=boot)
        self.url = self.envoy.url

    def admin_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.envoy.admin + path, timeout=2) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())

    def stat(self, name: str) -> int:
        return self.envoy.stats(name).get(name, 0)

    def active_listener(self) -> dict:
        """The one dynamic listener's active configuration, from the admin config dump."""
        dump = self.admin_json("/config_dump?resource=dynamic_listeners")
        self.last_dump = dump["configs"]
        (lst,) = [c for c in dump["configs"] if "active_state" in c]
        return lst["active_state"]["listener"]

    def vm_id(self) -> str:
        return plugin_of({"resources": [self.active_listener()]})["vm_config"]["vm_id"]

    def served_policy(self) -> dict:
        """The policy in the listener Envoy is running."""
        return json.loads(plugin_of({"resources": [self.active_listener()]})["configuration"]["value"])

    def policy(self) -> dict:
        return json.loads(plugin_of(yaml.safe_load(self.lds.read_text()))["configuration"]["value"])

    def edit(self, change: Callable[[dict], None], version: str) -> float:
        """The README's procedure: a whole new file beside the old one, renamed over it. Returns when it was renamed."""
        doc = yaml.safe_load(self.lds.read_text())
        cfg = plugin_of(doc)["configuration"]
        policy = json.loads(cfg["value"])
        change(policy)
        cfg["value"] = json.dumps(policy, indent=2)
        doc["version_info"] = version
        new = self.dir / ".lds.yaml.new"
        new.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.rename(new, self.lds)
        return time.monotonic()

    def applied(self) -> tuple[str, int]:
        """(version_info of the last LDS update Envoy accepted, listeners still warming). (The config dump's
        per-listener version_info is not used: Envoy 1.40 keeps the first one across in-place updates.)"""
        stats = self.envoy.stats("listener_manager")
        return stats.get("listener_manager.lds.version_text"), stats.get("listener_manager.total_listeners_warming")

    def wait_applied(self, version: str) -> None:
        deadline = time.monotonic() + UPDATE_TIMEOUT
        while time.monotonic() < deadline:
            if self.applied() == (version, 0):
                return
            time.sleep(0.01)
        raise AssertionError(f"LDS version {version} not applied within {UPDATE_TIMEOUT}s:\n{self.envoy.log_text()}")

    def wait_rejected(self, count: int) -> None:
        deadline = time.monotonic() + UPDATE_TIMEOUT
        while time.monotonic() < deadline:
            if self.stat("listener_manager.lds.update_rejected") >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"no rejected LDS update within {UPDATE_TIMEOUT}s:\n{self.envoy.log_text()}")

    def vms(self) -> tuple[int, int]:
        """(created, active) V8 Wasm VMs of this Envoy."""
        return (self.stat("wasm.envoy.wasm.runtime.v8.created"), self.stat("wasm.envoy.wasm.runtime.v8.active"))


def tool(url: str, name: str, args: dict | None = None, *, session: str, id: Any = 1):
    return post(url, call(name, args or {}, id=id), headers={"Mcp-Session-Id": session})


def assert_forwarded(reply, id: Any = 1) -> None:
    assert reply.status == 200, str(reply)
    msg = reply.json()
    assert msg.get("id") == id and msg.get("result", {}).get("upstream") == "recorder", f"not forwarded: {reply}"


def assert_limited(reply, id: Any = 1) -> None:
    msg = assert_rpc_error(reply, 200, RATE_LIMITED, id)
    data = msg["error"]["data"]
    assert data["tool"] == "query_runs" and data["decision"] == "rate_limited", reply
    assert data["limit"] == LIMIT and data["window_seconds"] == HOUR, reply


def use_query_runs(url: str, session: str, n: int) -> None:
    for i in range(n):
        assert_forwarded(tool(url, "query_runs", {"experiment_ids": ["0"]}, session=session, id=100 + i), id=100 + i)


def forwarded_tools(upstream) -> list[str]:
    return [json.loads(r.body)["params"]["name"] for r in upstream.snapshot() if r.complete]


# ------------------------------------------------------------------------------------------------ tests

def test_shipped_example_shape():
    """The example is what the README describes: the listener only in lds.yaml, watched through its folder."""
    boot = yaml.safe_load((LIVE / "envoy.yaml").read_text())
    assert "listeners" not in boot.get("static_resources", {})
    source = boot["dynamic_resources"]["lds_config"]["path_config_source"]
    assert source == {"path": "envoy/examples/live-reload/lds.yaml",
                      "watched_directory": {"path": "envoy/examples/live-reload"}}
    plugin = plugin_of(yaml.safe_load((LIVE / "lds.yaml").read_text()))
    # The same filter settings (held headers, fail closed, vm_id) and upstream as envoy/envoy.yaml.
    shipped = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    (shipped_listener,) = shipped["static_resources"]["listeners"]
    shipped_plugin = plugin_of({"resources": [shipped_listener]})
    assert {k: v for k, v in plugin.items() if k != "configuration"} == \
        {k: v for k, v in shipped_plugin.items() if k != "configuration"}
    assert boot["static_resources"]["clusters"] == shipped["static_resources"]["clusters"]
    assert plugin["vm_config"]["vm_id"] == "mcp_policy" and plugin["failure_policy"] == "FAIL_CLOSED"
    policy = json.loads(plugin["configuration"]["value"])
    assert policy["tools"]["query_runs"] == {"rate_limit": f"{LIMIT}/hour"}
    assert "set_run_tag" not in policy["tools"] and policy["default"] == "deny"


def test_edit_allows_a_denied_tool_and_keeps_rate_limit_counts(tmp_path, envoy, upstream):
    window_room(HOUR, 30)
    t_start = time.time()
    live = LiveReload(tmp_path, envoy, upstream.port)
    session = f"live-{uuid.uuid4()}"

    # Before: set_run_tag is denied by default, never forwarded; query_runs spends 4 of its 10.
    assert_denied(tool(live.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, session=session, id=1),
                  1, "set_run_tag")
    assert_denied(tool(live.url, "delete_run", {"run_id": "r"}, session=session, id=2), 2, "delete_run", DELETE_REASON)
    use_query_runs(live.url, session, 4)
    assert forwarded_tools(upstream) == ["query_runs"] * 4
    vm_id, vms = live.vm_id(), live.vms()
    assert vm_id == "mcp_policy"

    # The edit: allow set_run_tag. query_runs (its key and its limit) is untouched.
    renamed = live.edit(lambda p: p["tools"].update({"set_run_tag": {}}), "2")
    live.wait_applied("2")
    applied_in = time.monotonic() - renamed
    assert live.served_policy()["tools"]["set_run_tag"] == {}
    assert live.stat("listener_manager.lds.update_success") == 2
    assert live.stat("listener_manager.lds.update_rejected") == 0

    # After: set_run_tag reaches the upstream, with its body as sent.
    upstream.clear()
    assert_forwarded(tool(live.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, session=session, id=3), 3)
    assert forwarded_tools(upstream) == ["set_run_tag"]
    assert_denied(tool(live.url, "delete_run", {"run_id": "r"}, session=session, id=4), 4, "delete_run", DELETE_REASON)

    # The count carried over: exactly 10 - 4 = 6 more, then refused.
    use_query_runs(live.url, session, LIMIT - 4)
    assert_limited(tool(live.url, "query_runs", {"experiment_ids": ["0"]}, session=session, id=5), 5)
    # Another session has its own, full budget.
    use_query_runs(live.url, f"{session}-other", 1)

    # Same vm_id; no long-lived VM was added or replaced (active unchanged), only the configuration canary made.
    assert live.vm_id() == vm_id
    created, active = live.vms()
    assert active == vms[1], f"active Wasm VMs went from {vms[1]} to {active} across the edit"
    assert created == vms[0] + 1, f"created Wasm VMs went from {vms[0]} to {created} (expected one canary)"
    assert applied_in < UPDATE_TIMEOUT
    assert int(t_start) // HOUR == int(time.time()) // HOUR, "the test ran across an hour boundary"


def test_invalid_edit_is_rejected_and_the_old_policy_keeps_serving(tmp_path, envoy, upstream):
    window_room(HOUR, 30)
    t_start = time.time()
    live = LiveReload(tmp_path, envoy, upstream.port)
    session = f"live-{uuid.uuid4()}"
    use_query_runs(live.url, session, 3)
    before = live.policy()

    # A typo in the policy (and, in the same edit, set_run_tag allowed): the whole update must be refused.
    def typo(p: dict) -> None:
        p["defualt"] = p.pop("default")
        p["tools"]["set_run_tag"] = {}

    live.edit(typo, "2")
    live.wait_rejected(1)
    log = live.envoy.log_text()
    assert "unknown field `defualt`" in log and "did you mean `default`?" in log, log
    assert "lds: listener 'mcp' config rejected" in log, log
    assert live.stat("listener_manager.lds.update_success") == 1
    assert live.applied() == ("1", 0)
    assert live.served_policy() == before
    errors = [c["error_state"] for c in live.last_dump if "error_state" in c]
    assert errors and all(e["details"] == "Unable to create Wasm plugin mcp_policy" for e in errors), live.last_dump

    # The old policy still serves: set_run_tag denied, delete_run denied with its reason, get_run allowed, and the
    # query_runs count is the one from before (7 left).
    upstream.clear()
    assert_denied(tool(live.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, session=session, id=1),
                  1, "set_run_tag")
    assert_denied(tool(live.url, "delete_run", {"run_id": "r"}, session=session, id=2), 2, "delete_run", DELETE_REASON)
    assert_forwarded(tool(live.url, "get_run", {"run_id": "r"}, session=session, id=3), 3)
    use_query_runs(live.url, session, LIMIT - 3)
    assert_limited(tool(live.url, "query_runs", {"experiment_ids": ["0"]}, session=session, id=4), 4)
    assert forwarded_tools(upstream) == ["get_run"] + ["query_runs"] * (LIMIT - 3)

    # Fixing the file is picked up as usual: a rejected edit leaves nothing stuck.
    def fixed(p: dict) -> None:
        p.clear()
        p.update(before, tools={**before["tools"], "set_run_tag": {}})

    live.edit(fixed, "3")
    live.wait_applied("3")
    assert_forwarded(tool(live.url, "set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, session=session, id=5), 5)
    assert_limited(tool(live.url, "query_runs", {"experiment_ids": ["0"]}, session=session, id=6), 6)
    assert int(t_start) // HOUR == int(time.time()) // HOUR, "the test ran across an hour boundary"
