"""End-to-end harness: a real Envoy 1.40 with the mcp-policy wasm filter, in front of either the real
MLflow MCP server (seeded file store) or a recording upstream that remembers every request it got.

Everything listens on 127.0.0.1 only, on ports the kernel picks (port 0), so runs never collide.

Fixtures
- ``mlflow_mcp`` / ``mlflow_mcp_json`` (session): a seeded MLflow file store and the MLflow MCP server over
  Streamable HTTP (SSE responses / application/json responses).
- ``recorder`` (session) and ``upstream`` (per test, cleared): the recording upstream. A test can make it answer
  something else with ``monkeypatch.setattr(upstream, "answer", fn)``, ``fn(rec) -> (status, payload)``;
  a ``Raw`` payload is sent as it is (its own headers, optionally in chunks).
- ``envoy`` (per test): a factory ``envoy(policy, upstream_port, **opts) -> Envoy``.
- ``shared_envoy`` (session): the same factory, but Envoys with an identical configuration are reused
  across tests (most raw-HTTP tests share one), which keeps the suite fast.
- ``refused`` (per test): ``refused(policy, *expected_log_fragments)`` asserts Envoy refuses the policy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
WASM = REPO / "target" / "wasm32-wasip1" / "release" / "mcp_policy.wasm"
ENVOY_TEMPLATE = REPO / "envoy" / "envoy.yaml"
EXAMPLE_POLICY_FILE = REPO / "envoy" / "policies" / "example.json"
SCRIPTS = REPO / "scripts"
EXAMPLE_POLICY: dict = json.loads(EXAMPLE_POLICY_FILE.read_text())

START_TIMEOUT = 30.0


def envoy_binary() -> str:
    """The venv's Envoy (the one next to this interpreter), else $ENVOY_PATH, else envoy on PATH."""
    here = pathlib.Path(sys.executable).parent / "envoy"
    if here.exists():
        return str(here)
    found = os.environ.get("ENVOY_PATH") or shutil.which("envoy")
    if not found:
        pytest.fail("no envoy binary: run `make venv` and run the tests with .venv/bin/python")
    return found


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT,
                  what: str = "server", log: pathlib.Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}:\n{text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the test process dies (a killed pytest leaves no Envoy behind)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# --------------------------------------------------------------------------------------------------
# MLflow store + MLflow MCP server
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MlflowServer:
    url: str
    port: int
    store: pathlib.Path
    tracking_uri: str
    ids: dict
    log: pathlib.Path

    def client(self):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient
        return MlflowClient(tracking_uri=self.tracking_uri)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    base = tmp_path_factory.mktemp("mlflow")
    store, ids_file = base / "mlruns", base / "ids.json"
    subprocess.run([sys.executable, str(SCRIPTS / "seed_mlflow.py"), "--store", str(store), "--out", str(ids_file)],
                   check=True, capture_output=True, timeout=120)
    return store, json.loads(ids_file.read_text())


def _start_mlflow(tmp_path_factory, mlflow_store, json_response: bool):
    store, ids = mlflow_store
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-mcp") / "server.log"
    args = [sys.executable, str(SCRIPTS / "serve_mlflow_mcp.py"), "--store", str(store), "--port", str(port)]
    if json_response:
        args.append("--json-response")
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_die_with_parent)
    try:
        wait_for_port(port, proc, what="MLflow MCP server", log=log)
    except Exception:
        stop_process(proc)
        raise
    return proc, MlflowServer(url=f"http://127.0.0.1:{port}/mcp", port=port, store=store,
                              tracking_uri=store.as_uri(), ids=ids, log=log)


@pytest.fixture(scope="session")
def mlflow_mcp(tmp_path_factory, mlflow_store) -> MlflowServer:
    proc, server = _start_mlflow(tmp_path_factory, mlflow_store, json_response=False)
    yield server
    stop_process(proc)


@pytest.fixture(scope="session")
def mlflow_mcp_json(tmp_path_factory, mlflow_store) -> MlflowServer:
    proc, server = _start_mlflow(tmp_path_factory, mlflow_store, json_response=True)
    yield server
    stop_process(proc)


