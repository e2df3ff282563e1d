"""Handing CLI work to a running server.

The embedded vector store (Qdrant Edge, the default) is open in one process only: while
``image-search serve`` runs, it holds it. ``serve`` writes its address to
``DATA_DIR/server.json``; ``index``, ``search``, ``status``, ``duplicates``, ``reembed``
and ``reembed status`` find it there and ask the server over HTTP (with ``API_KEY`` from
the environment), showing progress by polling.
Nothing is opened twice, so nothing can be lost or corrupted.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urllib3 import encode_multipart_formdata

from image_search_service.core.config import Settings
from image_search_service.core.errors import ServiceError

if TYPE_CHECKING:  # the CLI starts without the search service's imports
    from image_search_service.services.search.schemas import SearchResponse

SERVER_FILE = "server.json"
POLL_S = 0.5
STALL_TIMEOUT_S = 600.0  # no progress for this long: stop waiting, the server log says why
# A search may be the first to need a model on the server: loading it (and exporting it
# once to ONNX) takes seconds to minutes.
SEARCH_TIMEOUT_S = 600.0


class ServerUnreachable(ServiceError):
    status_code = 503


def server_file(settings: Settings) -> Path:
    return settings.data_dir / SERVER_FILE


@contextmanager
def advertised(settings: Settings, url: str) -> Iterator[Callable[[], None]]:
    """Write ``DATA_DIR/server.json`` while ``serve`` runs; remove it after (if ours).
    Yields the remover, for the app's shutdown: uvicorn re-raises the SIGTERM it caught
    once the app has stopped, so code after it may never run."""
    path = server_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"url": url, "pid": os.getpid(), "started_at": datetime.now(UTC).isoformat()}
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(info))
        tmp.replace(path)
    except OSError as exc:  # a full disk (ENOSPC) or a read-only DATA_DIR: one line
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ServiceError(
            f"cannot start: writing {path} failed ({exc.strerror or exc}); free some space "
            "or set DATA_DIR to a writable folder"
        ) from None

    def remove() -> None:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass

    try:
        yield remove
    finally:
        remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True)
class RemoteServer:
    url: str
    api_key: str | None
    timeout_s: float = 30.0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self.send(method, path, data, "application/json")

    def send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """One request; the JSON answer, or the server's refusal as a ServiceError."""
        timeout_s = timeout_s or self.timeout_s
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.api_key:
            request.add_header("X-API-Key", self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail") or str(exc)
            except ValueError:
                detail = str(exc)
            error = ServiceError(f"the server at {self.url} refused: {detail}")
            error.status_code = exc.code
            raise error from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
                raise ServiceError(
                    f"the server at {self.url} did not answer within {timeout_s:.0f} s; it may "
                    "still be loading or exporting a model (see its log): try again shortly"
                ) from None
            cut = (ConnectionResetError, BrokenPipeError)
            uploading = content_type.startswith("multipart/") and bool(data)
            if uploading and (isinstance(exc, cut) or isinstance(reason, cut)):
                # The server answers a body over its limit before reading it all, then
                # closes the connection.
                size = len(data or b"") / 2**20
                raise ServiceError(
                    f"the server at {self.url} closed the connection before the request "
                    f"({size:.1f} MiB) was sent in full: a body over its upload limit "
                    "(MAX_UPLOAD_BYTES) is cut off like this"
                ) from None
            raise ServerUnreachable(
                f"a server is recorded in the data dir ({self.url}) but does not answer: {exc}"
            ) from None


def running_server(settings: Settings) -> RemoteServer | None:
    """The server holding this DATA_DIR's embedded store, if one runs. With QDRANT_URL
    the store is shared by design and the CLI works on its own."""
    if settings.qdrant_url:
        return None
    try:
        info = json.loads(server_file(settings).read_text())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return RemoteServer(url=url, api_key=_first_key(settings.api_key or settings.read_api_key))


# -- the hand-offs -----------------------------------------------------------------------
ProgressShow = Callable[[int, int, str], None]


def index_via_server(
    server: RemoteServer, paths: list[Path], *, model: str, show: ProgressShow
) -> dict[str, Any]:
    """Queue each folder on the server, follow the runs, return one merged report."""
    queued: list[dict[str, Any]] = []
    for path in paths:
        body = {"path": str(path.expanduser().resolve()), "model": model}
        queued.append(server.call("POST", "/api/v1/admin/index", body)["run"])
    mine = {(run["path"], run["queued_at"]) for run in queued}
    finished: dict[tuple[str, str], dict[str, Any]] = {}
    while len(finished) < len(mine):
        status = server.call("GET", "/api/v1/admin/index")
        for run in status["finished"]:
            key = (run["path"], run["queued_at"])
            if key in mine:
                finished[key] = run
        current = status["current"]
        if current and (current["path"], current["queued_at"]) in mine:
            show(current["done"], current["total"] or 0, current["phase"])
        if len(finished) < len(mine):
            time.sleep(POLL_S)
    return merge_reports([finished[(r["path"], r["queued_at"])] for r in queued])


def merge_reports(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' reports as one, in the shape ``index --json`` prints without a server
    (``IndexReportOut``), plus ``errors``: the runs that failed."""
    from image_search_service.services.library.schemas import IndexReportOut

    reports = [IndexReportOut.model_validate(run["report"]) for run in runs if run["report"]]
    counted = ("scanned", "indexed", "skipped", "duplicates", "failed", "missing")
    extra = ("metadata_refreshed", "unsupported")
    seconds = sum(r.seconds for r in reports)
    merged = IndexReportOut(
        **{name: sum(getattr(r, name) for r in reports) for name in counted + extra},
        seconds=round(seconds, 3),
        images_per_second=round(sum(r.indexed for r in reports) / seconds, 2) if seconds else 0.0,
        models=list(dict.fromkeys(key for r in reports for key in r.models)),
        failures=[failure for r in reports for failure in r.failures],
        unsupported_files=[path for r in reports for path in r.unsupported_files],
    )
    errors = [f"{run['path']}: {run['error']}" for run in runs if run["error"]]
    return {**merged.model_dump(mode="json"), "errors": errors}


def search_via_server(
    server: RemoteServer, *, text: str | None, images: list[Path], fields: list[tuple[str, str]]
) -> SearchResponse:
    """One search on the server (``POST /api/v1/search/combined``: text, example files and
    every option as form fields): the server's ``SearchResponse``, read back as one."""
    from image_search_service.services.search.schemas import SearchResponse

    parts: list[tuple[str, Any]] = list(fields)
    if text:
        parts.append(("q", text))
    for path in images:
        parts.append(("file", (path.name, path.read_bytes())))
    data, content_type = encode_multipart_formdata(parts)
    answer = server.send(
        "POST", "/api/v1/search/combined", data, content_type, timeout_s=SEARCH_TIMEOUT_S
    )
    response = SearchResponse.model_validate(answer)
    # Photo URLs are the HTTP API's (relative to the server, signed, short-lived): the
    # CLI prints paths, the same with or without a server.
    results = [hit.model_copy(update={"urls": None}) for hit in response.results]
    return response.model_copy(update={"results": results})


def status_via_server(server: RemoteServer) -> dict[str, Any]:
    result: dict[str, Any] = server.call("GET", "/api/v1/admin/status")
    return result


def reembed_via_server(
    server: RemoteServer,
    key: str,
    *,
    force: bool,
    only_failed: bool,
    job_size: int,
    show: ProgressShow,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the run on the server and follow it until nothing is pending (or it stalls)."""
    body = {"model": key, "force": force, "only_failed": only_failed, "job_size": job_size}
    submission: dict[str, Any] = server.call("POST", "/api/v1/admin/reembed", body)
    last = -1
    changed_at = time.monotonic()
    while True:
        progress: dict[str, Any] = server.call("GET", f"/api/v1/admin/reembed?target={key}")
        position = progress["done"] + progress["failed"]
        show(position, progress["total"], f"{progress['failed']} failed")
        if progress["complete"]:
            return submission, progress
        if position != last:
            last, changed_at = position, time.monotonic()
        elif time.monotonic() - changed_at > STALL_TIMEOUT_S:
            raise ServiceError(
                f"the server made no re-embedding progress for {STALL_TIMEOUT_S:.0f}s "
                f"({progress['pending']} pending); see its log, then run this again"
            )
        time.sleep(POLL_S)


def _first_key(keys: str | None) -> str | None:
    """The key the CLI sends: the first of a comma-separated list (rotation)."""
    first = (keys or "").split(",")[0].strip()
    return first or None
