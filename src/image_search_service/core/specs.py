"""Model specs: which open_clip model fills which collection, and the two roles.

This is the one module that knows the roles: ``clip`` is the baseline (it always
serves, and indexing always fills it) and ``siglip`` the candidate (it serves only
where the router sends traffic and its collection covers the library). Everything
downstream takes a spec or :data:`BASELINE` / :data:`CANDIDATE`, never a literal key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_search_service.core.config import ModelKey, Settings

BASELINE: ModelKey = "clip"
CANDIDATE: ModelKey = "siglip"

DEMO_MODELS_DIR = Path(__file__).resolve().parent.parent / "demo_models"
DEMO_MODEL_NAMES = ("demo-clip", "demo-siglip")


@dataclass(frozen=True)
class ModelIdentity:
    """What a collection is stamped with, and what an encoder must match."""

    model_name: str
    pretrained: str
    dim: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(
            model_name=str(data["model_name"]),
            pretrained=str(data.get("pretrained") or ""),
            dim=int(data["dim"]),
        )

    def describe(self) -> str:
        tag = f" ({self.pretrained})" if self.pretrained else ""
        return f"{self.model_name}{tag}, {self.dim}-d"


@dataclass(frozen=True)
class ModelSpec:
    key: ModelKey
    model_name: str
    pretrained: str
    embedding_dim: int
    collection: str

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.model_name, self.pretrained, self.embedding_dim)

    @property
    def open_clip_name(self) -> str:
        """The name handed to open_clip: shipped demo names become ``local-dir:`` paths."""
        if self.model_name in DEMO_MODEL_NAMES:
            return f"local-dir:{DEMO_MODELS_DIR / self.model_name}"
        return self.model_name


def model_spec(settings: Settings, key: ModelKey) -> ModelSpec:
    if key == BASELINE:
        return ModelSpec(
            key=BASELINE,
            model_name=settings.clip_model_name,
            pretrained=settings.clip_pretrained,
            embedding_dim=settings.clip_embedding_dim,
            collection=settings.qdrant_collection,
        )
    return ModelSpec(
        key=CANDIDATE,
        model_name=settings.siglip_model_name,
        pretrained=settings.siglip_pretrained,
        embedding_dim=settings.siglip_embedding_dim,
        collection=settings.siglip_collection,
    )


def duplicate_threshold(settings: Settings, key: ModelKey) -> float:
    """The cosine at or above which two photos count as near-duplicates for this model
    (measured per model: docs/sources.md, Near-duplicates)."""
    if key == BASELINE:
        return settings.clip_duplicate_threshold
    return settings.siglip_duplicate_threshold


@dataclass(frozen=True)
class RelevanceFloor:
    """Where a text search's close matches end for one model: a cosine, or (for a model
    trained with a sigmoid loss) a calibrated match probability that the model's own
    logit scale and bias turn into a cosine."""

    cosine: float | None = None
    probability: float | None = None


# Per (model name, pretrained tag); how each was found: docs/configuration.md, "Relevance
# floor" (scripts/calibrate_floor.py measures one on a library).
RELEVANCE_FLOORS: dict[tuple[str, str], RelevanceFloor] = {
    ("demo-clip", ""): RelevanceFloor(cosine=0.57),
    ("demo-siglip", ""): RelevanceFloor(probability=0.5),
    ("ViT-B-32", "openai"): RelevanceFloor(cosine=0.22),
    ("ViT-B-16-SigLIP", "webli"): RelevanceFloor(probability=0.01),
}


def relevance_floor(settings: Settings, key: ModelKey) -> RelevanceFloor | None:
    """The model's floor: CLIP_/SIGLIP_RELEVANCE_FLOOR when set (-1: none), else the
    calibrated one of a known model; None for a model nobody calibrated."""
    configured = (
        settings.clip_relevance_floor if key == BASELINE else settings.siglip_relevance_floor
    )
    if configured is not None:
        return None if configured <= -1.0 else RelevanceFloor(cosine=configured)
    spec = model_spec(settings, key)
    return RELEVANCE_FLOORS.get((spec.model_name, spec.pretrained))
