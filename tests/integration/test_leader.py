"""``jobs.leader.LeaderLock``: at most one holder per database, a takeover when the
holder closes, and on PostgreSQL a holder whose session is cut gives its work up and
competes again. Two locks in one process stand for two processes: each has its own
connection (PostgreSQL) or open file (SQLite)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from image_search_service.db.session import make_engine
from image_search_service.jobs.leader import LeaderLock

WAIT_S = 60


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


class Duty:
    """What a lock guards: counts its starts and stops."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0

    @property
    def running(self) -> bool:
        return self.started > self.stopped

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


@contextmanager
def competing(engine: Engine, count: int) -> Iterator[list[tuple[LeaderLock, Duty]]]:
    pairs: list[tuple[LeaderLock, Duty]] = []
    try:
        for _ in range(count):
            duty = Duty()
            lock = LeaderLock(
                engine,
                "test",
                retry_s=0.05,
                on_acquired=duty.start,
                on_lost=duty.stop,
            )
            lock.start()
            pairs.append((lock, duty))
        yield pairs
    finally:
        for lock, _duty in pairs:
            lock.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    made = make_engine(url)
    yield made
    made.dispose()


def test_one_holder_and_a_takeover_when_it_closes(engine: Engine) -> None:
    with competing(engine, 2) as [(first, first_duty), (second, second_duty)]:
        assert (first.held, first_duty.running) == (True, True)  # the first try, in start()
        assert (second.held, second_duty.running) == (False, False)
        first.close()
        assert (first_duty.started, first_duty.stopped) == (1, 1)
        eventually(lambda: second.held and second_duty.running, "the second takes over")
        assert not first.held


@pytest.mark.postgres
def test_a_holder_whose_session_is_cut_stops_and_another_takes_over(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with competing(engine, 2) as [(first, first_duty), (second, second_duty)]:
            assert first.held
            assert not second.held
            # Named as PostgreSQL knows it ("image-search test HOST:PID": both here).
            eventually(lambda: second.known_holder == first.label, "the holder is named")
            unsigned = first.key & 0xFFFFFFFFFFFFFFFF
            with admin.connect() as connection:  # a database restart, as the holder sees it
                cut = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                        "JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND l.granted "
                        "AND d.datname = current_database() "
                        "AND l.classid::text::bigint = :high AND l.objid::text::bigint = :low"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
                ).scalar_one()
            assert cut is True
            eventually(lambda: first_duty.stopped == 1, "the cut holder stops its work")
            # Both compete again; exactly one wins, and only its work runs.
            eventually(lambda: first.held != second.held, "one holds the lock again")
            assert [first_duty.running, second_duty.running] == [first.held, second.held]
    finally:
        admin.dispose()
        engine.dispose()
