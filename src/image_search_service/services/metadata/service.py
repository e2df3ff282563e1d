"""People, tags and captions: re-read from files, edited by users, pushed to payloads.

The metadata DB is the source of truth (docs/design.md, invariant 1); each collection's
payload holds a copy of the normalised people and tag names so that Qdrant filters on
them inside the HNSW search. Every change here updates the DB first, then the payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from uuid import UUID

from sqlalchemy.orm import Session

from image_search_service.context import ServiceContext
from image_search_service.core.errors import AssetNotFound, InvalidRequest, ServiceError
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.metadata_repository import AssetLabels, NameCount
from image_search_service.db.models import AssetStatus
from image_search_service.images.metadata import (
    MAX_CAPTION_CHARS,
    MAX_NAME_CHARS,
    MAX_TAGS,
    PersonRegion,
    is_blank_name,
    normalise_name,
    read_metadata,
    sidecar_signature,
)
from image_search_service.vector.schema import label_payload

logger = logging.getLogger(__name__)

MAX_PEOPLE_PER_ASSET = 200


class PersonNotFound(ServiceError):
    status_code = 404


@dataclass(frozen=True)
class AssetEdit:
    """A PATCH: ``None`` leaves a field as it is; a value replaces it."""

    people: Sequence[str] | None = None
    tags: Sequence[str] | None = None
    caption: str | None = None
    set_caption: bool = False  # distinguishes "caption: null" (clear) from "not given"

    def validate(self) -> None:
        for label, names in (("people", self.people), ("tags", self.tags)):
            if names is None:
                continue
            if len(names) > max(MAX_TAGS, MAX_PEOPLE_PER_ASSET):
                raise InvalidRequest(f"too many {label} ({len(names)})")
            for name in names:
                if is_blank_name(name):
                    raise InvalidRequest(f"{label} names must not be blank or invisible")
                if "\x00" in name:
                    raise InvalidRequest(f"{label} names must not contain NUL characters")
                if len(name) > MAX_NAME_CHARS:
                    raise InvalidRequest(f"{label} names are at most {MAX_NAME_CHARS} characters")
        if self.caption is not None and len(self.caption) > MAX_CAPTION_CHARS:
            raise InvalidRequest(f"caption is at most {MAX_CAPTION_CHARS} characters")
        if self.caption is not None and "\x00" in self.caption:
            raise InvalidRequest("caption must not contain NUL characters")


def needs_metadata_refresh(path: Path, recorded: str | None) -> bool:
    """The sidecar appeared, changed or went away, or the file was never read."""
    return recorded is None or recorded != sidecar_signature(path)


def refresh_metadata(ctx: ServiceContext, assets: Sequence[tuple[UUID, Path]]) -> int:
    """Re-read the metadata of photos whose pixels did not change (a sidecar edit) and
    update the DB and every collection's payloads; returns how many were read."""
    if not assets:
        return 0
    read = [(asset_id, read_metadata(path), sidecar_signature(path)) for asset_id, path in assets]
    with ctx.transaction() as session:
        for asset_id, photo, signature in read:
            meta_repo.apply_file_metadata(session, asset_id, photo, sidecar=signature)
    push_labels(ctx, [asset_id for asset_id, _, _ in read])
    return len(read)


def push_labels(ctx: ServiceContext, asset_ids: Sequence[UUID]) -> None:
    """Copy the DB's people and tags of ``asset_ids`` into every collection's payloads."""
    if not asset_ids:
        return
    with ctx.transaction() as session:
        labels = meta_repo.labels_for(session, list(asset_ids))
    payloads = {
        asset_id: label_payload(people=own.people_keys, tags=own.tag_keys)
        for asset_id, own in labels.items()
    }
    for key in ctx.specs:
        if ctx.has_collection(key):
            ctx.store.set_payload(ctx.spec(key).collection, payloads)


