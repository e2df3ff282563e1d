"""Reading an uploaded file with its size limit."""

from __future__ import annotations

from fastapi import UploadFile

from image_search_service.core.errors import ImageTooLarge

_CHUNK = 1 << 20


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes; ImageTooLarge (413) past ``max_bytes`` (MAX_UPLOAD_BYTES)."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await file.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise ImageTooLarge(
                f"upload is over the limit of {max_bytes:,} bytes (MAX_UPLOAD_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
