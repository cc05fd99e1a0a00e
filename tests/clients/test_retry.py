"""The SDK's retry rule on its own: what is resent, after how long, and when it stops. The SDK against a real
gateway's refusals is tests/reliability/test_overload.py."""

from __future__ import annotations

import grpc

from clients.retry import RETRY_AFTER_KEY, RetryPolicy
from server.errors import RETRY_AFTER_KEY as SERVER_KEY

CODE = grpc.StatusCode
HINT = ((RETRY_AFTER_KEY, "300"),)


def test_the_sdk_reads_the_key_the_gateway_writes():
    assert RETRY_AFTER_KEY == SERVER_KEY


def test_only_unavailable_and_a_hinted_refusal_are_resent():
    policy = RetryPolicy(retries=3)
    assert policy.delay_s(CODE.UNAVAILABLE, (), 0, 0.0) is not None
    assert policy.delay_s(CODE.RESOURCE_EXHAUSTED, HINT, 0, 0.0) is not None
    for code in (CODE.RESOURCE_EXHAUSTED, CODE.INVALID_ARGUMENT, CODE.DEADLINE_EXCEEDED, CODE.NOT_FOUND,
                 CODE.INTERNAL):
        assert policy.delay_s(code, (), 0, 0.0) is None, code  # no hint: resending can't succeed


def test_a_hinted_refusal_waits_at_least_the_hint_and_unavailable_backs_off():
    policy = RetryPolicy(retries=5, backoff_s=0.05, max_backoff_s=1.0)
    assert all(0.3 <= policy.delay_s(CODE.RESOURCE_EXHAUSTED, HINT, 0, 0.0) <= 0.45 for _ in range(50))
    first, third = policy.delay_s(CODE.UNAVAILABLE, (), 0, 0.0), policy.delay_s(CODE.UNAVAILABLE, (), 2, 0.0)
    assert 0.05 <= first <= 0.075 and 0.2 <= third <= 0.3


def test_attempts_and_total_time_are_bounded():
    policy = RetryPolicy(retries=2, max_total_s=1.0)
    assert policy.delay_s(CODE.UNAVAILABLE, (), 2, 0.0) is None
    assert policy.delay_s(CODE.RESOURCE_EXHAUSTED, HINT, 0, 0.9) is None  # the wait would end past max_total_s
