"""Settings: one class, read from the environment (and an optional .env file).

Unset ``DATABASE_URL`` / ``QDRANT_URL`` / ``REDIS_URL`` mean the embedded defaults
(SQLite file, Qdrant Edge shards under ``DATA_DIR``, in-process job runner).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from image_search_service.core.errors import ConfigError

ModelKey = Literal["clip", "siglip"]
MODEL_KEYS: tuple[ModelKey, ...] = ("clip", "siglip")
# The arm of the experiment that answered a search: one model, or both interleaved.
Arm = Literal["clip", "siglip", "interleaved"]
INTERLEAVED: Arm = "interleaved"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    redis_url: str | None = None
    model_cache_dir: Path | None = None
    device: str = "auto"

    clip_model_name: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    clip_embedding_dim: int = Field(512, gt=0)
    qdrant_collection: str = "image_assets"

    siglip_model_name: str = "ViT-B-16-SigLIP"
    siglip_pretrained: str = "webli"
    siglip_embedding_dim: int = Field(768, gt=0)
    siglip_collection: str = "image_assets_siglip"

    use_siglip: bool = False
    siglip_rollout_percentage: int = Field(0, ge=0, le=100)

    batch_size: int = Field(16, ge=1, le=1024)
    decode_workers: int = Field(2, ge=1, le=64)
    max_image_pixels: int = Field(120_000_000, ge=1)
    search_oversampling: float = Field(2.0, ge=1.0, le=16.0)
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construct: int = Field(100, ge=4, le=1000)
    embedded_lock_timeout_s: float = Field(10.0, ge=0)
    preload_models: bool = False
    # 0 = torch's default (all cores); 1 gives steadier latency on a busy shared box.
    torch_threads: int = Field(0, ge=0, le=256)

    # HTTP API: without API_KEY, data-changing and admin endpoints are open and `serve`
    # binds to 127.0.0.1 unless told otherwise.
    api_key: str | None = None
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Share of the library (0..1) the candidate model must cover before the router lets it
    # serve; unset means "every asset the baseline covers".
    min_rollout_coverage: float | None = Field(None, ge=0.0, le=1.0)
    rollout_coverage_ttl_s: float = Field(5.0, ge=0.0, le=3600.0)
    # Share of users (by bucket, counted from the top: buckets >= 100 - this) whose
    # searches merge both models' results by team draft. Disjoint from the SigLIP share.
    interleave_percentage: int = Field(0, ge=0, le=100)

    # The experiment log: every search and its click events, kept this many days.
    experiment_recording: bool = True
    experiment_retention_days: int = Field(90, ge=1, le=3650)
    # A text search by the same user within this many seconds of a search without a
    # click marks that search as reformulated.
    experiment_reformulation_window_s: float = Field(60.0, gt=0, le=3600.0)
    experiment_max_events_per_search: int = Field(50, ge=1, le=10_000)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value != "auto" and not (value == "cpu" or value.startswith(("cuda", "mps"))):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

    @field_validator(
        "clip_model_name", "siglip_model_name", "qdrant_collection", "siglip_collection"
    )
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("database_url", "qdrant_url", "redis_url", "qdrant_api_key", "api_key")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _distinct_collections(self) -> Settings:
        if self.qdrant_collection == self.siglip_collection:
            raise ValueError(
                "QDRANT_COLLECTION and SIGLIP_COLLECTION must name different collections"
            )
        return self

    @model_validator(mode="after")
    def _disjoint_shares(self) -> Settings:
        if self.siglip_rollout_percentage + self.interleave_percentage > 100:
            raise ValueError(
                "SIGLIP_ROLLOUT_PERCENTAGE + INTERLEAVE_PERCENTAGE must be at most 100 "
                "(the two shares of users are disjoint)"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'metadata.sqlite3').resolve()}"

    @property
    def qdrant_dir(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into a message naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            problems.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
