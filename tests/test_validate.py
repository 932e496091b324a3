"""`lab validate` on good labs, and the fast paths proved equal to the slow ones.

The fast paths (libyaml events instead of PyYAML's composer, schemas compiled
to closures instead of jsonschema, forked children for large labs) are only
allowed because these tests show they give the same answers.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import threading

import pytest
import yaml
from conftest import _experiment_doc as exp  # noqa: E402
from conftest import _hypothesis_doc as hyp
from jsonschema import Draft202012Validator

from runner.assets import asset_path
from runner.files import tables
from runner.files.tomlio import toml_lines
from runner.files.yamlio import _Loader, _parse_checked, parse_data, parse_yaml
from runner.validation import parallel, schema, schema_compile
from runner.validation import validate as validate_module
from runner.validation.validate import classify, validate


# -- clean labs ---------------------------------------------------------------
def fill(lab, write_doc, n: int = 3) -> None:
    """Hypotheses, live entries, finished experiments with metrics, scores and events."""
    for i in range(n):
        write_doc(lab.hypotheses / f"h-{i}.yaml", hyp(f"h-{i}"))
        write_doc(lab.queue / f"e-q{i}.yaml", exp(f"e-q{i}", f"h-{i}", ["queued", "assigned", "running"][i % 3]))
        write_doc(lab.experiments / f"e-f{i}" / "experiment.yaml", exp(f"e-f{i}", f"h-{i}", "finished"))
        tables.write_table(lab.experiments / f"e-f{i}" / "metrics.parquet", tables.pa.Table.from_pylist(
            [{"step": 1, "time_s": 0.5, "name": "loss", "value": 2.0, "summary": False}], schema=tables.METRICS))
    tables.write_table(lab.experiments / "scores" / "e-f0.parquet", tables.SCORES.empty_table())
    tables.write_part(lab.experiments / "scores", tables.SCORES.empty_table())
    tables.write_table(lab.experiments / "events" / "20261121T083000Z-0a1b2c3d.parquet", tables.EVENTS.empty_table())
    baseline = exp("e-base", "-", kind="baseline", priority=100)
    del baseline["hypothesis"]  # a baseline re-measures main: no hypothesis
    write_doc(lab.queue / "e-base.yaml", baseline)


def test_clean_lab_validates_with_a_one_line_summary(lab, write_doc, run_lab, tree_hashes):
    fill(lab, write_doc)
    report = validate(lab.root)
    assert report.ok, "\n".join(map(str, report.problems))
    n_skills = len(list(lab.root.glob("skills/*/SKILL.md")))
    n_evals = len(list(lab.root.glob("skills/*/evals/evals.json")))
    assert report.counts == {"lab": 1, "hypothesis": 3, "queue": 4, "experiment": 3, "parquet": 6,
                             **({"skill": n_skills} if n_skills else {}),
                             **({"skill-evals": n_evals} if n_evals else {})}
    before = tree_hashes(lab.root)
    result = run_lab("validate", cwd=lab.root)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and result.stderr == ""
    assert lines[0].startswith(f"ok: {report.files} files valid (experiment 3, hypothesis 3, lab 1, parquet 6, ")
    assert lines[0].endswith("s") and " in " in lines[0]
    assert tree_hashes(lab.root) == before


def test_clean_lab_json(lab, write_doc, run_lab):
    fill(lab, write_doc, n=1)
    result = run_lab("validate", "--json", cwd=lab.root)
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["problems"] == []
    assert data["files"] == sum(data["counts"].values()) and data["counts"]["hypothesis"] == 1
    assert isinstance(data["seconds"], float)


def test_summary_wording():
    report = validate_module.Report()
    assert report.summary() == "ok: no lab files to check"
    report.counts["lab"] = 1
    assert report.summary() == "ok: 1 file valid (lab 1)"
    report.counts["hypothesis"] = 2
    report.problems.append(validate_module.Problem("hypotheses/h.yaml", "bad", "title", 2))
    assert report.summary() == "1 problem in 1 file (3 files checked)"


def test_paths_select_files_and_directories(lab, write_doc, monkeypatch):
    fill(lab, write_doc, n=2)
    (lab.hypotheses / "h-0.yaml").write_text("id: h-0\ntitle: [\n")
    assert not validate(lab.root).ok
    only_queue = validate(lab.root, [str(lab.queue)])
    assert only_queue.ok and set(only_queue.counts) == {"queue"}
    monkeypatch.chdir(lab.queue)
    assert validate(lab.root, ["e-q1.yaml"]).counts == {"queue": 1}
    assert validate(lab.root, [str(lab.root / "README.md"), "/etc/passwd"]).counts == {}
    assert validate(lab.root, [str(lab.root)]).problems[0].path == "hypotheses/h-0.yaml"


def test_baseline_needs_no_hypothesis(lab, write_doc):
    doc = exp("e-b", "x", kind="baseline")
    del doc["hypothesis"]
    write_doc(lab.queue / "e-b.yaml", doc)
    assert validate(lab.root).ok
    del doc["kind"]
    write_doc(lab.queue / "e-b.yaml", doc)
    problems = validate(lab.root).problems
    assert [(p.field, p.message) for p in problems] == [("hypothesis", "required field is missing")]


def test_classify():
    assert classify("lab.yaml") == "lab"
    assert classify("hypotheses/h-1.yaml") == "hypothesis"
    assert classify("hypotheses/notes.md") == "stray"
    assert classify("hypotheses/.h-1.yaml.tmp") is None
    assert classify("queue/e-1.yaml") == "queue"
    assert classify("experiments/e-1/experiment.yaml") == "experiment"
    assert classify("experiments/e-1/metrics.parquet") == "parquet"
    assert classify("experiments/e-1/patch.diff") is None
    assert classify("experiments/scores.parquet") == "parquet"          # an earlier version's table
    assert classify("experiments/scores/e-1.parquet") == "parquet"
    assert classify("experiments/events/20261121T083000Z-0a1b2c3d.parquet") == "parquet"
    assert classify("experiments/scores/notes.txt") is None
    assert classify("skills/autolab/SKILL.md") == "skill"
    assert classify("kernels/rms/build.toml") == "build-toml"
    assert classify("skills/autolab/evals/evals.json") == "skill-evals"
    assert classify("skills/autolab/evals/results.parquet") == "parquet"   # an earlier version's table
    assert classify("skills/autolab/evals/results/20261130-075000-0a1b2c.parquet") == "parquet"
    assert classify("skills/autolab/evals/results/notes.txt") is None
    assert classify("skills/autolab/evals/files/x.json") is None
    assert classify("train.py") is None


def test_toml_lines():
    text = '[general]\nname = "x"\n\n[kernel.rms]\nbackend = "cuda"\n"src" = []\n'
    assert toml_lines(text) == {"general": 1, "general.name": 2, "kernel.rms": 4, "kernel.rms.backend": 5,
                                "kernel.rms.src": 6}


def test_the_repository_itself_validates():
    """This checkout is a lab too: its skills, kernels and state must pass."""
    report = validate(asset_path("schemas").parent)
    assert report.ok, "\n".join(map(str, report.problems))


# -- the schemas ----------------------------------------------------------------
@pytest.mark.parametrize("kind", schema.KINDS)
def test_schemas_are_valid_draft_2020_12(kind):
    Draft202012Validator.check_schema(schema.load(kind))
    assert schema.gate(kind) is not None, f"{kind}: the fast gate cannot compile this schema"


# -- the compiled gate gives jsonschema's verdict ---------------------------------
SEEDS = {
    "hypothesis": [hyp("h-1", rationale="r", source={"kind": "paper", "ref": "arXiv:1"}, tags=["a"],
                       review={"by": "planner", "at": "2026-11-21T08:30:00Z", "reason": "ok"}, expected="-1%")],
    "experiment": [exp("e-1", "h-1"), exp("e-2", "h-1", "finished", result={
                       "metric": "val_bpb", "value": 1.0, "metrics": {"a": 1.0, "b": None}, "promoted": True},
                       job={"backend": "local", "pid": 3, "exit_code": None, "attempts": 1}),
                   {**exp("e-3", "x", kind="baseline", change={})}],
    "skill": [{"name": "my-skill", "description": "does things", "license": "MIT",
               "metadata": {"a": "b"}, "allowed-tools": "Bash"}],
    "build-toml": [{"general": {"name": "rms", "version": 1, "backends": ["cuda"], "hub": {"repo-id": "a/b"}},
                    "torch": {"src": ["a.cpp"]},
                    "kernel": {"rms": {"backend": "cuda", "src": ["a.cu"], "cuda-capabilities": ["9.0"]}}}],
    "skill-evals": [{"skill_name": "my-skill", "evals": [
        {"id": "worker-case", "prompt": "p {task}", "role": "worker", "task": "e-1", "template": "blank",
         "files": ["evals/files/x", {"path": "a.txt", "content": "x"}, {"path": "b.parquet", "rows": [{"a": 1}]}],
         "setup": ["true"], "solution": ["true"],
         "assertions": [{"type": "file_exists", "path": "a*", "count": 1}, {"type": "accepted", "not": True},
                        {"type": "field", "path": "a.yaml", "field": "x.y", "equals": 1},
                        {"type": "query", "sql": "SELECT 1", "row": [1]}, {"type": "command", "run": "true"},
                        {"type": "output_contains", "text": "x"}]},
        {"id": 3, "prompt": "q", "assertions": [{"type": "validate", "paths": ["hypotheses"]}]}]}],
}
ODD_VALUES = [None, True, False, 0, 1, -1, 1.0, 2.5, -0.0, float("inf"), "", "x", "a/b", "h..1", "9.0",
              "2026-11-21T08:30:00Z", "queued", "finished", "baseline", "agent", "cuda", "minimize", [], ["x"],
              [1], {}, {"kind": "builtin"}, {"params": {"A": 1}}, {"instructions": "x"}, {"x": 1}, 10 ** 30]


def lab_seed() -> dict:
    text = (asset_path("schemas").parent / "runner" / "templates" / "lab-tiny-gpt.yaml").read_text()
    data = yaml.load(text.format(name="x"), Loader=_Loader)
    data["roles"]["planner"] = {"kind": "agent", "command": ["claude", "-p"], "time_limit_s": 60}
    data["target"]["params"] = {"LEARNING_RATE": {"low": 1e-4, "high": 3e-2, "log": True},   # both forms
                                "LR_SCHEDULE": {"choices": ["cosine", "linear"]}, "BETA1": {}}
    return data


def ranged_lab_seed() -> dict:
    """Params as ranges and choices (dependentRequired: a low needs a high, a log needs a low)."""
    data = lab_seed()
    data["target"]["params"] = {"LEARNING_RATE": {"low": 1e-4, "high": 1e-2, "log": True},
                                "ACTIVATION": {"choices": ["relu", "gelu"]}, "BATCH_SIZE": None}
    return data


def paths_of(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths_of(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from paths_of(value, prefix + (index,))


def mutate(doc, rng: random.Random):
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(paths_of(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        action = rng.random()
        if action < 0.5:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.7 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "titel", "kind", "params", "instructions", "then", 1])] = \
                copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            parent.append(copy.deepcopy(rng.choice(ODD_VALUES)))
    return doc


@pytest.mark.parametrize("kind", schema.KINDS)
def test_gate_agrees_with_jsonschema_on_mutated_documents(kind):
    rng = random.Random(kind)
    seeds = [lab_seed(), ranged_lab_seed()] if kind == "lab" else SEEDS[kind]
    gate, slow = schema.gate(kind), schema.validator(kind)
    for seed in seeds:
        assert gate(seed) and slow.is_valid(seed), list(slow.iter_errors(seed))
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        doc = mutate(rng.choice(seeds), rng)
        expected = slow.is_valid(doc)
        assert gate(doc) == expected, (doc, [e.message for e in slow.iter_errors(doc)])
        verdicts[expected] += 1
    assert min(verdicts.values()) > 50, verdicts  # the mutations exercise both answers


def test_check_reports_nothing_for_valid_and_one_line_per_field():
    assert schema.check("hypothesis", hyp("h-1"), "h.yaml") == []
    doc = {**hyp("h-1"), "title": 5, "status": "maybe"}
    del doc["created"]
    problems = schema.check("hypothesis", doc, "h.yaml", {"title": 2, "status": 3})
    assert [(p.field, p.line) for p in problems] == [("created", 1), ("title", 2), ("status", 3)]


@pytest.mark.parametrize("kind, doc, field", [
    ("hypothesis", hyp("h-1\n"), "id"), ("experiment", exp("e-1", "h-1\n"), "hypothesis"),
    ("experiment", exp("e-1", "h-1", base="abcdef0\n"), "base"), ("skill", SEEDS["skill"][0] | {"name": "my-skill\n"},
                                                                 "name")])
def test_a_pattern_does_not_match_a_trailing_newline(kind, doc, field):
    """Python's `$` matches before a final newline; a schema's `$` (ECMA-262) does not: the gate
    and jsonschema both refuse, and the problem names the field."""
    assert not schema.gate(kind)(doc) and not schema.validator(kind).is_valid(doc)
    [problem] = schema.check(kind, doc, f"{kind}.yaml", {field: 4})
    assert (problem.field, problem.line) == (field, 4)
    fixed = {**doc, field: doc[field].rstrip("\n")}
    assert schema.gate(kind)(fixed) and schema.check(kind, fixed, f"{kind}.yaml") == []


def test_a_param_range_needs_both_ends_and_a_log_scale_a_low(lab, write_doc):
    for spec, ok in (({"low": 1, "high": 2}, True), ({"low": 1}, False), ({"high": 2}, False),
                     ({"log": True, "high": 2}, False), ({"choices": [1, 2]}, True)):
        data = ranged_lab_seed()
        data["target"]["params"]["LEARNING_RATE"] = spec
        assert schema.gate("lab")(data) is ok and schema.validator("lab").is_valid(data) is ok, spec


def test_pattern_search_turns_only_end_anchors_into_end_of_string():
    assert schema_compile.pattern_search(r"^a$")("a") and not schema_compile.pattern_search(r"^a$")("a\n")
    assert schema_compile.pattern_search(r"^a\$$")("a$") and not schema_compile.pattern_search(r"^a\$$")("a$\n")
    assert schema_compile.pattern_search(r"^[$]+$")("$$") and not schema_compile.pattern_search(r"^[$]+$")("$\n")
    assert schema_compile.pattern_search(r"b$")("ab") and schema_compile.pattern_search(r"^a")("a\n")


def test_lab_validate_names_an_id_ending_in_a_newline(lab, write_doc, run_lab):
    write_doc(lab.hypotheses / "h-1.yaml", hyp("h-1\n"))
    result = run_lab("validate", cwd=lab.root)
    assert result.returncode == 1
    assert "hypotheses/h-1.yaml:1: id: " in result.stdout, result.stdout + result.stderr


# -- the fast YAML path builds exactly what PyYAML builds ---------------------------
YAML_CORPUS = [
    "a: 1\nb: -2\nc: 0x1F\nd: 0o17\ne: 1_000\nf: 1:20\ng: +3\nh: 017\n",
    "a: 1.5\nb: .inf\nc: -.Inf\nd: 1e3\ne: 6.8523015e+5\nf: 190:20:30.15\ng: .5\nh: 1.\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: true\nf: False\ng: y\nh: n\n",
    "a: ~\nb: null\nc:\nd: Null\ne: ''\nf: \"\"\n",
    "a: 2026-11-21\nb: 2026-11-21T08:30:00Z\nc: '2026-11-21T08:30:00Z'\n",
    "a: 'quoted: yes'\nb: \"esc\\n\\t\\u00e9\"\nc: plain text here\nd: caf\u00e9 \u2603\n",
    "a: |\n  line 1\n  line 2\nb: >\n  folded\n  text\nc: |-\n  strip\n",
    "list:\n- 1\n- two\n- {x: 1, y: [a, b]}\n- - nested\n  - list\nflow: [1, 2.0, 'x', yes, ~]\n",
    "a:\n  b:\n    c:\n      d: [1, {e: f}]\n",
    "1: int key\ntrue: bool key\n~: null key\n2.5: float key\n",
    "dup: 1\ndup: 2\n",
    "# comment\n---\na: 1 # trailing\n...\n",
    "",
    "just a scalar\n",
    "- a\n- b\n",
    "a: &x 1\nb: 2\n",
    "k: !!str 123\n",
    "k: !!int '7'\n",
    "a: [1, *x]\n",
    "a: &x [1]\nb: *x\n",
    "? [complex]\n: key\n",
    "a: =\n",
    "a: 1\n---\nb: 2\n",
    "a: [unclosed\n",
    "a: b: c\n",
    "  - indented\n - wrong\n",
    "nan: .nan\n",
    "a: " + "[" * 63 + "]" * 63 + "\n",
    "a: " + "[" * 64 + "]" * 64 + "\n",
    "a: !!str x\nb: " + "[" * 63 + "]" * 63 + "\n",
    "a: !!str x\nb: " + "[" * 64 + "]" * 64 + "\n",
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, z) for x, z in zip(a, b))
    return a == b


def outcome(parse, text):
    try:
        return "ok", parse(text)
    except Exception as exc:  # noqa: BLE001 - comparing the two parsers' failures
        return "error", str(exc)


@pytest.mark.parametrize("text", YAML_CORPUS)
def test_fast_yaml_equals_the_full_loader(text):
    full = outcome(lambda t: _parse_checked(t, "f.yaml"), text)
    fast = outcome(lambda t: parse_yaml(t, "f.yaml"), text)
    if full[0] == "ok":
        assert fast[0] == "ok" and same(fast[1][0], full[1][0]) and fast[1][1] == full[1][1], (fast, full)
        assert same(parse_data(text, "f.yaml"), full[1][0])
        assert same(parse_data(text, "f.yaml"), yaml.load(text, Loader=_Loader))
    else:
        assert fast[0] == "error" and outcome(lambda t: parse_data(t, "f.yaml"), text)[0] == "error"


def test_fast_yaml_equals_the_full_loader_on_written_documents():
    rng = random.Random(7)
    for kind, seeds in SEEDS.items():
        for _ in range(200):
            doc = mutate(rng.choice(seeds), rng)
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
            data, lines = parse_yaml(text, "f.yaml")
            full_data, full_lines = _parse_checked(text, "f.yaml")
            assert same(data, full_data) and lines == full_lines


def test_nesting_is_limited_the_same_way_on_both_paths():
    for text in ("a: " + "[" * 64 + "]" * 64 + "\n", "a: !!str x\nb: " + "[" * 64 + "]" * 64 + "\n"):
        with pytest.raises(validate_module.LabError, match="YAML nests too deeply"):
            parse_data(text, "f.yaml")
    assert parse_data("a: " + "[" * 63 + "]" * 63 + "\n", "f.yaml")["a"] is not None


def test_alias_is_reported_where_it_is_used():
    with pytest.raises(validate_module.LabError) as info:
        parse_data("a: &x [1]\nlist:\n- ok\n- *x\n", "f.yaml")
    assert str(info.value) == "f.yaml:4: list[1]: YAML anchors/aliases are not allowed in lab files"


# -- large labs: the forked split gives the serial answer ----------------------------
def needs_fork() -> None:
    """map_forked quietly works in the parent where forking is unsafe: then these tests prove nothing."""
    if not parallel.can_fork():
        pytest.skip(f"forking is off here ({sys.platform}, {threading.active_count()} threads running)")


def children(monkeypatch) -> list:
    """Records each child map_forked really forked: (pid, pipe), or None where the fork failed."""
    made = []
    real = parallel._spawn
    monkeypatch.setattr(parallel, "_spawn", lambda fn, chunk: made.append(real(fn, chunk)) or made[-1])
    return made


def test_forked_validation_equals_serial(lab, write_doc, monkeypatch):
    needs_fork()
    fill(lab, write_doc, n=12)
    (lab.hypotheses / "h-3.yaml").write_text("id: h-3\ntitle: 5\n")
    write_doc(lab.queue / "e-bad.yaml", exp("e-bad", "h-nope"))
    (lab.experiments / "e-f2" / "metrics.parquet").write_bytes(b"garbage")
    serial = validate(lab.root)
    monkeypatch.setattr(validate_module, "PARALLEL_MIN_FILES", 4)
    forked = []
    real = parallel.map_forked
    monkeypatch.setattr(parallel, "map_forked", lambda fn, chunks: forked.append(len(chunks)) or real(fn, chunks))
    forks = children(monkeypatch)
    split = validate(lab.root)
    assert forked and forked[0] >= 2, "the lab was not split"
    assert len(forks) == forked[0] - 1 and all(forks), "the chunks were not validated in forked children"
    assert split.problems == serial.problems and split.counts == serial.counts
    assert {p.path for p in split.problems} == {"hypotheses/h-3.yaml", "queue/e-bad.yaml",
                                                "experiments/e-f2/metrics.parquet"}


def test_map_forked_runs_chunks_in_children_and_keeps_order():
    needs_fork()
    results = parallel.map_forked(lambda chunk: (chunk, os.getpid()), ["a", "b", "c"])
    assert [r[0] for r in results] == ["a", "b", "c"]
    assert results[0][1] == os.getpid() and len({r[1] for r in results}) == 3


def test_map_forked_redoes_a_failed_child_chunk_in_the_parent(monkeypatch):
    needs_fork()
    forks = children(monkeypatch)
    parent = os.getpid()

    def flaky(chunk):
        if os.getpid() != parent:
            os._exit(3)  # a child dying without a result
        return chunk * 2
    assert parallel.map_forked(flaky, [1, 2, 3]) == [2, 4, 6]
    assert len(forks) == 2 and all(forks), "no child was forked, so none failed"


def test_split_keeps_parquet_in_the_parent_and_balances():
    rels = [f"hypotheses/h-{i}.yaml" for i in range(100)] + [f"experiments/e-{i}/metrics.parquet"
                                                             for i in range(50)]
    chunks = validate_module._split(rels, 2)
    assert sorted(sum(chunks, [])) == sorted(rels)
    assert all(not r.endswith(".parquet") for chunk in chunks[1:] for r in chunk)
    cost = [sum(validate_module.PARQUET_COST if r.endswith(".parquet") else 1 for r in c) for c in chunks]
    assert abs(cost[0] - cost[1]) <= 1


@pytest.mark.parametrize("value, ok", [("2026-11-21T08:30:00Z", True), ("2026-11-21T08:30:00.5+01:00", True),
                                       ("2026-02-30T00:00:00Z", False), ("2026-11-21", False),
                                       ("yesterday", False), ("2026-11-21T08:30:00", False)])
def test_date_time_is_checked_without_optional_packages(value, ok):
    """jsonschema checks date-time only when an optional package is installed; ours always does."""
    assert set(schema.format_checker().checkers) == {"date-time"}
    assert schema.is_valid("hypothesis", hyp("h-1", created=value)) is ok
    assert (schema.check("hypothesis", hyp("h-1", created=value), "h.yaml") == []) is ok
