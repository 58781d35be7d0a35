"""For the approvals console tests: `mcp-policy approvals` (target/release/mcp-policy, `make cli`) as a process on
127.0.0.1, with an approvers file, a decision log, and its JSON API (HTTP Basic authentication, as scripts use it).
"""
from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from conftest import REPO, _die_with_parent, free_port, stop_process, wait_for_port

CLI = REPO / "target" / "release" / "mcp-policy"
APPROVER, PASSWORD = "ana", "correct horse battery staple"


def cli_path() -> str:
    if not CLI.exists():
        pytest.fail(f"{CLI.relative_to(REPO)} is missing: run `make cli`")
    return str(CLI)


def approvers_file(path: pathlib.Path, users: dict[str, str]) -> pathlib.Path:
    """An approvers file made the documented way: `mcp-policy approvals --hash-password NAME`, password on stdin."""
    lines = []
    for name, password in users.items():
        r = subprocess.run([cli_path(), "approvals", "--hash-password", name], input=password + "\n",
                           capture_output=True, text=True, timeout=30, check=True)
        lines.append(r.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return path


class Console:
    """One `mcp-policy approvals` process on a fixed port (kept across restarts, so Envoy's cluster still points at
    it) with its decision log in ``workdir``."""

    def __init__(self, workdir: pathlib.Path, *args: str, port: int | None = None,
                 users: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.decisions = workdir / "decisions.jsonl"
        self.approvers = approvers_file(workdir / "approvers.txt", users or {APPROVER: PASSWORD})
        self.args = list(args)
        self.log_path = workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Console":
        self.starts += 1
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [cli_path(), "approvals", "--listen", f"127.0.0.1:{self.port}", "--approvers", str(self.approvers),
             "--decisions", str(self.decisions), *self.args],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_die_with_parent)
        out.close()
        wait_for_port(self.port, self.proc, what="approvals console", log=self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: a crash; the waiting callouts' connections are reset."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---------------------------------------------------------------------------------------------- the JSON API

    def api(self, method: str, path: str, body: Any = None, *, auth: tuple[str, str] | None = (APPROVER, PASSWORD),
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
        h = dict(headers or {})
        if auth is not None:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (loopback)
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        with contextlib.suppress(ValueError):
            return status, json.loads(raw)
        return status, raw

    def state(self) -> dict:
        status, body = self.api("GET", "/api/state")
        assert status == 200, (status, body)
        return body

    def pending(self) -> list[dict]:
        status, body = self.api("GET", "/api/pending")
        assert status == 200, (status, body)
        return body["pending"]

    def wait_pending(self, n: int, timeout: float = 10.0, **match: Any) -> list[dict]:
        """Waits until at least ``n`` calls (matching every ``field=value`` given) wait; returns them, newest first."""
        deadline = time.monotonic() + timeout
        while True:
            got = [p for p in self.pending() if all(p.get(k) == v for k, v in match.items())]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} waiting calls matching {match}, want {n}: {self.pending()}")
            time.sleep(0.05)

    def decide(self, call_id: str, approve: bool, reason: str | None = None,
               remember_minutes: int | None = None) -> dict:
        body: dict[str, Any] = {"approve": approve}
        if reason is not None:
            body["reason"] = reason
        if remember_minutes is not None:
            body["remember_minutes"] = remember_minutes
        status, answer = self.api("POST", f"/api/pending/{call_id}", body)
        assert status == 200, (status, answer)
        return answer["decision"]

    def records(self) -> list[dict]:
        """The decision log's lines."""
        if not self.decisions.exists():
            return []
        return [json.loads(line) for line in self.decisions.read_text().splitlines() if line.strip()]
