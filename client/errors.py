"""What a caller of the service needs without loading a session: the default address and the
error answer type (importable by a command's --help without httpx or a signer)."""

from __future__ import annotations

from typing import Any

DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_BATCH = 200  # records per POST /v1/records:batch (the service takes up to 1,000)


class ServiceError(Exception):
    """An error answer of the service: an RFC 9457 problem (``code`` is its machine code).

    ``retry_after`` is the server's Retry-After in seconds when it sent one (503s)."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        problem = body if isinstance(body, dict) else {}
        self.status, self.problem, self.retry_after = status, problem, retry_after
        self.code = str(problem.get("code", "http_error"))
        self.expected, self.got = problem.get("expected"), problem.get("got")
        detail = problem.get("detail", body if body is not None else "no body")
        super().__init__(f"{status} {self.code}: {detail}")
