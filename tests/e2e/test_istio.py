"""Istio: envoy/istio/wasmplugin.yaml and trafficextension.yaml (the same deployment in the two APIs), the OCI
recipe, and the manifests' policy run through Envoy the way an Istio sidecar runs it.

There is no Kubernetes here. What Istio does with a WasmPlugin that matters to the filter is reproduced, as
Istio's pilot writes it (pilot/pkg/model/extensions.go, buildWasmConfig and buildVMConfig): the plugin is named
``<namespace>.<name>``, its ``root_id`` is the manifest's ``pluginName`` (empty when unset, as here), the VM has no
``vm_id``, FAIL_CLOSE becomes ``failure_policy: FAIL_CLOSED``, the policy from ``pluginConfig`` arrives as JSON in
a google.protobuf.StringValue, and ``allow_on_headers_stop_iteration`` is not set (neither API has a field for it),
which is why the policy must say ``hold_headers: false``. And what Istio's agent puts in the plugin's place when
the image cannot be fetched under FAIL_CLOSE (pkg/wasm/convert.go): a deny-all RBAC filter.
"""
from __future__ import annotations

import json
import time

import yaml

from conftest import REPO, render_bootstrap
from support import assert_denied, assert_rpc_error, call, encode, post, send

ISTIO = REPO / "envoy" / "istio"
DELETE_REASON = "Deleting MLflow data is not allowed for agents"
TAG_REASON = 'Agents may only set tags whose key starts with "agent."'


def manifest(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((ISTIO / name).read_text()))
    return doc


def assert_wasmplugin(wp: dict) -> None:
    """A WasmPlugin for the MCP server's pods as this project deploys it (also what `mcp-policy render` writes)."""
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin"
    spec = wp["spec"]
    assert spec["phase"] == "AUTHZ"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["url"].startswith("oci://")
    assert spec["selector"]["matchLabels"] and spec["match"] == [{"mode": "SERVER", "ports": [{"number": 8001}]}]
    assert spec["pluginConfig"]["hold_headers"] is False


def test_wasmplugin_manifest():
    assert_wasmplugin(manifest("wasmplugin.yaml"))


def assert_same_deployment(wp: dict, te: dict) -> None:
    """TrafficExtension (Istio 1.30+) carries the same settings as the WasmPlugin ``wp``, the Wasm ones under
    spec.wasm; the policy is the WasmPlugin's byte for byte once parsed (so checking one checks both)."""
    wp = wp["spec"]
    assert te["apiVersion"] == "extensions.istio.io/v1alpha1" and te["kind"] == "TrafficExtension"
    spec = te["spec"]
    for key in ("selector", "match", "phase"):
        assert spec[key] == wp[key], key
    for key in ("url", "imagePullPolicy", "failStrategy", "type", "pluginConfig"):
        assert spec["wasm"][key] == wp[key], key
    assert "lua" not in spec


def test_trafficextension_is_the_same_deployment():
    assert_same_deployment(manifest("wasmplugin.yaml"), manifest("trafficextension.yaml"))


