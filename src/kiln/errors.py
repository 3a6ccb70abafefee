"""The JSON error envelope, Cliquet's errno table, and Flask error handlers.

Every error a kiln app answers has this body (Cliquet protocol v2)::

    {"code": 404, "errno": 111, "error": "Not Found",
     "message": "The resource you are looking for could not be found."}

``message``, ``info`` and ``details`` are left out when absent. Views raise
:class:`HTTPError` (or call :func:`http_error`); anything else that escapes a
view becomes a 500 with errno 999 and no traceback, and a
:class:`~kiln.exceptions.BackendError` becomes a 503 with errno 201 and
``Retry-After``.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from kiln._state import current_state, kiln_hook
from kiln.exceptions import BackendError, KilnError, TransientBackendError
from kiln.logging import current_request_id

if TYPE_CHECKING:
    from flask import Flask, Response

    from kiln.config import Configuration

__all__ = [
    "ERRORS",
    "HTTPError",
    "backend_error",
    "error_body",
    "http_error",
    "install_error_handlers",
    "invalid_parameter",
    "json_response",
    "unexpected_error",
    "werkzeug_error",
]

logger = logging.getLogger("kiln.errors")

_TAG = re.compile(r"<[^>]*>")


class ERRORS(enum.IntEnum):
    """Cliquet's errno table, plus the statuses kiln adds."""

    MISSING_AUTH_TOKEN = 104
    INVALID_AUTH_TOKEN = 105
    BADJSON = 106
    INVALID_PARAMETERS = 107
    MISSING_PARAMETERS = 108
    INVALID_POSTED_DATA = 109
    INVALID_RESOURCE_ID = 110
    MISSING_RESOURCE = 111
    MISSING_CONTENT_LENGTH = 112
    REQUEST_TOO_LARGE = 113
    MODIFIED_MEANWHILE = 114
    METHOD_NOT_ALLOWED = 115
    VERSION_NOT_AVAILABLE = 116
    CLIENT_REACHED_CAPACITY = 117
    FORBIDDEN = 121
    CONSTRAINT_VIOLATED = 122
    UNDEFINED = 999
    BACKEND = 201
    SERVICE_DEPRECATED = 202


#: The errno used for a bare HTTP status when the raiser gives none.
DEFAULT_ERRNO: dict[int, ERRORS] = {
    400: ERRORS.INVALID_PARAMETERS,
    401: ERRORS.MISSING_AUTH_TOKEN,
    403: ERRORS.FORBIDDEN,
    404: ERRORS.MISSING_RESOURCE,
    405: ERRORS.METHOD_NOT_ALLOWED,
    406: ERRORS.INVALID_PARAMETERS,
    409: ERRORS.CONSTRAINT_VIOLATED,
    410: ERRORS.SERVICE_DEPRECATED,
    411: ERRORS.MISSING_CONTENT_LENGTH,
    412: ERRORS.MODIFIED_MEANWHILE,
    413: ERRORS.REQUEST_TOO_LARGE,
    414: ERRORS.INVALID_PARAMETERS,
    415: ERRORS.INVALID_PARAMETERS,
    429: ERRORS.CLIENT_REACHED_CAPACITY,
    431: ERRORS.INVALID_PARAMETERS,
    503: ERRORS.BACKEND,
}

#: Messages for statuses whose werkzeug description is HTML-flavoured or vague.
DEFAULT_MESSAGE: dict[int, str] = {
    404: "The resource you are looking for could not be found.",
    405: "Method not allowed on this endpoint.",
    413: "The request body is too large.",
    500: "A programmatic error occured, developers have been informed.",
    503: ("Service temporary unavailable due to overloading or maintenance, please retry later."),
}


def error_body(
    status: int,
    errno: int | None = None,
    message: str | None = None,
    *,
    details: Any = None,
    info: str | None = None,
) -> dict[str, Any]:
    """Build the error envelope for ``status``.

    ``errno`` defaults from :data:`DEFAULT_ERRNO` (999 otherwise).
    """
    body: dict[str, Any] = {
        "code": status,
        "errno": int(errno if errno is not None else DEFAULT_ERRNO.get(status, ERRORS.UNDEFINED)),
        "error": HTTP_STATUS_CODES.get(status, "Unknown Error"),
    }
    if message is not None:
        body["message"] = message
    if info is not None:
        body["info"] = info
    if details is not None:
        body["details"] = details
    return body


