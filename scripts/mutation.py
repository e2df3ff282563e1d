"""Mutation testing of the code that decides: would a one-line bug fail a test?

Runs mutmut (https://mutmut.readthedocs.io) on each deciding module, scoped to the
functions that decide, against the fast tests that cover them, in a scratch copy of
``src/`` and ``tests/`` (the working tree is never touched). Prints killed / survived /
total per module and lists every survivor that is not a known equivalent mutant
(``scripts/mutation_equivalents.toml`` says why each of those changes nothing).

    python scripts/mutation.py [--json] [--module NAME ...] [--keep DIR]

Exits 1 when a module's kill rate is below 90%. Slow on 2 cores (docs/testing.md has
the last figures and times); CI runs one small module as a smoke check.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")
MIN_KILL_RATE = 0.90
PACKAGE = "image_search_service"


@dataclass(frozen=True)
class Target:
    """One deciding module: the functions mutated and the tests that must catch them."""

    name: str
    source: str  # under src/image_search_service/
    functions: tuple[str, ...]  # "function" or "Class.method"
    tests: tuple[str, ...]
    # "forkserver" where the tests open stores (threads do not survive a fork from a
    # process that already ran a test; the mutants then hang until their timeout).
    isolation: str = "fork"

    @property
    def module(self) -> str:
        return f"{PACKAGE}." + self.source.removesuffix(".py").replace("/", ".")

    def patterns(self) -> list[str]:
        """mutmut's mutant names for those functions (``x_f__mutmut_3``, ``xǁCǁm__mutmut_3``)."""
        names = []
        for function in self.functions:
            mangled = "x" + "".join(f"ǁ{part}" for part in function.split("."))
            if "." not in function:
                mangled = f"x_{function}"
            names.append(f"{self.module}.{mangled}__mutmut_*")
        return names


TARGETS = (
    Target(
        "stats",
        "services/rollout/stats.py",
        (
            "two_proportion_test",
            "mean_difference_test",
            "_wald",
            "msprt",
            "sequential_two_proportions",
            "sequential_mean_difference",
            "sequential_win_share",
            "bootstrap_mean_difference",
            "sign_test",
        ),
        (
            "tests/unit/test_stats.py",
            "tests/unit/test_stats_reference.py",
            "tests/unit/test_sequential.py",
        ),
    ),
    Target(
        "recommendation",
        "services/rollout/report.py",
        ("decide", "_direction", "next_step", "_exposed", "_significant_digits"),
        ("tests/unit/test_sequential.py", "tests/unit/test_decision.py"),
    ),
    Target(
        "router",
        "services/rollout/router.py",
        ("user_bucket", "clean_user_id", "EmbeddingRouter.select", "EmbeddingRouter.interleaves"),
        (
            "tests/unit/test_router.py",
            "tests/integration/test_router.py::TestSelect",
            "tests/integration/test_router.py::TestShare",
        ),
        isolation="forkserver",
    ),
    Target(
        "interleaving",
        "services/rollout/interleaving.py",
        ("team_draft", "draft_seed"),
        ("tests/unit/test_interleaving.py",),
    ),
    Target(
        "coverage",
        "services/rollout/router.py",
        ("EmbeddingRouter.check_readiness", "EmbeddingRouter._measure", "EmbeddingRouter._guard"),
        ("tests/integration/test_router.py::TestCoverageGuard",),
        isolation="forkserver",
    ),
    Target(
        "query",
        "services/search/query.py",
        ("understand", "_rejoin", "split_negatives", "UnderstoodQuery.people_keys"),
        ("tests/unit/test_query.py",),
    ),
    Target(
        "int8",
        "encoders/onnx_export.py",
        ("int8_refusal",),
        ("tests/unit/test_onnx_cpu.py", "tests/unit/test_int8_acceptance.py"),
    ),
    Target(
        "keys",
        "api/auth.py",
        (
            "allows",
            "ApiKey.valid",
            "KeyRing.match",
            "Signer.check",
            "Signer.photo_url_valid",
            "Signer.read_session",
            "FailedKeyThrottle.retry_after",
            "exposed",
        ),
        ("tests/unit/test_auth_checks.py",),
    ),
    Target(
        "access",
        "api/access.py",
        ("_presented_key", "_cookie", "authenticate", "_signed_url"),
        ("tests/unit/test_auth_checks.py",),
    ),
    Target(
        "origin",
        "api/security.py",
        ("host_name", "host_allowed", "cross_site_reason", "_netloc"),
        ("tests/unit/test_auth_checks.py",),
    ),
)


