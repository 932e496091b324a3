"""`lab init`, `lab status`, `lab hypothesis new` and `lab queue add` through the real CLI."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml

from runner.assets import asset_path
from runner.lab import Lab
from runner.state.events import record_event
from runner.state.scores import write_scores
from runner.validation.validate import validate

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


# -- lab init -------------------------------------------------------------------
def test_init_makes_a_lab_in_a_new_git_repo(tmp_path, run_lab, git):
    result = run_lab("init", "mylab", "--template", "blank", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "mylab"
    for sub in ("hypotheses", "queue", "experiments", "kernels", "skills", "schemas"):
        assert (root / sub).is_dir(), sub
    config = yaml.safe_load((root / "lab.yaml").read_text())
    assert config["lab"] == "mylab" and config["objective"]["direction"] in ("minimize", "maximize")
    for schema_file in asset_path("schemas").glob("*"):
        assert (root / "schemas" / schema_file.name).read_bytes() == schema_file.read_bytes()
    assert ".lab/" in (root / ".gitignore").read_text().splitlines()
    hooks = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())
    assert [h["id"] for r in hooks["repos"] for h in r["hooks"]] == ["lab-validate"]
    assert "skills/" in (root / "AGENTS.md").read_text()
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "branch", "--show-current").strip() == "main"
    tracked = git(root, "ls-files").split()
    assert "lab.yaml" in tracked and "hypotheses/.gitkeep" in tracked and ".pre-commit-config.yaml" in tracked
    check = run_lab("validate", cwd=root)
    assert check.returncode == 0 and check.stdout.startswith("ok: ")


def test_init_tiny_gpt_template_ships_the_target(tmp_path, run_lab):
    train = asset_path("train.py")      # missing from the install: a packaging regression, so fail
    result = run_lab("init", "tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny" / "train.py").read_bytes() == train.read_bytes()
    assert Lab(tmp_path / "tiny").metric == "val_bpb"
    assert validate(tmp_path / "tiny").ok


def test_init_refuses_a_non_empty_directory(tmp_path, run_lab, git, tree_hashes):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    (target / ".gitignore").write_text("*.log\n")
    before = tree_hashes(target)
    result = run_lab("init", str(target), "--template", "blank", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {target}: -: directory is not empty (use --force to scaffold " \
                                    "into it anyway)"
    assert tree_hashes(target) == before
    forced = run_lab("init", str(target), "--template", "blank", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (target / "notes.txt").read_text() == "mine\n"
    assert (target / ".gitignore").read_text().splitlines()[:2] == ["*.log", ".lab/"]
    assert "notes.txt" not in git(target, "ls-files").split()  # only the scaffold is committed


def test_init_force_keeps_existing_lab_files(tmp_path, run_lab, make_lab):
    lab = make_lab(tmp_path)
    (lab.root / "AGENTS.md").write_text("my own notes\n")
    result = run_lab("init", str(lab.root), "--template", "blank", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stdout and "AGENTS.md" in result.stdout
    assert (lab.root / "AGENTS.md").read_text() == "my own notes\n"


def test_init_errors_are_one_line(tmp_path, run_lab):
    (tmp_path / "file").write_text("x")
    result = run_lab("init", "file", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'file'" in result.stderr and (tmp_path / "file").read_text() == "x"    # named, untouched
    bad = run_lab("init", "x", "--template", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'nope'" in bad.stderr and not (tmp_path / "x").exists()


def test_commands_outside_a_lab_say_so(tmp_path, run_lab):
    for args in (["status"], ["validate"], ["hypothesis", "new", "--title", "t", "--param", "A=1"]):
        result = run_lab(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and "no lab.yaml here or in any parent directory" in result.stderr


# -- lab hypothesis new / lab queue add ----------------------------------------------
def test_hypothesis_new_and_queue_add_write_valid_files(lab, run_lab, git):
    made = run_lab("hypothesis", "new", "--title", "Lower LR", "--param", "LEARNING_RATE=0.002",
                   "--param", "ACT=gelu", "--param", "USE_BIAS=false", "--rationale", "smaller steps",
                   "--source", "paper", "--ref", "arXiv:1711.05101", cwd=lab.root)
    assert made.returncode == 0, made.stderr
    hyp_id, rel = made.stdout.split()
    assert rel == f"hypotheses/{hyp_id}.yaml"
    hyp = yaml.safe_load((lab.root / rel).read_text())
    assert hyp["id"] == hyp_id and hyp["status"] == "proposed" and hyp["title"] == "Lower LR"
    assert hyp["change"] == {"params": {"LEARNING_RATE": 0.002, "ACT": "gelu", "USE_BIAS": False}}
    assert hyp["source"] == {"kind": "paper", "ref": "arXiv:1711.05101"}

    queued = run_lab("queue", "add", "--hypothesis", hyp_id, "--priority", "5", cwd=lab.root)
    assert queued.returncode == 0, queued.stderr
    exp_id, rel = queued.stdout.split()
    entry = yaml.safe_load((lab.root / rel).read_text())
    assert rel == f"queue/{exp_id}.yaml" and entry["id"] == exp_id and exp_id != hyp_id
    assert entry["hypothesis"] == hyp_id and entry["status"] == "queued" and entry["priority"] == 5
    assert entry["change"] == hyp["change"] and entry["fingerprint"].startswith("sha256:")
    assert entry["base"] == git(lab.root, "rev-parse", "HEAD").strip()
    override = run_lab("queue", "add", "--hypothesis", hyp_id, "--param", "LEARNING_RATE=0.001", cwd=lab.root)
    assert yaml.safe_load((lab.root / override.stdout.split()[1]).read_text())["change"] == {
        "params": {"LEARNING_RATE": 0.001}}
    assert run_lab("validate", cwd=lab.root).returncode == 0


@pytest.mark.parametrize("hyp_id, message", [
    ("h-nope", "error: hypotheses/h-nope.yaml: hypothesis: unknown hypothesis 'h-nope': no such file"),
    ("../etc/passwd", "error: -: hypothesis: '../etc/passwd' is not a safe id"),
    ("h 1", "error: -: hypothesis: 'h 1' is not a safe id"),
])
def test_queue_add_refuses_an_unknown_hypothesis(lab, run_lab, hyp_id, message, tree_hashes):
    before = tree_hashes(lab.root)
    result = run_lab("queue", "add", "--hypothesis", hyp_id, cwd=lab.root)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert tree_hashes(lab.root) == before


def test_hypothesis_new_refuses_bad_input(lab, run_lab):
    no_change = run_lab("hypothesis", "new", "--title", "t", cwd=lab.root)
    assert no_change.returncode == 2 and "give at least one --param or --instructions" in no_change.stderr
    bad_param = run_lab("hypothesis", "new", "--title", "t", "--param", "oops", cwd=lab.root)
    assert bad_param.returncode == 2 and "--param wants NAME=VALUE, got 'oops'" in bad_param.stderr
    bad_name = run_lab("hypothesis", "new", "--title", "t", "--param", "1X=3", cwd=lab.root)
    assert bad_name.returncode == 2 and "params" in bad_name.stderr and "Traceback" not in bad_name.stderr
    long_title = run_lab("hypothesis", "new", "--title", "t" * 201, "--param", "A=1", cwd=lab.root)
    assert long_title.returncode == 2 and "title" in long_title.stderr and "too long" in long_title.stderr
    assert list(lab.hypotheses.glob("*.yaml")) == []


# -- lab status ----------------------------------------------------------------------
def score(exp_id, kind, value, promoted, status="finished", hypothesis=None):
    return {"id": exp_id, "hypothesis": hypothesis, "kind": kind, "status": status, "title": f"t {exp_id}",
            "metric": "val_loss", "value": value, "promoted": promoted, "commit": "c" * 40,
            "started": T0, "finished": T0, "duration_s": 12.5}


@pytest.fixture
def busy_lab(lab, write_doc, hypothesis_doc, experiment_doc):
    for i, status in enumerate(["proposed", "proposed", "accepted", "rejected"]):
        write_doc(lab.hypotheses / f"h-{i}.yaml", hypothesis_doc(f"h-{i}", status=status))
    write_doc(lab.queue / "e-q1.yaml", experiment_doc("e-q1", "h-2"))
    write_doc(lab.queue / "e-q2.yaml", experiment_doc("e-q2", "h-2", "running"))
    rows = [score("e-b", "baseline", 2.0, False), score("e-1", "experiment", 1.8, True, hypothesis="h-2"),
            score("e-2", "experiment", 1.5, False, hypothesis="h-2"),
            score("e-3", "experiment", None, False, "failed", hypothesis="h-2")]
    write_scores(lab, rows)
    record_event(lab, "warn", "nan", "loss became NaN", experiment="e-3")
    record_event(lab, "info", "promoted", "e-1 promoted", experiment="e-1")
    return lab


def test_status_text(busy_lab, run_lab):
    result = run_lab("status", cwd=busy_lab.root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"lab lab  ({busy_lab.root})"
    assert lines[1] == "objective: minimize val_loss"
    assert lines[2] == "hypotheses: 4 (accepted 1, proposed 2, rejected 1)"
    assert lines[3] == "queue: 2 (queued 1, running 1)"
    assert lines[4] == "finished: 4 (failed 1, finished 3), promoted 1"
    assert lines[5] == "noise: margin 0 (seed noise not measured yet: `lab baseline --repeats 4`)"
    assert lines[6] == "spend: $0, 0 GPU-hours, 0 agent tokens, 0.00 wall-clock hours"   # no job accounted
    assert lines[7] == "best on main: val_loss 1.8 (e-1, -10.00% vs first baseline)"
    assert lines[8].startswith("  [warn] 2026-") and lines[8].endswith("nan: loss became NaN")
    assert lines[9].endswith("promoted: e-1 promoted")


def test_status_json(busy_lab, run_lab):
    result = run_lab("status", "--json", cwd=busy_lab.root)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["hypotheses"] == {"proposed": 2, "accepted": 1, "rejected": 1}
    assert info["queue"] == {"queued": 1, "running": 1}
    assert info["finished"] == {"finished": 3, "failed": 1} and info["promoted"] == 1
    assert info["baseline"] == 2.0 and info["metric"] == "val_loss" and info["direction"] == "minimize"
    assert info["best_on_main"]["id"] == "e-1" and info["best_on_main"]["value"] == 1.8
    assert info["best_seen"]["id"] == "e-2" and info["best_seen"]["value"] == 1.5
    assert [e["kind"] for e in info["recent_events"]] == ["nan", "promoted"]


def test_status_of_an_empty_lab(lab, run_lab):
    result = run_lab("status", "--json", cwd=lab.root)
    info = json.loads(result.stdout)
    assert info["hypotheses"] == {} and info["queue"] == {} and info["best_on_main"] is None
    text = run_lab("status", cwd=lab.root).stdout
    assert "best on main: none yet" in text


def test_status_with_a_corrupt_scores_file_is_one_line(lab, run_lab):
    write_scores(lab, [score("e-b", "baseline", 2.0, False)])
    (lab.experiments / "scores" / "e-1.parquet").write_bytes(b"not parquet")
    result = run_lab("status", cwd=lab.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: experiments/scores/e-1.parquet: -: cannot read") and \
        "lab validate" in result.stderr


def test_queue_add_with_an_unresolvable_base_is_one_line(lab, run_lab, tmp_path, git):
    hyp_id = run_lab("hypothesis", "new", "--title", "t", "--param", "A=1", cwd=lab.root).stdout.split()[0]
    result = run_lab("queue", "add", "--hypothesis", hyp_id, "--base", "no-such-ref", cwd=lab.root)
    assert result.returncode == 2
    assert result.stderr == "error: -: base: cannot resolve 'no-such-ref' to a commit\n"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    (fresh / "lab.yaml").write_text((lab.root / "lab.yaml").read_text())
    hyp_id = run_lab("hypothesis", "new", "--title", "t", "--param", "A=1", cwd=fresh).stdout.split()[0]
    result = run_lab("queue", "add", "--hypothesis", hyp_id, cwd=fresh)
    assert result.returncode == 2 and "(the repository has no commit yet)" in result.stderr
    assert list((fresh / "queue").glob("*.yaml")) == []
