#!/usr/bin/env python3
"""Benchmark inputs for `make bench` (standard library only; deterministic output).

  gen.py assets WORK               request bodies, upstream answers, workloads.tsv
  gen.py policy-variant WORK NAME  WORK/policy-NAME.json: "full" (bench/policy.json as is),
                                   "norate" (without rate_limit/identity, for a filter that does
                                   not support them yet), "local1" (get_run with one limit, counted by
                                   the proxy), "fleet1" (the same limit counted by a rate limit
                                   service, every other limit by the proxy) or "profiles" (full +
                                   `callers` + three caller profiles: P's)
  gen.py render WORK KEY=VALUE...  WORK/upstream.yaml and WORK/proxy-{a,b,c,f,l,g,j,p}.yaml from
                                   bench/envoy/*.tmpl (keys: UP_PORT UP_ADMIN A_PORT A_ADMIN B_PORT B_ADMIN
                                   C_PORT C_ADMIN F_PORT F_ADMIN L_PORT L_ADMIN G_PORT G_ADMIN J_PORT J_ADMIN
                                   P_PORT P_ADMIN UPSTREAM_PORT WASM FLOOR_WASM POLICY_FILE L_POLICY_FILE
                                   G_POLICY_FILE POLICY_FILE_P RLS_PORT B_CONDITIONS; WORK=DIR: where the
                                   upstream's answer files are, if not in WORK)
  gen.py freeports N               N free loopback TCP ports

Nothing here reads ../shared at run time: the tools/list answer is a synthetic 40-tool list with the
MLflow MCP server's tool names and the shape of its answer (name, description, inputSchema,
outputSchema, annotations), padded to ~25 KB.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import string
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Tool names of the MLflow MCP server (mlflow-mcp 0.4.1), with (argument names, read-only?).
TOOLS = [
    ("get_experiments", [], True), ("search_experiments", ["filter_string", "order_by", "max_results"], True),
    ("get_experiment_by_name", ["name"], True), ("get_experiment_metrics", ["experiment_id"], True),
    ("get_experiment_params", ["experiment_id"], True), ("get_experiment_tags", ["experiment_id"], True),
    ("get_runs", ["experiment_id", "limit", "offset", "order_by"], True), ("get_run", ["run_id"], True),
    ("get_parent_run", ["run_id"], True), ("query_runs", ["experiment_id", "query", "limit", "offset", "order_by"], True),
    ("get_run_artifacts", ["run_id", "path"], True), ("get_run_artifact", ["run_id", "artifact_path"], True),
    ("get_run_metrics", ["run_id"], True), ("get_run_metric", ["run_id", "metric_name"], True),
    ("get_best_run", ["experiment_id", "metric", "ascending"], True), ("compare_runs", ["experiment_id", "run_ids"], True),
    ("get_registered_models", [], True), ("get_model_versions", ["model_name"], True),
    ("get_model_version", ["model_name", "version"], True), ("get_registered_model", ["name"], True),
    ("get_model_version_by_alias", ["name", "alias"], True), ("get_latest_versions", ["name", "stages"], True),
    ("search_runs_by_tags", ["experiment_id", "tags", "limit", "offset"], True),
    ("get_artifact_content", ["run_id", "artifact_path"], True),
    ("search_logged_models", ["experiment_ids", "filter_string", "max_results", "datasets", "order_by"], True),
    ("get_logged_model", ["model_id"], True), ("register_model", ["model_name", "model_uri", "tags"], False),
    ("set_registered_model_tag", ["name", "key", "value"], False), ("set_model_alias", ["name", "alias", "version"], False),
    ("set_run_tag", ["run_id", "key", "value"], False), ("set_experiment_tag", ["experiment_id", "key", "value"], False),
    ("update_model_version", ["name", "version", "description"], False),
    ("transition_model_version_stage", ["name", "version", "stage", "archive_existing"], False),
    ("copy_model_version", ["src_model_name", "src_version", "dst_model_name"], False),
    ("delete_model_alias", ["name", "alias"], False), ("delete_model_version", ["name", "version"], False),
    ("delete_registered_model", ["name"], False), ("delete_run", ["run_id"], False),
    ("delete_experiment", ["experiment_id"], False), ("health", [], True),
]
assert len(TOOLS) == 40

INT_ARGS = {"limit", "offset", "max_results", "version", "src_version"}
BOOL_ARGS = {"ascending", "archive_existing"}
LIST_ARGS = {"run_ids", "stages", "experiment_ids", "datasets", "order_by"}
OBJ_ARGS = {"tags"}

RUN_ID = "4f2c1e0b9a8d4c7e8f6a5b3c2d1e0f9a"


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def arg_schema(arg):
    title = arg.replace("_", " ").title()
    if arg in INT_ARGS:
        return {"default": 100 if arg in ("limit", "max_results") else 0, "title": title, "type": "integer"}
    if arg in BOOL_ARGS:
        return {"default": False, "title": title, "type": "boolean"}
    if arg in LIST_ARGS:
        return {"anyOf": [{"items": {"type": "string"}, "type": "array"}, {"type": "null"}], "default": None, "title": title}
    if arg in OBJ_ARGS:
        return {"anyOf": [{"additionalProperties": {"type": "string"}, "type": "object"}, {"type": "null"}],
                "default": None, "title": title}
    return {"title": title, "type": "string"}


def tool_entry(name, args, read_only, pad):
    words = name.replace("_", " ")
    desc = (f"{words[0].upper()}{words[1:]}.\n\n    Args:\n"
            + "".join(f"        {a}: {a.replace('_', ' ')}\n" for a in args)
            + f"\n    Returns: JSON. {pad}")
    required = [a for a in args if arg_schema(a).get("default", "x") == "x"]
    schema = {"properties": {a: arg_schema(a) for a in args}, "title": f"{name}Arguments", "type": "object"}
    if required:
        schema["required"] = required
    out = {"properties": {"result": {"additionalProperties": True, "title": "Result", "type": "object"}},
           "required": ["result"], "title": f"{name}Output", "type": "object"}
    ann = {"readOnlyHint": read_only}
    if not read_only:
        ann["destructiveHint" if name.startswith(("delete_", "transition_")) else "idempotentHint"] = True
    return {"name": name, "description": desc, "inputSchema": schema, "outputSchema": out, "annotations": ann}


def tools_list(target=25_000):
    """A tools/list answer with the 40 tools, padded (in descriptions) to about `target` bytes."""
    def build(pad_len):
        pad = ("Results are paginated where the server supports it; pass the same arguments again "
               "with a larger offset for more. " * 20)[:pad_len]
        tools = [tool_entry(n, a, ro, pad) for n, a, ro in TOOLS]
        return dumps({"jsonrpc": "2.0", "id": 3, "result": {"tools": tools}})
    lo, hi = 0, 2000
    while lo < hi:  # largest padding that stays <= target
        mid = (lo + hi + 1) // 2
        if len(build(mid).encode()) <= target:
            lo = mid
        else:
            hi = mid - 1
    return build(lo)


def big_result(target=1_200_000):
    """A ~1.2 MB tools/call result: get_run of a run with a long metric history."""
    history = []
    body = ""
    step = 0
    while True:
        chunk = [{"key": "val_loss", "value": round(1.0 / (1 + s * 0.001), 6), "timestamp": 1700000000000 + s * 1000,
                  "step": s} for s in range(step, step + 1000)]
        history.extend(chunk)
        step += 1000
        run = {"info": {"run_id": RUN_ID, "experiment_id": "1", "status": "FINISHED"},
               "data": {"metrics": history}}
        body = dumps({"jsonrpc": "2.0", "id": 17, "result": {
            "content": [{"type": "text", "text": dumps(run)}], "isError": False}})
        if len(body) >= target:
            break
    # trim the history so the answer is close to the target without going under
    while len(history) > 1:
        run["data"]["metrics"] = history[:-1]
        cand = dumps({"jsonrpc": "2.0", "id": 17, "result": {
            "content": [{"type": "text", "text": dumps(run)}], "isError": False}})
        if len(cand) < target:
            break
        history = history[:-1]
        body = cand
    return body


def call(id_, name, args):
    # "name" before "arguments", as MCP clients send it (the native MCP filter stops parsing once it
    # has params.name, see bench/README.md).
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": args}}


def sized_call(id_, name, args, fill_key, size, filler):
    """A tools/call body of exactly `size` bytes, growing args[fill_key] with `filler`(n)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        a = dict(args)
        a[fill_key] = filler(mid)
        if len(dumps(call(id_, name, a)).encode()) <= size:
            lo = mid
        else:
            hi = mid - 1
    a = dict(args)
    a[fill_key] = filler(lo)
    body = dumps(call(id_, name, a))
    if len(body) < size:  # pad the last few bytes with spaces (valid JSON whitespace)
        body += " " * (size - len(body))
    return body


