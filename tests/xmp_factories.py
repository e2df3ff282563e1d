"""Real XMP packets, sidecars and image files carrying them, for metadata tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin

from tests.factories import jpeg_bytes

Region = tuple[str, tuple[float, float, float, float] | None]  # name, MWG centre box


def xmp_packet(
    *,
    people: Sequence[str | Region] = (),
    mp_people: Sequence[str] = (),
    tags: Sequence[str] = (),
    caption: str | None = None,
    title: str | None = None,
) -> bytes:
    """An XMP packet as Lightroom/digiKam write it: MWG face regions (struct form),
    Microsoft People regions, dc:subject, dc:description and dc:title."""
    parts: list[str] = []
    if people:
        items = []
        for entry in people:
            name, box = (entry, (0.5, 0.5, 0.2, 0.2)) if isinstance(entry, str) else entry
            area = (
                f'<mwg-rs:Area stArea:x="{box[0]}" stArea:y="{box[1]}" stArea:w="{box[2]}" '
                f'stArea:h="{box[3]}" stArea:unit="normalized"/>'
                if box
                else ""
            )
            items.append(
                f'<rdf:li rdf:parseType="Resource"><mwg-rs:Name>{escape(name)}</mwg-rs:Name>'
                f"<mwg-rs:Type>Face</mwg-rs:Type>{area}</rdf:li>"
            )
        parts.append(
            '<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag>'
            + "".join(items)
            + "</rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions>"
        )
    if mp_people:
        items = [
            f'<rdf:li><rdf:Description MPReg:PersonDisplayName="{escape(n)}" '
            f'MPReg:Rectangle="0.1, 0.2, 0.3, 0.4"/></rdf:li>'
            for n in mp_people
        ]
        parts.append(
            '<MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag>'
            + "".join(items)
            + "</rdf:Bag></MPRI:Regions></MP:RegionInfo>"
        )
    if tags:
        lis = "".join(f"<rdf:li>{escape(t)}</rdf:li>" for t in tags)
        parts.append(f"<dc:subject><rdf:Bag>{lis}</rdf:Bag></dc:subject>")
    if caption is not None:
        parts.append(
            '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
            f"{escape(caption)}</rdf:li></rdf:Alt></dc:description>"
        )
    if title is not None:
        parts.append(
            '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">'
            f"{escape(title)}</rdf:li></rdf:Alt></dc:title>"
        )
    body = "".join(parts)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/" '
        'xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#" '
        'xmlns:MP="http://ns.microsoft.com/photo/1.2/" '
        'xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#" '
        'xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">'
        f"{body}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def jpeg_with_xmp(
    xmp: bytes | None,
    *,
    seed: int = 0,
    colour: tuple[int, int, int] = (200, 30, 30),
    image: Image.Image | None = None,
) -> bytes:
    """A real JPEG whose APP1 segment carries ``xmp`` (Pillow writes the XMP header)."""
    if image is None:
        image = Image.open(io.BytesIO(jpeg_bytes((64, 48), colour, seed=seed)))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90, **({"xmp": xmp} if xmp else {}))
    return buf.getvalue()


def write_jpeg_with_xmp(path: Path, xmp: bytes | None, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_with_xmp(xmp, **kwargs))  # type: ignore[arg-type]
    return path


def png_with_xmp(xmp: bytes) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def webp_with_xmp(xmp: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 60)).save(buf, "WEBP", xmp=xmp)
    return buf.getvalue()


def jpeg_with_iptc(
    *,
    keywords: Sequence[str] = (),
    caption: str | None = None,
    title: str | None = None,
    description: str | None = None,
) -> bytes:
    """A JPEG with an APP13 Photoshop IRB holding IPTC-IIM records, and optionally an
    EXIF ImageDescription."""
    records = b""

    def record(number: int, value: str) -> bytes:
        data = value.encode("utf-8")
        return b"\x1c\x02" + bytes([number]) + len(data).to_bytes(2, "big") + data

    for keyword in keywords:
        records += record(25, keyword)
    if caption:
        records += record(120, caption)
    if title:
        records += record(5, title)
    irb = b"8BIM" + (0x0404).to_bytes(2, "big") + b"\x00\x00" + len(records).to_bytes(4, "big")
    irb += records + (b"\x00" if len(records) % 2 else b"")
    app13 = b"Photoshop 3.0\x00" + irb
    exif = Image.Exif()
    if description:
        exif[0x010E] = description
    base = jpeg_bytes((64, 48), exif=exif)
    segment = b"\xff\xed" + (len(app13) + 2).to_bytes(2, "big") + app13
    return base[:2] + segment + base[2:]


def png_bytes_with_raw_xmp(xmp: bytes) -> bytes:
    """A PNG whose XMP iTXt chunk holds ``xmp`` byte for byte (even invalid UTF-8)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (90, 90, 90)).save(buf, "PNG")
    png = buf.getvalue()
    data = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + data) & 0xFFFFFFFF)
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]
