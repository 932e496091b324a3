"""The holdout metric (objective.holdout) in a real loop: recorded for every run next to its base's,
never judged (a change that only helps the holdout is not promoted), and a promotion that made the
holdout worse by more than the noise margin is flagged with a `holdout-worse` event."""
from __future__ import annotations

import pytest
import yaml
from test_loop import finished, queue, scores_by_id, toy_lab

from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.state.events import read_events


def holdout_lab(tmp_path) -> Lab:
    """The toy target also prints test_bpb = HOLD, a figure the objective never sees."""
    lab = toy_lab(tmp_path / "lab", slots=1)
    score = lab.root / "score.py"
    text = score.read_text().replace('MODE = "ok"\n', 'MODE = "ok"\nHOLD = 2.0\n')
    score.write_text(text.replace('print(f"val_bpb: {score:.6f}")', 'print(f"val_bpb: {score:.6f}")\n'
                                                                  'print(f"test_bpb: {HOLD:.6f}")'))
    config = yaml.safe_load(lab.config_path.read_text())
    config["objective"]["holdout"] = "test_bpb"
    config["target"]["params"].append("HOLD")
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git(lab.root, "commit", "-qam", "a holdout figure")
    return Lab(lab.root)


def test_holdout_is_recorded_never_judged_and_an_overfitting_promotion_is_flagged(tmp_path):
    lab = holdout_lab(tmp_path)
    base = queue(lab, None, baseline=True)
    overfit = queue(lab, {"X": 2.5, "HOLD": 2.5}, "better metric, worse holdout")
    run(lab, until_idle=True, plan=False, tick=0.1)
    only_holdout = queue(lab, {"X": 2.0, "HOLD": 0.1}, "worse metric, far better holdout")
    honest = queue(lab, {"X": 2.9, "HOLD": 2.4}, "better metric, better holdout")
    run(lab, until_idle=True, plan=False, tick=0.1)

    rows = scores_by_id(lab)
    assert (rows[base]["holdout"], rows[base]["base_holdout"]) == (pytest.approx(2.0), None)
    assert rows[overfit]["promoted"] and rows[overfit]["holdout"] == pytest.approx(2.5)
    assert rows[overfit]["base_holdout"] == pytest.approx(2.0)
    result = finished(lab, overfit)["result"]
    assert (result["holdout"], result["base_holdout"]) == (pytest.approx(2.5), pytest.approx(2.0))
    # a holdout 2.4 lower cannot promote a metric 0.75 worse: the holdout is never judged
    assert not rows[only_holdout]["promoted"] and rows[only_holdout]["holdout"] == pytest.approx(0.1)
    assert rows[only_holdout]["base_holdout"] == pytest.approx(2.5)
    assert rows[honest]["promoted"] and rows[honest]["base_holdout"] == pytest.approx(2.5)

    flagged = [e for e in read_events(lab).to_pylist() if e["kind"] == "holdout-worse"]
    assert [e["experiment"] for e in flagged] == [overfit]
    assert flagged[0]["message"] == ("promoted, but test_bpb got worse: 2 -> 2.5, beyond the noise margin "
                                     "(selection overfitting?)")
