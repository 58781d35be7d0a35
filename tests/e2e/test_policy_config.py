"""The policy as Envoy plugin configuration: invalid policies are refused by Envoy (the plugin's on_configure
fails and the error is logged), valid ones load; and the shipped envoy/ files agree with each other.

Issue 3 listed fields of later features (rate_limit, hide, identity, approval, action "require_approval") that had
to be refused with "not supported yet" until they existed; all have landed, so each is a validation case here."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import ENVOY_TEMPLATE, EXAMPLE_POLICY, REPO
from support import assert_denied, call, post

@pytest.mark.parametrize("policy,fragments", [
    ({"version": "1", "toolz": {}}, ["toolz"]),
    ({"version": "1", "tools": {"get_run": {"actoin": "allow"}}}, ["actoin"]),
    ({"version": "2"}, ["version"]),
    ({"version": 1}, ["version"]),
    ({"tools": {}}, ["version"]),
    ({"version": "1", "default": "maybe"}, ["default"]),
    ({"version": "1", "tools": {"get_run": {"action": "block"}}}, ["get_run", "action"]),
    ({"version": "1", "tools": {"get_run": {"conditions": [{"path": "args.run_id", "op": "regex", "value": "(a"}]}}},
     ["get_run", "regex"]),
    ({"version": "1", "tools": {"get_run": {"conditions": [{"path": "args.run_id", "op": "like", "value": "a"}]}}},
     ["get_run", "like"]),
    ({"version": "1", "max_body_bytes": "big"}, ["max_body_bytes"]),
    ({"version": "1", "tools": {"get_run": {"rate_limit": "lots"}}}, ["rate_limit"]),
    ({"version": "1", "tools": {"delete_*": {"action": "require_approval"}}}, ["require_approval"]),
    ({"version": "1", "hide": 5}, ["hide"]),
    ({"version": "1", "identity": 5}, ["identity"]),
    ({"version": "1", "approval": 5}, ["approval"]),
    # Every section of the documented format is implemented now: a bad prompts section is a validation error.
    ({"version": "1", "prompts": {"p": {"action": "nope"}}}, ["prompts", "action"]),
    ('{"version": "1", "tools": ', []),
    ('{"version": "1", "version": "1"}', ["version"]),
], ids=["unknown_field", "unknown_rule_field", "wrong_version", "version_number", "no_version", "bad_default",
        "bad_action", "bad_regex", "unknown_op", "max_body_bytes_type", "bad_rate_limit", "approval_without_section",
        "bad_hide", "bad_identity", "bad_approval", "bad_prompts", "not_json", "duplicate_key"])
def test_invalid_policy_is_refused(refused, policy, fragments):
    refused(policy, *fragments)


def test_minimal_policy_loads_and_denies_by_default(envoy, upstream):
    """Control for the refusals: a valid policy starts, and with no tools listed every call is denied."""
    e = envoy({"version": "1"}, upstream.port)
    assert_denied(post(e.url, call("get_run", {"run_id": "a"}, id=1)), 1, "get_run")
    assert upstream.snapshot() == []


def test_example_policy_file_matches_envoy_yaml():
    cfg = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    plugin = wasm["typed_config"]["config"]
    assert json.loads(plugin["configuration"]["value"]) == EXAMPLE_POLICY
    assert EXAMPLE_POLICY == json.loads((REPO / "envoy" / "policies" / "example.json").read_text())


def test_envoy_yaml_shape():
    """The contract of issue 3 for the shipped envoy/envoy.yaml."""
    cfg = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    (listener,) = cfg["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10000}
    max_body = EXAMPLE_POLICY.get("max_body_bytes", 1_048_576)
    assert listener["per_connection_buffer_limit_bytes"] > max_body
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route["match"] == {"prefix": "/mcp"} and route["route"]["timeout"] == "0s"
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
    plugin = hcm["http_filters"][0]["typed_config"]["config"]
    assert plugin["root_id"] == plugin["vm_config"]["vm_id"] == "mcp_policy"
    assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert plugin["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/mcp_policy.wasm"
    assert plugin["allow_on_headers_stop_iteration"] is True
    assert plugin["failure_policy"] == "FAIL_CLOSED"
    (cluster,) = cfg["static_resources"]["clusters"]
    ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert ep == {"address": "127.0.0.1", "port_value": 8001}
