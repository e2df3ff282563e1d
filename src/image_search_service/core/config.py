"""Settings: one class, read from the environment (and an optional .env file).

Unset ``DATABASE_URL`` / ``QDRANT_URL`` / ``REDIS_URL`` mean the embedded defaults
(SQLite file, Qdrant Edge shards under ``DATA_DIR``, in-process job runner).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_dir
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from image_search_service.core.errors import ConfigError

APP_NAME = "image-search"
ModelKey = Literal["clip", "siglip"]
MODEL_KEYS: tuple[ModelKey, ...] = ("clip", "siglip")
EncoderRuntime = Literal["onnx", "torch"]
EncoderPrecision = Literal["fp32", "int8"]
# Where JPEGs are decoded besides the CPU decoders (encoders/device_decode.py).
DeviceDecodeMode = Literal["auto", "off", "always"]
# Instruction-set classes of CPUs, for INT8 (see encoders/cpu.py).
CpuIsa = Literal[
    "avx512_vnni", "avx_vnni", "avx512", "avx2", "x86_64", "arm64_dotprod", "arm64", "other"
]
# The arm of the experiment that answered a search: one model, or both interleaved.
Arm = Literal["clip", "siglip", "interleaved"]
INTERLEAVED: Arm = "interleaved"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # The platform's per-user data folder (~/.local/share/image-search on Linux), so a
    # search from any folder finds the same library; containers set DATA_DIR=/data.
    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir(APP_NAME, appauthor=False)))
    database_url: str | None = None
    # SQLite: how long a write waits for another writer's lock before it fails (reads
    # never wait: WAL). Sized for the longest write transaction, an index batch.
    sqlite_busy_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    # Writes are refused (507) while DATA_DIR's filesystem has less than this free:
    # a full disk must never be found by a crash of the embedded vector store.
    min_free_disk_mb: int = Field(256, ge=0)
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

    # Near-duplicate groups: cosine at or above which two photos are "the same picture"
    # (re-save, resize, light crop). Measured per model, see docs/sources.md.
    clip_duplicate_threshold: float = Field(0.95, gt=0.0, le=1.0)
    siglip_duplicate_threshold: float = Field(0.95, gt=0.0, le=1.0)
    # Relevance floor (cosine) of text searches: below it a result is not a close match.
    # Unset = the model's calibrated floor (core/specs.py, docs/configuration.md); -1 = off.
    clip_relevance_floor: float | None = Field(None, ge=-1.0, le=1.0)
    siglip_relevance_floor: float | None = Field(None, ge=-1.0, le=1.0)

    use_siglip: bool = False
    siglip_rollout_percentage: int = Field(0, ge=0, le=100)

    # Which runtime runs the models: ONNX Runtime (exported once per model, cached under
    # MODEL_CACHE_DIR or DATA_DIR/models) or open_clip's PyTorch eager. See docs/performance.md
    # for the measurements behind the defaults.
    encoder_runtime: EncoderRuntime = "onnx"
    encoder_precision: EncoderPrecision = "int8"
    # The CPU class INT8 is quantized and verified for; unset = detected (encoders/cpu.py).
    # Read from the environment by the encoders; validated here so a typo stops start-up.
    onnx_cpu_isa: CpuIsa | None = None

    batch_size: int = Field(16, ge=1, le=1024)
    # 0 = chosen with the model threads for the core count (core/threads.py).
    decode_workers: int = Field(0, ge=0, le=64)
    # Decode and preprocess in this many worker processes instead of the threads; 0 =
    # threads, which scaled on the cores measured (docs/performance.md).
    decode_processes: int = Field(0, ge=0, le=64)
    # JPEGs also decoded on the models' GPU (nvJPEG), beside the CPU decoders: auto = when
    # the models run on a CUDA GPU that can; always = on the models' device even a CPU
    # (torchvision's decoder at full size: slower there, for comparisons); off = never.
    jpeg_device_decode: DeviceDecodeMode = "auto"
    # Objects downloaded at once from an S3 bucket while indexing it.
    s3_download_workers: int = Field(8, ge=1, le=64)
    max_image_pixels: int = Field(120_000_000, ge=1)
    search_oversampling: float = Field(2.0, ge=1.0, le=16.0)
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construct: int = Field(100, ge=4, le=1000)
    # Qdrant as a cluster (docs/qdrant-cluster.md), applied when a collection is created:
    # shards spread one collection over the nodes; each shard kept on this many nodes;
    # a write is acknowledged once this many copies have it (<= the replication factor).
    # A Qdrant server only: Qdrant Edge keeps one shard and says so once in the log.
    qdrant_shards: int = Field(1, ge=1, le=1024)
    qdrant_replication_factor: int = Field(1, ge=1, le=64)
    qdrant_write_consistency: int = Field(1, ge=1, le=64)
    # Full vectors and the HNSW graph on disk (memory-mapped), the INT8 copy kept in RAM:
    # for libraries larger than RAM. Payloads on disk is Qdrant's own default.
    qdrant_on_disk: bool = False
    qdrant_on_disk_payload: bool = True
    embedded_lock_timeout_s: float = Field(10.0, ge=0)
    preload_models: bool = False
    # Intra-op threads of the model runtime; 0 = one per core. 1 gives steadier latency
    # on a busy shared box. TORCH_THREADS is the older name, still read when this is unset.
    model_threads: int = Field(0, ge=0, le=256)
    torch_threads: int = Field(0, ge=0, le=256)

    # HTTP API credentials (api/auth.py): API_KEY may do everything, READ_API_KEY search and
    # read; each one key or a comma-separated list (rotation: old and new side by side).
    # With any key (here or from `image-search keys`), every route but /health needs one;
    # without, the API is open and `serve` listens on loopback only.
    api_key: str | None = None
    read_api_key: str | None = None
    # Signs session cookies and photo URLs; unset = a random secret kept in DATA_DIR.
    signing_secret: str | None = None
    session_ttl_s: int = Field(12 * 3600, ge=60, le=30 * 24 * 3600)
    signed_url_ttl_s: int = Field(3600, ge=10, le=7 * 24 * 3600)
    # Wrong credentials from one address: at most this many per window, then 429.
    auth_max_failures: int = Field(10, ge=1, le=10_000)
    auth_failure_window_s: float = Field(60.0, ge=1.0, le=86_400.0)
    # Host names (Host header, port ignored) the API answers; `*.example.com` patterns,
    # `*` for any. `serve --host ADDR` adds ADDR. Guards against DNS rebinding.
    allowed_hosts: str = "localhost,127.0.0.1,::1"
    # Origins of other web pages allowed to send writes (e.g. https://photos.example).
    trusted_origins: str = ""
    # uvicorn limits, set by `image-search serve`.
    max_connections: int = Field(100, ge=1, le=100_000)
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    keep_alive_timeout_s: int = Field(5, ge=1, le=300)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # POST /api/v1/embed/batch: at most this many files and this many bytes in all.
    embed_max_batch_files: int = Field(32, ge=1, le=1024)
    embed_max_batch_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # Share of the library (0..1) the candidate model must cover before the router lets it
    # serve; unset means "every asset the baseline covers".
    min_rollout_coverage: float | None = Field(None, ge=0.0, le=1.0)
    rollout_coverage_ttl_s: float = Field(5.0, ge=0.0, le=3600.0)
    # How often a process re-reads the live rollout flags from the metadata DB (a change
    # made with PUT /api/v1/admin/rollout reaches every process within this time).
    rollout_refresh_s: float = Field(2.0, ge=0.0, le=300.0)
    # Roll the candidate back (live flags to 0, source "guardrail") as soon as a
    # guardrail (p95 latency, zero-result rate) is breached; off: the report only says so.
    rollout_auto_guard: bool = False
    # An opt-in staged rollout, e.g. "1,5,25,50,100": once a SigLIP share is set, it moves
    # to the next step only when the report says raise and no guardrail is breached (each
    # step in the history as "schedule: ..."). Empty: the operator moves it.
    rollout_schedule: str = ""

    # Folders (comma-separated) the server indexes at start and then watches: photos
    # added, changed or deleted there are searchable or gone within seconds.
    library_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Changes are gathered for this long after the last one before a re-index starts.
    library_debounce_ms: int = Field(1000, ge=10, le=600_000)
    # Several server processes on one database: the one holding the watcher lock watches
    # and repairs uploads; the others try to take it this often (the takeover time).
    watcher_lock_retry_s: float = Field(5.0, gt=0, le=300.0)

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

    # The caption space (docs/metadata.md): each photo's caption, title and tags embedded
    # by Ollama beside its image, searched and fused with the image ranking. Off unless
    # CAPTION_EMBEDDER=ollama; a photo whose caption cannot be embedded is still indexed.
    caption_embedder: Literal["off", "ollama"] = "off"
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_embed_model: str = "nomic-embed-text"
    ollama_embed_dim: int = Field(768, gt=0)
    # A first call loads the model (seconds on a CPU); later calls take milliseconds.
    ollama_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    ollama_batch_size: int = Field(32, ge=1, le=1024)
    # A search waits this long for its query's embedding, then answers without the
    # caption space (image and full text) rather than keep the user waiting.
    ollama_query_timeout_s: float = Field(5.0, gt=0.0, le=600.0)
    # Caption-space hits below this cosine are not matches (nomic-embed-text: a guess,
    # not measured here; docs/configuration.md).
    caption_min_score: float = Field(0.5, ge=-1.0, le=1.0)
    caption_collection: str = "image_captions"
    # How caption hits join the image ranking: rrf (reciprocal rank fusion) or weighted
    # (caption_weight * caption cosine + (1 - caption_weight) * image cosine).
    caption_fusion: Literal["rrf", "weighted"] = "rrf"
    caption_weight: float = Field(0.5, ge=0.0, le=1.0)
    # Also fuse full-text matches when the caption space answered (it embeds the same
    # words; on the held-out set any-word matches dragged the fusion down).
    caption_full_text: bool = False
    # Prompt ensembles (opt-in): "|"-separated templates with "{}" for the query; the
    # query vector is the normalised mean of the templates' text embeddings.
    clip_prompt_templates: Annotated[list[str], NoDecode] = Field(default_factory=list)
    siglip_prompt_templates: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("clip_prompt_templates", "siglip_prompt_templates", mode="before")
    @classmethod
    def _split_templates(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split("|") if part.strip()]
        if isinstance(value, list) and any("{}" not in str(t) for t in value):
            raise ValueError('every template must contain "{}" where the query goes')
        return value

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

    @field_validator("onnx_cpu_isa", mode="before")
    @classmethod
    def _isa_spelling(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None  # blank = detect
        return value

    @field_validator("api_key", "read_api_key", "signing_secret", mode="before")
    @classmethod
    def _no_space_key(cls, value: object) -> object:
        # `API_KEY="  "` passes docker compose's `${API_KEY:?}` check; treating it as
        # unset would serve every interface with no key. Empty stays "unset".
        if isinstance(value, str) and value and not value.strip():
            raise ValueError("is only whitespace; set a real key or leave it empty")
        if isinstance(value, str) and value.strip() and not value.replace(",", "").strip():
            raise ValueError("holds no key, only commas; set a real key or leave it empty")
        return value

    @field_validator("rollout_schedule")
    @classmethod
    def _increasing_steps(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            steps = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                "must be percentages separated by commas, e.g. 1,5,25,50,100"
            ) from None
        if not steps or steps != sorted(set(steps)) or steps[0] < 1 or steps[-1] > 100:
            raise ValueError("must be increasing percentages from 1 to 100, e.g. 1,5,25,50,100")
        return ",".join(map(str, steps))

    @property
    def rollout_steps(self) -> list[int]:
        return [int(part) for part in self.rollout_schedule.split(",") if part]

    @field_validator("library_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()).expanduser() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "database_url",
        "qdrant_url",
        "redis_url",
        "qdrant_api_key",
        "api_key",
        "read_api_key",
        "signing_secret",
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("allowed_hosts")
    @classmethod
    def _some_host(cls, value: str) -> str:
        if not cls._split(value):
            raise ValueError("must name at least one host (or `*` for any)")
        return value

    @staticmethod
    def _split(value: str) -> list[str]:
        return [part.strip() for part in value.split(",") if part.strip()]

    @property
    def allowed_host_list(self) -> list[str]:
        return self._split(self.allowed_hosts)

    @property
    def trusted_origin_list(self) -> list[str]:
        return self._split(self.trusted_origins)

    @model_validator(mode="after")
    def _distinct_collections(self) -> Settings:
        if self.qdrant_collection == self.siglip_collection:
            raise ValueError(
                "QDRANT_COLLECTION and SIGLIP_COLLECTION must name different collections"
            )
        if self.caption_collection in (self.qdrant_collection, self.siglip_collection):
            raise ValueError("CAPTION_COLLECTION must name a collection of its own")
        return self

    @model_validator(mode="after")
    def _write_consistency_fits(self) -> Settings:
        if self.qdrant_write_consistency > self.qdrant_replication_factor:
            raise ValueError(
                f"QDRANT_WRITE_CONSISTENCY ({self.qdrant_write_consistency}) must be at most "
                f"QDRANT_REPLICATION_FACTOR ({self.qdrant_replication_factor}): a write cannot "
                "wait for more copies than exist"
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
    def export_dir(self) -> Path:
        """Where exported (ONNX) models are cached: next to the open_clip weights."""
        return (self.model_cache_dir or self.data_dir / "models") / "onnx"

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
