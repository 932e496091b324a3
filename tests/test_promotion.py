"""Promotion rules: the noise margin (configured and derived from repeated baselines), both
directions, a stale base re-queued on the new main, no score for the base. The rules are
checked directly (Lab.better, promotion.judge, scoring.noise, score_of) and end to end through
the runner on a real lab whose target prints exactly the value its constants say."""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from runner.files.tables import SCORES
from runner.lab import Lab
from runner.loop.promotion import CONFIRM, KEEP, PROMOTE, REQUEUE, SINGLE_RUN, STRONG, Verdict, judge, merge_into_main
from runner.loop.noise import derived_margin
from runner.loop.run import run
from runner.loop.scoring import Noise, base_commit, failed_baseline, key_values, noise, score_of, target_key
from runner.repo import gitops
from runner.scaffold import init_lab
from runner.state.create import new_experiment, new_hypothesis
from runner.state.scores import write_score
from runner.validation.validate import validate

# The value is VALUE - A - B, plus NOISE[seed] for the baselines of `lab baseline` (seeds 0, 1, 2);
# other runs get random seeds far beyond these and no noise.
TARGET = """import os
VALUE = 5.0
A = 0.0
B = 0.0
NOISE = {"0": 0.0, "1": 0.2, "2": -0.2}
print(f"{METRIC}: {VALUE - A - B + NOISE.get(os.environ.get('LAB_SEED'), 0.0):.6f}")
"""


def value_lab(root: Path, direction: str = "minimize", margin: float = 0.1, k: float | None = None,
              slots: int = 1, metric: str = "val_bpb", rate: float | None = None) -> Lab:
    init_lab(root, template="blank", commit=False)
    (root / "score.py").write_text(TARGET.replace("{METRIC}", metric))
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["objective"] = {"metric": metric, "direction": direction, "noise_margin": margin,
                           **({"margin_from_baseline": k} if k else {}),
                           **({"false_promotion_rate": rate} if rate else {})}
    config["target"].update(command=["python", "score.py"], editable=["score.py"], params=["VALUE", "A", "B"],
                            time_limit_s=30, stall_timeout_s=30)
    config["backends"]["local"].update(slots=slots, threads_per_slot=1)
    config["roles"] = {"researcher": {"kind": "off"}, "planner": {"kind": "off"},
                       "worker": {"kind": "builtin"}, "reporter": {"kind": "off"}}
    config["limits"] = {"max_running": slots, "max_queue": 8, "retries": 1}
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    gitops.run_git(root, "commit", "-q", "-m", "value lab")
    return Lab(root)


def enqueue(lab: Lab, params: dict | None, priority: int = 0, seed: int = 0) -> str:
    main = gitops.head(lab.root)
    if params is None:
        return new_experiment(lab, None, {}, main, kind="baseline", wave=seed, priority=100)[0]
    hyp, _ = new_hypothesis(lab, f"set {params}", {"params": params}, status="accepted")
    return new_experiment(lab, hyp, {"params": params}, main, priority=priority)[0]


def result(lab: Lab, exp_id: str) -> dict:
    return yaml.safe_load((lab.experiments / exp_id / "experiment.yaml").read_text())


def target_changes(lab: Lab) -> int:
    """How many commits changed the target after the lab's first one."""
    return len(gitops.run_git(lab.root, "log", "--format=%H", "--", "score.py").split()) - 1


# -- the rules, directly ------------------------------------------------------------------------
def test_better_is_strict_and_follows_the_direction(tmp_path):
    low = value_lab(tmp_path / "min", "minimize")
    high = value_lab(tmp_path / "max", "maximize")
    assert low.minimize and not high.minimize
    assert low.better(4.0, 5.0) and not low.better(5.0, 5.0) and not low.better(6.0, 5.0)
    assert high.better(6.0, 5.0) and not high.better(5.0, 5.0) and not high.better(4.0, 5.0)
    assert not low.better(4.95, 5.0, 0.1) and not low.better(4.9, 5.0, 0.1) and low.better(4.89, 5.0, 0.1)
    assert not high.better(5.05, 5.0, 0.1) and not high.better(5.1, 5.0, 0.1) and high.better(5.11, 5.0, 0.1)
    assert not low.better(5.05, 5.0, 0.1) and not high.better(4.95, 5.0, 0.1)   # a margin never helps a loss


