"""Adversarial end-to-end suite (issue 7): the published bypass classes against MCP gateways, each through a
real Envoy + the filter in front of the recording upstream.

For every crafted request the test asserts the reply (HTTP status, JSON-RPC code, id) and what the upstream got:
nothing of a refused body (``Recorder.assert_not_forwarded``), or, for requests that must pass, exactly the bytes
the client sent (``Recorder.assert_forwarded``).

test_raw_http.py already covers the basic bad inputs (truncated JSON, a few invalid UTF-8 strings, the basic
duplicate keys, gzip/br/"identity, gzip", three content types, one Mcp-* mismatch each, sizes over HTTP/1.1 and
h2); this file does not repeat them. It adds the bypass classes on top, with raw HTTP/1.1 (byte-exact request
heads, duplicated headers, 1-byte chunks, trailers, Content-Length lies, pipelining) and h2c (small DATA frames,
an empty final DATA frame, trailers, duplicated headers, lying content-length) helpers of its own.

Most classes run twice: with request headers held until the body is decided (envoy/envoy.yaml) and without
("hold_headers": false, Istio's WasmPlugin), where the headers go upstream at once and only the body is held.

What the policy governs: tools/call (params.name, params.arguments), prompts/get (params.name) and resources/read
(params.uri). Every other method passes, also ones that name a prompt or a resource (completion/complete,
resources/subscribe): see ``test_ungoverned_methods_pass``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import socket
import threading
import time
import unicodedata
import urllib.parse
import zlib
from typing import Any

import pytest

from conftest import Raw, held_proxy, render_bootstrap
from support import (DELETE_REASON, DENIED, HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR,
                     SEARCH_REASON, Reply, assert_denied_error, assert_rpc_error, same_id, send)

# --------------------------------------------------------------------------------------------------------- policy

FILTER_REASON = "Free-form experiment filters are not allowed"
USER_TAG_REASON = "The mlflow.user tag is read-only"
STAGE_REASON = "Only a human moves a model to Production or Archived"
FORMAT_REASON = "Raw exports are not allowed"
PROMPT_REASON = "Prompts holding secrets are private"
RESOURCE_REASON = "Private files are off limits"

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "get_run": {},
        "get_*": {"action": "allow"},
        "log_metric": {},
        "delete_*": {"action": "deny", "reason": DELETE_REASON},
        "search_runs": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 100}],
                        "reason": SEARCH_REASON},
        # Conditions that hold when the argument is absent: a case variant of the key must not count as absent.
        "search_experiments": {"conditions": [{"path": "args.filter", "op": "exists", "value": False}],
                               "reason": FILTER_REASON},
        "set_tag": {"conditions": [{"path": "args.key", "op": "neq", "value": "mlflow.user"}],
                    "reason": USER_TAG_REASON},
        "transition_stage": {"conditions": [{"path": "args.stage", "op": "not_in",
                                             "value": ["Production", "Archived"]}],
                             "reason": STAGE_REASON},
        "export_run": {"conditions": [{"path": "args.options.format", "op": "neq", "value": "raw"}],
                       "reason": FORMAT_REASON},
    },
    "prompts": {"secret_*": {"action": "deny", "reason": PROMPT_REASON}, "admin": {"action": "deny"}},
    "resources_default": "deny",
    "resources": {
        "file:///public/*": {},
        "file:///public/private/*": {"action": "deny", "reason": RESOURCE_REASON},
        "mlflow://runs/*": {},
    },
}
SMALL_LIMIT = 64 * 1024
SMALL_POLICY = {**POLICY, "max_body_bytes": SMALL_LIMIT}
# Envoy's own buffers (the listener's per_connection_buffer_limit_bytes for HTTP/1.1, the h2 stream window for h2)
# below the policy's max_body_bytes (default 1 MiB): a body between the two cannot be held by Envoy, so Envoy
# itself refuses it (the README says to configure it the other way round). It must still never reach the upstream.
TIGHT_BUFFER = 64 * 1024


def default_deny(tool: str) -> str:
    return f"tool '{tool}' is not allowed by the policy (default deny)"


# ------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["held", "streamed"])
def held(request) -> bool:
    return request.param == "held"


@pytest.fixture
def proxy(shared_envoy, upstream, held):
    return held_proxy(shared_envoy, upstream, POLICY, held)


@pytest.fixture
def small_proxy(shared_envoy, upstream, held):
    return held_proxy(shared_envoy, upstream, SMALL_POLICY, held)


@pytest.fixture
def tight_proxy(shared_envoy, upstream, held):
    """Envoy's buffers below max_body_bytes: the listener's (HTTP/1.1) and the h2 stream window (which is what
    bounds an h2 stream's buffered body; by default 256 MiB)."""
    policy = POLICY if held else {**POLICY, "hold_headers": False}
    cfg = render_bootstrap(policy, upstream.port, hold_headers=held, buffer_limit=TIGHT_BUFFER)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http2_protocol_options"] = {"initial_stream_window_size": 65535, "initial_connection_window_size": 65535}
    return upstream.watch(shared_envoy(policy, upstream.port, bootstrap=cfg), strict=held)


# ----------------------------------------------------------------------------------------------- request helpers

def rpc(method: str, params: str | None = None, id: str | None = "1") -> bytes:
    """A JSON-RPC message written by hand (``params`` and ``id`` are raw JSON text), so escapes stay as written."""
    out = '{"jsonrpc":"2.0"' + (f',"id":{id}' if id is not None else "") + f',"method":"{method}"'
    if params is not None:
        out += f',"params":{params}'
    return (out + "}").encode()


def tool(name: str, args: str = "{}", id: str | None = "1", method: str = "tools/call") -> bytes:
    """A tools/call with ``name`` as raw JSON string content (escapes as written) and raw ``args``."""
    return rpc(method, f'{{"name":"{name}","arguments":{args}}}', id)


def prompt(name: str, id: str = "1") -> bytes:
    return rpc("prompts/get", f'{{"name":"{name}","arguments":{{}}}}', id)


def resource(uri: str, id: str = "1") -> bytes:
    return rpc("resources/read", f'{{"uri":"{uri}"}}', id)


@dataclasses.dataclass
class Exchange:
    """The answers read back from one raw HTTP/1.1 connection (several when requests were pipelined)."""
    replies: list[Reply]
    closed: bool  # the connection ended (EOF or reset) rather than the read timing out


def _read_reply(f) -> Reply | None:
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if 100 <= status < 200 or status in (204, 304):
        return Reply(status, headers, b"")
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(f.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline()
    else:
        body = f.read()
    return Reply(status, headers, body)


def exchange(port: int, parts: list[bytes], *, delay: float = 0.0, half_close: bool = False,
             expect: int | None = None, timeout: float = 5.0) -> Exchange:
    """Writes ``parts`` (``delay`` seconds apart, each its own TCP segment) on one fresh connection to 127.0.0.1 and
    reads every HTTP/1.1 answer until the proxy closes the connection (or says it will), ``expect`` answers came,
    or ``timeout`` passes. ``half_close`` shuts the write side after the last part (the client says it will send
    nothing more). Writing runs in a thread, so an early answer is read as sent rather than seen as a broken
    pipe."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def writer() -> None:
        with contextlib.suppress(OSError):
            for i, p in enumerate(parts):
                if i and delay:
                    time.sleep(delay)
                sock.sendall(p)
            if half_close:
                sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    replies, closed = [], False
    f = sock.makefile("rb")
    try:
        while True:
            r = _read_reply(f)
            if r is None:
                closed = True
                break
            replies.append(r)
            if expect is not None and len([x for x in replies if x.status >= 200]) >= expect:
                break
            if r.headers.get("connection", "").lower() == "close":
                closed = True  # (Envoy may wait for the client to close first: its delayed close)
                break
    except socket.timeout:
        pass
    except (OSError, ValueError, IndexError):
        closed = True
    finally:
        t.join(timeout)
        f.close()
        sock.close()
    return Exchange([r for r in replies if r.status >= 200], closed)


def head(port: int, headers: list[tuple[str, str]], *, method: str = "POST", path: str = "/mcp",
         content_type: str | None = "application/json", close: bool = True) -> bytes:
    """An HTTP/1.1 request head, headers in order (repeats allowed)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json, text/event-stream"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_raw(port: int, body: bytes, headers: list[tuple[str, str]], **kw) -> Reply:
    """One request with a Content-Length body and these (possibly repeated) headers; its one answer."""
    x = exchange(port, [head(port, [("Content-Length", str(len(body))), *headers], **kw) + body])
    assert len(x.replies) == 1, f"want one answer, got {x}"
    return x.replies[0]


def chunked(body: bytes, size: int, trailers: list[tuple[str, str]] | None = None, ext: str = "") -> list[bytes]:
    """``body`` as HTTP/1.1 chunks of ``size`` bytes (one part per chunk), then the last chunk and trailers."""
    parts = [b"%x%s\r\n%s\r\n" % (len(body[i:i + size]), ext.encode(), body[i:i + size])
             for i in range(0, len(body), size)]
    parts.append(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers or []) + b"\r\n")
    return parts


def send_chunked(port: int, body: bytes, size: int, *, headers: list[tuple[str, str]] | None = None,
                 trailers: list[tuple[str, str]] | None = None, ext: str = "", delay: float = 0.0) -> Reply:
    h = head(port, [("Transfer-Encoding", "chunked"), *(headers or [])])
    x = exchange(port, [h, *chunked(body, size, trailers, ext)], delay=delay)
    assert len(x.replies) == 1, f"want one answer, got {x}"
    return x.replies[0]


def send_h2(url: str, body: bytes, *, frame: int = 16384, headers: list[tuple[str, str]] | None = None,
            content_length: int | None | bool = True, trailers: list[tuple[str, str]] | None = None,
            empty_end: bool = False, pad: int = 0, method: str = "POST", timeout: float = 10.0) -> Reply:
    """One request over h2c (prior knowledge) with the body in DATA frames of at most ``frame`` bytes, honouring
    flow control. ``headers`` may repeat names. ``content_length``: True sends the real length, an int a lie,
    None none. ``empty_end``: the stream ends with an empty DATA frame after the body; ``trailers``: it ends with
    a trailers frame. ``pad``: bytes of padding in every DATA frame. A stream reset before any answer is returned
    as status 0 (body ``reset <code>``)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                                    validate_outbound_headers=False))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", u.path or "/"), (":scheme", "http"),
                (":authority", f"{u.hostname}:{u.port}"), ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream")]
        if content_length is True:
            hdrs.append(("content-length", str(len(body))))
        elif content_length is not None and content_length is not False:
            hdrs.append(("content-length", str(content_length)))
        hdrs += [(k.lower(), v) for k, v in headers or []]
        no_body = not body and not trailers and not empty_end
        conn.send_headers(sid, hdrs, end_stream=no_body)
        sock.sendall(conn.data_to_send())
        sent, finished = 0, no_body
        status, resp_headers, data, ended, reset = None, {}, bytearray(), False, None
        while not ended:
            while not finished and reset is None and status is None:
                try:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, frame + pad + 1)
                    room -= pad + 1 if pad else 0
                except h2.exceptions.StreamClosedError:
                    break
                if sent < len(body):
                    if room <= 0:
                        break
                    chunk = body[sent:sent + room]
                    sent += len(chunk)
                    last = sent >= len(body) and not trailers and not empty_end
                    conn.send_data(sid, chunk, end_stream=last, pad_length=pad or None)
                    finished = last
                else:
                    if trailers:
                        conn.send_headers(sid, [(k.lower(), v) for k, v in trailers], end_stream=True)
                    else:
                        conn.send_data(sid, b"", end_stream=True)
                    finished = True
                with contextlib.suppress(OSError):
                    sock.sendall(conn.data_to_send())
            raw = sock.recv(65536)
            if not raw:
                break
            for ev in conn.receive_data(raw):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp_headers = dict(ev.headers)
                    status = int(resp_headers.pop(":status"))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    reset = ev.error_code
                    ended = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    ended = True
            with contextlib.suppress(OSError):
                sock.sendall(conn.data_to_send())
        if status is None:
            return Reply(0, {}, f"reset {reset}".encode())
        return Reply(status, resp_headers, bytes(data))
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------- reply assertions

def assert_refused(reply: Reply, upstream, status: int, code: int, id: Any = None) -> dict:
    msg = assert_rpc_error(reply, status, code, id)
    upstream.assert_not_forwarded()
    return msg


def assert_ambiguous(reply: Reply, upstream, id: Any, what: str = "duplicate") -> dict:
    """400 -32600 for a message with duplicate (or case-colliding) keys. As in test_raw_http, the id may be null
    (nothing is read from an ambiguous message) or the message's own id when that is not itself ambiguous."""
    try:
        got = reply.json().get("id")
    except (ValueError, AttributeError):
        got = None
    msg = assert_rpc_error(reply, 400, INVALID_REQUEST, got)
    assert got is None or same_id(got, id), f"want id null or {id!r}: {reply}"
    assert what in msg["error"]["message"].lower(), str(reply)
    upstream.assert_not_forwarded()
    return msg


def assert_denied(reply: Reply, upstream, id: Any, tool: str, reason: str | None) -> dict:
    msg = assert_rpc_error(reply, 200, DENIED, id)
    assert_denied_error(msg, id, tool, reason)
    upstream.assert_not_forwarded()
    return msg


def assert_target_denied(reply: Reply, upstream, id: Any, noun: str, name: str, reason: str) -> dict:
    """-31001 for a prompts/get (``noun`` prompt) or resources/read (``noun`` resource)."""
    msg = assert_rpc_error(reply, 200, DENIED, id)
    err = msg["error"]
    assert err["data"] == {noun: name, "decision": "deny", "reason": reason}, msg
    assert err["message"] == f"{noun.capitalize()} '{name}' denied by policy: {reason}", msg
    upstream.assert_not_forwarded()
    return msg


def assert_passed(reply: Reply, upstream, body: bytes, method: str = "POST") -> None:
    assert reply.status in (200, 202), str(reply)
    assert "x-mcp-policy" not in reply.headers, str(reply)
    upstream.assert_forwarded(body, method)


def assert_batch_refused(reply: Reply, upstream, want: list[tuple[Any, str | None, str | None]]) -> None:
    """A refused batch: HTTP 200, one error per request in order. ``want``: (id, tool, reason) per request; tool
    None means an innocent call refused with its batch ("not forwarded: the batch held a refused call")."""
    assert reply.status == 200, str(reply)
    replies = reply.json()
    assert isinstance(replies, list) and len(replies) == len(want), str(reply)
    for got, (id, name, reason) in zip(replies, want):
        assert got.get("jsonrpc") == "2.0" and "result" not in got, got
        assert same_id(got.get("id"), id), (got, id)
        if name is None:
            assert got["error"]["code"] == DENIED, got
            assert got["error"]["data"]["decision"] == "deny", got
            assert "batch" in got["error"]["data"]["reason"].lower(), got
        else:
            assert_denied_error(got, id, name, reason)
    upstream.assert_not_forwarded()


def assert_alive(proxy, upstream) -> None:
    """The filter still answers (a trapped VM under FAIL_CLOSED would refuse everything with 503)."""
    upstream.clear()
    body = tool("get_run", '{"run_id":"alive"}', id='"alive"')
    assert_passed(send(proxy.url, body), upstream, body)
    upstream.clear()


# ============================================================================================ 1. duplicate keys

DUPLICATE_KEYS = {
    # envelope
    "method_escaped": (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","\\u006dethod":"tools/call",'
                       b'"params":{"name":"delete_run","arguments":{}}}', 1),
    "params_twice": (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_run","arguments":{}},'
                     b'"params":{"name":"delete_run","arguments":{}}}', 2),
    "id_twice": (b'{"jsonrpc":"2.0","id":3,"id":"three","method":"tools/call","params":{"name":"delete_run"}}', None),
    "jsonrpc_twice": (b'{"jsonrpc":"2.0","j\\u0073onrpc":"2.0","id":4,"method":"tools/call",'
                      b'"params":{"name":"delete_run"}}', 4),
    "result_and_escaped_result": (b'{"jsonrpc":"2.0","id":5,"result":{},"\\u0072esult":{"x":1}}', 5),
    # params
    "name_escaped_second": (tool('get_run","\\u006eame":"delete_run', id="6"), 6),
    "name_escaped_first": (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"\\u006eame":"delete_run",'
                           b'"name":"get_run","arguments":{}}}', 7),
    "name_all_escaped": (tool('get_run","\\u006e\\u0061\\u006d\\u0065":"delete_run', id="8"), 8),
    "arguments_twice": (b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"search_runs",'
                        b'"arguments":{"max_results":1},"argument\\u0073":{"max_results":500}}}', 9),
    "uri_twice": (b'{"jsonrpc":"2.0","id":10,"method":"resources/read","params":{"uri":"file:///public/a",'
                  b'"uri":"file:///public/private/key"}}', 10),
    "prompt_name_twice": (b'{"jsonrpc":"2.0","id":11,"method":"prompts/get","params":{"name":"summarise",'
                          b'"n\\u0061me":"secret_keys"}}', 11),
    "meta_twice": (b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"get_run","arguments":{},'
                   b'"_meta":{"progressToken":1,"progressToken":2}}}', 12),
    # arguments
    "argument_escaped": (tool("search_runs", '{"max_results":10,"max_\\u0072esults":500}', id="13"), 13),
    "argument_slash_escape": (tool("get_run", '{"a/b":1,"a\\/b":2}', id="14"), 14),
    "argument_utf8_vs_surrogate_pair": (tool("get_run", '{"\U0001F600":1,"\\ud83d\\ude00":2}', id="15"), 15),
    "argument_utf8_vs_escape": (tool("get_run", '{"caf\u00e9":1,"caf\\u00e9":2}', id="16"), 16),
    # deep
    "deep_object": (tool("get_run", '{"a":' * 60 + '{"k":1,"k":2}' + "}" * 60, id="17"), 17),
    "deep_array": (tool("get_run", '{"rows":[[[[{"k":1},{"k":1,"\\u006b":2}]]]]}', id="18"), 18),
    "notification_params": (b'{"jsonrpc":"2.0","method":"notifications/progress",'
                            b'"params":{"progress":1,"progress":2}}', None),
    "response_result": (b'{"jsonrpc":"2.0","id":19,"result":{"content":[],"content":[1]}}', 19),
    "batch_last_element": (b'[' + tool("get_run", id="1") + b',' + tool("get_run", '{"x":1,"x":2}', id="2") + b']',
                           None),
}


@pytest.mark.parametrize("body,id", DUPLICATE_KEYS.values(), ids=DUPLICATE_KEYS.keys())
def test_duplicate_keys_are_refused(proxy, upstream, body, id):
    r = send(proxy.url, body)
    if id is None:
        assert_rpc_error(r, 400, INVALID_REQUEST, None)
    assert_ambiguous(r, upstream, id)


# ============================================================================================ 2. case-variant keys

# Two spellings of one key that a case-insensitive decoder (Go's encoding/json: ASCII case, and the long s
# U+017F and Kelvin sign U+212A folded onto s and k) reads as the same field.
CASE_COLLISIONS = {
    "Method": (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call",'
               b'"params":{"name":"delete_run","arguments":{}}}', 1),
    "PARAMS": (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_run","arguments":{}},'
               b'"PARAMS":{"name":"delete_run","arguments":{}}}', 2),
    "ID": (b'{"jsonrpc":"2.0","id":3,"ID":4,"method":"tools/call","params":{"name":"get_run"}}', None),
    "Name": (tool('get_run","Name":"delete_run', id="5"), 5),
    "Arguments": (b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search_experiments",'
                  b'"arguments":{},"Arguments":{"filter":"x"}}}', 6),
    "params_long_s_utf8": ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_run"},'
                           '"param\u017f":{"name":"delete_run"}}'.encode(), 7),
    "params_long_s_escaped": (b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"get_run"},'
                              b'"param\\u017f":{"name":"delete_run"}}', 8),
    "jsonrpc_long_s": (b'{"jsonrpc":"2.0","j\\u017fonrpc":"1.0","id":9,"method":"ping"}', 9),
    "arguments_long_s": ('{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"search_experiments",'
                         '"arguments":{},"argument\u017f":{"filter":"x"}}}'.encode(), 10),
    "uri_case": (b'{"jsonrpc":"2.0","id":11,"method":"resources/read","params":{"uri":"file:///public/a",'
                 b'"URI":"file:///public/private/key"}}', 11),
    "argument_case": (tool("search_experiments", '{"filter":"a","Filter":"b"}', id="12"), 12),
    "argument_kelvin_escaped": (tool("set_tag", '{"key":"a","\\u212aey":"mlflow.user"}', id="13"), 13),
    "argument_kelvin_utf8": (tool("set_tag", '{"key":"a","\u212aey":"mlflow.user"}', id="14"), 14),
    "deep_argument_case": (tool("export_run", '{"options":{"format":"csv","FORMAT":"raw"}}', id="15"), 15),
}