# --------------------------------------------------------------------------------------------------
# Recording upstream
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Raw:
    """An answer the recording upstream sends byte for byte: ``headers`` as given (plus Content-Length, or
    Transfer-Encoding: chunked when ``chunks`` is set), then ``body``, or ``chunks`` as separate HTTP chunks
    a few milliseconds apart."""
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    chunks: list[bytes] | None = None


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes              # the body bytes that arrived (all of them if complete)
    complete: bool           # False: the request was cut off (the proxy reset it) before its body ended
    header_list: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # every header line, in order
    peer: str = ""           # the IP the request came from (each test Envoy connects from its own, see Envoy)

    def header_values(self, name: str) -> list[str]:
        """Every value of a header (a repeated header is one value per line)."""
        return [v for k, v in self.header_list if k == name.lower()]


class Recorder:
    """A tiny threaded HTTP/1.1 server on 127.0.0.1 that records every request and answers JSON-RPC 200.

    ``strict`` (set by the tests' proxy fixtures) says whether request headers may reach the upstream ahead of
    a decision (False when the filter does not hold headers) — see ``assert_not_forwarded``.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.strict = True
        self.source: str | None = None  # when set, only requests from this IP count (see ``watch``)
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # An answer is two writes (headers, body): without TCP_NODELAY, Nagle holds the body until Envoy's
            # delayed ACK on the kept-alive upstream connection, ~40 ms per forwarded request.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _read(self, n: int) -> bytes:
                buf = bytearray()
                with contextlib.suppress(OSError):
                    while len(buf) < n:
                        got = self.rfile.read1(n - len(buf))
                        if not got:
                            break
                        buf += got
                return bytes(buf)

            def _read_body(self) -> tuple[bytes, bool]:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    try:
                        while True:
                            line = self.rfile.readline()
                            if not line:
                                return b"".join(chunks), False
                            size = int(line.split(b";")[0].strip(), 16)
                            if size == 0:
                                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                    pass  # trailers
                                return b"".join(chunks), True
                            chunk = self._read(size)
                            chunks.append(chunk)
                            if len(chunk) < size or not self.rfile.readline():
                                return b"".join(chunks), False
                    except (OSError, ValueError):
                        return b"".join(chunks), False
                n = int(self.headers.get("Content-Length") or 0)
                body = self._read(n) if n else b""
                return body, len(body) == n

            def _handle(self) -> None:
                body, complete = self._read_body()
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                               complete, [(k.lower(), v) for k, v in self.headers.items()], self.client_address[0])
                with recorder._lock:
                    recorder.requests.append(rec)
                if not complete:
                    self.close_connection = True
                    return
                status, payload = recorder.answer(rec)
                if isinstance(payload, Raw):
                    self._send_raw(status, payload)
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send_raw(self, status: int, raw: Raw) -> None:
                self.send_response(status)
                for k, v in raw.headers.items():
                    self.send_header(k, v)
                if raw.chunks is None:
                    self.send_header("Content-Length", str(len(raw.body)))
                    self.end_headers()
                    self.wfile.write(raw.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in raw.chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.005)
                self.wfile.write(b"0\r\n\r\n")

            # Every method the tests send: http.server answers any other with an immediate 501, which in the
            # streamed mode (headers forwarded before the decision) races the filter's own reply.
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(rec: Recorded) -> tuple[int, Any]:
        def result(msg: Any) -> dict:
            method = msg.get("method") if isinstance(msg, dict) else None
            return {"jsonrpc": "2.0", "id": msg.get("id") if isinstance(msg, dict) else None,
                    "result": {"content": [{"type": "text", "text": f"upstream answered {method}"}],
                               "isError": False, "upstream": "recorder"}}

        try:
            msg = json.loads(rec.body) if rec.body else None
        except ValueError:
            msg = None
        if isinstance(msg, list):
            replies = [result(m) for m in msg if isinstance(m, dict) and "method" in m and "id" in m]
            return (200, replies) if replies else (202, None)
        if isinstance(msg, dict) and "method" in msg and "id" not in msg:
            return 202, None  # a notification
        return 200, result(msg if isinstance(msg, dict) else {})

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def watch(self, envoy: "Envoy", strict: bool) -> "Envoy":
        """From now on count only what ``envoy`` sends. Tests alternate between Envoys (held and streamed
        headers); a request the previous test's Envoy cut off can reach this upstream a moment after it was
        emptied, and must not be taken for something this test's Envoy let through."""
        self.strict = strict
        self.source = envoy.source_ip
        return envoy

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if self.source is None or r.peer == self.source]

    def bodies(self) -> list[bytes]:
        return [r.body for r in self.snapshot()]

    def assert_not_forwarded(self, grace: float = 0.05) -> None:
        """Not one byte of a request body reached this upstream. When the filter holds headers (``strict``)
        nothing at all did; otherwise the headers may have gone ahead, but the request was then cut off
        before any of its body. ``grace``: time allowed for anything in flight to arrive first."""
        time.sleep(grace)
        got = self.snapshot()
        seen = [(r.method, r.path, r.complete, r.body[:200], r.headers.get("host"), r.headers.get("x-request-id")) for r in got]
        if self.strict:
            assert got == [], f"the upstream received {seen}"
        else:
            assert all(r.body == b"" and not r.complete for r in got), f"the upstream received {seen}"

    def assert_forwarded(self, body: bytes, method: str = "POST") -> None:
        """Exactly one request reached this upstream, whole, with this body byte for byte. (When headers may go
        ahead, requests cut off with no body byte — earlier refused ones, arriving late — are left aside.)"""
        got = self.snapshot()
        if not self.strict:
            got = [r for r in got if r.complete or r.body]
        assert [(r.method, r.complete, r.body) for r in got] == [(method, True, body)], \
            f"want one whole {method} with the body unchanged, got {[(r.method, r.complete, r.body[:200]) for r in got]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def upstream(recorder) -> Recorder:
    """The session's recording upstream, emptied for this test."""
    recorder.clear()
    recorder.strict = True
    recorder.source = None
    return recorder


