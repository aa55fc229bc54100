"""RetryPolicy and JsonHttpClient: what is retried, how long it waits, and the error when the budget is spent."""

from __future__ import annotations

import datetime
import http.client
import io
import random
from urllib.error import HTTPError

import pytest
import requests

from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    JsonHttpClient,
    RetriesExhaustedError,
    Retryable,
    RetryPolicy,
    TransportError,
    retry_after_seconds,
)

# A fixed "now" for HTTP-dates: Mon, 30 Nov 2026 08:00:00 GMT.
NOW = datetime.datetime(2026, 11, 30, 8, 0, 0, tzinfo=datetime.UTC).timestamp()


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


def test_retry_after_is_honoured_with_a_little_jitter():
    retry, waits = policy(base_delay=0.5)
    retry.run(Flaky(throttled(7)), "DPS op")
    assert 7 <= waits[0] <= 7.5
    retry, waits = policy()
    retry.run(Flaky(throttled(200)), "DPS op")  # longer than any backoff step, but inside the budget: honoured
    assert 200 <= waits[0] <= 200.5


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


# ---- the server's hint: every form of Retry-After, read in one place ---------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": " 120 "}, 120.0),
        ({"Retry-After": "1.5"}, 1.5),  # not RFC 9110's delay-seconds, but azure-core reads it so
        ({"Retry-After": "Mon, 30 Nov 2026 08:00:42 GMT"}, 42.0),  # IMF-fixdate
        ({"Retry-After": "Monday, 30-Nov-26 08:01:00 GMT"}, 60.0),  # obsolete RFC 850 form
        ({"Retry-After": "Mon Nov 30 08:00:05 2026"}, 5.0),  # obsolete asctime form, no zone: GMT
        ({"Retry-After": "Mon, 30 Nov 2026 09:00:30 +0100"}, 30.0),  # a zone other than GMT is still understood
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"x-ms-retry-after-ms": "0"}, 0.0),
    ],
)
def test_every_retry_after_form_is_read_as_seconds(headers, seconds):
    assert retry_after_seconds(headers, now=NOW) == pytest.approx(seconds)


def test_azure_cores_precedence_retry_after_then_the_millisecond_headers():
    every = {"x-ms-retry-after-ms": "3000", "retry-after-ms": "2000", "Retry-After": "1"}
    assert retry_after_seconds(every, now=NOW) == 1.0
    del every["Retry-After"]
    assert retry_after_seconds(every, now=NOW) == 2.0
    del every["retry-after-ms"]
    assert retry_after_seconds(every, now=NOW) == 3.0
    as_date = {"x-ms-retry-after-ms": "3000", "Retry-After": "Mon, 30 Nov 2026 08:00:10 GMT"}
    assert retry_after_seconds(as_date, now=NOW) == 10.0


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"},
        {"Retry-After": "Mon, 30 Nov 2026 07:59:59 GMT"},
        {"Retry-After": "-5"},
        {"retry-after-ms": "-100"},
    ],
)
def test_a_date_in_the_past_or_a_negative_wait_means_now(headers):
    assert retry_after_seconds(headers, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    ["soon", "", "   ", "5 minutes", "inf", "nan", "Wed, 31 Feb 2026 08:00:00 GMT", "Mon, 30 Nov 2026 25:00:00 GMT"],
)
def test_an_unreadable_value_is_no_hint(value):
    assert retry_after_seconds({"Retry-After": value}, now=NOW) is None
    assert retry_after_seconds({"x-ms-retry-after-ms": value}, now=NOW) is None


def test_an_unreadable_header_gives_way_to_the_next_form():
    headers = {"Retry-After": "soon", "retry-after-ms": "later", "x-ms-retry-after-ms": "800"}
    assert retry_after_seconds(headers, now=NOW) == 0.8
    # A date belongs in Retry-After only: the millisecond headers are numbers.
    assert retry_after_seconds({"x-ms-retry-after-ms": "Mon, 30 Nov 2026 08:00:10 GMT"}, now=NOW) is None


def test_no_headers_is_no_hint():
    assert retry_after_seconds(None) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Content-Type": "application/json"}) is None


def http_message(**fields) -> http.client.HTTPMessage:
    message = http.client.HTTPMessage()
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    return message


@pytest.mark.parametrize(
    "make",
    [dict, requests.structures.CaseInsensitiveDict, lambda fields: http_message(**fields)],
    ids=["dict", "requests", "http.client"],
)
def test_header_names_match_without_regard_to_case(make):
    assert retry_after_seconds(make({"RETRY-AFTER": "4"}), now=NOW) == 4.0
    assert retry_after_seconds(make({"retry-after": "Mon, 30 Nov 2026 08:00:04 GMT"}), now=NOW) == 4.0
    assert retry_after_seconds(make({"Retry-After-Ms": "4000"}), now=NOW) == 4.0
    assert retry_after_seconds(make({"X-MS-Retry-After-MS": "4000"}), now=NOW) == 4.0
    assert retry_after_seconds(make({"X-Ms-Retry-After-Ms": "9000", "RETRY-AFTER": "4"}), now=NOW) == 4.0


