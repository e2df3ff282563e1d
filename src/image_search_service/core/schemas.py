"""What every request and response schema shares: UTC times, ISO-only dates, no NUL."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)


def iso_only(value: Any) -> Any:
    """Refuse a bare number where a time is asked for: pydantic reads it as a Unix time,
    and `taken_before=0.5` or `since=0` is a mistake, not 1970."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("must be an ISO 8601 date or date-time, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(iso_only)]


ImageFormat = Literal["JPEG", "MPO", "PNG", "WEBP", "HEIF", "GIF", "TIFF", "AVIF"]


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


MAX_FILTER_NAMES = 20


def _nul_free(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_nul_free(k) and _nul_free(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_nul_free(v) for v in value)
    return True


class InputModel(BaseModel):
    """What a client sends. No text in it may hold a NUL character: nothing real needs
    one, PostgreSQL cannot store one, and SQLite cuts a LIKE pattern short at it."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if not _nul_free(data):
            raise ValueError("text must not contain NUL characters (\\x00)")
        return data


class OutputModel(BaseModel):
    """What the service gives: built from the services' objects by attribute
    (``Model.model_validate(obj)``), returned by routes and printed by the CLI's
    ``--json``, so a result has one public shape everywhere."""

    model_config = ConfigDict(from_attributes=True)


class ModelIdentityOut(OutputModel):
    """The model a collection is stamped with (or an encoder encodes with)."""

    model_name: str
    pretrained: str
    dim: int


class PhotoUrls(OutputModel):
    """Where ``<img>`` and links load a photo from: signed and short-lived while the server
    needs credentials (no key in the URL), plain paths when it does not."""

    thumbnail: str = Field(description="256 px JPEG")
    preview: str = Field(description="512 px JPEG")
    file: str = Field(description="the original file")
