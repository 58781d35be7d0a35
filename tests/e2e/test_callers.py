"""Caller-aware rules (policy `callers` and `profiles`) through a real Envoy: who calls comes from what Envoy
verified, a JWT (jwt_authn with `local_jwks` inline and `payload_in_metadata`) or a client certificate (mTLS),
never from anything the client writes.

- envoy/examples/callers-jwt.yaml with an RSA key this test makes: two callers through the official MCP Python
  client (bearer tokens) in front of the real MLflow MCP server get different tools/list answers, different
  decisions and separate rate limits; anonymous callers get the anonymous profile.
- Escalation attempts fail and nothing reaches the upstream: unsigned, wrong key, expired, other issuer, claims
  sent as headers, a groups claim of the wrong type, non-UTF-8 and huge claims, jwt_authn missing or placed after
  mcp-policy under `required`.
- envoy/examples/callers-mtls.yaml with a CA, server and client certificates this test makes (URI SANs
  spiffe://...), with and without a client certificate.
- envoy/istio/callers.yaml's policy behind jwt_authn configured as Istio 1.21+ configures it.
- Look-alike names (issue 14) are judged by the caller's profile: refused where its rules govern the key.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import pathlib
import ssl
import sys
import time
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from conftest import REPO, SCRIPTS, Recorder, render_bootstrap
from support import DENIED, assert_denied, assert_rpc_error, call, encode, post
from test_observability import EXAMPLES, example_bootstrap

sys.path.insert(0, str(SCRIPTS))
import make_certs  # noqa: E402  (scripts/make_certs.py: the demo certificates' recipe)

RATE_LIMITED = -31002
UNAUTHENTICATED = -31004
ISSUER = "https://auth.example.com"


def b64url(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


class Issuer:
    """An identity provider made up for one test: an RSA key, its JWKS, and tokens signed with it."""

    def __init__(self, issuer: str = ISSUER, kid: str = "test-key") -> None:
        self.issuer, self.kid = issuer, kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = self.key.public_key().public_numbers()
        self.jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                                          "n": b64url(pub.n), "e": b64url(pub.e)}]})

    def claims(self, subject: str | None, /, **claims: Any) -> dict:
        base = {"iss": self.issuer, "aud": "mcp-policy", "exp": int(time.time()) + 600}
        if subject is not None:
            base["sub"] = subject
        return {**base, **claims}

    def token(self, subject: str | None, /, **claims: Any) -> str:
        return jwt.encode(self.claims(subject, **claims), self.key, algorithm="RS256", headers={"kid": self.kid})

    def raw_token(self, payload: bytes) -> str:
        """A token whose payload is these bytes exactly (they need not be valid JSON or UTF-8)."""
        return jwt.api_jws.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def hcm_of(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def use_issuer(authn: dict, issuer: Issuer) -> dict:
    """callers-jwt.yaml's jwt_authn filter (``authn``) with this test's key instead of the demo's."""
    provider = authn["typed_config"]["providers"]["agents"]
    assert provider["payload_in_metadata"] == "jwt_payload" and provider["issuer"] == ISSUER
    provider["local_jwks"] = {"inline_string": issuer.jwks}
    return authn


def jwt_authn_of(cfg: dict) -> dict:
    (authn,) = [f for f in hcm_of(cfg)["http_filters"] if f["name"] == "envoy.filters.http.jwt_authn"]
    return authn


def jwt_bootstrap(upstream_port: int, issuer: Issuer) -> dict:
    """envoy/examples/callers-jwt.yaml with test ports, the built wasm, and this test's key instead of the demo's."""
    cfg = example_bootstrap("callers-jwt.yaml", upstream_port)
    use_issuer(jwt_authn_of(cfg), issuer)
    return cfg


# The `callers` section of a policy behind callers-jwt.yaml's jwt_authn (below): subject `sub`, groups `groups`.
JWT_CALLERS = {"jwt": {"metadata": "jwt_payload", "subject": "sub", "groups": "groups"}}