# --------------------------------------------------------------------------------------------------
# Envoy
# --------------------------------------------------------------------------------------------------

class EnvoyStartError(RuntimeError):
    def __init__(self, message: str, returncode: int | None, log: str):
        super().__init__(f"{message}\n--- envoy log ---\n{log}")
        self.returncode = returncode
        self.log = log


_SOURCE_IPS = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count())


def render_bootstrap(policy: dict | str, upstream_port: int, *, hold_headers: bool = True,
                     buffer_limit: int = 4 * 1024 * 1024, failure_policy: str | None = "FAIL_CLOSED",
                     wasm: pathlib.Path = WASM, clusters: dict[str, int] | None = None,
                     grpc_clusters: dict[str, int] | None = None) -> dict:
    """The shipped envoy/envoy.yaml with test ports (0: the kernel picks), this policy and the built wasm.
    ``clusters``: more clusters, {name: port} (plain HTTP/1.1 to 127.0.0.1), e.g. an approval service;
    ``grpc_clusters``: the same over HTTP/2 (gRPC), e.g. a rate limit service."""
    cfg = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    listener["per_connection_buffer_limit_bytes"] = buffer_limit
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm_filter,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    plugin = wasm_filter["typed_config"]["config"]
    plugin["vm_config"]["code"]["local"]["filename"] = str(wasm)
    plugin["configuration"]["value"] = policy if isinstance(policy, str) else json.dumps(policy)
    plugin["allow_on_headers_stop_iteration"] = hold_headers
    if failure_policy is None:
        plugin.pop("failure_policy", None)
    else:
        plugin["failure_policy"] = failure_policy
    (cluster,) = cfg["static_resources"]["clusters"]
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": upstream_port}
    # Each Envoy connects to its upstream from its own loopback address, so the recording upstream can tell
    # which Envoy sent a request (Recorder.watch).
    cluster["upstream_bind_config"] = {"source_address": {"address": next(_SOURCE_IPS), "port_value": 0}}
    add_clusters(cfg, clusters, grpc_clusters)
    return cfg


