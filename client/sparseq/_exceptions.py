"""Every error the SDK raises derives from :class:`SparseqError`; API answers raise one class per status family.

``status`` is the HTTP status (0 when no answer came: connection, timeout, a download that did not verify), ``code``
the API's stable error code (``not_found``, ``invalid_recipe``, ``rate_limited``...), ``message`` its sentence and
``param`` the request field it is about, when there is one.
"""

from __future__ import annotations

from datetime import UTC

import httpx


class SparseqError(Exception):
    """The base of every error of this package."""

    def __init__(self, message: str, *, status: int = 0, code: str = "error", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" (parameter {self.param!r})" if self.param else "")


class APIConnectionError(SparseqError):
    """No answer: the service could not be reached or the connection broke."""

    def __init__(self, message: str, *, code: str = "connection_error") -> None:
        super().__init__(message, code=code)


class APITimeoutError(APIConnectionError):
    """No answer within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="timeout")


class APIResponseValidationError(SparseqError):
    """An answer that is not what the API sends (not JSON, a field missing): a proxy's page, a wrong URL."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_response")


class DownloadError(SparseqError):
    """A download that did not verify against its sha256 (``corrupt_download``), or a file name that is not a file
    (``bad_filename``); nothing is left behind."""


class APIStatusError(SparseqError):
    """The service answered with an error status; ``response`` is its httpx response."""

    def __init__(self, message: str, *, response: httpx.Response, code: str, param: str | None = None) -> None:
        super().__init__(message, status=response.status_code, code=code, param=param)
        self.response = response
        self.status_code = response.status_code


class BadRequestError(APIStatusError):
    """400: a malformed request (a bad cursor, a body that is not JSON)."""


class AuthenticationError(APIStatusError):
    """401: no API key, or one the service does not know."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: no such object for this key (another owner's objects are not found either)."""


class ConflictError(APIStatusError):
    """409: the object's state forbids it, or an Idempotency-Key was reused with another body."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was understood and refused (an invalid recipe, weights that do not fit the model)."""


class RateLimitError(APIStatusError):
    """429: too many requests for this key; ``retry_after`` is the service's wait in seconds, when it gave one."""

    @property
    def retry_after(self) -> float | None:
        return retry_after(self.response)


class InternalServerError(APIStatusError):
    """5xx: the service (or a proxy in front of it) failed."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error answer: the API's ``{"error": {code, message, param}}``, or (a proxy's page) the
    first line of the body under ``http_<status>``."""
    try:
        body = response.json()["error"]
        code, message, param = str(body["code"]), str(body["message"]), body.get("param")
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        code, message, param = f"http_{response.status_code}", text.splitlines()[0][:200] if text else "", None
        message = message or response.reason_phrase
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = InternalServerError if response.status_code >= 500 else APIStatusError
    return kind(message, response=response, code=code, param=param)


def retry_after(response: httpx.Response | None) -> float | None:
    """The ``Retry-After`` header in seconds (a number or an HTTP date), or None."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
