#!/usr/bin/env python3
"""Call one MCP tool with the official Python SDK over Streamable HTTP and print what comes back.

    mcp_call.py [--url http://127.0.0.1:10000/mcp] TOOL ['{"arg": "value"}']
    mcp_call.py --list

A policy denial arrives as a JSON-RPC error (McpError, code -31001) and is printed with its data.
"""
import argparse
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


async def run(args) -> int:
    async with streamablehttp_client(args.url, timeout=30) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            if args.list:
                for t in (await session.list_tools()).tools:
                    print(t.name)
                return 0
            try:
                result = await session.call_tool(args.tool, json.loads(args.arguments))
            except McpError as e:
                print(json.dumps({"error": e.error.model_dump(exclude_none=True)}, indent=2))
                return 2
            text = "".join(c.text for c in result.content if getattr(c, "text", None))
            print(text if len(text) < 20000 else f"{text[:20000]}... ({len(text)} characters)")
            return 1 if result.isError else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:10000/mcp")
    ap.add_argument("--list", action="store_true", help="list the tools")
    ap.add_argument("tool", nargs="?")
    ap.add_argument("arguments", nargs="?", default="{}")
    args = ap.parse_args()
    if not args.list and not args.tool:
        ap.error("give a TOOL or --list")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
