"""The one exceptions module: every layer raises these, the entry points map them.

Client errors carry an HTTP status and a short snake_case code (the API's error body).
``TransientError`` means "try again" (Pub/Sub redelivers); ``PermanentError`` means
"acknowledge and record the failure": retrying would give the same answer.
"""

from __future__ import annotations


class FrancineError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        #: Response headers that go with the error (``Allow``, ``Retry-After``).
        self.headers = headers or {}


class BadRequest(FrancineError):
    status = 400
    code = "bad_request"


class Unauthorized(FrancineError):
    status = 401
    code = "unauthorized"


class Forbidden(FrancineError):
    status = 403
    code = "forbidden"


class NotFound(FrancineError):
    status = 404
    code = "not_found"


class MethodNotAllowed(FrancineError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(FrancineError):
    status = 408
    code = "request_timeout"


class Conflict(FrancineError):
    status = 409
    code = "conflict"


class PayloadTooLarge(FrancineError):
    status = 413
    code = "payload_too_large"


def too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is limited to {limit} bytes")


class UnsupportedMediaType(FrancineError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(FrancineError):
    """Over a quota: the answer carries ``Retry-After`` (seconds)."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after_s: int, code: str | None = None):
        super().__init__(message, code, {"Retry-After": str(max(1, int(retry_after_s)))})


class TransientError(FrancineError):
    """A dependency failed in a way that may pass: the caller should retry."""

    status = 503
    code = "unavailable"


class PermanentError(FrancineError):
    """A task that can never succeed: record it as failed, do not retry."""

    status = 500
    code = "task_failed"
