"""`lab demo --template finetune`, shortened: the same loop through the real CLI on a smaller budget.

The demo scaffolds a finetune lab, queues four baseline seeds and lets the builtin roles work. Here
the lab gets a smaller budget first, committed on main like any edit of the frozen constants (a
shorter evaluation; a winner is not re-run on a second seed), then `lab baseline` and
`lab run` do what the demo does: the builtin researcher proposes from the lab's ideas.yaml, the
planner queues, the worker edits, the runner trains, parses eval_score, records and merges the
winner into main.
"""
from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
import yaml

from runner.files.metrics import parse_summary
from runner.state.params import apply_params, read_params

pytest.importorskip("trl", reason="needs the finetune extra (transformers, trl, datasets, peft, accelerate)")

SMALL = {"EVAL_HOLDOUT": 100, "EVAL_SAMPLES": 100}   # the default's training (less would leave 3 epochs within the noise)
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def records(root) -> dict[str, dict]:
    return {p.parent.name: yaml.safe_load(p.read_text()) for p in (root / "experiments").glob("*/experiment.yaml")}


@pytest.mark.slow
@pytest.mark.timeout(1500)   # six CPU runs of ~50 s: ~3 min alone, much longer on a shared machine
def test_the_finetune_loop_promotes_a_better_recipe_and_records_real_runs(tmp_path, run_lab, git):
    root = tmp_path / "lab"
    assert run_lab("init", root, "--template", "finetune", cwd=tmp_path).returncode == 0
    script = root / "finetune.py"
    script.write_text(apply_params(script.read_text(), SMALL, "finetune.py"))
    config = root / "lab.yaml"   # one run per idea: no confirmation run on a second seed
    config.write_text(re.sub(r"(?m)^  confirm_below: .*\n", "", config.read_text()))
    git(root, "commit", "-qam", "test: a shorter evaluation, no confirmation runs")
    start = git(root, "rev-parse", "HEAD").strip()
    assert run_lab("baseline", "--repeats", "4", cwd=root, env=OFFLINE, timeout=900).returncode == 0
    done = run_lab("run", "--until-idle", "--max-experiments", "2", cwd=root, env=OFFLINE, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    found = records(root)
    # stale: it beat its base but main moved meanwhile (another idea was promoted), so it was re-queued
    assert len(found) == 6 and all(r["status"] in ("finished", "stale") for r in found.values()), found
    hypotheses = {p.stem: yaml.safe_load(p.read_text()) for p in (root / "hypotheses").glob("*.yaml")}
    ran = {hypotheses[r["hypothesis"]]["tags"][0] for r in found.values() if r["kind"] != "baseline"}
    assert ran == {"idea:ft-three-epochs", "idea:ft-constant-lr"}   # the lab's library, in its order
    promoted = [r for r in found.values() if r["result"]["promoted"]]
    assert promoted, {i: r["result"] for i, r in found.items()}
    floor = yaml.safe_load((root / "lab.yaml").read_text())["objective"]["noise_margin"]
    for record in promoted:   # each beat the mean of the baselines by more than the margin the noise asked for
        result = record["result"]
        assert result["margin"] >= floor and result["value"] > result["base_value"] + result["margin"]
    winner = max(promoted, key=lambda r: r["result"]["value"])
    [(name, value)] = winner["change"]["params"].items()
    assert read_params(script.read_text(), "finetune.py")[name] == value      # merged into main
    assert git(root, "rev-parse", "HEAD").strip() != start

    table = pq.read_table(root / "experiments" / "scores").to_pylist()
    assert sorted(row["id"] for row in table) == sorted(found)
    for row in table:   # each score is the last eval_score the job printed, and the job really trained
        log = (root / "experiments" / row["id"] / "log.txt").read_text()
        summary = parse_summary(log)
        assert row["value"] == pytest.approx(summary["eval_score"]) and summary["steps"] >= 200
        assert found[row["id"]]["result"]["metrics"]["eval_loss"] == pytest.approx(summary["eval_loss"])
        steps = pq.read_table(root / "experiments" / row["id"] / "metrics.parquet").to_pylist()
        losses = [r["value"] for r in steps if r["name"] == "loss" and not r["summary"]]
        assert len(losses) >= 20 and losses[-1] < losses[0]
    diff = (root / "experiments" / winner["id"] / "patch.diff").read_text()
    assert re.search(rf"^\+{name} = ", diff, re.M) and len(re.findall(r"^[-+][^-+]", diff, re.M)) == 2


def test_demo_and_init_offer_the_finetune_template(tmp_path, run_lab):
    for verb in ("init", "demo"):
        assert "finetune" in run_lab(verb, "--help", cwd=tmp_path).stdout
    refused = run_lab("demo", str(tmp_path / "d"), "--template", "finetune", "--budget", "5", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: -: budget: --budget is train.py's time budget; the finetune template's runs have their own"]
    assert not (tmp_path / "d").exists()