def edit_asset(ctx: ServiceContext, asset_id: UUID, edit: AssetEdit) -> AssetLabels:
    """Apply a user's edit; each edited field is the user's from now on (re-indexing
    no longer replaces it with the file's value)."""
    edit.validate()
    with ctx.transaction() as session:
        asset = repo.get_asset(session, asset_id)
        if asset is None or asset.status == AssetStatus.MISSING:
            raise AssetNotFound(f"asset {asset_id} not found")
        if edit.people is not None:
            meta_repo.set_people(session, asset_id, _keep_boxes(session, asset_id, edit.people))
        if edit.tags is not None:
            meta_repo.set_tags(session, asset_id, list(edit.tags))
        if edit.set_caption:
            asset.caption = (edit.caption or "").strip() or None
        meta_repo.refresh_search_text(session, asset_id)
        meta_repo.mark_edited(
            session,
            asset,
            people=edit.people is not None,
            tags=edit.tags is not None,
            caption=edit.set_caption,
        )
    push_labels(ctx, [asset_id])
    with ctx.transaction() as session:
        return meta_repo.labels_for(session, [asset_id])[asset_id]


def _keep_boxes(session: Session, asset_id: UUID, names: Sequence[str]) -> list[PersonRegion]:
    """People kept through an edit keep their face regions."""
    current = meta_repo.labels_for(session, [asset_id]).get(asset_id, AssetLabels())
    boxes = {normalise_name(p.name): p.box for p in current.people}
    return [PersonRegion(name, boxes.get(normalise_name(name))) for name in names]


MAX_NAME_PAGE = 500
MAX_NAME_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class NamePage:
    items: list[NameCount]
    total: int
    limit: int
    offset: int


def _name_page(
    ctx: ServiceContext,
    which: Literal["people", "tags"],
    *,
    limit: int,
    offset: int,
    containing: str,
) -> NamePage:
    if not 1 <= limit <= MAX_NAME_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_NAME_PAGE}")
    if not 0 <= offset <= MAX_NAME_OFFSET:
        raise InvalidRequest(f"offset must be between 0 and {MAX_NAME_OFFSET}")
    if "\x00" in containing:
        raise InvalidRequest("the name filter must not contain NUL characters")
    counts = meta_repo.people_counts if which == "people" else meta_repo.tag_counts
    with ctx.transaction() as session:
        page = counts(session, limit=limit, offset=offset, containing=normalise_name(containing))
    return NamePage(page.items, total=page.total, limit=limit, offset=offset)


def list_people(
    ctx: ServiceContext, *, limit: int = 100, offset: int = 0, containing: str = ""
) -> NamePage:
    """People with photos in the library, most photographed first; ``containing`` keeps
    the names that contain it (case-insensitive)."""
    return _name_page(ctx, "people", limit=limit, offset=offset, containing=containing)


def list_tags(
    ctx: ServiceContext, *, limit: int = 100, offset: int = 0, containing: str = ""
) -> NamePage:
    return _name_page(ctx, "tags", limit=limit, offset=offset, containing=containing)


def rename_person(ctx: ServiceContext, person_id: int, new_name: str) -> NameCount:
    """Rename a person everywhere; a name that is already someone else's merges the two."""
    if is_blank_name(new_name) or len(new_name) > MAX_NAME_CHARS or "\x00" in new_name:
        raise InvalidRequest(
            f"name must be 1 to {MAX_NAME_CHARS} characters, not blank or invisible, no NUL"
        )
    with ctx.transaction() as session:
        person = meta_repo.get_person(session, person_id)
        if person is None:
            raise PersonNotFound(f"person {person_id} not found")
        affected = meta_repo.asset_ids_with_person(session, person_id)
        survivor = meta_repo.rename_person(session, person, new_name)
        survivor_id = survivor.id
        affected = sorted(
            set(affected) | set(meta_repo.asset_ids_with_person(session, survivor_id))
        )
        # A rename is a user's correction: it must survive re-reading the files.
        meta_repo.mark_people_edited(session, affected)
    push_labels(ctx, affected)
    with ctx.transaction() as session:
        person = meta_repo.get_person(session, survivor_id)
        assert person is not None
        counted = meta_repo.person_count(session, survivor_id)
        return counted or NameCount(survivor_id, person.name, 0)