def test_judge_keeps_promotes_requeues_or_confirms(tmp_path):
    low = value_lab(tmp_path / "min", "minimize")
    high = value_lab(tmp_path / "max", "maximize", metric="accuracy")
    unmeasured = Noise(0.1, None, 0, 1)                                  # σ not measured: z unknown
    assert judge(low, 4.0, None, unmeasured, True) == Verdict(
        KEEP, "no score for the base yet (run `lab baseline`): not promoted")
    assert judge(low, 4.95, 5.0, unmeasured, True) == Verdict(
        KEEP, "not better than its base 5 by more than the margin 0.1", 0.1)
    assert judge(low, 4.95, 5.0, unmeasured, False).action == KEEP     # a loss on an old base stays a loss
    assert judge(low, 4.5, 5.0, unmeasured, True) == Verdict(
        PROMOTE, "promoted (single-run): val_bpb 5 -> 4.5, margin 0.1", 0.1, None, SINGLE_RUN)
    assert judge(low, 4.5, 5.0, unmeasured, False) == Verdict(
        REQUEUE, "beat its base (val_bpb 5 -> 4.5, margin 0.1) but main moved", 0.1)
    assert judge(high, 5.5, 5.0, unmeasured, True) == Verdict(
        PROMOTE, "promoted (single-run): accuracy 5 -> 5.5, margin 0.1", 0.1, None, SINGLE_RUN)
    assert judge(high, 4.5, 5.0, unmeasured, True).action == KEEP
    measured = Noise(0.1, 0.1, 4, 1)                                     # sd of the difference 0.1·√2
    strong = judge(low, 4.5, 5.0, measured, True)                        # z = 0.5 / 0.1414 = 3.54
    assert (strong.action, strong.evidence, strong.z) == (PROMOTE, STRONG, pytest.approx(0.5 / (0.1 * math.sqrt(2))))
    weak = judge(low, 4.8, 5.0, measured, True)                          # z 1.41: a win, but single-run evidence
    assert (weak.action, weak.evidence) == (PROMOTE, SINGLE_RUN) and weak.reason.endswith("(z 1.41)")
    assert judge(high, 4.8, 5.0, measured, True).z == pytest.approx(-0.2 / (0.1 * math.sqrt(2)))  # a loss: z < 0


def test_judge_confirms_a_win_below_confirm_below_and_promotes_the_confirmed_mean(tmp_path):
    lab = value_lab(tmp_path / "lab")
    config = yaml.safe_load(lab.config_path.read_text())
    config["objective"]["confirm_below"] = 3.0
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    lab = Lab(lab.root)
    measured = Noise(0.1, 0.1, 4, 1)
    assert judge(lab, 4.8, 5.0, measured, True).action == CONFIRM               # z 1.41 < 3
    assert judge(lab, 4.5, 5.0, measured, True).evidence == STRONG              # z 3.54: no confirmation
    assert judge(lab, 4.8, 5.0, Noise(0.1, None, 0, 1), True).action == CONFIRM  # z unknown: confirm
    assert judge(lab, 4.8, 5.0, measured, False).action == REQUEUE               # stale first
    confirmed = judge(lab, 4.8, 5.0, Noise(0.1, 0.1, 4, 2), True, confirming=True)
    assert (confirmed.action, confirmed.evidence) == (PROMOTE, "confirmed")
    assert judge(lab, 4.95, 5.0, Noise(0.1, 0.1, 4, 2), True, confirming=True).action == KEEP  # the mean lost


