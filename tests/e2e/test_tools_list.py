"""tools/list through a real Envoy and the filter: the agent is shown exactly the tools it may call.

- The real MLflow MCP server (its 40 tools, SSE and JSON answers) through the official MCP client: the list is
  exactly the allowed tools, each described as the server described it; hidden tools are also refused.
- The recording upstream answering crafted lists: nextCursor, _meta and every other byte are kept (JSON,
  pretty-printed JSON, SSE with \\n or \\r\\n, priming events, notifications before the result, chunked);
  Content-Length is right; a compressed or unknown-type answer becomes a JSON-RPC error, never the list;
  accept-encoding is taken off tools/list requests.
"""
from __future__ import annotations

import fnmatch
import gzip
import json
import pathlib

import pytest
from mcp import ClientSession

from conftest import Raw, held_proxy
from support import DENIED, assert_rpc_error, encode, post, same_id
from test_mcp_client import assert_denial, denial, list_tools, with_session

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
MLFLOW_TOOLS: list[str] = [t["name"] for t in
                           json.loads((FIXTURES / "mlflow-mcp-0.4.1.tools-list.json").read_text())["result"]["tools"]]
HIDDEN = "hidden by policy"
INTERNAL_ERROR = -32603

# Every kind of rule: allowed glob, a more specific deny glob, conditions, a rate limit, approval, deny, hidden
# (by name, and by glob over tools the allow glob covers), default deny for the rest.
LIST_POLICY = {
    "version": "1",
    "default": "deny",
    "hide": ["get_run_artifact*", "health"],
    "approval": {"cluster": "approvals"},
    "tools": {
        "get_*": {},
        "get_experiment_*": {"action": "deny", "reason": "experiment internals are off limits"},
        "query_runs": {"conditions": [{"path": "args.max_results", "op": "lte", "value": 10}]},
        "search_*": {"rate_limit": "100/minute"},
        "set_run_tag": {"action": "require_approval"},
        "delete_*": {"action": "deny"},
        "health": {},
    },
}


def _literal_chars(glob: str) -> int:
    return sum(c not in "*?" for c in glob)


def listed(policy: dict, name: str) -> bool:
    """The filter's rule, restated: not hidden, and (with filter_tools_list) not denied whatever the arguments.
    The governing rule is the exact key, else the matching glob with the most literal characters (then by key)."""
    if any(fnmatch.fnmatchcase(name, g) for g in policy.get("hide", [])):
        return False
    if not policy.get("filter_tools_list", True):
        return True
    tools = policy.get("tools", {})
    rule = tools.get(name)
    if rule is None:
        globs = sorted((k for k in tools if any(c in k for c in "*?")), key=lambda k: (-_literal_chars(k), k))
        rule = next((tools[g] for g in globs if fnmatch.fnmatchcase(name, g)), None)
    action = policy.get("default", "deny") if rule is None else rule.get("action", "allow")
    return action != "deny"


def expected_names(policy: dict, names: list[str]) -> list[str]:
    return [n for n in names if listed(policy, n)]


def test_expected_list_for_the_mlflow_server():
    """The expectation the tests below check against, spelled out once for the fixture's 40 tools."""
    assert len(MLFLOW_TOOLS) == 40 and "search_runs" not in MLFLOW_TOOLS
    want = expected_names(LIST_POLICY, MLFLOW_TOOLS)
    assert sorted(want) == sorted([
        "get_experiments", "get_runs", "get_run", "get_parent_run", "get_run_metrics", "get_run_metric",
        "get_best_run", "get_registered_models", "get_model_versions", "get_model_version", "get_registered_model",
        "get_model_version_by_alias", "get_latest_versions", "get_artifact_content", "get_logged_model",
        "query_runs", "search_experiments", "search_runs_by_tags", "search_logged_models", "set_run_tag"])


# ------------------------------------------------------------------------------------------ real MLflow server

