"""One process of a deployment does the once-per-deployment work (watching
``LIBRARY_PATHS``, repairing uploads after a crash): the one holding :class:`LeaderLock`.

On PostgreSQL the lock is a session-level advisory lock on a connection of its own, held
for the process's lifetime. The others try again every ``retry_s`` seconds, so one of
them takes over when the holder stops: a process that exits or is killed closes its
connection and PostgreSQL frees the lock at once; a host that vanishes without a word
is cut off by ``idle_session_timeout`` (PostgreSQL 14+), which the holder's pings keep
at bay while it lives. A holder whose connection breaks (a database restart) stops its
work and competes again, like the others.

On SQLite (one host by construction) the lock is a file lock beside the database,
which the operating system frees when its process ends.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

# idle_session_timeout of the holder's session: this many retry periods without a ping.
IDLE_PERIODS = 6
MIN_IDLE_TIMEOUT_S = 30.0
# While another process holds the lock, who it is is looked up again this often.
HOLDER_LOOKUP_S = 30.0
CONNECT_TIMEOUT_S = 10  # a database that does not answer must not hold up close()


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    digest = hashlib.sha256(f"image-search-service:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def process_label(role: str) -> str:
    """How this process names itself to PostgreSQL (``application_name``, 63 bytes)."""
    return f"image-search {role} {socket.gethostname()}:{os.getpid()}"[:63]


class LeaderLock:
    """Held by at most one process per database at a time. ``on_acquired`` runs when
    this process gets it (the first try in :meth:`start`, later ones in the lock's
    thread), ``on_lost`` when it loses it or closes while holding it."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        retry_s: float,
        on_acquired: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.name = name
        self.key = lock_key(name)
        self.retry_s = retry_s
        self.label = process_label(name)
        self._engine = engine
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._held = False
        self._told = False
        self._known_holder: str | None = None
        self._next_lookup = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_engine: Engine | None = None
        self._connection: Connection | None = None
        self._file: FileLock | None = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            path = Path(str(engine.url.database))
            self._file = FileLock(path.with_name(f"{path.name}.{name}.lock"), timeout=0)

    @property
    def held(self) -> bool:
        return self._held

    @property
    def known_holder(self) -> str | None:
        """The process holding the lock: this one, or the other one as last looked up
        (at most :data:`HOLDER_LOOKUP_S` old); no query of its own, for status pages."""
        return self.label if self._held else self._known_holder

    @property
    def shared(self) -> bool:
        """Whether processes on other hosts may compete (PostgreSQL)."""
        return self._engine.dialect.name == "postgresql"

    def start(self) -> None:
        """Try once now (a failure of ``on_acquired`` here is raised), then keep trying
        (or checking the lock is still ours) in a thread."""
        if self.shared:
            self._lock_engine = create_engine(
                self._engine.url,
                poolclass=NullPool,
                connect_args={"application_name": self.label, "connect_timeout": CONNECT_TIMEOUT_S},
            )
        self._attempt()
        if not self._held:
            self._tell_holder()
        self._thread = threading.Thread(target=self._run, name=f"lock-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop competing; give the lock (and the work it guards) up if held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._held:
            self._release()
        if self._connection is not None:
            self._close_connection()  # frees the advisory lock
        if self._file is not None and self._file.is_locked:
            self._file.release(force=True)
        if self._lock_engine is not None:
            self._lock_engine.dispose()
            self._lock_engine = None

    def holder(self) -> str | None:
        """Which process holds the lock (its ``application_name`` on PostgreSQL), if the
        database can say."""
        if self._held:
            return self.label
        if not self.shared:
            return None
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        try:
            with self._engine.connect() as connection:
                row = connection.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                        "AND d.datname = current_database() "
                        "AND l.classid::text::bigint = :high AND l.objid::text::bigint = :low"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
                ).first()
        except DBAPIError as exc:
            logger.debug("cannot tell who holds the %s lock: %s", self.name, exc)
            return None
        return str(row[0]) if row is not None else None

    # -- trying ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.retry_s):
            try:
                self._attempt()
            except Exception:  # the work failed to start: logged, the lock stays held
                logger.exception("starting the work of the %s lock failed", self.name)

    def _attempt(self) -> None:
        """Try to take the lock, or check that it is still ours."""
        if self._file is not None:
            if not self._held:
                try:
                    self._file.acquire()
                except Timeout:
                    return
                except OSError as exc:  # a full disk, say: the one process of old
                    logger.warning("no %s lock file (%s): this process takes it", self.name, exc)
                    self._file = None
                self._take()
            return
        if not self.shared:  # an in-memory SQLite database: this process alone
            if not self._held:
                self._take()
            return
        try:
            if self._connection is None:
                self._connection = self._connect()
            if self._held:
                self._connection.execute(text("SELECT 1"))
                return
            got = self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            ).scalar_one()
        except DBAPIError as exc:
            self._broken(exc)
            return
        if got:
            self._take()
        elif time.monotonic() >= self._next_lookup:
            self._next_lookup = time.monotonic() + HOLDER_LOOKUP_S
            self._known_holder = self.holder()

    def _connect(self) -> Connection:
        assert self._lock_engine is not None
        connection = self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        idle_ms = int(1000 * max(MIN_IDLE_TIMEOUT_S, IDLE_PERIODS * self.retry_s))
        try:
            connection.execute(text(f"SET idle_session_timeout = {idle_ms}"))
        except DBAPIError:  # PostgreSQL before 14: a vanished host holds it until TCP says
            logger.info("PostgreSQL has no idle_session_timeout: takeover waits for TCP")
        return connection

    def _broken(self, exc: DBAPIError) -> None:
        if self._held:
            logger.warning("lost the %s lock (its connection broke: %s)", self.name, exc.orig)
            self._release()
        else:
            logger.debug("cannot try the %s lock now: %s", self.name, exc.orig)
        self._close_connection()

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except DBAPIError:
                pass

    def _tell_holder(self) -> None:
        if not self._told:
            self._told = True
            logger.info(
                "the %s lock is held by %s: this process serves, and tries again every %gs",
                self.name,
                self._known_holder or "another process",
                self.retry_s,
            )

    def _take(self) -> None:
        self._held = True
        logger.info("this process (%s) holds the %s lock", self.label, self.name)
        self._on_acquired()

    def _release(self) -> None:
        self._held = False
        try:
            self._on_lost()
        except Exception:
            logger.exception("stopping the work of the %s lock failed", self.name)
        if self._file is not None and self._file.is_locked:
            self._file.release(force=True)
