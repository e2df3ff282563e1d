"""The GPU path's choices, exercised on CPU: chosen by device, half precision only where
it agrees with fp32 (else fp32 with one log line), uint8 batches normalised in torch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_search_service.core.specs import ModelSpec
from image_search_service.encoders import openclip
from image_search_service.encoders.openclip import OpenClipEncoder, half_precision


def _encoder(tiny_models: dict[str, Path], device: str = "cpu") -> OpenClipEncoder:
    spec = ModelSpec("clip", f"local-dir:{tiny_models['clip']}", "", 512, "c")
    return OpenClipEncoder(spec, device=device)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).resize((48 + i, 40))
        for i in range(6)
    ]


def test_the_gpu_path_is_chosen_by_device(tiny_models: dict[str, Path]) -> None:
    assert half_precision(torch.device("cuda")) == torch.float16
    assert half_precision(torch.device("cuda", 1)) == torch.float16
    assert half_precision(torch.device("cpu")) is None
    # Constructing for a GPU loads nothing, so this runs without one.
    assert _encoder(tiny_models, "cuda").preferred_batch_size == openclip.GPU_BATCH_SIZE
    cpu = _encoder(tiny_models)
    assert cpu.preferred_batch_size == 0
    cpu.load()
    assert cpu.half_check is None  # never tried on a CPU
    assert cpu.runtime == "torch-fp32"


def test_half_precision_that_agrees_serves_and_is_the_runtime(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openclip, "HALF_MIN_COSINE", 0.99)
    encoder = _encoder(tiny_models)
    encoder.load()
    fp32 = encoder.encode_images(_images())
    # CPU autocast takes bf16: the same check and the same switch as fp16 on a GPU.
    assert encoder.check_half_precision(torch.bfloat16) == torch.bfloat16
    assert encoder.half_check is not None
    assert encoder.half_check["min_cosine"] >= 0.99
    encoder._autocast = torch.bfloat16  # what load() does with the check's answer
    assert encoder.runtime == "torch-bf16"  # what the collection's provenance records
    half = encoder.encode_images(_images())
    assert half.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(half * fp32, axis=1)) >= 0.99
    assert not np.array_equal(half, fp32)  # it did run in half precision


def test_half_precision_that_disagrees_falls_back_to_fp32_with_one_line(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openclip, "HALF_MIN_COSINE", 1.5)  # nothing reaches it
    encoder = _encoder(tiny_models)
    encoder.load()
    caplog.set_level(logging.INFO, logger="image_search_service")
    caplog.clear()
    assert encoder.check_half_precision(torch.bfloat16) is None
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert "fp32 serves" in lines[0].getMessage()
    assert encoder.runtime == "torch-fp32"
    assert encoder.half_check is not None
    assert encoder.half_check["dtype"] == "bfloat16"


def test_uint8_batches_normalise_alike_in_numpy_and_torch(tiny_models: dict[str, Path]) -> None:
    encoder = _encoder(tiny_models)
    prepare = encoder.batch_preprocess
    assert prepare is not None
    pixels = np.stack([prepare(im) for im in _images()])
    on_device = prepare.batch_on(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(on_device, prepare.batch(pixels), atol=1e-5)
