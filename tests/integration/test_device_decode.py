"""The device lane (JPEGs decoded where the models run: nvJPEG on a GPU), exercised on the
CPU with torchvision's decoder: the same pixels as open_clip's preprocessing, the same
outcome per file as the CPU decoders, the fallbacks, and the scheduling between lanes."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from image_search_service.context import open_context
from image_search_service.core.config import ModelKey
from image_search_service.core.specs import ModelSpec
from image_search_service.db.models import Asset
from image_search_service.encoders import device_decode
from image_search_service.encoders.device_decode import DeviceJpegDecoder, decoder_for, orient
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.encoders.preprocess import BatchPreprocess
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import (
    _ORIENT,
    ImageMeta,
    JpegFile,
    load_image,
    read_jpeg,
)
from image_search_service.services.library import decoding
from image_search_service.services.library.decoding import AssetRef, _Window, decoded_in_order
from image_search_service.services.library.index import index_paths
from tests.factories import (
    bad_exif_jpeg_bytes,
    broken_files,
    gradient_photos,
    jpeg_bytes,
    mpo_bytes,
    png_bytes,
)


def _spec(name: str) -> ModelSpec:
    if name.startswith("demo-"):
        key, dim = ("siglip", 768) if "siglip" in name else ("clip", 512)
        return ModelSpec(key, name, "", dim, "c")  # type: ignore[arg-type]
    return ModelSpec("clip", name, "random", 512, "c")


def _tiny_encoder(tiny_models: dict[str, Path]) -> OpenClipEncoder:
    """The tiny CLIP-style model on the CPU, loaded, with its batch preprocessing."""
    encoder = OpenClipEncoder(
        ModelSpec("clip", f"local-dir:{tiny_models['clip']}", "", 512, "c"), device="cpu"
    )
    encoder.load()
    assert encoder.batch_preprocess is not None
    return encoder


def _preprocessors(encoder: OpenClipEncoder) -> dict[ModelKey, BatchPreprocess]:
    assert encoder.batch_preprocess is not None
    return {encoder.spec.key: encoder.batch_preprocess}


def test_orientation_turns_pictures_like_pillow() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for orientation, transpose in _ORIENT.items():
        expected = np.array(image.transpose(transpose))
        got = orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation)
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), expected)
    same = orient(torch.from_numpy(pixels).permute(2, 0, 1), 1)
    np.testing.assert_array_equal(same.permute(1, 2, 0).numpy(), pixels)


@pytest.mark.parametrize("model_name", ["demo-clip", "demo-siglip", "ViT-B-32"])
def test_device_pixels_give_open_clips_vectors(tmp_path: Path, model_name: str) -> None:
    """Decoded at full size and resized by torchvision's tensor resize: the vectors match
    open_clip's own preprocessing of the same files (cosine >= 0.999)."""
    torch.manual_seed(0)
    encoder = OpenClipEncoder(_spec(model_name), device="cpu")
    decoder = decoder_for([encoder], "always")
    assert decoder is not None
    assert decoder.device.type == "cpu"
    paths = gradient_photos(tmp_path)
    files = [read_jpeg(p, max_pixels=10**8) for p in paths]
    assert all(f is not None for f in files)
    pixels = decoder.decode([f for f in files if f is not None])
    assert all(p is not None for p in pixels)
    key = encoder.spec.key
    ours = encoder.encode_preprocessed([p[key] for p in pixels if p is not None])
    name = encoder.spec.open_clip_name
    from image_search_service.encoders.openclip import _registered_preprocess

    kwargs = {} if name.startswith("local-dir:") else _registered_preprocess(name)[0]
    _, _, reference = open_clip.create_model_and_transforms(
        name, pretrained=None, load_weights=False, **kwargs
    )
    images = [load_image(p, max_pixels=10**8).image for p in paths]  # full size
    theirs = encoder.encode_preprocessed(torch.stack([reference(im) for im in images]))
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() >= 0.999, cosines