def query_filler(n):
    clause = "params.optimizer = 'adam' and metrics.rmse < 0.8 and tags.team = 'forecasting' and "
    return (clause * (n // len(clause) + 1))[:n]


def tags_filler(n):
    # n ~ number of bytes; one tag entry is ~40 bytes
    return {f"tag_{i:05d}": f"value-{i:05d}-{'x' * 16}" for i in range(max(1, n // 40))}


WORKLOADS = [
    # name, path, body file, wrk connections ("-" = BENCH_CONNS), label
    ("small", "/mcp", "req-small.json", "-", "tools/call allowed, 150 B"),
    ("small_c1", "/mcp", "req-small.json", "1", "tools/call allowed, 150 B, 1 connection"),
    ("args8k", "/mcp", "req-args8k.json", "-", "tools/call allowed + condition, 8 KB args"),
    ("args256k", "/mcp", "req-args256k.json", "-", "tools/call allowed, 256 KB args"),
    ("denied", "/mcp", "req-denied.json", "-", "tools/call denied (delete_run)"),
    ("resp1m", "/mcp/big", "req-small.json", "-", "tools/call, 1.2 MB response"),
    ("toolslist", "/mcp/list", "req-tools-list.json", "-", "tools/list, 25 KB response"),
]


# J and P: jwt_authn's inline HS256 key, and the token every J/P request carries (a fixed expiry far ahead, so
# the assets stay deterministic). The caller: subject bench-agent, in the group bench-agents.
JWT_SECRET = b"mcp-policy bench key, not a secret"
JWT_KID = "bench"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks_json():
    return dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": JWT_KID, "k": b64url(JWT_SECRET)}]})


def jwt_token():
    header = {"alg": "HS256", "typ": "JWT", "kid": JWT_KID}
    claims = {"iss": "https://bench.example.com", "aud": "mcp-policy", "sub": "bench-agent",
              "groups": ["readers", "bench-agents"], "exp": 4102444800}
    signing_input = f"{b64url(dumps(header).encode())}.{b64url(dumps(claims).encode())}"
    sig = hmac.new(JWT_SECRET, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def with_profiles(policy):
    """P's policy: the same rules, plus `callers` (the JWT's subject and groups, the client certificate) and
    three profiles; the benchmark's caller (group bench-agents) matches the third, after the other two were tried."""
    p = json.loads(json.dumps(policy))
    p["callers"] = {"jwt": {"metadata": "jwt_payload", "subject": "sub", "groups": "groups"},
                    "peer_certificate": True}
    p["profiles"] = [
        {"name": "ml-admins", "match": {"groups": ["ml-admins", "ml-owners"]},
         "tools": {"register_model": {}, "transition_model_version_stage": {}, "delete_run": {}}},
        {"name": "ci", "match": {"principal": "spiffe://cluster.local/ns/ci/sa/*"},
         "tools": {"get_*": {"rate_limit": {"max": 1000000000, "window": "minute"}}}},
        {"name": "agents", "match": {"groups": ["bench-agents"], "subject": "bench-*"},
         "tools": {"compare_runs": {"action": "deny", "reason": "agents compare in batch jobs"},
                   "get_run": {"rate_limit": ["1000000000/hour", "1000000000/day"]}}},
    ]
    return p


def cmd_assets(work):
    os.makedirs(work, exist_ok=True)

    def write(name, text):
        with open(os.path.join(work, name), "w", encoding="utf-8") as f:
            f.write(text)

    small = call(17, "get_run", {"run_id": RUN_ID})
    small["params"]["_meta"] = {"progressToken": 17}
    write("req-small.json", dumps(small))
    write("req-args8k.json", sized_call(18, "query_runs", {"experiment_id": "1", "query": "", "limit": 50,
                                                          "offset": 0, "order_by": "metrics.rmse ASC"},
                                        "query", 8192, query_filler))
    write("req-args256k.json", sized_call(19, "search_runs_by_tags", {"experiment_id": "1", "tags": {},
                                                                      "limit": 100, "offset": 0},
                                          "tags", 262144, tags_filler))
    write("req-denied.json", dumps(call(20, "delete_run", {"run_id": RUN_ID})))
    write("req-tools-list.json", dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}))
    write("jwt-token.txt", jwt_token())

    write("resp-small.json", dumps({"jsonrpc": "2.0", "id": 17, "result": {
        "content": [{"type": "text", "text": dumps({"info": {"run_id": RUN_ID, "experiment_id": "1",
                                                             "status": "FINISHED", "start_time": 1700000000000},
                                                    "data": {"metrics": {"rmse": 0.71}, "params": {"optimizer": "adam"}}})}],
        "isError": False}}))
    write("resp-big.json", big_result())
    write("resp-tools-list.json", tools_list())
    with open(os.path.join(work, "workloads.tsv"), "w", encoding="utf-8") as f:
        for w in WORKLOADS:
            f.write("\t".join(w) + "\n")
    for n in sorted(os.listdir(work)):
        if n.startswith(("req-", "resp-")):
            print(f"  {n:24s} {os.path.getsize(os.path.join(work, n)):>9} B")


def strip_rate_limits(policy):
    p = json.loads(json.dumps(policy))
    p.pop("identity", None)
    for rule in p.get("tools", {}).values():
        rule.pop("rate_limit", None)
    return p


def one_limit(policy, fleet):
    """get_run (the small workloads' call) with one limit, far above the load; with ``fleet`` that limit is
    counted by the rate limit service (cluster ``ratelimit``) and every other limit by the proxy, so the two
    variants differ in who counts get_run's one limit only."""
    p = json.loads(json.dumps(policy))
    p["tools"]["get_run"]["rate_limit"] = {"max": 1000000000, "window": "hour"}
    if fleet:
        p["rate_limit_service"] = {"cluster": "ratelimit", "domain": "mcp-policy", "timeout_ms": 1000}
        for key, rule in p["tools"].items():
            if key != "get_run" and isinstance(rule.get("rate_limit"), dict):
                rule["rate_limit"]["counted"] = "proxy"
    return p


def cmd_policy_variant(work, name):
    with open(os.path.join(HERE, "policy.json"), encoding="utf-8") as f:
        policy = json.load(f)
    if name == "norate":
        policy = strip_rate_limits(policy)
    elif name in ("local1", "fleet1"):
        policy = one_limit(policy, name == "fleet1")
    elif name == "profiles":
        policy = with_profiles(policy)
    elif name != "full":
        sys.exit(f"unknown policy variant {name!r}")
    out = os.path.join(work, f"policy-{name}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(policy, f, indent=1)
    print(out)


# ---- RBAC translation of bench/policy.json (for configuration B) ----

def glob_matcher(key):
    """An Envoy StringMatcher for a tool glob ('*' any run, '?' one character)."""
    if "*" not in key and "?" not in key:
        return {"exact": key}
    if "?" not in key and key.count("*") == 1:
        if key.endswith("*"):
            return {"prefix": key[:-1]}
        if key.startswith("*"):
            return {"suffix": key[1:]}
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in key)
    return {"safe_regex": {"regex": rx}}


def glob_re(key):
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in key) + "$")


def md_rule(path, value):
    """An RBAC permission on the MCP filter's dynamic metadata (sourced_metadata: `metadata` is deprecated)."""
    return {"sourced_metadata": {"metadata_matcher": {
        "filter": "envoy.filters.http.mcp", "path": [{"key": k} for k in path], "value": value}}}


def name_rule(matcher):
    return md_rule(["params", "name"], {"string_match": matcher})


def rbac_tool_rules(policy, with_conditions):
    """The allow side of the policy as RBAC permission rules (a list for an or_rules).

    Allowed = (name matches an allowing key) and not (name is an exact key that denies). This is exact
    for policies where no denying glob covers an allowing key (checked here), which holds for
    bench/policy.json. Conditions: only `lte`/`lt`/`gte`/`gt`/`eq` on numbers are translated, as
    metadata double matchers on params.arguments.<path> (needs the MCP filter's parser_config to
    extract that path); with with_conditions=False a conditional rule allows the tool unconditionally.
    """
    tools = policy.get("tools", {})
    default_allow = policy.get("default", "deny") == "allow"
    if default_allow:
        raise SystemExit("RBAC translation supports default deny only")
    allow, deny_exact = [], []
    deny_globs = [k for k, r in tools.items() if r.get("action", "allow") == "deny" and ("*" in k or "?" in k)]
    for k, r in tools.items():
        if r.get("action", "allow") == "deny":
            if "*" not in k and "?" not in k:
                deny_exact.append(k)
            continue
        for d in deny_globs:
            if glob_re(d).match(k):
                raise SystemExit(f"RBAC translation: deny glob {d} covers allowed key {k}")
        rule = name_rule(glob_matcher(k))
        conds = r.get("conditions", [])
        if conds and with_conditions:
            parts = [rule]
            for c in conds:
                parts.append(condition_rule(c))
            rule = {"and_rules": {"rules": parts}}
        allow.append(rule)
    # exact deny keys shadowed by an allowing glob (e.g. get_artifact_content under get_*)
    shadowed = [k for k in deny_exact if any(glob_re(a).match(k) for a in tools
                                            if tools[a].get("action", "allow") == "allow" and a != k)]
    rules = [{"or_rules": {"rules": allow}}]
    if shadowed:
        rules.append({"not_rule": {"or_rules": {"rules": [name_rule({"exact": k}) for k in shadowed]}}})
    return [{"and_rules": {"rules": rules}}]


def condition_rule(c):
    path = c["path"]
    if not path.startswith("args."):
        raise SystemExit(f"RBAC translation: condition path {path}")
    keys = ["params", "arguments"] + path[len("args."):].split(".")
    v = float(c["value"])
    big = 1.0e308
    eps = 1e-9 * max(1.0, abs(v))
    rng = {"lte": (-big, v + eps), "lt": (-big, v), "gte": (v, big), "gt": (v + eps, big), "eq": (v, v + eps)}
    if c["op"] not in rng:
        raise SystemExit(f"RBAC translation: op {c['op']}")
    lo, hi = rng[c["op"]]
    return md_rule(keys, {"double_match": {"range": {"start": lo, "end": hi}}})


def condition_paths(policy):
    paths = set()
    for r in policy.get("tools", {}).values():
        for c in r.get("conditions", []):
            paths.add("params.arguments." + c["path"][len("args."):])
    return sorted(paths)


def to_yaml(obj, indent):
    """Block-style YAML for dicts/lists of scalars; small leaf objects stay in flow style."""
    pad = " " * indent
    lines = []
    if isinstance(obj, list):
        for item in obj:
            sub = to_yaml(item, indent + 2)
            lines.append(pad + "- " + sub[indent + 2:])
        return "\n".join(lines)
    for k, v in obj.items():
        flow = json.dumps(v)
        if not isinstance(v, (dict, list)) or len(flow) <= 60:
            lines.append(f"{pad}{k}: {flow}")
        else:
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 2))
    return "\n".join(lines)


