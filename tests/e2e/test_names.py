"""Names a server could read otherwise than the policy does (issue 14) and control characters in methods and
names (issue 17), through a real Envoy and the recording upstream:

- every class of look-alike (letter case, fullwidth forms, mathematical letters, circled letters, the Kelvin
  sign, a ligature) of a deny, hide (name and glob), require_approval, rate-limited and conditioned key, and of a
  denied prompt, under default allow and default deny: refused -31001 naming the key (not a hidden one), nothing
  forwarded; the keys themselves still decided by their rules;
- every class of malformed name (white space at an end, zero-width and bidi characters, soft hyphen, variation
  selector, control characters): refused -32602, HTTP 400, the id echoed, nothing forwarded;
- issue 17's bodies (a raw 0x7F or an escaped control character in the method or the tool name), with request
  headers held and streamed, over HTTP/1.1 and h2: a JSON-RPC error (-32600 for methods, -32602 for names), HTTP
  400, the id echoed, nothing forwarded, never Envoy's plain-text 503; and a name beyond ASCII is exported as is.
"""
from __future__ import annotations

import json

import pytest

from conftest import held_proxy
from support import DENIED, INVALID_PARAMS, INVALID_REQUEST, assert_rpc_error, send, send_h2

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


# ------------------------------------------------------------------------------------------------ issue 17

ISSUE_17 = [
    (b'{"jsonrpc":"2.0","id":3,"method":"tool\x7f/call","params":{"name":"search_runs","arguments":{}}}', INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":3,"method":"x\x7fy","params":{}}', INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\x7frun","arguments":{}}}', INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\\u0001run","arguments":{}}}', INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":3,"method":"x\\u0001y"}', INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"p\\u001f"}}', INVALID_PARAMS),
]


@pytest.fixture(params=["held", "streamed"])
def allow_all(request, shared_envoy, upstream):
    return held_proxy(shared_envoy, upstream, {"version": "1", "default": "allow"}, request.param == "held")


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2"])
@pytest.mark.parametrize("body,code", ISSUE_17, ids=[f"body{i}" for i in range(len(ISSUE_17))])
def test_control_characters_get_a_json_rpc_error_not_a_503(allow_all, upstream, body, code, h2):
    upstream.clear()
    r = send_h2(allow_all.url, body) if h2 else send(allow_all.url, body)
    assert r.status != 503, r
    assert_rpc_error(r, 400, code, 3)
    upstream.assert_not_forwarded()


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
