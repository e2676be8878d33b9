"""Abuse limits: token buckets for sign-in (per client address and per claimed account) and for
intake (per signing key).

The buckets live in the process: with ``workers`` uvicorn workers behind one port, a client can
get at most ``workers`` times each configured limit (each worker refills its own bucket). That
bound is stated in docs/api.md; a limit shared across workers would need a round trip to the
database on every request, which the intake path is built to avoid.

The client address is the one uvicorn reports: behind a reverse proxy it takes it from
``X-Forwarded-For`` when the proxy is trusted (uvicorn trusts 127.0.0.1 by default, the nginx of
deploy/qledger; a proxy elsewhere needs ``FORWARDED_ALLOW_IPS``), otherwise every caller would
share the proxy's bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from api.errors import ApiError
from api.settings import Settings

# How many keys each limiter remembers. The least recently seen is forgotten first; a
# forgotten key starts again with a full bucket, which only ever errs towards allowing.
MAX_TRACKED_KEYS = 100_000


class RateLimited(ApiError):
    """429 with ``Retry-After`` (whole seconds, rounded up) and the code ``rate_limited``."""

    def __init__(self, scope: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            "rate_limited",
            f"too many requests ({scope}); retry after {seconds} s",
            got=scope,
        )
        self.retry_after = seconds
        self.headers = {"Retry-After": str(seconds)}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens, refilled at ``per_second``; thread-safe.

    ``per_second <= 0`` disables the limiter (every call is allowed).
    """

    def __init__(
        self,
        per_second: float,
        burst: float,
        *,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second, self.burst = per_second, max(1.0, burst)
        self.max_keys, self.clock = max_keys, clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) * self.per_second
            )
            bucket.updated = now
        return bucket

    def _wait(self, bucket: _Bucket, cost: float) -> float:
        return (cost - bucket.tokens) / self.per_second

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 if allowed, else the seconds until they would be there (and
        nothing is taken)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            bucket = self._refilled(key, self.clock())
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return self._wait(bucket, cost)

    def wait_for(self, key: str) -> float:
        """Seconds until ``key`` has one token (0.0 now); takes nothing."""
        if not self.enabled:
            return 0.0
        with self._lock:
            bucket = self._refilled(key, self.clock())
            return 0.0 if bucket.tokens >= 1 else self._wait(bucket, 1.0)

    def charge(self, key: str, cost: float) -> None:
        """Take ``cost`` tokens after the fact; the balance may go negative (a debt that later
        requests wait out)."""
        if not self.enabled or cost <= 0:
            return
        with self._lock:
            self._refilled(key, self.clock()).tokens -= cost


class AbuseLimits:
    """The service's limiters, built from :class:`Settings`."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        per_minute = 1 / 60
        self.auth_per_client = TokenBuckets(
            settings.auth_requests_per_minute_per_client * per_minute,
            settings.auth_requests_per_minute_per_client,
            clock=clock,
        )
        self.auth_per_account = TokenBuckets(
            settings.auth_requests_per_minute_per_account * per_minute,
            settings.auth_requests_per_minute_per_account,
            clock=clock,
        )
        self.intake_per_key = TokenBuckets(
            settings.intake_records_per_second_per_key,
            settings.intake_burst_per_key,
            clock=clock,
        )

    def auth(self, request: Request, account: str) -> None:
        """One sign-in request (challenge or token) from this client for this account."""
        client = client_address(request)
        wait = self.auth_per_client.take(client)
        if wait:
            raise RateLimited("sign-in requests from this client address", wait)
        wait = self.auth_per_account.take(account.lower())
        if wait:
            raise RateLimited("sign-in requests for this account", wait)

    def intake_check(self, records: list[Any]) -> None:
        """Before intake: refuse if a claimed signer has no token left. Nothing is taken, so
        a forger naming someone else's address cannot spend that key's allowance."""
        for signer in {claimed_signer(record) for record in records} - {None}:
            assert signer is not None
            wait = self.intake_per_key.wait_for(signer)
            if wait:
                raise RateLimited("records signed by this key", wait)

    def intake_charge(self, records: list[Any], accepted: list[int]) -> None:
        """After intake: charge each key for its records newly accepted (so their signatures
        were valid). Duplicates are free: anyone can replay a signed record, and a replay must
        not spend its signer's allowance."""
        counts: dict[str, int] = {}
        for index in accepted:
            signer = claimed_signer(records[index])
            if signer is not None:
                counts[signer] = counts.get(signer, 0) + 1
        for signer, count in counts.items():
            self.intake_per_key.charge(signer, count)


def client_address(request: Request) -> str:
    """The caller's address as the ASGI server saw it (see the module note on proxies)."""
    return request.client.host if request.client else "unknown"


def claimed_signer(envelope: Any) -> str | None:
    """``record.signer`` of a submitted envelope as sent (unverified), lower-cased."""
    record = envelope.get("record") if isinstance(envelope, dict) else None
    signer = record.get("signer") if isinstance(record, dict) else None
    return signer.lower() if isinstance(signer, str) else None