def behind_jwt_authn(cfg: dict, issuer: Issuer) -> dict:
    """A bootstrap (e.g. conftest's render_bootstrap, with its policy and clusters) with callers-jwt.yaml's
    jwt_authn, verifying this test's tokens, placed before mcp-policy: for policies with JWT_CALLERS."""
    authn = use_issuer(jwt_authn_of(yaml.safe_load((EXAMPLES / "callers-jwt.yaml").read_text())), issuer)
    hcm_of(cfg)["http_filters"].insert(0, authn)
    return cfg


def wait_for_a_fresh_minute(margin: float = 15.0) -> None:
    """Limits count per minute window: start a counting test well inside one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


# ------------------------------------------------------------------------------ two callers, the MCP client

async def _session(url: str, token: str | None, fn):
    headers = bearer(token) if token else None
    async with streamablehttp_client(url, headers=headers, timeout=30, sse_read_timeout=60) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await fn(session)


def with_session(url: str, token: str | None, fn):
    """A new MCP session for the caller with ``token``: ``fn(session)``'s result."""
    return asyncio.run(_session(url, token, fn))


def tool_names(url: str, token: str | None) -> set[str]:
    async def go(s):
        return {t.name for t in (await s.list_tools()).tools}

    return with_session(url, token, go)


def call_tool(url: str, token: str | None, tool: str, args: dict) -> Any:
    """The tool's result, or the McpError the filter answered with (each call in a new MCP session)."""
    async def go(s):
        try:
            return await s.call_tool(tool, args)
        except McpError as e:
            return e

    return with_session(url, token, go)


@pytest.fixture(scope="module")
def idp() -> Issuer:
    return Issuer()


@pytest.fixture
def jwt_proxy(envoy, mlflow_mcp, idp):
    return envoy(None, 0, bootstrap=jwt_bootstrap(mlflow_mcp.port, idp), component_log_level="wasm:info")


def test_two_callers_get_their_own_tools_decisions_and_limits(jwt_proxy, mlflow_mcp, idp):
    url = jwt_proxy.url
    alice = idp.token("alice", groups=["readers", "ml-admins"])
    bob = idp.token("bob", groups=["readers"])
    carol = idp.token("carol")

    # tools/list: each caller sees what its profile allows.
    alice_tools, bob_tools, anonymous_tools = tool_names(url, alice), tool_names(url, bob), tool_names(url, None)
    setters = {"set_run_tag", "set_experiment_tag", "set_model_alias", "set_registered_model_tag"}
    assert setters <= alice_tools, alice_tools
    assert not setters & bob_tools, bob_tools
    assert {"get_run", "get_experiments", "query_runs", "health"} <= alice_tools & bob_tools
    assert not {t for t in alice_tools | bob_tools if t.startswith("delete_")}
    assert anonymous_tools == {"health"}, anonymous_tools

    # Decisions: alice may tag an experiment (it reaches MLflow), bob may not (it does not).
    exp = mlflow_mcp.ids["experiments"]["large-run"]
    args = {"experiment_id": exp, "key": "callers-test", "value": "alice"}
    r = call_tool(url, alice, "set_experiment_tag", args)
    assert not isinstance(r, McpError) and not r.isError, r
    client = mlflow_mcp.client()
    assert client.get_experiment(exp).tags.get("callers-test") == "alice"
    err = call_tool(url, bob, "set_experiment_tag", {**args, "value": "bob"})
    assert isinstance(err, McpError) and err.error.code == DENIED, err
    assert err.error.data["tool"] == "set_experiment_tag" and err.error.data["decision"] == "deny", err.error
    assert client.get_experiment(exp).tags.get("callers-test") == "alice"
    err = call_tool(url, None, "get_run", {"run_id": mlflow_mcp.ids["runs"]["churn-model/xgboost"]})
    assert isinstance(err, McpError) and err.error.code == DENIED, err

    # Limits: 3 query_runs a minute per caller (not per session), 30 for ml-admins.
    wait_for_a_fresh_minute()
    query = {"experiment_id": mlflow_mcp.ids["experiments"]["churn-model"], "query": ""}
    for who, token, budget in (("bob", bob, 3), ("carol", carol, 3), ("alice", alice, 4)):
        for n in range(budget):
            r = call_tool(url, token, "query_runs", query)
            assert not isinstance(r, McpError), (who, n, r)
    for who, token in (("bob", bob), ("carol", carol)):
        err = call_tool(url, token, "query_runs", query)
        assert isinstance(err, McpError) and err.error.code == RATE_LIMITED, (who, err)
        assert err.error.data["limit"] == 3, err.error.data

    # Who was counted, under which profile: the decision counters' profile label, the audit lines in clear.
    stats = jwt_proxy.stats("wasmcustom.mcp_policy.decisions_total")
    assert stats.get("wasmcustom.mcp_policy.decisions_total.profile.ml-admins.decision.allow", 0) >= 6, stats
    assert stats.get("wasmcustom.mcp_policy.decisions_total.decision.rate_limited", 0) == 2, stats
    assert stats.get("wasmcustom.mcp_policy.decisions_total.profile.anonymous.decision.deny", 0) == 1, stats
    lines = [json.loads(ln.split(": ", 1)[1]) for ln in jwt_proxy.log_text().splitlines()
             if "wasm log" in ln and '"decision"' in ln]
    tagged = [ln for ln in lines if ln["tool"] == "set_experiment_tag"]
    assert [(ln["subject"], ln["profile"], ln["decision"]) for ln in tagged] == [
        ("alice", "ml-admins", "allow"), ("bob", None, "deny")], tagged
    assert all("callers-test" not in json.dumps(ln) for ln in lines), "arguments are never logged"


