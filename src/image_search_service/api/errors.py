"""Every error leaves the API as ``{"error": "<ClassName>", "detail": "..."}``.

Domain errors (:class:`ServiceError`) carry their status; FastAPI's validation errors
and Starlette's HTTP errors (unknown route, wrong method) are reshaped to match; a lost
database connection is a 503; anything else is a logged 500 that leaks no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from image_search_service.core.disk import is_disk_full
from image_search_service.core.errors import DatabaseUnavailable, InsufficientStorage, ServiceError

logger = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 2000


class ErrorBody(BaseModel):
    error: str
    detail: str


class UnsupportedMediaType(ServiceError):
    """The request's Content-Type is not what the endpoint reads."""

    status_code = 415


class RequestTooLarge(StarletteHTTPException):
    """The request body is over the limit. An HTTPException so that FastAPI's body
    parsing lets it through instead of turning it into a generic 400."""

    def __init__(self, limit: int, why: str = "") -> None:
        super().__init__(413, f"request body is over the limit of {limit:,} bytes{why}")


def error_content(name: str, detail: str) -> dict[str, str]:
    return {"error": name, "detail": detail[:MAX_DETAIL_CHARS]}


def _status_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.detail)
    headers = {"WWW-Authenticate": "ApiKey"} if exc.status_code == 401 else None
    return JSONResponse(
        error_content(type(exc).__name__, exc.detail), status_code=exc.status_code, headers=headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        error_content("InvalidRequest", describe_validation_errors(exc.errors())), status_code=422
    )


def describe_validation_errors(errors: Iterable[Any]) -> str:
    """``field: message`` per problem; the rejected input is not echoed back."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            parts.append(f"request body is not valid JSON: {reason}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path", "header")]
        where = ".".join(loc)
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    name = type(exc).__name__ if isinstance(exc, RequestTooLarge) else _status_name(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first route whose path matched; a path served by
        # several routes (GET and DELETE /assets/{id}) allows the union.
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    return JSONResponse(error_content(name, detail), status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document declares for this path (GET implies HEAD):
    read from the document rather than from router internals, so the header and the
    schema cannot disagree."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for template, item in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {m.upper() for m in item}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _disk_full(exc: Exception) -> JSONResponse:
    """An ENOSPC the free-space reserve did not foresee: refused like the reserve's."""
    logger.error("a write failed, the disk is full: %s", exc)
    error = InsufficientStorage(
        "the server's disk is full; writes are refused until space is freed"
    )
    return JSONResponse(error_content(type(error).__name__, error.detail), status_code=507)


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        return _disk_full(exc)
    return await _unexpected_error(request, exc)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):
        return _disk_full(exc)
    logger.warning("database error: %s", exc)
    error = DatabaseUnavailable("the metadata database is unreachable or failed; try again")
    return JSONResponse(error_content(type(error).__name__, error.detail), status_code=503)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_content("InternalError", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)


def error_responses(*errors: type[ServiceError] | tuple[int, str]) -> dict[int | str, Any]:
    """OpenAPI ``responses=`` for a route: each status with the error names it can carry."""
    by_status: dict[int, list[str]] = {}
    for error in errors:
        status, name = error if isinstance(error, tuple) else (error.status_code, error.__name__)
        by_status.setdefault(status, []).append(name)
    return {
        status: {"model": ErrorBody, "description": " or ".join(names)}
        for status, names in sorted(by_status.items())
    }
