"""One error type, one exception handler, one wire shape.

Every failure leaves the API as ``{"error": {"message", "type", "param",
"code"}}`` with the status OpenAI uses for it, so SDK clients raise the same
exception classes they raised against OpenAI.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequestError(ApplicationError):
    pass


class AuthenticationError(ApplicationError):
    status_code = 401


class PermissionDeniedError(ApplicationError):
    status_code = 403


class NotFoundError(ApplicationError):
    status_code = 404

    @classmethod
    def for_object(
        cls, kind: str, object_id: str, param: str | None = None
    ) -> NotFoundError:
        return cls(f"No {kind} found with id '{object_id}'.", param=param)


class ConflictError(ApplicationError):
    status_code = 409


class PayloadTooLargeError(ApplicationError):
    status_code = 413
    default_code = "payload_too_large"


class RateLimitError(ApplicationError):
    status_code = 429
    error_type = "rate_limit_exceeded"


class RequestRateLimitError(ApplicationError):
    """A key's request rate limit (OpenAI's shape: type ``requests``, code
    ``rate_limit_exceeded``). ``response_headers`` go on the 429."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.response_headers = headers


class InsufficientQuotaError(ApplicationError):
    """A project's token budget is spent (OpenAI: 429 ``insufficient_quota``)."""

    status_code = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServerError(ApplicationError):
    status_code = 500
    error_type = "server_error"


class ServiceUnavailableError(ApplicationError):
    """A dependency (PostgreSQL, Redis) is down or restarting: retry later.

    503 with ``Retry-After``: the SDKs retry it by themselves (the openai
    SDK retries 5xx with backoff), where a 500 reads as a bug.
    """

    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"
    retry_after_seconds = 2

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


def _outage_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a dependency is unreachable", not "a bug".

    Imported lazily: core.errors is imported by settings-free code paths, and
    each client library is optional to the others.
    """
    import django.db
    import kombu.exceptions
    import psycopg
    import redis.exceptions

    return (
        # Django wraps the driver's errors; raw ones escape from code that
        # talks to psycopg directly (the pool opening, LISTEN, COPY).
        django.db.OperationalError,
        django.db.InterfaceError,
        psycopg.OperationalError,  # includes psycopg_pool.PoolTimeout
        psycopg.InterfaceError,
        # ConnectionError includes BusyLoadingError (Redis restarting).
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,  # the broker, when enqueuing
    )


def is_outage(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says a dependency is unreachable."""
    types = _outage_types()
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, types):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def outage_error(exc: BaseException | None) -> ServiceUnavailableError | None:
    """The 503 to answer for ``exc`` (or what caused it), else None."""
    if not is_outage(exc):
        return None
    # One line, no traceback: an outage is expected, not a bug to debug.
    logger.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailableError(
        "The server is temporarily unable to handle your request (a "
        "dependency is restarting). Please retry after a short wait."
    )


def error_body(
    message: str,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }


def _first_drf_error(detail: Any, path: str = "") -> tuple[str | None, str]:
    """Walk a DRF ValidationError detail to its first leaf: (param, message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _first_drf_error(value, path)
            sub = f"{path}.{key}" if path else str(key)
            return _first_drf_error(value, sub)
    if isinstance(detail, list) and detail:
        first = detail[0]
        if isinstance(first, (dict, list)):
            return _first_drf_error(first, f"{path}[0]")
        return (path or None), str(first)
    return (path or None), str(detail)


def _as_application_error(exc: Exception) -> ApplicationError:
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, drf.ParseError):
        return InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be "
            "valid JSON (UTF-8, no trailing commas, no NaN)."
        )
    if isinstance(exc, drf.NotAuthenticated):
        return AuthenticationError(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer "
            "YOUR_KEY)."
        )
    if isinstance(exc, drf.AuthenticationFailed):
        return AuthenticationError(str(exc.detail), code="invalid_api_key")
    if isinstance(exc, drf.PermissionDenied):
        return PermissionDeniedError(str(exc.detail))
    if isinstance(exc, (drf.NotFound, Http404)):
        return NotFoundError("Not found.")
    if isinstance(exc, drf.MethodNotAllowed):
        err = InvalidRequestError(str(exc.detail), code="method_not_allowed")
        err.status_code = 405
        return err
    if isinstance(exc, drf.UnsupportedMediaType):
        err = InvalidRequestError(str(exc.detail), code="unsupported_media_type")
        err.status_code = 415
        return err
    if isinstance(exc, drf.Throttled):
        return RateLimitError(str(exc.detail))
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLargeError("The request body is too large.")
    if isinstance(exc, drf.ValidationError):
        param, message = _first_drf_error(exc.detail)
        return InvalidRequestError(message, param=param)
    if isinstance(exc, drf.APIException):
        err = InvalidRequestError(str(exc.detail))
        err.status_code = exc.status_code
        return err
    outage = outage_error(exc)
    if outage is not None:
        return outage
    logger.exception("unhandled error", exc_info=exc)
    return ServerError(
        "The server had an error while processing your request. Sorry about that!"
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error becomes the OpenAI error body."""
    err = _as_application_error(exc)
    headers = {}
    wait = getattr(exc, "wait", None) if isinstance(exc, drf.Throttled) else None
    if wait is not None:
        headers["Retry-After"] = str(int(wait) + 1)
    if isinstance(err, RequestRateLimitError):
        headers.update(err.response_headers)
    if isinstance(err, ServiceUnavailableError):
        headers.update(err.headers())
    return Response(err.body(), status=err.status_code, headers=headers)
