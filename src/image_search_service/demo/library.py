"""The demo library: synthetic pictures that carry what real photos carry, so that the
demo shows every filter - capture dates over several years (EXIF DateTimeOriginal),
people and tags and captions (XMP, as Lightroom and digiKam write them), and some
PNG and HEIC files beside the JPEGs.

The pictures are the training generator's (``synthetic.random_picture``); file names
keep its labels, so the demo can still tell which results are right.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

from image_search_service.demo.synthetic import file_stem, random_picture

PEOPLE = ("Alice", "Ben", "Chloe", "Dev")
TAGS = ("holiday", "garden", "family", "work", "favourite")
SEASONS = ("winter", "spring", "summer", "autumn")
FIRST_DAY = datetime(2019, 1, 1, 8, 0)
DAYS = 6 * 365  # capture dates spread over 2019-2024
PNG_EVERY = 7  # every 7th picture is a PNG
HEIC_EVERY = 11  # and every 11th a HEIC, where pillow-heif can write one
EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 0x9003
DATE_TIME = 0x0132
SUBFOLDERS = ("2019-2020", "2021-2022", "2023-2024")


@dataclass(frozen=True)
class DemoPhoto:
    path: Path
    labels: frozenset[str]
    taken_at: datetime
    people: tuple[str, ...]
    tags: tuple[str, ...]
    caption: str


def xmp_packet(people: tuple[str, ...], tags: tuple[str, ...], caption: str) -> bytes:
    """An XMP packet with MWG face regions, dc:subject and dc:description."""
    faces = "".join(
        f'<rdf:li rdf:parseType="Resource"><mwg-rs:Name>{escape(name)}</mwg-rs:Name>'
        "<mwg-rs:Type>Face</mwg-rs:Type>"
        f'<mwg-rs:Area stArea:x="{0.25 + 0.5 * i}" stArea:y="0.3" stArea:w="0.2" '
        'stArea:h="0.2" stArea:unit="normalized"/></rdf:li>'
        for i, name in enumerate(people)
    )
    parts = []
    if faces:
        parts.append(
            '<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag>'
            f"{faces}</rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions>"
        )
    if tags:
        items = "".join(f"<rdf:li>{escape(tag)}</rdf:li>" for tag in tags)
        parts.append(f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>")
    parts.append(
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"{escape(caption)}</rdf:li></rdf:Alt></dc:description>"
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/" '
        'xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#">'
        f"{''.join(parts)}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def _heif_writer() -> bool:
    """Whether pillow-heif is installed and can encode HEIC here."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        return bool(pillow_heif.libheif_info().get("HEIF"))
    except Exception:  # not installed, or built without an encoder
        return False


def write_demo_library(root: Path, count: int, *, seed: int) -> list[DemoPhoto]:
    """Write ``count`` pictures with dates, people, tags and captions under ``root``.
    Deterministic given ``seed`` (the HEIC files aside, which need pillow-heif)."""
    rng = random.Random(seed)
    heic = _heif_writer()
    width = max(4, len(str(max(count - 1, 0))))
    written = []
    for index in range(count):
        picture = random_picture(rng, two_shape_probability=0.3, size_range=(160, 320))
        taken = FIRST_DAY + timedelta(
            days=index * DAYS // max(count, 1), minutes=rng.randint(0, 600)
        )
        people = tuple(sorted(rng.sample(PEOPLE, rng.choice((1, 1, 2))))) if index % 3 else ()
        tags = tuple(sorted(rng.sample(TAGS, rng.choice((1, 2))))) if index % 2 else ()
        # Words beside the pictures, not about their shapes: a caption naming the shapes
        # would make the full-text half of a search match every "red" picture.
        caption = f"Sketch {index + 1}, {SEASONS[taken.month % 12 // 3]} {taken.year}"
        if people:
            caption += f", drawn by {' and '.join(people)}"
        folder = root / SUBFOLDERS[min(len(SUBFOLDERS) - 1, (taken.year - 2019) // 2)]
        folder.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        stamp = taken.strftime("%Y:%m:%d %H:%M:%S")
        # DateTime too: Pillow drops an EXIF sub-IFD from a PNG when IFD0 is empty.
        exif[DATE_TIME] = stamp
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = stamp
        xmp = xmp_packet(people, tags, caption)
        stem = file_stem(index, picture, width=width)
        quality = rng.randint(70, 95)
        if heic and index % HEIC_EVERY == HEIC_EVERY - 1:
            path = folder / f"{stem}.heic"
            picture.image.save(path, format="HEIF", quality=quality, exif=exif, xmp=xmp)
        elif index % PNG_EVERY == PNG_EVERY - 1:
            path = folder / f"{stem}.png"
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
            picture.image.save(path, format="PNG", exif=exif, pnginfo=info)
        else:
            path = folder / f"{stem}.jpg"
            picture.image.save(path, format="JPEG", quality=quality, exif=exif, xmp=xmp)
        written.append(
            DemoPhoto(
                path=path,
                labels=picture.labels,
                taken_at=taken,
                people=people,
                tags=tags,
                caption=caption,
            )
        )
    return written