def _rotated_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(size, (20, 140, 90), seed=orientation, exif=exif)


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (120, 90), (10, 200, 30, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def _mixed_library(root: Path) -> dict[str, Path]:
    """Plain JPEGs of several sizes, rotated ones, and every file the device lane hands
    to the CPU: PNG, MPO, CMYK, data after the picture, a big truncated JPEG."""
    root.mkdir(parents=True)
    files = {p.name: p for p in gradient_photos(root, [(640, 480), (480, 640), (50, 37)])}
    for orientation in (3, 6, 8):
        path = root / f"rotated{orientation}.jpg"
        path.write_bytes(_rotated_jpeg((160, 100), orientation))
        files[path.name] = path
    extra = {
        "drawing.png": png_bytes((90, 70), mode="RGB"),
        "portrait.mpo": mpo_bytes((120, 90)),
        "print.jpg": _cmyk_jpeg(),
        "trailer.jpg": jpeg_bytes((140, 100), seed=3) + b"SAMSUNG-TRAILER" * 8,
        "cut.jpg": (root / "photo0.jpg").read_bytes()[:-4000],
        # EXIF that Pillow cannot rewrite: the CPU path keeps a small one as stored and
        # turns a big one (decoded scaled); the device lane leaves both to the CPU.
        "bad-exif-small.jpg": bad_exif_jpeg_bytes(),
        "bad-exif.jpg": bad_exif_jpeg_bytes((150, 90)),
    }
    for name, data in extra.items():
        (root / name).write_bytes(data)
        files[name] = root / name
    files.update({p.name: p for p in broken_files(root / "broken").values()})
    return files


def _index(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path, library: Path, mode: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    ctx = open_context(
        make_settings(data_dir=tmp_path / f"data-{mode}", jpeg_device_decode=mode),
        encoders=encoders,
    )
    try:
        report = index_paths(ctx, [library], model_keys=["clip", "siglip"])
        assert report.indexed + report.failed > 0
        with ctx.transaction() as session:
            assets = session.scalars(select(Asset)).all()
            ids = {Path(a.path).name: a.id for a in assets if not a.error}
            sizes = {Path(a.path).name: (a.width, a.height) for a in assets if not a.error}
            errors = {Path(a.path).name: a.error for a in assets if a.error}
        vectors = {}
        for key in ("clip", "siglip"):
            stored = ctx.store.retrieve_vectors(ctx.spec(key).collection, list(ids.values()))
            for name, asset_id in ids.items():
                vectors[f"{key}:{name}"] = stored[asset_id]
        return vectors, sizes, errors
    finally:
        ctx.close()


def test_indexing_with_the_device_lane_matches_the_cpu_decoders(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    """Every file gets the same outcome with the device lane as without: the same photos
    embedded (vectors within 0.999 cosine, both models at once), the same sizes after
    EXIF orientation, the same failures with the same reasons."""
    library = tmp_path / "lib"
    files = _mixed_library(library)
    cpu_vectors, cpu_sizes, cpu_errors = _index(make_settings, encoders, tmp_path, library, "off")
    dev_vectors, dev_sizes, dev_errors = _index(
        make_settings, encoders, tmp_path, library, "always"
    )
    assert dev_errors == cpu_errors
    assert set(cpu_errors) >= {"empty.jpg", "notes.jpg", "truncated.jpg", "bomb.png", "cut.jpg"}
    assert dev_sizes == cpu_sizes
    assert cpu_sizes["rotated6.jpg"] == (100, 160)
    assert cpu_sizes["rotated3.jpg"] == (160, 100)
    assert cpu_sizes["bad-exif-small.jpg"] == (72, 40)  # kept as stored by Pillow's path
    assert set(dev_vectors) == set(cpu_vectors)
    assert len(cpu_sizes) == len(files) - len(cpu_errors)
    for name, vector in cpu_vectors.items():
        cosine = float(np.dot(vector, dev_vectors[name]))
        assert cosine >= 0.999, (name, cosine)


class _CountingDecoder(DeviceJpegDecoder):
    """The real decoder, counting what it decoded (and failing when told to)."""

    def __init__(self, *args: Any, fail: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.decoded = 0
        self.calls = 0
        self.fail = fail

    def decode(self, files: Any) -> list[Any]:
        self.calls += 1
        time.sleep(0.05)  # a slow device: the CPU lanes take their share meanwhile
        out = super().decode(files)
        self.decoded += sum(1 for item in out if item is not None)
        return out

    def _decode_jpegs(self, files: Any) -> list[Any]:
        if self.fail:  # what a GPU that is out of memory raises from nvJPEG
            raise torch.OutOfMemoryError("CUDA out of memory (the device failing)")
        return super()._decode_jpegs(files)


def _refs(root: Path, count: int) -> list[AssetRef]:
    import uuid

    root.mkdir(parents=True, exist_ok=True)
    refs = []
    for i in range(count):
        path = root / f"p{i:02d}.jpg"
        path.write_bytes(jpeg_bytes((96 + i, 72), (10 * i % 256, 80, 160), seed=i))
        refs.append(AssetRef(uuid.uuid4(), path))
    return refs


def test_lanes_share_the_work_and_results_come_in_order(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    encoder = _tiny_encoder(tiny_models)
    device = _CountingDecoder(torch.device("cpu"), _preprocessors(encoder), batch_size=6)
    # Enough photos that the device lane, started after the CPU lanes, finds some left.
    refs = _refs(tmp_path / "lib", 120)
    results = list(
        decoded_in_order(refs, [encoder], workers=2, max_pixels=10**8, lookahead=8, device=device)
    )
    assert [r.ref for r in results] == refs
    assert all(r.error is None and r.tensors is not None for r in results)
    assert 0 < device.decoded < len(refs)  # both kinds of lane decoded some
    cpu_only = list(decoded_in_order(refs, [encoder], workers=2, max_pixels=10**8, lookahead=8))
    ours = encoder.encode_preprocessed([r.tensors["clip"] for r in results if r.tensors])
    theirs = encoder.encode_preprocessed([r.tensors["clip"] for r in cpu_only if r.tensors])
    assert np.sum(ours * theirs, axis=1).min() >= 0.999


def test_a_failing_device_leaves_the_work_to_the_cpu(
    tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = _tiny_encoder(tiny_models)
    device = _CountingDecoder(torch.device("cpu"), _preprocessors(encoder), batch_size=4, fail=True)
    # Enough photos that the device lane, started after the CPU lane, finds some left
    # (with 12, the CPU lane once decoded all of them before the device lane asked).
    refs = _refs(tmp_path / "lib", 200)
    with caplog.at_level(logging.WARNING, logger=decoding.__name__):
        results = list(
            decoded_in_order(
                refs, [encoder], workers=1, max_pixels=10**8, lookahead=4, device=device
            )
        )
    assert [r.ref for r in results] == refs
    assert all(r.error is None and r.tensors is not None for r in results)
    assert "the CPU decodes these photos" in caplog.text
    # Never more than MAX_FAILED_RUNS tries: after that many in a row the lane stops.
    assert 1 <= device.calls <= device_decode.MAX_FAILED_RUNS
    while not device.failing:
        with pytest.raises(torch.OutOfMemoryError):
            device.decode([_probe_file(0)])
    assert device.calls == device_decode.MAX_FAILED_RUNS
    device.fail = False
    assert device.decode([_probe_file(0)])[0] is not None  # a success starts the count again
    assert not device.failing


def test_a_broken_lane_is_raised_to_the_consumer(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a CPU lane cannot survive (a worker process killed: BrokenProcessPool) stops
    the run with that error instead of leaving the consumer waiting."""
    encoder = _tiny_encoder(tiny_models)
    calls = {"n": 0}
    real = decoding.decode_one

    def dies_on_the_fifth(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise SystemError("the decode pool is broken")
        return real(*args)

    monkeypatch.setattr(decoding, "decode_one", dies_on_the_fifth)
    refs = _refs(tmp_path / "lib", 12)
    with pytest.raises(SystemError, match="broken"):
        list(decoded_in_order(refs, [encoder], workers=2, max_pixels=10**8, lookahead=4))


def test_the_window_bounds_lookahead_and_keeps_room_for_the_device() -> None:
    window = _Window(total=20, lookahead=6)
    assert window.claim(1) == range(0, 1)
    assert window.claim(3) == range(1, 4)
    # 2 of 6 places left: the device lane (runs of 4) waits, and the CPU lanes leave it
    # that room until it has its run.
    got: list[range] = []
    device = threading.Thread(target=lambda: got.append(window.claim(4, device=True)))
    device.start()
    time.sleep(0.2)
    assert got == []
    cpu: list[range] = []
    lane = threading.Thread(target=lambda: cpu.append(window.claim(1)))
    lane.start()
    time.sleep(0.2)
    assert cpu == []  # the device's room is kept
    for i in range(4):
        window.put(i, None)  # type: ignore[arg-type]
    window.take()
    window.take()  # 4 places free: the device's run fits
    device.join(timeout=5)
    assert got == [range(4, 8)]
    window.take()  # one more place: the CPU lane's
    lane.join(timeout=5)
    assert cpu == [range(8, 9)]
    window.close()
    assert window.claim(1) == range(0)


def test_auto_decodes_on_the_cpu_only(tiny_models: dict[str, Path]) -> None:
    encoder = _tiny_encoder(tiny_models)
    assert decoder_for([encoder], "auto") is None  # a CPU gains nothing from it
    assert decoder_for([encoder], "off") is None
    assert decoder_for([], "always") is None
    always = decoder_for([encoder], "always")
    assert always is not None
    assert always.batch_size == device_decode.DEVICE_DECODE_BATCH


def test_read_jpeg_takes_plain_jpegs_only(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(_rotated_jpeg((160, 100), 6))
    jpeg = read_jpeg(plain, max_pixels=10**8)
    assert jpeg is not None
    assert (jpeg.meta.width, jpeg.meta.height, jpeg.orientation) == (100, 160, 6)
    for name, data in {
        "a.png": png_bytes((40, 30), mode="RGB"),
        "b.mpo": mpo_bytes(),
        "c.jpg": _cmyk_jpeg(),
        "d.jpg": plain.read_bytes()[:-100],  # no end-of-image marker
        "e.jpg": bad_exif_jpeg_bytes(),  # EXIF that Pillow cannot rewrite when rotating
    }.items():
        (tmp_path / name).write_bytes(data)
        assert read_jpeg(tmp_path / name, max_pixels=10**8) is None, name
    from image_search_service.core.errors import ImageTooLarge, UnsupportedImage

    with pytest.raises(ImageTooLarge):
        read_jpeg(plain, max_pixels=100)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UnsupportedImage, match="empty"):
        read_jpeg(tmp_path / "empty.jpg", max_pixels=10**8)


def test_a_refused_file_is_found_by_halving_the_run(tiny_models: dict[str, Path]) -> None:
    """nvJPEG's batched call is all or nothing: one file it refuses costs a few smaller
    calls, and only that file goes back to the CPU."""
    encoder = _tiny_encoder(tiny_models)
    decoder = DeviceJpegDecoder(torch.device("cpu"), _preprocessors(encoder))
    files = [_probe_file(i) for i in range(7)]
    broken = files[4]
    files[4] = JpegFile(b"\xff\xd8 not a picture \xff\xd9", broken.meta, 1)
    out = decoder.decode(files)
    assert [item is None for item in out] == [i == 4 for i in range(7)]
    assert not decoder.failing  # a file's fault, not the device's


def test_runs_are_split_by_decoded_pixels(tiny_models: dict[str, Path]) -> None:
    files = [_probe_file(i) for i in range(5)]  # 120 x 90 each
    runs = device_decode._runs(files, max_pixels=3 * 120 * 90)
    assert [len(run) for run in runs] == [3, 2]
    assert [len(run) for run in device_decode._runs(files, max_pixels=10)] == [1] * 5


def test_a_device_that_garbles_pictures_is_not_used(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check at first use compares the device's pictures with the CPU path's: a
    decoder that skips or garbles a picture (reported for nvJPEG's hardware decoder)
    leaves the decoding to the CPU, with a warning."""
    encoder = _tiny_encoder(tiny_models)
    monkeypatch.setattr(device_decode, "_checked", {})

    def blank(self: DeviceJpegDecoder, files: Any) -> list[Any]:
        return [torch.zeros(3, f.meta.height, f.meta.width, dtype=torch.uint8) for f in files]

    monkeypatch.setattr(DeviceJpegDecoder, "_decode_jpegs", blank)
    with caplog.at_level(logging.WARNING, logger=device_decode.__name__):
        assert decoder_for([encoder], "always") is None
    assert "decodes a test JPEG differently" in caplog.text


def _probe_file(seed: int) -> JpegFile:
    data = jpeg_bytes((120, 90), (30 * seed % 256, 90, 160), seed=seed)
    return JpegFile(data, ImageMeta(120, 90, "JPEG", None, None, None), 1)


def test_the_device_lane_beside_decode_processes(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """With the CPU lanes in worker processes (DECODE_PROCESSES, for many cores) the
    device lane still takes its share in the parent, and results keep their order."""
    encoder = _tiny_encoder(tiny_models)
    device = _CountingDecoder(torch.device("cpu"), _preprocessors(encoder), batch_size=5)
    refs = _refs(tmp_path / "lib", 30)
    results = list(
        decoded_in_order(
            refs, [encoder], workers=1, processes=2, max_pixels=10**8, lookahead=6, device=device
        )
    )
    assert [r.ref for r in results] == refs
    assert all(r.error is None and r.tensors is not None for r in results)
    assert 0 < device.decoded < len(refs)
    vectors = encoder.encode_preprocessed([r.tensors["clip"] for r in results if r.tensors])
    assert vectors.shape == (30, 512)
