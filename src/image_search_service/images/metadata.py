"""Who is in a photo, its keywords, caption and title: read from XMP, IPTC and EXIF.

Sources, in order of precedence per field (see docs/metadata.md):

1. an XMP sidecar next to the file (``photo.jpg.xmp``, else ``photo.xmp``),
2. XMP embedded in the file (JPEG APP1, PNG iTXt ``XML:com.adobe.xmp``, WebP ``XMP``),
3. IPTC-IIM (JPEG APP13: keywords 2:25, caption 2:120, object name 2:05),
4. EXIF ImageDescription (caption only).

A field found in a higher source replaces the lower ones. Reading never raises for bad
input: malformed, oversized or non-UTF-8 XMP, absurd region counts or a sidecar that
is not XML leave that source out and say why in ``problems``.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from PIL import Image, ImageFile, IptcImagePlugin, UnidentifiedImageError

MAX_XMP_BYTES = 512 * 1024  # real XMP packets are a few KB; padding included, well under this
MAX_REGIONS = 200  # more face regions than any real photo holds: refused as garbage
MAX_TAGS = 200
MAX_NAME_CHARS = 200
MAX_CAPTION_CHARS = 4000

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_MWG_RS = "http://www.metadataworkinggroup.com/schemas/regions/"
_ST_AREA = "http://ns.adobe.com/xmp/sType/Area#"
_MP = "http://ns.microsoft.com/photo/1.2/"
_MPRI = "http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
_MPREG = "http://ns.microsoft.com/photo/1.2/t/Region#"
_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_TAG_IMAGE_DESCRIPTION = 0x010E
_IPTC_KEYWORDS, _IPTC_CAPTION, _IPTC_TITLE = (2, 25), (2, 120), (2, 5)


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def normalise_name(name: str) -> str:
    """The key names are matched by: Unicode-normalised, case-folded, single-spaced."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def display_name(name: str) -> str:
    """A name as written, with its whitespace tidied and its length bounded."""
    return " ".join(unicodedata.normalize("NFC", name).split())[:MAX_NAME_CHARS]


_UNSEEN = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank_name(name: str) -> bool:
    """Nothing a person could see: empty, or only spaces, control characters and
    invisible format characters (a zero-width space). Such a name is refused."""
    return all(unicodedata.category(c) in _UNSEEN for c in name)


@dataclass(frozen=True)
class Box:
    """A face region, normalised to the image: left, top, width, height in 0..1."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class PersonRegion:
    name: str
    box: Box | None = None


@dataclass
class _Fields:
    """What one source said; ``None`` means "this source does not set the field"."""

    people: list[PersonRegion] | None = None
    tags: list[str] | None = None
    caption: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class PhotoMetadata:
    people: tuple[PersonRegion, ...] = ()
    tags: tuple[str, ...] = ()
    caption: str | None = None
    title: str | None = None
    sidecar: Path | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def problem(self) -> str | None:
        return "; ".join(self.problems) or None


class MetadataProblem(ValueError):
    """One source could not be read; the message says why."""


def sidecar_for(path: Path) -> Path | None:
    """The XMP sidecar of ``path``: ``photo.jpg.xmp`` (darktable, digiKam) before
    ``photo.xmp`` (Lightroom, Capture One)."""
    for candidate in (
        path.with_name(path.name + ".xmp"),
        path.with_name(path.name + ".XMP"),
        path.with_suffix(".xmp"),
        path.with_suffix(".XMP"),
    ):
        if candidate.is_file():
            return candidate
    return None


NO_SIDECAR = "none"


def sidecar_signature(path: Path) -> str:
    """Changes when the sidecar appears, disappears or is rewritten: what an incremental
    index run compares to pick up a sidecar edit on an unchanged photo (a photo whose
    metadata was never read has no signature recorded, so it is read too)."""
    sidecar = sidecar_for(path)
    if sidecar is None:
        return NO_SIDECAR
    try:
        stat = sidecar.stat()
    except OSError:
        return NO_SIDECAR
    return f"{sidecar.name}:{stat.st_size}:{stat.st_mtime_ns}"[:255]


def read_metadata(path: Path) -> PhotoMetadata:
    """People, tags, caption and title of the photo at ``path``; never raises for bad
    metadata (the reasons are in ``problems``)."""
    problems: list[str] = []
    layers: list[_Fields] = []
    try:
        with Image.open(path) as img:
            layers.extend(_embedded(img, problems))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        problems.append(f"embedded metadata unreadable: {exc}")
    sidecar = sidecar_for(path)
    if sidecar is not None:
        try:
            layers.append(parse_xmp(_read_bounded(sidecar)))
        except MetadataProblem as exc:
            problems.append(f"sidecar {sidecar.name}: {exc}")
        except OSError as exc:
            problems.append(f"sidecar {sidecar.name}: cannot read ({exc})")
    merged = _Fields()
    for layer in layers:  # lowest precedence first: later layers replace a field
        for name in ("people", "tags", "caption", "title"):
            value = getattr(layer, name)
            if value is not None:
                setattr(merged, name, value)
    return PhotoMetadata(
        people=tuple(_dedupe_people(merged.people or [])),
        tags=tuple(_dedupe(merged.tags or [])),
        caption=merged.caption,
        title=merged.title,
        sidecar=sidecar,
        problems=tuple(problems),
    )


def _read_bounded(path: Path) -> bytes:
    size = os.path.getsize(path)
    if size > MAX_XMP_BYTES:
        raise MetadataProblem(f"{size:,} bytes, over the limit of {MAX_XMP_BYTES:,}")
    return path.read_bytes()


def _embedded(img: Image.Image, problems: list[str]) -> Iterator[_Fields]:
    """The file's own layers, lowest precedence first: EXIF, IPTC, XMP."""
    description = _text(img.getexif().get(_TAG_IMAGE_DESCRIPTION))
    if description:
        yield _Fields(caption=description[:MAX_CAPTION_CHARS])
    if img.format == "JPEG" and isinstance(img, ImageFile.ImageFile):
        try:
            iptc = IptcImagePlugin.getiptcinfo(img)
        except (OSError, SyntaxError, ValueError, IndexError) as exc:
            problems.append(f"IPTC unreadable: {exc}")
            iptc = None
        if iptc:
            yield _iptc_fields(iptc)
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if xmp:
        raw = xmp.encode("utf-8", "surrogateescape") if isinstance(xmp, str) else bytes(xmp)
        try:
            if len(raw) > MAX_XMP_BYTES:
                raise MetadataProblem(f"{len(raw):,} bytes, over the limit of {MAX_XMP_BYTES:,}")
            yield parse_xmp(raw)
        except MetadataProblem as exc:
            problems.append(f"embedded XMP: {exc}")