@dataclass(frozen=True)
class KnownBug:
    """A one-line bug found by hand (issue 25) that once passed the suite, some of a kind
    mutmut does not make (a property's body, one name for another): applied to a copy
    of ``src/``, the named tests must fail."""

    module: str
    source: str  # under src/image_search_service/
    old: str  # occurs exactly once in the source
    new: str
    tests: tuple[str, ...]
    what: str


KNOWN_BUGS = (
    KnownBug(
        "stats",
        "services/rollout/stats.py",
        "max(2 * far, 1.0 / replicates)",
        "max(far, 1.0 / replicates)",
        ("tests/unit/test_stats.py",),
        "the MRR bootstrap's p-value one-sided",
    ),
    KnownBug(
        "stats",
        "services/rollout/stats.py",
        "np.quantile(diffs, [alpha / 2, 1 - alpha / 2])",
        "np.quantile(diffs, [alpha, 1 - alpha])",
        ("tests/unit/test_stats.py",),
        "the MRR bootstrap's interval 90% instead of 95%",
    ),
    KnownBug(
        "recommendation",
        "services/rollout/report.py",
        "if 1 in signals and -1 in signals:",
        "if ab_dir == -1 and il_dir == 1:",
        ("tests/unit/test_decision.py",),
        "an interleaving loss beside an A/B gain raises",
    ),
    KnownBug(
        "recommendation",
        "services/rollout/report.py",
        "if percentage >= 100 and",
        "if percentage > 100 and",
        ("tests/unit/test_decision.py",),
        "a gain at 100% recommends raising to 100%",
    ),
    KnownBug(
        "recommendation",
        "services/rollout/report.py",
        "if ab is not None and ab.ci_low > -power.min_effect:",
        "if ab is not None:",
        ("tests/unit/test_decision.py",),
        "no hold while a CTR loss is not ruled out",
    ),
    KnownBug(
        "coverage",
        "db/repository.py",
        "return self.done_searchable / self.searchable if self.searchable else 1.0",
        "return self.done / self.searchable if self.searchable else 1.0",
        ("tests/unit/test_coverage.py",),
        "the coverage ratio counts vectors of unreadable assets",
    ),
    KnownBug(
        "query",
        "services/search/service.py",
        "people = tuple(dict.fromkeys((*base.people, *parsed.people_keys)))",
        "people = parsed.people_keys",
        ("tests/integration/test_search_people_merge.py",),
        "explicit people= dropped when the text names a person",
    ),
    KnownBug(
        "int8",
        "encoders/onnx_export.py",
        "refused = export.int8_refused\n",
        "refused = None\n",
        ("tests/unit/test_int8_acceptance.py",),
        "the recorded INT8 refusal ignored on the next start",
    ),
)


def run_known_bug(bug: KnownBug, work: Path) -> dict[str, Any]:
    """Whether the bug's tests fail with the bug applied to a copy of ``src/``."""
    src = work / "src"
    if not src.exists():
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    path = src / PACKAGE / bug.source
    original = (ROOT / "src" / PACKAGE / bug.source).read_text("utf-8")
    if original.count(bug.old) != 1:
        raise SystemExit(f"{bug.source}: {bug.old!r} no longer occurs exactly once; update it")
    path.write_text(original.replace(bug.old, bug.new), "utf-8")
    try:
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly",
                   "-p", "no:cacheprovider", *bug.tests]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        path.write_text(original, "utf-8")
    return {"module": bug.module, "bug": bug.what, "caught": done.returncode == 1}


# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code): a failing test (1, 3)
# or a timeout (the mutant looped) catches the mutant.
CAUGHT = {1, 3, 24, -24, 36, 152, 255}


def load_equivalents() -> dict[tuple[str, str], str]:
    """(module, mutated line) -> why the mutant behaves exactly as the original."""
    data = tomllib.loads(EQUIVALENTS.read_text("utf-8")) if EQUIVALENTS.exists() else {}
    return {
        (item["module"], " ".join(item["mutant"].split())): item["why"]
        for item in data.get("equivalent", [])
    }


