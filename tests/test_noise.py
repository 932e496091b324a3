"""The margin a false-promotion rate asks for, and the evidence each promotion carries: the derivation
against hand-computed values, then real loops on a toy target with known seed noise (real git,
subprocesses and Parquet), where z-scores, single-run evidence and confirmation runs are recorded."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import yaml
from test_loop import finished, queue

from runner.lab import Lab
from runner.loop.noise import derived_margin, diff_sd, implied_rate, t_quantile, z_score
from runner.loop.run import run
from runner.loop.scoring import noise_for
from runner.repo import gitops
from runner.scaffold import init_lab
from runner.state.scores import scores
from runner.validation.validate import validate


# -- the derivation -------------------------------------------------------------------------------
def test_t_quantiles_match_the_printed_tables():
    assert t_quantile(0.95, 3) == pytest.approx(2.353363, abs=1e-6)
    assert t_quantile(0.95, 1) == pytest.approx(6.313752, abs=1e-6)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.95, 30) == pytest.approx(1.697261, abs=1e-6)
    assert t_quantile(0.95, None) == pytest.approx(1.644854, abs=1e-6)


@pytest.mark.parametrize("sigma, rate, n_base, n_cand, df, by_hand", [
    # 2.353363 x 0.026 x sqrt(1/1 + 1/4) = 2.353363 x 0.026 x 1.118034
    (0.026, 0.05, 4, 1, 3, 0.0684097),
    # sigma known exactly: 1.644854 x 0.026 x sqrt(1 + 1/2) = 1.644854 x 0.026 x 1.224745
    (0.026, 0.05, 2, 1, None, 0.0523777),
    # one run on each side at 2.5%: 2.776445 x 0.01 x sqrt(2)
    (0.01, 0.025, 1, 1, 4, 0.0392648),
    # a confirmed candidate (two runs): 2.353363 x 0.02 x sqrt(1/2 + 1/4)
    (0.02, 0.05, 4, 2, 3, 0.0407615),
])
def test_margin_from_sigma_seeds_and_rate_matches_hand_computed_values(sigma, rate, n_base, n_cand, df, by_hand):
    margin = derived_margin(sigma, rate, n_base, n_cand, df)
    assert margin == pytest.approx(by_hand, rel=1e-5)
    assert implied_rate(margin, sigma, n_base, n_cand, df) == pytest.approx(rate, abs=1e-6)


def test_more_seeds_on_either_side_lower_the_margin():
    one = derived_margin(0.026, 0.05, 4, 1, 3)
    assert derived_margin(0.026, 0.05, 8, 1, 3) < one                    # a better measured base
    assert derived_margin(0.026, 0.05, 4, 2, 3) < one                    # a confirmed candidate
    assert derived_margin(0.026, 0.05, 4, 1, 7) < one                    # a better measured sigma
    assert derived_margin(0.026, 0.01, 4, 1, 3) > one                    # a stricter rate


def test_the_fixed_margin_of_the_issue_implies_about_17_percent():
    # 0.03 / (0.026 x sqrt(1.5)) = 0.942 standard deviations: 1 - Phi(0.942) = 0.173
    assert implied_rate(0.03, 0.026, 2, 1, None) == pytest.approx(0.1731, abs=5e-4)


def test_z_score_is_the_gain_in_stdevs_of_the_difference():
    assert diff_sd(0.02, 4, 1) == pytest.approx(0.02 * math.sqrt(1.25))
    assert z_score(0.05, 0.02, 4, 1) == pytest.approx(0.05 / 0.0223607, rel=1e-5)     # 2.23607
    assert z_score(0.05, None, 4) is None
    assert z_score(0.05, 0.0, 4) == math.inf and z_score(-0.05, 0.0, 4) == -math.inf   # no noise at all


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.2, -0.1])
def test_a_rate_outside_0_to_half_is_refused(rate):
    with pytest.raises(ValueError, match="false-promotion rate"):
        derived_margin(0.02, rate, 4)


def test_the_objective_combines_floor_k_sigma_and_rate():
    objective = {"noise_margin": 0.03, "margin_from_baseline": 2.0, "false_promotion_rate": 0.05}
    unmeasured = noise_for(objective, None, 1, 4)
    assert unmeasured.margin == 0.03 and unmeasured.rate is None and unmeasured.z(0.1) is None
    noisy = noise_for(objective, 0.026, 4, 4)
    assert noisy.margin == pytest.approx(0.0684097, rel=1e-5)            # the rate's margin is the largest
    assert noisy.rate == pytest.approx(0.05, abs=1e-6) and noisy.df == 3
    quiet = noise_for(objective, 0.001, 4, 4)
    assert quiet.margin == 0.03 and quiet.rate < 1e-3                   # the floor holds
    assert noise_for({"noise_margin": 0.0, "margin_from_baseline": 2.0}, 0.02, 3, 1).margin == pytest.approx(0.04)


# -- the evidence of a promotion, in a real loop -------------------------------------------------------
# X near 3 is best. Baselines run on seeds 0..3 and land at -0.1, +0.1, -0.1, +0.1 around their mean, so
# the seed stdev is 0.11547 and, with four base runs, a one-run candidate needs a gain above
# 2.353363 x 0.11547 x sqrt(1.25) = 0.3038 to be promoted at a 5% false-promotion rate.
# A candidate's second run of the same X (a confirmation) is worse by LUCK: the first was the lucky one.
NOISY = textwrap.dedent('''\
    import os
    X = 1.0
    LUCK = 0.0
    offset = {0: -0.1, 1: 0.1, 2: -0.1, 3: 0.1}.get(int(os.environ["LAB_SEED"]))
    if offset is None:  # a candidate's run
        mark = os.path.join(os.environ["MARKS"], repr(X))
        offset = LUCK if os.path.exists(mark) else 0.0
        open(mark, "a").close()
    print(f"val_bpb: {(X - 3.0) ** 2 + 1.0 + offset:.6f}")
''')
SIGMA = 0.1154701


def script_lab(root: Path, script: str, source: str, objective: dict, params: list[str], **target) -> Lab:
    """A blank lab around one script (builtin worker, other roles off, 2 slots), committed."""
    init_lab(root, template="blank", commit=False)
    (root / script).write_text(source)
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["objective"] = objective
    config["target"].update(command=["python", script], editable=[script], params=params, time_limit_s=20,
                            stall_timeout_s=5, **target)
    config["backends"]["local"].update(slots=2, threads_per_slot=1)
    config["roles"] = {"researcher": {"kind": "off"}, "planner": {"kind": "off"},
                       "worker": {"kind": "builtin"}, "reporter": {"kind": "builtin"}}
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    gitops.run_git(root, "commit", "-q", "-m", f"a lab around {script}")
    return Lab(root)


def noisy_lab(root: Path, luck: float = 0.0, **objective) -> Lab:
    """The noisy target, with four baselines measured."""
    marks = root.parent / f"{root.name}-marks"
    marks.mkdir()
    lab = script_lab(root, "score.py", NOISY.replace("LUCK = 0.0", f"LUCK = {luck}"),
                     {"metric": "val_bpb", "direction": "minimize", "noise_margin": 0.01,
                      "false_promotion_rate": 0.05, **objective}, ["X", "LUCK"], env={"MARKS": str(marks)})
    for seed in range(4):
        queue(lab, None, baseline=True, seed=seed)
    run(lab, until_idle=True, plan=False, tick=0.1)
    return lab


def rows(lab: Lab) -> dict:
    return {row["id"]: row for row in scores(lab).to_pylist()}


def test_each_promotion_records_the_z_score_of_its_gain(tmp_path):
    lab = noisy_lab(tmp_path / "lab")
    strong = queue(lab, {"X": 2.5}, "move X most of the way to 3")        # 5.0 -> 1.25: a gain of 3.75
    run(lab, until_idle=True, plan=False, tick=0.1)
    row = rows(lab)[strong]
    z = 3.75 / (SIGMA * math.sqrt(1.25))                                  # 29.05
    assert row["promoted"] and row["z"] == pytest.approx(z, rel=1e-4) and row["evidence"] == "strong"
    assert row["margin"] == pytest.approx(2.353363 * SIGMA * math.sqrt(1.25), rel=1e-5)
    record = finished(lab, strong)["result"]
    assert record["z"] == pytest.approx(z, rel=1e-4) and record["evidence"] == "strong"
    assert record["seed"] == row["seed"] and row["seed"] not in (0, 1, 2, 3)   # its own seed, not a baseline's
    assert f"z {z:.2f}" in record["reason"]
    assert validate(lab.root).ok


def test_a_promotion_below_3_sigma_is_single_run_evidence(tmp_path):
    lab = noisy_lab(tmp_path / "lab")
    weak = queue(lab, {"X": 1.09}, "a small step")                       # 5.0 -> 4.6481: z 2.73
    run(lab, until_idle=True, plan=False, tick=0.1)
    row = rows(lab)[weak]
    assert row["promoted"] and row["evidence"] == "single-run"
    assert row["z"] == pytest.approx(0.3519 / (SIGMA * math.sqrt(1.25)), rel=1e-3)
    from runner.report import write_leaderboard
    assert "yes: single-run evidence (z 2.7)" in write_leaderboard(lab).read_text()


def test_a_confirmed_promotion_reruns_on_another_seed_and_promotes_the_mean(tmp_path):
    lab = noisy_lab(tmp_path / "lab", confirm_below=3)
    weak = queue(lab, {"X": 1.09}, "a small step")
    run(lab, until_idle=True, plan=False, tick=0.1)
    table = rows(lab)
    first = table[weak]
    assert not first["promoted"] and first["z"] == pytest.approx(2.7255, abs=1e-3)
    confirm_id = first["reason"].rsplit(" as ", 1)[1]
    assert "below z 3: confirming on another seed" in first["reason"]
    again = table[confirm_id]
    assert again["kind"] == "confirm" and again["seed"] != first["seed"]
    assert finished(lab, confirm_id)["confirms"] == weak
    # the mean of two runs (4.6481 both) against 4 base runs: sd 0.11547 x sqrt(1/2 + 1/4) = 0.1
    assert again["promoted"] and again["evidence"] == "confirmed"
    assert again["z"] == pytest.approx(0.3519 / (SIGMA * math.sqrt(0.75)), rel=1e-3)
    assert "X = 1.09" in (lab.root / "score.py").read_text()
    assert sum(r["promoted"] for r in table.values()) == 1
    # the new main's score averages both runs of it
    from runner.loop.scoring import base_commit, runs_of, score_of
    assert runs_of(lab, base_commit(lab)) == 2 and score_of(lab, base_commit(lab)) == pytest.approx(4.6481)
    assert validate(lab.root).ok


def test_a_lucky_run_that_the_second_seed_does_not_confirm_stays_off_main(tmp_path):
    lab = noisy_lab(tmp_path / "lab", luck=0.4, confirm_below=3)
    weak = queue(lab, {"X": 1.09}, "a small lucky step")
    run(lab, until_idle=True, plan=False, tick=0.1)
    table = rows(lab)
    first = table[weak]
    confirm_id = first["reason"].rsplit(" as ", 1)[1]
    # the second run lands 0.4 worse: the mean of both (4.8481) no longer clears the margin of 0.2353
    assert table[confirm_id]["kind"] == "confirm" and table[confirm_id]["value"] == pytest.approx(5.0481)
    assert not table[confirm_id]["promoted"] and "not better than its base" in table[confirm_id]["reason"]
    assert not any(r["promoted"] for r in table.values())
    assert "X = 1.0" in (lab.root / "score.py").read_text()


def test_lab_baseline_repeats_on_fresh_seeds_and_states_the_noise(tmp_path, run_lab):
    marks = tmp_path / "marks"
    marks.mkdir()
    lab = script_lab(tmp_path / "lab", "score.py", NOISY, {"metric": "val_bpb", "direction": "minimize",
                     "noise_margin": 0.01, "false_promotion_rate": 0.05}, ["X", "LUCK"], env={"MARKS": str(marks)})
    first = run_lab("baseline", "--repeats", "2", cwd=lab.root, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "(seeds 0..1)" in first.stdout
    again = run_lab("baseline", "--repeats", "2", cwd=lab.root, timeout=180)
    assert "(seeds 2..3)" in again.stdout                      # a repeated seed would repeat its number
    assert sorted(r["seed"] for r in rows(lab).values()) == [0, 1, 2, 3]
    margin = 2.353363 * SIGMA * math.sqrt(1 / 1 + 1 / 4)
    assert (f"margin {margin:.4g}, seed stdev {SIGMA:.4g} over 4 runs, base of 4 run(s): a change with no effect "
            "is promoted with probability 5.0%") in again.stdout
    status = run_lab("status", cwd=lab.root)
    assert f"noise: margin {margin:.4g}, seed stdev {SIGMA:.4g} over 4 runs" in status.stdout