def _iptc_fields(iptc: dict[tuple[int, int], Any]) -> _Fields:
    def values(key: tuple[int, int]) -> list[str]:
        raw = iptc.get(key)
        items = raw if isinstance(raw, list) else [raw] if raw is not None else []
        return [t for t in (_decode_iptc(v) for v in items) if t]

    keywords = values(_IPTC_KEYWORDS)
    caption = values(_IPTC_CAPTION)
    title = values(_IPTC_TITLE)
    return _Fields(
        tags=keywords[:MAX_TAGS] or None,
        caption=caption[0][:MAX_CAPTION_CHARS] if caption else None,
        title=title[0][:MAX_NAME_CHARS] if title else None,
    )


def _decode_iptc(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")  # IIM without a charset record
        return _text(text)
    return _text(value)


def parse_xmp(raw: bytes) -> _Fields:
    """The fields an XMP packet sets. Raises :class:`MetadataProblem` for anything that is
    not a well-formed, safe, reasonably sized XMP document."""
    if len(raw) > MAX_XMP_BYTES:
        raise MetadataProblem(f"{len(raw):,} bytes, over the limit of {MAX_XMP_BYTES:,}")
    try:
        root = fromstring(raw.strip(b"\x00 \t\r\n"))
    except DefusedXmlException as exc:
        raise MetadataProblem(f"refused unsafe XML ({type(exc).__name__})") from None
    except (ParseError, ValueError, UnicodeDecodeError) as exc:
        raise MetadataProblem(f"not well-formed XML ({exc})") from None
    result = _Fields()
    regions = _mwg_regions(root) + _mp_regions(root)
    in_image = _bag(root, _q(_IPTC_EXT, "PersonInImage"))
    if regions or in_image is not None:
        people = [r for r in regions if r.name]
        people += [PersonRegion(display_name(n)) for n in in_image or [] if display_name(n)]
        result.people = people
    subject = _bag(root, _q(_DC, "subject"))
    if subject is not None:
        if len(subject) > MAX_TAGS:
            raise MetadataProblem(f"{len(subject)} keywords, over the limit of {MAX_TAGS}")
        result.tags = [display_name(t) for t in subject if display_name(t)]
    caption = _alt(root, _q(_DC, "description"))
    if caption:
        result.caption = caption[:MAX_CAPTION_CHARS]
    title = _alt(root, _q(_DC, "title"))
    if title:
        result.title = title[:MAX_NAME_CHARS]
    return result


def _descriptions(root: Element) -> Iterator[Element]:
    yield from root.iter(_q(_RDF, "Description"))


def _prop(node: Element, name: str) -> Element | str | None:
    """A property of a struct node: an attribute (short form) or a child element."""
    if name in node.attrib:
        return node.attrib[name]
    child = node.find(name)
    if child is not None:
        return child
    for desc in node.findall(_q(_RDF, "Description")):  # rdf:li > rdf:Description
        found = _prop(desc, name)
        if found is not None:
            return found
    return None


def _prop_text(node: Element, name: str) -> str | None:
    value = _prop(node, name)
    if isinstance(value, str):
        return _text(value)
    if value is None:
        return None
    if value.text and value.text.strip():
        return _text(value.text)
    for li in value.iter(_q(_RDF, "li")):
        return _text(li.text)
    return None


def _struct(node: Element) -> Element:
    """The element holding a struct's fields (``rdf:parseType="Resource"`` or an inner
    ``rdf:Description``)."""
    inner = node.find(_q(_RDF, "Description"))
    return inner if inner is not None else node


def _items(container: Element) -> list[Element]:
    """The ``rdf:li`` of the Bag/Seq/Alt directly under a property element."""
    items: list[Element] = []
    for array in container:
        if array.tag in (_q(_RDF, "Bag"), _q(_RDF, "Seq"), _q(_RDF, "Alt")):
            items.extend(array.findall(_q(_RDF, "li")))
    return items


def _check_count(count: int) -> None:
    if count > MAX_REGIONS:
        raise MetadataProblem(f"{count} face regions, over the limit of {MAX_REGIONS}")


def _mwg_regions(root: Element) -> list[PersonRegion]:
    out: list[PersonRegion] = []
    for region_list in root.iter(_q(_MWG_RS, "RegionList")):
        items = _items(region_list)
        _check_count(len(items) + len(out))
        for li in items:
            node = _struct(li)
            kind = _prop_text(node, _q(_MWG_RS, "Type"))
            name = _prop_text(node, _q(_MWG_RS, "Name"))
            if not name or (kind and kind.lower() not in ("face", "person")):
                continue
            area = _prop(node, _q(_MWG_RS, "Area"))
            box = _mwg_box(_struct(area)) if isinstance(area, Element) else None
            out.append(PersonRegion(display_name(name), box))
    return out


def _mwg_box(area: Element) -> Box | None:
    """MWG areas give the centre of the region; stored as its top-left corner."""
    try:
        x, y, w, h = (float(_prop_text(area, _q(_ST_AREA, k)) or "nan") for k in "xywh")
    except ValueError:
        return None
    return _box(x - w / 2, y - h / 2, w, h)


def _mp_regions(root: Element) -> list[PersonRegion]:
    out: list[PersonRegion] = []
    for regions in root.iter(_q(_MPRI, "Regions")):
        items = _items(regions)
        _check_count(len(items) + len(out))
        for li in items:
            node = _struct(li)
            name = _prop_text(node, _q(_MPREG, "PersonDisplayName"))
            if not name:
                continue
            rect = _prop_text(node, _q(_MPREG, "Rectangle"))
            box = None
            if rect:
                try:
                    x, y, w, h = (float(p) for p in rect.split(","))
                    box = _box(x, y, w, h)
                except ValueError:
                    box = None
            out.append(PersonRegion(display_name(name), box))
    return out


def _box(x: float, y: float, w: float, h: float) -> Box | None:
    values = (x, y, w, h)
    if any(v != v for v in values) or w <= 0 or h <= 0:  # NaN or empty
        return None
    x, y, w, h = (round(min(1.0, max(0.0, v)), 6) for v in values)
    return Box(x, y, w, h)


def _bag(root: Element, name: str) -> list[str] | None:
    for desc in _descriptions(root):
        value = _prop(desc, name)
        if isinstance(value, str):
            return [value]
        if value is not None:
            return [t for t in (_text(li.text) for li in _items(value)) if t]
    return None


def _alt(root: Element, name: str) -> str | None:
    """A language alternative: the ``x-default`` entry, else the first."""
    for desc in _descriptions(root):
        value = _prop(desc, name)
        if isinstance(value, str):
            return _text(value)
        if value is None:
            continue
        items = _items(value)
        for li in items:
            if li.get(_XML_LANG) == "x-default" and _text(li.text):
                return _text(li.text)
        for li in items:
            if _text(li.text):
                return _text(li.text)
        return _text(value.text)
    return None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.replace("\x00", " ").split())
    return text or None


def _dedupe(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        key = normalise_name(name)
        if key and key not in seen:
            seen.add(key)
            out.append(display_name(name))
    return out


def _dedupe_people(people: Iterable[PersonRegion]) -> list[PersonRegion]:
    """One entry per person; the first region with a box wins."""
    by_key: dict[str, PersonRegion] = {}
    for person in people:
        key = normalise_name(person.name)
        if not key:
            continue
        known = by_key.get(key)
        if known is None or (known.box is None and person.box is not None):
            by_key[key] = person
    return list(by_key.values())
