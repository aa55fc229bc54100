"""Injectable time and seeded identifiers, so emulator state is reproducible."""

from __future__ import annotations

import base64
import datetime as dt
import random
import threading
import uuid


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that only moves when told to (tests, reproducible demos)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            return self._now


Clock = SystemClock | ManualClock


def iso_utc(moment: dt.datetime) -> str:
    """ISO-8601 with seven fractional digits and ``Z``, the shape DPS and IoT Hub return."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def rfc1123(moment: dt.datetime) -> str:
    """RFC 1123 date, the shape the DPS resource-manager certificate API returns."""
    return moment.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


class IdGenerator:
    """Seeded source of GUIDs, etags, keys and operation ids; ``reseed`` makes a run repeatable."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._counter = 0

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._random = random.Random(seed)
            self._counter = 0

    def guid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def hex(self, length: int) -> str:
        with self._lock:
            return "".join(self._random.choice("0123456789ABCDEF") for _index in range(length))

    def key(self, size: int = 32) -> str:
        """A base64 symmetric key, like the ones the services generate."""
        with self._lock:
            return base64.b64encode(self._random.randbytes(size)).decode()

    def counter(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def dps_etag(self) -> str:
        """DPS etags are base64 of a quoted GUID-like string (protocols.md 1.4)."""
        return base64.b64encode(f'"{self.guid()}"'.encode()).decode()

    def hub_etag(self) -> str:
        """IoT Hub etags are base64 of an 8-byte counter, e.g. ``AAAAAAAAAAE=``."""
        return base64.b64encode(self.counter().to_bytes(8, "big")).decode()

    def tracking_id(self) -> str:
        return self.guid().replace("-", "")