def test_judge_never_promotes_a_constraint_breaker_and_promotes_one_that_fixes_its_base(tmp_path):
    lab = value_lab(tmp_path / "lab")
    unmeasured = Noise(0.1, None, 0, 1)
    kept = judge(lab, 1.0, 5.0, unmeasured, True, broken="memory_gb <= 10")
    assert kept == Verdict(KEEP, "violates the constraint memory_gb <= 10: never promoted", 0.1,
                           constraint="memory_gb <= 10")
    fixed = judge(lab, 5.5, 5.0, unmeasured, True, base_broken="memory_gb <= 10")   # worse, but keeps the rule
    assert fixed.action == PROMOTE and "keeps every constraint where its base breaks memory_gb <= 10" in fixed.reason


def rows(*specs, status: str = "finished") -> pa.Table:
    """Scores rows from (kind, target, value, promoted) or (kind, target, value, promoted, status)."""
    at = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
    return pa.Table.from_pylist([{"id": f"e-{i}", "kind": spec[0], "status": (*spec, status)[4], "target": spec[1],
                                  "value": spec[2], "promoted": spec[3], "finished": at}
                                 for i, spec in enumerate(specs)], schema=SCORES)


def margin_of(lab: Lab, table=None, n_base: int = 1) -> float:
    return noise(lab, table, n_base).margin


def test_noise_margin_is_the_configured_one_without_a_baseline_set(tmp_path):
    lab = value_lab(tmp_path / "lab", margin=0.05, k=2.0)
    assert margin_of(lab, rows()) == 0.05
    assert margin_of(lab, rows(("baseline", "t1", 5.0, False))) == 0.05           # one run: no spread
    assert margin_of(lab, rows(("experiment", "t1", 5.0, False), ("experiment", "t1", 9.0, False))) == 0.05
    assert margin_of(lab, rows(("baseline", "t1", 5.0, False), ("baseline", "t2", 9.0, False))) == 0.05
    assert margin_of(lab, rows(("baseline", "t1", 5.0, False), ("baseline", "t1", None, False))) == 0.05
    unscaled = value_lab(tmp_path / "plain", margin=0.05)
    assert margin_of(unscaled, rows(("baseline", "t1", 4.8, False), ("baseline", "t1", 5.2, False))) == 0.05


def test_noise_margin_from_the_latest_baseline_set(tmp_path):
    lab = value_lab(tmp_path / "lab", margin=0.01, k=2.0)
    spread = rows(("baseline", "t1", 4.8, False), ("baseline", "t1", 5.0, False), ("baseline", "t1", 5.2, False))
    assert margin_of(lab, spread) == pytest.approx(0.4)                            # 2 x stdev 0.2
    later = rows(("baseline", "t1", 4.0, False), ("baseline", "t1", 6.0, False), ("baseline", "t2", 5.0, False),
                 ("baseline", "t2", 5.1, False), ("baseline", "t2", float("nan"), False))
    assert margin_of(lab, later) == pytest.approx(2 * 0.1 / math.sqrt(2))          # t2's set, NaN dropped
    wide = value_lab(tmp_path / "wide", margin=1.0, k=2.0)
    assert margin_of(wide, spread) == 1.0                                           # the larger one wins


