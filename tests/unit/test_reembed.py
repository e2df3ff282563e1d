"""Re-embedding logic that needs no services: retry policy, batching, which errors are
transient, the in-process runner's retry loop (with a stub job body), small helpers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from sqlalchemy.exc import OperationalError

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.errors import (
    CollectionMissing,
    ConfigError,
    DatabaseUnavailable,
    ModelMismatch,
    VectorStoreLocked,
    VectorStoreUnavailable,
)
from image_search_service.db.repository import Coverage
from image_search_service.jobs.queue import redact
from image_search_service.jobs.retry import RetryPolicy
from image_search_service.jobs.worker import check_worker_settings
from image_search_service.services.reembed.batch import BatchResult, is_transient
from image_search_service.services.reembed.progress import ModelProgress, _default_target
from image_search_service.services.reembed.runner import run_in_process


class TestRetryPolicy:
    def test_delays_follow_the_intervals_and_repeat_the_last(self) -> None:
        policy = RetryPolicy(max_retries=4, intervals=(1, 5))
        assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 5, 5, 5]

    def test_rq_retry_carries_the_same_policy(self) -> None:
        retry = RetryPolicy(max_retries=3, intervals=(10, 60, 300)).for_rq()
        assert (retry.max, retry.intervals) == (3, [10, 60, 300])


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (VectorStoreUnavailable("qdrant down"), True),
        (VectorStoreLocked("held by pid 1"), True),
        (DatabaseUnavailable("db down"), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (ConnectionResetError("reset"), True),
        (ModelMismatch("other model"), False),
        (CollectionMissing("gone"), False),
        (ValueError("bug"), False),
    ],
)
def test_only_outages_are_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_chunked_keeps_order_and_sizes() -> None:
    ids = [uuid4() for _ in range(7)]
    assert chunked(ids, 3) == [ids[0:3], ids[3:6], ids[6:7]]
    assert chunked([], 3) == []
    with pytest.raises(ValueError, match="at least 1"):
        chunked(ids, 0)


@dataclass
class _Store:
    optimized: list[str] = field(default_factory=list)

    def optimize(self, name: str) -> None:
        self.optimized.append(name)


@dataclass
class _Spec:
    collection: str = "image_assets_siglip"


@dataclass
class _Ctx:
    store: _Store = field(default_factory=_Store)

    def spec(self, key: str) -> _Spec:
        return _Spec()


@dataclass
class _Body:
    """A job body failing with ``errors`` in turn, then succeeding."""

    errors: list[BaseException]
    calls: list[tuple[int, bool]] = field(default_factory=list)

    def __call__(
        self,
        ctx: Any,
        key: ModelKey,
        ids: Sequence[UUID],
        *,
        force: bool,
        final_attempt: bool,
        on_progress: Any,
    ) -> BatchResult:
        self.calls.append((len(ids), final_attempt))
        if self.errors:
            raise self.errors.pop(0)
        return BatchResult(model=key, requested=len(ids), done=len(ids))


def _run(body: _Body, count: int = 5, **kwargs: Any) -> Any:
    ctx = _Ctx()
    report = run_in_process(
        cast(ServiceContext, ctx),
        "siglip",
        [uuid4() for _ in range(count)],
        job_size=2,
        policy=RetryPolicy(max_retries=3, intervals=(0,)),
        batch_fn=body,
        **kwargs,
    )
    return report, ctx


class TestInProcessRunner:
    def test_transient_errors_are_retried_and_the_run_completes(self) -> None:
        body = _Body([VectorStoreUnavailable("blip"), OperationalError("x", {}, Exception())])
        report, ctx = _run(body)
        assert (report.done, report.jobs, report.retries, report.aborted) == (5, 3, 2, None)
        assert body.calls[:3] == [(2, False), (2, False), (2, False)]
        assert ctx.store.optimized == ["image_assets_siglip"]  # indexes built once, at the end

    def test_the_last_attempt_is_flagged_and_a_lasting_outage_stops_the_run(self) -> None:
        body = _Body([DatabaseUnavailable("down")] * 4)
        report, ctx = _run(body)
        assert [final for _, final in body.calls] == [False, False, False, True]
        assert report.retries == 3
        assert report.jobs == 0
        assert report.done == 0
        assert report.aborted == "DatabaseUnavailable: down"
        assert ctx.store.optimized == []

    def test_a_permanent_error_is_not_retried(self) -> None:
        body = _Body([ModelMismatch("collection holds another model")])
        report, _ = _run(body)
        assert len(body.calls) == 1
        assert report.retries == 0
        assert report.aborted is not None
        assert report.aborted.startswith("ModelMismatch")

    def test_a_stop_request_ends_the_run_between_jobs(self) -> None:
        stop = threading.Event()
        stop.set()
        report, _ = _run(_Body([]), stop=stop)
        assert (report.jobs, report.aborted) == (0, "stopped on request")


def test_default_target_is_the_collection_with_work_left() -> None:
    def progress(key: ModelKey, exists: bool | None, pending: int) -> ModelProgress:
        cov = Coverage(
            model=key, present=pending, searchable=pending, done=0, failed=0, done_searchable=0
        )
        return ModelProgress(
            model=key,
            collection=key,
            model_name="m",
            counts=cov,
            rate=0.0,
            last_activity=None,
            collection_exists=exists,
        )

    def models(
        clip: tuple[bool | None, int], siglip: tuple[bool | None, int]
    ) -> dict[ModelKey, ModelProgress]:
        return {"clip": progress("clip", *clip), "siglip": progress("siglip", *siglip)}

    assert _default_target(models((True, 0), (True, 40))) == "siglip"
    assert _default_target(models((True, 3), (False, 40))) == "clip"  # no SigLIP collection
    assert _default_target(models((True, 0), (True, 0))) == "siglip"  # ties: the candidate
    assert _default_target(models((None, 5), (None, 2))) == "clip"  # store unknown


def test_redact_hides_the_password_only() -> None:
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("redis://user:pw@host/1") == "redis://user:***@host/1"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_worker_settings_are_refused_with_the_variable_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REDIS_URL", "QDRANT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        check_worker_settings(Settings(_env_file=None))
    with pytest.raises(ConfigError, match="QDRANT_URL"):
        check_worker_settings(Settings(redis_url="redis://r:6379/0", _env_file=None))
    check_worker_settings(
        Settings(redis_url="redis://r:6379/0", qdrant_url="http://q:6333", _env_file=None)
    )
