"""Two writers marking the same photos embedded (an index run and a re-embed job) both
succeed, on SQLite and PostgreSQL: the mark is one upsert, never a select then insert."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetEmbedding, EmbeddingState
from image_search_service.db.session import session_scope
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.reembed.batch import run_batch
from tests.factories import write_jpeg


@pytest.fixture(params=["sqlite", "postgresql"])
def store_ctx(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    encoders: EncoderRegistry,
) -> Iterator[ServiceContext]:
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    context = open_context(make_settings(**overrides), encoders=encoders)
    yield context
    context.close()


def _add_assets(ctx: ServiceContext, tmp_path: Path, count: int) -> list[Any]:
    paths = [
        write_jpeg(tmp_path / "photos" / f"p{i}.jpg", seed=i, colour=(40 * i % 256, 90, 160))
        for i in range(count)
    ]
    index_paths(ctx, paths, model_keys=["clip"])
    with ctx.transaction() as session:
        return [repo.asset_by_path(session, str(p.resolve())) for p in paths]


def _insert_meanwhile(ctx: ServiceContext, do: Callable[[], object]) -> Callable[[], None]:
    """Run ``do`` (another writer, on its own connection) just before this process's
    next INSERT into asset_embeddings: the moment a select-then-insert loses the race.
    Returns a function that removes the hook."""
    fired = threading.Event()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if fired.is_set() or not statement.lstrip().upper().startswith("INSERT INTO ASSET_EMB"):
            return
        fired.set()
        do()

    event.listen(ctx.engine, "before_cursor_execute", before)
    return lambda: event.remove(ctx.engine, "before_cursor_execute", before)


def _states(ctx: ServiceContext, spec: ModelSpec) -> dict[Any, tuple[EmbeddingState, int]]:
    with ctx.transaction() as session:
        rows = session.scalars(select(AssetEmbedding).where(AssetEmbedding.model_key == spec.key))
        return {r.asset_id: (r.state, r.attempts) for r in rows}


def test_marking_embedded_while_another_writer_marks_the_same_rows_succeeds(
    store_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = store_ctx
    assets = _add_assets(ctx, tmp_path, 3)
    spec = ctx.spec("siglip")
    ids = [a.id for a in assets]

    def other_writer() -> None:
        with session_scope(ctx.session_factory) as other:
            repo.mark_embedded(other, ids[:2], spec)

    remove = _insert_meanwhile(ctx, other_writer)
    try:
        with ctx.transaction() as session:
            repo.mark_embedded(session, ids, spec)
    finally:
        remove()
    states = _states(ctx, spec)
    assert {i: s for i, (s, _) in states.items()} == dict.fromkeys(ids, EmbeddingState.DONE)
    assert [states[i][1] for i in ids] == [2, 2, 1]  # both writers counted


def test_a_failure_never_undoes_another_writers_success(
    store_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = store_ctx
    (asset,) = _add_assets(ctx, tmp_path, 1)
    spec = ctx.spec("siglip")
    with ctx.transaction() as session:
        repo.mark_embedded(session, [asset.id], spec)
    with ctx.transaction() as session:
        repo.mark_embedding_failed(session, asset.id, spec, "decode failed")
    assert _states(ctx, spec)[asset.id][0] == EmbeddingState.DONE
    with ctx.transaction() as session:  # and on an asset no one finished, it is recorded
        repo.clear_embeddings(session, asset.id)
        repo.mark_embedding_failed(session, asset.id, spec, "decode failed")
    assert _states(ctx, spec)[asset.id][0] == EmbeddingState.FAILED


def test_marks_for_a_deleted_asset_are_dropped(store_ctx: ServiceContext, tmp_path: Path) -> None:
    ctx = store_ctx
    (asset,) = _add_assets(ctx, tmp_path, 1)
    with ctx.transaction() as session:
        found = repo.get_asset(session, asset.id)
        assert found is not None
        repo.delete_asset(session, found)
    with ctx.transaction() as session:  # no foreign-key error, nothing written
        repo.mark_embedded(session, [asset.id], ctx.spec("siglip"))
        repo.mark_embedding_failed(session, asset.id, ctx.spec("clip"), "gone")
    assert _states(ctx, ctx.spec("siglip")) == {}


def test_a_reembed_and_an_index_run_on_the_same_photos_both_succeed(
    store_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = store_ctx
    assets = _add_assets(ctx, tmp_path, 6)
    ids = [a.id for a in assets]
    spec = ctx.spec("siglip")
    index_paths(ctx, [], model_keys=["siglip"])  # the collection exists
    # The index run embeds the same photos between the job's read and its write.
    remove = _insert_meanwhile(
        ctx, lambda: index_paths(ctx, [tmp_path / "photos"], model_keys=["siglip"]).failures
    )
    try:
        result = run_batch(ctx, "siglip", ids)
    finally:
        remove()
    assert result.failed == 0
    assert result.done == len(ids)
    coverage = _coverage(ctx, spec)
    assert (coverage.done_searchable, coverage.searchable, coverage.pending) == (6, 6, 0)
    assert ctx.store.collection_info(spec.collection).points == 6  # type: ignore[union-attr]


def _coverage(ctx: ServiceContext, spec: ModelSpec) -> repo.Coverage:
    with ctx.transaction() as session:
        return repo.coverage(session, spec)
