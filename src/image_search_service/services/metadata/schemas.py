"""The public shapes of people, tags and captions."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    ConfigDict,
    Field,
)

from image_search_service.core.schemas import InputModel, OutputModel
from image_search_service.db.metadata_repository import NameCount
from image_search_service.images.metadata import MAX_CAPTION_CHARS, MAX_NAME_CHARS, PersonRegion
from image_search_service.services.metadata.service import AssetEdit, NamePage


class BoxOut(OutputModel):
    """A face region: left, top, width, height as fractions of the image."""

    x: float
    y: float
    w: float
    h: float


class PersonInPhoto(OutputModel):
    name: str
    box: BoxOut | None = None

    @classmethod
    def of(cls, person: PersonRegion) -> PersonInPhoto:
        box = person.box
        return cls(
            name=person.name,
            box=BoxOut(x=box.x, y=box.y, w=box.w, h=box.h) if box else None,
        )


class AssetEditIn(InputModel):
    """``PATCH /api/v1/assets/{id}``: the fields given replace the asset's; a field left
    out is unchanged. An edited field is yours from then on: re-indexing keeps it."""

    model_config = ConfigDict(extra="forbid")

    people: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]] | None = Field(
        None, max_length=200, description="everyone in the photo (replaces the list)"
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]] | None = Field(
        None, max_length=200, description="every keyword (replaces the list)"
    )
    caption: str | None = Field(
        None, max_length=MAX_CAPTION_CHARS, description="null clears the caption"
    )

    def edit(self) -> AssetEdit:
        return AssetEdit(
            people=self.people,
            tags=self.tags,
            caption=self.caption,
            set_caption="caption" in self.model_fields_set,
        )


class NameCountOut(OutputModel):
    id: int
    name: str = Field(description="as written")
    count: int = Field(description="photos in the library")

    @classmethod
    def of(cls, item: NameCount) -> NameCountOut:
        return cls(id=item.id, name=item.name, count=item.count)


class NameListOut(OutputModel):
    items: list[NameCountOut]
    total: int = Field(description="names that match, over all pages")
    limit: int
    offset: int

    @classmethod
    def of(cls, page: NamePage) -> NameListOut:
        return cls(
            items=[NameCountOut.of(i) for i in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


class PersonRenameIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="the new name; another person's name merges the two",
    )