@pytest.mark.parametrize("body,id", CASE_COLLISIONS.values(), ids=CASE_COLLISIONS.keys())
def test_case_colliding_keys_are_refused(proxy, upstream, body, id):
    r = send(proxy.url, body)
    if id is None:
        assert_rpc_error(r, 400, INVALID_REQUEST, None)
    assert_ambiguous(r, upstream, id)


# A case variant as the only spelling: the filter sees no such field, a case-insensitive server does. In the
# envelope that is an invalid request (id null: the id itself may be the variant); in params a call without its
# name/arguments/uri (-32602, with the id).
ENVELOPE_VARIANTS = {
    "Method": b'{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"delete_run","arguments":{}}}',
    "METHOD_escaped": b'{"jsonrpc":"2.0","id":1,"\\u004dETHOD":"tools/call","params":{"name":"delete_run"}}',
    "PARAMS": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","PARAMS":{"name":"delete_run","arguments":{}}}',
    "Params_on_ping": b'{"jsonrpc":"2.0","id":1,"method":"ping","Params":{}}',
    "JSONRPC": b'{"JSONRPC":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}',
    "Id": b'{"jsonrpc":"2.0","Id":1,"method":"tools/call","params":{"name":"get_run"}}',
    "params_long_s": '{"jsonrpc":"2.0","id":1,"method":"tools/call","param\u017f":{"name":"delete_run"}}'.encode(),
    "jsonrpc_long_s": b'{"j\\u017fonrpc":"2.0","id":1,"method":"ping"}',
}