@pytest.fixture(params=["sse", "json"])
def server(request):
    """The MLflow MCP server (SSE or JSON answers)."""
    return request.getfixturevalue("mlflow_mcp" if request.param == "sse" else "mlflow_mcp_json")


@pytest.fixture
def list_proxy(shared_envoy, server):
    return shared_envoy(LIST_POLICY, server.port)


def test_mlflow_tools_list_lists_exactly_the_allowed_tools(list_proxy, server):
    direct = list_tools(server.url)
    assert [t["name"] for t in direct] == MLFLOW_TOOLS, "the server's tools are not the captured 40"
    proxied = list_tools(list_proxy.url)
    assert [t["name"] for t in proxied] == expected_names(LIST_POLICY, MLFLOW_TOOLS)
    # Each listed tool exactly as the server described it (schemas, descriptions, annotations), in its order.
    assert proxied == [t for t in direct if listed(LIST_POLICY, t["name"])]


def test_mlflow_tools_list_without_held_headers(shared_envoy, mlflow_mcp):
    """As under Istio (no allow_on_headers_stop_iteration): the answer's headers leave before its body is
    filtered (no Content-Length, chunked), and the list is still exactly the allowed tools."""
    e = shared_envoy({**LIST_POLICY, "hold_headers": False}, mlflow_mcp.port, hold_headers=False)
    assert [t["name"] for t in list_tools(e.url)] == expected_names(LIST_POLICY, MLFLOW_TOOLS)


def test_mlflow_hide_without_filtering(envoy, mlflow_mcp):
    """With filter_tools_list off, hide still removes its tools; tools denied by rules stay listed."""
    policy = {**LIST_POLICY, "filter_tools_list": False}
    e = envoy(policy, mlflow_mcp.port)
    names = [t["name"] for t in list_tools(e.url)]
    assert names == expected_names(policy, MLFLOW_TOOLS)
    assert names == [n for n in MLFLOW_TOOLS if n not in ("get_run_artifacts", "get_run_artifact", "health")]


def test_hidden_tools_are_denied(list_proxy, server):
    """A hidden tool is refused even though a rule allows it (health: {}, get_run_artifacts under get_*)."""
    for tool, args in [("health", {}), ("get_run_artifacts", {"run_id": server.ids["runs"]["churn-model/xgboost"]})]:
        assert_denial(denial(list_proxy.url, tool, args), tool, HIDDEN)


def test_listed_tools_can_be_called(list_proxy, server):
    """Control for the test above: a listed tool is served through the same proxy."""
    run_id = server.ids["runs"]["churn-model/xgboost"]

    async def go(s: ClientSession):
        return await s.call_tool("get_run", {"run_id": run_id})

    result = with_session(list_proxy.url, go)
    assert not result.isError, result
    assert run_id in result.content[0].text


# ----------------------------------------------------------------------------- crafted answers (recorder)

CRAFTED = [{"name": n, "description": f"the {n} tool", "inputSchema": {"type": "object", "properties": {}}}
           for n in ["get_run", "delete_run", "health", "get_experiments", "compare_runs", "set_run_tag"]]
CRAFTED_KEPT = [t for t in CRAFTED if listed(LIST_POLICY, t["name"])]
assert [t["name"] for t in CRAFTED_KEPT] == ["get_run", "get_experiments", "set_run_tag"]


def compact(v) -> str:
    return json.dumps(v, separators=(",", ":"))


def list_text(id_text: str, tools: list[dict], *, indent: int | None = None) -> str:
    """A tools/list result whose other fields must come back byte for byte: nextCursor, _meta, a number
    written as 1.50, a \\u escape, an unknown field after the list."""
    tools_text = json.dumps(tools, indent=indent) if indent else compact(tools)
    return ('{"jsonrpc":"2.0","id":%s,"result":{"_meta":{"page":1.50,"note":"caf\\u00e9"},"tools":%s,'
            '"nextCursor":"cursor-2","x-extra":[true,null]}}' % (id_text, tools_text))


