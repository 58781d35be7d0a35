"""Istio: envoy/istio/wasmplugin.yaml and trafficextension.yaml (the same deployment in the two APIs), the OCI
recipe, and the manifests' policy run through Envoy the way an Istio sidecar runs it.

There is no Kubernetes here. What Istio does with a WasmPlugin that matters to the filter is reproduced: the
policy from ``pluginConfig`` is handed to the filter as JSON in a google.protobuf.StringValue, and the Wasm filter
is configured WITHOUT ``allow_on_headers_stop_iteration`` (a WasmPlugin cannot set it), which is why the policy
must say ``hold_headers: false``.
"""
from __future__ import annotations

import json

import yaml

from conftest import REPO
from support import assert_denied, call, encode, post

ISTIO = REPO / "envoy" / "istio"
DELETE_REASON = "Deleting MLflow data is not allowed for agents"
TAG_REASON = 'Agents may only set tags whose key starts with "agent."'


def manifest(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((ISTIO / name).read_text()))
    return doc


def test_wasmplugin_manifest():
    wp = manifest("wasmplugin.yaml")
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin"
    spec = wp["spec"]
    assert spec["phase"] == "AUTHZ"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["url"].startswith("oci://")
    assert spec["selector"]["matchLabels"] and spec["match"] == [{"mode": "SERVER", "ports": [{"number": 8001}]}]
    assert spec["pluginConfig"]["hold_headers"] is False


def test_trafficextension_is_the_same_deployment():
    """TrafficExtension (Istio 1.30+) carries the same settings, the Wasm ones under spec.wasm; the policy is the
    WasmPlugin's byte for byte once parsed (so checking one checks both)."""
    wp, te = manifest("wasmplugin.yaml")["spec"], manifest("trafficextension.yaml")
    assert te["apiVersion"] == "extensions.istio.io/v1alpha1" and te["kind"] == "TrafficExtension"
    spec = te["spec"]
    for key in ("selector", "match", "phase"):
        assert spec[key] == wp[key], key
    for key in ("url", "imagePullPolicy", "failStrategy", "type", "pluginConfig"):
        assert spec["wasm"][key] == wp[key], key
    assert "lua" not in spec


def test_containerfile_puts_the_built_module_at_plugin_wasm():
    lines = [ln.strip() for ln in (ISTIO / "Containerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines == ["FROM scratch", "COPY target/wasm32-wasip1/release/mcp_policy.wasm /plugin.wasm"]
    makefile = (REPO / "Makefile").read_text()
    assert "WASM   := target/$(TARGET)/release/mcp_policy.wasm" in makefile and "TARGET := wasm32-wasip1" in makefile
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore and "!target/wasm32-wasip1/release/mcp_policy.wasm" in ignore


def test_manifest_policy_in_an_istio_like_envoy(envoy, upstream):
    """The manifest's pluginConfig, as Istio hands it over (JSON), in an Envoy without held headers."""
    policy = json.dumps(manifest("wasmplugin.yaml")["spec"]["pluginConfig"])
    e = envoy(policy, upstream.port, hold_headers=False)
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