@pytest.mark.parametrize("body", ENVELOPE_VARIANTS.values(), ids=ENVELOPE_VARIANTS.keys())
def test_case_variant_envelope_keys_are_refused(proxy, upstream, body):
    msg = assert_refused(send(proxy.url, body), upstream, 400, INVALID_REQUEST, None)
    assert "case variant" in msg["error"]["message"], msg


PARAMS_VARIANTS = {
    "Name": rpc("tools/call", '{"Name":"delete_run","arguments":{}}', "21"),
    "NAME": rpc("tools/call", '{"NAME":"delete_run"}', "21"),
    "Arguments": rpc("tools/call", '{"name":"search_experiments","Arguments":{"filter":"x"}}', "21"),
    "ARGUMENTS": rpc("tools/call", '{"name":"transition_stage","ARGUMENTS":{"stage":"Production"}}', "21"),
    "arguments_long_s_utf8": rpc("tools/call", '{"name":"search_experiments","argument\u017f":{"filter":"x"}}',
                                 "21"),
    "arguments_long_s_escaped": rpc("tools/call", '{"name":"search_experiments","argument\\u017f":{"filter":"x"}}',
                                    "21"),
    "prompt_Name": rpc("prompts/get", '{"Name":"secret_keys"}', "21"),
    "resource_URI": rpc("resources/read", '{"URI":"file:///public/private/key"}', "21"),
    "resource_Uri_escaped": rpc("resources/read", '{"\\u0055ri":"file:///etc/passwd"}', "21"),
}


@pytest.mark.parametrize("body", PARAMS_VARIANTS.values(), ids=PARAMS_VARIANTS.keys())
def test_case_variant_params_keys_are_refused(proxy, upstream, body):
    msg = assert_refused(send(proxy.url, body), upstream, 400, INVALID_PARAMS, 21)
    assert "case variant" in msg["error"]["message"], msg


def test_case_variant_params_key_in_a_batch(proxy, upstream):
    body = b"[" + tool("get_run", id="1") + b"," + rpc("tools/call", '{"Name":"delete_run"}', "2") + b"]"
    assert_refused(send(proxy.url, body), upstream, 400, INVALID_PARAMS, None)


# Inside arguments a case variant of a condition's key fails the condition, even one that holds when the key is
# absent (exists: false, neq, not_in): a server binding keys case-insensitively would read it.
ARGUMENT_VARIANTS = {
    "exists_false_Filter": ("search_experiments", '{"Filter":"name = \'x\'"}', FILTER_REASON),
    "exists_false_FILTER": ("search_experiments", '{"FILTER":"x","max_results":5}', FILTER_REASON),
    "exists_false_Filter_null": ("search_experiments", '{"Filter":null}', FILTER_REASON),
    "exists_false_escaped": ("search_experiments", '{"\\u0046ilter":"x"}', FILTER_REASON),
    "exists_false_plain": ("search_experiments", '{"filter":"x"}', FILTER_REASON),
    "exists_false_escaped_exact_key": ("search_experiments", '{"\\u0066ilter":"x"}', FILTER_REASON),
    "neq_Key": ("set_tag", '{"Key":"mlflow.user","value":"mallory"}', USER_TAG_REASON),
    "neq_KEY_harmless_value": ("set_tag", '{"KEY":"note","value":"v"}', USER_TAG_REASON),
    "neq_kelvin_escaped": ("set_tag", '{"\\u212aey":"mlflow.user","value":"mallory"}', USER_TAG_REASON),
    "neq_kelvin_utf8": ("set_tag", '{"\u212aey":"mlflow.user","value":"mallory"}', USER_TAG_REASON),
    "neq_plain": ("set_tag", '{"key":"mlflow.user","value":"mallory"}', USER_TAG_REASON),
    "neq_escaped_value": ("set_tag", '{"key":"mlflow\\u002euser","value":"mallory"}', USER_TAG_REASON),
    "not_in_Stage": ("transition_stage", '{"Stage":"Production"}', STAGE_REASON),
    "not_in_long_s_utf8": ("transition_stage", '{"\u017ftage":"Archived"}', STAGE_REASON),
    "not_in_long_s_escaped": ("transition_stage", '{"\\u017ftage":"Production"}', STAGE_REASON),
    "not_in_plain": ("transition_stage", '{"stage":"Production"}', STAGE_REASON),
    "nested_inner_Format": ("export_run", '{"options":{"Format":"raw"}}', FORMAT_REASON),
    "nested_outer_Options": ("export_run", '{"Options":{"format":"raw"}}', FORMAT_REASON),
    "nested_plain": ("export_run", '{"options":{"format":"raw"}}', FORMAT_REASON),
}


@pytest.mark.parametrize("name,args,reason", ARGUMENT_VARIANTS.values(), ids=ARGUMENT_VARIANTS.keys())
def test_case_variant_argument_fails_its_condition(proxy, upstream, name, args, reason):
    body = tool(name, args, id='"cv"')
    assert_denied(send(proxy.url, body), upstream, "cv", name, reason)


ARGUMENTS_THAT_PASS = {
    "exists_false_absent": ("search_experiments", '{"max_results":5}'),
    "neq_absent": ("set_tag", '{"value":"v"}'),
    "neq_other_value": ("set_tag", '{"key":"note","value":"v"}'),
    "neq_other_key": ("set_tag", '{"keys":"mlflow.user"}'),
    "not_in_absent": ("transition_stage", "{}"),
    "not_in_other": ("transition_stage", '{"stage":"Staging"}'),
    "nested_other": ("export_run", '{"options":{"format":"csv"}}'),
    "nested_absent": ("export_run", '{"run_id":"r"}'),
}


@pytest.mark.parametrize("name,args", ARGUMENTS_THAT_PASS.values(), ids=ARGUMENTS_THAT_PASS.keys())
def test_arguments_that_meet_their_conditions_pass(proxy, upstream, name, args):
    body = tool(name, args, id='"ok"')
    assert_passed(send(proxy.url, body), upstream, body)


# ===================================================================== 3. unicode escapes in method and tool names

ESCAPED_DENIED = {
    "method_slash": tool("delete_run", method="tools\\/call"),
    "method_u002f": tool("delete_run", method="tools\\u002fcall"),
    "method_first_letter": tool("delete_run", method="\\u0074ools/call"),
    "method_all_escaped": tool("delete_run", method="".join(f"\\u{ord(c):04x}" for c in "tools/call")),
    "name_underscore": tool("delete\\u005frun"),
    "name_first_letter": tool("\\u0064elete_run"),
    "name_last_letter": tool("delete_ru\\u006e"),
    "name_all_escaped": tool("".join(f"\\u{ord(c):04X}" for c in "delete_run")),
    "both": tool("delete\\u005frun", method="tools\\/call"),
}


