"""The service's domain errors: one hierarchy, raised by the service layer (files, jobs, admission, uploads) and by
the workers' shared code, free of any web framework. Each carries a stable ``code``, a message, the parameter at fault
and the HTTP status that service.http_errors' one handler answers it with, as ``{"error": {"code", "message",
"param"}}``; never a stack trace."""

from __future__ import annotations


class APIError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.headers = message, param, headers
        if code is not None:
            self.code = code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}


class BadRequest(APIError):
    status, code = 400, "bad_request"


class Unauthorized(APIError):
    status, code = 401, "invalid_api_key"


class NotFound(APIError):
    status, code = 404, "not_found"


class Conflict(APIError):
    status, code = 409, "conflict"


class PayloadTooLarge(APIError):
    status, code = 413, "payload_too_large"


class Unprocessable(APIError):
    status, code = 422, "invalid_request"


class RangeNotSatisfiable(APIError):
    status, code = 416, "range_not_satisfiable"


class RateLimited(APIError):
    """Too many requests of one kind for a key; ``Retry-After`` says when it may try again."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ServiceUnavailable(APIError):
    status, code = 503, "unavailable"
