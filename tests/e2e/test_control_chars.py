"""Issue 17: a control character in a method or a tool name (raw DEL, or a JSON escape such as \\u0001) must get
the filter's JSON-RPC error (HTTP 400, the request's id), never Envoy's plain-text 503 "invalid header value for:
x-mcp-method" (which it gave when such a name reached the exported headers), and nothing is forwarded.
Each body through a real Envoy, headers held and streamed, over HTTP/1.1 and HTTP/2 (h2c).
"""
from __future__ import annotations

import pytest

from conftest import EXAMPLE_POLICY, held_proxy
from support import INVALID_PARAMS, INVALID_REQUEST, assert_rpc_error, send, send_h2

# The bodies of the issue, byte for byte, and the code each must get.
BODIES = [
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"tool\x7f/call","params":{"name":"search_runs","arguments":{}}}',
                 INVALID_REQUEST, "U+007F", id="raw-DEL-in-tools/call"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"x\x7fy","params":{}}',
                 INVALID_REQUEST, "U+007F", id="raw-DEL-in-other-method"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\x7frun","arguments":{}}}',
                 INVALID_PARAMS, "U+007F", id="raw-DEL-in-tool-name"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get\\u0001run","arguments":{}}}',
                 INVALID_PARAMS, "U+0001", id="escaped-U+0001-in-tool-name"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"notifications/x\\u001b","params":{}}',
                 INVALID_REQUEST, "U+001B", id="escaped-ESC-in-notification-method"),
    # And their kin (issue 14): a method that is no MCP method, a prompt name.
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"x\\u0001y"}',
                 INVALID_REQUEST, "U+0001", id="escaped-U+0001-in-other-method"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"p\\u001f"}}',
                 INVALID_PARAMS, "U+001F", id="escaped-U+001F-in-prompt-name"),
]

# A policy under which every one of these names would otherwise be forwarded (default allow).
ALLOW_ALL = {**EXAMPLE_POLICY, "default": "allow"}


@pytest.fixture(params=["held", "streamed"])
def proxy(request, shared_envoy, upstream):
    return held_proxy(shared_envoy, upstream, ALLOW_ALL, request.param == "held")


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize("body,code,named", BODIES)
def test_control_characters_get_a_jsonrpc_error_not_a_503(proxy, upstream, http2, body, code, named):
    r = send_h2(proxy.url, body) if http2 else send(proxy.url, body)
    assert r.status != 503, r
    err = assert_rpc_error(r, 400, code, 3)["error"]
    assert "control character" in err["message"] and named in err["message"], err
    upstream.assert_not_forwarded()


def test_an_allowed_call_after_them_is_forwarded(proxy, upstream):
    """The worker keeps serving: the next, clean call goes through with its exported headers."""
    send(proxy.url, b'{"jsonrpc":"2.0","id":3,"method":"x\x7fy","params":{}}')
    upstream.clear()
    body = b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_run","arguments":{}}}'
    r = send(proxy.url, body)
    assert r.status == 200, r
    upstream.assert_forwarded(body, "POST")
