"""Every query on people, tags, captions and titles (the metadata of issue 13).

Like ``repository.py``: functions flush at most; the caller owns the transaction.
Names are stored as written (``name``) and matched by ``name_key``
(:func:`images.metadata.normalise_name`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from image_search_service.db.models import (
    Asset,
    AssetPerson,
    AssetStatus,
    AssetTag,
    Person,
    Tag,
)
from image_search_service.images.metadata import (
    Box,
    PersonRegion,
    PhotoMetadata,
    display_name,
    normalise_name,
)


@dataclass(frozen=True)
class AssetLabels:
    """What search results and payloads carry for one asset."""

    people: tuple[PersonRegion, ...] = ()
    tags: tuple[str, ...] = ()
    caption: str | None = None
    title: str | None = None

    @property
    def people_keys(self) -> list[str]:
        return sorted({normalise_name(p.name) for p in self.people})

    @property
    def tag_keys(self) -> list[str]:
        return sorted({normalise_name(t) for t in self.tags})


@dataclass(frozen=True)
class NameCount:
    id: int
    name: str
    count: int


def apply_file_metadata(
    session: Session, asset_id: uuid.UUID, meta: PhotoMetadata, *, sidecar: str | None
) -> None:
    """Record what the file (and its sidecar) says, leaving every field the user edited
    through the API alone."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        return
    asset.metadata_error = meta.problem
    asset.sidecar_signature = sidecar
    if not asset.caption_edited:
        asset.caption, asset.title = meta.caption, meta.title
    if not asset.people_edited:
        set_people(session, asset_id, meta.people)
    if not asset.tags_edited:
        set_tags(session, asset_id, meta.tags)
    refresh_search_text(session, asset_id)


def apply_files_metadata(
    session: Session, items: Sequence[tuple[uuid.UUID, PhotoMetadata, str | None]]
) -> None:
    """:func:`apply_file_metadata` for a batch (what indexing records per batch).

    Most photos of a first index carry no people, tags, caption or title and had none:
    those only get their metadata fields set, from three queries for the whole batch
    instead of about ten per photo.
    """
    ids = [asset_id for asset_id, _, _ in items]
    if not ids:
        return
    assets = {a.id: a for a in session.scalars(select(Asset).where(Asset.id.in_(ids)))}
    labelled = set(
        session.scalars(select(AssetPerson.asset_id).where(AssetPerson.asset_id.in_(ids)))
    ) | set(session.scalars(select(AssetTag.asset_id).where(AssetTag.asset_id.in_(ids))))
    for asset_id, meta, sidecar in items:
        asset = assets.get(asset_id)
        if asset is None:
            continue
        says_nothing = not (meta.people or meta.tags or meta.caption or meta.title)
        had_nothing = not (asset.caption or asset.title or asset.search_text)
        if says_nothing and had_nothing and asset_id not in labelled:
            asset.metadata_error = meta.problem
            asset.sidecar_signature = sidecar
        else:
            apply_file_metadata(session, asset_id, meta, sidecar=sidecar)


def refresh_search_text(session: Session, asset_id: uuid.UUID) -> None:
    """Rebuild the text full-text search matches for one asset: caption, title, tags."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        return
    tags = session.scalars(
        select(Tag.name)
        .join(AssetTag, AssetTag.tag_id == Tag.id)
        .where(AssetTag.asset_id == asset_id)
    ).all()
    parts = [asset.caption, asset.title, *tags]
    body = " ".join(p for p in parts if p) or None
    asset.search_text = body
    session.flush()
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("DELETE FROM asset_search WHERE asset_id = :id"), {"id": asset_id.hex})
        if body:
            session.execute(
                text("INSERT INTO asset_search (asset_id, body) VALUES (:id, :body)"),
                {"id": asset_id.hex, "body": body},
            )


def forget_search_text(session: Session, asset_id: uuid.UUID) -> None:
    """The asset is being deleted: its full-text row goes too (SQLite's FTS5 table has
    no foreign key to cascade)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("DELETE FROM asset_search WHERE asset_id = :id"), {"id": asset_id.hex})


_STOPWORDS = frozenset(
    "a an and the of with in on at to for by from or is are was be this that these those "
    "it its my our your their photo photos picture pictures image images".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def full_text_terms(query: str) -> list[str]:
    """The words of ``query`` worth matching: no stop words, no syntax (word characters
    only, so nothing a user types can reach FTS5's or tsquery's query language)."""
    words = (w.casefold() for w in _WORD.findall(query))
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in _STOPWORDS))[:32]


