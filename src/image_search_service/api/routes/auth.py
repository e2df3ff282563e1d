"""``/api/v1/auth/session``: the page signs in once, exchanging a key for a session
cookie (HttpOnly: no script can read it), and signs out; ``GET`` says whether the
server needs credentials and who the caller is."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, Field

from image_search_service.api.auth import SESSION_COOKIE, Principal
from image_search_service.api.deps import (
    AccessDep,
    DbSession,
    PrincipalDep,
    RequireAdmin,
    RequireJson,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.core.errors import Forbidden, InvalidRequest, Unauthorized
from image_search_service.core.schemas import InputModel, OutputModel
from image_search_service.db import repository as repo

session_router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])
admin_router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[RequireAdmin])
MAX_AUDIT = 1000


class SignIn(InputModel):
    key: str = Field(min_length=1, max_length=512, description="an API key")


class SessionOut(OutputModel):
    required: bool = Field(description="whether this server needs credentials")
    signed_in: bool
    name: str | None = Field(None, description="the key's name (never the key)")
    scope: Literal["read", "admin"] | None = None
    via: str | None = Field(None, description="key, session, signed-url or open")


def _session_out(required: bool, principal: Principal | None) -> SessionOut:
    if principal is None:
        return SessionOut(required=required, signed_in=False)
    return SessionOut(
        required=required,
        signed_in=principal.via != "open",
        name=principal.name,
        scope=principal.scope,
        via=principal.via,
    )


@session_router.get("/session", summary="Whether credentials are needed, and who is calling")
async def session(access: AccessDep, principal: PrincipalDep) -> SessionOut:
    return _session_out(access.required(), principal)


@session_router.post(
    "/session",
    summary="Sign in: exchange an API key for a session cookie",
    dependencies=[RequireJson],
    responses=error_responses(
        Unauthorized, InvalidRequest, UnsupportedMediaType, (413, "RequestTooLarge")
    ),
)
async def sign_in(
    request: Request, response: Response, body: SignIn, access: AccessDep
) -> SessionOut:
    if not access.required():
        raise InvalidRequest("this server needs no credentials (no API key is set)")
    key = access.keys.match(body.key)
    if key is None:
        access.throttle.failed(request.client.host if request.client else "unknown")
        raise Unauthorized("wrong or expired API key")
    ttl = access.settings.session_ttl_s
    response.set_cookie(
        SESSION_COOKIE,
        access.signer.session(key, expires=int(time.time()) + ttl),
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="strict",
        # Secure when the page came over HTTPS: directly, or through a proxy uvicorn trusts
        # (FORWARDED_ALLOW_IPS), which then sets the scheme from X-Forwarded-Proto.
        secure=request.url.scheme == "https",
    )
    return _session_out(True, Principal(name=key.name, scope=key.scope, via="session"))


@session_router.delete("/session", summary="Sign out: the session cookie is removed")
async def sign_out(response: Response, access: AccessDep) -> SessionOut:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return SessionOut(required=access.required(), signed_in=False)


class AuditEventOut(OutputModel):
    at: AwareDatetime
    client: str = Field(description="the client's address")
    principal: str = Field(description="the key's name (never the key)")
    scope: str
    method: str
    path: str
    status: int


class AuditOut(OutputModel):
    events: list[AuditEventOut] = Field(description="newest first")


@admin_router.get(
    "/audit",
    summary="Admin actions: rollout changes, re-embeds, deletes, uploads, index requests",
    responses=error_responses(Unauthorized, Forbidden),
)
def audit(session: DbSession, limit: Annotated[int, Query(ge=1, le=MAX_AUDIT)] = 100) -> AuditOut:
    return AuditOut(
        events=[AuditEventOut.model_validate(e) for e in repo.audit_events(session, limit=limit)]
    )


router = APIRouter()
for _part in (session_router, admin_router):
    router.include_router(_part)
