from __future__ import annotations

from pathlib import Path

import pytest
from platformdirs import user_data_dir

from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ConfigError
from image_search_service.core.specs import DEMO_MODELS_DIR, model_spec
from image_search_service.core.threads import plan_threads


class TestDefaults:
    def test_phase_plan_names_and_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for var in ("DATA_DIR", "DATABASE_URL", "QDRANT_URL", "REDIS_URL", "CLIP_MODEL_NAME"):
            monkeypatch.delenv(var, raising=False)
        s = Settings(_env_file=None)
        assert (s.clip_model_name, s.clip_pretrained, s.clip_embedding_dim) == (
            "ViT-B-32",
            "openai",
            512,
        )
        assert (s.siglip_model_name, s.siglip_pretrained, s.siglip_embedding_dim) == (
            "ViT-B-16-SigLIP",
            "webli",
            768,
        )
        assert (s.qdrant_collection, s.siglip_collection) == ("image_assets", "image_assets_siglip")
        assert s.use_siglip is False
        assert s.siglip_rollout_percentage == 0
        # The per-user data folder (platformdirs), not a folder relative to the cwd.
        assert s.data_dir == Path(user_data_dir("image-search", appauthor=False))
        assert s.data_dir.is_absolute()
        assert s.device == "auto"
        assert s.qdrant_url is None
        assert s.redis_url is None
        assert s.resolved_database_url.startswith("sqlite:///")
        assert s.resolved_database_url.endswith("image-search/metadata.sqlite3")

    def test_runtime_defaults_and_export_folder(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for var in ("ENCODER_RUNTIME", "ENCODER_PRECISION", "MODEL_CACHE_DIR", "DATA_DIR"):
            monkeypatch.delenv(var, raising=False)
        s = Settings(_env_file=None)
        # Chosen by measurement on the shipped demo models (docs/performance.md).
        assert (s.encoder_runtime, s.encoder_precision) == ("onnx", "int8")
        assert s.export_dir == s.data_dir / "models" / "onnx"
        cached = Settings(_env_file=None, model_cache_dir=Path("/srv/models"))
        assert cached.export_dir == Path("/srv/models/onnx")

    def test_blank_urls_mean_embedded(self) -> None:
        s = Settings(_env_file=None, qdrant_url="  ", database_url="")
        assert s.qdrant_url is None
        assert s.database_url is None


class TestValidation:
    @pytest.mark.parametrize(
        ("var", "value"),
        [
            ("SIGLIP_ROLLOUT_PERCENTAGE", "101"),
            ("SIGLIP_ROLLOUT_PERCENTAGE", "-1"),
            ("SIGLIP_ROLLOUT_PERCENTAGE", "half"),
            ("USE_SIGLIP", "maybe"),
            ("CLIP_EMBEDDING_DIM", "0"),
            ("BATCH_SIZE", "0"),
            ("DEVICE", "tpu"),
            ("CLIP_MODEL_NAME", "   "),
            ("ENCODER_RUNTIME", "tensorrt"),
            ("ENCODER_PRECISION", "fp16"),
            ("MODEL_THREADS", "-1"),
        ],
    )
    def test_bad_value_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, var: str, value: str
    ) -> None:
        monkeypatch.setenv(var, value)
        with pytest.raises(ConfigError) as err:
            load_settings(_env_file=None)
        assert var in err.value.detail

    def test_collections_must_differ(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SIGLIP_COLLECTION", "image_assets")
        with pytest.raises(ConfigError, match="different collections"):
            load_settings(_env_file=None)


class TestApiKey:
    @pytest.mark.parametrize("value", [" ", "   ", "\t"])
    def test_only_whitespace_is_refused(self, value: str) -> None:
        with pytest.raises(ConfigError, match="API_KEY: .*whitespace"):
            load_settings(api_key=value, _env_file=None)

    def test_empty_means_unset(self) -> None:
        assert load_settings(api_key="", _env_file=None).api_key is None


def test_demo_model_names_resolve_to_shipped_dirs() -> None:
    s = Settings(_env_file=None, clip_model_name="demo-clip", clip_pretrained="")
    spec = model_spec(s, "clip")
    assert spec.open_clip_name == f"local-dir:{DEMO_MODELS_DIR / 'demo-clip'}"
    assert spec.identity.model_name == "demo-clip"


class TestThreadPlan:
    def test_auto_uses_every_core_for_both(self) -> None:
        plan = plan_threads(Settings(_env_file=None), cores=4)
        assert (plan.model_threads, plan.decode_workers) == (4, 4)

    def test_explicit_settings_win(self) -> None:
        s = Settings(_env_file=None, model_threads=1, decode_workers=3)
        assert (
            plan_threads(s, cores=8).model_threads,
            plan_threads(s, cores=8).decode_workers,
        ) == (
            1,
            3,
        )

    def test_torch_threads_is_still_read(self) -> None:
        assert plan_threads(Settings(_env_file=None, torch_threads=2), cores=8).model_threads == 2

    def test_decoders_are_capped(self) -> None:
        assert plan_threads(Settings(_env_file=None), cores=64).decode_workers == 16