def prepare(work: Path, target: Target) -> None:
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    config = {
        "source_paths": ["src"],
        "only_mutate": [f"src/{PACKAGE}/{target.source}"],
        "pytest_add_cli_args_test_selection": list(target.tests),
        "pytest_add_cli_args": ["-p", "no:randomly", "-p", "no:cacheprovider", "-x", "-q"],
        "process_isolation": target.isolation,
    }
    lines = ["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    (work / "pyproject.toml").write_text(pyproject + "\n" + "\n".join(lines) + "\n", "utf-8")


def mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    command = [sys.executable, "-m", "mutmut", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if log is None:
        return subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, check=True
        ).stdout
    with log.open("w") as out:  # the progress spinner is long; kept for a look afterwards
        subprocess.run(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return ""


def mutated_line(work: Path, name: str) -> str:
    """The mutant's changed line(s), as ``mutmut show`` prints them."""
    diff = mutmut(work, "show", name)
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " ".join(" ".join(added).split())


def run_target(
    target: Target, work: Path, equivalents: dict[tuple[str, str], str]
) -> dict[str, Any]:
    prepare(work, target)
    started = time.monotonic()
    patterns = target.patterns()
    mutmut(work, "run", *patterns, log=work / "mutmut.log")
    meta_path = work / "mutants" / "src" / PACKAGE / (target.source + ".meta")
    codes: dict[str, int | None] = json.loads(meta_path.read_text("utf-8"))["exit_code_by_key"]
    chosen = {
        name: code
        for name, code in codes.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }
    survivors, equivalent = [], []
    for name, code in sorted(chosen.items()):
        if code in CAUGHT:
            continue
        line = mutated_line(work, name)
        function = name.removeprefix(target.module + ".").split("__mutmut_")[0]
        entry = {"mutant": name, "function": function, "line": line, "status": code}
        why = equivalents.get((target.name, line))
        if why is not None:
            equivalent.append({**entry, "why": why})
        else:
            survivors.append(entry)
    total = len(chosen)
    killed = total - len(survivors) - len(equivalent)
    judged = total - len(equivalent)
    return {
        "module": target.name,
        "source": target.source,
        "killed": killed,
        "survived": len(survivors),
        "equivalent": len(equivalent),
        "total": total,
        "kill_rate": round(killed / judged, 4) if judged else 1.0,
        "seconds": round(time.monotonic() - started, 1),
        "survivors": survivors,
        "equivalents": equivalent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--module",
        action="append",
        choices=[t.name for t in TARGETS],
        help="run only this module (repeatable; default: all)",
    )
    parser.add_argument(
        "--known-only", action="store_true", help="only the known bugs, no mutmut run"
    )
    parser.add_argument("--keep", type=Path, help="keep the scratch copies under this folder")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.module or t.name in args.module]
    bugs = [b for b in KNOWN_BUGS if not args.module or b.module in args.module]
    equivalents = load_equivalents()
    scratch = Path(tempfile.mkdtemp(prefix="mutation-")) if args.keep is None else args.keep
    results, known = [], []
    try:
        for target in [] if args.known_only else targets:
            work = scratch / target.name
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            try:
                result = run_target(target, work, equivalents)
            except subprocess.CalledProcessError as exc:
                print(f"{target.name}: mutmut failed ({exc}); see {work}/mutmut.log")
                result = {"module": target.name, "error": str(exc), "kill_rate": 0.0}
                results.append(result)
                continue
            results.append(result)
            if not args.json:
                print(
                    f"{result['module']:<15} killed {result['killed']:>4}  survived "
                    f"{result['survived']:>3}  equivalent {result['equivalent']:>3}  total "
                    f"{result['total']:>4}  kill rate {result['kill_rate']:.1%}  "
                    f"({result['seconds']:.0f} s)",
                    flush=True,
                )
                for survivor in result["survivors"]:
                    print(f"    survived: {survivor['mutant']}: {survivor['line']}")
        for bug in bugs:
            outcome = run_known_bug(bug, scratch / "known-bugs")
            known.append(outcome)
            if not args.json:
                verdict = "caught" if outcome["caught"] else "NOT CAUGHT"
                print(f"known bug {bug.module:<15} {verdict:<10} {bug.what}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"modules": results, "known_bugs": known}, indent=2))
    ok = all(r["kill_rate"] >= MIN_KILL_RATE for r in results) and all(k["caught"] for k in known)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