def test_containerfile_puts_the_built_module_at_plugin_wasm():
    lines = [ln.strip() for ln in (ISTIO / "Containerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines == ["FROM scratch", "COPY target/wasm32-wasip1/release/mcp_policy.wasm /plugin.wasm"]
    makefile = (REPO / "Makefile").read_text()
    assert "WASM   := target/$(TARGET)/release/mcp_policy.wasm" in makefile and "TARGET := wasm32-wasip1" in makefile
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore and "!target/wasm32-wasip1/release/mcp_policy.wasm" in ignore


def istio_bootstrap(doc: dict, upstream_port: int) -> dict:
    """envoy/envoy.yaml with its Wasm filter configured the way Istio configures this WasmPlugin."""
    spec = doc["spec"]
    cfg = render_bootstrap(json.dumps(spec["pluginConfig"]), upstream_port, hold_headers=False,
                           failure_policy={"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN"}[spec["failStrategy"]])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    plugin = wasm["typed_config"]["config"]
    plugin["name"] = f"{doc['metadata']['namespace']}.{doc['metadata']['name']}"
    plugin["root_id"] = spec.get("pluginName", "")
    del plugin["vm_config"]["vm_id"]
    del plugin["allow_on_headers_stop_iteration"]
    return cfg


def test_manifest_policy_in_an_istio_like_envoy(envoy, upstream):
    """The manifest's pluginConfig, as Istio hands it over (JSON), in an Envoy without held headers."""
    doc = manifest("wasmplugin.yaml")
    assert "pluginName" not in doc["spec"] and "vmConfig" not in doc["spec"]
    e = envoy(None, upstream.port, bootstrap=istio_bootstrap(doc, upstream.port), component_log_level="wasm:info")
    upstream.strict = False  # headers may go ahead of the decision; no body byte may

    allowed = encode(call("get_run", {"run_id": "r1"}, id=1))
    r = post(e.url, call("get_run", {"run_id": "r1"}, id=1), headers={"x-mcp-tool": "forged"})
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    upstream.assert_forwarded(allowed)
    (rec,) = [x for x in upstream.snapshot() if x.complete]
    # Without held headers the filter cannot set x-mcp-tool, but the client's forged copy is still removed.
    assert "x-mcp-tool" not in rec.headers, rec.headers

    upstream.clear()
    assert_denied(post(e.url, call("delete_run", {"run_id": "r1"}, id=2)), 2, "delete_run", DELETE_REASON)
    assert_denied(post(e.url, call("set_run_tag", {"run_id": "r1", "key": "owner", "value": "x"}, id=3)),
                  3, "set_run_tag", TAG_REASON)
    assert_denied(post(e.url, call("create_run", {"experiment_id": "0"}, id=4)), 4, "create_run")
    upstream.assert_not_forwarded()

    upstream.clear()
    tag = call("set_run_tag", {"run_id": "r1", "key": "agent.note", "value": "x"}, id=5)
    r = post(e.url, tag)
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    upstream.assert_forwarded(encode(tag))

    # Rate limits count without a vm_id too (shared data of the VM Istio's configuration makes): 10/hour.
    left = 3600 - time.time() % 3600
    if left < 10:
        time.sleep(left + 0.05)
    session = {"mcp-session-id": "istio-session"}
    for i in range(10):
        r = post(e.url, call("query_runs", {"experiment_id": "0"}, id=100 + i), headers=session)
        assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    assert_rpc_error(post(e.url, call("query_runs", {"experiment_id": "0"}, id=110), headers=session), 200, -31002, 110)
    # Audit lines carry the plugin's name as Istio gives it (Envoy leaves out the empty root id and vm id).
    assert "wasm log mcp.mcp-policy: {" in e.log_text(), e.log_text()[-2000:]


def test_an_unfetchable_image_under_fail_close_is_a_deny_all_rbac_filter(envoy, upstream):
    """When the agent cannot fetch or unpack the image of a FAIL_CLOSE plugin, it replaces the plugin with this
    RBAC filter (istio/istio pkg/wasm/convert.go, denyHTTPTypedConfig): the README and the WasmPlugin's header say
    what a client then gets, a 403 "RBAC: access denied", and where it is counted (`wasm-default-deny`)."""
    doc = manifest("wasmplugin.yaml")
    assert doc["spec"]["failStrategy"] == "FAIL_CLOSE"
    cfg = istio_bootstrap(doc, upstream.port)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (i,) = [n for n, f in enumerate(hcm["http_filters"]) if f["name"] == "envoy.filters.http.wasm"]
    hcm["http_filters"][i] = {"name": "mcp.mcp-policy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {}, "rules_stat_prefix": "wasm-default-deny"}}
    e = envoy(None, upstream.port, bootstrap=cfg)
    r = send(e.url, encode(call("get_run", {"run_id": "r1"})))
    assert (r.status, r.body) == (403, b"RBAC: access denied"), str(r)
    assert upstream.snapshot() == []
    stats = e.stats("wasm-default-deny")
    assert any(name.endswith("rbac.wasm-default-deny.denied") and value == 1 for name, value in stats.items()), stats
