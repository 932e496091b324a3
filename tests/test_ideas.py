"""runner.roles.ideas: the offline idea library loads, validates, and applies to the embedded target."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

from runner.errors import LabError
from runner.roles.ideas import IDEAS_PATH, Idea, applicable, load_ideas
from runner.state.params import apply_params, read_params

ROOT = Path(__file__).resolve().parent.parent
TRAIN_TEXT = (ROOT / "train.py").read_text()

GOOD = """\
ideas:
  - id: rmsnorm
    title: RMSNorm instead of LayerNorm
    params: {NORM: rmsnorm}
    rationale: Cheaper normalisation.
    expected: about the same or slightly better
    source:
      kind: paper
      ref: "arXiv:1910.07467"
      url: https://arxiv.org/abs/1910.07467
      title: Root Mean Square Layer Normalization
"""


def test_the_shipped_library_loads_with_unique_ids_and_paper_sources():
    ideas = load_ideas()
    assert len(ideas) >= 10
    assert len({idea.id for idea in ideas}) == len(ideas)
    for idea in ideas:
        assert idea.source["kind"] == "paper"
        assert idea.source["url"] == "https://arxiv.org/abs/" + idea.source["ref"].removeprefix("arXiv:")
        assert idea.title and idea.rationale and idea.expected


def test_every_idea_applies_cleanly_to_train_py_and_changes_it():
    baseline = read_params(TRAIN_TEXT, "train.py")
    ideas = load_ideas()
    assert applicable(ideas, baseline) == ideas  # none is a no-op on the shipped baseline
    for idea in ideas:
        new_text = apply_params(TRAIN_TEXT, idea.params, "train.py")
        after = read_params(new_text, "train.py")
        assert {name: after[name] for name in idea.params} == idea.params, idea.id
        changed = {name for name in baseline if baseline[name] != after[name]}
        assert changed == {name for name in idea.params if baseline[name] != idea.params[name]}, idea.id


def test_every_idea_builds_a_model_that_runs_forward_and_backward():
    torch = pytest.importorskip("torch")
    for idea in load_ideas():
        module = types.ModuleType(f"train_{idea.id.replace('-', '_')}")
        exec(compile(apply_params(TRAIN_TEXT, idea.params, "train.py"), "train.py", "exec"), module.__dict__)
        torch.manual_seed(0)
        model = module.GPT()
        batch = torch.randint(0, 256, (2, module.BLOCK_SIZE + 1))
        logits = model(batch[:, :-1])
        assert logits.shape == (2, module.BLOCK_SIZE, 256), idea.id
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        assert 0 < module.lr_at(0.5, module.budget_steps(model, "cpu")) <= max(module.LEARNING_RATE, 1e-9), idea.id


def test_applicable_skips_ideas_already_applied_or_for_unknown_params():
    ideas = load_ideas()
    current = read_params(TRAIN_TEXT, "train.py")
    first = ideas[0]
    applied = dict(current, **first.params)
    assert first not in applicable(ideas, applied)
    unknown = Idea(id="u", title="t", params={"NOT_THERE": 1}, rationale="r", expected="e", source={})
    assert applicable([unknown], current) == []


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ideas.yaml"
    path.write_text(text)
    return path


def test_a_good_file_loads(tmp_path):
    [idea] = load_ideas(_write(tmp_path, GOOD))
    assert idea.id == "rmsnorm" and idea.params == {"NORM": "rmsnorm"}
    assert idea.source["ref"] == "arXiv:1910.07467"


@pytest.mark.parametrize("old, new, field, line, message", [
    ('ref: "arXiv:1910.07467"', 'ref: "doi:10.1/x"', "ideas[0].source.ref", 9, "ref must look like"),
    ('ref: "arXiv:1910.07467"', "ref: 1910.07467", "ideas[0].source.ref", 9, "ref is required and must be"),
    ("      title: Root Mean Square Layer Normalization\n", "", "ideas[0].source.title", 7, "title is required"),
    ("url: https://arxiv.org/abs/1910.07467", "url: https://arxiv.org/abs/1910.0746", "ideas[0].source.url",
     10, "url must be https://arxiv.org/abs/1910.07467"),
    ("kind: paper", "kind: blog", "ideas[0].source.kind", 8, "kind must be 'paper'"),
    ("params: {NORM: rmsnorm}", "params: {}", "ideas[0].params", 4, "non-empty mapping"),
    ("params: {NORM: rmsnorm}", "params: {norm: rmsnorm}", "ideas[0].params.norm", 4, "UPPER_CASE"),
    ("params: {NORM: rmsnorm}", "params: {NORM: [1, 2]}", "ideas[0].params.NORM", 4, "number, string or bool"),
    ("    title: RMSNorm instead of LayerNorm\n", "", "ideas[0].title", 2, "title is required"),
    ("    expected: about the same or slightly better\n", "    expected: about\n    effect: big\n",
     "ideas[0].effect", 7, "unknown field 'effect'"),
    ("  - id: rmsnorm", "  - id: ../up", "ideas[0].id", 2, "not a safe id"),
])
def test_a_bad_entry_names_file_line_and_field(tmp_path, old, new, field, line, message):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(LabError) as info:
        load_ideas(path)
    problem = info.value.problem
    assert (problem.path, problem.field, problem.line) == (str(path), field, line)
    assert message in problem.message


def test_duplicate_ids_and_a_missing_list_are_refused(tmp_path):
    with pytest.raises(LabError, match="duplicate idea id 'rmsnorm'"):
        load_ideas(_write(tmp_path, GOOD + GOOD.split("\n", 1)[1]))
    with pytest.raises(LabError, match="list under 'ideas'"):
        load_ideas(_write(tmp_path, "ideas: {}\n"))


def test_default_path_is_inside_the_package():
    assert IDEAS_PATH.parent.name == "data" and IDEAS_PATH.parent.parent.name == "runner"


# -- a lab's own library (lab.yaml roles.researcher.ideas) ---------------------------------------------
TOY_IDEA = GOOD.replace("id: rmsnorm", "id: x-at-three").replace("params: {NORM: rmsnorm}", "params: {X: 3.0}")


def _own_library_lab(tmp_path: Path, library: str = "lab-ideas.yaml"):
    import yaml
    from test_loop import toy_lab

    from runner.lab import Lab
    lab = toy_lab(tmp_path / "lab")
    config = yaml.safe_load(lab.config_path.read_text())
    config["roles"].update(researcher={"kind": "builtin", "ideas": library}, planner={"kind": "builtin"})
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    (lab.root / "lab-ideas.yaml").write_text(TOY_IDEA)
    return Lab(lab.root)


def test_the_builtin_researcher_proposes_from_the_lab_s_own_library(tmp_path, run_lab, git):
    """The package's ideas change train.py's constants: none applies to the toy's score.py. The lab's
    library moves X to its best value, so the loop measures and promotes exactly that idea."""
    lab = _own_library_lab(tmp_path)
    git(lab.root, "add", "-A")
    git(lab.root, "commit", "-qm", "the lab's own idea library")
    done = run_lab("run", "--until-idle", "--max-experiments", "2", cwd=lab.root)
    assert done.returncode == 0, done.stdout + done.stderr
    import yaml
    [hypothesis] = [yaml.safe_load(p.read_text()) for p in lab.hypotheses.glob("*.yaml")]
    assert hypothesis["tags"] == ["idea:x-at-three"] and hypothesis["change"] == {"params": {"X": 3.0}}
    assert hypothesis["source"]["ref"] == "arXiv:1910.07467"
    records = [yaml.safe_load(p.read_text()) for p in lab.experiments.glob("*/experiment.yaml")]
    [promoted] = [r for r in records if r.get("hypothesis") == hypothesis["id"]]
    assert promoted["result"]["promoted"] is True and promoted["result"]["value"] == 1.0
    assert "X = 3.0" in (lab.root / "score.py").read_text()


def test_validate_names_a_missing_or_broken_library_and_a_path_outside_the_lab(tmp_path, run_lab):
    lab = _own_library_lab(tmp_path)
    assert run_lab("validate", cwd=lab.root).returncode == 0
    (lab.root / "lab-ideas.yaml").write_text(TOY_IDEA.replace('ref: "arXiv:1910.07467"', "ref: doi:1"))
    broken = run_lab("validate", cwd=lab.root)
    assert broken.returncode == 1
    assert "lab-ideas.yaml:9: ideas[0].source.ref: ref must look like 'arXiv:1711.05101'" in broken.stdout
    (lab.root / "lab-ideas.yaml").unlink()
    missing = run_lab("validate", cwd=lab.root)
    assert missing.returncode == 1
    assert "roles.researcher.ideas: the idea library lab-ideas.yaml does not exist" in missing.stdout
    for outside in ("../ideas.yaml", "/etc/ideas.yaml", "sub/../../ideas.yaml"):
        outside_lab = _own_library_lab(tmp_path / outside.replace("/", "_"), library=outside)
        refused = run_lab("validate", cwd=outside_lab.root)
        assert refused.returncode == 1 and "roles.researcher.ideas:" in refused.stdout, outside
