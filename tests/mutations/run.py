"""Guarantee mutation check: break each guarantee on purpose and see a test go red.

    python -m tests.mutations.run [--jobs N] [--only ID[,ID...]] [--keep]

For every :class:`~tests.mutations.mutations.Mutation` in ``mutations.py``: copy the
repository (its git-tracked and untracked-but-not-ignored files) to a temporary directory,
replace the mutation's exact ``old`` text by ``new`` (it must occur exactly once, else the
mutation is reported NOT APPLIED: the list must stay true as the code changes), and run only
the mutation's mapped tests there with ``python -m pytest -x -q`` and ``PYTHONPATH`` set to
the copy, so processes the tests start import the mutated code too (checked once below).
A mutation is *killed* when a mapped test fails; the report names the first failing test.

Before any mutation, the union of the mapped tests runs once on an unmutated copy (the
"sanity" run): a mutation "killed" by a test that fails anyway would prove nothing.
``tests/GUARANTEES.md`` and the mutation list are checked against each other: every
guarantee row there has a mutation, every mutation's guarantee is a row, and every mapped
test node ID is written in its guarantee's row.

Exit status 1 when any mutation survived, could not be applied, or timed out, when the
sanity run is red, or when the map and the list disagree. The children's pytest output is
kept and printed only for mutations that did not end killed (and for a red sanity run), and
no report line has the shape of a pytest summary line, so CI, which reads the last pytest
summary of its log, judges the main test run that follows.

Why not mutmut or cosmic-ray: they generate random operator mutants (``<`` to ``<=``, a
constant changed) over whole modules and score how many die; most of those mutants touch
no guarantee, and a full run takes hours. Here each mutation is the one way of breaking a
stated guarantee that a regression would most plausibly take (one per guarantee at least),
paired with the tests that claim to guard it, so a survivor means exactly "this guarantee
is unguarded", and the whole check fits in CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.mutations.mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "tests" / "GUARANTEES.md"
TIMEOUT_S = 300.0
"""Per pytest child. A mutation whose tests hang is reported TIMEOUT (a failure of the check:
a regression must show as a red test, not a hung run)."""

_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)
_ROW = re.compile(r"^\|\s*`([a-z0-9-]+)`\s*\|(.*)$", re.M)
_TEST_ID = re.compile(r"`(tests/[^`\s]+\.py(?:::[^`\s]+)?)`")


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | SURVIVED | NOT APPLIED | TIMEOUT | ERROR
    detail: str = ""
    output: str = ""
    seconds: float = 0.0


def repository_files(root: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=root, check=True, capture_output=True).stdout.decode()
    return [f for f in listed.split("\0") if f and (root / f).is_file()]


def copy_repository(root: Path, files: Iterable[str], target: Path) -> None:
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)


def apply(mutation: Mutation, copy: Path) -> str | None:
    """Apply ``mutation`` in ``copy``; the reason it cannot be applied, or None."""
    path = copy / mutation.file
    if not path.is_file():
        return f"{mutation.file} does not exist"
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        return f"its old text occurs {found} times in {mutation.file} (must be exactly once)"
    path.write_text(text.replace(mutation.old, mutation.new))
    return None


def child_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest(copy: Path, tests: Iterable[str], timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
    """Run ``tests`` in ``copy``: (exit status or None on timeout, combined output)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    child = subprocess.Popen(command, cwd=copy, env=child_env(copy), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=timeout)
        return child.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its servers (ZooKeeper, PostgreSQL) too: one session
        output, _ = child.communicate()
        return None, output


def check_imports_copy(copy: Path) -> str | None:
    """A child process started with the children's environment imports the copy's code."""
    probe = subprocess.run([sys.executable, "-c", "import infrastructure, domain, edge; "
                            "print(infrastructure.__file__); print(domain.__file__); print(edge.__file__)"],
                           cwd="/", env=child_env(copy), capture_output=True, text=True)
    paths = probe.stdout.split()
    if probe.returncode != 0 or len(paths) != 3 or not all(Path(p).is_relative_to(copy) for p in paths):
        return f"a child process does not import the copy's code: {probe.stdout.strip()} {probe.stderr.strip()}"
    return None