def text_matches(session: Session, query: str, *, limit: int) -> list[uuid.UUID]:
    """Searchable assets whose caption, title or tags match any word of ``query``, best
    first (SQLite FTS5 bm25; PostgreSQL ts_rank). Empty on other databases."""
    terms = full_text_terms(query)
    if not terms:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        params = {"q": " OR ".join(f'"{t}"' for t in terms), "n": limit, "k": 2 * limit}
        # FTS5 ranks first and only its best 2 x limit are checked for status: joining
        # every match to its photo first cost 0.4 s for a common word in a million-photo
        # library (scripts/benchmark_scale.py), ranking alone 0.08 s. Only when too few
        # of those best are still searchable is every match joined.
        best = session.execute(
            text(
                "SELECT s.asset_id FROM (SELECT asset_id, rank FROM asset_search "
                "WHERE asset_search MATCH :q ORDER BY rank LIMIT :k) s "
                "JOIN assets a ON a.id = s.asset_id WHERE a.status = 'active' "
                "ORDER BY s.rank LIMIT :n"
            ),
            params,
        ).scalars()
        rows = list(best)
        if len(rows) < limit:
            rows = list(
                session.execute(
                    text(
                        "SELECT s.asset_id FROM asset_search s JOIN assets a ON a.id = s.asset_id "
                        "WHERE asset_search MATCH :q AND a.status = 'active' "
                        "ORDER BY bm25(asset_search) LIMIT :n"
                    ),
                    params,
                ).scalars()
            )
        return [uuid.UUID(hex=str(r)) for r in rows]
    if dialect == "postgresql":
        vector = "to_tsvector('simple', coalesce(search_text, ''))"
        found = session.execute(
            text(
                f"SELECT id FROM assets WHERE {vector} @@ to_tsquery('simple', :q) "
                f"AND status = 'active' ORDER BY ts_rank({vector}, to_tsquery('simple', :q)) "
                "DESC, id LIMIT :n"
            ),
            {"q": " | ".join(terms), "n": limit},
        ).scalars()
        return [r if isinstance(r, uuid.UUID) else uuid.UUID(str(r)) for r in found]
    return []


def _get_or_create(session: Session, model: type[Person] | type[Tag], name: str) -> int:
    key = normalise_name(name)
    found = session.scalar(select(model.id).where(model.name_key == key))
    if found is not None:
        return int(found)
    row = model(name=display_name(name), name_key=key)
    session.add(row)
    session.flush()
    return int(row.id)


def set_people(session: Session, asset_id: uuid.UUID, people: Sequence[PersonRegion]) -> None:
    session.execute(delete(AssetPerson).where(AssetPerson.asset_id == asset_id))
    seen: set[int] = set()
    for person in people:
        if not normalise_name(person.name):
            continue
        person_id = _get_or_create(session, Person, person.name)
        if person_id in seen:
            continue
        seen.add(person_id)
        box = person.box
        session.add(
            AssetPerson(
                asset_id=asset_id,
                person_id=person_id,
                box_x=box.x if box else None,
                box_y=box.y if box else None,
                box_w=box.w if box else None,
                box_h=box.h if box else None,
            )
        )
    session.flush()


def set_tags(session: Session, asset_id: uuid.UUID, tags: Sequence[str]) -> None:
    session.execute(delete(AssetTag).where(AssetTag.asset_id == asset_id))
    seen: set[int] = set()
    for tag in tags:
        if not normalise_name(tag):
            continue
        tag_id = _get_or_create(session, Tag, tag)
        if tag_id not in seen:
            seen.add(tag_id)
            session.add(AssetTag(asset_id=asset_id, tag_id=tag_id))
    session.flush()


def labels_for(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AssetLabels]:
    """People (with boxes), tags, caption and title of each of ``ids`` that exists."""
    if not ids:
        return {}
    id_list = list(ids)
    people: dict[uuid.UUID, list[PersonRegion]] = {}
    rows = session.execute(
        select(
            AssetPerson.asset_id,
            Person.name,
            AssetPerson.box_x,
            AssetPerson.box_y,
            AssetPerson.box_w,
            AssetPerson.box_h,
        )
        .join(Person, Person.id == AssetPerson.person_id)
        .where(AssetPerson.asset_id.in_(id_list))
        .order_by(Person.name_key)
    ).all()
    for asset_id, name, x, y, w, h in rows:
        box = Box(x, y, w, h) if x is not None and y is not None and w and h else None
        people.setdefault(asset_id, []).append(PersonRegion(name, box))
    tags: dict[uuid.UUID, list[str]] = {}
    for asset_id, name in session.execute(
        select(AssetTag.asset_id, Tag.name)
        .join(Tag, Tag.id == AssetTag.tag_id)
        .where(AssetTag.asset_id.in_(id_list))
        .order_by(Tag.name_key)
    ):
        tags.setdefault(asset_id, []).append(name)
    out: dict[uuid.UUID, AssetLabels] = {}
    for asset_id, caption, title in session.execute(
        select(Asset.id, Asset.caption, Asset.title).where(Asset.id.in_(id_list))
    ):
        out[asset_id] = AssetLabels(
            people=tuple(people.get(asset_id, ())),
            tags=tuple(tags.get(asset_id, ())),
            caption=caption,
            title=title,
        )
    return out


