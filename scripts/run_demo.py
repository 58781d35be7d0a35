#!/usr/bin/env python3
"""`make run`: the MLflow MCP server behind Envoy + mcp-policy, a one-minute scripted demo, then the services stay
up in the foreground until Ctrl-C.

Before anything starts, the policy is checked with the CLI (`mcp-policy check envoy/demo.yaml`): an invalid policy
prints each error with its field and fix, and nothing is started.

  .demo/mlruns              MLflow file store, seeded once (demo experiments, one large run)
  127.0.0.1:8001/mcp        MLflow MCP server (scripts/serve_mlflow_mcp.py)       log: .demo/mlflow-mcp.log
  127.0.0.1:8002            approvals console (mcp-policy approvals)              log: .demo/approvals.log
                            login `demo`, password made once in .demo/console-password; decisions in
                            .demo/approvals.jsonl
  127.0.0.1:10000/mcp       Envoy with the wasm filter (envoy/demo.yaml)          log: .demo/envoy.log
                            (at --component-log-level wasm:info: one audit line per decision)
  127.0.0.1:9901            Envoy admin

The demo goes through the proxy with the official MCP Python SDK client: tools/list, an allowed call, a denied
call, a rate-limited call, an approval granted (for 5 minutes), the same call again let through without asking,
and an approval refused (the policy is envoy/demo.yaml's: envoy/envoy.yaml's plus a rate limit and two
require_approval rules). The calls that need approval wait in the approvals console like any other; the demo
decides them itself through the console's JSON API, as an approver's script would. Afterwards they wait for you:
open the console and log in with the password printed at the end. tests/e2e/test_demo.py runs the same demo.

Envoy is started with `func-e run` when func-e is on PATH (ENVOY_PATH points it at the venv's Envoy 1.40),
else the venv's envoy directly. Run from the repository root.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
MCP_PORT, APPROVAL_PORT, ENVOY_PORT, ADMIN_PORT = 8001, 8002, 10000, 9901
PROXY_URL = f"http://127.0.0.1:{ENVOY_PORT}/mcp"
DIRECT_URL = f"http://127.0.0.1:{MCP_PORT}/mcp"
CONFIG = "envoy/demo.yaml"
CLI = "target/release/mcp-policy"
# Envoy's own messages at warning, the filter's (Envoy's `wasm` component) at info: the audit lines.
ENVOY_LOG_LEVELS = ["-l", "warning", "--component-log-level", "wasm:info"]
# The approver the demo makes for its console (its password: CONSOLE_PASSWORD, made on the first run), and how the
# demo decides the two calls that wait there: one yes for a while, one no with a reason.
APPROVER = "demo"
CONSOLE_PASSWORD = DEMO / "console-password"
APPROVE_FOR_MINUTES = 5
DENY_REASON = "stage changes go through the release review"


@dataclasses.dataclass
class ConsoleLogin:
    """Where the approvals console is and an approver's login for its JSON API (HTTP Basic authentication)."""
    base: str
    user: str
    password: str

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (loopback)
            return json.loads(r.read())

    async def decide(self, name: str, identity: str, decision: dict, timeout: float = 20.0) -> None:
        """Waits until the call to ``name`` of the session ``identity`` waits in the console, then decides it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = await asyncio.to_thread(self.api, "GET", "/api/pending")
            for p in pending["pending"]:
                if p["name"] == name and p["identity"] == identity:
                    await asyncio.to_thread(self.api, "POST", f"/api/pending/{p['id']}", decision)
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no call to {name} waited in the approvals console")


def console_login(cli: str, workdir: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The demo's approvers file and its one approver's password: made on the first run (a random password, kept
    in workdir/console-password, readable by you only), the same afterwards. Demo only: for your own console,
    make approvers with `mcp-policy approvals --hash-password NAME` (README, "The approvals console")."""
    approvers, password_file = workdir / "approvers.txt", workdir / CONSOLE_PASSWORD.name
    if not (approvers.exists() and password_file.exists()):
        password = secrets.token_urlsafe(12)
        line = subprocess.run([cli, "approvals", "--hash-password", APPROVER], input=password + "\n",
                              capture_output=True, text=True, check=True).stdout.strip()
        approvers.write_text(line + "\n")
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
    return approvers, password_file.read_text().strip()