def test_margin_derived_from_a_false_promotion_rate_by_hand(tmp_path):
    """t(0.95, 3 df) = 2.3534; four baselines 5.0, 5.2, 4.8, 5.0 have stdev 0.16330; the base
    averages those 4 runs and the candidate is one run: 2.3534 x 0.16330 x sqrt(1/4 + 1) = 0.42966."""
    lab = value_lab(tmp_path / "lab", margin=0.01, rate=0.05)
    four = rows(*(("baseline", "t1", v, False) for v in (5.0, 5.2, 4.8, 5.0)))
    assert margin_of(lab, four, n_base=4) == pytest.approx(0.42966, abs=5e-5)
    assert margin_of(lab, four, n_base=1) == pytest.approx(2.3534 * 0.16330 * math.sqrt(2), abs=5e-4)
    assert margin_of(lab, rows(("baseline", "t1", 5.0, False))) == 0.01                # no σ yet: the floor
    floor = value_lab(tmp_path / "floor", margin=1.0, rate=0.05)
    assert margin_of(floor, four, n_base=4) == 1.0                                      # never below the floor
    assert derived_margin(0.026, 0.05, 4, df=3) == pytest.approx(0.0684, abs=5e-5)     # one candidate run by default
    both = value_lab(tmp_path / "both", margin=0.01, k=4.0, rate=0.05)
    assert margin_of(both, four, n_base=4) == pytest.approx(4 * 0.16330, abs=5e-5)      # the larger rule wins


def test_two_baselines_are_a_set_and_only_the_latest_targets_set_counts(tmp_path):
    lab = value_lab(tmp_path / "lab", margin=0.01, k=2.0)
    pair = rows(("baseline", "t1", 4.8, False), ("baseline", "t1", 5.2, False))
    assert margin_of(lab, pair) == pytest.approx(2 * 0.4 / math.sqrt(2))
    moved = rows(("baseline", "t1", 4.0, False), ("baseline", "t1", 6.0, False), ("baseline", "t2", 5.0, False),
                 ("baseline", "t2", 5.2, False), ("baseline", "t3", 7.0, False))
    assert margin_of(lab, moved) == 0.01          # main moved to t3: one run of it, no spread known yet


def test_margin_and_score_read_the_labs_own_scores_by_default(tmp_path):
    lab = value_lab(tmp_path / "lab", margin=0.01, k=2.0)
    head = gitops.head(lab.root)
    key = target_key(lab, head)
    for row in rows(("baseline", key, 4.8, False), ("baseline", key, 5.2, False)).to_pylist():
        write_score(lab, row)                       # each baseline's own file, as the runner records it
    assert score_of(lab, head) == pytest.approx(5.0)
    assert margin_of(lab) == pytest.approx(2 * 0.4 / math.sqrt(2))


def test_score_of_a_target_is_the_mean_of_its_finished_measurements_of_any_kind(tmp_path):
    lab = value_lab(tmp_path / "lab")
    head = gitops.head(lab.root)
    key = target_key(lab, head)
    table = rows(("baseline", key, 5.0, False), ("experiment", key, 1.0, False), ("experiment", key, 4.0, True),
                 ("baseline", key, float("nan"), False), ("baseline", "other", 0.5, False),
                 ("confirm", key, 9.0, False, "failed"), ("baseline", key, None, False, "timed_out"))
    assert sorted(key_values(table, key)) == [1.0, 4.0, 5.0]       # NaN, failed and another target's dropped
    assert score_of(lab, head, table=table) == pytest.approx(10 / 3)
    assert score_of(lab, head, table=rows()) is None
    assert key_values(rows(), key) == []


def test_base_commit_is_the_last_change_to_the_editable_files(tmp_path):
    lab = value_lab(tmp_path / "lab")
    first = gitops.head(lab.root)
    (lab.root / "notes.md").write_text("not the target\n")
    gitops.commit_paths(lab.root, ["notes.md"], "a state commit")
    assert base_commit(lab) == first and target_key(lab, gitops.head(lab.root)) == target_key(lab, first)
    (lab.root / "score.py").write_text((lab.root / "score.py").read_text().replace("A = 0.0", "A = 1.0"))
    changed = gitops.commit_paths(lab.root, ["score.py"], "a target change")
    assert base_commit(lab) == changed and target_key(lab, changed) != target_key(lab, first)
    assert base_commit(lab, "HEAD~1") == first                      # as of an older ref
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["editable"] = ["never_committed.py"]
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert base_commit(Lab(lab.root)) == gitops.head(lab.root)      # no commit changed it: HEAD itself


