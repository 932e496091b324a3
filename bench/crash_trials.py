"""More kill -9 trials than the test suite runs: `python bench/crash_trials.py [--trials 100]`.

Each trial queues two experiments, starts `lab run`, kills it with SIGKILL at a
random point, runs one recovery pass and checks that every experiment is in
exactly one place, no score is duplicated, no orphan worktree or job process
survives, the state is committed and `lab validate` passes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_crash_safety import check_invariants, kill_trials, places  # noqa: E402
from test_loop import toy_lab  # noqa: E402

from runner.loop.run import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lab = toy_lab(Path(tmp) / "lab", slots=2, sleep=0.3)
        started = time.monotonic()
        ids = kill_trials(lab, args.trials, args.seed)
        run(lab, until_idle=True, plan=False, tick=0.1)
        check_invariants(lab, ids)
        lost = [i for i in ids if places(lab, i) != ["experiments"]]
        print(f"{'trials':<28}{args.trials}")
        print(f"{'experiments':<28}{len(ids)}")
        print(f"{'lost or duplicated':<28}{len(lost)}")
        print(f"{'seconds':<28}{time.monotonic() - started:.0f}")


if __name__ == "__main__":
    main()