def test_the_policy_reads_the_headers_with_its_own_clock():
    retry, waits = policy(clock=lambda: NOW)
    date = Retryable(ApiError("429", status=429), headers={"Retry-After": "Mon, 30 Nov 2026 08:00:20 GMT"})
    millis = Retryable(ApiError("503", status=503), headers={"x-ms-retry-after-ms": "1500"})
    assert retry.run(Flaky(date, millis), "DPS op") == "ok"
    assert 20 <= waits[0] <= 20.5 and 1.5 <= waits[1] <= 2.0


def test_a_past_date_retries_now():
    retry, waits = policy(clock=lambda: NOW)
    past = Retryable(ApiError("429", status=429), headers={"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert retry.run(Flaky(past), "DPS op") == "ok"
    assert waits[0] <= 0.5  # no more than the small jitter every hinted wait gets


def test_garbage_falls_back_to_the_policys_own_backoff():
    retry, waits = policy(clock=lambda: NOW, base_delay=1, max_delay=8)
    garbage = [Retryable(ApiError("429", status=429), headers={"Retry-After": "soon"}) for _attempt in range(4)]
    assert retry.run(Flaky(*garbage), "DPS op") == "ok"
    assert [0.5 <= wait <= ceiling for wait, ceiling in zip(waits, [1, 2, 4, 8], strict=True)] == [True] * 4


def test_a_hint_longer_than_the_budget_left_fails_at_once_and_says_both():
    retry, waits = policy(budget_seconds=300, clock=lambda: NOW)
    call = Flaky(Retryable(ApiError("DPS answered 429", status=429), headers={"Retry-After": "3600"}))
    with pytest.raises(RetriesExhaustedError) as failure:
        retry.run(call, "DPS IndividualEnrollment_Get")
    message = str(failure.value)
    assert message.startswith(
        "DPS IndividualEnrollment_Get: the service asked to wait 3600 s before the next attempt and the retry budget "
        "left was 300 s, after 1 attempt and 0 s of backoff (last error: DPS answered 429)."
    )
    assert "retry_budget_seconds" in message and "re-run continues" in message
    assert call.calls == 1 and waits == [] and retry.slept == 0
    assert failure.value.last_error.status == 429


def test_the_budget_left_is_what_earlier_waits_did_not_spend():
    retry, waits = policy(budget_seconds=10, max_retries=100, clock=lambda: NOW)
    retry.run(Flaky(throttled(6)), "first call")
    hint = {"Retry-After": "Mon, 30 Nov 2026 08:00:05 GMT"}  # 5 s, more than the ~4 s left
    with pytest.raises(RetriesExhaustedError, match=r"asked to wait 5 s .* budget left was 3\.\d s"):
        retry.run(Flaky(Retryable(ApiError("429", status=429), headers=hint)), "second call")
    assert len(waits) == 1


def test_the_wait_never_exceeds_the_budget_left_jitter_included():
    retry, waits = policy(budget_seconds=10, base_delay=0.5)
    call = Flaky(Retryable(ApiError("429", status=429), headers={"retry-after-ms": "10000"}))
    assert retry.run(call, "DPS op") == "ok"
    assert waits == [10.0] and retry.slept == 10.0


def test_the_attempt_limit_still_comes_first():
    retry, waits = policy(max_retries=0)
    with pytest.raises(RetriesExhaustedError, match="still failing after 1 attempt and 0 s"):
        retry.run(Flaky(Retryable(ApiError("429", status=429), headers={"Retry-After": "3600"})), "DPS op")
    assert waits == []


# ---- JsonHttpClient hands the answer's headers to the policy ----------------------------------------------


class FakeAnswer:
    def __init__(self, status, body=b"{}"):
        self.status, self.body, self.headers = status, body, http_message(Content_Type="application/json")

    def getcode(self):
        return self.status

    def read(self):
        return self.body


def test_the_client_honours_a_millisecond_header_of_an_error_answer(monkeypatch):
    retry, waits = policy()
    client = JsonHttpClient(
        "https://dps.example",
        auth_headers=dict,
        parse_error=lambda status, body, headers: ApiError(f"answered {status}", status=status),
        service_name="DPS",
        retry=retry,
    )
    throttled_once = [
        HTTPError(
            "https://dps.example/x", 429, "Too Many Requests", http_message(X_Ms_Retry_After_Ms="2500"), io.BytesIO()
        )
    ]

    def open_(method, url, data=None, headers=None):
        if throttled_once:
            raise throttled_once.pop()
        return FakeAnswer(200)

    monkeypatch.setattr(client._request, "open", open_)
    response = client.request("GET", "/x", operation="Get")
    assert response.status == 200 and client.requests_sent == 2
    assert 2.5 <= waits[0] <= 3.0
