# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""JSON over HTTPS for the cloud cores: the one place for retries, backoff and error translation.

Every Azure call of the collection runs inside a `RetryPolicy`: 429 (honouring Retry-After), 5xx and connection
failures are retried with jittered exponential backoff inside a bounded budget; anything else becomes a typed
`ApiError` that keeps the service's error code and tracking id. The DPS service API goes through
`JsonHttpClient.request`; the SDK clients (IoT Hub, DPS resource manager) have their own retries switched off and
hand the policy the answer's headers the same way (`Retryable`).
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import math
import random
import ssl
import time
from dataclasses import dataclass, field
from urllib.error import HTTPError

from ansible.module_utils.urls import Request

RETRYABLE_STATUSES = frozenset((408, 429, 500, 502, 503, 504))
# The headers in which a service says how long to wait, in the order azure-core's RetryPolicy reads them
# (azure/core/pipeline/policies/_utils.py, get_retry_after, azure-core 1.41): Retry-After (seconds, or an HTTP-date,
# RFC 9110 section 10.2.3), then Azure's millisecond headers. Names are matched without regard to case.
RETRY_AFTER_HEADERS = (
    ("retry-after", 1.0),
    ("retry-after-ms", 0.001),
    ("x-ms-retry-after-ms", 0.001),
)


class CloudError(Exception):
    """Base of the errors the cloud cores raise; the message says what went wrong and what to do."""


class ConfigurationError(CloudError):
    """Bad input (connection string, option combination); raised before anything is sent."""


