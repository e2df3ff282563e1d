"""Small builders for test data: tiny open_clip models and real image files."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from open_clip.model import CLIP, CustomTextCLIP
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from image_search_service.core.config import Settings

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def write_tiny_model(directory: Path, *, embed_dim: int, sigmoid: bool, seed: int = 0) -> Path:
    """A random-weight open_clip model in the ``local-dir:`` layout.

    ``sigmoid`` makes it SigLIP-style (custom text tower, logit bias, mean=std=0.5,
    squash resize). Names avoid "siglip" so open_clip keeps its bundled tokenizer.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg: dict[str, Any] = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    if sigmoid:
        model_cfg["init_logit_bias"] = -10.0
        preprocess: dict[str, Any] = {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash"}
    else:
        preprocess = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_mode": "shortest"}
    preprocess["interpolation"] = "bicubic"
    preprocess["size"] = 32
    torch.manual_seed(seed)
    model = CustomTextCLIP(**model_cfg) if sigmoid else CLIP(**model_cfg)
    if sigmoid:
        model_cfg["custom_text"] = True
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess})
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def jpeg_bytes(
    size: tuple[int, int] = (64, 48),
    colour: tuple[int, int, int] = (200, 30, 30),
    *,
    seed: int = 0,
    quality: int = 90,
    exif: Image.Exif | None = None,
) -> bytes:
    """A real JPEG with a little structure (a random rectangle) so files differ."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
    fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    draw.rectangle([x0, y0, x0 + size[0] // 3, y0 + size[1] // 3], fill=fill)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, exif=exif or Image.Exif())
    return buf.getvalue()


# (width, height): landscape, portrait, square, wide, smaller than the model, a large
# photo that the scaled JPEG decode brings down near the model's size.
GRADIENT_SIZES = [(640, 480), (480, 640), (300, 300), (900, 400), (50, 37), (3000, 2000)]


def gradient_photos(directory: Path, sizes: list[tuple[int, int]] = GRADIENT_SIZES) -> list[Path]:
    """Real JPEGs with gradients, noise and shapes, so resampling differences show."""
    import numpy as np

    rng = np.random.default_rng(7)
    paths = []
    for i, (w, h) in enumerate(sizes):
        x = np.linspace(0, 255, w)[None, :, None]
        y = np.linspace(0, 255, h)[:, None, None]
        base = (x * [1, 0.3, 0.7] + y * [0.2, 1, 0.4]) / 1.5 + rng.normal(0, 25, (h, w, 3))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
            box = [x0, y0, x0 + int(rng.integers(3, w // 2 + 4)), y0 + int(rng.integers(3, h))]
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if i % 2 else draw.rectangle)(box, fill=fill)
        path = directory / f"photo{i}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return paths


def write_jpeg(path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(**kwargs))
    return path


def png_bytes(size: tuple[int, int] = (40, 40), mode: str = "RGBA") -> bytes:
    image = Image.new(mode, size)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def broken_files(directory: Path) -> dict[str, Path]:
    """One of every kind of unreadable file an index run must survive."""
    directory.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes((80, 60), seed=99)
    files = {
        "zero_byte": directory / "empty.jpg",
        "not_image": directory / "notes.jpg",
        "truncated": directory / "truncated.jpg",
        "corrupt": directory / "corrupt.jpeg",
        "bomb": directory / "bomb.png",
    }
    files["zero_byte"].write_bytes(b"")
    files["not_image"].write_bytes(b"these are my holiday notes, not a picture\n" * 10)
    files["truncated"].write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[20 : len(corrupt) - 10] = bytes(len(corrupt) - 30)  # header kept, data zeroed
    files["corrupt"].write_bytes(bytes(corrupt))
    files["bomb"].write_bytes(bomb_png_bytes())
    return files


def bomb_png_bytes(side: int = 20_000) -> bytes:
    """A tiny PNG that claims side x side pixels (a decompression bomb)."""
    image = Image.new("1", (side, side))
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def bad_exif_jpeg_bytes(size: tuple[int, int] = (72, 40), *, seed: int = 7) -> bytes:
    """A readable JPEG whose EXIF makes Pillow's transpose raise ``struct.error``: it
    asks for a rotation and stores a 32-bit value in a tag Pillow rewrites as 16-bit."""
    ifd = struct.pack("<H", 2)
    ifd += struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", 6, 0)  # orientation 6
    ifd += struct.pack("<HHI", 0x0128, 4, 1) + struct.pack("<I", 70_000)  # unit as LONG
    ifd += struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    image = Image.open(io.BytesIO(jpeg_bytes(size, seed=seed)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buf.getvalue()


def mpo_bytes(size: tuple[int, int] = (64, 48), *, seed: int = 11) -> bytes:
    """A two-frame MPO (what phones write for portrait / stereo photos)."""
    first = Image.open(io.BytesIO(jpeg_bytes(size, (30, 160, 200), seed=seed)))
    second = Image.open(io.BytesIO(jpeg_bytes(size, (10, 10, 10), seed=seed + 1)))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    return buf.getvalue()


def elongated_png_bytes(size: tuple[int, int] = (1, 100_000)) -> bytes:
    """A few hundred bytes that would make a model's preprocessing build millions of
    pixels (the short side is resized up to the model's input size)."""
    image = Image.new("L", size, 128)
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def hostile_files(directory: Path, outside: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """A folder of hostile files mixed with valid photos: (valid, hostile) by name.

    ``outside`` is a folder outside ``directory`` that receives a real photo the
    library must not reach through a symlink."""
    valid = {
        "plain": write_jpeg(directory / "plain.jpg", seed=301, size=(90, 60)),
        "bad_exif": directory / "bad_exif.jpg",
        "mpo": directory / "phone.jpg",
        "linked_inside": directory / "link_inside.jpg",
    }
    valid["bad_exif"].write_bytes(bad_exif_jpeg_bytes())
    valid["mpo"].write_bytes(mpo_bytes())
    target_inside = write_jpeg(directory / "sub" / "target.jpg", seed=302, size=(70, 70))
    valid["linked_inside"].symlink_to(target_inside)
    valid["target_inside"] = target_inside
    private = write_jpeg(outside / "private.jpg", seed=303, size=(66, 50))
    hostile = dict(broken_files(directory / "broken"))
    hostile["elongated"] = directory / "strip.png"
    hostile["elongated"].write_bytes(elongated_png_bytes())
    hostile["passwd_link"] = directory / "x.jpg"
    hostile["passwd_link"].symlink_to("/etc/passwd")
    hostile["outside_link"] = directory / "private_link.jpg"
    hostile["outside_link"].symlink_to(private)
    hostile["dangling_link"] = directory / "dangling.jpg"
    hostile["dangling_link"].symlink_to(outside / "nothing-here.jpg")
    return valid, hostile


def png_claiming(size: tuple[int, int]) -> bytes:
    """A PNG whose header claims ``size`` and holds no pixel data: what is refused from
    the header must be refused without decoding (or allocating) anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# Formats phones and cameras write, besides JPEG and PNG. MPO and GIF get a second frame
# of another colour, so a test can tell that the first frame was read.
PHONE_FORMATS = ("HEIF", "MPO", "GIF", "TIFF", "AVIF", "WEBP")
SUFFIX = {"HEIF": ".heic", "MPO": ".mpo", "GIF": ".gif", "TIFF": ".tif", "AVIF": ".avif"}


def photo_bytes(
    fmt: str,
    size: tuple[int, int] = (64, 48),
    colour: tuple[int, int, int] = (200, 30, 30),
    *,
    seed: int = 0,
) -> bytes:
    """A real image file of ``fmt`` (a Pillow format name, HEIF through pillow-heif)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    first = Image.open(io.BytesIO(jpeg_bytes(size, colour, seed=seed))).convert("RGB")
    buf = io.BytesIO()
    if fmt in ("MPO", "GIF"):
        second = Image.new("RGB", size, (0, 0, 255))
        first.save(buf, fmt, save_all=True, append_images=[second])
    else:
        first.save(buf, fmt)
    return buf.getvalue()


def write_photo(path: Path, fmt: str, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(photo_bytes(fmt, **kwargs))
    return path


def textured_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like picture (blurred shapes plus noise): distinct seeds look unrelated."""
    from PIL import ImageFilter

    rng = random.Random(seed)
    small = Image.new("RGB", (size[0] // 8, size[1] // 8))
    draw = ImageDraw.Draw(small)
    max_radius = max(8, min(small.size) // 3)
    for _ in range(40):
        x, y = rng.randrange(small.width), rng.randrange(small.height)
        r = rng.randrange(4, max_radius)
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    big = small.resize(size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise(size, 24).convert("RGB")
    return Image.blend(big, noise, 0.15)


def near_duplicates(image: Image.Image) -> dict[str, Image.Image]:
    """What a library collects of one photo: a re-save, a smaller copy, a light crop."""
    w, h = image.size
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=60)
    return {
        "resave": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "half": image.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "crop": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
    }


def demo_models_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a library indexed with the two shipped demo models (quality tests)."""
    values: dict[str, Any] = {
        "_env_file": None,
        "data_dir": data_dir,
        "clip_model_name": "demo-clip",
        "clip_pretrained": "",
        "siglip_model_name": "demo-siglip",
        "siglip_pretrained": "",
        "batch_size": 32,
        **overrides,
    }
    return Settings(**values)
