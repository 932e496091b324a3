"""`lab reproduce` through the real CLI: a deterministic target reproduces exactly, a noisy one lands
within or outside the noise margin as its noise says, the result is recorded as a reproduction linked
to the original (never promoted, never a base score), and bad ids get one clear line."""
from __future__ import annotations

import pytest
from test_loop import finished, queue, scores_by_id, toy_lab

from runner.loop.run import run
from runner.repo import gitops
from runner.state.events import read_events

# The n-th run of the target in this lab scores NOISE x n more: every re-run differs by exactly NOISE.
NOISY = '''
runs = os.path.join(os.environ["LAB_CACHE"], "runs")
os.makedirs(os.path.dirname(runs), exist_ok=True)
n = len(open(runs).read()) if os.path.exists(runs) else 0
open(runs, "a").write("x")
score = (X - 3.0) ** 2 + 1.0 + NOISE * n
'''


def promoted_lab(tmp_path, noise: float = 0.0):
    """A toy lab (margin 0.01) whose baseline and one promoted change are recorded."""
    lab = toy_lab(tmp_path / "lab", slots=1)
    score = lab.root / "score.py"
    text = score.read_text().replace("X = 1.0\n", f"X = 1.0\nNOISE = {noise}\n")
    score.write_text(text.replace("score = (X - 3.0) ** 2 + 1.0\n", NOISY))
    gitops.run_git(lab.root, "commit", "-qam", "noise")
    queue(lab, None, baseline=True, seed=7)
    better = queue(lab, {"X": 2.5}, "X to 2.5")
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert finished(lab, better)["result"]["promoted"]
    return lab, better


def reproduce(run_lab, lab, *args):
    return run_lab("-C", lab.root, "reproduce", *args, cwd=lab.root, timeout=240)


def test_a_deterministic_target_reproduces_exactly_and_is_recorded_as_a_reproduction(tmp_path, run_lab):
    lab, better = promoted_lab(tmp_path)
    main_before = gitops.run_git(lab.root, "show", "HEAD:score.py")
    out = reproduce(run_lab, lab, better)
    assert out.returncode == 0, out.stdout + out.stderr
    new_id = out.stdout.strip().splitlines()[-1].split(":")[0]
    assert "reproduced: val_bpb 1.25 vs recorded 1.25 (|Δ| 0 <= noise margin 0.01) in the same environment class" \
        in out.stdout
    record, original = finished(lab, new_id), finished(lab, better)
    assert record["kind"] == "reproduction" and record["reproduces"] == better and record["status"] == "finished"
    assert record["result"]["commit"] == original["result"]["commit"]            # the exact commit, re-run
    assert record["environment"]["class"] == original["environment"]["class"]
    assert record["result"]["value"] == record["result"]["base_value"] == 1.25 and record["result"]["delta"] == 0
    row = scores_by_id(lab)[new_id]
    assert row["kind"] == "reproduction" and not row["promoted"] and row["base_value"] == 1.25
    assert gitops.run_git(lab.root, "show", "HEAD:score.py") == main_before        # nothing merged
    events = [e for e in read_events(lab).to_pylist() if e["experiment"] == new_id]
    assert [e["kind"] for e in events] == ["reproduced"] and events[0]["message"].startswith(f"{better}: reproduced")


def test_a_baseline_is_reproduced_with_its_seed(tmp_path, run_lab):
    lab, _ = promoted_lab(tmp_path)
    base = next(r["id"] for r in scores_by_id(lab).values() if r["kind"] == "baseline")
    assert scores_by_id(lab)[base]["seed"] == 7
    out = reproduce(run_lab, lab, base, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    new_id = next(r["id"] for r in scores_by_id(lab).values() if r["kind"] == "reproduction")
    assert finished(lab, new_id)["seed"] == 7 and scores_by_id(lab)[new_id]["seed"] == 7
    assert '"reproduced": true' in out.stdout


@pytest.mark.parametrize("noise,within", [(0.004, True), (0.5, False)])
def test_a_noisy_target_lands_within_or_outside_the_margin(tmp_path, run_lab, noise, within):
    lab, better = promoted_lab(tmp_path, noise)
    recorded = finished(lab, better)["result"]["value"]
    out = reproduce(run_lab, lab, better)
    assert out.returncode == (0 if within else 1), out.stdout + out.stderr
    new_id = out.stdout.strip().splitlines()[-1].split(":")[0]
    result = finished(lab, new_id)["result"]
    assert result["value"] == pytest.approx(recorded + noise) and result["base_value"] == recorded
    verdict = "reproduced" if within else "not reproduced"
    assert result["reason"].startswith(f"{verdict}: val_bpb {recorded + noise:.6g} vs recorded {recorded:.6g}")
    assert ("<= noise margin 0.01" if within else "> noise margin 0.01") in result["reason"]
    kinds = [e["kind"] for e in read_events(lab).to_pylist() if e["experiment"] == new_id]
    assert kinds == ["reproduced" if within else "not-reproduced"]


def test_bad_ids_get_one_clear_line_and_queue_nothing(tmp_path, run_lab):
    lab = toy_lab(tmp_path / "lab", slots=1)
    queue(lab, None, baseline=True)
    crash = queue(lab, {"MODE": "crash"}, "crash")
    run(lab, until_idle=True, plan=False, tick=0.1)
    out = reproduce(run_lab, lab, "e-nope")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: experiments/e-nope/experiment.yaml: id: unknown experiment 'e-nope': " \
                                 "no recorded experiment by that id"
    out = reproduce(run_lab, lab, crash)
    assert out.returncode == 2 and f"experiments/{crash}/experiment.yaml: result.value: it recorded no value" in out.stderr
    out = reproduce(run_lab, lab, "../../etc")
    assert out.returncode == 2 and "unknown experiment" in out.stderr
    assert not list(lab.queue.glob("*.yaml"))
