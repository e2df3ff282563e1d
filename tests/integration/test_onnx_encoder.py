"""The ONNX Runtime encoder: real exports of real open_clip models (tiny and demo), real
ONNX Runtime sessions, real files on disk for the export cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from image_search_service.core.specs import DEMO_MODELS_DIR, ModelSpec
from image_search_service.demo.synthetic import ALL_SPECS, caption_for, write_library
from image_search_service.encoders import onnx_export
from image_search_service.encoders.onnx import OnnxEncoder
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.images.loading import load_image
from tests.factories import jpeg_bytes, write_tiny_model

TEXTS = ["a red circle", "two dogs on a beach", "a blue star at night"]


def _spec(name: str, key: str, dim: int) -> ModelSpec:
    return ModelSpec(key, name, "", dim, "c")  # type: ignore[arg-type]


def _tiny(tiny_models: dict[str, Path], key: str) -> ModelSpec:
    return _spec(f"local-dir:{tiny_models[key]}", key, 512 if key == "clip" else 768)


def _demo(key: str) -> ModelSpec:
    return _spec(f"demo-{key}", key, 512 if key == "clip" else 768)


def _photos() -> list[Image.Image]:
    import io

    colours = [(220, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30)]
    return [
        Image.open(io.BytesIO(jpeg_bytes((96 + 8 * i, 72), colour=c, seed=i))).convert("RGB")
        for i, c in enumerate(colours)
    ]


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def _assert_agrees(onnx: OnnxEncoder, torch_enc: OpenClipEncoder, min_cosine: float) -> None:
    images = _photos()
    got = onnx.encode_images(images)
    assert got.dtype == np.float32
    assert got.shape == (len(images), onnx.spec.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _min_cos(got, torch_enc.encode_images(images)) >= min_cosine
    assert _min_cos(onnx.encode_text(TEXTS), torch_enc.encode_text(TEXTS)) >= min_cosine


class TestExportAndAgreement:
    @pytest.mark.parametrize("key", ["clip", "siglip"])
    def test_tiny_models_fp32_give_pytorch_vectors(
        self, tiny_models: dict[str, Path], tmp_path: Path, key: str
    ) -> None:
        spec = _tiny(tiny_models, key)
        enc = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        enc.load()
        assert enc.runtime == "onnx-fp32"
        assert enc.export is not None
        recorded = enc.export.min_cosine("fp32")
        assert min(recorded.values()) >= onnx_export.FP32_MIN_COSINE
        manifest = json.loads((enc.export.directory / "manifest.json").read_text())
        assert manifest["model_name"] == spec.model_name
        assert set(manifest["precisions"]) == {"fp32"}
        # The image tower's one transformer block exports as the fused attention operator.
        assert manifest["precisions"]["fp32"]["image"]["fused_attention"] == 1
        _assert_agrees(enc, OpenClipEncoder(spec, device="cpu"), 0.99999)

    @pytest.mark.parametrize("key", ["clip", "siglip"])
    def test_trained_demo_models_fp32_and_int8(self, tmp_path: Path, key: str) -> None:
        """CLIP-style and SigLIP-style trained weights: INT8 per-channel stays >= 0.999."""
        spec = _demo(key)
        reference = OpenClipEncoder(spec, device="cpu")
        fp32 = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        _assert_agrees(fp32, reference, 0.99999)
        int8 = OnnxEncoder(spec, export_dir=tmp_path / "onnx", precision="int8")
        int8.load()
        assert int8.runtime == "onnx-int8"
        assert int8.export is not None
        assert int8.export.directory == fp32.export.directory  # type: ignore[union-attr]
        assert min(int8.export.min_cosine("int8").values()) >= onnx_export.INT8_MIN_COSINE
        assert int8.export.path("image", "int8").stat().st_size < (
            int8.export.path("image", "fp32").stat().st_size
        )
        _assert_agrees(int8, reference, 0.999)
        if key == "siglip":
            assert int8.calibrated_score(0.3) == pytest.approx(reference.calibrated_score(0.3))
            assert int8.cosine_at(0.5) == pytest.approx(reference.cosine_at(0.5))
        else:
            assert int8.calibrated_score(0.3) is None

    def test_pytorch_weights_are_released_once_onnx_serves(
        self, tiny_models: dict[str, Path], tmp_path: Path
    ) -> None:
        enc = OnnxEncoder(_tiny(tiny_models, "clip"), export_dir=tmp_path / "onnx")
        enc.load()
        assert enc._model is None
        assert enc.loaded
        assert enc.image_size == 32


def test_a_batch_runs_in_passes_of_a_token_budget_with_the_same_vectors(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from image_search_service.encoders import onnx as onnx_encoder

    spec = _tiny(tiny_models, "clip")
    whole = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
    tensors = [whole.preprocess(image) for image in _photos()]
    at_once = whole.encode_preprocessed(tensors)
    assert whole._images_per_pass == onnx_encoder.IMAGE_PASS_TOKENS // 16  # 4x4 patches

    monkeypatch.setattr(onnx_encoder, "IMAGE_PASS_TOKENS", 2 * 16)
    split = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
    split.load()
    assert split._images_per_pass == 2
    runs: list[int] = []
    session = split._image_session

    class Counting:
        def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
            runs.append(len(feeds["input"]))
            return session.run(names, feeds)

    split._image_session = Counting()
    in_passes = split.encode_preprocessed(tensors)
    assert runs == [2, 2]
    np.testing.assert_allclose(in_passes, at_once, atol=1e-6)


class TestExportCache:
    def test_second_load_reuses_the_export(
        self, tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        spec = _tiny(tiny_models, "clip")
        first = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        first.load()
        caplog.set_level(logging.INFO, logger="image_search_service")
        caplog.clear()
        second = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        second.load()
        assert second.export is not None
        assert second.export.directory == first.export.directory  # type: ignore[union-attr]
        assert not [r for r in caplog.records if "exported" in r.getMessage()]
        assert [p.name for p in (tmp_path / "onnx").iterdir()] == [second.export.directory.name]

    @pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "no_manifest", "bad_manifest"])
    def test_corrupt_or_partial_export_is_rebuilt(
        self,
        tiny_models: dict[str, Path],
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        damage: str,
    ) -> None:
        spec = _tiny(tiny_models, "siglip")
        enc = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        enc.load()
        assert enc.export is not None
        directory = enc.export.directory
        image = directory / "image.onnx"
        good = image.read_bytes()
        if damage == "flip_bytes":
            data = bytearray(good)
            data[len(data) // 2] ^= 0xFF
            image.write_bytes(bytes(data))
        elif damage == "truncate":
            image.write_bytes(good[: len(good) // 3])
        elif damage == "no_manifest":
            (directory / "manifest.json").unlink()
        else:
            (directory / "manifest.json").write_text("{not json")
        caplog.set_level(logging.INFO, logger="image_search_service")
        caplog.clear()
        again = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        again.load()
        assert again.runtime == "onnx-fp32"
        assert any("partial or corrupt" in r.getMessage() for r in caplog.records)
        assert any("exported" in r.getMessage() for r in caplog.records)
        assert image.read_bytes() == good  # the same export, rebuilt whole
        _assert_agrees(again, OpenClipEncoder(spec, device="cpu"), 0.99999)

    def test_changed_weights_are_exported_again(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        model_dir = write_tiny_model(tmp_path / "m", embed_dim=512, sigmoid=False, seed=3)
        spec = _spec(f"local-dir:{model_dir}", "clip", 512)
        old = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        old.load()
        assert old.export is not None
        old_dir = old.export.directory
        write_tiny_model(model_dir, embed_dim=512, sigmoid=False, seed=4)  # same name, new weights
        new = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        new.load()
        assert new.export is not None
        assert new.export.directory != old_dir
        assert not old_dir.exists()  # the stale export is not kept
        _assert_agrees(new, OpenClipEncoder(spec, device="cpu"), 0.99999)


class TestFallbacks:
    def test_failed_export_falls_back_to_pytorch_with_one_log_line(
        self, tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the export folder should be")
        spec = _tiny(tiny_models, "clip")
        caplog.set_level(logging.WARNING, logger="image_search_service")
        caplog.clear()
        enc = OnnxEncoder(spec, export_dir=blocker / "onnx")
        enc.load()
        assert enc.runtime == "torch-fp32"
        assert enc.export is None
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert "encoding with PyTorch" in warnings[0]
        reference = OpenClipEncoder(spec, device="cpu")
        images = _photos()
        np.testing.assert_allclose(
            enc.encode_images(images), reference.encode_images(images), atol=1e-6
        )
        np.testing.assert_allclose(enc.encode_text(TEXTS), reference.encode_text(TEXTS), atol=1e-6)

    def test_int8_failing_agreement_is_refused_and_fp32_serves(
        self,
        tiny_models: dict[str, Path],
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # No INT8 export of anything reaches a cosine above 1: the check must refuse it.
        monkeypatch.setattr(onnx_export, "INT8_MIN_COSINE", 1.5)
        spec = _tiny(tiny_models, "siglip")
        caplog.set_level(logging.WARNING, logger="image_search_service")
        caplog.clear()
        enc = OnnxEncoder(spec, export_dir=tmp_path / "onnx", precision="int8")
        enc.load()
        assert enc.runtime == "onnx-fp32"
        assert enc.export is not None
        assert not enc.export.has("int8")
        assert not list(enc.export.directory.glob("*int8*"))
        manifest = json.loads((enc.export.directory / "manifest.json").read_text())
        assert "min cosine" in manifest["int8_refused"]
        assert any("INT8 refused" in r.getMessage() for r in caplog.records)
        _assert_agrees(enc, OpenClipEncoder(spec, device="cpu"), 0.99999)
        # Recorded: the next start does not quantize and refuse all over again.
        caplog.clear()
        again = OnnxEncoder(spec, export_dir=tmp_path / "onnx", precision="int8")
        again.load()
        assert again.runtime == "onnx-fp32"

    def test_a_corrupt_model_that_onnx_runtime_cannot_load_falls_back(
        self, tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Even an export whose checksums were rewritten to match garbage is never used."""
        spec = _tiny(tiny_models, "clip")
        enc = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        enc.load()
        assert enc.export is not None
        directory = enc.export.directory
        (directory / "image.onnx").write_bytes(b"garbage")
        manifest = json.loads((directory / "manifest.json").read_text())
        entry = manifest["precisions"]["fp32"]["image"]
        entry["bytes"] = 7
        entry["sha256"] = onnx_export._sha256(directory / "image.onnx")
        (directory / "manifest.json").write_text(json.dumps(manifest))
        caplog.set_level(logging.WARNING, logger="image_search_service")
        caplog.clear()
        again = OnnxEncoder(spec, export_dir=tmp_path / "onnx")
        again.load()
        assert again.runtime == "torch-fp32"
        assert any("encoding with PyTorch" in r.getMessage() for r in caplog.records)
        assert again.encode_text(["x"]).shape == (1, 512)


