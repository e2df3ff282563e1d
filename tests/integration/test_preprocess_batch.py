"""The batch preprocessing (Pillow per image, numpy per batch) against open_clip's own."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from image_search_service.context import open_context
from image_search_service.core.specs import DEMO_MODELS_DIR, ModelSpec
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.encoders.preprocess import from_transform
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image
from image_search_service.services.library.decoding import decode_pool
from image_search_service.services.library.index import index_paths
from tests.factories import broken_files, gradient_photos, write_jpeg


def _spec(name: str) -> ModelSpec:
    if name.startswith("demo-"):
        key, dim = ("siglip", 768) if "siglip" in name else ("clip", 512)
        return ModelSpec(key, name, "", dim, "c")  # type: ignore[arg-type]
    return ModelSpec("clip", name, "random", 512, "c")


@pytest.mark.parametrize(
    "model_name",
    [
        "demo-clip",
        "demo-siglip",
        "ViT-B-32",  # real architecture, random weights: OpenAI resize + centre crop, 224
    ],
)
def test_vectors_match_open_clips_preprocessing(tmp_path: Path, model_name: str) -> None:
    torch.manual_seed(0)
    encoder = OpenClipEncoder(_spec(model_name), device="cpu")
    own = encoder.preprocess(Image.new("RGB", (8, 8)))
    assert own.dtype == torch.uint8  # the batch path serves, not open_clip's fallback
    name = encoder.spec.open_clip_name
    _, _, reference = open_clip.create_model_and_transforms(
        name, pretrained=None, load_weights=False, **_image_kwargs(name)
    )
    images = [
        load_image(p, max_pixels=10**8, min_side=encoder.image_size).image
        for p in gradient_photos(tmp_path)
    ]
    ours = encoder.encode_preprocessed([encoder.preprocess(img) for img in images])
    theirs = encoder.encode_preprocessed(torch.stack([reference(img) for img in images]))
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() >= 0.999, cosines


def _image_kwargs(name: str) -> dict[str, object]:
    if name.startswith("local-dir:"):
        return {}
    # What the encoder builds for a built-in name: its registered weights' preprocessing.
    from image_search_service.encoders.openclip import _registered_preprocess

    return _registered_preprocess(name)[0]


def test_pixels_match_open_clips_transform_closely() -> None:
    _, _, transform = open_clip.create_model_and_transforms(
        f"local-dir:{DEMO_MODELS_DIR / 'demo-clip'}"
    )
    fast = from_transform(transform)
    assert fast is not None
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8))
    ours = fast.batch([fast(image)])[0]
    theirs = transform(image).numpy()
    assert ours.shape == theirs.shape == (3, 64, 64)
    # Normalised units (about 4 per full 0-255 range): sub-grey-level agreement.
    assert np.abs(ours - theirs).mean() < 0.01


def test_unknown_transforms_keep_open_clips_preprocessing() -> None:
    longest = open_clip.image_transform(64, is_train=False, resize_mode="longest")
    assert from_transform(longest) is None
    encoder = OpenClipEncoder(_spec("demo-clip"), device="cpu")
    encoder.load()
    encoder._preprocess = longest  # what a model with that transform loads
    encoder._batch_preprocess = from_transform(longest)
    pixels = encoder.preprocess(Image.new("RGB", (90, 40), "white"))
    assert pixels.dtype == torch.float32
    assert pixels.shape == (3, 64, 64)
    vectors = encoder.encode_preprocessed([pixels, pixels])
    assert vectors.shape == (2, 512)


def test_decode_processes_index_like_threads(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    """Decoding and preprocessing in worker processes gives the threads' vectors, and a
    file that cannot be read there fails alone, with its reason."""
    library = tmp_path / "lib"
    for i in range(6):
        write_jpeg(library / f"p{i}.jpg", size=(120 + 9 * i, 90), colour=(40 * i, 90, 200), seed=i)
    bad = broken_files(library / "bad")
    vectors = []
    for processes in (0, 2):
        ctx = open_context(
            make_settings(data_dir=tmp_path / f"data-{processes}", decode_processes=processes),
            encoders=encoders,
        )
        try:
            report = index_paths(ctx, [library], model_keys=["clip"])
            assert (report.indexed, report.failed) == (6, len(bad))
            with ctx.transaction() as session:
                ids = {
                    Path(a.path).name: a.id
                    for a in session.scalars(select(Asset)).all()
                    if a.status == AssetStatus.ACTIVE
                }
                reasons = [a.error for a in session.scalars(select(Asset)).all() if a.error]
            assert any("corrupt or truncated" in r for r in reasons), reasons
            stored = ctx.store.retrieve_vectors(ctx.spec("clip").collection, list(ids.values()))
            vectors.append(np.stack([stored[ids[name]] for name in sorted(ids)]))
        finally:
            ctx.close()
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)


def test_processes_fall_back_to_threads_when_preprocessing_cannot_travel(
    tiny_models: dict[str, Path],
) -> None:
    encoder = OpenClipEncoder(
        ModelSpec("clip", f"local-dir:{tiny_models['clip']}", "", 512, "c"),
        device="cpu",
    )
    encoder.load()
    pool, preprocessors = decode_pool([encoder], processes=2)
    assert isinstance(pool, ProcessPoolExecutor)
    pool.shutdown()
    assert preprocessors["clip"] == encoder.batch_preprocess
    encoder._batch_preprocess = None  # a transform only open_clip can apply
    pool, preprocessors = decode_pool([encoder], processes=2)
    assert pool is None  # the lanes decode in their own threads
    assert preprocessors["clip"] == encoder.preprocess
