"""Search quality on the held-out set: P@10 and recall@10, per model, for each space alone
and fused.

The set (demo/heldout.py) is drawn independently of the demo models' training
generator, with captions written in other words than the queries use. Queries are
"a red circle"-style labels; a photo is relevant when that shape is drawn in it.

Rows:
- image: the image space alone (the text embedding of the query against photo vectors)
- image+ensemble: the same, the query embedded through a prompt ensemble (TEMPLATES)
- full-text: caption/title/tag words alone (FTS5 bm25)
- caption space: the caption text space alone
- image+full-text: what search does without a caption space (RRF)
- image+caption rrf / wsum: the two embedding spaces fused, without full text
- search rrf / weighted: SearchService.search_text with the caption space
  (CAPTION_FUSION; weighted at CAPTION_WEIGHT 0.5); "+fts" with CAPTION_FULL_TEXT=true
  (full-text matches fused as well)

The caption space here is the Ollama stand-in (demo/ollama_standin.py): word vectors
with a synonym table, NOT nomic-embed-text. Its rows measure the protocol and the
fusion plumbing; the figure for a real library needs a real Ollama (--ollama-url).

    python scripts/benchmark_quality.py [--photos 400] [--ollama-url http://127.0.0.1:11434]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from uuid import UUID

from image_search_service.captions.space import caption_collection, caption_embedder
from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db.models import Asset
from image_search_service.demo.heldout import write_heldout
from image_search_service.demo.ollama_standin import OllamaStandIn
from image_search_service.demo.synthetic import COLOURS, SHAPES
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.search.fusion import FusionMethod, fuse
from image_search_service.services.search.service import (
    SearchOptions,
    SearchService,
    caption_floor,
)
from image_search_service.vector.base import SearchFilter

K = 10
TEMPLATES = "a photo of {}.|a picture of {}|{}|a drawing of {}.|an image showing {}"
Ranker = Callable[[str], list[UUID]]


def demo_settings(data_dir: Path, ollama_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "_env_file": None,
        "data_dir": data_dir,
        "clip_model_name": "demo-clip",
        "clip_pretrained": "",
        "siglip_model_name": "demo-siglip",
        "siglip_pretrained": "",
        "batch_size": 32,
        # Ranking quality, not the floor: every query returns its top K.
        "clip_relevance_floor": -1.0,
        "siglip_relevance_floor": -1.0,
        "caption_embedder": "ollama",
        "ollama_url": ollama_url,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def with_settings(ctx: ServiceContext, **changes: object) -> ServiceContext:
    """The same open store and database, other settings (one embedded store opener)."""
    return dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=changes))


def rankers(ctx: ServiceContext, model: ModelKey) -> dict[str, Ranker]:
    plain = SearchService(with_settings(ctx, caption_embedder="off"))
    ensemble = SearchService(
        with_settings(ctx, **{f"{model}_prompt_templates": TEMPLATES.split("|")})
    )
    collection = ctx.spec(model).collection
    captions = caption_embedder(ctx.settings)
    assert captions is not None
    caption_spec = caption_collection(ctx.settings, captions)

    def image(service: SearchService) -> Ranker:
        def rank(query: str) -> list[UUID]:
            vector = service.text_vector(ctx.encoder(model), model, query)
            return [h.id for h in ctx.store.search(collection, vector, limit=K)]

        return rank

    def full_text(query: str) -> list[UUID]:
        with ctx.transaction() as session:
            return meta_repo.text_matches(session, query, limit=K)

    def caption_space(query: str) -> list[UUID]:
        vector = captions.embed_query(query)
        hits = ctx.store.search(
            caption_spec.name, vector, limit=K, min_score=ctx.settings.caption_min_score
        )
        return [h.id for h in hits]

    def two_spaces(method: FusionMethod) -> Ranker:
        """Image and caption space fused without full text (fusion.py directly)."""

        def rank(query: str) -> list[UUID]:
            vector = plain.text_vector(ctx.encoder(model), model, query)
            visual = ctx.store.search(collection, vector, limit=100)
            caption = ctx.store.search(
                caption_spec.name,
                captions.embed_query(query),
                limit=200,
                min_score=ctx.settings.caption_min_score,
            )
            scored = ctx.store.search(
                collection,
                vector,
                limit=len(caption) or 1,
                search_filter=SearchFilter(include_ids=tuple(h.id for h in caption)),
            )
            scores = {h.id: h.score for h in [*scored, *visual]}
            hits = [(h.id, h.score) for h in caption]
            fused = fuse(
                visual=[h.id for h in visual],
                full_text=[],
                caption=hits,
                image_scores=scores,
                method=method,
                caption_floor=caption_floor(ctx.settings.caption_min_score, hits),
            )
            return [f.asset_id for f in fused[:K]]

        return rank

    def searched(service: SearchService) -> Ranker:
        def rank(query: str) -> list[UUID]:
            outcome = service.search_text(query, model=model, options=SearchOptions(limit=K))
            return [h.asset_id for h in outcome.results]

        return rank

    return {
        "image": image(plain),
        "image+ensemble": image(ensemble),
        "full-text": full_text,
        "caption space": caption_space,
        "image+full-text": searched(plain),
        "image+caption rrf": two_spaces("rrf"),
        "image+caption wsum": two_spaces("weighted"),
        "search rrf": searched(SearchService(with_settings(ctx, caption_fusion="rrf"))),
        "search weighted": searched(SearchService(with_settings(ctx, caption_fusion="weighted"))),
        "search rrf +fts": searched(
            SearchService(with_settings(ctx, caption_fusion="rrf", caption_full_text=True))
        ),
        "search wsum +fts": searched(
            SearchService(with_settings(ctx, caption_fusion="weighted", caption_full_text=True))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--ollama-url", help="a real Ollama (default: the stand-in)")
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = args.ollama_url or stack.enter_context(OllamaStandIn.running()).url
        photos = write_heldout(root / "photos", args.photos, seed=args.seed)
        ctx = open_context(
            demo_settings(root / "data", url), encoders=EncoderRegistry(device="cpu")
        )
        stack.callback(ctx.close)
        report = index_paths(ctx, [root / "photos"], model_keys=list(MODEL_KEYS))
        assert report.captions_pending == 0, report.captions_error
        with ctx.transaction() as session:
            ids = {Path(a.path).name: a.id for a in session.query(Asset)}
        labels = {ids[p.path.name]: p.labels for p in photos}
        queries = [f"{c} {s}" for c in COLOURS for s in SHAPES]
        queries = [q for q in queries if sum(q in ls for ls in labels.values()) >= 3]
        captioned = sum(p.caption is not None for p in photos)
        print(
            f"held-out set: {len(photos)} photos ({captioned} captioned, in other words), "
            f"{len(queries)} queries 'a <colour> <shape>' with >= 3 relevant photos; "
            f"caption space: {'Ollama at ' + url if args.ollama_url else 'the STAND-IN'}"
        )
        print(f"{'model':7} {'ranking':18} {'P@10':>6} {'R@10':>6}")
        for model in MODEL_KEYS:
            for name, rank in rankers(ctx, model).items():
                precision = recall = 0.0
                for query in queries:
                    found = rank(f"a {query}")
                    relevant = sum(query in ls for ls in labels.values())
                    hits = sum(query in labels.get(i, frozenset()) for i in found)
                    precision += hits / K
                    recall += hits / relevant
                n = len(queries)
                print(f"{model:7} {name:18} {precision / n:6.3f} {recall / n:6.3f}")


if __name__ == "__main__":
    main()