def check_map(mutations: list[Mutation]) -> list[str]:
    """Problems between tests/GUARANTEES.md and the mutation list (empty: they agree)."""
    rows = {gid: row for gid, row in _ROW.findall(MAP.read_text())}
    problems = []
    ids = [m.id for m in mutations]
    problems += [f"mutation id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    covered = {m.guarantee for m in mutations}
    problems += [f"guarantee {g!r} of tests/GUARANTEES.md has no mutation" for g in sorted(set(rows) - covered)]
    for m in mutations:
        if m.guarantee not in rows:
            problems.append(f"mutation {m.id}: guarantee {m.guarantee!r} is not a row of tests/GUARANTEES.md")
            continue
        if m.id not in rows[m.guarantee]:
            problems.append(f"mutation {m.id} is not named in the row of {m.guarantee!r} in tests/GUARANTEES.md")
        for test in m.tests:
            if f"`{test}`" not in rows[m.guarantee]:
                problems.append(f"mutation {m.id}: test {test} is not in the row of {m.guarantee!r} in tests/GUARANTEES.md")
    return problems


def mapped_tests() -> list[str]:
    """Every test node ID written in the rows of tests/GUARANTEES.md."""
    return sorted({t for _gid, row in _ROW.findall(MAP.read_text()) for t in _TEST_ID.findall(row)})


def check_tests_exist(copy: Path) -> str | None:
    """None when pytest can collect every test the map names (a renamed test must not linger there)."""
    tests = mapped_tests()
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(command, cwd=copy, env=child_env(copy), capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        return f"tests/GUARANTEES.md names tests pytest cannot collect:\n{_indent(done.stdout + done.stderr)}"
    return None


def run_one(mutation: Mutation, base: Path, files: list[str], work: Path) -> Outcome:
    started = time.monotonic()
    copy = work / mutation.id
    copy_repository(base, files, copy)
    problem = apply(mutation, copy)
    if problem is not None:
        return Outcome(mutation, "NOT APPLIED", problem)
    status, output = pytest(copy, mutation.tests)
    seconds = time.monotonic() - started
    if status is None:
        return Outcome(mutation, "TIMEOUT", f"the mapped tests ran over {TIMEOUT_S:.0f} s", output, seconds)
    if status == 0:
        return Outcome(mutation, "SURVIVED", "every mapped test stayed green", output, seconds)
    failed = _FAILED_LINE.search(output)
    if status == 1 and failed:
        return Outcome(mutation, "killed", failed.group(1), output, seconds)
    return Outcome(mutation, "ERROR", f"pytest exited {status} without a failing test", output, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2: our CI has 2 cores)")
    parser.add_argument("--only", default="", help="comma-separated mutation IDs (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (for debugging)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    mutations = MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        mutations = [m for m in MUTATIONS if m.id in wanted]
        unknown = wanted - {m.id for m in mutations}
        if unknown:
            print(f"mutation check: unknown mutation IDs {sorted(unknown)}")
            return 2

    print(f"guarantee mutation check: {len(mutations)} mutations, {len({m.guarantee for m in MUTATIONS})} guarantees "
          f"(tests/mutations/mutations.py, tests/GUARANTEES.md)", flush=True)
    problems = check_map(MUTATIONS)
    for problem in problems:
        print(f"  map: {problem}")

    work = Path(tempfile.mkdtemp(prefix="xplatform-mutations-"))
    try:
        files = repository_files(ROOT)
        base = work / "unmutated"
        copy_repository(ROOT, files, base)
        wrong_import = check_imports_copy(base)
        if wrong_import:
            print(f"  setup: {wrong_import}")
            return 1
        missing = check_tests_exist(base)
        if missing:
            problems.append(missing)
            print(f"  map: {missing}")

        # Sanity: every mapped test is green without a mutation (else "killed" means nothing).
        sanity_tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
        t0 = time.monotonic()
        status, output = pytest(base, sanity_tests, timeout=TIMEOUT_S * 2)
        sane = status == 0
        print(f"  sanity: the {len(sanity_tests)} mapped tests on the unmutated copy: "
              f"{'green' if sane else 'RED'} ({time.monotonic() - t0:.0f} s)", flush=True)
        if not sane:
            print(_indent(output))
            return 1

        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for outcome in pool.map(lambda m: run_one(m, base, files, work), mutations):
                outcomes.append(outcome)
                m = outcome.mutation
                what = f"killed by {outcome.detail}" if outcome.status == "killed" else f"{outcome.status}: {outcome.detail}"
                print(f"  mutation {m.id} [{m.guarantee}] {m.file}: {what} ({outcome.seconds:.0f} s)", flush=True)
                if outcome.status != "killed":
                    print(_indent(outcome.output))
                if not args.keep:
                    shutil.rmtree(work / m.id, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  copies kept in {work}")

    tally = {s: sum(o.status == s for o in outcomes) for s in ("killed", "SURVIVED", "NOT APPLIED", "TIMEOUT", "ERROR")}
    bad = len(outcomes) - tally["killed"]
    print(f"guarantee mutation check: {tally['killed']} of {len(outcomes)} mutations killed; survived {tally['SURVIVED']}, "
          f"not applied {tally['NOT APPLIED']}, timed out {tally['TIMEOUT']}, errors {tally['ERROR']}; map problems "
          f"{len(problems)}; {time.monotonic() - started:.0f} s wall -> {'OK' if not bad and not problems else 'NOT OK'}")
    return 1 if bad or problems else 0


_SUMMARY_WORD = re.compile(r"\b(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")


def _indent(text: str) -> str:
    """A child's output, quoted so that none of its lines can pass for a pytest summary:
    CI reads the last summary in its log, which must be the main test run's."""
    return "\n".join("    | " + _SUMMARY_WORD.sub(r"\1 child-\2", line) for line in text.rstrip().splitlines())


if __name__ == "__main__":
    sys.exit(main())