# --------------------------------------------------------------------------- escalation: nothing forwarded

@pytest.fixture
def guarded(envoy, upstream, idp):
    """callers-jwt.yaml in front of the recording upstream."""
    return upstream.watch(envoy(None, 0, bootstrap=jwt_bootstrap(upstream.port, idp)), strict=True)


TAG = call("set_run_tag", {"run_id": "r1", "key": "k", "value": "v"}, id=7)


def forwarded_profile(upstream: Recorder) -> list[str | None]:
    return [r.headers.get("x-mcp-profile") for r in upstream.snapshot()]


def test_the_profile_header_is_the_filters_and_claims_in_headers_are_not_believed(guarded, upstream, idp):
    # An admin's call: forwarded, with the profile the filter found.
    r = post(guarded.url, TAG, headers=bearer(idp.token("alice", groups=["ml-admins"])))
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    assert forwarded_profile(upstream) == ["ml-admins"]
    upstream.clear()
    # Claims and profiles written as headers by a client without a token: anonymous, refused.
    forged = {"x-mcp-profile": "ml-admins", "sub": "alice", "groups": "ml-admins", "x-jwt-payload":
              base64.b64encode(json.dumps({"sub": "alice", "groups": ["ml-admins"]}).encode()).decode(),
              "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/ci/sa/builder"}
    assert_denied(post(guarded.url, TAG, headers=forged), 7, "set_run_tag")
    upstream.assert_not_forwarded()
    # An allowed anonymous call carries the filter's profile, never the client's.
    r = post(guarded.url, call("health", {}, id=8), headers=forged)
    assert r.status == 200, str(r)
    assert forwarded_profile(upstream) == ["anonymous"]


