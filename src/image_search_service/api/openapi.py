"""Make the generated OpenAPI document say what the API really answers.

FastAPI advertises its own ``HTTPValidationError`` body for 422, but every error here
leaves as :class:`ErrorBody`; FastAPI answers 400 for a body it cannot parse at all
(broken JSON or multipart); and the browser guard (``api/security.py``) can answer
400 ``InvalidHost`` anywhere and 403 ``CrossSiteRequest`` on writes. This rewrites the
document once, when it is first built.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from image_search_service.api.security import SAFE_METHODS

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = truthful(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(schema: dict[str, Any]) -> dict[str, Any]:
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            if "422" in responses:
                _error(responses, "422", "InvalidRequest")
            _error(responses, "400", "InvalidHost")
            if "requestBody" in operation:  # a body that does not parse at all
                _error(responses, "400", "BadRequest")
            if method.upper() not in SAFE_METHODS:
                _error(responses, "403", "CrossSiteRequest")
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_ONLY:
        components.pop(name, None)
    return schema


def _error(responses: dict[str, Any], status: str, name: str) -> None:
    """Declare ``status`` with the ErrorBody schema, adding ``name`` to its description."""
    entry = responses.setdefault(status, {"description": name})
    description = str(entry.get("description", ""))
    names = [n for n in description.split(" or ") if n and n != "Validation Error"]
    if name not in names:
        names.append(name)
    entry["description"] = " or ".join(names)
    entry["content"] = {"application/json": {"schema": _ERROR_REF}}