@pytest.mark.parametrize("body", ESCAPED_DENIED.values(), ids=ESCAPED_DENIED.keys())
def test_escaped_names_are_decided_decoded(proxy, upstream, body):
    assert_denied(send(proxy.url, body), upstream, 1, "delete_run", DELETE_REASON)


@pytest.mark.parametrize("body", [tool("get\\u005frun", '{"run_id":"\\u0061"}'),
                                  tool("log_metric", method="tools\\/call"), tool("\\u006cog_metric")],
                         ids=["get_run", "method_slash", "exact_rule"])
def test_escaped_allowed_names_pass_unchanged(proxy, upstream, body):
    assert_passed(send(proxy.url, body), upstream, body)


def test_escaped_target_names_of_prompts_and_resources(proxy, upstream):
    r = send(proxy.url, prompt("secret\\u005fkeys", id="31"))
    assert_target_denied(r, upstream, 31, "prompt", "secret_keys", PROMPT_REASON)
    r = send(proxy.url, resource("file:\\/\\/\\/public\\/private\\/key", id="32"))
    assert_target_denied(r, upstream, 32, "resource", "file:///public/private/key", RESOURCE_REASON)
    r = send(proxy.url, resource("file:///public/\\u0070rivate/key", id="33"))
    assert_target_denied(r, upstream, 33, "resource", "file:///public/private/key", RESOURCE_REASON)


