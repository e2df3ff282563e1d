"""Cap request bodies before they are parsed (and, for multipart, spooled to disk).

A declared ``Content-Length`` over the cap is refused at once; a chunked body is
counted as it arrives and refused as soon as it passes the cap. Upload routes get
room for the image (``MAX_UPLOAD_BYTES``) plus the multipart framing; all other
routes take small JSON bodies only, and the tiny-body routes (click events, sent by
every page view) a few kilobytes.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from image_search_service.api.errors import RequestTooLarge, error_content

SMALL_BODY_BYTES = 1 << 20
TINY_BODY_BYTES = 4096
MULTIPART_OVERHEAD_BYTES = 1 << 20


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        upload_paths: frozenset[str],
        max_upload_bytes: int,
        extra_limits: dict[str, int] | None = None,
        tiny_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.upload_paths = upload_paths
        self.tiny_paths = tiny_paths
        self.upload_limit = max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        self.upload_why = (
            f" (MAX_UPLOAD_BYTES, {max_upload_bytes:,}, and {MULTIPART_OVERHEAD_BYTES:,} for "
            "the form around the file)"
        )
        # Other multipart routes with their own content cap (e.g. a batch of files).
        self.extra_limits = {
            path: limit + MULTIPART_OVERHEAD_BYTES for path, limit in (extra_limits or {}).items()
        }

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """The body limit of this request's route, and what sets it (for the 413)."""
        # endswith: behind a proxy the path may carry a root_path prefix.
        path = str(scope.get("path", "")).rstrip("/")
        if any(path.endswith(upload) for upload in self.upload_paths):
            return self.upload_limit, self.upload_why
        for route, limit in self.extra_limits.items():
            if path.endswith(route):
                return limit, ""
        if any(path.endswith(tiny) for tiny in self.tiny_paths):
            return TINY_BODY_BYTES, ""
        return SMALL_BODY_BYTES, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, why = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(send, RequestTooLarge(limit, why))
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside body parsing; the app's error handler renders the 413.
                    raise RequestTooLarge(limit, why)
            return message

        await self.app(scope, counted_receive, send)


async def _reject(send: Send, exc: RequestTooLarge) -> None:
    body = json.dumps(error_content(type(exc).__name__, str(exc.detail))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