class HTTPError(KilnError):
    """An error response with the JSON envelope.

    Raise it from a view (or anything a view calls)::

        raise HTTPError(412, ERRORS.MODIFIED_MEANWHILE, "Resource was modified meanwhile.")
    """

    def __init__(
        self,
        status: int,
        errno: int | None = None,
        message: str | None = None,
        *,
        details: Any = None,
        info: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.errno = int(
            errno if errno is not None else DEFAULT_ERRNO.get(status, ERRORS.UNDEFINED)
        )
        self.message = message if message is not None else DEFAULT_MESSAGE.get(status)
        self.details = details
        self.info = info
        self.headers = dict(headers or {})
        super().__init__(self.message or HTTP_STATUS_CODES.get(status, str(status)))

    @property
    def body(self) -> dict[str, Any]:
        """The envelope this error answers with."""
        return error_body(
            self.status, self.errno, self.message, details=self.details, info=self.info
        )


def invalid_parameter(location: str, name: str, description: str) -> HTTPError:
    """400 errno 107 for one wrong request part: ``"<name> in <location>: <description>"``
    (just the description when the part is the whole location, like the body),
    with the same ``{location, name, description}`` in ``details``."""
    return HTTPError(
        400,
        ERRORS.INVALID_PARAMETERS,
        description if name == location else f"{name} in {location}: {description}",
        details=[{"location": location, "name": name, "description": description}],
    )


def http_error(
    status: int,
    errno: int | None = None,
    message: str | None = None,
    **kwargs: Any,
) -> HTTPError:
    """Build (not raise) an :class:`HTTPError`; ``raise http_error(404)`` reads well."""
    return HTTPError(status, errno, message, **kwargs)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A Flask response whose body is ``body`` encoded by orjson."""
    from flask import current_app

    response: Response = current_app.response_class(
        orjson.dumps(body), status=status, mimetype="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def _respond(error: HTTPError) -> Response:
    from flask import request

    request.environ["kiln.errno"] = error.errno  # read by the request summary log line
    return json_response(error.body, error.status, error.headers)


def _handle_http_error(error: HTTPError) -> Response:
    return _respond(error)


def _handle_werkzeug(exc: HTTPException) -> Response:
    if (exc.code or 500) < 400:  # werkzeug's RequestRedirect (routing): keep it as it is
        return exc.get_response()  # type: ignore[return-value]
    return _respond(werkzeug_error(exc))


def werkzeug_error(exc: HTTPException) -> HTTPError:
    """The envelope of one of werkzeug's HTTP errors (``exc.code`` >= 400)."""
    status = exc.code or 500
    message = DEFAULT_MESSAGE.get(status) or _plain(exc.description)
    headers: dict[str, str] = {}
    if status == 405:
        headers.update({k: v for k, v in exc.get_headers() if k.lower() == "allow"})
    if status == 503:
        headers["Retry-After"] = str(_retry_after())
    return HTTPError(status, message=message, headers=headers)


def _handle_backend(exc: BackendError) -> Response:
    from flask import request

    if isinstance(exc, TransientBackendError):
        # A batch runs again as a whole when one of its sub-requests conflicted.
        request.environ["kiln.transient_failure"] = exc
    return _respond(backend_error(exc, current_state().config))


def _handle_unexpected(exc: Exception) -> Response:
    return _respond(unexpected_error(exc, current_state().config))


def backend_error(exc: BackendError, config: Configuration) -> HTTPError:
    """The 503 (with ``Retry-After``) answering a backend failure, which is logged."""
    cause = exc.original or exc.__cause__
    logger.error("Backend failure: %s", exc, exc_info=cause, extra=_request_fields())
    return HTTPError(503, headers={"Retry-After": str(config.setting("retry_after_seconds"))})


def unexpected_error(exc: BaseException, config: Configuration) -> HTTPError:
    """The 500 answering an exception no handler expected, which is logged."""
    logger.error("Unhandled exception in a view", exc_info=exc, extra=_request_fields())
    # The service's own page: a 500 is a bug of the service, not of kiln.
    link = config.setting("error_info_link") or config.setting("project.docs")
    return HTTPError(500, ERRORS.UNDEFINED, info=str(link) if link else None)


def _request_fields() -> dict[str, Any]:
    """The ``fields`` extra of an error's log record: the request's id."""
    return {"fields": {"rid": current_request_id()}}


def _plain(description: str | None) -> str | None:
    # werkzeug's descriptions are HTML fragments; the envelope carries text.
    if not description:
        return None
    text = _TAG.sub("", description.replace("</p>", " ").replace("<br>", " "))
    return " ".join(text.split()) or None


def _retry_after() -> int:
    return int(current_state().config.setting("retry_after_seconds"))


def install_error_handlers(app: Flask) -> None:
    """Make every error ``app`` answers the JSON envelope."""
    for handler in (_handle_http_error, _handle_backend, _handle_werkzeug, _handle_unexpected):
        kiln_hook(handler)
    app.register_error_handler(HTTPError, _handle_http_error)
    app.register_error_handler(BackendError, _handle_backend)
    app.register_error_handler(HTTPException, _handle_werkzeug)
    app.register_error_handler(Exception, _handle_unexpected)
