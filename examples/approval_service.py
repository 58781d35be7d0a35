#!/usr/bin/env python3
"""Example approval service for mcp-policy's ``require_approval`` — Python standard library only.

The minimal example of the approval protocol, to adapt. The service to run is the approvals console,
``mcp-policy approvals`` (a web page where people decide; README, "The approvals console").

mcp-policy (the Envoy filter) holds every tool call whose rule says ``"action": "require_approval"`` and asks
this service first, through the Envoy cluster named in the policy's ``approval`` section. Adapt ``decide()``
below (a Slack message, a ticket, a web page...) to make it yours.

Run it (next to envoy/examples/approval.yaml, which points its ``approvals`` cluster at 127.0.0.1:8002):

    python3 examples/approval_service.py --port 8002 --allow set_run_tag --allow 'register_*'
    python3 examples/approval_service.py --port 8002 --interactive          # a human answers on this terminal

Decision (non-interactive, the default): approve when the tool matches one of the ``--allow`` globs
(fnmatch: ``*``, ``?``, ``[...]``; the flag repeats, or takes a comma-separated list); otherwise deny, with a
reason the agent will see. ``--interactive`` asks on the terminal instead (y/N, then an optional reason);
one question at a time. A human slower than the policy's ``approval.timeout_ms`` is too late: the filter
has already refused the call (fail closed).

Protocol (README, "Require approval"):

  request   POST <path> (default /approve), content-type: application/json, plus the policy's approval.headers
            {"method": "tools/call", "tool": "set_run_tag", "arguments": {...as the agent sent them...},
             "identity": "<session id or client IP>", "jsonrpc_id": 7, "request_id": "<x-request-id>",
             "reason": "<the rule's reason, or null>", "timeout_ms": <how long the filter waits>}
  answer    HTTP 200 {"approved": true}                       -> the call is forwarded
            HTTP 200 {"approved": true, "remember_seconds": N} -> forwarded, and the same caller's calls of the
                                                                 same tool for N seconds too, without asking
                                                                 (this example never says it)
            HTTP 200 {"approved": false, "reason": "..."}     -> JSON-RPC error -31003 "approval_denied"
            anything else (an error status, a body that is not JSON, no boolean "approved", no answer in
            time)                                             -> -31003 "approval_unavailable" (fail closed)

So this service answers a malformed request, a wrong path or a bad token with an HTTP error rather than a
decision: the filter then refuses the call. With ``--token T`` it requires ``authorization: Bearer T`` (set it in
the policy: ``"approval": {"headers": {"authorization": "Bearer T"}}``).

Every request is logged to stderr as one JSON line (time, tool, identity, jsonrpc_id, request_id, decision);
the arguments are logged only with ``--log-arguments`` (they may hold secrets). ``GET /healthz`` answers 200.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024  # mcp-policy never sends more (its own max_body_bytes defaults to 1 MiB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8002, help="port to listen on (default 8002)")
    ap.add_argument("--path", default="/approve", help="the policy's approval.path (default /approve)")
    ap.add_argument("--allow", action="append", default=[], metavar="GLOB",
                    help="approve tools matching GLOB (repeatable, or comma-separated); everything else is denied")
    ap.add_argument("--deny-reason", default="'{tool}' is not on the approval service's allow list",
                    help="reason given for a denial ({tool} is replaced by the tool name)")
    ap.add_argument("--interactive", action="store_true", help="ask on the terminal instead of using --allow")
    ap.add_argument("--token", help="require 'authorization: Bearer TOKEN' on every request")
    ap.add_argument("--log-arguments", action="store_true", help="also log the call's arguments")
    args = ap.parse_args(argv)
    args.allow = [g.strip() for a in args.allow for g in a.split(",") if g.strip()]
    return args


class Approver:
    """The decision. Returns (approved, reason)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._ask = threading.Lock()  # interactive: one question on the terminal at a time

    def decide(self, ask: dict) -> tuple[bool, str | None]:
        if self.args.interactive:
            return self.prompt(ask)
        tool = ask["tool"]
        if any(fnmatch.fnmatchcase(tool, g) for g in self.args.allow):
            return True, None
        return False, self.args.deny_reason.replace("{tool}", tool)

    def prompt(self, ask: dict) -> tuple[bool, str | None]:
        with self._ask:
            print(f"\n{ask['identity']} wants to call {ask['tool']}"
                  + (f" ({ask['reason']})" if ask.get("reason") else ""), file=sys.stderr)
            print("arguments: " + json.dumps(ask.get("arguments"), indent=2)[:4000], file=sys.stderr)
            try:
                yes = input("approve? [y/N] ").strip().lower() in ("y", "yes")
                why = None if yes else (input("reason (optional): ").strip() or "declined by the operator")
            except EOFError:
                return False, "no operator at the terminal"
            return yes, why


def valid_ask(ask: object) -> bool:
    return (isinstance(ask, dict) and ask.get("method") == "tools/call" and isinstance(ask.get("tool"), str)
            and "arguments" in ask and "identity" in ask and "jsonrpc_id" in ask)


def make_handler(args: argparse.Namespace, approver: Approver):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses its connections to this service
        disable_nagle_algorithm = True  # the answer's headers and body are two writes: send both at once
        server_version = "mcp-policy-example-approval/1"

        def log_message(self, *a):  # the one-JSON-line log below replaces the default access log
            pass

        def log(self, **fields) -> None:
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
            print(json.dumps(line, separators=(",", ":")), file=sys.stderr, flush=True)

        def answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.answer(200, {"ok": True})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            # Anything but a decision is an HTTP error: mcp-policy then refuses the call (fail closed).
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_BODY:
                self.close_connection = True
                self.log(error="bad or missing Content-Length")
                return self.answer(400, {"error": "a Content-Length of at most 1 MiB is required"})
            body = self.rfile.read(n)
            if self.path.split("?")[0] != args.path:
                self.log(error=f"unknown path {self.path}")
                return self.answer(404, {"error": f"POST {args.path}"})
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                self.log(error="missing or wrong bearer token")
                return self.answer(401, {"error": "unauthorized"})
            try:
                ask = json.loads(body)
            except ValueError:
                ask = None
            if not valid_ask(ask):
                self.log(error="not an mcp-policy approval request")
                return self.answer(400, {"error": "expected an mcp-policy approval request (JSON)"})
            approved, reason = approver.decide(ask)
            fields = {k: ask.get(k) for k in ("tool", "identity", "jsonrpc_id", "request_id", "reason")}
            if args.log_arguments:
                fields["arguments"] = ask.get("arguments")
            self.log(**fields, decision="approved" if approved else "denied",
                     **({} if approved else {"denial": reason}))
            self.answer(200, {"approved": True} if approved else {"approved": False, "reason": reason})

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many calls may wait for approval at once


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.interactive and not args.allow:
        print("note: no --allow given: every call will be denied", file=sys.stderr)
    server = Server((args.host, args.port), make_handler(args, Approver(args)))
    mode = "interactive" if args.interactive else f"allow {args.allow}"
    print(f"approval service on http://{args.host}:{server.server_address[1]}{args.path} ({mode})",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
