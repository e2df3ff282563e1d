"""Ingest on arrival: S3 event notifications (or lists of URIs) become indexing work.

The body is either the JSON an S3-compatible store sends for its notifications
(``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": ...},
"object": {"key": ...}}}]}``, as AWS, MinIO and others send), a JSON list of
``s3://bucket/key`` URIs, or ``{"uris": [...]}``.

Created and removed events are treated alike: the work is "bring these objects up to
date" (:func:`services.buckets.index_objects` asks the bucket for each object's state
now), so a redelivered, duplicated or out-of-order event does no harm, and an object
created and deleted again before the work runs ends up missing, as it should.
The work goes to RQ when ``REDIS_URL`` (and a shared vector store) are configured,
otherwise to one background thread of this process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from image_search_service.core.errors import InvalidRequest, ServiceError
from image_search_service.images.s3 import SCHEME, parse_object_uri
from image_search_service.services.context import ServiceContext
from image_search_service.services.indexing import IndexReport, models_to_index
from image_search_service.services.migration import choose_runner

logger = logging.getLogger(__name__)

MAX_URIS = 1000
INGEST_JOB_TIMEOUT_S = 1800


@dataclass(frozen=True)
class IngestSubmission:
    runner: Literal["rq", "in-process"]
    accepted: int  # distinct object URIs in the request
    queued: int  # of those, newly queued (the rest was already waiting)
    job_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_ingest_body(body: Any) -> list[str]:
    """Distinct object URIs, in order, from an S3 event notification or a URI list."""
    uris: list[str] = []
    if isinstance(body, list):
        uris = [_uri_item(item) for item in body]
    elif isinstance(body, dict) and isinstance(body.get("uris"), list):
        uris = [_uri_item(item) for item in body["uris"]]
    elif isinstance(body, dict) and isinstance(body.get("Records"), list):
        for record in body["Records"]:
            uri = _record_uri(record)
            if uri is not None:
                uris.append(uri)
    elif isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        return []  # AWS checks the endpoint with this when notifications are set up
    else:
        raise InvalidRequest(
            'body must be an S3 event notification ({"Records": [...]}), a list of '
            's3:// URIs, or {"uris": [...]}'
        )
    distinct = list(dict.fromkeys(uris))
    if len(distinct) > MAX_URIS:
        raise InvalidRequest(f"at most {MAX_URIS} objects per request")
    for uri in distinct:
        try:
            parse_object_uri(uri)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    return distinct


def _uri_item(item: Any) -> str:
    if not isinstance(item, str) or not item.startswith(SCHEME):
        raise InvalidRequest(f"not an s3:// object URI: {str(item)[:200]!r}")
    return item


def _record_uri(record: Any) -> str | None:
    if not isinstance(record, dict):
        raise InvalidRequest("each record must be an object")
    event = str(record.get("eventName", ""))
    if not event.startswith(
        ("ObjectCreated", "ObjectRemoved", "s3:ObjectCreated", "s3:ObjectRemoved")
    ):
        return None  # other notifications (replication, lifecycle, ...) are not ours
    try:
        bucket = record["s3"]["bucket"]["name"]
        key = record["s3"]["object"]["key"]
    except (KeyError, TypeError):
        raise InvalidRequest("a record lacks s3.bucket.name or s3.object.key") from None
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise InvalidRequest("s3.bucket.name and s3.object.key must be non-empty strings")
    # Keys in notifications are URL-encoded, spaces as "+".
    return f"{SCHEME}{bucket}/{unquote_plus(key)}"


def ingest_objects(ctx: ServiceContext, uris: Sequence[str]) -> IndexReport:
    """Bring these objects up to date in the index (the body of a queued ingest)."""
    from image_search_service.services.buckets import index_objects

    keys = models_to_index(ctx, "auto")
    report = IndexReport(models=list(keys))
    specs = [ctx.spec(k) for k in keys]
    for key in keys:
        ctx.ensure_collection(key)
    if index_objects(ctx, uris, specs=specs, report=report):
        for spec in specs:
            ctx.store.optimize(spec.collection)
    logger.info(
        "ingested %d objects: indexed %d, skipped %d, failed %d, missing %d",
        len(uris),
        report.indexed,
        report.skipped,
        report.failed,
        report.missing,
    )
    return report


class InProcessIngest:
    """One background thread running ingests in arrival order. URIs already waiting
    are not queued twice (a redelivered event while the first is still queued)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, uris: Sequence[str]) -> int:
        with self._lock:
            todo = [u for u in uris if u not in self._waiting]
            self._waiting.update(todo)
        if todo:
            self._pool.submit(self._run, todo)
        return len(todo)

    def _run(self, uris: list[str]) -> None:
        with self._lock:
            self._waiting.difference_update(uris)
        try:
            ingest_objects(self.ctx, uris)
        except ServiceError as exc:
            logger.error("ingest of %d objects failed: %s", len(uris), exc.detail)
        except Exception:
            logger.exception("ingest of %d objects failed", len(uris))

    def drain(self) -> None:
        """Wait for everything submitted so far (tests, shutdown)."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)


def submit_ingest(
    ctx: ServiceContext, uris: Sequence[str], *, in_process: InProcessIngest
) -> IngestSubmission:
    """Queue indexing work for ``uris``: an RQ job whose id is derived from the URIs (a
    redelivery while it waits is not queued again), or the in-process thread."""
    if not uris:
        return IngestSubmission(
            runner=choose_runner(ctx, "auto")[0], accepted=0, queued=0, job_id=None
        )
    runner, _note = choose_runner(ctx, "auto")
    if runner == "in-process":
        queued = in_process.submit(uris)
        return IngestSubmission(runner="in-process", accepted=len(uris), queued=queued, job_id=None)
    from image_search_service.jobs.queue import enqueue_ingest

    assert ctx.settings.redis_url
    job_id = "ingest-" + hashlib.sha256("\n".join(sorted(uris)).encode()).hexdigest()[:32]
    queued = enqueue_ingest(ctx.settings.redis_url, list(uris), job_id=job_id)
    return IngestSubmission(
        runner="rq", accepted=len(uris), queued=len(uris) if queued else 0, job_id=job_id
    )