def request_id_text(rec) -> str:
    return json.dumps(json.loads(rec.body)["id"])


def tools_list(id="list-1") -> bytes:
    return encode({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}})


@pytest.fixture(params=["held", "streamed"])
def held(request) -> bool:
    return request.param == "held"


@pytest.fixture
def proxy(shared_envoy, upstream, held):
    """Envoy with LIST_POLICY in front of the recording upstream, with and without held headers."""
    return held_proxy(shared_envoy, upstream, LIST_POLICY, held)


def assert_length_right(r, held: bool) -> None:
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(r.body), r
    else:
        assert not held, f"held headers: the rewritten answer should carry its Content-Length: {r}"


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "pretty"])
def test_json_answer_keeps_every_other_byte(proxy, upstream, held, monkeypatch, indent):
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(
        list_text(request_id_text(rec), CRAFTED, indent=indent).encode(),
        {"Content-Type": "application/json; charset=utf-8"})))
    r = post(proxy.url, json.loads(tools_list()))
    assert r.status == 200, r
    assert r.body == list_text('"list-1"', CRAFTED_KEPT, indent=indent).encode()
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert_length_right(r, held)


def test_json_batch_answer_and_nothing_removed(proxy, upstream, monkeypatch):
    """A batch answer: every tools list in it is filtered; an answer with nothing to remove is untouched."""
    batch = "[%s,%s]" % (list_text('"list-1"', CRAFTED), '{"jsonrpc":"2.0","id":2,"result":{}}')
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(batch.encode(), {"Content-Type": "application/json"})))
    r = post(proxy.url, [json.loads(tools_list()), {"jsonrpc": "2.0", "id": 2, "method": "ping"}])
    assert r.status == 200, r
    assert r.body == ("[%s,%s]" % (list_text('"list-1"', CRAFTED_KEPT), '{"jsonrpc":"2.0","id":2,"result":{}}')).encode()

    only_kept = list_text('"list-1"', CRAFTED_KEPT).encode()
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(only_kept, {"Content-Type": "application/json"})))
    r = post(proxy.url, json.loads(tools_list()))
    assert r.status == 200 and r.body == only_kept, r


def sse_stream(eol: str, list_data: str) -> str:
    """A stream as MCP servers write them: a comment, a priming event (id, empty data, retry), a notification
    before the result, then the result with an id line."""
    e = eol
    return (f": stream opened{e}{e}"
            f"id: prime-0{e}retry: 1000{e}data: {e}{e}"
            f"event: message{e}id: ev-1{e}"
            f'data: {{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"listing"}}}}{e}{e}'
            f"event: message{e}id: ev-2{e}data: {list_data}{e}{e}")


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_sse_answer_keeps_every_other_byte(proxy, upstream, held, monkeypatch, eol):
    def answer(rec):
        body = sse_stream(eol, list_text(request_id_text(rec), CRAFTED)).encode()
        # In small chunks (cutting lines and events), so the filter must gather the whole answer first.
        return 200, Raw(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                        chunks=[body[i:i + 97] for i in range(0, len(body), 97)])

    monkeypatch.setattr(upstream, "answer", answer)
    r = post(proxy.url, json.loads(tools_list()))
    assert r.status == 200, r
    assert r.headers["content-type"] == "text/event-stream"
    assert r.body == sse_stream(eol, list_text('"list-1"', CRAFTED_KEPT)).encode()
    assert_length_right(r, held)