def add_clusters(cfg: dict, clusters: dict[str, int] | None = None,
                 grpc_clusters: dict[str, int] | None = None) -> None:
    """Adds clusters to a bootstrap, {name: port} on 127.0.0.1: ``clusters`` plain HTTP/1.1 (an approval
    service), ``grpc_clusters`` HTTP/2 (gRPC: a rate limit service)."""
    for name, port in [*(clusters or {}).items(), *(grpc_clusters or {}).items()]:
        c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
             "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                 "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
        if name in (grpc_clusters or {}):
            c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        cfg["static_resources"]["clusters"].append(c)


def shipped_bootstrap(path: pathlib.Path, ports: dict[str, tuple[int, int]]) -> dict:
    """An example Envoy configuration as shipped, with test ports and the built wasm: the admin and listener on
    ports the kernel picks, and each cluster, {name: (shipped port, test port)}, moved to its test port (every
    cluster of the file must be named, each at its shipped 127.0.0.1 port)."""
    cfg = yaml.safe_load(path.read_text())
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (listener,) = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    wasm_config(cfg)["vm_config"]["code"]["local"]["filename"] = str(WASM)
    clusters = cfg["static_resources"]["clusters"]
    assert sorted(c["name"] for c in clusters) == sorted(ports)
    for c in clusters:
        addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        shipped, test = ports[c["name"]]
        assert addr == {"address": "127.0.0.1", "port_value": shipped}
        addr["port_value"] = test
    return cfg


def wasm_config(cfg: dict) -> dict:
    """The Wasm filter's ``config`` of a one-listener bootstrap (its policy is ``["configuration"]["value"]``)."""
    (listener,) = cfg["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]


class Envoy:
    """One Envoy process. ``url`` is http://127.0.0.1:PORT/mcp, ``admin`` http://127.0.0.1:ADMIN."""

    def __init__(self, workdir: pathlib.Path, policy: dict | str, upstream_port: int, *, concurrency: int = 1,
                 log_level: str = "warning", component_log_level: str | None = None,
                 bootstrap: dict | str | None = None,
                 **render_opts):
        if not WASM.exists():
            pytest.fail(f"{WASM.relative_to(REPO)} is missing: run `make build` first")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config_path = workdir / "envoy.yaml"
        # ``bootstrap``: a whole Envoy configuration to run instead (policy, upstream_port and render_opts unused);
        # YAML text is run as it is.
        if isinstance(bootstrap, str):
            cfg = yaml.safe_load(bootstrap)
            self.config_path.write_text(bootstrap)
        else:
            cfg = bootstrap if bootstrap is not None else render_bootstrap(policy, upstream_port, **render_opts)
            self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        # The address this Envoy connects to its upstreams from, if render_bootstrap chose one.
        clusters = cfg.get("static_resources", {}).get("clusters") or [{}]
        self.source_ip = clusters[0].get("upstream_bind_config", {}).get("source_address", {}).get("address")
        self.log_path = workdir / "envoy.log"
        self.admin_path = workdir / "admin_address"
        args = [envoy_binary(), "-c", str(self.config_path), "--concurrency", str(concurrency),
                "-l", log_level, "--disable-hot-restart", "--admin-address-path", str(self.admin_path)]
        if component_log_level:
            args += ["--component-log-level", component_log_level]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_die_with_parent)
        self.admin = self.url = self.base = None
        self.port = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _admin_get(self, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.admin + path, timeout=timeout) as r:  # noqa: S310 (loopback)
            return r.status, r.read()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Envoy":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyStartError(f"envoy exited with {self.proc.returncode}", self.proc.returncode,
                                      self.log_text())
            if self.admin is None and self.admin_path.exists():
                addr = self.admin_path.read_text().strip()
                if addr:
                    self.admin = f"http://{addr}"
            if self.admin is not None:
                with contextlib.suppress(OSError):
                    status, _ = self._admin_get("/ready")
                    if status == 200:
                        _, body = self._admin_get("/listeners?format=json")
                        (lst,) = json.loads(body)["listener_statuses"]
                        self.port = lst["local_address"]["socket_address"]["port_value"]
                        self.base = f"http://127.0.0.1:{self.port}"
                        self.url = self.base + "/mcp"
                        return self
            time.sleep(0.05)
        raise EnvoyStartError(f"envoy not ready within {timeout}s", None, self.log_text())

    def stats(self, prefix: str = "") -> dict[str, int]:
        _, body = self._admin_get("/stats?format=json" + (f"&filter={prefix}" if prefix else ""))
        return {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "value" in s}

    def stop(self) -> None:
        stop_process(self.proc)