class ApiError(CloudError):
    """The service answered with an error that retrying will not fix (or retries ran out on one)."""

    def __init__(self, message, *, status, error_code=None, tracking_id=None, operation=None, details=None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.tracking_id = tracking_id
        self.operation = operation
        self.details = details

    def reworded(self, message: str) -> ApiError:
        """The same answer of the service (status, code, tracking id, operation) told with another message."""
        return ApiError(
            message,
            status=self.status,
            error_code=self.error_code,
            tracking_id=self.tracking_id,
            operation=self.operation,
            details=self.details,
        )

    def to_result(self) -> dict:
        """What a module adds to fail_json: the service's own identifiers, for a support ticket."""
        return {
            "status": self.status,
            "error_code": self.error_code,
            "tracking_id": self.tracking_id,
            "operation": self.operation,
        }


class TransportError(CloudError):
    """No HTTP answer at all: refused, reset, timed out, TLS failure."""


class RetriesExhaustedError(CloudError):
    """Transient failures outlasted the retry budget."""

    def __init__(self, message, *, last_error):
        super().__init__(message)
        self.last_error = last_error

    def to_result(self) -> dict:
        return self.last_error.to_result() if isinstance(self.last_error, ApiError) else {}


class Retryable(Exception):
    """Raised inside a call given to RetryPolicy.run: ``error`` is transient.

    The server's hint on when to come back is read by the policy from ``headers`` (the error answer's headers, any
    mapping); ``retry_after`` (seconds) is a hint already known as a number and wins over the headers.
    """

    def __init__(self, error, retry_after=None, *, headers=None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.headers = headers


@dataclass
class RetryPolicy:
    """Jittered exponential backoff ("full jitter"), bounded by attempts per call and by total sleep per client.

    A server's hint (Retry-After and Azure's millisecond headers, see `retry_after_seconds`) replaces the backoff;
    the budget bounds both: a hint longer than what is left of it fails the call at once.
    ``sleep``, ``rng`` and ``clock`` (seconds since the epoch, for an HTTP-date) are injectable so tests run without
    waiting.
    """

    max_retries: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    budget_seconds: float = 300.0
    sleep: object = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    clock: object = time.time
    slept: float = 0.0
    retries: int = 0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); the budget is applied by `run`."""
        if retry_after is not None:
            # The service said when; a little jitter keeps a fleet of clients from coming back in lockstep.
            return retry_after + self.rng.uniform(0, min(1.0, self.base_delay))
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return self.rng.uniform(self.base_delay / 2, ceiling)

    def server_delay(self, failure: Retryable) -> float | None:
        """Seconds the service asked to wait for this failure, or None (then the policy's own backoff applies)."""
        if failure.retry_after is not None:
            return max(0.0, float(failure.retry_after))
        return retry_after_seconds(failure.headers, now=self.clock())

    def run(self, call, describe: str):
        """Call ``call()`` until it succeeds, raises a non-retryable error or the budget is spent."""
        attempt = 0
        while True:
            try:
                return call()
            except Retryable as failure:
                attempt += 1
                if attempt > self.max_retries:
                    raise self._exhausted(describe, attempt, failure) from None
                asked = self.server_delay(failure)
                left = max(0.0, self.budget_seconds - self.slept)
                if asked is None:
                    wait = self.delay(attempt, None)
                    if wait > left:
                        raise self._exhausted(describe, attempt, failure) from None
                elif asked > left:
                    raise RetriesExhaustedError(
                        f"{describe}: the service asked to wait {_seconds(asked)} s before the next attempt and the "
                        f"retry budget left was {_seconds(left)} s, after {_attempts(attempt)} and {self.slept:.0f} s "
                        f"of backoff (last error: {failure.error}). The service is throttling or unavailable; retry "
                        "later, or raise retry_budget_seconds. A re-run continues where this one stopped.",
                        last_error=failure.error,
                    ) from None
                else:
                    wait = min(self.delay(attempt, asked), left)  # the jitter never takes the wait past the budget
                self.retries += 1
                self.slept += wait
                self.sleep(wait)

    def _exhausted(self, describe: str, attempt: int, failure: Retryable) -> RetriesExhaustedError:
        return RetriesExhaustedError(
            f"{describe}: still failing after {_attempts(attempt)} and {self.slept:.0f} s of backoff "
            f"(last error: {failure.error}). The service is throttling or unavailable; retry later, "
            "or raise max_retries / retry_budget_seconds. A re-run continues where this one stopped.",
            last_error=failure.error,
        )


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _seconds(value: float) -> str:
    """Seconds for a message: whole seconds, one decimal below 10 s (0.3, 2.5, 45, 3600)."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


# What a write meets when its own earlier attempt was processed but the answer was lost (then retried): a create
# finds the record (409 "already exists"), an update or a proof step finds a new etag (412).
LOST_WRITE_STATUSES = frozenset((409, 412))


def settle_lost_write(write, read_back, is_done):
    """Run ``write()``; when it meets a conflict that a lost answer explains, read the record and decide.

    ``read_back()`` returns the record as the service has it now (None when absent); ``is_done(record)`` says
    whether it is what the write asked for. If so the write counts as done and the record is returned (the run goes
    on); if not, the conflict is real (someone else changed the record) and the error is raised.
    """
    try:
        return write()
    except ApiError as error:
        if error.status not in LOST_WRITE_STATUSES:
            raise
        record = read_back()
        if record is not None and is_done(record):
            return record
        raise


def _lower_case_headers(headers) -> dict:
    """Any header mapping (dict, http.client.HTTPMessage, requests' CaseInsensitiveDict) with lower-case names.

    A name sent twice keeps its first value, as ``HTTPMessage.get`` has it.
    """
    lowered: dict = {}
    for name, value in headers.items():
        lowered.setdefault(str(name).strip().lower(), value)
    return lowered


def _delay_seconds(text: str) -> float | None:
    """A number of seconds (RFC 9110 delay-seconds; a fraction is accepted, as azure-core does), or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _http_date_delay(text: str, now: float) -> float | None:
    """Seconds from ``now`` until an HTTP-date (IMF-fixdate or an obsolete RFC 850 / asctime form), or None."""
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:  # asctime has no zone; an HTTP-date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)  # a date in the past: come back now


def retry_after_seconds(headers, now: float | None = None) -> float | None:
    """Seconds the service asked to wait before the next attempt, from the answer's headers; None if it did not say.

    Read as azure-core's RetryPolicy reads them (`RETRY_AFTER_HEADERS`): ``Retry-After`` first, as seconds or as an
    HTTP-date counted from ``now`` (seconds since the epoch; default: the current time), then ``retry-after-ms`` and
    ``x-ms-retry-after-ms`` (milliseconds). Names are matched without regard to case; a negative number or a date
    in the past means no wait. A value that cannot be read is passed over for the next header; when none can be
    read the answer is None, and the caller's own backoff applies.
    """
    if not headers:
        return None
    lowered = _lower_case_headers(headers)
    for name, unit in RETRY_AFTER_HEADERS:
        value = lowered.get(name)
        text = str(value).strip() if value is not None else ""
        if not text:
            continue
        seconds = _delay_seconds(text)
        if seconds is None and name == "retry-after":
            seconds = _http_date_delay(text, time.time() if now is None else now)
        if seconds is not None:
            return seconds * unit
    return None


def _decode_json(raw: bytes):
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class Response:
    status: int
    headers: dict
    body: object


class JsonHttpClient:
    """JSON requests against one base URL with per-request auth headers.

    ``auth_headers`` is called for every attempt (tokens can be refreshed); ``parse_error(status, body, headers)``
    turns an error answer into an ApiError in the service's own terms.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_headers,
        parse_error,
        service_name: str,
        ca_bundle: str | None = None,
        validate_certs: bool = True,
        timeout: float = 30,
        retry: RetryPolicy | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.auth_headers = auth_headers
        self.parse_error = parse_error
        self.service_name = service_name
        self.retry = retry or RetryPolicy()
        self.requests_sent = 0
        self._request = Request(
            validate_certs=validate_certs,
            ca_path=ca_bundle,
            timeout=timeout,
            follow_redirects="none",
            # A token in Authorization is never sent to another host: redirects are refused above.
            use_proxy=True,
        )

    def request(self, method, path, *, operation, body=None, headers=None, query=None, ok=(200,)):
        """Send one logical request (retried as needed); return a Response with a status in ``ok``."""
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
        payload = json.dumps(body).encode("utf-8") if body is not None else None

        def attempt():
            return self._send(method, url, payload, dict(headers or {}), operation, ok)

        return self.retry.run(attempt, f"{self.service_name} {operation}")

    def _send(self, method, url, payload, headers, operation, ok):
        headers.update(self.auth_headers())
        headers.setdefault("Accept", "application/json")
        if payload is not None:
            headers["Content-Type"] = "application/json"
        self.requests_sent += 1
        try:
            response = self._request.open(method, url, data=payload, headers=headers)
            status, response_headers, raw = response.getcode(), response.headers, response.read()
        except HTTPError as error:
            status, response_headers = error.code, error.headers
            try:
                raw = error.read()
            except (OSError, http.client.HTTPException):
                raw = b""
        except (OSError, http.client.HTTPException) as error:  # URLError, TLS errors and timeouts are OSErrors
            reason = getattr(error, "reason", error)
            if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason):
                raise TransportError(
                    f"{self.service_name} {operation}: the server certificate of {url.split('?')[0]} is not "
                    f"trusted ({reason}); set ca_bundle to the CA that issued it"
                ) from None
            raise Retryable(
                TransportError(f"{self.service_name} {operation}: no answer from {url.split('?')[0]} ({reason})")
            ) from None
        decoded = _decode_json(raw)
        if status in ok:
            return Response(status, {k.lower(): v for k, v in response_headers.items()}, decoded)
        api_error = self.parse_error(status, decoded, response_headers)
        api_error.operation = operation
        if status in RETRYABLE_STATUSES:
            raise Retryable(api_error, headers=response_headers)
        raise api_error


__all__ = (
    "LOST_WRITE_STATUSES",
    "RETRY_AFTER_HEADERS",
    "ApiError",
    "CloudError",
    "ConfigurationError",
    "JsonHttpClient",
    "Response",
    "RetriesExhaustedError",
    "RetryPolicy",
    "Retryable",
    "TransportError",
    "retry_after_seconds",
    "settle_lost_write",
)
