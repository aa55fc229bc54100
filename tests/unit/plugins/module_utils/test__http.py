"""RetryPolicy and JsonHttpClient: what is retried, how long it waits, and the error when the budget is spent."""

from __future__ import annotations

import random

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    MAX_RETRY_AFTER,
    ApiError,
    RetriesExhaustedError,
    Retryable,
    RetryPolicy,
    TransportError,
)


class Flaky:
    """Fails with the given errors in turn (Retryable or not), then returns "ok"."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def policy(**overrides) -> tuple[RetryPolicy, list[float]]:
    waits: list[float] = []
    settings = {"sleep": waits.append, "rng": random.Random(1), **overrides}
    return RetryPolicy(**settings), waits


def throttled(retry_after=None) -> Retryable:
    return Retryable(ApiError("DPS answered 429", status=429, error_code=429001), retry_after)


def test_transient_failures_are_retried_until_success():
    retry, waits = policy()
    call = Flaky(throttled(), Retryable(TransportError("reset")), Retryable(ApiError("503", status=503)))
    assert retry.run(call, "DPS op") == "ok"
    assert call.calls == 4
    assert len(waits) == 3 and retry.retries == 3


def test_retry_after_is_honoured_with_a_little_jitter_and_capped():
    retry, waits = policy(base_delay=0.5)
    retry.run(Flaky(throttled(7)), "DPS op")
    assert 7 <= waits[0] <= 7.5
    retry, waits = policy()
    retry.run(Flaky(throttled(3600)), "DPS op")
    assert MAX_RETRY_AFTER <= waits[0] <= MAX_RETRY_AFTER + 1


def test_backoff_grows_exponentially_within_its_ceiling():
    retry = policy(base_delay=1, max_delay=8)[0]
    ceilings = [1, 2, 4, 8, 8, 8]
    for attempt, ceiling in enumerate(ceilings, start=1):
        delays = [retry.delay(attempt, None) for _draw in range(50)]
        assert all(0.5 <= delay <= ceiling for delay in delays)


def test_errors_that_retrying_cannot_fix_are_raised_at_once():
    retry, waits = policy()
    call = Flaky(ApiError("DPS answered 412", status=412))
    with pytest.raises(ApiError, match="412"):
        retry.run(call, "DPS op")
    assert call.calls == 1 and waits == []


def test_spent_attempts_give_a_clear_error_with_the_last_cause():
    retry, waits = policy(max_retries=2)
    call = Flaky(*[throttled(1)] * 5)
    with pytest.raises(RetriesExhaustedError) as failure:
        retry.run(call, "DPS IndividualEnrollment_Get")
    message = str(failure.value)
    assert message.startswith("DPS IndividualEnrollment_Get: still failing after 3 attempts")
    assert "DPS answered 429" in message and "re-run continues" in message
    assert failure.value.to_result()["error_code"] == 429001
    assert call.calls == 3 and len(waits) == 2


def test_the_time_budget_is_shared_by_every_call_of_a_run():
    retry, waits = policy(budget_seconds=10, max_retries=100)
    retry.run(Flaky(throttled(4), throttled(4)), "first call")
    with pytest.raises(RetriesExhaustedError):
        retry.run(Flaky(throttled(4)), "second call")  # 8 s spent; 4 more would pass 10
    assert sum(waits) <= 10
