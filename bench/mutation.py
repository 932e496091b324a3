"""Mutation testing of the core modules with mutmut 3, one module at a time, each bounded in time.

    python bench/mutation.py                       # every module, 10 min cap each
    python bench/mutation.py --only metrics,gates --cap 300 --out /tmp/mutation.parquet

For each module: a scratch copy of the repo whose [tool.mutmut] mutates only that module's
file(s) and runs only its focused tests (so one mutant costs a few seconds), then
`mutmut run <the module's mutant names>` under the cap. Verdicts are read back from mutmut's
per-file `.meta` data; mutants not reached before the cap count as `unchecked`. Prints a
table (score = killed / checked, a timeout counting as killed) and writes it as Parquet;
`--survivors FILE` lists each surviving mutant, `--keep` keeps the scratch copies for
`mutmut show NAME`.

Only in-process tests can kill a mutant: a test that runs the `lab` CLI in a subprocess
imports the unmutated package, so each module's subset is the tests that call it directly.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Module:
    files: tuple[str, ...]     # source files mutmut mutates
    mutants: tuple[str, ...]   # mutant-name globs run (a method: runner.loop.xǁRunnerǁrecover__mutmut_*)
    tests: tuple[str, ...]     # the focused, in-process tests
    pytest_args: tuple[str, ...] = ()  # e.g. --deselect for a test that cannot run under mutmut


def _method(module: str, cls: str, name: str) -> str:
    return f"runner.{module}.x\u01c1{cls}\u01c1{name}__mutmut_*"


MODULES = {
    "metrics": Module(("runner/files/metrics.py",), ("runner.files.metrics.*",),
                      ("tests/test_metrics.py", "tests/test_props.py")),
    "promotion": Module(("runner/loop/promotion.py", "runner/loop/scoring.py", "runner/loop/noise.py", "runner/lab.py"),
                        ("runner.loop.promotion.*", "runner.loop.scoring.*", "runner.loop.noise.*",
                         _method("lab", "Lab", "better")),
                        ("tests/test_promotion.py", "tests/test_noise.py", "tests/test_constraints.py")),
    # the score row is written by state/scores.py's write_score (one file per experiment)
    "recording": Module(("runner/loop/record.py", "runner/state/scores.py"),
                        ("runner.loop.record.*", "runner.state.scores.x_write_score__mutmut_*"),
                        ("tests/test_record.py",)),
    "recovery": Module(("runner/loop/recovery.py",), ("runner.loop.recovery.*",),
                       ("tests/test_record.py",
                        "tests/test_loop.py::test_recovery_commits_a_record_whose_move_was_staged_but_not_committed")),
    "gates": Module(("runner/roles/gates.py", "runner/roles/history.py"),
                    ("runner.roles.gates.*", "runner.roles.history.*"), ("tests/test_gates.py",)),
    # the loop test leaves job wrappers for mutmut's own os.wait() to reap, which confuses it
    "ownership": Module(("runner/roles/ownership.py",), ("runner.roles.ownership.*",), ("tests/test_ownership.py",),
                        ("--deselect", "tests/test_ownership.py::test_the_loop_runs_a_planner_agent"
                                       "_and_undoes_its_rewrite_of_a_hypothesis")),
    "validation": Module(("runner/validation/validate.py",), ("runner.validation.validate.*",),
                         ("tests/test_validate.py", "tests/test_bad_input.py")),
}
COPY_IGNORE = shutil.ignore_patterns(".git", "mutants", ".lab", "__pycache__", "*.egg-info", ".pytest_cache",
                                     "artifacts", "build", "dist")


def _config(module: Module) -> str:
    """The [tool.mutmut] table for one module (replaces the repo's own in the scratch copy)."""
    listing = lambda items: "[" + ", ".join(json.dumps(i) for i in items) + "]"  # noqa: E731
    return ("[tool.mutmut]\n"
            'source_paths = ["runner"]\n'
            'also_copy = ["schemas", "skills", "train.py"]\n'  # runner/assets.py looks beside the package
            f"only_mutate = {listing(module.files)}\n"
            f"pytest_add_cli_args_test_selection = {listing(module.tests)}\n"
            f"pytest_add_cli_args = {listing(('-p', 'no:cacheprovider', '--timeout=120', *module.pytest_args))}\n"
            "use_git_change_detection = false\n"
            "timeout_multiplier = 5.0\n")


def scratch_copy(module: Module, into: Path) -> Path:
    work = into / "repo"
    shutil.copytree(REPO, work, ignore=COPY_IGNORE)
    text = (work / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text).rstrip() + "\n\n" + _config(module)
    (work / "pyproject.toml").write_text(text)
    return work


def run_mutmut(work: Path, module: Module, cap: float, children: int, log: Path) -> bool:
    """`mutmut run` for the module's mutants; False if the cap stopped it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUTANT_UNDER_TEST", "PYTHONPATH")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children", str(children),
                                 *module.mutants], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=cap)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False


def verdicts(work: Path, module: Module) -> dict[str, int | None]:
    """{mutant name: exit code or None} of the module's mutants, from mutmut's .meta files."""
    import fnmatch
    found: dict[str, int | None] = {}
    for source in module.files:
        meta = work / "mutants" / f"{source}.meta"
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        found.update({name: code for name, code in codes.items()
                      if any(fnmatch.fnmatch(name, pattern) for pattern in module.mutants)})
    return found


def tally(name: str, codes: dict[str, int | None], seconds: float, finished: bool) -> dict:
    count = lambda group: sum(1 for c in codes.values() if c in group)  # noqa: E731
    killed, survived, timeout, no_tests = count(KILLED), count(SURVIVED), count(TIMEOUT), count(NO_TESTS)
    unchecked = sum(1 for c in codes.values() if c is None)
    other = len(codes) - killed - survived - timeout - no_tests - unchecked
    checked = len(codes) - unchecked
    return {"module": name, "mutants": len(codes), "killed": killed, "survived": survived, "timeout": timeout,
            "no_tests": no_tests, "other": other, "unchecked": unchecked,
            "score": round((killed + timeout) / checked, 3) if checked else None,
            "seconds": round(seconds, 1), "capped": not finished}


def print_table(rows: list[dict]) -> None:
    columns = ("module", "mutants", "killed", "survived", "timeout", "no_tests", "unchecked", "score", "seconds")
    print("  ".join(f"{c:>10}" for c in columns))
    for row in rows:
        cells = [row[c] if row[c] is not None else "-" for c in columns]
        print("  ".join(f"{c:>10}" for c in cells) + ("  (capped)" if row["capped"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(MODULES), help="comma-separated modules")
    parser.add_argument("--cap", type=float, default=600, help="seconds per module")
    parser.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "mutation.parquet")
    parser.add_argument("--survivors", type=Path, default=None, help="write surviving mutant names here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies (printed)")
    args = parser.parse_args()
    rows, survivors = [], []
    for name in args.only.split(","):
        module = MODULES[name]
        scratch = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
        work = scratch_copy(module, scratch)
        started = time.monotonic()
        finished = run_mutmut(work, module, args.cap, args.children, scratch / "mutmut.log")
        codes = verdicts(work, module)
        rows.append(tally(name, codes, time.monotonic() - started, finished))
        survivors += [f"{name}\t{m}" for m, c in sorted(codes.items()) if c in SURVIVED or c in NO_TESTS]
        print_table(rows[-1:])
        if args.keep:
            print(f"  kept {work} (log: {scratch / 'mutmut.log'})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), args.out)
    if args.survivors:
        args.survivors.write_text("\n".join(survivors) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
