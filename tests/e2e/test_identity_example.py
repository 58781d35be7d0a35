"""envoy/examples/identity-from-jwt.yaml: rate limits per authenticated agent, the README's safe setup for limits
("Who counts as one caller"). Envoy verifies a JWT, writes its `sub` into x-agent-id after dropping the client's
copy, and the policy counts by x-agent-id: a new MCP session does not bring a new budget, a forged x-agent-id is
not believed, and a request without a valid token never reaches the filter.

Tokens are HS256, signed here with the example's inline demo key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import yaml

from support import DENIED, assert_rpc_error, call, post
from test_observability import EXAMPLES, example_bootstrap

NAME = "identity-from-jwt.yaml"
RATE_LIMITED = -31002


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def provider() -> dict:
    cfg = yaml.safe_load((EXAMPLES / NAME).read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (jwt,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"]
    return jwt["typed_config"]["providers"]["agents"]


def token(sub: str, **claims) -> str:
    p = provider()
    (key,) = json.loads(p["local_jwks"]["inline_string"])["keys"]
    secret = base64.urlsafe_b64decode(key["k"] + "=" * (-len(key["k"]) % 4))
    header = {"alg": "HS256", "typ": "JWT", "kid": key["kid"]}
    body = {"iss": p["issuer"], "aud": p["audiences"][0], "sub": sub, "exp": int(time.time()) + 600, **claims}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def test_the_limit_follows_the_agent_not_the_session(envoy, upstream):
    e = envoy(None, 0, bootstrap=example_bootstrap(NAME, upstream.port))
    alice, bob = token("alice"), token("bob")

    def query(who: str, session: str, n: int, **extra):
        headers = {"authorization": f"Bearer {who}", "mcp-session-id": session, **extra}
        return post(e.url, call("query_runs", {"experiment_id": "0", "query": ""}, id=n), headers=headers)

    left = 60 - time.time() % 60  # 3/minute: stay inside one minute window
    if left < 10:
        time.sleep(left + 0.05)
    # Three calls by alice, each in a new MCP session: one budget of 3, then refused in yet another session.
    for n in range(3):
        r = query(alice, f"alice-session-{n}", n)
        assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    assert_rpc_error(query(alice, "alice-session-new", 3), 200, RATE_LIMITED, 3)
    # Alice naming herself bob in the header does not help: the header comes from her token.
    assert_rpc_error(query(alice, "alice-session-forged", 4, **{"x-agent-id": "bob"}), 200, RATE_LIMITED, 4)
    # Bob has his own budget, in the session alice used.
    r = query(bob, "alice-session-0", 5)
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    # What reached the server carried the verified identity, never the forged one.
    forwarded = [rec.headers.get("x-agent-id") for rec in upstream.snapshot()]
    assert forwarded == ["alice", "alice", "alice", "bob"], forwarded
    # The rest of the policy is unchanged.
    r = post(e.url, call("delete_run", {"run_id": "r"}, id=6), headers={"authorization": f"Bearer {alice}"})
    assert_rpc_error(r, 200, DENIED, 6)


def test_no_valid_token_no_call(envoy, upstream):
    e = envoy(None, 0, bootstrap=example_bootstrap(NAME, upstream.port))
    for headers, status in (({}, 401), ({"x-agent-id": "alice"}, 401),
                            ({"authorization": "Bearer " + token("alice")[:-4] + "AAAA"}, 401),  # bad signature
                            ({"authorization": "Bearer " + token("alice", aud="someone-else")}, 403)):
        r = post(e.url, call("get_run", {"run_id": "r"}), headers=headers)
        assert r.status == status, (headers, str(r))
    assert upstream.snapshot() == []
