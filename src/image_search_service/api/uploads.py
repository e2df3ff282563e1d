"""Reading an uploaded file with its size limit, one file where one is expected."""

from __future__ import annotations

from fastapi import Request, UploadFile

from image_search_service.core.errors import ImageTooLarge, InvalidRequest

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


async def one_file_only(request: Request, field: str = "file") -> None:
    """Refuse a form with several ``field`` parts where one is read: FastAPI would take
    one of them silently. The form is already parsed by then (Starlette caches it)."""
    if len((await request.form()).getlist(field)) > 1:
        raise InvalidRequest(f"one `{field}` per request: send each image on its own")
