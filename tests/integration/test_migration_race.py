"""Several processes starting at once on a fresh database all migrate it without error
(the later ones wait, then find nothing to do)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect

from image_search_service.db.session import make_engine

PROCESSES = 4
# Imports first, then waits for the start signal, so every process migrates at once.
RACER = """
import sys, time
from pathlib import Path
from image_search_service.db.session import make_engine, upgrade_database
engine = make_engine(sys.argv[1])
Path(sys.argv[2] + ".ready").touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
upgrade_database(engine)
print("migrated")
"""


def _race(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, url, str(tmp_path / f"go{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go{i}.ready").exists() for i in range(PROCESSES)):
        assert time.monotonic() < deadline, "racers did not start"
        time.sleep(0.01)
    for i in range(PROCESSES):
        (tmp_path / f"go{i}").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _check(url: str, tmp_path: Path) -> None:
    for result in _race(url, tmp_path):
        assert result.returncode == 0, result.stderr[-2000:]
        assert "migrated" in result.stdout
    engine = make_engine(url)
    try:
        assert {"assets", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_concurrent_first_runs_on_sqlite(tmp_path: Path) -> None:
    # The race is timing-dependent: a few fresh databases make a miss unlikely.
    for round_ in range(3):
        work = tmp_path / f"round{round_}"
        work.mkdir()
        _check(f"sqlite:///{work / 'data' / 'metadata.sqlite3'}", work)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_first_runs_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    _check(postgres_url, tmp_path)