def here(path: str) -> str:
    """PATH as given from the current directory, spelled relative to the repository root when it is inside it."""
    p = pathlib.Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait(check, what: str, procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"{what}: a process exited with {p.returncode} (see the logs in .demo/)")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what}: not ready after {timeout:.0f}s (see the logs in .demo/)")


def check_policy(cli: str, config: str) -> None:
    """`mcp-policy check CONFIG`, its report printed as it is. An invalid policy (or a policy that cannot run
    there) stops the demo before anything is started: Envoy would refuse it, and its log is the wrong place to
    learn why."""
    if not pathlib.Path(cli).exists():
        raise SystemExit(f"{cli} is missing: run `make cli` (make run builds it)")
    print(f"checking the policy: {cli} check {config}", flush=True)
    done = subprocess.run([cli, "check", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in done.stdout.splitlines():
        print(f"  {line}", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"\nthe policy in {config} is not usable (errors above, each with its field and fix); nothing "
                         f"was started.\nFix it, check it again with `{cli} check {config}`, then run `make run`.")


def audit_lines(log: pathlib.Path) -> list[dict]:
    """The filter's audit lines in an Envoy log (one JSON object per decision, after Envoy's `wasm log` prefix)."""
    out = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if "wasm log" in line and '{"time"' in line:
            try:
                out.append(json.loads(line[line.index('{"time"'):]))
            except ValueError:
                pass
    return out


def start(args: list[str], log: pathlib.Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        # Own process group: Ctrl-C reaches only this script, which then stops the children in order.
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)
    except ProcessLookupError:
        pass


async def demo(proxy_url: str, direct_url: str, ids: dict, console: ConsoleLogin) -> list[str]:
    """The scripted demo through the proxy, with the MCP Python SDK client; the calls that need approval are decided
    in the approvals console through its JSON API. Returns the lines to print."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.shared.exceptions import McpError

    lines: list[str] = []

    def say(label: str, text: str) -> None:
        lines.append(f"  {label:<17} {text}")

    def error(e: McpError) -> str:
        return f"JSON-RPC error {e.error.code}: {e.error.message}"

    session_id = None

    async def session(url: str, steps):
        nonlocal session_id
        async with streamablehttp_client(url, timeout=30) as (r, w, get_session_id):
            async with ClientSession(r, w) as s:
                await s.initialize()
                session_id = get_session_id()
                return await steps(s)

    async def call_decided(s, tool: str, args: dict, decision: dict):
        """Calls ``tool`` while the approver (the console's API) decides it: the result, or the McpError."""
        decided = asyncio.create_task(console.decide(tool, session_id, decision))
        try:
            return await s.call_tool(tool, args)
        except McpError as e:
            return e
        finally:
            await decided

    async def count_tools(s) -> int:
        return len((await s.list_tools()).tools)

    async def through_the_proxy(s) -> None:
        listed = await count_tools(s)
        say("tools/list", f"{listed} of the server's {everything} tools are listed: the agent never sees the "
                          f"{everything - listed} the policy always denies")

        run_id = ids["runs"]["churn-model/xgboost"]
        res = await s.call_tool("get_run", {"run_id": run_id})
        if res.isError:
            say("allowed", f"get_run -> forwarded, but the server answered an error: {res.content[0].text[:120]}")
        else:
            run = res.structuredContent or json.loads(res.content[0].text)
            run = run.get("result", run)
            say("allowed", f"get_run -> forwarded; run {run.get('tags', {}).get('mlflow.runName', run_id)!r} "
                           f"{run.get('status', '')}, accuracy {run.get('metrics', {}).get('accuracy')}")

        try:
            await s.call_tool("delete_run", {"run_id": run_id})
            say("denied", "delete_run was NOT denied: check the policy!")
        except McpError as e:
            say("denied", f"delete_run -> {error(e)}")

        # query_runs: 3/minute per session. Windows are aligned to the minute, so a call can land in the next
        # window: keep calling until the limit bites.
        answered, limited = 0, None
        for _ in range(8):
            try:
                await s.call_tool("query_runs", {"experiment_id": ids["experiments"]["churn-model"],
                                                 "query": "metrics.accuracy > 0.8", "limit": 1})
                answered += 1
            except McpError as e:
                limited = e
                break
        if limited is None:
            say("rate limited", f"query_runs answered {answered} times without a refusal: check the policy!")
        else:
            say("rate limited", f"query_runs (a limit per session): calls 1-{answered} answered, "
                                f"call {answered + 1} -> {error(limited)}")

        tagged = ids["runs"]["agent-evals/gpt-small"]
        for_a_while = {"approve": True, "remember_minutes": APPROVE_FOR_MINUTES}
        res = await call_decided(s, "set_run_tag", {"run_id": tagged, "key": "reviewed_by", "value": "mcp-policy demo"},
                                 for_a_while)
        if isinstance(res, McpError):
            say("approval granted", f"set_run_tag was NOT approved ({error(res)}): is the approvals console up?")
        else:
            outcome = "the server answered an error" if res.isError else "the run is tagged reviewed_by=mcp-policy demo"
            say("approval granted", f"set_run_tag -> waited in the approvals console, approved there for "
                                    f"{APPROVE_FOR_MINUTES} minutes (by the demo, through the API), forwarded: "
                                    f"{outcome}")

        try:
            res = await s.call_tool("set_run_tag", {"run_id": tagged, "key": "reviewed_at", "value": "once"})
            outcome = "the server answered an error" if res.isError else "the run is tagged reviewed_at=once"
            say("remembered", f"set_run_tag again -> forwarded without asking (approved for this session and "
                              f"tool for {APPROVE_FOR_MINUTES} minutes): {outcome}")
        except McpError as e:
            say("remembered", f"set_run_tag again was NOT let through ({error(e)})")

        res = await call_decided(s, "transition_model_version_stage",
                                 {"name": "churn-model", "version": "1", "stage": "Production"},
                                 {"approve": False, "reason": DENY_REASON})
        if isinstance(res, McpError):
            say("approval refused", f"transition_model_version_stage -> {error(res)}")
        else:
            say("approval refused", "transition_model_version_stage was forwarded: check the policy!")

    everything = await session(direct_url, count_tools)
    await session(proxy_url, through_the_proxy)
    return lines


def show_audit(log: pathlib.Path) -> None:
    """After the demo: how many audit lines Envoy wrote, and the denied call's, so the user sees where they are."""
    deadline = time.monotonic() + 3  # Envoy writes its log asynchronously
    lines = audit_lines(log)
    while not any(a.get("decision") == "deny" for a in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = audit_lines(log)
    denied = [a for a in lines if a.get("decision") == "deny"]
    if not lines:
        print(f"  audit log         no audit line in {here(str(log))} (is Envoy run with --component-log-level wasm:info?)",
              flush=True)
        return
    print(f"  audit log         {len(lines)} decisions logged in {here(str(log))}, one JSON line each; the denied call's:",
          flush=True)
    if denied:
        print(f"                    {json.dumps(denied[0], separators=(',', ':'))}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=str(REPO / ".venv" / "bin" / "envoy"), help="the Envoy 1.40 binary")
    ap.add_argument("--wasm", default=str(REPO / "target/wasm32-wasip1/release/mcp_policy.wasm"))
    ap.add_argument("--json-response", action="store_true", help="MLflow MCP server answers JSON, not SSE")
    ap.add_argument("--no-demo", "--no-check", action="store_true", help="skip the scripted demo through the proxy")
    ap.add_argument("--config", default=str(REPO / CONFIG), help=f"the Envoy bootstrap to run (default {CONFIG})")
    ap.add_argument("--cli", default=str(REPO / CLI), help=f"the mcp-policy CLI that checks the policy first (default {CLI})")
    args = ap.parse_args()
    # Paths given on the command line are the caller's; from here on everything runs from the repository root.
    args.config, args.cli, args.wasm = (here(p) for p in (args.config, args.cli, args.wasm))

    os.chdir(REPO)
    if not pathlib.Path(args.wasm).exists():
        raise SystemExit(f"{args.wasm} is missing: run `make build`")
    check_policy(args.cli, args.config)
    busy = [p for p in (MCP_PORT, APPROVAL_PORT, ENVOY_PORT, ADMIN_PORT) if port_busy(p)]
    if busy:
        raise SystemExit(f"port(s) {busy} on 127.0.0.1 already in use: is another `make run` going?")

    DEMO.mkdir(exist_ok=True)
    store, ids_file = DEMO / "mlruns", DEMO / "ids.json"
    if not ids_file.exists():
        print("seeding the MLflow file store in .demo/mlruns ...", flush=True)
        subprocess.run([sys.executable, "scripts/seed_mlflow.py", "--store", str(store), "--out", str(ids_file)],
                       check=True)
    ids = json.loads(ids_file.read_text())

    procs: list[subprocess.Popen] = []

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (`&`)
    try:
        mcp_args = [sys.executable, "scripts/serve_mlflow_mcp.py", "--store", str(store), "--port", str(MCP_PORT)]
        if args.json_response:
            mcp_args.append("--json-response")
        procs.append(start(mcp_args, DEMO / "mlflow-mcp.log"))
        approvers, password = console_login(args.cli, DEMO)
        console = ConsoleLogin(f"http://127.0.0.1:{APPROVAL_PORT}", APPROVER, password)
        procs.append(start([args.cli, "approvals", "--listen", f"127.0.0.1:{APPROVAL_PORT}", "--approvers",
                            str(approvers), "--decisions", str(DEMO / "approvals.jsonl")], DEMO / "approvals.log"))
        wait(lambda: port_busy(MCP_PORT) and port_busy(APPROVAL_PORT), "MLflow MCP server and approvals console",
             procs)

        envoy_args = ["-c", args.config, "--concurrency", "2", *ENVOY_LOG_LEVELS]
        func_e = shutil.which("func-e")
        env = dict(os.environ)
        if func_e:
            env["ENVOY_PATH"] = str(pathlib.Path(args.envoy).resolve())
            cmd, how = [func_e, "run", *envoy_args], f"func-e run (ENVOY_PATH={env['ENVOY_PATH']})"
        else:
            cmd, how = [args.envoy, *envoy_args], args.envoy
        procs.append(start(cmd, DEMO / "envoy.log", env))

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/ready", timeout=1) as r:
                return r.status == 200 and port_busy(ENVOY_PORT)

        wait(ready, "Envoy", procs)

        if not args.no_demo:
            print(f"\nmcp-policy demo: the MCP Python SDK client -> Envoy + mcp-policy ({args.config}) -> MLflow MCP server",
                  flush=True)
            try:
                for line in asyncio.run(demo(PROXY_URL, DIRECT_URL, ids, console)):
                    print(line, flush=True)
            except Exception as e:  # the services still run; the logs say more
                print(f"  the demo failed: {e!r} (see the logs in .demo/)", flush=True)
            show_audit(DEMO / "envoy.log")

        print(f"""
mcp-policy demo is running (Ctrl-C to stop)
  MLflow MCP server   {DIRECT_URL}   store {store}
  approvals console   {console.base}/   log in as {APPROVER}, password {password}   (demo only; kept in {here(str(CONSOLE_PASSWORD))})
                      set_run_tag and transition_model_version_stage wait there up to 2 minutes for your decision
  Envoy + mcp-policy  {PROXY_URL}   via {how}
  Envoy admin         http://127.0.0.1:{ADMIN_PORT}/   (mcp_policy_* in /stats/prometheus)
  policy              {args.config}   (ask it: {args.cli} explain {args.config} --tool query_runs)
  audit log           .demo/envoy.log, one JSON line per decision:  tail -f .demo/envoy.log | grep --line-buffered '"decision"'
  logs                .demo/mlflow-mcp.log  .demo/approvals.log  .demo/envoy.log   (approvals decided: .demo/approvals.jsonl)
  run ids             .demo/ids.json  (large run: {ids['large_run']})

Point an MCP client at {PROXY_URL} (transport: Streamable HTTP), for example:
  Claude Code:      claude mcp add --transport http mlflow {PROXY_URL}
  MCP Inspector:    npx @modelcontextprotocol/inspector   (Transport "Streamable HTTP", URL {PROXY_URL})
  Python SDK:       .venv/bin/python scripts/mcp_call.py --list
                    .venv/bin/python scripts/mcp_call.py get_run '{{"run_id": "{ids['runs']['churn-model/xgboost']}"}}' delete_run '{{"run_id": "x"}}'
                    (several calls, one MCP session; --repeat N makes each call N times)
  curl:             a whole session, step by step (initialize, session id, tools/call): README.md, "Try it"
""", flush=True)

        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p for p in procs if p.poll() is not None]
        print(f"a child exited ({dead[0].args[0]} with {dead[0].returncode}); stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
