"""INT8 acceptance across starts (onnx_export._ensure_int8): a refusal recorded in the
export's manifest is final for that export; an accepted INT8 export is used as it is.
Neither measures again (the check quantizes both towers: seconds to minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from image_search_service.encoders.onnx_export import ExportRefused, OnnxExport, _ensure_int8

RECORDED = "INT8 image tower: min cosine to PyTorch 0.996179 < 0.999 (CPU class avx2, u8u8)"


def never_preprocess(image: Image.Image) -> torch.Tensor:
    raise AssertionError("the INT8 check ran again")


def test_a_recorded_refusal_is_final_on_the_next_start(tmp_path: Path) -> None:
    manifest = {"cpu_isa": "avx2", "precisions": {"fp32": {}}, "int8_refused": RECORDED}
    export = OnnxExport(tmp_path, manifest)
    with pytest.raises(ExportRefused) as refused:
        _ensure_int8(torch.nn.Identity(), export, preprocess=never_preprocess, image_size=8)
    assert str(refused.value) == RECORDED
    assert refused.value.fp32 is export  # the verified fp32 export still serves
    assert list(tmp_path.iterdir()) == []  # nothing quantized, nothing rewritten


def test_an_accepted_int8_export_is_used_as_it_is(tmp_path: Path) -> None:
    manifest = {"cpu_isa": "avx2", "precisions": {"fp32": {}, "int8": {}}}
    export = OnnxExport(tmp_path, manifest)
    kept = _ensure_int8(torch.nn.Identity(), export, preprocess=never_preprocess, image_size=8)
    assert kept is export
    assert list(tmp_path.iterdir()) == []