def known_people(session: Session) -> dict[str, str]:
    """Every person in at least one photo of the library: name key -> name as written.

    Read on every text search, so it costs per person, not per photo: each person's
    EXISTS stops at their first photo still in the library (the ``person_id`` index),
    where an IN over every tagged photo read them all (a million-photo library)."""
    in_library = (
        select(AssetPerson.asset_id)
        .join(Asset, Asset.id == AssetPerson.asset_id)
        .where(AssetPerson.person_id == Person.id, Asset.status != AssetStatus.MISSING)
        .exists()
    )
    rows = session.execute(select(Person.name_key, Person.name).where(in_library))
    return {str(key): str(name) for key, name in rows}


@dataclass(frozen=True)
class NameCountPage:
    items: list[NameCount]
    total: int


def _counts(
    session: Session,
    model: type[Person] | type[Tag],
    *,
    limit: int | None = None,
    offset: int = 0,
    containing: str = "",
    only_id: int | None = None,
) -> NameCountPage:
    """Names with how many photos of the library carry each, most photographed first.
    ``containing`` matches inside the name key (case- and space-insensitive).

    Each name's photos are counted from the link table's own index, less those of the
    few photos gone from disk: a join of every link to its photo's status took seconds
    on a million-photo library (scripts/benchmark_scale.py)."""
    link, key = (
        (AssetPerson, AssetPerson.person_id) if model is Person else (AssetTag, AssetTag.tag_id)
    )
    linked = select(key.label("name_id"), func.count().label("n")).group_by(key)
    gone = (  # found from the missing photos' side: the status index, then the links
        select(key.label("name_id"), func.count().label("n"))
        .where(link.asset_id.in_(select(Asset.id).where(Asset.status == AssetStatus.MISSING)))
        .group_by(key)
    )
    if only_id is not None:
        linked, gone = linked.where(key == only_id), gone.where(key == only_id)
    every, missing = linked.subquery(), gone.subquery()
    count = every.c.n - func.coalesce(missing.c.n, 0)
    query = (
        select(model.id, model.name, count)
        .join(every, every.c.name_id == model.id)
        .outerjoin(missing, missing.c.name_id == model.id)
        .where(count > 0)
    )
    if containing:
        query = query.where(model.name_key.contains(containing, autoescape=True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(count.desc(), model.name_key, model.id).limit(limit).offset(offset)
    ).all()
    return NameCountPage([NameCount(int(i), n, int(c)) for i, n, c in rows], total=int(total))


def people_counts(
    session: Session, *, limit: int | None = None, offset: int = 0, containing: str = ""
) -> NameCountPage:
    """People in the library with how many photos each is in, most photographed first."""
    return _counts(session, Person, limit=limit, offset=offset, containing=containing)


def person_count(session: Session, person_id: int) -> NameCount | None:
    """One person's photo count (None when the library has no photo of them)."""
    items = _counts(session, Person, only_id=person_id).items
    return items[0] if items else None


def tag_counts(
    session: Session, *, limit: int | None = None, offset: int = 0, containing: str = ""
) -> NameCountPage:
    return _counts(session, Tag, limit=limit, offset=offset, containing=containing)


def get_person(session: Session, person_id: int) -> Person | None:
    return session.get(Person, person_id)


def person_by_key(session: Session, key: str) -> Person | None:
    return session.scalar(select(Person).where(Person.name_key == key))


def asset_ids_with_person(session: Session, person_id: int) -> list[uuid.UUID]:
    return list(
        session.scalars(select(AssetPerson.asset_id).where(AssetPerson.person_id == person_id))
    )


def rename_person(session: Session, person: Person, new_name: str) -> Person:
    """Rename ``person``; when the new name is another person's, merge into that one
    (their photos become theirs, boxes kept) and return the survivor."""
    key = normalise_name(new_name)
    target = person_by_key(session, key)
    if target is None or target.id == person.id:
        person.name, person.name_key = display_name(new_name), key
        session.flush()
        return person
    already = set(
        session.scalars(select(AssetPerson.asset_id).where(AssetPerson.person_id == target.id))
    )
    if already:
        session.execute(
            delete(AssetPerson).where(
                AssetPerson.person_id == person.id, AssetPerson.asset_id.in_(list(already))
            )
        )
    session.execute(
        update(AssetPerson)
        .where(AssetPerson.person_id == person.id)
        .values(person_id=target.id)
        .execution_options(synchronize_session=False)
    )
    session.delete(person)
    session.flush()
    return target


def mark_edited(session: Session, asset: Asset, *, people: bool, tags: bool, caption: bool) -> None:
    asset.people_edited = asset.people_edited or people
    asset.tags_edited = asset.tags_edited or tags
    asset.caption_edited = asset.caption_edited or caption
    session.flush()


def mark_people_edited(session: Session, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        session.execute(
            update(Asset)
            .where(Asset.id.in_(list(ids)))
            .values(people_edited=True)
            .execution_options(synchronize_session=False)
        )
