"""The qledger service over HTTP: log in, submit (one or a batch), fetch receipts and credit.

Depends on httpx and ``ledger`` only, so it installs without the service's own dependencies
(``pip install qledger``; the service is ``qledger[server]``)."""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

import httpx

from client.errors import DEFAULT_URL, ServiceError
from ledger.keys import Signer, personal_sign_digest

__all__ = ["DEFAULT_URL", "Accepted", "BatchItem", "BatchResult", "QledgerClient", "ServiceError"]


class Accepted(TypedDict):
    """``POST /v1/records`` answer: the record's struct hash; anchoring follows."""

    structHash: str
    status: Literal["pending"]
    duplicate: bool


class BatchItem(TypedDict, total=False):
    """One record's answer in a batch, in the order sent (``index`` is its position)."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    structHash: str
    error: dict[str, Any]  # the RFC 9457 problem: code, detail, expected, got


class BatchResult(TypedDict):
    accepted: int
    rejected: int
    results: list[BatchItem]


class QledgerClient:
    """A session with one qledger service.

    Submitting needs no login (the record's signature is its authentication); reading
    (receipts, records, credit) needs :meth:`login` with a registered key first. ``http``
    lets a caller pass its own httpx client (proxies, certificates, a test transport)."""

    def __init__(
        self, url: str = DEFAULT_URL, timeout: float = 60, http: httpx.Client | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.http = http if http is not None else httpx.Client(base_url=self.url, timeout=timeout)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> QledgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self.http.request(method, path, headers=headers, **kw)
        if response.status_code not in ok:
            raise error_of(response)
        return response.json() if response.content else None

    def login(self, signer: Signer) -> dict[str, Any]:
        """Sign the service's EIP-4361 challenge; later calls carry the token. Returns the
        token answer (``accessToken``, ``expiresAt``, ``address``, ``role``, ``orgId``)."""
        challenge = self._call("POST", "/v1/auth/challenge", json={"address": signer.address})
        signature = signer.sign_digest(personal_sign_digest(challenge["message"]))
        token = self._call(
            "POST",
            "/v1/auth/token",
            json={"address": signer.address, "nonce": challenge["nonce"], "signature": signature},
        )
        self.token = token["accessToken"]
        return token

    def checkpoint(self) -> dict[str, Any]:
        return self._call("GET", "/v1/checkpoint")

    def submit(self, signed: dict[str, Any]) -> Accepted:
        """Submit one signed envelope. The same record again answers ``duplicate: true``."""
        return self._call("POST", "/v1/records", ok=(202,), json=signed)

    def submit_batch(self, records: list[dict[str, Any]]) -> BatchResult:
        """Up to the service's ``max_batch_records`` (1,000 by default) signed envelopes; each
        is accepted or rejected on its own (202 all accepted, 207 some rejected)."""
        return self._call("POST", "/v1/records:batch", ok=(202, 207), json={"records": records})

    def receipt(self, struct_hash: str) -> dict[str, Any] | None:
        """The record's receipt once its batch is anchored and confirmed, else None."""
        body = self._call("GET", f"/v1/records/{struct_hash}/receipt", ok=(200, 202))
        return None if body.get("status") == "pending" else body

    def wait_receipt(
        self, struct_hash: str, timeout: float = 120, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll :meth:`receipt` until it is there; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.receipt(struct_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no receipt for {struct_hash} within {timeout} s")
            time.sleep(interval)

    def record(self, struct_hash: str) -> dict[str, Any]:
        """A stored record: its summary, batch status and signed envelope (``signed``)."""
        return self._call("GET", f"/v1/records/{struct_hash}")

    def credit(self, supplier_id: str) -> dict[str, Any]:
        """A supplier's credit score with its SHAP explanation and reason codes."""
        return self._call("GET", f"/v1/suppliers/{supplier_id}/credit")

    def register(self, address: str, role: str, org_id: str, name: str = "") -> dict[str, Any]:
        return self._call(
            "POST",
            "/v1/participants",
            ok=(201,),
            json={"address": address, "role": role, "orgId": org_id, "name": name},
        )

    def revoke(self, address: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/participants/{address}")

    def participants(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/participants")["participants"]

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def post(self, path: str, body: Any, ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        return self._call("POST", path, ok=ok, json=body)

    def put_bytes(self, path: str, body: bytes) -> Any:
        return self._call(
            "PUT",
            path,
            ok=(200, 201),
            content=body,
            headers={"content-type": "application/octet-stream"},
        )


def error_of(response: httpx.Response) -> ServiceError:
    """The :class:`ServiceError` of an error answer (a problem+json body, or whatever came)."""
    return ServiceError(response.status_code, _body(response), _retry_after(response))


def _body(response: httpx.Response) -> Any:
    """An error body as JSON when it is JSON (problem+json or not), else its text."""
    try:
        return response.json() if response.content else None
    except ValueError:
        return response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None
