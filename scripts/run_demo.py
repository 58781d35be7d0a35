#!/usr/bin/env python3
"""`make run`: the MLflow MCP server behind Envoy + mcp-policy, in the foreground until Ctrl-C.

  .demo/mlruns              MLflow file store, seeded once (demo experiments, one large run)
  127.0.0.1:8001/mcp        MLflow MCP server (scripts/serve_mlflow_mcp.py)       log: .demo/mlflow-mcp.log
  127.0.0.1:10000/mcp       Envoy with the wasm filter (envoy/envoy.yaml)         log: .demo/envoy.log
  127.0.0.1:9901            Envoy admin

Envoy is started with `func-e run` when func-e is on PATH (ENVOY_PATH points it at the venv's Envoy 1.40),
else the venv's envoy directly. Run from the repository root.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
MCP_PORT, ENVOY_PORT, ADMIN_PORT = 8001, 10000, 9901
PROXY_URL = f"http://127.0.0.1:{ENVOY_PORT}/mcp"


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


async def self_check(ids: dict) -> list[str]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.shared.exceptions import McpError

    lines = []
    async with streamablehttp_client(PROXY_URL, timeout=30) as (r, w, _):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = (await s.list_tools()).tools
            lines.append(f"tools/list: {len(tools)} tools")
            res = await s.call_tool("get_run", {"run_id": ids["runs"]["churn-model/xgboost"]})
            lines.append(f"get_run: allowed ({'error' if res.isError else 'ok'})")
            try:
                await s.call_tool("delete_run", {"run_id": ids["runs"]["churn-model/xgboost"]})
                lines.append("delete_run: NOT denied (check the policy!)")
            except McpError as e:
                lines.append(f"delete_run: denied, {e.error.code} {e.error.message!r}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=str(REPO / ".venv" / "bin" / "envoy"), help="the Envoy 1.40 binary")
    ap.add_argument("--wasm", default="target/wasm32-wasip1/release/mcp_policy.wasm")
    ap.add_argument("--json-response", action="store_true", help="MLflow MCP server answers JSON, not SSE")
    ap.add_argument("--no-check", action="store_true", help="skip the self-check through the proxy")
    args = ap.parse_args()

    os.chdir(REPO)
    if not pathlib.Path(args.wasm).exists():
        raise SystemExit(f"{args.wasm} is missing: run `make build`")
    busy = [p for p in (MCP_PORT, ENVOY_PORT, ADMIN_PORT) if port_busy(p)]
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
        wait(lambda: port_busy(MCP_PORT), "MLflow MCP server", procs)

        envoy_args = ["-c", "envoy/envoy.yaml", "--concurrency", "2", "-l", "warning"]
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

        check = []
        if not args.no_check:
            try:
                check = asyncio.run(self_check(ids))
            except Exception as e:  # the demo still runs; the logs say more
                check = [f"self-check failed: {e!r}"]

        print(f"""
mcp-policy demo is running (Ctrl-C to stop)
  MLflow MCP server   http://127.0.0.1:{MCP_PORT}/mcp   store {store}
  Envoy + mcp-policy  {PROXY_URL}   via {how}
  Envoy admin         http://127.0.0.1:{ADMIN_PORT}/
  policy              envoy/envoy.yaml (same as envoy/policies/example.json)
  logs                .demo/mlflow-mcp.log  .demo/envoy.log
  run ids             .demo/ids.json  (large run: {ids['large_run']})
""" + "".join(f"  self-check          {c}\n" for c in check) + f"""
Point an MCP client at {PROXY_URL} (transport: Streamable HTTP), for example:
  Claude Code:      claude mcp add --transport http mlflow {PROXY_URL}
  MCP Inspector:    npx @modelcontextprotocol/inspector   (Transport "Streamable HTTP", URL {PROXY_URL})
  Python SDK:       .venv/bin/python scripts/mcp_call.py --list
                    .venv/bin/python scripts/mcp_call.py get_run '{{"run_id": "{ids['runs']['churn-model/xgboost']}"}}'
                    .venv/bin/python scripts/mcp_call.py delete_run '{{"run_id": "{ids['runs']['churn-model/xgboost']}"}}'
  curl:             curl -s {PROXY_URL} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\
                      -d '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"delete_run","arguments":{{"run_id":"x"}}}}}}'
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
