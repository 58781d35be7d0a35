"""For the approval tests: the test suite's own approval service, a webhook whose every answer a test decides.
(Envoy reaches it through a cluster: the envoy factories' ``clusters={name: port}`` option.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclasses.dataclass
class Asked:
    """One request the approval service received."""
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float                # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


# What the webhook answers: (HTTP status, a dict/list sent as JSON, or bytes sent as they are).
Answer = tuple[int, Any]


def approve(_: Asked) -> Answer:
    return 200, {"approved": True}


def deny(reason: str | None) -> Callable[[Asked], Answer]:
    return lambda _: (200, {"approved": False} if reason is None else {"approved": False, "reason": reason})


class Webhook:
    """A threaded stdlib HTTP/1.1 server on 127.0.0.1 (a port the kernel picks) that records every request and
    answers with ``decide(asked)`` (default: approve). ``decide`` may sleep. While ``gate`` is clear, every
    request waits for it before being decided (``hold()`` / ``release()``)."""

    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self.decide: Callable[[Asked], Answer] = approve
        self.gate = threading.Event()
        self.gate.set()
        self._cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle holds the body back for Envoy's
            # delayed ACK on the kept-alive connection (~40 ms per answer).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                asked = Asked(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                              time.monotonic())
                with hook._cond:
                    hook.asked.append(asked)
                    hook._cond.notify_all()
                hook.gate.wait()
                status, payload = hook.decide(asked)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                with contextlib.suppress(OSError):  # Envoy may have given up (timeout) and closed
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.gate.set()
        with self._cond:
            self.asked.clear()
        self.decide = approve

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def snapshot(self) -> list[Asked]:
        with self._cond:
            return list(self.asked)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Asked]:
        """Waits until at least ``n`` requests arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.asked) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the approval service got {len(self.asked)} requests, want {n}")
                self._cond.wait(left)
            return list(self.asked)

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