def unsigned(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


def test_tokens_envoy_does_not_verify_never_reach_the_filter(guarded, upstream, idp):
    admin = {"groups": ["ml-admins"]}
    other_key = Issuer(kid=idp.kid)
    for what, token, status in (
        ("unsigned", unsigned(idp.claims("alice", **admin)), 401),
        ("signed with another key", other_key.token("alice", **admin), 401),
        ("expired", idp.token("alice", exp=int(time.time()) - 600, **admin), 401),
        ("from another issuer", Issuer("https://evil.example.com", kid=idp.kid).token("alice", **admin), 401),
        ("for another audience", idp.token("alice", aud="someone-else", **admin), 403),
        ("cut short", idp.token("alice", **admin)[:-10], 401),
    ):
        r = post(guarded.url, TAG, headers=bearer(token))
        # jwt_authn's own answers (its text, not a JSON-RPC error): the filter never saw the request.
        assert r.status == status and "x-mcp-policy" not in r.headers, (what, str(r))
        upstream.assert_not_forwarded()


def test_claims_the_filter_cannot_read_exactly_are_refused(guarded, upstream, idp):
    """Refused by mcp-policy (HTTP 401, -31004) when Envoy verified the token but the claim is not what the policy
    reads, or by jwt_authn itself when it cannot parse the payload or checks the claim (`sub` must be a string)."""
    payload = lambda **c: json.dumps(idp.claims(None, **c)).encode()  # noqa: E731
    filter_, envoy_ = "mcp-policy", "jwt_authn"
    for what, token, by in (
        ("groups as an object", idp.token("alice", groups={"ml-admins": True}), filter_),
        ("groups as a number", idp.token("alice", groups=12345), filter_),
        ("groups as a boolean", idp.token("alice", groups=True), filter_),
        ("groups as a nested list", idp.token("alice", groups=[["ml-admins"]]), filter_),
        ("groups holding a number", idp.token("alice", groups=["ml-admins", 7]), filter_),
        ("groups holding an object", idp.token("alice", groups=["ml-admins", {"x": "y"}]), filter_),
        ("a subject with NUL", idp.token("ali\u0000ce", groups=["ml-admins"]), filter_),
        ("a huge subject", idp.token("a" * 5000, groups=["ml-admins"]), filter_),
        ("too many groups", idp.token("alice", groups=["ml-admins"] + [f"g{i}" for i in range(300)]), filter_),
        ("a huge group name", idp.token("alice", groups=["ml-admins", "g" * 300]), filter_),
        ("a subject that is a number", idp.token(None, sub=42, groups=["ml-admins"]), envoy_),
        ("a lone surrogate", idp.raw_token(payload(sub="alice", groups=["ml-admins"]).replace(
            b'"sub": "alice"', b'"sub": "al\\ud800ice"')), envoy_),
        ("bytes that are not UTF-8", idp.raw_token(payload(sub="alice", groups=["ml-admins"]).replace(
            b'"sub": "alice"', b'"sub": "al\xffice"')), envoy_),
    ):
        r = post(guarded.url, TAG, headers=bearer(token))
        assert r.status == 401, (what, str(r))
        if by == filter_:
            msg = assert_rpc_error(r, 401, UNAUTHENTICATED, None)
            assert r.headers.get("x-mcp-policy") == "rejected", (what, str(r))
            assert msg["error"]["data"]["decision"] == "unauthenticated", (what, msg)
            assert "the caller's identity cannot be read: the JWT claim" in msg["error"]["message"], (what, msg)
            assert r.headers.get("www-authenticate") == "Bearer", (what, str(r))
        else:
            assert "x-mcp-policy" not in r.headers and r.body.startswith(b"Jwt payload"), (what, str(r))
        upstream.assert_not_forwarded()
    stats = guarded.stats("wasmcustom.mcp_policy.decisions_total.decision.unauthenticated")
    assert stats.get("wasmcustom.mcp_policy.decisions_total.decision.unauthenticated") == 10, stats
    # A space-separated string is a valid groups claim (OAuth scope).
    r = post(guarded.url, TAG, headers=bearer(idp.token("alice", groups="readers ml-admins")))
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)


