"""Fleet-wide rate limits in the tests: a Redis on 127.0.0.1 and a small rate limit service over it.

- ``Redis``: Debian's ``redis-server`` (``make e2e`` installs it when missing) on a free loopback port, no
  persistence (no RDB snapshot, no AOF), its files in a temporary directory. ``stop()`` and ``start()`` again on
  the same port stand for Redis going away mid-test.
- ``RateLimitService``: ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`` (grpcio and the
  ``xds-protos`` stubs) over that Redis, counting with envoyproxy/ratelimit's fixed-window algorithm: per
  descriptor one key ``<domain>_<key>_<value>_..._<window start>``, ``INCRBY`` its hits then ``EXPIRE`` it after
  the window, over the limit when the count passes ``requests_per_unit``; every descriptor is counted, refused or
  not (envoyproxy/ratelimit's default). It honours the descriptor's ``limit`` override (its only source of limits:
  it has no configuration file) and ``hits_addend`` (the descriptor's, else the request's, else 1), and answers
  one status per descriptor with ``current_limit``, ``limit_remaining`` and ``duration_until_reset``, as
  envoyproxy/ratelimit does. It stands in for envoyproxy/ratelimit or Limitador in tests only.

  Knobs for the tests: ``mode`` ("ok", "slow": answer after ``slow_seconds``, "garbage": bytes that are no
  RateLimitResponse, "unknown": overall code UNKNOWN, "error": gRPC status INTERNAL), ``stop()`` (down: the port
  refuses connections), ``domains`` (answer domains outside this set without a limit, as envoyproxy/ratelimit
  does for a domain its configuration lacks) and ``clock`` (the service's time, so a test steps from window to
  window instead of waiting). A Redis that fails makes it answer gRPC status UNAVAILABLE.

Run on its own (for a manual check or a benchmark): ``python tests/e2e/ratelimit.py --redis-port P --port Q``.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures
from typing import Callable

# gRPC's fork handlers only print a warning when the tests start Envoy next to the service: the children exec
# at once and never use gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
METHOD = f"/{SERVICE}/ShouldRateLimit"
# RateLimitDescriptor.RateLimitOverride.unit (envoy.type.v3.RateLimitUnit) -> seconds. The same numbers are
# RateLimitResponse.RateLimit.Unit's.
UNIT_SECONDS = {1: 1, 2: 60, 3: 3600, 4: 86400}
GARBAGE = b"\xff\xfe not a RateLimitResponse \x00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisError(Exception):
    pass


class Resp:
    """A minimal Redis client (RESP2 over one socket): enough for PING, INCRBY, EXPIRE, GET, FLUSHALL."""

    def __init__(self, port: int, timeout: float = 2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()

    @staticmethod
    def _encode(args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _reply(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            if len(data) != n + 2:
                raise RedisError("connection closed")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")

    def pipeline(self, commands: list[tuple]) -> list:
        """Sends every command, then reads every reply (one round trip, as envoyproxy/ratelimit's pipeline)."""
        try:
            self.sock.sendall(b"".join(self._encode(c) for c in commands))
            return [self._reply() for _ in commands]
        except OSError as e:
            raise RedisError(str(e)) from e

    def command(self, *args):
        return self.pipeline([args])[0]


class Redis:
    """``redis-server`` on 127.0.0.1, a free port, no persistence."""

    def __init__(self, workdir: pathlib.Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "redis.log"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def start(self, timeout: float = 10.0) -> "Redis":
        binary = self.binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make e2e` (it installs Debian's redis-server) "
                               "or apt-get install redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.log), "--daemonize", "no",
                "--protected-mode", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace') if self.log.exists() else ''}")
            with contextlib.suppress(OSError, RedisError):
                c = Resp(self.port, timeout=0.5)
                try:
                    if c.command("PING") == "PONG":
                        return self
                finally:
                    c.close()
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self) -> Resp:
        return Resp(self.port)

    def flush(self) -> None:
        c = self.client()
        try:
            c.command("FLUSHALL")
        finally:
            c.close()


class RateLimitService:
    """ShouldRateLimit over Redis with envoyproxy/ratelimit's fixed windows (see the module's docstring)."""

    def __init__(self, redis_port: int, *, port: int = 0, clock: Callable[[], float] = time.time,
                 workers: int = 64):
        self.redis_port = redis_port
        self.mode = "ok"
        self.slow_seconds = 1.0
        self.domains: set[str] | None = None
        self.clock = clock
        # The last requests received, as protobuf's JSON mapping (for assertions on their shape).
        self.requests: collections.deque = collections.deque(maxlen=10000)
        self.calls = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        # Counts Redis failures: each worker thread's connection is made anew after one (``_redis``).
        self._generation = 0
        self._workers = workers
        self._want_port = port
        self.server = None
        self.port = None

    # ---------------------------------------------------------------------------------------------- gRPC
    def start(self) -> "RateLimitService":
        import grpc
        from envoy.service.ratelimit.v3 import rls_pb2

        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
                self._should_rate_limit,
                request_deserializer=rls_pb2.RateLimitRequest.FromString,
                # Answers are serialized here (bytes), so that "garbage" can send bytes no message has.
                response_serializer=lambda b: b),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers),
                                  maximum_concurrent_rpcs=None)
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port or self._want_port}")
        self.server.start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections (Envoy then reports gRPC status 14, UNAVAILABLE)."""
        if self.server is not None:
            self.server.stop(grace=None)
            self.server = None

    def _redis(self) -> Resp:
        """This worker thread's connection, made anew if Redis failed (in any thread) since it was made: a
        connection from before Redis went away would fail the first request after Redis is back."""
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.generation != self._generation:
            c.close()
            c = None
        if c is None:
            self._local.generation = self._generation
            c = self._local.conn = Resp(self.redis_port)
        return c

    def _drop_redis(self) -> None:
        with self._lock:
            self._generation += 1
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _should_rate_limit(self, request, context) -> bytes:
        import grpc
        from google.protobuf import json_format

        with self._lock:
            self.calls += 1
            self.requests.append(json_format.MessageToDict(request))
        mode = self.mode
        if mode == "slow":
            time.sleep(self.slow_seconds)
        elif mode == "garbage":
            return GARBAGE
        elif mode == "error":
            context.abort(grpc.StatusCode.INTERNAL, "the test's rate limit service was told to fail")
        elif mode == "unknown":
            from envoy.service.ratelimit.v3 import rls_pb2
            return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.UNKNOWN).SerializeToString()
        try:
            return self.decide(request).SerializeToString()
        except (RedisError, OSError) as e:
            self._drop_redis()
            context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {e}")

    # ---------------------------------------------------------------------------------------------- counting
    def decide(self, request):
        """envoyproxy/ratelimit's fixed-window count of every descriptor of ``request``."""
        from envoy.service.ratelimit.v3 import rls_pb2
        Resp_ = rls_pb2.RateLimitResponse

        now = int(self.clock())
        known = self.domains is None or request.domain in self.domains
        counted = []  # (descriptor index, key, limit, seconds, hits)
        for i, d in enumerate(request.descriptors):
            if not known or not d.HasField("limit") or d.limit.unit not in UNIT_SECONDS:
                continue
            secs = UNIT_SECONDS[d.limit.unit]
            if d.HasField("hits_addend"):
                hits = d.hits_addend.value
            else:
                hits = max(1, request.hits_addend)
            key = request.domain + "_" + "".join(f"{e.key}_{e.value}_" for e in d.entries) + str(now // secs * secs)
            counted.append((i, key, d.limit, secs, hits))
        commands = []
        for _, key, _, secs, hits in counted:
            commands += [("INCRBY", key, hits), ("EXPIRE", key, secs)]
        replies = self._redis().pipeline(commands) if commands else []
        statuses = [Resp_.DescriptorStatus(code=Resp_.OK, limit_remaining=2**32 - 1) for _ in request.descriptors]
        over = False
        for n, (i, _, limit, secs, _) in enumerate(counted):
            after = replies[2 * n]
            s = Resp_.DescriptorStatus(
                current_limit=Resp_.RateLimit(requests_per_unit=limit.requests_per_unit, unit=limit.unit))
            s.duration_until_reset.seconds = secs - now % secs
            if after > limit.requests_per_unit:
                over = True
                s.code = Resp_.OVER_LIMIT
            else:
                s.code = Resp_.OK
                s.limit_remaining = limit.requests_per_unit - after
            statuses[i] = s
        return Resp_(overall_code=Resp_.OVER_LIMIT if over else Resp_.OK, statuses=statuses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    svc = RateLimitService(args.redis_port, port=args.port).start()
    print(f"ShouldRateLimit on 127.0.0.1:{svc.port} (Redis 127.0.0.1:{args.redis_port})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        svc.server.wait_for_termination()


if __name__ == "__main__":
    main()
