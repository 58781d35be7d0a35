"""envoy/policy.schema.json (JSON Schema draft 2020-12) against the filter's own validation (`mcp-policy check`,
the built CLI: `make cli`):

- every policy in the repository validates: JSON files, the policies inside Envoy YAML (the Wasm filter's
  ``configuration.value``) and Istio manifests (``pluginConfig``), and the complete policies in README.md, docs/*.md and
  POLICY.md;
- bad samples the filter rejects are rejected by the schema too, good samples are accepted by both;
- what the schema cannot say (duplicate keys, regex syntax, 10.0 for 10, numbers past 64 bits) is listed as such:
  the filter rejects those samples and the schema lets them pass, as README says.
"""
from __future__ import annotations

import json
import pathlib
import re
import subprocess

import jsonschema
import pytest
import yaml

from conftest import REPO

CLI = REPO / "target" / "release" / "mcp-policy"
SCHEMA = json.loads((REPO / "envoy" / "policy.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
WASM_TYPE = "envoy.extensions.filters.http.wasm.v3.Wasm"


def check(text: str) -> subprocess.CompletedProcess:
    if not CLI.exists():
        pytest.fail(f"{CLI.relative_to(REPO)} is missing: run `make cli`")
    return subprocess.run([str(CLI), "check", "-"], input=text, capture_output=True, text=True, timeout=30)


def schema_errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    # additionalProperties: false on every object the policy has.
    def objects(node, path="#"):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield path, node
            for k, v in node.items():
                yield from objects(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from objects(v, f"{path}/{i}")

    found = dict(objects(SCHEMA))
    assert len(found) >= 8, found.keys()
    for path, node in found.items():
        closed = node.get("additionalProperties") is False or isinstance(node.get("additionalProperties"), dict)
        assert closed, f"{path} is open to unknown fields"


# --------------------------------------------------------------------------------------------------
# Every policy in the repository
# --------------------------------------------------------------------------------------------------

def _wasm_policies(node, where: str):
    if isinstance(node, dict):
        if str(node.get("@type", "")).rsplit("/", 1)[-1] == WASM_TYPE:
            value = node.get("config", {}).get("configuration", {}).get("value")
            if isinstance(value, str):
                yield where, json.loads(value)
            return
        if node.get("apiVersion", "").startswith("extensions.istio.io/"):
            if node.get("kind") == "WasmPlugin":
                yield f"{where} WasmPlugin", node["spec"]["pluginConfig"]
                return
            if node.get("kind") == "TrafficExtension":
                yield f"{where} TrafficExtension", node["spec"]["wasm"]["pluginConfig"]
                return
        for k, v in node.items():
            yield from _wasm_policies(v, where)
    elif isinstance(node, list):
        for v in node:
            yield from _wasm_policies(v, where)


def repository_policies() -> list[tuple[str, dict]]:
    found = []
    files = sorted((REPO / "envoy").rglob("*.json")) + [REPO / "bench" / "policy.json"]
    for f in files:
        if f.name == "policy.schema.json":
            continue
        doc = json.loads(f.read_text())
        if isinstance(doc, dict) and "version" in doc:
            found.append((str(f.relative_to(REPO)), doc))
    for f in sorted((REPO / "envoy").rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            found += list(_wasm_policies(doc, f"{f.relative_to(REPO)}#{i}"))
    return found


def documented_policies() -> list[tuple[str, dict]]:
    """The ```json blocks of README.md, POLICY.md and docs/*.md that are whole policies (fragments are skipped)."""
    found = []
    names = ["README.md", "POLICY.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
    for name in names:
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", (REPO / name).read_text(), re.S)):
            try:
                doc = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "version" in doc:
                found.append((f"{name} json block {i}", doc))
    return found


def test_every_policy_in_the_repository_validates():
    policies = repository_policies()
    # The same policies `make check-policies` checks: the CLI finds as many in the same files.
    files = sorted({w.split("#")[0] for w, _ in policies})
    r = subprocess.run([str(CLI), "check", *files], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count(": ok (") == len(policies), (r.stdout, [w for w, _ in policies])
    names = {w.split("#")[0] for w, _ in policies}
    for must in ("envoy/policies/mlflow-mcp.json", "envoy/policies/server-everything.json", "envoy/envoy.yaml",
                 "envoy/istio/wasmplugin.yaml", "envoy/istio/trafficextension.yaml", "envoy/examples/approval.yaml"):
        assert must in names, names
    bad = {w: schema_errors(doc) for w, doc in policies if schema_errors(doc)}
    assert not bad, bad


def test_documented_policies_validate():
    docs = documented_policies()
    assert len(docs) >= 3, [w for w, _ in docs]
    for where, doc in docs:
        assert schema_errors(doc) == [], where
        r = check(json.dumps(doc))
        assert r.returncode == 0, (where, r.stdout)


# --------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------

def P(**fields) -> str:
    return json.dumps({"version": "1", **fields})


def rule(r: dict) -> str:
    return P(tools={"x": r})


def cond(c: dict) -> str:
    return rule({"conditions": [c]})


PEER = {"peer_certificate": True}
JWT = {"jwt": {"metadata": "jwt_payload", "subject": "sub", "groups": "realm_access.roles"}}

BAD = {
    "empty object (no version)": "{}",
    "version as a number": '{"version": 1}',
    "unknown version": '{"version": "2"}',
    "unknown top-level field": P(defualt="deny"),
    "invalid default": P(default="alow"),
    "max_body_bytes 0": P(max_body_bytes=0),
    "max_body_bytes over 64 MiB": P(max_body_bytes=67108865),
    "hold_headers as a string": P(hold_headers="false"),
    "unknown mode": P(mode="strict"),
    "export_headers not a boolean or object": P(export_headers="yes"),
    "export_headers invalid header name": P(export_headers={"tool": "x mcp"}),
    "export_headers unknown field": P(export_headers={"tools": "x-mcp-tool"}),
    "hide not a list": P(hide="delete_*"),
    "hide with a bracket glob": P(hide=["[abc]"]),
    "tools not an object": P(tools=["get_run"]),
    "empty tool key": P(tools={"": {}}),
    "bracket in a tool key": P(tools={"get_[x]": {}}),
    "rule not an object": P(tools={"x": True}),
    "unknown rule field": rule({"acton": "allow"}),
    "invalid rule action": rule({"action": "block"}),
    "empty reason": rule({"reason": ""}),
    "blank reason": rule({"reason": "   "}),
    "conditions on a deny rule": rule({"action": "deny", "conditions": [{"path": "args.a", "op": "eq", "value": 1}]}),
    "rate limit on a deny rule": rule({"action": "deny", "rate_limit": "1/minute"}),
    "conditions not a list": rule({"conditions": {"path": "args.a", "op": "eq", "value": 1}}),
    "condition not an object": rule({"conditions": ["args.a == 1"]}),
    "condition path without args": cond({"path": "max_results", "op": "lte", "value": 100}),
    "condition path with an empty segment": cond({"path": "args..a", "op": "eq", "value": 1}),
    "condition path not a string": cond({"path": 1, "op": "eq", "value": 1}),
    "condition unknown op": cond({"path": "args.a", "op": "lt3", "value": 1}),
    "condition missing op": cond({"path": "args.a", "value": 1}),
    "condition missing value": cond({"path": "args.a", "op": "eq"}),
    "condition missing path": cond({"op": "eq", "value": 1}),
    "condition unknown field": cond({"path": "args.a", "op": "eq", "value": 1, "negate": True}),
    "lt with a string": cond({"path": "args.a", "op": "lt", "value": "10"}),
    "gte with null": cond({"path": "args.a", "op": "gte", "value": None}),
    "in with a string": cond({"path": "args.a", "op": "in", "value": "a,b"}),
    "not_in with an object": cond({"path": "args.a", "op": "not_in", "value": {"a": 1}}),
    "exists with a string": cond({"path": "args.a", "op": "exists", "value": "yes"}),
    "regex with a number": cond({"path": "args.a", "op": "regex", "value": 5}),
    "rate limit unknown unit": rule({"rate_limit": "10/fortnight"}),
    "rate limit zero": rule({"rate_limit": "0/minute"}),
    "rate limit without a count": rule({"rate_limit": "/minute"}),
    "rate limit negative": rule({"rate_limit": "-5/minute"}),
    "rate limit empty list": rule({"rate_limit": []}),
    "rate limit a number": rule({"rate_limit": 10}),
    "rate limit without window": rule({"rate_limit": {"max": 10}}),
    "rate limit without max": rule({"rate_limit": {"window": 60}}),
    "rate limit max 0": rule({"rate_limit": {"max": 0, "window": 60}}),
    "rate limit max fractional": rule({"rate_limit": {"max": 1.5, "window": 60}}),
    "rate limit window 0": rule({"rate_limit": {"max": 1, "window": 0}}),
    "rate limit unknown window": rule({"rate_limit": {"max": 1, "window": "week"}}),
    "rate limit unknown scope": rule({"rate_limit": {"max": 1, "window": 60, "scope": "user"}}),
    "rate limit cost not a path": rule({"rate_limit": {"max": 1, "window": 60, "cost": "amount"}}),
    "rate limit unknown field": rule({"rate_limit": {"max": 1, "window": 60, "burst": 5}}),
    "a bad limit in a list": rule({"rate_limit": ["10/minute", "1/week"]}),
    "identity not an object": P(identity=["x-agent-id"]),
    "identity empty headers": P(identity={"headers": []}),
    "identity invalid header": P(identity={"headers": ["x agent"]}),
    "identity max_tracked 0": P(identity={"max_tracked": 0}),
    "identity max_tracked too big": P(identity={"max_tracked": 2000000}),
    "identity unknown field": P(identity={"header": ["x"]}),
    "approval not an object": P(approval="approvals"),
    "approval without cluster": P(approval={"path": "/approve"}),
    "approval empty cluster": P(approval={"cluster": " "}),
    "approval cluster over two lines": P(approval={"cluster": "a\nb"}),
    "approval path without a slash": P(approval={"cluster": "a", "path": "approve"}),
    "approval timeout 0": P(approval={"cluster": "a", "timeout_ms": 0}),
    "approval timeout over an hour": P(approval={"cluster": "a", "timeout_ms": 3600001}),
    "approval pseudo-header": P(approval={"cluster": "a", "headers": {":authority": "x"}}),
    "approval header value over two lines": P(approval={"cluster": "a", "headers": {"x-a": "1\r\n2"}}),
    "approval unknown field": P(approval={"cluster": "a", "url": "http://x"}),
    "default require_approval without approval": P(default="require_approval"),
    "a rule require_approval without approval": rule({"action": "require_approval"}),
    "a prompt rule require_approval without approval": P(prompts={"p": {"action": "require_approval"}}),
    "resources_default require_approval without approval": P(resources_default="require_approval"),
    "invalid prompts_default": P(prompts_default="block"),
    "resources not an object": P(resources="file:///*"),
    "filter_tools_list as a number": P(filter_tools_list=1),
    "rate_limit_service not an object": P(rate_limit_service="ratelimit"),
    "rate_limit_service without cluster": P(rate_limit_service={"domain": "d"}),
    "rate_limit_service empty domain": P(rate_limit_service={"cluster": "rl", "domain": ""}),
    "rate_limit_service timeout 0": P(rate_limit_service={"cluster": "rl", "timeout_ms": 0}),
    "rate_limit_service timeout over a minute": P(rate_limit_service={"cluster": "rl", "timeout_ms": 60001}),
    "rate_limit_service unknown on_error": P(rate_limit_service={"cluster": "rl", "on_error": "fail"}),
    "rate_limit_service unknown field": P(rate_limit_service={"cluster": "rl", "failure_mode_deny": True}),
    "unknown counted": rule({"rate_limit": {"max": 1, "window": 60, "counted": "envoy"}}),
    "counted service without a service": rule({"rate_limit": {"max": 1, "window": 60, "counted": "service"}}),
    "a window the service cannot count": P(rate_limit_service={"cluster": "rl"},
                                           tools={"x": {"rate_limit": {"max": 1, "window": 90}}}),
    "a window the service cannot count, in a list": P(rate_limit_service={"cluster": "rl"},
                                                      prompts={"p": {"rate_limit": ["1/minute", {"max": 1, "window": 7200}]}}),
    "a max past 32 bits counted by the service": P(rate_limit_service={"cluster": "rl"},
                                                   resources={"r": {"rate_limit": {"max": 4294967296, "window": 60}}}),
    "callers without a source": P(callers={}),
    "callers with peer_certificate false only": P(callers={"peer_certificate": False}),
    "callers.jwt without metadata": P(callers={"jwt": {"subject": "sub"}}),
    "a claim path with an empty segment": P(callers={"jwt": {"metadata": "m", "groups": "a..b"}}),
    "callers unknown field": P(callers={"mtls": True}),
    "profiles without callers": P(profiles=[{"name": "a", "match": {}}]),
    "profiles not a list": P(callers=PEER, profiles={"name": "a", "match": {}}),
    "a profile without a match": P(callers=PEER, profiles=[{"name": "a"}]),
    "a profile name with a dot": P(callers=PEER, profiles=[{"name": "a.b", "match": {}}]),
    "a top-level setting in a profile": P(callers=PEER, profiles=[{"name": "a", "match": {}, "mode": "audit"}]),
    "an unknown match key": P(callers=PEER, profiles=[{"name": "a", "match": {"group": ["g"]}}]),
    "a group with a wildcard": P(callers=JWT, profiles=[{"name": "a", "match": {"groups": ["ml-*"]}}]),
    "an empty groups list": P(callers=JWT, profiles=[{"name": "a", "match": {"groups": []}}]),
    "a profile rule requiring approval without approval":
        P(callers=PEER, profiles=[{"name": "a", "match": {}, "tools": {"t": {"action": "require_approval"}}}]),
    "an unknown scope": rule({"rate_limit": {"max": 1, "window": 60, "scope": "team"}}),
    "a window the service cannot count, in a profile": P(
        rate_limit_service={"cluster": "rl"}, callers=PEER,
        profiles=[{"name": "a", "match": {}, "tools": {"x": {"rate_limit": {"max": 1, "window": 90}}}}]),
    "counted service in a profile without a service": P(
        callers=PEER,
        profiles=[{"name": "a", "match": {}, "tools": {"x": {"rate_limit": {"max": 1, "window": 60, "counted": "service"}}}}]),
}

GOOD = {
    "minimal": '{"version": "1"}',
    "README's smallest policy": '{"version":"1","default":"deny","tools":{"get_run":{}}}',
    "every top-level field": P(
        default="allow", max_body_bytes=67108864, hold_headers=False, mode="audit", filter_tools_list=False,
        export_headers={"method": "x-m", "tool": "x_t"}, hide=["secret_*", "a?c"],
        identity={"headers": ["x-agent-id", "mcp-session-id"], "max_tracked": 1048576},
        approval={"cluster": "approvals", "authority": "approvals.internal", "path": "/v1/approve",
                  "timeout_ms": 3600000, "headers": {"authorization": "Bearer x", "x_y": ""}},
        tools={"get_*": {}, "t": {"action": "require_approval", "reason": "human", "rate_limit": "3/hour"}},
        prompts={"internal_*": {"action": "deny", "reason": "no"}}, prompts_default="require_approval",
        resources={"file:///public/*": {}}, resources_default="deny"),
    "export_headers false": P(export_headers=False),
    "deny rule with an empty conditions list": rule({"action": "deny", "conditions": []}),
    "rate limit strings": rule({"rate_limit": ["1/second", " 10 / minute ", "+5/hour", "007/day"]}),
    "rate limit objects": rule({"rate_limit": [{"max": 10, "window": 60}, {"max": 1, "window": "day", "scope": "global"},
                                              {"max": 100000, "window": "hour", "scope": "session", "cost": "args.amount"}]}),
    "every op": rule({"conditions": [
        {"path": "args.a", "op": "eq", "value": {"k": [1, None]}}, {"path": "args.a", "op": "neq", "value": None},
        {"path": "args.items.0", "op": "in", "value": [1, "a"]}, {"path": "args.b", "op": "not_in", "value": []},
        {"path": "args.n", "op": "lt", "value": 1.5}, {"path": "args.n", "op": "lte", "value": -1},
        {"path": "args.n", "op": "gt", "value": 0}, {"path": "args.n", "op": "gte", "value": 1e3},
        {"path": "args.s", "op": "regex", "value": "^prod-[a-z]+$"}, {"path": "args.s", "op": "contains", "value": "x"},
        {"path": "args", "op": "exists", "value": True}, {"path": "args.f", "op": "exists", "value": False}]}),
    "glob keys": P(tools={"*": {"action": "deny"}, "get_?": {}, "*_run": {"action": "deny", "reason": "r"}}),
    "unicode and spaces in keys": P(tools={"überprüfen": {}, "two words": {}}),
    "a rate limit service": P(rate_limit_service={"cluster": "ratelimit", "domain": "mcp-prod", "timeout_ms": 60000,
                                                  "on_error": "allow"},
                              tools={"a": {"rate_limit": ["5/second", {"max": 4294967295, "window": 86400},
                                                          {"max": 1, "window": "hour", "counted": "service"},
                                                          {"max": 9, "window": 90, "counted": "proxy"}]}}),
    "counted proxy without a service": rule({"rate_limit": {"max": 1, "window": 7, "counted": "proxy"}}),
    "callers and every profile field": P(
        callers={**JWT, **PEER, "required": True}, approval={"cluster": "a"},
        export_headers={"profile": "x-caller-profile"},
        tools={"t": {"rate_limit": [{"max": 1, "window": 60, "scope": "caller"}, "5/minute"]}},
        profiles=[{"name": "ml-admins", "match": {"subject": "a*", "groups": ["ml-admins"],
                                                   "principal": "spiffe://cluster.local/ns/*", "authenticated": True},
                   "inherit": False, "default": "require_approval", "hide": ["x"], "tools": {"t": {}},
                   "prompts": {"p": {}}, "prompts_default": "deny", "resources": {"file:///*": {}},
                   "resources_default": "allow"},
                  {"name": "anyone", "match": {}}]),
    "a claim path as a list": P(callers={"jwt": {"metadata": "https://issuer.example",
                                                 "groups": ["https://example.com/roles"]}}),
    "per-caller limits counted by the service, in a profile too": P(
        rate_limit_service={"cluster": "ratelimit"}, callers=JWT,
        tools={"a": {"rate_limit": ["10/minute", {"max": 5, "window": "hour", "scope": "caller"},
                                    {"max": 9, "window": 90, "counted": "proxy"}]}},
        profiles=[{"name": "ml-admins", "match": {"groups": ["ml-admins"]},
                   "tools": {"a": {"rate_limit": {"max": 50, "window": 60, "scope": "session"}}}}]),
}

# The filter rejects these; the schema cannot say why (README: "Beyond the schema").
BEYOND = {
    "a repeated key": '{"version": "1", "tools": {"a": {}, "a": {"action": "deny"}}}',
    "keys differing only in case": P(tools={"get_run": {}, "GET_RUN": {"action": "deny"}}),
    "an invalid regex": cond({"path": "args.a", "op": "regex", "value": "("}),
    "a whole number written 10.0": rule({"rate_limit": {"max": 10.0, "window": 60}}),
    "a count past 64 bits": rule({"rate_limit": "99999999999999999999/minute"}),
    "a count past 32 bits in the N/unit form, counted by the service": P(
        rate_limit_service={"cluster": "rl"}, tools={"x": {"rate_limit": "4294967296/minute"}}),
    "a cluster name protobuf would read as a message": P(rate_limit_service={"cluster": "H0"}),
    "two profiles with one name": P(callers=PEER, profiles=[{"name": "a", "match": {}}, {"name": "a", "match": {}}]),
    "a match on a source callers does not read": P(callers=PEER, profiles=[{"name": "a", "match": {"subject": "x"}}]),
    "scope caller without callers": rule({"rate_limit": {"max": 1, "window": 60, "scope": "caller"}}),
    "authenticated false with a principal":
        P(callers=PEER, profiles=[{"name": "a", "match": {"authenticated": False, "principal": "x"}}]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_samples_are_rejected_by_both(name):
    text = BAD[name]
    r = check(text)
    assert r.returncode == 1 and "invalid mcp-policy configuration" in r.stdout, (name, r.stdout)
    assert schema_errors(json.loads(text)), f"the schema accepts {name}: {text}"


@pytest.mark.parametrize("name", list(GOOD))
def test_good_samples_are_accepted_by_both(name):
    text = GOOD[name]
    r = check(text)
    assert r.returncode == 0, (name, r.stdout)
    assert schema_errors(json.loads(text)) == [], name


@pytest.mark.parametrize("name", list(BEYOND))
def test_beyond_the_schema(name):
    text = BEYOND[name]
    r = check(text)
    assert r.returncode == 1, (name, r.stdout)
    assert schema_errors(json.loads(text)) == [], f"the schema now catches {name}: update README and this list"


def test_samples_count():
    assert len(BAD) >= 20 and len(GOOD) >= 10
