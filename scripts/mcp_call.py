#!/usr/bin/env python3
"""Call MCP tools with the official Python SDK over Streamable HTTP, all in one MCP session, and print what comes
back.

    mcp_call.py [--url http://127.0.0.1:10000/mcp] TOOL ['{"arg": "value"}'] [TOOL ['{...}']]...
    mcp_call.py --repeat 4 query_runs '{"experiment_id": "1", "query": "metrics.accuracy > 0.8"}'
    mcp_call.py --list

Every call goes through the same session (one initialize, one mcp-session-id), so per-session rate limits count
them together; a second run of the script is a new session. A policy refusal arrives as a JSON-RPC error (code
-31001 denied, -31002 rate limited, -31003 not approved) and is printed with its data. A result's content blocks
are printed one by one, each under a `--- content[i] (type)` line when there are several.

Exit status: 0 when every call was answered, 1 when the server answered an error result (isError), 2 when a
call was refused with a JSON-RPC error (the policy's refusals among them).
"""
import argparse
import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

MAX_TEXT = 20000


def calls_from(words: list[str]) -> list[tuple[str, dict]]:
    """TOOL [ARGS] TOOL [ARGS]...: a word that starts with `{` holds the JSON arguments of the tool before it."""
    calls: list[tuple[str, dict | None]] = []
    for word in words:
        if not word.lstrip().startswith("{"):
            calls.append((word, None))
            continue
        if not calls or calls[-1][1] is not None:
            raise SystemExit(f"arguments {word!r} do not follow a tool name")
        try:
            args = json.loads(word)
        except ValueError as e:
            raise SystemExit(f"arguments {word!r} are not JSON: {e}") from None
        if not isinstance(args, dict):
            raise SystemExit(f"arguments {word!r} are not a JSON object")
        calls[-1] = (calls[-1][0], args)
    return [(tool, args or {}) for tool, args in calls]


def block_text(block) -> str:
    """One content block as text: its text, or the block itself as JSON (images, resources, ...)."""
    text = getattr(block, "text", None)
    if text is None:
        text = json.dumps(block.model_dump(exclude_none=True, mode="json"))
    return text if len(text) < MAX_TEXT else f"{text[:MAX_TEXT]}... ({len(text)} characters)"


async def run(args) -> int:
    status = 0
    async with streamablehttp_client(args.url, timeout=30) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            if args.list:
                for t in (await session.list_tools()).tools:
                    print(t.name)
                return 0
            calls = [c for c in calls_from(args.calls) for _ in range(args.repeat)]
            for n, (tool, arguments) in enumerate(calls, 1):
                if len(calls) > 1:
                    print(f"=== call {n} of {len(calls)}: {tool}", flush=True)
                try:
                    result = await session.call_tool(tool, arguments)
                except McpError as e:
                    print(json.dumps({"error": e.error.model_dump(exclude_none=True)}, indent=2), flush=True)
                    status = 2
                    continue
                blocks = result.content
                for i, block in enumerate(blocks):
                    if len(blocks) > 1:
                        print(f"--- content[{i}] ({block.type})")
                    print(block_text(block), flush=True)
                if result.isError:
                    status = max(status, 1)
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:10000/mcp")
    ap.add_argument("--list", action="store_true", help="list the tools")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="make each call N times (same session)")
    ap.add_argument("calls", nargs="*", metavar="TOOL [ARGS]", help="a tool name, then its arguments as JSON")
    args = ap.parse_args()
    if not args.list and not args.calls:
        ap.error("give a TOOL or --list")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    try:
        return asyncio.run(run(args))
    except BaseExceptionGroup as group:
        if group.subgroup(BrokenPipeError) is None or group.subgroup(lambda e: not isinstance(
                e, (BrokenPipeError, BaseExceptionGroup))) is not None:
            raise
    # The reader went away (`| head`): stop quietly.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