def test_sse_multiline_data(proxy, upstream, monkeypatch):
    """A result spread over several data: lines becomes one data: line with the same JSON."""
    pretty = list_text('"list-1"', CRAFTED, indent=2)
    body = "event: message\r\ndata: " + pretty.replace("\n", "\r\ndata: ") + "\r\n\r\n"
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(body.encode(), {"Content-Type": "text/event-stream"})))
    r = post(proxy.url, json.loads(tools_list()))
    assert r.status == 200, r
    lines = r.body.decode().split("\r\n")
    assert lines[0] == "event: message" and lines[1].startswith("data: ") and lines[2:] == ["", ""], r
    data = json.loads(lines[1][len("data: "):])
    assert data == json.loads(list_text('"list-1"', CRAFTED_KEPT)), data


@pytest.mark.parametrize("kind", ["gzip-json", "gzip-sse", "text/html", "no-content-type"])
def test_unfilterable_answer_becomes_an_error(proxy, upstream, monkeypatch, kind):
    """A compressed answer (the server ignored the removed accept-encoding) or one of an unknown type is
    replaced by a JSON-RPC error: the list never reaches the client, in whatever form."""
    def answer(rec):
        text = list_text(request_id_text(rec), CRAFTED)
        if kind == "gzip-json":
            return 200, Raw(gzip.compress(text.encode()), {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        if kind == "gzip-sse":
            return 200, Raw(gzip.compress(f"event: message\ndata: {text}\n\n".encode()),
                            {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"})
        if kind == "text/html":
            return 200, Raw(f"<pre>{text}</pre>".encode(), {"Content-Type": "text/html"})
        return 200, Raw(text.encode())

    monkeypatch.setattr(upstream, "answer", answer)
    r = post(proxy.url, json.loads(tools_list("list-9")))
    msg = assert_rpc_error(r, 200, INTERNAL_ERROR, "list-9")
    assert "content-encoding" not in r.headers, r
    for name in ("delete_run", "health", "get_run", "compare_runs"):
        assert name.encode() not in r.body, r
    assert "tools/list" in msg["error"]["message"] or "filter" in msg["error"]["message"], msg


def test_accept_encoding_removed_from_tools_list_requests(proxy, upstream, held):
    r = post(proxy.url, json.loads(tools_list()), headers={"Accept-Encoding": "gzip, br"})
    assert r.status == 200, r
    (got,) = upstream.snapshot()
    assert json.loads(got.body)["method"] == "tools/list"
    assert "accept-encoding" not in got.headers, got.headers
    upstream.clear()
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_run", "arguments": {}}}
    r = post(proxy.url, call, headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and same_id(r.json()["id"], 3), r
    (got,) = upstream.snapshot()
    if held:
        # Only tools/list answers are rewritten: other requests keep it when the filter decides before the
        # headers leave. (Without held headers the method is unknown when they leave: always removed.)
        assert got.headers.get("accept-encoding") == "gzip", got.headers
    else:
        assert "accept-encoding" not in got.headers, got.headers


def test_other_answers_are_not_touched(proxy, upstream, monkeypatch):
    """A tools/call answer that happens to hold a tools list passes as the server wrote it (only answers to
    tools/list requests are filtered)."""
    body = list_text("3", CRAFTED).encode()
    monkeypatch.setattr(upstream, "answer", lambda rec: (200, Raw(body, {"Content-Type": "application/json",
                                                                         "Content-Encoding": "identity"})))
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_run", "arguments": {}}}
    r = post(proxy.url, call)
    assert r.status == 200 and r.body == body, r
    assert r.headers.get("content-length") == str(len(body)), r


def test_denied_call_in_a_list_request_batch_is_not_forwarded(proxy, upstream):
    """A batch of tools/list and a hidden tool's call is refused whole (nothing reaches the upstream)."""
    batch = [json.loads(tools_list()),
             {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "health", "arguments": {}}}]
    r = post(proxy.url, batch)
    assert r.status == 200, r
    replies = {json.dumps(m["id"]): m for m in r.json()}
    assert replies["5"]["error"]["code"] == DENIED and replies["5"]["error"]["data"]["reason"] == HIDDEN, r
    upstream.assert_not_forwarded()
