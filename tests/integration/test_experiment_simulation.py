"""Simulated users on pictures whose content is known: the experiment must find the
better model, and interleaving must find it with fewer searches than A/B.

The library is held-out synthetic pictures (drawn with their own seed, never seen in
training) shaped like panoramas and portraits, 4.5:1: there the two shipped demo
models really differ, because demo-clip centre-crops (the shapes lie in the centred
square and keep their shape) while demo-siglip squashes the whole picture to a square
(a circle becomes a thin ellipse). On the quality tests' own proportions (up to 3:1)
the two models are within a point or two of each other: no experiment of a few
thousand searches tells them apart there (see docs/rollout.md).

Simulated users search for one of the 40 colour-shape labels and click by a
position-biased model: rank r (from 0) is looked at with probability 0.8^r, and a
looked-at result is clicked with probability 0.6 when it shows the label, 0.02 when
not. Searches go through the real router, search service, experiment log and report
(no HTTP); the seed is fixed and nothing is timed.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator

import pytest

from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.demo.synthetic import ALL_SPECS, file_stem, render_picture
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.context import ServiceContext, open_context
from image_search_service.services.embedding_router import EmbeddingRouter
from image_search_service.services.experiment import ExperimentReport, experiment_report
from image_search_service.services.indexing import index_paths
from image_search_service.services.search import (
    SearchOptions,
    SearchOutcome,
    SearchService,
    answer,
)
from image_search_service.services.search_log import SearchLog

PICTURES = 200
ASPECT = 4.5
SEED = 2026
EXAMINE = 0.8  # probability of looking at rank r is EXAMINE ** r
CLICK_RELEVANT = 0.6
CLICK_OTHER = 0.02
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
            texts = [f"a {spec.label}" for spec in ALL_SPECS]
            self.search.text_cache.warm(self.ctx.encoder(model), texts)

    def router(self, **flags: int) -> EmbeddingRouter:
        settings = self.ctx.settings.model_copy(update=flags)
        return EmbeddingRouter(dataclasses.replace(self.ctx, settings=settings))

    def simulate(self, router: EmbeddingRouter, searches: int, rng: random.Random) -> None:
        options = SearchOptions(limit=RESULTS)
        for _ in range(searches):
            user = rng.choice(USERS)
            label = rng.choice(ALL_SPECS).label
            query = f"a {label}"
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
            clicked = []
            for rank, hit in enumerate(outcome.results, start=1):
                relevant = label in self.labels[hit.path]
                looked = rng.random() < EXAMINE ** (rank - 1)
                if looked and rng.random() < (CLICK_RELEVANT if relevant else CLICK_OTHER):
                    clicked.append((rank, hit.asset_id))
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
    rng = random.Random(SEED)
    labels: dict[str, frozenset[str]] = {}
    (root / "photos").mkdir()
    for index in range(PICTURES):
        short = rng.randint(90, 140)
        size = (int(short * ASPECT), short) if rng.random() < 0.5 else (short, int(short * ASPECT))
        shapes = rng.sample(ALL_SPECS, 1 if rng.random() < 0.7 else 2)
        picture = render_picture(shapes, rng=rng, size=size)
        path = root / "photos" / f"{file_stem(index, picture)}.jpg"
        picture.image.save(path, "JPEG", quality=rng.randint(55, 95))
        labels[str(path.resolve())] = picture.labels
    settings = Settings(
        _env_file=None,
        data_dir=root / "data",
        clip_model_name="demo-clip",
        clip_pretrained="",
        siglip_model_name="demo-siglip",
        siglip_pretrained="",
        batch_size=32,
    )
    ctx = open_context(settings, encoders=EncoderRegistry(device="cpu"))
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
    # This seed: A/B 300 searches (CTR p=0.0497), interleaving 100 (sign test p=0.0154,
    # 24 wins, 45 losses, 21 ties); docs/rollout.md has these and the power estimates.
    assert il_searches < ab_searches, (il_searches, ab_searches)
