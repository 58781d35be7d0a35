"""Helpers shared by the end-to-end tests: raw HTTP requests and JSON-RPC assertions."""
from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Any

DENIED = -31001
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020

DELETE_REASON = "Deleting MLflow data is not allowed for agents"
SEARCH_REASON = "Fetch at most 100 runs at once"


def call(tool: str, args: dict | None = None, id: Any = 1) -> dict:
    """A tools/call request."""
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args or {}}}


def encode(msg: Any) -> bytes:
    return json.dumps(msg).encode()


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body[:2000]!r}"


def send(url: str, body: bytes | None = None, *, method: str = "POST", headers: dict[str, str | None] | None = None,
         chunked: bool = False, content_type: str | None = "application/json", timeout: float = 15.0) -> Reply:
    """One HTTP/1.1 request on a fresh connection (``Connection: close``).

    The request is written by a background thread while this one reads the answer, so a proxy that answers
    before it has read the whole body (413) is seen as it answered, not as a broken pipe. ``chunked`` sends
    the body with Transfer-Encoding: chunked, in three chunks a few milliseconds apart. A header given as
    None is left out.
    """
    u = urllib.parse.urlsplit(url)
    hdrs: dict[str, str | None] = {"Host": f"{u.hostname}:{u.port}", "Accept": "application/json, text/event-stream",
                                   "Content-Type": content_type}
    if body is not None:
        if chunked:
            hdrs["Transfer-Encoding"] = "chunked"
        else:
            hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    hdrs["Connection"] = "close"
    head = f"{method} {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None) + "\r\n"
    parts: list[bytes] = [head.encode("latin-1")]
    if body is not None and chunked:
        third = max(1, -(-len(body) // 3))
        parts += [b"%x\r\n%s\r\n" % (len(body[i:i + third]), body[i:i + third]) for i in range(0, len(body), third)]
        parts.append(b"0\r\n\r\n")
    elif body:
        parts.append(body)

    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)

    def writer() -> None:
        try:
            for i, p in enumerate(parts):
                if chunked and i > 1:
                    time.sleep(0.01)
                sock.sendall(p)
        except OSError:
            pass  # the proxy answered early and closed; the answer is what counts

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        t.join(timeout)
        sock.close()


def post(url: str, msg: Any, **kw) -> Reply:
    return send(url, encode(msg), **kw)


def same_id(got: Any, want: Any) -> bool:
    """JSON-RPC ids compare with their type (1 is not "1", and True is not 1)."""
    return type(got) is type(want) and got == want


def assert_rpc_error(reply: Reply, status: int, code: int | None, id: Any = None) -> dict:
    """A JSON-RPC 2.0 error reply with this HTTP status, code (None: any integer) and id."""
    assert reply.status == status, f"want HTTP {status}, got {reply}"
    assert reply.headers.get("content-type", "").split(";")[0].strip() == "application/json", str(reply)
    msg = reply.json()
    assert isinstance(msg, dict), str(reply)
    assert msg.get("jsonrpc") == "2.0", str(reply)
    assert "id" in msg and same_id(msg["id"], id), f"want id {id!r}, got {reply}"
    assert "result" not in msg, str(reply)
    err = msg.get("error")
    assert isinstance(err, dict), str(reply)
    assert isinstance(err.get("code"), int) and not isinstance(err.get("code"), bool), str(reply)
    if code is not None:
        assert err["code"] == code, f"want code {code}, got {reply}"
    assert isinstance(err.get("message"), str) and err["message"], str(reply)
    return msg


def assert_denied_error(err_msg: dict, id: Any, tool: str, reason: str | None) -> None:
    """A -31001 error object (one reply, or one element of a batch reply) for ``tool``."""
    assert same_id(err_msg.get("id"), id), err_msg
    err = err_msg["error"]
    assert err["code"] == DENIED, err_msg
    data = err.get("data")
    assert isinstance(data, dict), err_msg
    assert data.get("tool") == tool, err_msg
    assert data.get("decision") == "deny", err_msg
    assert isinstance(data.get("reason"), str) and data["reason"], err_msg
    assert tool in err["message"], f"the message should name the tool: {err_msg}"
    assert data["reason"] in err["message"], f"the message should give the reason: {err_msg}"
    if reason is not None:
        assert data["reason"] == reason, err_msg


def assert_denied(reply: Reply, id: Any, tool: str, reason: str | None = None) -> dict:
    msg = assert_rpc_error(reply, 200, DENIED, id)
    assert_denied_error(msg, id, tool, reason)
    return msg


def send_h2(url: str, body: bytes, *, headers: dict[str, str] | None = None, trailers: dict[str, str] | None = None,
            timeout: float = 15.0) -> Reply:
    """One POST over HTTP/2 cleartext with prior knowledge (h2c), honouring flow control. With ``trailers``
    the stream ends with a trailers frame instead of on the last body frame.

    Stops sending the body as soon as the response is complete: a server may answer early (413) and then
    reset the stream with NO_ERROR (RFC 9113 §8.1), which is a normal end here, not a failure.
    """
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", "POST"), (":path", u.path or "/"), (":scheme", "http"),
                (":authority", f"{u.hostname}:{u.port}"), ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"), ("content-length", str(len(body)))]
        hdrs += [(k.lower(), v) for k, v in (headers or {}).items()]
        conn.send_headers(sid, hdrs, end_stream=not body and not trailers)
        sock.sendall(conn.data_to_send())
        sent, status, resp_headers, data, ended = 0, None, {}, bytearray(), False
        while not ended:
            while sent < len(body) and not ended:
                try:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                except h2.exceptions.StreamClosedError:
                    break
                if room <= 0:
                    break
                chunk = body[sent:sent + room]
                sent += len(chunk)
                conn.send_data(sid, chunk, end_stream=sent >= len(body) and not trailers)
                if sent >= len(body) and trailers:
                    conn.send_headers(sid, list(trailers.items()), end_stream=True)
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
                    assert status is not None and ended, f"stream reset (code {ev.error_code}) before a whole response"
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    ended = ended or status is not None
            with contextlib.suppress(OSError):
                sock.sendall(conn.data_to_send())
        assert status is not None, "no HTTP/2 response"
        return Reply(status, resp_headers, bytes(data))
    finally:
        sock.close()
