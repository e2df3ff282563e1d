"""Engine, sessions and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from filelock import FileLock, Timeout
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant: the PostgreSQL advisory lock every migrating process takes.
_PG_MIGRATION_LOCK = 0x1A6E5EA7C4
MIGRATION_LOCK_TIMEOUT_S = 300.0
SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL: readers never wait on a writer (searches keep answering while another
            # process writes); FKs make deletes cascade; writers queue for busy_timeout.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_database(engine: Engine) -> None:
    """Apply migrations up to head (idempotent, and safe when several processes start
    at once on a fresh database: they migrate one at a time, the later ones find
    nothing left to do). SQLite: a lock file beside the database; PostgreSQL: an
    advisory lock held by the migrating transaction."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with _sqlite_migration_lock(engine), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the metadata database: {exc.orig}") from exc


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock = FileLock(f"{database}.migrate.lock", timeout=MIGRATION_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise DatabaseUnavailable(
            f"another process has been migrating {database} for over "
            f"{MIGRATION_LOCK_TIMEOUT_S:.0f} s; is one stuck?"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def database_alone(url: str) -> Iterator[sessionmaker[Session]]:
    """The metadata DB on its own (migrated first), without the vector store or any
    model: for reports and progress that must work while a server holds the store."""
    engine = make_engine(url)
    try:
        upgrade_database(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def check_database(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the metadata database: {exc.orig}") from exc


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