def required_policy() -> dict:
    cfg = yaml.safe_load((EXAMPLES / "callers-jwt.yaml").read_text())
    (wasm,) = [f for f in hcm_of(cfg)["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    policy = json.loads(wasm["typed_config"]["config"]["configuration"]["value"])
    policy["callers"]["required"] = True
    return policy


@pytest.mark.parametrize("placement", ["missing", "after"])
def test_required_catches_jwt_authn_missing_or_after_the_filter(envoy, upstream, idp, placement):
    cfg = jwt_bootstrap(upstream.port, idp)
    filters = hcm_of(cfg)["http_filters"]
    authn = jwt_authn_of(cfg)
    filters.remove(authn)
    (wasm,) = [f for f in filters if f["name"] == "envoy.filters.http.wasm"]
    wasm["typed_config"]["config"]["configuration"]["value"] = json.dumps(required_policy())
    if placement == "after":
        filters.insert(filters.index(wasm) + 1, authn)
    e = upstream.watch(envoy(None, 0, bootstrap=cfg), strict=True)
    for token in (idp.token("alice", groups=["ml-admins"]), None):
        r = post(e.url, call("get_run", {"run_id": "r"}, id=3), headers=bearer(token) if token else None)
        msg = assert_rpc_error(r, 401, UNAUTHENTICATED, None)
        assert "no verified caller identity (callers.required" in msg["error"]["message"], msg
        upstream.assert_not_forwarded()
    # With jwt_authn in its place the same token passes.
    e = upstream.watch(envoy(None, 0, bootstrap=jwt_bootstrap(upstream.port, idp)), strict=True)
    r = post(e.url, call("get_run", {"run_id": "r"}, id=4), headers=bearer(idp.token("alice")))
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)


# ---------------------------------------------------------------------------- look-alikes follow the profile

def test_look_alikes_are_judged_by_the_callers_profile(envoy, upstream, idp):
    """Issue 14 with issue 13: a name that folds to a key the caller's profile governs is refused for that
    profile's callers (-31001, nothing forwarded), whatever the default; a caller whose rules do not govern the key
    is decided by its own rules (here the default allow forwards it)."""
    cfg = jwt_bootstrap(upstream.port, idp)
    (wasm,) = [f for f in hcm_of(cfg)["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    policy = json.loads(wasm["typed_config"]["config"]["configuration"]["value"])
    policy["default"] = "allow"
    policy["profiles"][0]["tools"]["drop_table"] = {"action": "deny"}
    policy["profiles"][0]["hide"] = ["vault_*"]
    wasm["typed_config"]["config"]["configuration"]["value"] = json.dumps(policy)
    e = upstream.watch(envoy(None, 0, bootstrap=cfg), strict=True)
    admin, reader = idp.token("alice", groups=["ml-admins"]), idp.token("rita")
    for n, (name, key) in enumerate([("DROP_TABLE", "drop_table"), ("\uff44rop_table", "drop_table"),
                                     ("Vault_Key", None), ("Delete_Run", "delete_*")]):
        r = post(e.url, call(name, {}, id=n), headers=bearer(admin))
        msg = assert_denied(r, n, name)
        reason = msg["error"]["data"]["reason"]
        assert "look-alike" in reason and (key is None or f"'{key}'" in reason), msg
        if key is None:
            assert reason == f"'{name}' is a look-alike of a tool hidden by policy", msg
        upstream.assert_not_forwarded()
    # The top level's governed key is every inheriting caller's; the profile's are not the others'.
    assert_denied(post(e.url, call("Delete_Run", {}, id=10), headers=bearer(reader)), 10, "Delete_Run")
    upstream.assert_not_forwarded()
    for n, name in enumerate(["DROP_TABLE", "Vault_Key"], start=11):
        r = post(e.url, call(name, {}, id=n), headers=bearer(reader))
        assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    assert len(upstream.snapshot()) == 2


# ----------------------------------------------------------------------------------------------------- mTLS

@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("certs")
    make_certs.make(out, {"ci": "spiffe://cluster.local/ns/ci/sa/builder",
                          "admin": "spiffe://cluster.local/ns/ml/sa/admin",
                          "stranger": "spiffe://other.example/ns/x/sa/y"})
    rogue = tmp_path_factory.mktemp("rogue")
    make_certs.make(rogue, {"admin": "spiffe://cluster.local/ns/ml/sa/admin"})
    (out / "rogue-admin.pem").write_bytes((rogue / "admin.pem").read_bytes())
    (out / "rogue-admin.key").write_bytes((rogue / "admin.key").read_bytes())
    return out


def mtls_bootstrap(upstream_port: int, certs: pathlib.Path) -> dict:
    cfg = example_bootstrap("callers-mtls.yaml", upstream_port)
    tls = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    ctx = tls["common_tls_context"]
    (pair,) = ctx["tls_certificates"]
    assert pair["certificate_chain"]["filename"] == "envoy/examples/mtls/server.pem"
    pair["certificate_chain"]["filename"] = str(certs / "server.pem")
    pair["private_key"]["filename"] = str(certs / "server.key")
    ctx["validation_context"]["trusted_ca"]["filename"] = str(certs / "ca.pem")
    return cfg


def tls_post(port: int, certs: pathlib.Path, msg: Any, client: str | None) -> tuple[int, dict, Any]:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client:
        ctx.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=15)
    try:
        conn.request("POST", "/mcp", body=encode(msg), headers={
            "content-type": "application/json", "accept": "application/json, text/event-stream"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_the_client_certificate_names_the_caller(envoy, upstream, certs):
    e = upstream.watch(envoy(None, 0, bootstrap=mtls_bootstrap(upstream.port, certs)), strict=True)
    tag = call("set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, id=5)
    # The admin workload may tag; a CI agent may read but not tag.
    status, _, body = tls_post(e.port, certs, tag, "admin")
    assert status == 200 and body["result"]["upstream"] == "recorder", body
    assert forwarded_profile(upstream) == ["ml-admin"]
    upstream.clear()
    status, _, body = tls_post(e.port, certs, call("get_run", {"run_id": "r"}, id=6), "ci")
    assert status == 200 and body["result"]["upstream"] == "recorder", body
    assert forwarded_profile(upstream) == ["ci"]
    upstream.clear()
    status, _, body = tls_post(e.port, certs, tag, "ci")
    assert status == 200 and body["error"]["code"] == DENIED, body
    upstream.assert_not_forwarded()
    # A verified certificate no profile names: the top-level rules.
    status, _, body = tls_post(e.port, certs, tag, "stranger")
    assert body["error"]["code"] == DENIED, body
    status, _, body = tls_post(e.port, certs, call("get_run", {"run_id": "r"}, id=6), "stranger")
    assert status == 200 and "result" in body, body
    assert forwarded_profile(upstream) == [None]
    upstream.clear()
    # No client certificate: refused by the policy (callers.required), nothing forwarded.
    status, headers, body = tls_post(e.port, certs, call("get_run", {"run_id": "r"}, id=6), None)
    assert status == 401 and body["error"]["code"] == UNAUTHENTICATED, body
    assert body["error"]["data"]["decision"] == "unauthenticated" and "www-authenticate" not in headers
    # A certificate with the admin's SPIFFE ID from another CA: the handshake fails.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        tls_post(e.port, certs, tag, "rogue-admin")
    upstream.assert_not_forwarded()


# -------------------------------------------------------------------------------- Istio's RequestAuthentication

def test_the_istio_manifest_behind_istios_jwt_filter(envoy, upstream, idp):
    """envoy/istio/callers.yaml: its RequestAuthentication as Istio 1.21+ turns it into jwt_authn (provider
    `origins-0`, `payload_in_metadata: payload`, `scope` and `permission` normalised into lists, a token optional
    but valid when sent), before its WasmPlugin's policy, in an Envoy without held headers (as under Istio)."""
    ra, wp = list(yaml.safe_load_all((REPO / "envoy" / "istio" / "callers.yaml").read_text()))
    assert ra["kind"] == "RequestAuthentication" and wp["kind"] == "WasmPlugin"
    (rule,) = ra["spec"]["jwtRules"]
    policy = wp["spec"]["pluginConfig"]
    assert policy["callers"]["jwt"]["metadata"] == "payload" and policy["hold_headers"] is False
    istio_idp = Issuer(rule["issuer"])
    cfg = render_bootstrap(json.dumps(policy), upstream.port, hold_headers=False)
    hcm_of(cfg)["http_filters"].insert(0, {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origins-0": {
                "issuer": rule["issuer"], "audiences": rule["audiences"],
                "local_jwks": {"inline_string": istio_idp.jwks},
                "payload_in_metadata": "payload",
                "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
            "bypass_cors_preflight": True}})
    e = upstream.watch(envoy(None, 0, bootstrap=cfg), strict=False)

    def tagged(token: str | None, n: int):
        return post(e.url, call("set_run_tag", {"run_id": "r", "key": "k", "value": "v"}, id=n),
                    headers=bearer(token) if token else None)

    # The scope claim (a space-separated string, a list once Istio normalised it) names the groups.
    r = tagged(istio_idp.token("alice", scope="mcp.read mcp.admin"), 1)
    assert r.status == 200 and r.json()["result"]["upstream"] == "recorder", str(r)
    upstream.clear()
    assert_denied(tagged(istio_idp.token("bob", scope="mcp.read"), 2), 2, "set_run_tag")
    upstream.assert_not_forwarded()
    # No token: required refuses.
    assert_rpc_error(tagged(None, 3), 401, UNAUTHENTICATED, None)
    upstream.assert_not_forwarded()