def yaml_lines(obj, indent):
    return to_yaml(obj, indent)


def cmd_render(work, kv):
    vals = dict(a.split("=", 1) for a in kv)
    vals.setdefault("WORK", work)
    with open(os.path.join(HERE, "policy.json"), encoding="utf-8") as f:
        policy = json.load(f)
    # B: does the native MCP filter get told to extract the condition paths? (BENCH_B_CONDITIONS=1)
    b_cond = vals.get("B_CONDITIONS", "0") == "1"
    if b_cond:
        methods = [{"method": "tools/call",
                    "extraction_rules": [{"path": "params.name"}] + [{"path": p} for p in condition_paths(policy)]}]
        # To find an argument the parser may have to read the whole body (a tool without that argument
        # is only known to lack it at the end), so the 8 KB default would answer 400 to large calls:
        # use the same limit as mcp-policy's default max_body_bytes.
        vals["MCP_PARSER_CONFIG"] = (
            "              # Extract the condition's argument too, and parse up to 1 MiB (mcp-policy's default\n"
            "              # max_body_bytes): with the default 8 KB, calls with large arguments get 400.\n"
            "              max_request_body_size: 1048576\n"
            "              parser_config:\n" + to_yaml({"methods": methods}, 16))
        vals["RBAC_CONDITION_NOTE"] = ("the query_runs condition (args.limit <= 100) is a double matcher on\n"
                                       "#    metadata params.arguments.limit, which the MCP filter is told to extract;")
    else:
        vals["MCP_PARSER_CONFIG"] = ""
        vals["RBAC_CONDITION_NOTE"] = ("the query_runs condition is NOT enforced (rendered with B_CONDITIONS=0:\n"
                                       "#    RBAC allows query_runs whatever its arguments);")
    vals["RBAC_TOOL_RULES"] = yaml_lines(rbac_tool_rules(policy, b_cond), 32)
    def policy_json(file_key):
        if file_key not in vals:
            return json.dumps("{}")
        with open(vals[file_key], encoding="utf-8") as f:
            return json.dumps(dumps(json.load(f)))
    vals["POLICY_JSON"] = policy_json("POLICY_FILE")
    vals.setdefault("WASM", "")
    vals.setdefault("FLOOR_WASM", "")
    vals["EXTRA_CLUSTERS"] = ""
    # G's rate limit service: gRPC, so HTTP/2 (as envoy/examples/fleet-ratelimit.yaml).
    ratelimit_cluster = f"""
  - name: ratelimit
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {vals.get("RLS_PORT", "0")} }}
"""
    vals["JWKS_JSON"] = json.dumps(jwks_json())
    policy_p = policy_json("POLICY_FILE_P") if "POLICY_FILE_P" in vals else vals["POLICY_JSON"]
    for key, src, dst in [("UP", "upstream.yaml.tmpl", "upstream.yaml"), ("A", "proxy-a.yaml.tmpl", "proxy-a.yaml"),
                          ("B", "proxy-b.yaml.tmpl", "proxy-b.yaml"), ("C", "proxy-c.yaml.tmpl", "proxy-c.yaml"),
                          ("F", "proxy-f.yaml.tmpl", "proxy-f.yaml"), ("L", "proxy-c.yaml.tmpl", "proxy-l.yaml"),
                          ("G", "proxy-c.yaml.tmpl", "proxy-g.yaml"), ("J", "proxy-jwt.yaml.tmpl", "proxy-j.yaml"),
                          ("P", "proxy-jwt.yaml.tmpl", "proxy-p.yaml")]:
        v = dict(vals)
        if key == "P":
            v["POLICY_JSON"] = policy_p
        v["PORT"] = vals.get(f"{key}_PORT", vals.get("PORT", "0"))
        v["ADMIN_PORT"] = vals.get(f"{key}_ADMIN", vals.get("ADMIN_PORT", "0"))
        if key in ("L", "G"):
            # C's configuration with the one-limit policies; G with its rate limit service's cluster.
            v["POLICY_JSON"] = policy_json(f"{key}_POLICY_FILE")
            v["EXTRA_CLUSTERS"] = ratelimit_cluster if key == "G" else ""
        with open(os.path.join(HERE, "envoy", src), encoding="utf-8") as f:
            text = string.Template(f.read()).substitute(v)
        with open(os.path.join(work, dst), "w", encoding="utf-8") as f:
            f.write(text)


def cmd_freeports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def main(argv):
    if len(argv) >= 3 and argv[1] == "assets":
        cmd_assets(argv[2])
    elif len(argv) == 4 and argv[1] == "policy-variant":
        cmd_policy_variant(argv[2], argv[3])
    elif len(argv) >= 3 and argv[1] == "render":
        cmd_render(argv[2], argv[3:])
    elif len(argv) == 3 and argv[1] == "freeports":
        cmd_freeports(int(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
