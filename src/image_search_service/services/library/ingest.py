"""Ingest on arrival: S3 event notifications (or lists of URIs) become indexing work.

The body is either the JSON an S3-compatible store sends for its notifications
(``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": ...},
"object": {"key": ...}}}]}``, as AWS, MinIO and others send), a JSON list of
``s3://bucket/key`` URIs, or ``{"uris": [...]}``.

Created and removed events are treated alike: the work is "bring these objects up to
date" (:func:`buckets.index_objects` asks the bucket for each object's state
now), so a redelivered, duplicated or out-of-order event does no harm, and an object
created and deleted again before the work runs ends up missing, as it should.
The work goes to RQ when ``REDIS_URL`` (and a shared vector store) are configured,
otherwise to one background thread of this process.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from image_search_service.context import ServiceContext
from image_search_service.core.errors import InvalidRequest
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.process import job_context
from image_search_service.jobs.queue import (
    choose_runner,
    connect,
    enqueue_many,
    is_waiting,
    job_data,
    work_queue,
)
from image_search_service.services.library.buckets import index_objects
from image_search_service.services.library.indexing import IndexReport, models_to_index
from image_search_service.services.library.schemas import (
    INGEST_BODY,
    IndexReportOut,
    S3Notification,
    S3TestEvent,
    UriList,
)

logger = logging.getLogger(__name__)

MAX_URIS = 1000


@dataclass(frozen=True)
class IngestSubmission:
    runner: Literal["rq", "in-process"]
    accepted: int  # distinct object URIs in the request
    queued: int  # of those, newly queued (the rest was already waiting)
    job_id: str | None


def parse_ingest_body(body: Any) -> list[str]:
    """Distinct object URIs, in order, from an S3 event notification or a URI list."""
    try:
        parsed = INGEST_BODY.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(
            'body must be an S3 event notification ({"Records": [...]}), a list of '
            f's3:// object URIs, or {{"uris": [...]}} ({where}: {first["msg"]})'
        ) from None
    if isinstance(parsed, S3TestEvent):
        return []  # AWS checks the endpoint with this when notifications are set up
    if isinstance(parsed, S3Notification):
        uris = [uri for record in parsed.Records if (uri := record.uri()) is not None]
    else:
        uris = parsed.uris if isinstance(parsed, UriList) else parsed
    distinct = list(dict.fromkeys(uris))
    if len(distinct) > MAX_URIS:
        raise InvalidRequest(f"at most {MAX_URIS} objects per request")
    return distinct


def ingest_objects(ctx: ServiceContext, uris: Sequence[str]) -> IndexReport:
    """Bring these objects up to date in the index (the body of a queued ingest)."""
    ctx.disk.check(f"ingest {len(uris)} objects")
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


def ingest_objects_job(uris: list[str]) -> dict[str, Any]:
    """The RQ job: :func:`ingest_objects` with this process's context."""
    report = ingest_objects(job_context(), uris)
    # RQ keeps a job's result in Redis: a summary, not every failure.
    report.failures = report.failures[:20]
    report.unsupported_files = report.unsupported_files[:20]
    return IndexReportOut.model_validate(report).model_dump(mode="json")


INGEST_JOB = f"{__name__}.{ingest_objects_job.__qualname__}"
INGEST = "ingest"  # the dispatcher's job kind


def submit_ingest(
    ctx: ServiceContext, uris: Sequence[str], *, dispatcher: Dispatcher
) -> IngestSubmission:
    """Queue indexing work for ``uris`` under a key derived from the URIs, so a
    redelivery while the first is still waiting is not queued again: an RQ job, or a job
    on this process's dispatcher (kept to the end when the server shuts down: the
    notification was acknowledged)."""
    runner, _note = choose_runner(ctx.settings)
    if not uris:
        return IngestSubmission(runner=runner, accepted=0, queued=0, job_id=None)
    job_id = "ingest-" + hashlib.sha256("\n".join(sorted(uris)).encode()).hexdigest()[:32]
    if runner == "in-process":
        # Refused before it is acknowledged: the notifier delivers it again later.
        ctx.disk.check(f"ingest {len(uris)} objects")
        todo = list(uris)
        _job, new = dispatcher.submit(
            INGEST,
            lambda _control: ingest_objects(ctx, todo),
            key=job_id,
            description=f"ingest of {len(todo)} objects",
            keep_on_close=True,
        )
        return IngestSubmission(
            runner="in-process", accepted=len(uris), queued=len(uris) if new else 0, job_id=None
        )
    assert ctx.settings.redis_url
    connection = connect(ctx.settings.redis_url)
    try:
        if is_waiting(connection, job_id):
            return IngestSubmission(runner="rq", accepted=len(uris), queued=0, job_id=job_id)
        enqueue_many(
            work_queue(connection),
            [
                job_data(
                    INGEST_JOB,
                    (list(uris),),
                    job_id=job_id,
                    description=f"ingest {len(uris)} objects",
                )
            ],
        )
    finally:
        connection.close()
    return IngestSubmission(runner="rq", accepted=len(uris), queued=len(uris), job_id=job_id)