def test_demo_model_folder_is_read_only_input(tmp_path: Path) -> None:
    """Exports go to the export folder, never next to the shipped weights."""
    before = sorted(p.name for p in (DEMO_MODELS_DIR / "demo-clip").iterdir())
    enc = OnnxEncoder(_demo("clip"), export_dir=tmp_path / "onnx")
    enc.load()
    assert sorted(p.name for p in (DEMO_MODELS_DIR / "demo-clip").iterdir()) == before
    assert enc.export is not None
    assert enc.export.directory.parent == tmp_path / "onnx"


@pytest.mark.parametrize("key", ["clip", "siglip"])
def test_int8_keeps_the_demo_models_search_results(tmp_path: Path, key: str) -> None:
    """The rule behind the INT8 default, on a small held-out set of the shape world:
    precision within 0.02 of fp32 and recall@10 of INT8 against fp32 >= 0.98."""
    written = write_library(
        tmp_path / "held-out", 160, seed=77, jpeg_quality_range=(55, 90), size_range=(140, 300)
    )
    queries = [caption_for([spec]) for spec in ALL_SPECS]
    relevant = np.array([[spec.label in pic.labels for _, pic in written] for spec in ALL_SPECS])
    results = {}
    for precision in ("fp32", "int8"):
        enc = OnnxEncoder(_demo(key), export_dir=tmp_path / "onnx", precision=precision)
        images = enc.encode_images(
            [
                load_image(path, max_pixels=10**8, min_side=enc.image_size).image
                for path, _ in written
            ]
        )
        assert enc.runtime == f"onnx-{precision}"
        scores = enc.encode_text(queries) @ images.T
        results[precision] = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    precision_at_10 = {}
    for precision, top in results.items():
        rows = []
        for q in range(len(queries)):
            k = min(10, int(relevant[q].sum()))  # as docs/demo-models.md measures P@10
            if k:
                rows.append(relevant[q, top[q, :k]].mean())
        assert len(rows) >= 35
        precision_at_10[precision] = float(np.mean(rows))
    assert precision_at_10["fp32"] >= 0.8  # a trained model: the check has teeth
    assert abs(precision_at_10["int8"] - precision_at_10["fp32"]) <= 0.02
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(results["int8"], results["fp32"], strict=True)]
    )
    assert recall >= 0.98