def test_merge_into_main_brings_only_the_editable_files(tmp_path):
    lab = value_lab(tmp_path / "lab")
    gitops.run_git(lab.root, "checkout", "-q", "-b", "exp/e-1")
    (lab.root / "score.py").write_text((lab.root / "score.py").read_text().replace("A = 0.0", "A = 1.0"))
    (lab.root / "other.txt").write_text("not editable\n")
    gitops.run_git(lab.root, "add", "-A")
    gitops.run_git(lab.root, "commit", "-q", "-m", "experiment")
    gitops.run_git(lab.root, "checkout", "-q", "main")
    gitops.run_git(lab.root, "branch", "score.py")          # a branch named like the file: paths stay paths
    assert merge_into_main(lab, "exp/e-1") == ["score.py"]
    assert "A = 1.0" in (lab.root / "score.py").read_text() and not (lab.root / "other.txt").exists()
    assert merge_into_main(Lab(lab.root), "main") == []


def test_a_failed_baseline_is_named_until_a_measurement_of_its_target_succeeds(tmp_path):
    lab = value_lab(tmp_path / "lab")
    head = gitops.head(lab.root)
    key = target_key(lab, head)
    assert failed_baseline(lab, head, rows()) is None
    assert failed_baseline(lab, head) is None                                  # no scores table yet
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "failed"))) == "e-0"
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "timed_out"))) == "e-0"
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "failed"),
                                           ("baseline", key, None, False, "timed_out"))) == "e-1"   # the latest
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "failed"),
                                           ("baseline", key, 5.0, False))) is None      # it succeeded since
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "failed"),
                                           ("experiment", key, None, False, "failed"))) == "e-0"
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "failed"),
                                           ("baseline", "other", 5.0, False))) == "e-0"  # another target's
    assert failed_baseline(lab, head, rows(("baseline", "other", None, False, "failed"))) is None
    assert failed_baseline(lab, head, rows(("experiment", key, None, False, "failed"))) is None
    assert failed_baseline(lab, head, rows(("baseline", key, None, False, "cancelled"))) is None
    assert failed_baseline(lab, head, rows(("baseline", key, 5.0, False, "failed"))) is None


# -- end to end through the runner ----------------------------------------------------------------
def test_a_gain_inside_the_margin_is_not_promoted_one_just_outside_is(tmp_path):
    lab = value_lab(tmp_path / "lab", margin=0.1)
    enqueue(lab, None)
    inside = enqueue(lab, {"VALUE": 4.95}, priority=5)       # runs first: main is still 5.0
    outside = enqueue(lab, {"VALUE": 4.89})
    run(lab, until_idle=True, plan=False, tick=0.1)
    kept = result(lab, inside)["result"]
    assert kept["promoted"] is False and kept["value"] == pytest.approx(4.95)
    assert kept["reason"] == "not better than its base 5 by more than the margin 0.1"
    won = result(lab, outside)["result"]
    assert won["promoted"] is True and won["base_value"] == pytest.approx(5.0)
    assert "VALUE = 4.89" in gitops.run_git(lab.root, "show", "HEAD:score.py") and target_changes(lab) == 1


def test_maximize_promotes_only_a_rise_beyond_the_margin(tmp_path):
    lab = value_lab(tmp_path / "lab", "maximize", margin=0.1, metric="accuracy")
    enqueue(lab, None)
    lower = enqueue(lab, {"VALUE": 3.0}, priority=9)          # a big drop: a win only if minimizing
    inside = enqueue(lab, {"VALUE": 5.05}, priority=5)
    outside = enqueue(lab, {"VALUE": 5.2})
    run(lab, until_idle=True, plan=False, tick=0.1)
    assert result(lab, lower)["result"]["promoted"] is False
    assert result(lab, inside)["result"]["promoted"] is False
    assert result(lab, outside)["result"]["promoted"] is True
    assert "VALUE = 5.2" in (lab.root / "score.py").read_text() and target_changes(lab) == 1