def test_mcp_name_header_is_compared_with_the_decoded_name(proxy, upstream):
    # The header agrees with the decoded name: no mismatch, and the policy decides (deny).
    r = send(proxy.url, tool("delete\\u005frun", id="41"),
             headers={"Mcp-Method": "tools/call", "Mcp-Name": "delete_run"})
    assert_denied(r, upstream, 41, "delete_run", DELETE_REASON)
    # The header names the allowed tool, the escaped body the denied one.
    r = send(proxy.url, tool("delete\\u005frun", id="42"), headers={"Mcp-Name": "get_run"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 42)


# ============================================================================================ 4. tool-name tricks

# Tool names are compared exactly: no case folding, trimming, Unicode normalisation. But an upstream that
# normalised names (case-folding, trimming, NFKC, stripping NUL or zero-width characters) would run a tool the
# policy never saw, so (issue 14): a name with a control or invisible character or white space at an end is
# refused outright (-32602, HTTP 400); a name that folds to a governed key it is not (here `delete_*`) is refused
# as a look-alike (-31001), whatever the default; any other variant is decided by the rules as written (here the
# default deny, or a glob that still matches). (name as written in JSON, decoded name, expected: a reason, None
# for the default's, LOOK for a look-alike of `delete_*`, INVALID for -32602)
LOOK = "'{name}' is a look-alike of the policy key 'delete_*'"
INVALID = "invalid"
NAME_TRICKS = {
    "Delete_Run": ("Delete_Run", "Delete_Run", LOOK),
    "DELETE_RUN": ("DELETE_RUN", "DELETE_RUN", LOOK),
    "trailing_space": ("delete_run ", "delete_run ", INVALID),
    "leading_space": (" delete_run", " delete_run", INVALID),
    "trailing_tab": ("delete_run\\t", "delete_run\t", INVALID),
    "trailing_nul": ("delete_run\\u0000", "delete_run\x00", INVALID),
    "inner_zero_width": ("delete\\u200b_run", "delete\u200b_run", INVALID),
    "trailing_zero_width": ("delete_run\u200b", "delete_run\u200b", INVALID),
    "leading_bom": ("\\ufeffdelete_run", "\ufeffdelete_run", INVALID),
    "fullwidth": ("\uff44\uff45\uff4c\uff45\uff54\uff45_\uff52\uff55\uff4e",
                  "\uff44\uff45\uff4c\uff45\uff54\uff45_\uff52\uff55\uff4e", LOOK),
    "fullwidth_escaped_letter": ("delete_\\uff52un", "delete_\uff52un", DELETE_REASON),
    "combining_mark": ("dele\\u0301te_run", "dele\u0301te_run", None),
    "exact_allowed_Log_Metric": ("Log_Metric", "Log_Metric", None),
    "exact_allowed_trailing_space": ("log_metric ", "log_metric ", INVALID),
    "exact_allowed_trailing_nul": ("log_metric\\u0000", "log_metric\x00", INVALID),
    "exact_allowed_zero_width": ("log_metric\\u200d", "log_metric\u200d", INVALID),
    "kelvin_sign": ("\\u212aill_run", "\u212aill_run", None),
}


@pytest.mark.parametrize("raw,name,reason", NAME_TRICKS.values(), ids=NAME_TRICKS.keys())
def test_tool_name_tricks_are_decided_by_exact_name(proxy, upstream, raw, name, reason):
    body = tool(raw, '{"run_id":"r"}', id='"nt"')
    if reason == INVALID:
        # A control or invisible character or white space at an end is no part of any MCP name: refused
        # outright (issues 14 and 17), before the policy is asked; a control character (tab, NUL) is named so.
        msg = assert_refused(send(proxy.url, body), upstream, 400, INVALID_PARAMS, "nt")
        assert msg["error"]["message"].startswith("Invalid params: the tool name "), msg
        if any(unicodedata.category(c) == "Cc" for c in name):
            assert "control character" in msg["error"]["message"], msg
        return
    if reason == LOOK:
        msg = assert_denied(send(proxy.url, body), upstream, "nt", name, None)
        assert msg["error"]["data"]["reason"].startswith(LOOK.format(name=name)), msg
        return
    assert_denied(send(proxy.url, body), upstream, "nt", name, reason or default_deny(name))


# ===================================================================================================== 5. batches

def test_batch_mixed_with_an_escaped_denied_call(proxy, upstream):
    calls = [tool("get_run", f'{{"run_id":"{i}"}}', id=str(i)) for i in range(40)]
    calls.insert(17, tool("delete\\u005frun", id='"bad"'))
    calls.insert(5, b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}')
    r = send(proxy.url, b"[" + b",".join(calls) + b"]")
    want = [(i, None, None) for i in range(40)]
    want.insert(17, ("bad", "delete_run", DELETE_REASON))
    assert_batch_refused(r, upstream, want)


def test_batch_of_one_denied_call(proxy, upstream):
    r = send(proxy.url, b"[" + tool("delete_run", id='"only"') + b"]")
    assert_batch_refused(r, upstream, [("only", "delete_run", DELETE_REASON)])


def test_batch_of_one_denied_prompt(proxy, upstream):
    r = send(proxy.url, b"[" + prompt("secret_keys", id="3") + b"]")
    assert r.status == 200, r
    (err,) = r.json()
    assert err["id"] == 3 and err["error"]["code"] == DENIED, err
    assert err["error"]["data"] == {"prompt": "secret_keys", "decision": "deny", "reason": PROMPT_REASON}, err
    upstream.assert_not_forwarded()


def test_batch_with_duplicate_ids_and_a_denied_call(proxy, upstream):
    body = b"[" + tool("get_run", id="1") + b"," + tool("delete_run", id="1") + b"," + tool("get_run", id="1") + b"]"
    assert_batch_refused(send(proxy.url, body), upstream,
                         [(1, None, None), (1, "delete_run", DELETE_REASON), (1, None, None)])


def test_batch_with_duplicate_ids_of_allowed_calls_passes(proxy, upstream):
    # Ids are the client's business: the filter decides element by element, never by id.
    body = b"[" + tool("get_run", id='"x"') + b"," + tool("get_experiments", id='"x"') + b"]"
    assert_passed(send(proxy.url, body), upstream, body)


def test_batch_with_a_client_response_passes(proxy, upstream):
    body = b"[" + tool("get_run", id="1") + b',{"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}]'
    assert_passed(send(proxy.url, body), upstream, body)


BAD_BATCHES = {
    "nested": b"[[" + tool("delete_run") + b"]]",
    "nested_after_allowed": b"[" + tool("get_run") + b",[" + tool("delete_run", id="2") + b"]]",
    "nested_empty": b"[[]]",
    "null_element": b"[" + tool("get_run") + b",null]",
    "number_element": b"[" + tool("get_run") + b",1]",
    "response_with_method": (b"[" + tool("get_run") + b',{"jsonrpc":"2.0","id":2,"result":{},"method":"tools/call",'
                             b'"params":{"name":"delete_run","arguments":{}}}]'),
    "response_with_go_style_method": (b"[" + tool("get_run") + b',{"jsonrpc":"2.0","id":2,"result":{},'
                                      b'"Method":"tools/call","Params":{"name":"delete_run","arguments":{}}}]'),
    "tools_call_notification": b"[" + tool("get_run") + b"," + tool("get_run", id=None) + b"]",
    "prompt_notification": b"[" + tool("get_run") + b"," + rpc("prompts/get", '{"name":"summarise"}', None) + b"]",
}


@pytest.mark.parametrize("body", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_malformed_batches_are_refused(proxy, upstream, body):
    assert_refused(send(proxy.url, body), upstream, 400, INVALID_REQUEST, None)


def test_large_batch_with_the_denied_call_last(proxy, upstream):
    calls = [tool("get_run", f'{{"run_id":"{i}"}}', id=str(i)) for i in range(2000)]
    calls.append(tool("delete_run", id="2000"))
    r = send(proxy.url, b"[" + b",".join(calls) + b"]")
    assert_batch_refused(r, upstream, [(i, None, None) for i in range(2000)] + [(2000, "delete_run", DELETE_REASON)])


# ========================================================================================== 6. compressed bodies

ALLOWED = tool("get_run", '{"run_id":"abc"}', id="71")

ENCODINGS = {
    "GZip": ("GZip", gzip.compress(ALLOWED), "GZip"),
    "X-GZIP": ("X-GZIP", gzip.compress(ALLOWED), "X-GZIP"),
    "deflate": ("deflate", zlib.compress(ALLOWED), "deflate"),
    "br_plain_json": ("br", ALLOWED, "br"),
    "zstd": ("zstd", ALLOWED, "zstd"),
    "compress": ("compress", ALLOWED, "compress"),
    "unknown": ("rot13", ALLOWED, "rot13"),
    "identity,gzip_no_space": ("identity,gzip", gzip.compress(ALLOWED), "gzip"),
    "gzip, identity": ("gzip, identity", gzip.compress(ALLOWED), "gzip"),
    "identity_twice_then_br": ("identity, IDENTITY, br", ALLOWED, "br"),
    "identity_with_parameter": ("identity;q=1", ALLOWED, "identity;q=1"),
    "plain_json_labelled_gzip": ("gzip", ALLOWED, "gzip"),
}


def assert_unsupported_encoding(reply: Reply, upstream, token: str) -> None:
    msg = assert_refused(reply, upstream, 415, INVALID_REQUEST, None)
    assert msg["error"]["data"] == {"content_encoding": token}, msg


@pytest.mark.parametrize("encoding,body,token", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_content_encodings_are_refused(proxy, upstream, encoding, body, token):
    assert_unsupported_encoding(send_raw(proxy.port, body, [("Content-Encoding", encoding)]), upstream, token)


def test_content_encoding_split_over_two_header_lines(proxy, upstream):
    # Two header lines are one comma-separated list (RFC 9110 §5.3): "identity, gzip".
    r = send_raw(proxy.port, gzip.compress(ALLOWED), [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")])
    assert_unsupported_encoding(r, upstream, "gzip")


def test_content_encoding_on_a_chunked_body(proxy, upstream):
    r = send_chunked(proxy.port, gzip.compress(ALLOWED), 7, headers=[("Content-Encoding", "gzip")])
    assert_unsupported_encoding(r, upstream, "gzip")


def test_content_encoding_over_http2(proxy, upstream):
    r = send_h2(proxy.url, gzip.compress(ALLOWED), headers=[("content-encoding", "gzip")])
    assert_unsupported_encoding(r, upstream, "gzip")


DENIED_BODY = tool("delete_run", '{"run_id":"abc","note":"sent one byte at a time"}', id='"tiny"')
ALLOWED_BODY = tool("get_run", '{"run_id":"abc","note":"sent one byte at a time"}', id='"tiny"')


def test_one_byte_chunks_denied(proxy, upstream):
    r = send_chunked(proxy.port, DENIED_BODY, 1, delay=0.0005)
    assert_denied(r, upstream, "tiny", "delete_run", DELETE_REASON)


def test_one_byte_chunks_allowed(proxy, upstream):
    r = send_chunked(proxy.port, ALLOWED_BODY, 1, delay=0.0005)
    assert_passed(r, upstream, ALLOWED_BODY)


def test_chunk_extensions(proxy, upstream):
    r = send_chunked(proxy.port, DENIED_BODY, 5, ext=';name="x"')
    assert_denied(r, upstream, "tiny", "delete_run", DELETE_REASON)


@pytest.mark.parametrize("headers,status", [
    ([("Content-Length", "5"), ("Transfer-Encoding", "chunked")], 400),
    ([("Transfer-Encoding", "gzip, chunked")], 501),
    ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")], 501),
], ids=["content_length_and_chunked", "gzip_transfer_coding", "two_transfer_encodings"])
def test_transfer_encoding_tricks_are_not_forwarded(proxy, upstream, headers, status):
    """Framing Envoy cannot trust: Envoy itself refuses it (plain text) before any filter runs."""
    x = exchange(proxy.port, [head(proxy.port, headers), *chunked(DENIED_BODY, 16)])
    assert [r.status for r in x.replies] == [status], x
    upstream.assert_not_forwarded()


# ========================================================================================== 7. content-type tricks

CONTENT_TYPES = ["multipart/form-data; boundary=xyz", "application/json; charset=utf-16",
                 "application/json; charset=iso-8859-1",
                 "APPLICATION/JSON", "application/json-rpc", "text/event-stream", "application/octet-stream",
                 "application/x-ndjson", "text/html", ""]


@pytest.mark.parametrize("ctype", CONTENT_TYPES)
def test_body_is_inspected_whatever_the_content_type(proxy, upstream, ctype):
    r = send(proxy.url, tool("delete_run", id="81"), content_type=ctype)
    assert_denied(r, upstream, 81, "delete_run", DELETE_REASON)


def test_allowed_call_with_a_charset_passes(proxy, upstream):
    body = tool("get_run", '{"run_id":"\u00e9"}', id="82")
    assert_passed(send(proxy.url, body, content_type="application/json; charset=utf-8"), upstream, body)


def test_two_content_type_headers(proxy, upstream):
    body = tool("delete_run", id="83")
    r = send_raw(proxy.port, body, [("Content-Type", "text/plain")])
    assert_denied(r, upstream, 83, "delete_run", DELETE_REASON)


NOT_JSON_BODIES = {
    "multipart": (b'--xyz\r\nContent-Disposition: form-data; name="rpc"\r\nContent-Type: application/json\r\n\r\n'
                  + tool("delete_run") + b"\r\n--xyz--\r\n", "multipart/form-data; boundary=xyz"),
    "form_urlencoded": (b"rpc=" + urllib.parse.quote_from_bytes(tool("delete_run")).encode(),
                        "application/x-www-form-urlencoded"),
    "utf16_le_bom": (b"\xff\xfe" + tool("delete_run").decode().encode("utf-16-le"), "application/json; charset=utf-16"),
    "utf16_be_no_bom": (tool("delete_run").decode().encode("utf-16-be"), "application/json; charset=utf-16be"),
    "utf32": (tool("delete_run").decode().encode("utf-32"), "application/json; charset=utf-32"),
}


@pytest.mark.parametrize("body,ctype", NOT_JSON_BODIES.values(), ids=NOT_JSON_BODIES.keys())
def test_bodies_in_other_encodings_are_refused(proxy, upstream, body, ctype):
    assert_refused(send(proxy.url, body, content_type=ctype), upstream, 400, PARSE_ERROR, None)


# ==================================================================================== 8. header/body mismatch

def test_mcp_header_case_and_target_mismatches(proxy, upstream):
    r = send(proxy.url, tool("get_run", id="91"), headers={"Mcp-Method": "Tools/Call"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 91)
    r = send(proxy.url, tool("delete_run", id="92"), headers={"Mcp-Method": "tools/call", "Mcp-Name": "Delete_Run"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 92)
    r = send(proxy.url, prompt("secret_keys", id="93"), headers={"Mcp-Method": "prompts/get", "Mcp-Name": "summarise"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 93)
    r = send(proxy.url, resource("file:///public/private/key", id="94"),
             headers={"Mcp-Method": "resources/read", "Mcp-Name": "file:///public/readme"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 94)
    r = send(proxy.url, b"[" + tool("get_run", id="95") + b"]", headers={"Mcp-Method": "tools/call"})
    assert_refused(r, upstream, 400, HEADER_MISMATCH, None)


DUPLICATED_MCP_HEADERS = {
    "method_then_other": [("Mcp-Method", "tools/call"), ("Mcp-Method", "tools/list")],
    "name_then_denied": [("Mcp-Method", "tools/call"), ("Mcp-Name", "get_run"), ("Mcp-Name", "delete_run")],
    "name_case_variant_line": [("Mcp-Name", "get_run"), ("MCP-NAME", "delete_run")],
}


@pytest.mark.parametrize("headers", DUPLICATED_MCP_HEADERS.values(), ids=DUPLICATED_MCP_HEADERS.keys())
def test_duplicated_mcp_headers_are_refused(proxy, upstream, headers):
    """Two Mcp-Method (or Mcp-Name) lines: the first agrees with the body, the second does not. Whichever one a
    server or an intermediary reads, they disagree with each other: ambiguous, refused."""
    r = send_raw(proxy.port, tool("get_run", id="96"), headers)
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 96)


def test_duplicated_mcp_name_over_http2(proxy, upstream):
    r = send_h2(proxy.url, tool("get_run", id="97"), headers=[("mcp-name", "get_run"), ("mcp-name", "delete_run")])
    assert_refused(r, upstream, 400, HEADER_MISMATCH, 97)


def test_folded_mcp_header_line(proxy, upstream):
    """An obs-fold continuation line: Envoy joins it into one value ("get_run delete_run"), which matches no
    body."""
    body = tool("get_run", id="98")
    h = head(proxy.port, [("Content-Length", str(len(body))), ("Mcp-Name", "get_run\r\n delete_run")])
    x = exchange(proxy.port, [h + body])
    assert len(x.replies) == 1, x
    assert_refused(x.replies[0], upstream, 400, HEADER_MISMATCH, 98)


def test_expect_100_continue(proxy, upstream):
    body = tool("delete_run", id="99")
    h = head(proxy.port, [("Content-Length", str(len(body))), ("Expect", "100-continue")])
    x = exchange(proxy.port, [h, body], delay=0.05)
    assert len(x.replies) == 1, x
    assert_denied(x.replies[0], upstream, 99, "delete_run", DELETE_REASON)


def test_content_length_shorter_than_the_body_smuggles_nothing(proxy, upstream):
    """Content-Length covers an allowed ping; the bytes after it are a second, pipelined request for a denied
    tool. Envoy parses that as its own request, which goes through the filter too: the ping arrives exactly, the
    smuggled call never does."""
    first = rpc("ping", id="1")
    smuggled = tool("delete_run", id="2")
    inner = head(proxy.port, [("Content-Length", str(len(smuggled)))]) + smuggled
    request = head(proxy.port, [("Content-Length", str(len(first)))], close=False) + first + inner
    x = exchange(proxy.port, [request])
    assert [r.status for r in x.replies] == [200, 200], x
    assert same_id(x.replies[0].json()["id"], 1) and "result" in x.replies[0].json(), x
    assert_denied_error(x.replies[1].json(), 2, "delete_run", DELETE_REASON)
    upstream.assert_forwarded(first)


def test_content_length_shorter_than_the_body_with_garbage_after(proxy, upstream):
    body = tool("delete_run", id="3")
    x = exchange(proxy.port, [head(proxy.port, [("Content-Length", "20")], close=False) + body])
    assert x.replies and x.replies[0].status == 400, x
    assert x.replies[0].json()["error"]["code"] == PARSE_ERROR, x
    assert all(r.status >= 400 for r in x.replies), x
    upstream.assert_not_forwarded()


def test_content_length_longer_than_the_body(proxy, upstream):
    """The client stops (half-closes) before Content-Length bytes arrived: the request never completes, the
    filter never decides, nothing of the body leaves Envoy."""
    body = tool("get_run", id="4")
    x = exchange(proxy.port, [head(proxy.port, [("Content-Length", str(len(body) + 10))]) + body], half_close=True,
                 timeout=3.0)
    assert x.closed and x.replies == [], x
    upstream.assert_not_forwarded(grace=0.2)


@pytest.mark.parametrize("length", [10, 10_000], ids=["shorter", "longer"])
def test_http2_content_length_lies(proxy, upstream, length):
    """content-length disagreeing with the DATA frames is a malformed h2 request: Envoy resets the stream
    (PROTOCOL_ERROR) and nothing is forwarded."""
    r = send_h2(proxy.url, tool("get_run", '{"run_id":"' + "x" * 100 + '"}', id="5"), content_length=length)
    assert (r.status, r.body) == (0, b"reset 1"), r
    upstream.assert_not_forwarded(grace=0.2)


# ===================================================================================== 9. fail-open parse paths

PARSE_ERRORS = {
    # invalid UTF-8 (test_raw_http has 0xff, a truncated sequence and an encoded surrogate in a string)
    "utf8_in_key": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run","arguments":{"\xff":1}}}',
    "utf8_overlong_slash": b'{"jsonrpc":"2.0","id":1,"method":"tools\xc0\xafcall","params":{"name":"delete_run"}}',
    "utf8_overlong_underscore": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\xc1\x9frun"}}',
    "utf8_overlong_3_bytes": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run\xe0\x80\xaf"}}',
    "utf8_above_10ffff": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run\xf4\x90\x80\x80"}}',
    "utf8_lone_continuation": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run\x80"}}',
    "utf8_five_bytes": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                       b'"params":{"name":"get_run\xf8\x88\x80\x80\x80"}}',
    "utf8_cut_at_end": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run"}}\xe2\x82',
    "nbsp_as_whitespace": b'{"jsonrpc":"2.0",\xc2\xa0"id":1,"method":"tools/call","params":{"name":"delete_run"}}',
    # lone surrogates
    "lone_high_in_argument": tool("get_run", '{"a":"\\ud800"}'),
    "lone_low_in_argument": tool("get_run", '{"a":"\\udfff"}'),
    "high_then_letter": tool("get_run", '{"a":"\\ud800\\u0041"}'),
    "high_high": tool("get_run", '{"a":"\\ud800\\ud800"}'),
    "low_high_reversed": tool("get_run", '{"a":"\\ude00\\ud83d"}'),
    "lone_in_key": tool("get_run", '{"\\udc00":1}'),
    "lone_in_name": tool("delete_run\\ud800"),
    "lone_in_method": tool("delete_run", method="tools/call\\ud800"),
    # NUL bytes (not escaped)
    "raw_nul_in_name": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_run\x00delete_run"}}',
    "raw_nul_between_tokens": b'{"jsonrpc":"2.0",\x00"id":1,"method":"tools/call","params":{"name":"get_run"}}',
    "raw_nul_after": tool("get_run") + b"\x00",
    "raw_control_char_in_string": tool("get_run", '{"a":"x\x01y"}'),
    # byte order marks
    "utf8_bom_denied": b"\xef\xbb\xbf" + tool("delete_run"),
    "utf8_bom_allowed": b"\xef\xbb\xbf" + tool("get_run"),
    "utf8_bom_after_space": b" \xef\xbb\xbf" + tool("get_run"),
    # trailing data, several values
    "trailing_letter": tool("get_run") + b"x",
    "trailing_brace": tool("get_run") + b"}",
    "trailing_bracket": tool("get_run") + b"]",
    "trailing_comma": tool("get_run") + b",",
    "trailing_comment": tool("get_run") + b"//c",
    "two_objects_no_space": tool("get_run") + tool("delete_run", id="2"),
    "ndjson": tool("get_run") + b"\n" + tool("delete_run", id="2") + b"\n",
    "two_batches": b"[" + tool("get_run") + b"][" + tool("delete_run", id="2") + b"]",
    "comment_inside": b'{"jsonrpc":"2.0",/*x*/"id":1,"method":"tools/call","params":{"name":"get_run"}}',
    # numbers Python's json accepts (NaN, Infinity) or that overflow a double
    "nan": tool("search_runs", '{"max_results":NaN}'),
    "infinity": tool("search_runs", '{"max_results":Infinity}'),
    "minus_infinity": tool("search_runs", '{"max_results":-Infinity}'),
    "exponent_overflow": tool("search_runs", '{"max_results":1e400}'),
    "negative_exponent_overflow": tool("search_runs", '{"max_results":-1e400}'),
    "integer_400_digits": tool("search_runs", '{"max_results":1' + "0" * 400 + "}"),
    "leading_zero": tool("search_runs", '{"max_results":007}'),
    "plus_sign": tool("search_runs", '{"max_results":+1}'),
    "hex": tool("search_runs", '{"max_results":0x10}'),
    # nesting past the limit
    "100k_brackets": b"[" * 100_000,
    "100k_objects": b'{"a":' * 100_000,
    "deep_in_arguments": tool("get_run", '{"a":' + "[" * 200 + "]" * 200 + "}"),
    "deep_in_denied_arguments": tool("delete_run", '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
    # nothing but whitespace
    "space": b" ",
    "whitespace": b"\r\n\t  \n",
}


@pytest.mark.parametrize("body", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_errors_are_refused(proxy, upstream, body):
    assert_refused(send(proxy.url, body), upstream, 400, PARSE_ERROR, None)


@pytest.mark.parametrize("body", [b"[" * 100_000,
                                  tool("delete_run", '{"a":' + '{"b":' * 50_000 + "1" + "}" * 50_001)],
                         ids=["brackets", "objects_in_arguments"])
def test_deep_nesting_leaves_the_filter_alive(proxy, upstream, body):
    """A recursive parser would overflow its stack here; a trapped VM under FAIL_CLOSED answers 503 to every
    later request. The filter refuses the body and keeps serving."""
    assert_refused(send(proxy.url, body), upstream, 400, PARSE_ERROR, None)
    assert_alive(proxy, upstream)


VALID_ODDITIES = {
    "escaped_nul_in_argument": tool("get_run", '{"run_id":"a\\u0000b"}'),
    "surrogate_pair_in_argument": tool("get_run", '{"run_id":"\\ud83d\\ude00"}'),
    "utf8_in_argument": tool("get_run", '{"run_id":"\U0001F600 \u00e9"}'),
    "nesting_within_the_limit": tool("get_run", '{"a":' + "[" * 100 + "]" * 100 + "}"),
    "exponent_underflow": tool("search_runs", '{"max_results":1e-400}'),
    "many_digits_rounding_to_100": tool("search_runs", '{"max_results":100.00000000000000001}'),
    "exponent_form_of_100": tool("search_runs", '{"max_results":1E2}'),
    "negative_zero": tool("search_runs", '{"max_results":-0}'),
    "whitespace_everywhere": b' \r\n\t{ "jsonrpc" : "2.0" , "id" : 1 , "method" : "tools/call" , "params" : '
                             b'{ "name" : "get_run" , "arguments" : { } } } \r\n\t',
}


@pytest.mark.parametrize("body", VALID_ODDITIES.values(), ids=VALID_ODDITIES.keys())
def test_valid_oddities_pass_unchanged(proxy, upstream, body):
    assert_passed(send(proxy.url, body), upstream, body)


def test_huge_integer_fails_a_numeric_condition(proxy, upstream):
    r = send(proxy.url, tool("search_runs", '{"max_results":100000000000000000000000000000}', id="7"))
    assert_denied(r, upstream, 7, "search_runs", SEARCH_REASON)


def test_many_keys_are_not_quadratic(proxy, upstream):
    """50k distinct keys in the arguments: decided in well under a second of filter time (a quadratic duplicate
    check would take minutes); the same object plus a key differing only in case is refused."""
    keys = ",".join(f'"k{i}":{i}' for i in range(50_000))
    body = tool("get_run", "{" + keys + "}")
    started = time.monotonic()
    assert_passed(send(proxy.url, body), upstream, body)
    assert time.monotonic() - started < 5, "50k keys took too long"
    upstream.clear()
    body = tool("get_run", "{" + keys + ',"K49999":0}')
    assert_ambiguous(send(proxy.url, body), upstream, 1)


def test_empty_bodies_pass_as_no_body(proxy, upstream):
    # Content-Length: 0 is test_raw_http's; here a chunked body with only its last chunk, and h2 without DATA.
    r = send_chunked(proxy.port, b"", 1)
    assert r.status == 200, r
    assert [(g.method, g.body, g.complete) for g in upstream.snapshot()] == [("POST", b"", True)]
    upstream.clear()
    r = send_h2(proxy.url, b"")
    assert r.status == 200, r
    assert [(g.method, g.body, g.complete) for g in upstream.snapshot()] == [("POST", b"", True)]


def test_whitespace_only_chunked_body(proxy, upstream):
    assert_refused(send_chunked(proxy.port, b"  \r\n ", 1), upstream, 400, PARSE_ERROR, None)


# Header values with bytes that are not UTF-8 (HTTP/1.1 allows obs-text, Envoy passes it on). The proxy-wasm SDK's
# get_map_value unwraps a UTF-8 conversion: one such byte in a header the filter reads used to trap the VM, and
# under FAIL_CLOSED every later request on that worker got a 503 (a one-packet denial of service). Each case
# checks the request's own answer, then that the filter still serves.
NON_UTF8_HEADERS = {
    "mcp_name": ("Mcp-Name", "get_run\xff", "refused", HEADER_MISMATCH),
    "mcp_method": ("Mcp-Method", "tools/call\xff", "refused", HEADER_MISMATCH),
    "content_encoding": ("Content-Encoding", "gzip\xff", "refused", None),
    "x_request_id": ("X-Request-Id", "id-\xff", "passed", None),
    "mcp_session_id": ("Mcp-Session-Id", "session-\xff", "passed", None),
}


@pytest.mark.parametrize("name,value,outcome,code", NON_UTF8_HEADERS.values(), ids=NON_UTF8_HEADERS.keys())
def test_header_bytes_that_are_not_utf8(proxy, upstream, name, value, outcome, code):
    body = tool("get_run", id="101")
    r = send_raw(proxy.port, body, [(name, value)])
    if outcome == "passed":
        assert_passed(r, upstream, body)
    elif code is None:
        assert_unsupported_encoding(r, upstream, "gzip\ufffd")
    else:
        assert_refused(r, upstream, 400, code, 101)
    assert_alive(proxy, upstream)


def test_tools_list_answer_with_a_content_type_that_is_not_utf8(proxy, upstream, monkeypatch):
    """The same on the response path: the upstream's tools/list answer has a byte 0xFF in its Content-Type. It
    cannot be filtered with certainty (unknown type): withheld, and the filter keeps serving."""
    schema = {"type": "object"}
    tools = {"jsonrpc": "2.0", "id": 102, "result": {"tools": [{"name": "get_run", "inputSchema": schema},
                                                               {"name": "delete_run", "inputSchema": schema}]}}
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(json.dumps(tools).encode(),
                                                                  {"Content-Type": "application/json\xff"})))
    r = send(proxy.url, rpc("tools/list", id="102"))
    msg = assert_rpc_error(r, 200, -32603, 102)
    assert "delete_run" not in r.body.decode(), msg
    monkeypatch.undo()
    assert_alive(proxy, upstream)


# Method or tool names with a control character (NUL, CR, LF: Envoy refuses them in a header value) are refused
# before anything is exported (issue 17): -32600 for a method, -32602 for a tool name, never a 503.
CONTROL_IN_NAMES = {
    "nul_in_tool": (tool("get_run\\u0000x", id="103"), -32602, 103),
    "newline_in_method": (rpc("notifications/x\\r\\ny", id=None), -32600, None),
}


@pytest.mark.parametrize("body,code,id", CONTROL_IN_NAMES.values(), ids=CONTROL_IN_NAMES.keys())
def test_control_characters_in_names_are_refused_not_exported(proxy, upstream, body, code, id):
    msg = assert_refused(send(proxy.url, body), upstream, 400, code, id)
    assert "control character" in msg["error"]["message"], msg
    assert_alive(proxy, upstream)


# Allowed bodies whose method or tool names would make a too long exported x-mcp-* header (hundreds of KiB): the
# body is what is forwarded, exactly; the header is cut to 1 KiB ending in "...". Without held headers nothing is
# exported.
ODD_EXPORTS = {
    "long_tool": (tool("get_" + "x" * 200_000, id="104"), "tools/call", "get_" + "x" * 1017 + "..."),
    "batch_of_10k_calls": (b"[" + b",".join(tool("get_run", id=str(i)) for i in range(10_000)) + b"]",
                           "tools/call", ",".join(["get_run"] * 128)[:1021] + "..."),
}


@pytest.mark.parametrize("body,method,tool_header", ODD_EXPORTS.values(), ids=ODD_EXPORTS.keys())
def test_odd_names_are_forwarded_with_clean_exported_headers(proxy, upstream, held, body, method, tool_header):
    assert_passed(send(proxy.url, body), upstream, body)
    (rec,) = [r for r in upstream.snapshot() if r.complete]
    if held:
        assert rec.header_values("x-mcp-method") == [method], rec.header_list
        assert rec.header_values("x-mcp-tool") == ([tool_header] if tool_header else []), rec.header_list
    else:
        assert "x-mcp-method" not in rec.headers and "x-mcp-tool" not in rec.headers, rec.header_list


# ============================================================================== 10. response-shaped client frames

RESPONSE_SHAPED = {
    "result_and_method": (b'{"jsonrpc":"2.0","id":1,"result":{"content":[]},"method":"tools/call",'
                          b'"params":{"name":"delete_run","arguments":{}}}', 1),
    "method_then_result": (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_run"},'
                           b'"result":{}}', 2),
    "error_and_method": (b'{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"},"method":"tools/call",'
                         b'"params":{"name":"delete_run"}}', 3),
    "null_result_and_method": (b'{"jsonrpc":"2.0","id":4,"result":null,"method":"tools/call",'
                               b'"params":{"name":"delete_run"}}', 4),
    "null_error_and_method": (b'{"jsonrpc":"2.0","id":5,"error":null,"method":"prompts/get",'
                              b'"params":{"name":"secret_keys"}}', 5),
    "response_with_params": (b'{"jsonrpc":"2.0","id":6,"result":{},"params":{"name":"delete_run"}}', 6),
    "result_and_error": (b'{"jsonrpc":"2.0","id":7,"result":{},"error":{"code":1,"message":"x"}}', 7),
    # Go-style: encoding/json binds "Method"/"Params" to method/params, so a Go server reads a request here.
    "go_Method_Params": (b'{"jsonrpc":"2.0","id":8,"result":{},"Method":"tools/call",'
                         b'"Params":{"name":"delete_run","arguments":{}}}', None),
    "go_METHOD_escaped": (b'{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":"x"},"\\u004dethod":"tools/call",'
                          b'"params":{"name":"delete_run"}}', None),
    "go_Result_on_a_request": (b'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"get_run"},'
                               b'"Result":{}}', None),
    "go_Error_on_a_request": (b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"get_run"},'
                              b'"ERROR":{"code":1,"message":"x"}}', None),
}


@pytest.mark.parametrize("body,id", RESPONSE_SHAPED.values(), ids=RESPONSE_SHAPED.keys())
def test_response_shaped_frames_are_refused(proxy, upstream, body, id):
    assert_refused(send(proxy.url, body), upstream, 400, INVALID_REQUEST, id)


# ================================================================================================ 11. trailers

def test_http1_chunked_trailers(proxy, upstream):
    trailers = [("X-Checksum", "1"), ("Mcp-Method", "tools/list")]
    r = send_chunked(proxy.port, DENIED_BODY, 9, headers=[("Trailer", "X-Checksum, Mcp-Method")], trailers=trailers)
    assert_denied(r, upstream, "tiny", "delete_run", DELETE_REASON)
    r = send_chunked(proxy.port, DENIED_BODY, 1, trailers=trailers)
    assert_denied(r, upstream, "tiny", "delete_run", DELETE_REASON)
    r = send_chunked(proxy.port, ALLOWED_BODY, 9, headers=[("Trailer", "X-Checksum")], trailers=trailers[:1])
    assert_passed(r, upstream, ALLOWED_BODY)


BIG_DENIED = tool("delete_run", '{"run_id":"abc","pad":"' + "d" * 200_000 + '"}', id="111")
BIG_ALLOWED = tool("get_run", '{"run_id":"abc","pad":"' + "a" * 200_000 + '"}', id="112")


@pytest.mark.parametrize("frame", [1024, 16384], ids=["1KiB_frames", "16KiB_frames"])
def test_http2_many_data_frames_then_trailers(proxy, upstream, frame):
    r = send_h2(proxy.url, BIG_DENIED, frame=frame, trailers=[("x-checksum", "1")])
    assert_denied(r, upstream, 111, "delete_run", DELETE_REASON)
    r = send_h2(proxy.url, BIG_ALLOWED, frame=frame, trailers=[("x-checksum", "2")])
    assert_passed(r, upstream, BIG_ALLOWED)


def test_http2_empty_final_data_frame(proxy, upstream):
    """The body's last bytes come in a frame without END_STREAM, then an empty DATA frame ends the stream: the
    decision must cover the whole body, not the (empty) last frame."""
    r = send_h2(proxy.url, BIG_DENIED, frame=4096, empty_end=True)
    assert_denied(r, upstream, 111, "delete_run", DELETE_REASON)
    r = send_h2(proxy.url, tool("delete_run", id="113"), frame=1, empty_end=True)
    assert_denied(r, upstream, 113, "delete_run", DELETE_REASON)
    r = send_h2(proxy.url, BIG_ALLOWED, frame=4096, empty_end=True)
    assert_passed(r, upstream, BIG_ALLOWED)


def test_http2_padded_data_frames(proxy, upstream):
    r = send_h2(proxy.url, BIG_DENIED, frame=3000, pad=200)
    assert_denied(r, upstream, 111, "delete_run", DELETE_REASON)
    r = send_h2(proxy.url, BIG_ALLOWED, frame=3000, pad=200, trailers=[("x-checksum", "3")])
    assert_passed(r, upstream, BIG_ALLOWED)


def test_http2_trailers_without_a_body(proxy, upstream):
    r = send_h2(proxy.url, b"", trailers=[("x-checksum", "0")], content_length=None)
    assert r.status == 200, r
    assert [(g.method, g.body, g.complete) for g in upstream.snapshot()] == [("POST", b"", True)]


# ====================================================================== 12. HTTP/2 bodies past the buffer limits

def padded(name: str, size: int, id: str = "121") -> bytes:
    base = tool(name, '{"pad":""}', id=id)
    out = tool(name, '{"pad":"' + "p" * (size - len(base)) + '"}', id=id)
    assert len(out) == size
    return out


@pytest.mark.parametrize("name", ["get_run", "delete_run"])
@pytest.mark.parametrize("size,frame", [(SMALL_LIMIT + 1, 1024), (5 * SMALL_LIMIT, 512), (3 * 1024 * 1024, 16384)],
                         ids=["just_over_1KiB_frames", "5x_512B_frames", "3MiB"])
def test_http2_over_max_body_bytes(small_proxy, upstream, name, size, frame):
    r = send_h2(small_proxy.url, padded(name, size), frame=frame)
    assert_refused(r, upstream, 413, INVALID_REQUEST, None)


def test_http2_at_max_body_bytes_in_small_frames(small_proxy, upstream):
    body = padded("get_run", SMALL_LIMIT)
    assert_passed(send_h2(small_proxy.url, body, frame=700), upstream, body)
    upstream.clear()
    assert_denied(send_h2(small_proxy.url, padded("delete_run", SMALL_LIMIT), frame=700), upstream, 121,
                  "delete_run", DELETE_REASON)


def test_http2_large_allowed_body_in_small_frames(proxy, upstream):
    body = padded("get_run", 900_000)
    assert_passed(send_h2(proxy.url, body, frame=2048), upstream, body)


@pytest.mark.parametrize("name", ["get_run", "delete_run"])
@pytest.mark.parametrize("transport", ["h2", "http1_chunked"])
def test_body_past_envoys_buffer_is_never_forwarded(tight_proxy, upstream, name, transport):
    """Envoy's buffer (64 KiB) below max_body_bytes (1 MiB): Envoy cannot hold the body for the filter and
    refuses it itself (HTTP 413), whatever the policy would say. Not one body byte reaches the upstream."""
    body = padded(name, 3 * TIGHT_BUFFER)
    if transport == "h2":
        r = send_h2(tight_proxy.url, body, frame=4096, timeout=10)
    else:
        r = send_chunked(tight_proxy.port, body, 8192)
    assert r.status == 413, r
    upstream.assert_not_forwarded(grace=0.2)


# ===================================================================== 13. other methods reaching the same data

def test_prompts_get_is_governed(proxy, upstream):
    assert_target_denied(send(proxy.url, prompt("secret_keys", id="131")), upstream, 131, "prompt", "secret_keys",
                         PROMPT_REASON)
    assert_target_denied(send(proxy.url, prompt("admin", id="132")), upstream, 132, "prompt", "admin",
                         'denied by policy rule "admin"')
    body = prompt("summarise", id="133")
    assert_passed(send(proxy.url, body), upstream, body)


def test_resources_read_is_governed(proxy, upstream):
    assert_target_denied(send(proxy.url, resource("file:///public/private/key.pem", id="134")), upstream, 134,
                         "resource", "file:///public/private/key.pem", RESOURCE_REASON)
    assert_target_denied(send(proxy.url, resource("file:///etc/passwd", id="135")), upstream, 135, "resource",
                         "file:///etc/passwd",
                         "resource 'file:///etc/passwd' is not allowed by the policy (resources_default deny)")
    for uri in ["file:///public/readme.md", "file:///public/docs/a/b.txt", "mlflow://runs/abc"]:
        upstream.clear()
        body = resource(uri, id="136")
        assert_passed(send(proxy.url, body), upstream, body)


# The same file named with dot segments, a percent-encoded unreserved character or a backslash: equivalent URIs
# (RFC 3986 §5.2.4, §6.2.2.2) or, for a file server, the same path. Matched as plain strings they would escape the
# deny glob `file:///public/private/*`, and `..` would leave the allow-list `file:///public/*`; a policy that
# governs resources denies them instead (send the normal form). Normal URIs with escapes that are needed pass.
URI_EQUIVALENTS = {
    "dot_dot_out_of_public": ("file:///public/../etc/passwd", "dot segment"),
    "dot_segment_into_private": ("file:///public/./private/key.pem", "dot segment"),
    "dot_dot_into_private": ("file:///public/x/../private/key.pem", "dot segment"),
    "trailing_dot_dot": ("file:///public/private/..", "dot segment"),
    "percent_encoded_letter": ("file:///public/%70rivate/key.pem", "percent-encoded"),
    "percent_encoded_dots": ("file:///public/%2e%2E/etc/passwd", "percent-encoded"),
    "percent_encoded_slash": ("file:///public/..%2Fetc/passwd", "percent-encoded"),
    "backslashes": ("file:///public\\\\..\\\\etc\\\\passwd", "backslash"),
}


@pytest.mark.parametrize("uri,why", URI_EQUIVALENTS.values(), ids=URI_EQUIVALENTS.keys())
def test_resource_uri_equivalents_are_denied(proxy, upstream, uri, why):
    r = send(proxy.url, resource(uri, id="137"))
    decoded = json.loads(f'"{uri}"')
    msg = assert_rpc_error(r, 200, DENIED, 137)
    data = msg["error"]["data"]
    assert data["resource"] == decoded and data["decision"] == "deny", msg
    assert data["reason"].startswith(f"resource URI has a {why}"), msg
    upstream.assert_not_forwarded()


@pytest.mark.parametrize("uri", ["file:///public/my%20notes.txt", "file:///public/caf%C3%A9/.profile",
                                 "file:///public/a..b/c", "mlflow://runs/abc?next=../x"])
def test_normal_resource_uris_pass(proxy, upstream, uri):
    body = resource(uri, id="138")
    assert_passed(send(proxy.url, body), upstream, body)


NOTIFICATIONS = {
    "tools_call": tool("delete_run", id=None),
    "tools_call_allowed": tool("get_run", id=None),
    "prompts_get": rpc("prompts/get", '{"name":"summarise"}', None),
    "resources_read": rpc("resources/read", '{"uri":"file:///public/readme.md"}', None),
    "escaped_method": tool("delete_run", id=None, method="tools\\/call"),
}


@pytest.mark.parametrize("body", NOTIFICATIONS.values(), ids=NOTIFICATIONS.keys())
def test_governed_methods_as_notifications_are_refused(proxy, upstream, body):
    assert_refused(send(proxy.url, body), upstream, 400, INVALID_REQUEST, None)


def test_null_id_is_a_request(proxy, upstream):
    assert_denied(send(proxy.url, tool("delete_run", id="null")), upstream, None, "delete_run", DELETE_REASON)
    body = tool("get_run", id="null")
    assert_passed(send(proxy.url, body), upstream, body)


# Only tools/call, prompts/get and resources/read are governed. These name a denied prompt or resource and still
# pass: completion/complete only completes argument values, resources/subscribe only announces changes (the
# content needs resources/read), and the list methods return what the server offers.
UNGOVERNED = {
    "completion_complete_prompt": rpc("completion/complete", '{"ref":{"type":"ref/prompt","name":"secret_keys"},'
                                                              '"argument":{"name":"k","value":"a"}}'),
    "completion_complete_resource": rpc("completion/complete",
                                        '{"ref":{"type":"ref/resource","uri":"file:///public/private/{name}"},'
                                        '"argument":{"name":"name","value":"k"}}'),
    "resources_subscribe": rpc("resources/subscribe", '{"uri":"file:///public/private/key.pem"}'),
    "resources_list": rpc("resources/list", "{}"),
    "resources_templates_list": rpc("resources/templates/list"),
    "prompts_list": rpc("prompts/list"),
    "logging_set_level": rpc("logging/setLevel", '{"level":"debug"}'),
    "notification_cancelled": rpc("notifications/cancelled", '{"requestId":1}', None),
}


@pytest.mark.parametrize("body", UNGOVERNED.values(), ids=UNGOVERNED.keys())
def test_ungoverned_methods_pass(proxy, upstream, body):
    assert_passed(send(proxy.url, body), upstream, body)


def test_batch_mixing_a_tool_and_a_denied_resource(proxy, upstream):
    body = b"[" + tool("get_run", id="1") + b"," + resource("file:///public/private/a", id="2") + b"]"
    r = send(proxy.url, body)
    assert r.status == 200, r
    first, second = r.json()
    assert first["id"] == 1 and "batch" in first["error"]["data"]["reason"], first
    assert second["id"] == 2 and second["error"]["data"]["resource"] == "file:///public/private/a", second
    upstream.assert_not_forwarded()


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "OPTIONS"])
def test_body_on_any_http_method_is_inspected(proxy, upstream, method):
    r = send(proxy.url, tool("delete_run", id="141"), method=method)
    assert_denied(r, upstream, 141, "delete_run", DELETE_REASON)


def test_upgrade_requests_do_not_skip_inspection(proxy, upstream):
    """An h2c upgrade is ignored by Envoy (the request goes on as HTTP/1.1, through the filter: denied); a
    WebSocket upgrade is refused (403: the route has no upgrade configured). Neither tunnels a body past the
    filter."""
    body = tool("delete_run", id="142")
    h2c = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]
    x = exchange(proxy.port, [head(proxy.port, [("Content-Length", str(len(body))), *h2c], close=False) + body],
                 expect=1)
    assert len(x.replies) == 1, x
    assert_denied(x.replies[0], upstream, 142, "delete_run", DELETE_REASON)
    ws = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
          ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    x = exchange(proxy.port, [head(proxy.port, [("Content-Length", str(len(body))), *ws], close=False) + body],
                 expect=1)
    assert [r.status for r in x.replies] == [403], x
    upstream.assert_not_forwarded()
