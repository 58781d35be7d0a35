"""The tests' rate limit service (tests/e2e/ratelimit.py) over a real Redis, driven by a gRPC client: it must
count as envoyproxy/ratelimit does before the filter's tests can lean on it, and its knobs (slow, garbage,
down, Redis gone) must fail the way the filter's tests expect.
"""
from __future__ import annotations

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.wrappers_pb2 import UInt64Value

Desc = ratelimit_pb2.RateLimitDescriptor
Resp = rls_pb2.RateLimitResponse
MINUTE, HOUR = 2, 3


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(rate_limit_service):
    clock = Clock()
    rate_limit_service.clock = clock
    return rate_limit_service, clock


def stub(svc):
    channel = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    return rls_pb2_grpc.RateLimitServiceStub(channel), channel


def desc(rule: str, limit: str, n: int, unit: int = MINUTE, hits: int | None = None, session: str | None = None):
    entries = [Desc.Entry(key="mcp_rule", value=rule), Desc.Entry(key="mcp_limit", value=limit)]
    if session is not None:
        entries.append(Desc.Entry(key="mcp_session", value=session))
    d = Desc(entries=entries, limit=Desc.RateLimitOverride(requests_per_unit=n, unit=unit))
    if hits is not None:
        d.hits_addend.CopyFrom(UInt64Value(value=hits))
    return d


def ask(s, *descriptors, hits: int = 0, domain: str = "mcp-policy", timeout: float = 5.0):
    return s.ShouldRateLimit(rls_pb2.RateLimitRequest(domain=domain, descriptors=list(descriptors),
                                                      hits_addend=hits), timeout=timeout)


def test_fixed_windows_count_each_descriptor_and_reset_at_the_window(clocked, redis_server):
    svc, clock = clocked
    s, ch = stub(svc)
    with ch:
        a = desc('tools["t"]', "0:3/minute", 3, session="s1")
        codes = [ask(s, a).overall_code for _ in range(5)]
        assert codes == [Resp.OK] * 3 + [Resp.OVER_LIMIT] * 2
        r = ask(s, a)
        st = r.statuses[0]
        assert (st.code, st.current_limit.requests_per_unit, st.current_limit.unit) == (Resp.OVER_LIMIT, 3, MINUTE)
        assert st.duration_until_reset.seconds == 60 - int(clock.now) % 60
        # Another session, another counter; the next window, a fresh one.
        assert ask(s, desc('tools["t"]', "0:3/minute", 3, session="s2")).statuses[0].limit_remaining == 2
        clock.now += 60
        assert ask(s, a).overall_code == Resp.OK
        # The keys are envoyproxy/ratelimit's: domain, every key and value, the window's start; they expire.
        c = redis_server.client()
        try:
            window = int(clock.now) // 60 * 60
            key = f'mcp-policy_mcp_rule_tools["t"]_mcp_limit_0:3/minute_mcp_session_s1_{window}'
            assert c.command("GET", key) == b"1"
            assert 0 < c.command("TTL", key) <= 60
        finally:
            c.close()


def test_hits_addend_per_descriptor_then_per_request_and_every_descriptor_counted(clocked):
    svc, _ = clocked
    s, ch = stub(svc)
    with ch:
        calls = desc('tools["x"]', "0:10/hour", 10, HOUR, hits=1)
        units = desc('tools["x"]', "1:100/hour", 100, HOUR, hits=60)
        r = ask(s, calls, units, hits=60)
        assert r.overall_code == Resp.OK
        assert [st.limit_remaining for st in r.statuses] == [9, 40]
        # Over on the second descriptor: refused, and the first was counted anyway (as envoyproxy/ratelimit does).
        r = ask(s, calls, units, hits=60)
        assert r.overall_code == Resp.OVER_LIMIT
        assert [st.code for st in r.statuses] == [Resp.OK, Resp.OVER_LIMIT]
        assert r.statuses[0].limit_remaining == 8
        # Without a descriptor hits_addend, the request's counts (and 0 means 1).
        plain = desc('tools["y"]', "0:5/hour", 5, HOUR)
        assert ask(s, plain, hits=4).statuses[0].limit_remaining == 1
        assert ask(s, plain).statuses[0].limit_remaining == 0
        assert ask(s, plain).overall_code == Resp.OVER_LIMIT
        assert svc.requests[-1]["descriptors"][0]["entries"][0] == {"key": "mcp_rule", "value": 'tools["y"]'}


def test_no_override_or_unknown_domain_means_no_limit(clocked):
    svc, _ = clocked
    s, ch = stub(svc)
    with ch:
        bare = Desc(entries=[Desc.Entry(key="k", value="v")])
        r = ask(s, bare)
        assert r.overall_code == Resp.OK and not r.statuses[0].HasField("current_limit")
        svc.domains = {"mcp-prod"}
        r = ask(s, desc('tools["t"]', "0:1/minute", 1))
        assert r.overall_code == Resp.OK and not r.statuses[0].HasField("current_limit")
        assert ask(s, desc('tools["t"]', "0:1/minute", 1), domain="mcp-prod").statuses[0].HasField("current_limit")


def test_knobs_fail_as_the_filter_tests_expect(clocked, redis_server):
    svc, _ = clocked
    s, ch = stub(svc)
    d = desc('tools["t"]', "0:100/minute", 100)
    with ch:
        svc.mode, svc.slow_seconds = "slow", 0.5
        with pytest.raises(grpc.RpcError) as e:
            ask(s, d, timeout=0.1)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        svc.mode = "garbage"
        with pytest.raises(grpc.RpcError) as e:
            ask(s, d)
        assert e.value.code() == grpc.StatusCode.INTERNAL  # the client cannot parse the answer
        raw = ch.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                             request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert raw(rls_pb2.RateLimitRequest(domain="d").SerializeToString(), timeout=5) == b"\xff\xfe not a RateLimitResponse \x00"
        svc.mode = "unknown"
        assert ask(s, d).overall_code == Resp.UNKNOWN
        svc.mode = "error"
        with pytest.raises(grpc.RpcError) as e:
            ask(s, d)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        svc.mode = "ok"
        assert ask(s, d).overall_code == Resp.OK
        # Redis gone: UNAVAILABLE; back: counting again, from what Redis kept (nothing: no persistence).
        redis_server.stop()
        with pytest.raises(grpc.RpcError) as e:
            ask(s, d)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        redis_server.start()
        assert ask(s, d).statuses[0].limit_remaining == 99
    # Down: the port refuses connections.
    port = svc.port
    svc.stop()
    s, ch = stub(svc)
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            ask(s, d, timeout=2)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # Up again on the same port (an Envoy cluster keeps pointing at it).
    svc.start()
    assert svc.port == port
    s, ch = stub(svc)
    with ch:
        assert ask(s, d).overall_code == Resp.OK