def test_margin_derived_from_repeated_baselines_raises_the_bar(tmp_path, run_lab):
    lab = value_lab(tmp_path / "lab", margin=0.01, k=2.0)
    measured = run_lab("baseline", "--repeats", "3", cwd=lab.root)
    assert measured.returncode == 0, measured.stderr
    # t with 2 df: P(T > 0.4 / (0.2·√(1 + 1/3))) = 0.5 - 1.732 / (2·√(2 + 3)) = 11.3%
    assert ("val_bpb: mean 5, stdev 0.2 over 3 run(s); margin 0.4, seed stdev 0.2 over 3 runs, base of 3 run(s): "
            "a change with no effect is promoted with probability 11.3%") in measured.stdout
    inside = enqueue(lab, {"VALUE": 4.7}, priority=5)         # beats 0.01 by far, not 0.4
    outside = enqueue(lab, {"VALUE": 4.5})
    run(lab, until_idle=True, plan=False, tick=0.1)
    kept = result(lab, inside)["result"]
    assert kept["promoted"] is False and "by more than the margin 0.4 (z " in kept["reason"]
    won = result(lab, outside)["result"]
    assert won["promoted"] is True and "val_bpb 5 -> 4.5, margin 0.4 (z " in won["reason"]
    assert target_changes(lab) == 1


def test_a_win_on_a_stale_base_is_requeued_on_the_new_main_not_merged(tmp_path):
    lab = value_lab(tmp_path / "lab", slots=2)
    enqueue(lab, None)
    run(lab, until_idle=True, plan=False, tick=0.1)
    first, second = enqueue(lab, {"A": 1.0}), enqueue(lab, {"B": 0.5})   # same base, dispatched together
    old_key = target_key(lab, gitops.head(lab.root))
    run(lab, until_idle=True, plan=False, tick=0.1)
    records = {exp: result(lab, exp) for exp in (first, second)}
    [stale] = [exp for exp, rec in records.items() if rec["status"] == "stale"]
    [promoted] = [exp for exp, rec in records.items() if rec["result"]["promoted"]]
    assert records[stale]["base"] == records[promoted]["base"] and target_key(lab, records[stale]["base"]) == old_key
    requeued = records[stale]["result"]["reason"].rsplit(" as ", 1)[1]
    again = result(lab, requeued)
    assert again["requeued_from"] == stale and again["change"] == records[stale]["change"]
    assert target_key(lab, again["base"]) != old_key and again["result"]["promoted"] is True   # on the new main
    assert again["result"]["base_value"] == pytest.approx(records[promoted]["result"]["value"])
    assert target_changes(lab) == 2                         # the promoted one, then the re-run; never the stale
    text = (lab.root / "score.py").read_text()
    assert "A = 1.0" in text and "B = 0.5" in text
    assert validate(lab.root).ok


def test_an_experiment_without_a_score_for_its_base_waits_for_a_baseline(tmp_path):
    """Never judged against nothing: the runner queues a baseline of the base first."""
    lab = value_lab(tmp_path / "lab")
    exp = enqueue(lab, {"VALUE": 1.0})                       # a huge win, but nothing to compare with yet
    run(lab, until_idle=True, plan=False, tick=0.1)
    [baseline] = [p.parent.name for p in lab.experiments.glob("*/experiment.yaml") if p.parent.name != exp]
    measured = result(lab, baseline)
    assert measured["kind"] == "baseline" and measured["base"] == result(lab, exp)["base"]
    assert measured["result"]["value"] == pytest.approx(5.0)
    record = result(lab, exp)["result"]
    assert record["promoted"] is True and record["base_value"] == pytest.approx(5.0)
    assert record["delta"] == pytest.approx(-4.0) and target_changes(lab) == 1
