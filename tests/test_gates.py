"""Gates on changes and diffs, against real lab state (YAML files, the scores table, git)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from runner.state.scores import write_score
from runner.lab import Lab
from runner.repo import gitops, worktrees
from runner.roles import gates, history
from runner.roles.gates import History, check_diff, parse_diff, review_change
from runner.scaffold import init_lab
from runner.state import create as state
from runner.state.timeutil import now

TRAIN = "import math\n\nLEARNING_RATE = 0.001\nBATCH_SIZE = 16\nACTIVATION = 'relu'\n\n" + "".join(
    f"x{i} = {i}\n" for i in range(60))
LR = {"params": {"LEARNING_RATE": 0.002}}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def make_lab(tmp_path: Path, gates_config: dict | None = None) -> Lab:
    root = init_lab(tmp_path / "lab", template="blank")
    (root / "train.py").write_text(TRAIN)
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["target"]["params"] = ["LEARNING_RATE", "BATCH_SIZE", "ACTIVATION"]
    if gates_config:
        config["gates"] = gates_config
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git(root, "add", "-A")
    git(root, "commit", "-q", "--no-verify", "-m", "target")
    return Lab(root)


def score(lab: Lab, exp_id: str, change: dict, base: str, status: str = "finished", value: float | None = 1.92):
    write_score(lab, {
        "id": exp_id, "hypothesis": None, "kind": "experiment", "status": status, "title": "t",
        "change": json.dumps(change), "fingerprint": "", "base": base, "commit": base, "metric": lab.metric,
        "value": value, "base_value": 2.0, "delta": None, "promoted": False, "slot": "cpu0",
        "worker": "builtin", "wave": 0, "started": now(), "finished": now(), "duration_s": 1.0,
        "reason": None})


@pytest.fixture
def lab(tmp_path):
    return make_lab(tmp_path)


# -- duplicates ----------------------------------------------------------------------------
def test_exact_duplicate_of_a_finished_experiment_on_any_base(lab):
    base = gitops.head(lab.root)
    score(lab, "e-20261121-083512-abcd1234", {"params": {"LEARNING_RATE": 2e-3}}, base)
    rejection = review_change(lab, History.load(lab), LR, base="f" * 40)
    assert rejection.rule == "duplicate" and rejection.collides_with == "e-20261121-083512-abcd1234"
    assert rejection.message == "duplicate of e-20261121-083512-abcd1234 (finished, val_loss 1.92)"


def test_duplicate_of_a_queued_entry_and_its_exclusions(lab):
    base = gitops.head(lab.root)
    hyp, _ = state.new_hypothesis(lab, "lr", LR, status="accepted")
    exp, _ = state.new_experiment(lab, hyp, LR, base)
    history = History.load(lab)
    assert review_change(lab, history, LR, base=base).collides_with in (hyp, exp)
    assert review_change(lab, history, LR, base=base, hypothesis_id=hyp).collides_with == exp
    assert review_change(lab, history, LR, base=base, exclude_id=exp, hypothesis_id=hyp) is None


def test_cancelled_and_stale_experiments_may_be_repeated(lab):
    base = gitops.head(lab.root)
    score(lab, "e-1", LR, base, status="cancelled", value=None)
    score(lab, "e-2", LR, base, status="stale", value=None)
    assert review_change(lab, History.load(lab), LR, base=base) is None
    score(lab, "e-3", LR, base, status="failed", value=None)
    assert review_change(lab, History.load(lab), LR, base=base).collides_with == "e-3"


def test_history_add_keeps_the_index_current_within_a_pass(lab):
    base = gitops.head(lab.root)
    history = History.load(lab)
    assert review_change(lab, history, LR, base=base) is None
    history.add("e-new", LR, base, "queued")
    assert review_change(lab, history, LR, base=base).collides_with == "e-new"
    assert review_change(lab, history, {"params": {"LEARNING_RATE": 0.00201}}, base=base).rule == "near-duplicate"


def test_near_duplicate_only_on_the_same_base_and_within_tolerance(lab):
    base = gitops.head(lab.root)
    score(lab, "e-1", {"params": {"LEARNING_RATE": 0.002}}, base)
    history = History.load(lab)
    near = review_change(lab, history, {"params": {"LEARNING_RATE": 0.0021}}, base=base[:10])
    assert near.rule == "near-duplicate" and near.collides_with == "e-1" and "within 5%" in near.message
    assert review_change(lab, history, {"params": {"LEARNING_RATE": 0.0021}}, base="a" * 40) is None
    assert review_change(lab, history, {"params": {"LEARNING_RATE": 0.0022}}, base=base) is None
    assert review_change(lab, history, {"params": {"LEARNING_RATE": 0.0022}}, base=base, tolerance=0.2)
    assert review_change(lab, history, {"params": {"LEARNING_RATE": -0.002}}, base=base) is None


def test_near_duplicate_needs_the_same_non_numeric_values(lab):
    base = gitops.head(lab.root)
    change = {"params": {"LEARNING_RATE": 0.002}, "instructions": "use a cosine schedule"}
    score(lab, "e-1", change, base)
    history = History.load(lab)
    similar = {"params": {"LEARNING_RATE": 0.00205}, "instructions": "Use a  cosine schedule"}
    assert review_change(lab, history, similar, base=base).rule == "near-duplicate"
    other = {"params": {"LEARNING_RATE": 0.00205}, "instructions": "use a linear schedule"}
    assert review_change(lab, history, other, base=base) is None


def test_do_not_repeat_a_rejected_hypothesis_exactly_or_nearly(lab):
    hyp, _ = state.new_hypothesis(lab, "too high", {"params": {"LEARNING_RATE": 0.1}}, status="rejected")
    history = History.load(lab)
    for value in (0.1, 0.103):
        rejection = review_change(lab, history, {"params": {"LEARNING_RATE": value}}, base="a" * 40)
        assert rejection.rule == "do-not-repeat" and rejection.collides_with == hyp
        assert hyp in rejection.message and "do-not-repeat" in rejection.message
    assert review_change(lab, history, {"params": {"LEARNING_RATE": 0.2}}, base="a" * 40) is None


def test_single_change_rule_and_its_configuration(tmp_path):
    lab = make_lab(tmp_path)
    history = History.load(lab)
    two = {"params": {"LEARNING_RATE": 0.002, "BATCH_SIZE": 32}}
    rejection = review_change(lab, history, two, base="a" * 40)
    assert rejection.rule == "single-change" and "LEARNING_RATE, BATCH_SIZE" in rejection.message
    undeclared = review_change(lab, history, {"params": {"SEED": 3}}, base="a" * 40)
    assert undeclared.rule == "single-change" and "SEED is not a declared parameter" in undeclared.message
    assert review_change(lab, history, {"instructions": "  "}, base="a" * 40).rule == "empty"
    relaxed = make_lab(tmp_path / "relaxed", {"max_params": 2, "declared_only": False})
    assert review_change(relaxed, History.load(relaxed), two, base="a" * 40) is None
    assert review_change(relaxed, History.load(relaxed), {"params": {"SEED": 3}}, base="a" * 40) is None


def test_history_load_reads_all_sources_and_skips_unreadable_files(lab):
    base = gitops.head(lab.root)
    score(lab, "e-1", LR, base)
    hyp, _ = state.new_hypothesis(lab, "bs", {"params": {"BATCH_SIZE": 64}})
    state.new_experiment(lab, hyp, {"params": {"ACTIVATION": "gelu"}}, base)
    (lab.hypotheses / "broken.yaml").write_text("title: [unclosed\n")
    state.new_experiment(lab, None, {}, base, kind="baseline")
    history = History.load(lab)
    assert len(history) == 3
    assert history.unreadable == [str(lab.hypotheses / "broken.yaml")]


# -- diffs ----------------------------------------------------------------------------------------
def diff_of(lab: Lab, new_text: str, path: str = "train.py") -> tuple[list[str], str]:
    (lab.root / path).write_text(new_text)
    files = git(lab.root, "diff", "--name-only").split()
    diff = git(lab.root, "diff")
    git(lab.root, "checkout", "-q", "--", path)
    return files, diff


def test_diff_that_sets_the_declared_parameter_passes(lab):
    files, diff = diff_of(lab, TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002  # tuned"))
    assert check_diff(lab, files, diff, LR) is None


def test_diff_that_touches_another_line_is_not_single(lab):
    text = TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002").replace("x40 = 40", "x40 = 41")
    rejection = check_diff(lab, *diff_of(lab, text), LR)
    assert rejection.rule == "single-change" and "x40 = 4" in rejection.message


def test_instruction_change_must_stay_in_one_region(tmp_path):
    lab = make_lab(tmp_path)
    change = {"instructions": "rename variables"}
    one = TRAIN.replace("x10 = 10", "y10 = 10").replace("x14 = 14", "y14 = 14")
    assert check_diff(lab, *diff_of(lab, one), change) is None
    two = TRAIN.replace("x10 = 10", "y10 = 10").replace("x50 = 50", "y50 = 50")
    rejection = check_diff(lab, *diff_of(lab, two), change)
    assert rejection.rule == "single-change" and "2 separate regions" in rejection.message
    loose = make_lab(tmp_path / "loose", {"max_regions": 0})
    assert check_diff(loose, *diff_of(loose, two), change) is None


def test_empty_protected_and_not_editable_diffs(lab):
    assert check_diff(lab, [], "", LR).rule == "empty"
    protected = check_diff(lab, ["schemas/lab.schema.json"], "diff --git a/x b/x\n", LR)
    assert protected.rule == "protected" and "schemas/lab.schema.json" in protected.message
    assert check_diff(lab, ["lab.yaml"], "x", LR).rule == "protected"
    other = check_diff(lab, ["notes.txt"], "x", LR)
    assert other.rule == "not-editable" and "target.editable: train.py" in other.message


def test_parse_diff_is_not_fooled_by_content_that_looks_like_headers():
    diff = ("diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n a\n"
            "--- old comment\n+++ new comment\n c\n")
    [hunk] = parse_diff(diff)
    assert hunk.path == "train.py"
    assert hunk.removed == ["-- old comment"] and hunk.added == ["++ new comment"]
    assert hunk.changed_lines == [2, 2]


def test_worktree_changes_include_uncommitted_and_untracked_files(lab):
    base = gitops.head(lab.root)
    worktree = lab.worktrees / "e-1"
    git(lab.root, "worktree", "add", "-q", "-b", "exp/e-1", str(worktree), base)
    (worktree / "train.py").write_text(TRAIN.replace("0.001", "0.002"))
    (worktree / "extra.py").write_text("print(1)\n")
    worktrees.commit_leftovers(worktree, "e-1", "a worker")     # what the runner does before the gates
    files, diff = worktrees.changes(lab, "e-1", base)
    assert files == ["extra.py", "train.py"] and "+LEARNING_RATE = 0.002" in diff
    assert check_diff(lab, files, diff, LR).rule == "not-editable"


def test_of_two_identical_proposals_only_the_later_is_a_duplicate(lab):
    first, _ = state.new_hypothesis(lab, "lr", LR)
    second, _ = state.new_hypothesis(lab, "lr again", LR)
    data = yaml.safe_load((lab.hypotheses / f"{second}.yaml").read_text())
    data["created"] = "2099-01-01T00:00:00Z"
    (lab.hypotheses / f"{second}.yaml").write_text(yaml.safe_dump(data))
    history = History.load(lab)
    assert review_change(lab, history, LR, base="a" * 40, hypothesis_id=first) is None
    rejection = review_change(lab, history, LR, base="a" * 40, hypothesis_id=second)
    assert rejection.rule == "duplicate" and rejection.collides_with == first
    assert f"hypothesis {first} (proposed: lr)" in rejection.message


def test_a_proposal_added_within_a_pass_is_later_than_every_loaded_one(lab):
    first, _ = state.new_hypothesis(lab, "lr", LR)
    data = yaml.safe_load((lab.hypotheses / f"{first}.yaml").read_text())
    data["created"] = "2020-01-01T00:00:00Z"
    (lab.hypotheses / f"{first}.yaml").write_text(yaml.safe_dump(data))
    history = History.load(lab)
    history.add("h-new", LR, None, "proposed", kind="hypothesis", title="lr again")
    assert review_change(lab, history, LR, base="a" * 40, hypothesis_id=first) is None   # the original
    rejection = review_change(lab, history, LR, base="a" * 40, hypothesis_id="h-new")
    assert rejection.rule == "duplicate" and rejection.collides_with == first


def test_history_loaded_again_from_unchanged_files_is_the_same(lab):
    first, _ = state.new_hypothesis(lab, "lr", LR)
    once, again = History.load(lab), History.load(lab)           # the second reads the parsed-file cache
    assert again.hypotheses.keys() == once.hypotheses.keys() == {first}
    assert review_change(lab, again, LR, base="a" * 40).collides_with == first


def test_derived_fingerprint_is_the_lab_fingerprint():
    from runner.state.fingerprint import fingerprint
    for change in (LR, {"params": {"A": 1, "B": "x"}, "instructions": " Do  it ", "file": "m.py"},
                   {"instructions": "only words"}, {"params": {"FLAG": True}}):
        assert history.derive(change).fingerprint == fingerprint(change)


def test_near_index_finds_exactly_what_a_full_scan_finds():
    import random
    rng = random.Random(7)
    index, entries = history.NearIndex(), []
    for i in range(400):
        value = rng.choice([-1, 1]) * 10 ** rng.uniform(-4, 1) if i % 50 else 0.0
        entry = history.Entry(f"e-{i}", "experiment", "finished", "abc1234", history.derive({"params": {"P": value}}))
        index.add(entry)
        entries.append(entry)
    for _ in range(300):
        probe = (rng.choice([-1, 1]) * 10 ** rng.uniform(-4, 1),) if rng.random() < 0.9 else (0.0,)
        for tolerance in (0.01, 0.05, 0.5):
            found = {e.id for e in index.near(probe, tolerance)}
            scan = {e.id for e in entries if history._close(probe, e.key.numbers, tolerance)}
            assert found == scan


def test_a_diff_touching_a_frozen_constant_is_refused_naming_it(tmp_path):
    lab = make_lab(tmp_path)
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["frozen"] = ["BATCH_SIZE"]
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    git(lab.root, "commit", "-qam", "freeze BATCH_SIZE")
    lab = Lab(lab.root)
    text = TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002").replace("BATCH_SIZE = 16", "BATCH_SIZE = 8")
    rejection = check_diff(lab, *diff_of(lab, text), LR)
    assert (rejection.rule, rejection.message) == (
        "protected", "train.py: BATCH_SIZE is frozen (target.frozen): it defines the budget or the evaluation")
    assert check_diff(lab, *diff_of(lab, TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002")), LR) is None


def test_an_entry_added_within_a_pass_is_described_like_a_loaded_one(lab):
    base = gitops.head(lab.root)
    history = History.load(lab)
    history.add("e-new", LR, base, "finished", value=1.5, metric="val_bpb", title="faster")
    assert review_change(lab, history, LR, base=base).message == "duplicate of e-new (finished, val_bpb 1.5)"
    history.add("h-new", {"params": {"BATCH_SIZE": 8}}, None, "rejected", kind="hypothesis", title="smaller")
    rejection = review_change(lab, history, {"params": {"BATCH_SIZE": 8}}, base=base)
    assert rejection.rule == "do-not-repeat" and "hypothesis h-new (rejected: smaller)" in rejection.message


def test_protected_and_editable_patterns_name_files_and_directories(tmp_path):
    lab = make_lab(tmp_path, None)
    config = yaml.safe_load(lab.config_path.read_text())
    config["target"]["protected"] = ["./.env", "data", "eval/", "./conf/"]
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    lab = Lab(lab.root)
    for path in (".env", "data", "data/train.bin", "eval/x.py", "conf/a.yaml"):
        assert gates.is_protected(lab, path), path
    for path in ("env", "database.py", "evaluate.py", "eval", "data.py", "config.py"):
        assert not gates.is_protected(lab, path), path


def test_check_diff_refuses_no_files_or_an_empty_diff_in_its_own_words(lab):
    for files, diff in (([], "diff --git a/train.py b/train.py\n"), (["train.py"], " \n"), ([""], "x")):
        assert check_diff(lab, files, diff, LR) == gates.Rejection("empty", "the worker's diff changes nothing")


def test_parse_diff_reads_hunks_by_their_counts():
    diff = "\n".join([
        "@@ -1 +1 @@", "-a", "+b",                                     # no file header yet, counts of 1
        "diff --git a/gone.py b/gone.py", "deleted file mode 100644", "--- a/gone.py", "+++ /dev/null",
        "@@ -1,2 +0,0 @@", "-x", "-y",
        "diff --git a/new.py b/new.py", "--- /dev/null", "+++ new.py",    # --no-prefix
        "@@ -0,0 +1,2 @@", "+p", "+q",
        "diff --git a/t.py b/t.py", "--- a/t.py", "+++ b/t.py",
        "@@ -10,4 +10,3 @@", " ctx", "-old", "\\ No newline at end of file", "+new", "", "-tail",
        "@@ -20,2 +19,3 @@", " keep", "+one", "+two",
    ]) + "\n"
    hunks = parse_diff(diff)
    assert [(h.path, h.new_start, h.removed, h.added, h.changed_lines) for h in hunks] == [
        ("?", 1, ["a"], ["b"], [1, 1]),
        ("gone.py", 0, ["x", "y"], [], [0, 0]),
        ("new.py", 1, [], ["p", "q"], [1, 2]),
        ("t.py", 10, ["old", "tail"], ["new"], [11, 11, 13]),
        ("t.py", 19, [], ["one", "two"], [20, 21]),
    ]


def test_a_params_change_may_carry_comments_and_blank_lines(lab):
    text = TRAIN.replace("LEARNING_RATE = 0.001", "# tuned below\n\nLEARNING_RATE = 0.002")
    assert check_diff(lab, *diff_of(lab, text), LR) is None


def test_a_lowercase_parameter_is_an_assignment_too(tmp_path):
    lab = make_lab(tmp_path)
    (lab.root / "train.py").write_text(TRAIN + "lr = 0.1\n")
    git(lab.root, "commit", "-qam", "a lowercase constant")
    text = (lab.root / "train.py").read_text().replace("lr = 0.1", "lr = 0.2")
    assert check_diff(lab, *diff_of(lab, text), {"params": {"lr": 0.2}}) is None


def test_a_stray_line_is_named_in_full_up_to_80_characters(lab):
    long = "NOTE = '" + "g" * 100 + "'"
    text = TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002").replace("x5 = 5\n", f"x5 = 5\n{long}\n")
    text = text.replace("x30 = 30", "x30 = 31")                        # a second stray line, later
    two = {"params": {"LEARNING_RATE": 0.002, "BATCH_SIZE": 16}}
    rejection = check_diff(lab, *diff_of(lab, text), two)
    assert rejection == gates.Rejection("single-change", f"train.py: the diff changes `{long[:80]}`, but the "
                                                         "experiment declares only BATCH_SIZE, LEARNING_RATE")


def test_instruction_regions_are_named_and_a_gap_of_exactly_region_gap_is_one_region(tmp_path):
    lab = make_lab(tmp_path)
    change = {"instructions": "rename variables"}
    at_gap = TRAIN.replace("x10 = 10", "y10 = 10").replace("x20 = 20", "y20 = 20")    # 10 lines apart
    assert check_diff(lab, *diff_of(lab, at_gap), change) is None
    beyond = TRAIN.replace("x10 = 10", "y10 = 10").replace("x21 = 21", "y21 = 21")
    assert check_diff(lab, *diff_of(lab, beyond), change) == gates.Rejection(
        "single-change", "the diff changes 2 separate regions (train.py:17, train.py:28); an instruction change "
                         "may touch at most 1 (gates.max_regions)")


def test_params_with_instructions_count_regions_of_the_other_lines_only(tmp_path):
    lab = make_lab(tmp_path)
    change = {"params": {"LEARNING_RATE": 0.002}, "instructions": "and rename x50"}
    text = TRAIN.replace("LEARNING_RATE = 0.001", "LEARNING_RATE = 0.002").replace("x50 = 50", "y50 = 50")
    assert check_diff(lab, *diff_of(lab, text), change) is None      # the assignment is not a region
    both = text.replace("x10 = 10", "y10 = 10")
    assert "2 separate regions (train.py:17, train.py:57)" in check_diff(lab, *diff_of(lab, both), change).message


def test_a_tolerance_of_zero_turns_the_near_duplicate_check_off(lab):
    base = gitops.head(lab.root)
    score(lab, "e-1", {"params": {"LEARNING_RATE": 0.002}}, base)
    history = History.load(lab)
    near = {"params": {"LEARNING_RATE": 0.00201}}
    rejection = review_change(lab, history, near, base=base)
    assert rejection.message == f"every value within 5% of e-1 (finished, val_loss 1.92) on the same base {base[:12]}"
    assert review_change(lab, history, near, base=base, tolerance=0) is None


def test_a_near_copy_of_a_rejected_hypothesis_is_named_on_the_do_not_repeat_list(lab):
    hyp, _ = state.new_hypothesis(lab, "too high", {"params": {"LEARNING_RATE": 0.1}}, status="rejected")
    rejection = review_change(lab, History.load(lab), {"params": {"LEARNING_RATE": 0.101}}, base="a" * 40)
    assert rejection.message == f"within 5% of hypothesis {hyp} (rejected: too high), which is on the do-not-repeat list"


def test_same_base_needs_two_bases_one_a_prefix_of_the_other():
    assert history.same_base("abc1234", "ABC1234ffff") and history.same_base("abc1234ffff", "abc1234")
    assert not history.same_base("abc1234", "abd1234") and not history.same_base("", "abc")
    assert not history.same_base("abc", None) and not history.same_base(None, None)


def test_history_sees_a_hypothesis_file_changed_since_the_last_load(lab):
    hyp, path = state.new_hypothesis(lab, "lr", LR)
    assert review_change(lab, History.load(lab), LR, base="a" * 40).rule == "duplicate"
    data = yaml.safe_load(path.read_text())
    data.update(status="rejected", review={"by": "planner", "at": data["created"], "reason": "no"})
    path.write_text(yaml.safe_dump(data, sort_keys=False) + "# a longer file\n")
    assert review_change(lab, History.load(lab), LR, base="a" * 40).rule == "do-not-repeat"
