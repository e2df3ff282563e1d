"""Reading people, tags, captions and titles from real files and sidecars."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_search_service.images.metadata import (
    MAX_REGIONS,
    MAX_XMP_BYTES,
    NO_SIDECAR,
    Box,
    is_blank_name,
    normalise_name,
    read_metadata,
    sidecar_signature,
)
from tests.xmp_factories import (
    jpeg_with_iptc,
    jpeg_with_xmp,
    png_bytes_with_raw_xmp,
    png_with_xmp,
    webp_with_xmp,
    write_jpeg_with_xmp,
    xmp_packet,
)

FULL = xmp_packet(
    people=["Pat", ("Jack", (0.5, 0.4, 0.2, 0.4))],
    mp_people=["Ann Lee"],
    tags=["Christmas", "cabin"],
    caption="Christmas morning at the cabin",
    title="Presents",
)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.jpg", jpeg_with_xmp(FULL)),
        ("a.png", png_with_xmp(FULL)),
        ("a.webp", webp_with_xmp(FULL)),
    ],
)
def test_embedded_xmp_in_every_format(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    meta = read_metadata(path)
    assert [p.name for p in meta.people] == ["Pat", "Jack", "Ann Lee"]
    # MWG gives the centre; stored as the top-left corner. MP gives the corner already.
    assert meta.people[1].box == Box(0.4, 0.2, 0.2, 0.4)
    assert meta.people[2].box == Box(0.1, 0.2, 0.3, 0.4)
    assert meta.tags == ("Christmas", "cabin")
    assert meta.caption == "Christmas morning at the cabin"
    assert meta.title == "Presents"
    assert meta.problems == ()


def test_iptc_and_exif_description(tmp_path: Path) -> None:
    path = tmp_path / "iptc.jpg"
    path.write_bytes(
        jpeg_with_iptc(keywords=["beach", "Sonnenuntergang"], caption="Dusk", title="T")
    )
    meta = read_metadata(path)
    assert (meta.tags, meta.caption, meta.title) == (("beach", "Sonnenuntergang"), "Dusk", "T")
    only_exif = tmp_path / "exif.jpg"
    only_exif.write_bytes(jpeg_with_iptc(description="A quiet harbour"))
    assert read_metadata(only_exif).caption == "A quiet harbour"


@pytest.mark.parametrize("sidecar_name", ["photo.jpg.xmp", "photo.xmp"])
def test_sidecar_overrides_embedded_fields_it_sets(tmp_path: Path, sidecar_name: str) -> None:
    photo = write_jpeg_with_xmp(tmp_path / "photo.jpg", xmp_packet(people=["Pat"], tags=["old"]))
    assert sidecar_signature(photo) == NO_SIDECAR
    (tmp_path / sidecar_name).write_bytes(xmp_packet(tags=["new", "NEW", "beach"]))
    meta = read_metadata(photo)
    assert meta.sidecar == tmp_path / sidecar_name
    assert [p.name for p in meta.people] == ["Pat"]  # the sidecar does not set people
    assert meta.tags == ("new", "beach")  # deduplicated case-insensitively
    assert sidecar_signature(photo) != NO_SIDECAR


def _packet_with_raw_body(body: str) -> bytes:
    return xmp_packet(caption="PLACEHOLDER").replace(b"PLACEHOLDER", body.encode())


@pytest.mark.parametrize(
    ("label", "xmp", "reason"),
    [
        ("malformed", b"<x:xmpmeta><rdf:RDF><unclosed>", "not well-formed"),
        ("non-utf8", xmp_packet(caption="caf\u00e9").replace("é".encode(), b"\xe9"), "well-formed"),
        (
            "entities",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<x>&b;</x>",
            "unsafe",
        ),
        (
            "regions",
            xmp_packet(people=[f"P{i}" for i in range(MAX_REGIONS * 10)], tags=["kept?"]),
            "face regions",
        ),
        ("oversized", xmp_packet(caption="x" * (MAX_XMP_BYTES + 10)), "over the limit"),
    ],
)
def test_bad_embedded_xmp_is_left_out_with_its_reason(
    tmp_path: Path, label: str, xmp: bytes, reason: str
) -> None:
    path = tmp_path / f"{label}.png"  # PNG iTXt holds any size (JPEG APP1 stops at 64 KB)
    path.write_bytes(png_bytes_with_raw_xmp(xmp))
    meta = read_metadata(path)
    assert (meta.people, meta.tags, meta.caption) == ((), (), None)
    assert reason in (meta.problem or ""), meta.problem


def test_a_sidecar_that_is_not_xml(tmp_path: Path) -> None:
    photo = write_jpeg_with_xmp(tmp_path / "p.jpg", xmp_packet(people=["Pat"]))
    (tmp_path / "p.jpg.xmp").write_bytes(b"\x89PNG this is not xml at all \xff\xfe")
    meta = read_metadata(photo)
    assert [p.name for p in meta.people] == ["Pat"]  # the file's own XMP still counts
    assert "sidecar p.jpg.xmp" in (meta.problem or "")


def test_names_are_matched_normalised_but_kept_as_written() -> None:
    assert normalise_name("  Mary   ANN ") == "mary ann"
    assert normalise_name("Ｐａｔ") == "pat"  # full-width letters (NFKC)
    assert normalise_name("STRASSE") == normalise_name("straße")  # case folding
    assert normalise_name("Mary\tAnn\n") == "mary ann"  # tabs and newlines are spaces


def test_a_name_of_only_invisible_characters_is_blank() -> None:
    for blank in ("", "  ", "\u200b", "\x00\x07", "\u00a0\u2028", "\ufeff "):
        assert is_blank_name(blank), repr(blank)
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joined by ZWJs: visible
    for name in ("Pat", family, "\u05d3\u05d5\u05d3\u200f", "a\u200bb"):
        assert not is_blank_name(name), repr(name)