def _launch(workdir: pathlib.Path, policy, upstream_port: int, **opts) -> Envoy:
    e = Envoy(workdir, policy, upstream_port, **opts)
    try:
        return e.wait_ready()
    except Exception:
        e.stop()
        raise


@pytest.fixture
def envoy(tmp_path):
    """Factory: ``envoy(policy, upstream_port, concurrency=1, hold_headers=True, buffer_limit=4 MiB, ...)``."""
    started: list[Envoy] = []

    def start(policy: dict | str, upstream_port: int, **opts) -> Envoy:
        e = _launch(tmp_path / f"envoy{len(started)}", policy, upstream_port, **opts)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture(scope="session")
def shared_envoy(tmp_path_factory):
    """Like ``envoy`` but an Envoy is reused by every test asking for the same configuration."""
    cache: dict[str, Envoy] = {}

    def get(policy: dict | str, upstream_port: int, **opts) -> Envoy:
        key = json.dumps([policy, upstream_port, opts], sort_keys=True, default=str)
        e = cache.get(key)
        if e is None or e.proc.poll() is not None:
            e = cache[key] = _launch(tmp_path_factory.mktemp("envoy"), policy, upstream_port, **opts)
        return e

    yield get
    for e in cache.values():
        e.stop()


def held_proxy(shared_envoy, upstream: Recorder, policy: dict, held: bool, **opts) -> Envoy:
    """The shared Envoy for ``policy`` with request headers held until the body is decided (``held``) or not
    (the policy then says ``hold_headers: false``), watched by the recording upstream. Without held headers,
    headers (never body bytes) may reach the upstream early."""
    if not held:
        policy = {**policy, "hold_headers": False}
    return upstream.watch(shared_envoy(policy, upstream.port, hold_headers=held, **opts), strict=held)


@pytest.fixture
def refused(tmp_path, recorder):
    """``refused(policy, *fragments)``: Envoy must refuse the policy (exit non-zero, or never get ready)
    and its log must contain each fragment. Returns the log text."""
    count = [0]

    def check(policy: dict | str, *fragments: str, timeout: float = 10.0) -> str:
        count[0] += 1
        e = Envoy(tmp_path / f"refused{count[0]}", policy, recorder.port, log_level="info")
        try:
            e.wait_ready(timeout=timeout)
        except EnvoyStartError as err:
            assert err.returncode is None or err.returncode != 0, err
            log = err.log
        else:
            log = e.log_text()
            pytest.fail(f"Envoy accepted an invalid policy {policy!r}\n{log}")
        finally:
            e.stop()
        for frag in fragments:
            assert frag in log, f"{frag!r} not in the Envoy log:\n{log}"
        return log

    return check


# --------------------------------------------------------------------------------------------------
# Fleet-wide rate limits: Redis and a rate limit service over it (tests/e2e/ratelimit.py)
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """Debian's redis-server on a free 127.0.0.1 port, no persistence, for the whole session. A test may stop
    it (Redis gone mid-test): ``rate_limit_service`` starts it again, on the same port, for the next test."""
    from ratelimit import Redis
    r = Redis(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture
def rate_limit_service(redis_server):
    """A fresh ShouldRateLimit service (``ratelimit.RateLimitService``) over the session's Redis, emptied."""
    from ratelimit import RateLimitService
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    svc = RateLimitService(redis_server.port).start()
    yield svc
    svc.stop()
