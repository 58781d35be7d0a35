#!/usr/bin/env python3
"""Serve the MLflow MCP server (mlflow-mcp, stdio-only upstream) over MCP Streamable HTTP.

    serve_mlflow_mcp.py --store .demo/mlruns [--host 127.0.0.1] [--port 8001] [--json-response]

mlflow_mcp.server reads MLFLOW_TRACKING_URI at import time (and exits if it is unset), so the
environment is set before the import. The server answers on http://HOST:PORT/mcp.

Quiet on client disconnects: the MCP Python SDK (1.30) logs "Error in standalone SSE writer" with an
anyio.ClosedResourceError traceback whenever a session's server-to-client SSE stream (the GET a client opens after
initialize) ends because the client closed the session or went away. Nothing failed: it is how every SDK client
session ends. Those records alone are dropped (``quiet_closed_sse_streams``); any other error still shows.
"""
import argparse
import logging
import os
import pathlib
import sys


def _closed_sse_stream(record: logging.LogRecord) -> bool:
    """The SDK's log record for an SSE stream whose client went away (see the module docstring)."""
    exc = record.exc_info[1] if record.exc_info else None
    return (record.getMessage() == "Error in standalone SSE writer"
            and type(exc).__name__ == "ClosedResourceError" and type(exc).__module__.startswith("anyio"))


def quiet_closed_sse_streams() -> None:
    """Drop the SDK's traceback for a closed SSE stream; keep every other record of its streamable-HTTP logger."""
    logging.getLogger("mcp.server.streamable_http").addFilter(lambda record: not _closed_sse_stream(record))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="MLflow file store directory (default: $MLFLOW_TRACKING_URI)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--json-response", action="store_true",
                    help="answer POSTs with application/json instead of an SSE stream")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args()

    if args.store:
        os.environ["MLFLOW_TRACKING_URI"] = pathlib.Path(args.store).resolve().as_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        ap.error("give --store or set MLFLOW_TRACKING_URI")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    from mlflow_mcp.server import mcp  # noqa: E402  (needs the environment above)

    logging.getLogger().setLevel(args.log_level.upper())
    quiet_closed_sse_streams()

    mcp.settings.host = args.host
    mcp.settings.port = args.port
    mcp.settings.streamable_http_path = "/mcp"
    mcp.settings.json_response = args.json_response
    mcp.settings.log_level = args.log_level.upper()
    print(f"MLflow MCP server on http://{args.host}:{args.port}/mcp "
          f"(store {os.environ['MLFLOW_TRACKING_URI']}, {'json' if args.json_response else 'sse'} responses)",
          file=sys.stderr, flush=True)
    mcp.run("streamable-http")
    return 0


if __name__ == "__main__":
    sys.exit(main())
