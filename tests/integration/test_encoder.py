"""The one encoder class, through open_clip's real loading code (tiny configs)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search_service.core.errors import ModelLoadError
from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.openclip import OpenClipEncoder, _registered_preprocess
from image_search_service.encoders.registry import EncoderRegistry


def _spec(path: Path, key: str = "clip", dim: int = 512) -> ModelSpec:
    return ModelSpec(key, f"local-dir:{path}", "", dim, "c")  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "dim"), [("clip", 512), ("siglip", 768)])
def test_outputs_are_normalised_float32_of_the_configured_width(
    tiny_models: dict[str, Path], key: str, dim: int
) -> None:
    enc = OpenClipEncoder(_spec(tiny_models[key], key, dim), device="cpu")
    images = enc.encode_images([Image.new("RGB", (50, 30), c) for c in ("red", "blue", "green")])
    texts = enc.encode_text(["a red circle", "a blue star"])
    for out, rows in ((images, 3), (texts, 2)):
        assert out.dtype == np.float32
        assert out.shape == (rows, dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_batch_order_is_kept(tiny_models: dict[str, Path]) -> None:
    enc = OpenClipEncoder(_spec(tiny_models["clip"]), device="cpu")
    imgs = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "yellow", "white")]
    together = enc.encode_images(imgs)
    alone = np.stack([enc.encode_images([img])[0] for img in imgs])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_each_model_gets_its_own_preprocessing(tiny_models: dict[str, Path]) -> None:
    clip = OpenClipEncoder(_spec(tiny_models["clip"]), device="cpu")
    sig = OpenClipEncoder(_spec(tiny_models["siglip"], "siglip", 768), device="cpu")
    wide = Image.new("RGB", (64, 32), "white")
    wide.paste(Image.new("RGB", (16, 32), "black"), (0, 0))  # black band at the far left
    # CLIP: resize shortest + centre crop cuts the band off; SigLIP: squash keeps it.
    clip_px = clip.pixel_batch([clip.preprocess(wide)])[0]
    sig_px = sig.pixel_batch([sig.preprocess(wide)])[0]
    assert clip_px.shape == sig_px.shape == (3, 32, 32)
    assert clip_px[:, :, 0].mean() > 1.0  # white after OpenAI normalisation
    assert sig_px[:, :, 0].mean() < -0.9  # black after mean=std=0.5 normalisation


def test_calibrated_score_only_for_sigmoid_models(tiny_models: dict[str, Path]) -> None:
    clip = OpenClipEncoder(_spec(tiny_models["clip"]), device="cpu")
    sig = OpenClipEncoder(_spec(tiny_models["siglip"], "siglip", 768), device="cpu")
    assert clip.calibrated_score(0.3) is None
    low, high = sig.calibrated_score(-0.5), sig.calibrated_score(0.9)
    assert low is not None
    assert high is not None
    assert 0.0 <= low < high <= 1.0


def test_wrong_dimension_is_a_clear_error(tiny_models: dict[str, Path]) -> None:
    enc = OpenClipEncoder(_spec(tiny_models["clip"], dim=768), device="cpu")
    with pytest.raises(ModelLoadError, match="512-d embeddings but CLIP_EMBEDDING_DIM=768"):
        enc.load()


def test_missing_weights_never_give_a_silent_random_model(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_models["clip"] / "open_clip_config.json", no_weights)
    with pytest.raises(ModelLoadError, match="local-dir"):
        OpenClipEncoder(_spec(no_weights), device="cpu").load()


def test_unknown_tag_or_missing_file_says_how_to_fix() -> None:
    enc = OpenClipEncoder(ModelSpec("clip", "ViT-B-32", "no-such-tag", 512, "c"), device="cpu")
    with pytest.raises(ModelLoadError, match="openai") as err:
        enc.load()
    assert "demo-clip" in err.value.detail
    empty = OpenClipEncoder(ModelSpec("siglip", "ViT-B-32", "", 512, "c"), device="cpu")
    with pytest.raises(ModelLoadError, match="SIGLIP_PRETRAINED is empty"):
        empty.load()


def test_checkpoint_file_gets_the_models_registered_preprocessing() -> None:
    """Weights from a file: open_clip would default to OpenAI mean/std; SigLIP needs 0.5."""
    pp, quick_gelu = _registered_preprocess("ViT-B-16-SigLIP")
    assert pp["image_mean"] == (0.5, 0.5, 0.5)
    assert pp["image_resize_mode"] == "squash"
    assert quick_gelu is False
    _, openai_quick = _registered_preprocess("ViT-B-32")
    assert openai_quick is True  # OpenAI's weights need QuickGELU


def test_local_dir_config_is_read(tiny_models: dict[str, Path]) -> None:
    cfg = json.loads((tiny_models["siglip"] / "open_clip_config.json").read_text())
    assert cfg["preprocess_cfg"]["resize_mode"] == "squash"


def test_registry_loads_once_per_spec_even_under_concurrency(tiny_models: dict[str, Path]) -> None:
    registry = EncoderRegistry(device="cpu")
    spec = _spec(tiny_models["clip"])
    encoders = []

    def grab() -> None:
        enc = registry.get(spec)
        enc.load()
        encoders.append(enc)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in encoders}) == 1
    assert encoders[0].loaded


def test_a_failed_load_is_remembered_not_retried_per_request(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model_dir = tmp_path / "late"
    shutil.copytree(tiny_models["clip"], model_dir)
    weights = model_dir / "open_clip_model.safetensors"
    weights.rename(tmp_path / "weights.safetensors")
    enc = OpenClipEncoder(_spec(model_dir), device="cpu")
    with pytest.raises(ModelLoadError) as first:
        enc.load()
    (tmp_path / "weights.safetensors").rename(weights)  # fixed, but within the cool-down
    with pytest.raises(ModelLoadError) as second:
        enc.load()
    assert second.value is first.value
    assert not enc.loaded
