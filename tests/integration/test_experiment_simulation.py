"""Simulated users on pictures whose content is known: the experiment must find the
better model, and interleaving must find it with fewer searches than A/B.

The library and the click model are :mod:`image_search_service.demo.simulation`'s:
held-out synthetic pictures shaped like panoramas and portraits (4.5:1), where the two
shipped demo models really differ (demo-clip centre-crops, demo-siglip squashes). On
the quality tests' own proportions (up to 3:1) they are within a point or two of each
other and no experiment of a few thousand searches tells them apart (docs/rollout.md).
Searches go through the real router, search service, experiment log and report (no
HTTP); the seed is fixed and nothing is timed.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator

import pytest

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.demo.simulation import (
    QUERIES,
    ClickModel,
    query_label,
    write_panoramas,
)
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.rollout.report import ExperimentReport, experiment_report
from image_search_service.services.rollout.router import EmbeddingRouter
from image_search_service.services.search.log import SearchLog
from image_search_service.services.search.service import (
    SearchOptions,
    SearchOutcome,
    SearchService,
    answer,
)
from tests.factories import demo_models_settings

PICTURES = 200
ASPECT = 4.5
SEED = 2026
CLICKS = ClickModel(examine=0.8, click_relevant=0.6, click_other=0.02)
RESULTS = 10
AB_STEP, AB_MAX = 100, 4000
IL_STEP, IL_MAX = 25, 1000
USERS = [f"sim-user-{i}" for i in range(5000)]


class World:
    def __init__(self, ctx: ServiceContext, labels: dict[str, frozenset[str]]) -> None:
        self.ctx = ctx
        self.labels = labels
        self.search = SearchService(ctx)
        self.log = SearchLog(ctx, background=False)

    def warm(self) -> None:
        """The 40 queries encoded once per model in one batch (a forward pass per text
        would be most of this test's time)."""
        for model in MODEL_KEYS:
            self.search.text_cache.warm(self.ctx.encoder(model), list(QUERIES))

    def router(self, **flags: int) -> EmbeddingRouter:
        settings = self.ctx.settings.model_copy(update=flags)
        return EmbeddingRouter(dataclasses.replace(self.ctx, settings=settings))

    def simulate(self, router: EmbeddingRouter, searches: int, rng: random.Random) -> None:
        # The whole ranking, as the click model assumes: no relevance floor cutting it.
        options = SearchOptions(limit=RESULTS, min_score=-1.0)
        for _ in range(searches):
            user = rng.choice(USERS)
            query = rng.choice(QUERIES)
            decision = router.route(user)

            def run(model: ModelKey, opts: SearchOptions, q: str = query) -> SearchOutcome:
                return self.search.search_text(q, model=model, options=opts)

            outcome = answer(decision, run, options, kind="text", query=query)
            search_id = uuid.uuid4()
            self.log.record(
                search_id=search_id,
                decision=decision,
                outcome=outcome,
                kind="text",
                latency_ms=outcome.took_ms,
            )
            label = query_label(query)
            ranks = CLICKS.clicks([label in self.labels[h.path] for h in outcome.results], rng)
            clicked = [(rank, outcome.results[rank - 1].asset_id) for rank in ranks]
            if clicked:
                with self.ctx.transaction() as session:
                    for rank, asset_id in clicked:
                        self.log.record_event(
                            session,
                            search_id=search_id,
                            asset_id=asset_id,
                            type_="click",
                            rank=rank,
                        )

    def report(self) -> ExperimentReport:
        with self.ctx.transaction() as session:
            return experiment_report(session, self.ctx.settings)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("simulation")
    labels = write_panoramas(root / "photos", PICTURES, seed=SEED, aspect=ASPECT)
    ctx = open_context(demo_models_settings(root / "data"), encoders=EncoderRegistry(device="cpu"))
    report = index_paths(ctx, [root / "photos"], model_keys=list(MODEL_KEYS))
    assert report.indexed == PICTURES
    world = World(ctx, labels)
    world.warm()
    yield world
    ctx.close()


def test_both_designs_find_the_better_model_and_interleaving_needs_fewer_searches(
    world: World,
) -> None:
    rng = random.Random(SEED)
    # A/B: half the users on each model.
    ab_router = world.router(siglip_rollout_percentage=50, interleave_percentage=0)
    ab_searches = 0
    while ab_searches < AB_MAX:
        world.simulate(ab_router, AB_STEP, rng)
        ab_searches += AB_STEP
        ctr = world.report().comparisons[0]
        if ctr.significant:
            break
    ab = world.report()
    ctr = ab.comparisons[0]
    assert ctr.metric == "ctr"
    assert ctr.p_value < 0.05, (ab_searches, ctr)
    assert ctr.baseline > ctr.candidate  # clip, the better model here, ranks first
    assert ab.recommendation.action == "roll back", ab.recommendation.text

    # Interleaving: every user gets both models merged (a separate arm of the same log).
    il_router = world.router(siglip_rollout_percentage=0, interleave_percentage=100)
    il_searches = 0
    while il_searches < IL_MAX:
        world.simulate(il_router, IL_STEP, rng)
        il_searches += IL_STEP
        if world.report().interleaving.significant:
            break
    il = world.report().interleaving
    assert il.p_value < 0.05, (il_searches, il)
    assert il.losses > il.wins  # the candidate loses: clip is better
    assert il.searches == il_searches
    # This seed (sequential tests): A/B 1,200 searches (CTR p=0.042), interleaving 100
    # (p=0.016, 21 wins, 50 losses, 26 ties); docs/rollout.md has these and the power.
    assert il_searches < ab_searches, (il_searches, ab_searches)
