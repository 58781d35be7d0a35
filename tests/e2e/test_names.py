"""Names a server could read otherwise than the policy does (issue 14), through a real Envoy and the recording
upstream:

- every class of look-alike (letter case, fullwidth forms, mathematical letters, circled letters, the Kelvin
  sign, a ligature) of a deny, hide (name and glob), require_approval, rate-limited and conditioned key, and of a
  denied prompt, under default allow and default deny: refused -31001 naming the key (not a hidden one), nothing
  forwarded; the keys themselves still decided by their rules;
- every class of malformed name (white space at an end, zero-width and bidi characters, soft hyphen, variation
  selector, control characters): refused -32602, HTTP 400, the id echoed, nothing forwarded;
- a name beyond ASCII (and without such characters) is forwarded and exported as is, headers held or streamed.

Issue 17's bodies (control characters in methods and names: a JSON-RPC error, never Envoy's 503) are in
test_control_chars.py.
"""
from __future__ import annotations

import json

import pytest

from conftest import held_proxy
from support import DENIED, INVALID_PARAMS, assert_rpc_error, send

KEYS_POLICY = {
    "version": "1",
    "approval": {"cluster": "approvals"},
    "hide": ["secret_tool", "vault_*"],
    "tools": {
        "delete_run": {"action": "deny", "reason": "no deletes"},
        "approve_me": {"action": "require_approval"},
        "limited": {"rate_limit": "1000/minute"},
        "checked": {"conditions": [{"path": "args.n", "op": "lt", "value": 5}]},
        "kill_job": {"action": "deny"},
        "file_read": {"action": "deny"},
        "get_run": {},
    },
    "prompts": {"admin": {"action": "deny"}},
}


def moved(name: str, a: int, low_line: str | None = None) -> str:
    """The letters of `name` in the block of Latin letters starting at `a` (and `_` as `low_line`)."""
    return "".join(chr(ord(c) - 0x61 + a) if "a" <= c <= "z" else (low_line or c) if c == "_" else c for c in name)


def look_alikes(key: str) -> list[str]:
    out = [key.upper(), key[0].upper() + key[1:], moved(key, 0xFF41, "\uFF3F"), moved(key, 0x1D41A),
           moved(key, 0x24D0)]
    if "k" in key:
        out.append(key.replace("k", "\u212A"))
    if "fi" in key:
        out.append(key.replace("fi", "\uFB01"))
    return out


def malformed(key: str) -> list[str]:
    a, b = key[:3], key[3:]
    return [f" {key}", f"{key} ", f"{key}\u00a0", f"{a}\u200b{b}", f"{a}\u200d{b}", f"\u202e{key}", f"{key}\u2066",
            f"{a}\u00ad{b}", f"{key}\ufe0f", f"{key}\u0001", f"{key}\u007f", f"{a}\u2028{b}"]


def call_body(name: str, id: int, method: str = "tools/call") -> bytes:
    params = {"name": name, "arguments": {"n": 1}} if method == "tools/call" else {"name": name}
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).encode()


@pytest.fixture(params=["allow", "deny"])
def proxy(request, shared_envoy, upstream):
    return held_proxy(shared_envoy, upstream, {**KEYS_POLICY, "default": request.param}, True)


GOVERNED = ["delete_run", "approve_me", "limited", "checked", "secret_tool", "vault_key", "kill_job", "file_read"]


@pytest.mark.parametrize("key", GOVERNED)
def test_look_alikes_of_governed_keys_are_refused(proxy, upstream, key):
    for i, name in enumerate(look_alikes(key)):
        upstream.clear()
        r = send(proxy.url, call_body(name, i))
        msg = assert_rpc_error(r, 200, DENIED, i)
        data = msg["error"]["data"]
        assert data["decision"] == "deny" and data["tool"] == name, msg
        if name.startswith("vault_"):
            # The glob `vault_*` matches it as written (`vault_\u212Aey`): hidden, not a look-alike.
            assert data["reason"] == "hidden by policy", msg
        elif key.startswith(("secret", "vault")):
            assert data["reason"] == f"'{name}' is a look-alike of a tool hidden by policy", msg
        else:
            assert f"look-alike of the policy key '{key}'" in data["reason"], msg
        upstream.assert_not_forwarded()


@pytest.mark.parametrize("key", GOVERNED)
def test_malformed_names_are_invalid_params(proxy, upstream, key):
    for i, name in enumerate(malformed(key)):
        upstream.clear()
        r = send(proxy.url, call_body(name, i))
        msg = assert_rpc_error(r, 400, INVALID_PARAMS, i)
        assert msg["error"]["message"].startswith("Invalid params: the tool name "), msg
        upstream.assert_not_forwarded()


def test_the_keys_themselves_and_prompts(proxy, upstream):
    upstream.clear()
    assert_rpc_error(send(proxy.url, call_body("delete_run", 1)), 200, DENIED, 1)
    upstream.assert_not_forwarded()
    r = send(proxy.url, call_body("get_run", 2))
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", r
    for i, name in enumerate(["ADMIN", "ａｄｍｉｎ", "\u200badmin"], start=3):
        upstream.clear()
        r = send(proxy.url, call_body(name, i, "prompts/get"))
        if "\u200b" in name:
            assert_rpc_error(r, 400, INVALID_PARAMS, i)
        else:
            assert "look-alike of the policy key 'admin'" in assert_rpc_error(r, 200, DENIED, i)["error"]["data"]["reason"]
        upstream.assert_not_forwarded()


# ------------------------------------------------------------------------------- names beyond ASCII

@pytest.fixture(params=["held", "streamed"])
def allow_all(request, shared_envoy, upstream):
    return held_proxy(shared_envoy, upstream, {"version": "1", "default": "allow"}, request.param == "held")


def test_names_beyond_ascii_are_exported_as_they_are(allow_all, upstream):
    """obs-text (UTF-8 beyond ASCII) is a header value Envoy accepts: the call is forwarded, the header set."""
    upstream.clear()
    body = call_body("café_run", 9)
    r = send(allow_all.url, body)
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", r
    (got,) = [x for x in upstream.snapshot() if x.complete or x.body]
    assert got.body == body
    if upstream.strict:  # held headers: exported (streamed headers left before the body was read)
        assert got.headers.get("x-mcp-method") == "tools/call", got.headers
        # http.server reads header bytes as Latin-1.
        assert got.headers["x-mcp-tool"].encode("latin-1").decode() == "café_run", got.headers