def test_an_export_killed_half_way_leaves_nothing_that_is_used_or_kept(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "onnx"
    abandoned = root / ".export-killed"
    abandoned.mkdir(parents=True)
    (abandoned / "image.onnx").write_bytes(b"half an export")
    old = 1_000_000_000  # long ago
    os.utime(abandoned, (old, old))
    recent = root / ".export-running"  # another process exporting right now
    recent.mkdir()
    enc = OnnxEncoder(_tiny(tiny_models, "clip"), export_dir=root)
    enc.load()
    assert enc.runtime == "onnx-fp32"
    assert not abandoned.exists()
    assert recent.exists()


class _TimmTowerModel(torch.nn.Module):
    """A SigLIP-shaped image tower (timm ViT with attention pooling) with open_clip's
    ``encode_image``/``encode_text`` surface, small enough to export in a second."""

    def __init__(self) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        torch.manual_seed(3)
        self.visual = VisionTransformer(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            global_pool="map",
            class_token=False,
            num_classes=16,
        )
        self.token_embedding = torch.nn.Embedding(64, 16)

    def encode_image(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        out = self.visual(x)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_text(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        out = self.token_embedding(x).mean(dim=1)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _export_timm_tower(tmp_path: Path) -> tuple[_TimmTowerModel, float, dict[str, int], list[str]]:
    """Export the timm tower's image side as the service does: (model, min cosine,
    rewrites made, the graph's operator types)."""
    import onnx

    model = _TimmTowerModel().eval()
    inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    reference = onnx_export._reference(model, "image", inputs)
    path = tmp_path / "image.onnx"
    cosine, rewrites = onnx_export._export_verified(model, "image", inputs, reference, path)
    return model, cosine, rewrites, [node.op_type for node in onnx.load(str(path)).graph.node]


class TestRewrittenImageTower:
    def test_timm_self_attention_is_fused_and_agrees(self, tmp_path: Path) -> None:
        model, cosine, rewrites, ops = _export_timm_tower(tmp_path)
        # Both blocks; the pooling head's cross-attention is not self-attention and stays.
        assert rewrites == {"fused_attention": 2}
        assert cosine >= onnx_export.FP32_MIN_COSINE
        assert ops.count("MultiHeadAttention") == 2
        # The live model was not touched: its attention modules are timm's own.
        assert {type(b.attn).__name__ for b in model.visual.blocks} == {"Attention"}

    def test_an_attention_that_will_not_export_falls_back_to_the_plain_export(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(module: torch.nn.Module) -> int:
            raise RuntimeError("no fused attention for this model")

        monkeypatch.setattr(onnx_export, "fuse_self_attention", broken)
        _, cosine, rewrites, ops = _export_timm_tower(tmp_path)
        assert rewrites == {"fused_attention": 0}
        assert cosine >= onnx_export.FP32_MIN_COSINE
        assert "MultiHeadAttention" not in ops
        assert "Softmax" in ops
