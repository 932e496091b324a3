"""Every bad input of issue 2, through the API and through the real `lab validate` CLI.

Each case writes one or more bad files into an otherwise valid lab and names
the problems it must produce: (path, field, fragment of the message). The
validator must report them as `path:line: field: message`, nothing else may be
reported, no traceback may appear, and no file may change.
"""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import _experiment_doc as exp  # noqa: E402
from conftest import _hypothesis_doc as hyp

from runner.errors import Problem
from runner.files import tables
from runner.files.yamlio import dump_yaml
from runner.validation.validate import validate

LINE = re.compile(r"^(?P<path>[^:]+?)(:(?P<line>\d+))?: (?P<field>\S+): (?P<message>.+)$")


def y(doc: dict) -> str:
    return dump_yaml(doc)


def without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def scores_without(column: str) -> bytes:
    schema = pa.schema([f for f in tables.SCORES if f.name != column])
    return parquet_bytes(schema.empty_table())


def metrics_with_string_value() -> bytes:
    schema = pa.schema([f if f.name != "value" else pa.field("value", pa.string()) for f in tables.METRICS])
    return parquet_bytes(pa.Table.from_pylist([{"step": 1, "name": "loss", "value": "low", "summary": False}],
                                              schema=schema))


def metrics_with_extra_column() -> bytes:
    schema = tables.METRICS.append(pa.field("colour", pa.string()))
    return parquet_bytes(schema.empty_table())


BOMB = "\n".join(["id: h-bomb", "a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
                    for i in range(8)]) + "\n"
SKILL = "---\nname: {name}\ndescription: {description}\n---\n# body\n"
BUILD = '[general]\nname = "rms"\nbackends = ["cuda"]\n\n[kernel.rms]\nbackend = "cuda"\nsrc = ["rms.cu"]\n'
EXP = "experiments/e-done/experiment.yaml"

# id: {relative path: content (str or bytes)}, [(path, field, message fragment), ...]
CASES = {
    "malformed-yaml": ({"hypotheses/h-bad.yaml": "id: h-bad\ntitle: [unclosed\nstatus: proposed\n"},
                       [("hypotheses/h-bad.yaml", "-", "malformed YAML")]),
    "tab-indent-yaml": ({"hypotheses/h-bad.yaml": "id: h-bad\nchange:\n\tparams: {}\n"},
                        [("hypotheses/h-bad.yaml", "-", "malformed YAML")]),
    "two-documents": ({"hypotheses/h-bad.yaml": y(hyp("h-bad")) + "---\n" + y(hyp("h-bad"))},
                      [("hypotheses/h-bad.yaml", "-", "malformed YAML")]),
    "not-a-mapping": ({"hypotheses/h-bad.yaml": "- id: h-bad\n"},
                      [("hypotheses/h-bad.yaml", "-", "expected a mapping")]),
    "empty-file": ({"hypotheses/h-bad.yaml": ""}, [("hypotheses/h-bad.yaml", "-", "expected a mapping")]),
    "python-tag": ({"hypotheses/h-bad.yaml": 'id: !!python/object/apply:os.system ["touch pwned"]\n'},
                   [("hypotheses/h-bad.yaml", "-", "malformed YAML")]),
    "wrong-type-title": ({"hypotheses/h-bad.yaml": y(hyp("h-bad", title=5))},
                         [("hypotheses/h-bad.yaml", "title", "is not of type 'string'")]),
    "wrong-type-param": ({"hypotheses/h-bad.yaml": y(hyp("h-bad", change={"params": {"LR": [1, 2]}}))},
                         [("hypotheses/h-bad.yaml", "change.params.LR", "is not of type")]),
    "wrong-type-priority": ({"queue/e-bad.yaml": y(exp("e-bad", "h-ok", priority="high"))},
                            [("queue/e-bad.yaml", "priority", "is not of type 'integer'")]),
    "wrong-enum-status": ({"hypotheses/h-bad.yaml": y(hyp("h-bad", status="maybe"))},
                          [("hypotheses/h-bad.yaml", "status", "is not one of")]),
    "bad-date": ({"hypotheses/h-bad.yaml": y(hyp("h-bad", created="yesterday"))},
                 [("hypotheses/h-bad.yaml", "created", "is not a valid date-time")]),
    "misspelt-field": ({"hypotheses/h-bad.yaml": y({**without(hyp("h-bad"), "title"), "titel": "x"})},
                       [("hypotheses/h-bad.yaml", "titel", "did you mean 'title'"),
                        ("hypotheses/h-bad.yaml", "title", "required field is missing")]),
    "misspelt-nested-field": ({"queue/e-bad.yaml": y(exp("e-bad", "h-ok", change={
                                  "params": {"LR": 1}, "instrucions": "x"}))},
                              [("queue/e-bad.yaml", "change.instrucions", "did you mean 'instructions'")]),
    "empty-change": ({"hypotheses/h-bad.yaml": y(hyp("h-bad", change={"file": "train.py"}))},
                     [("hypotheses/h-bad.yaml", "change", "needs at least one of: params or instructions")]),
    "missing-required": ({"hypotheses/h-bad.yaml": y(without(hyp("h-bad"), "status", "created"))},
                         [("hypotheses/h-bad.yaml", "status", "required field is missing"),
                          ("hypotheses/h-bad.yaml", "created", "required field is missing")]),
    "missing-hypothesis-ref": ({"queue/e-bad.yaml": y(without(exp("e-bad", "h-ok"), "hypothesis"))},
                               [("queue/e-bad.yaml", "hypothesis", "required field is missing")]),
    "id-field-slash": ({"hypotheses/h-bad.yaml": y(hyp("a/b"))},
                       [("hypotheses/h-bad.yaml", "id", "'a/b' is not a safe id")]),
    "id-field-dotdot": ({"hypotheses/h-bad.yaml": y(hyp("../h-bad"))},
                        [("hypotheses/h-bad.yaml", "id", "'../h-bad' is not a safe id")]),
    "id-field-space": ({"hypotheses/h-bad.yaml": y(hyp("h bad"))},
                       [("hypotheses/h-bad.yaml", "id", "'h bad' is not a safe id")]),
    "id-field-mismatch": ({"hypotheses/h-bad.yaml": y(hyp("h-other"))},
                          [("hypotheses/h-bad.yaml", "id", "does not match the file name 'h-bad'")]),
    "file-name-space": ({"hypotheses/h bad.yaml": y(hyp("h-bad"))},
                        [("hypotheses/h bad.yaml", "-", "file name 'h bad' is not a safe id")]),
    "file-name-dotdot": ({"hypotheses/h..bad.yaml": y(hyp("h-bad"))},
                         [("hypotheses/h..bad.yaml", "-", "file name 'h..bad' is not a safe id")]),
    "dir-name-dotdot": ({"experiments/e..x/experiment.yaml": y(exp("e-x", "h-ok", "finished"))},
                        [("experiments/e..x/experiment.yaml", "-", "directory name 'e..x' is not a safe id")]),
    "hypothesis-ref-slash": ({"queue/e-bad.yaml": y(exp("e-bad", "h/ok"))},
                             [("queue/e-bad.yaml", "hypothesis", "'h/ok' is not a safe id")]),
    "hypothesis-ref-dotdot": ({"queue/e-bad.yaml": y(exp("e-bad", "../hypotheses/h-ok"))},
                              [("queue/e-bad.yaml", "hypothesis", "is not a safe id")]),
    "hypothesis-ref-space": ({"queue/e-bad.yaml": y(exp("e-bad", "h ok"))},
                             [("queue/e-bad.yaml", "hypothesis", "'h ok' is not a safe id")]),
    "unknown-hypothesis": ({"queue/e-bad.yaml": y(exp("e-bad", "h-nope"))},
                           [("queue/e-bad.yaml", "hypothesis", "unknown hypothesis 'h-nope'")]),
    "unknown-hypothesis-finished": ({EXP: y(exp("e-done", "h-nope", "finished"))},
                                    [(EXP, "hypothesis", "unknown hypothesis 'h-nope'")]),
    "status-misplaced": ({"queue/e-bad.yaml": y(exp("e-bad", "h-ok", "finished"))},
                         [("queue/e-bad.yaml", "status", "does not belong in queue/")]),
    "duplicate-id": ({"queue/e-dup.yaml": y(exp("e-dup", "h-ok")),
                      "experiments/e-dup/experiment.yaml": y(exp("e-dup", "h-ok", "finished"))},
                     [("queue/e-dup.yaml", "id", "duplicate id")]),
    "non-utf8": ({"hypotheses/h-bad.yaml": b"id: h-bad\ntitle: caf\xe9\n"},
                 [("hypotheses/h-bad.yaml", "-", "not valid UTF-8 (byte 0xe9")]),
    "yaml-bomb": ({"hypotheses/h-bomb.yaml": BOMB},
                  [("hypotheses/h-bomb.yaml", "b[0]", "anchors/aliases are not allowed")]),
    "merge-key": ({"hypotheses/h-bad.yaml": "base: &b {title: x}\nother:\n  <<: *b\n"},
                  [("hypotheses/h-bad.yaml", "other", "merge keys ('<<') are not allowed")]),
    "deep-nesting": ({"hypotheses/h-bad.yaml": "id: h-bad\ntitle: " + "[" * 100_000 + "]" * 100_000 + "\n"},
                     [("hypotheses/h-bad.yaml", "-", "YAML nests too deeply")]),
    "huge-file": ({"hypotheses/h-huge.yaml": "id: h-huge\ntitle: " + "x" * (50 * 1024 * 1024) + "\n"},
                  [("hypotheses/h-huge.yaml", "-", "MB, over the 1024 KiB limit")]),
    "stray-file": ({"queue/notes.txt": "todo\n"}, [("queue/notes.txt", "-", "not a lab file")]),
    "stray-dir": ({"hypotheses/drafts/h-x.yaml": y(hyp("h-x"))}, [("hypotheses/drafts", "-", "a directory")]),
    "parquet-garbage": ({"experiments/scores/e-1.parquet": b"PAR1 this is not parquet at all"},
                        [("experiments/scores/e-1.parquet", "-", "not a readable Parquet file")]),
    "parquet-missing-column": ({"experiments/scores/e-1.parquet": scores_without("promoted")},
                               [("experiments/scores/e-1.parquet", "promoted", "missing column")]),
    "parquet-legacy-garbage": ({"experiments/events.parquet": b"PAR1 this is not parquet at all"},
                               [("experiments/events.parquet", "-", "not a readable Parquet file")]),
    "parquet-wrong-type": ({EXP: y(exp("e-done", "h-ok", "finished")),
                            "experiments/e-done/metrics.parquet": metrics_with_string_value()},
                           [("experiments/e-done/metrics.parquet", "value", "type string, expected double")]),
    "parquet-extra-column": ({EXP: y(exp("e-done", "h-ok", "finished")),
                              "experiments/e-done/metrics.parquet": metrics_with_extra_column()},
                             [("experiments/e-done/metrics.parquet", "colour", "unknown column")]),
    "skill-name-not-dir": ({"skills/my-skill/SKILL.md": SKILL.format(name="other", description="x")},
                           [("skills/my-skill/SKILL.md", "name", "must equal the directory name 'my-skill'")]),
    "skill-uppercase": ({"skills/My-Skill/SKILL.md": SKILL.format(name="My-Skill", description="x")},
                        [("skills/My-Skill/SKILL.md", "name", "'My-Skill' is not a skill name")]),
    "skill-long-description": ({"skills/my-skill/SKILL.md": SKILL.format(name="my-skill", description="d" * 1025)},
                               [("skills/my-skill/SKILL.md", "description", "is too long (1025 characters; at most 1024)")]),
    "skill-no-frontmatter": ({"skills/my-skill/SKILL.md": "# My skill\nno frontmatter\n"},
                             [("skills/my-skill/SKILL.md", "-", "must start with YAML frontmatter")]),
    "skill-unknown-field": ({"skills/my-skill/SKILL.md": "---\nname: my-skill\ndescription: x\nauthor: me\n---\n"},
                            [("skills/my-skill/SKILL.md", "author", "unknown field")]),
    "toml-malformed": ({"kernels/rms/build.toml": '[general\nname = "rms"\n'},
                       [("kernels/rms/build.toml", "-", "malformed TOML")]),
    "toml-unknown-field": ({"kernels/rms/build.toml": BUILD.replace('backends', 'colour = "red"\nbackends')},
                           [("kernels/rms/build.toml", "general.colour", "unknown field")]),
    "toml-wrong-type": ({"kernels/rms/build.toml": BUILD.replace('name = "rms"', 'name = "rms"\nversion = "1"')},
                        [("kernels/rms/build.toml", "general.version", "is not of type 'integer'")]),
    "toml-missing-general": ({"kernels/rms/build.toml": '[torch]\nsrc = ["a.cpp"]\n'},
                             [("kernels/rms/build.toml", "general", "required field is missing")]),
    "lab-yaml-bad-direction": ({"lab.yaml": "lab: x\nobjective: {metric: loss, direction: down}\n"
                                            "target: {command: [python, t.py], editable: [t.py]}\n"},
                               [("lab.yaml", "objective.direction", "is not one of")]),
}

# Where a line number is known, it must be given (the field's own line where it has one).
EXPECTED_LINES = {"yaml-bomb": 3, "merge-key": 3, "wrong-type-title": 2, "misspelt-field": 8, "non-utf8": 2, "malformed-yaml": 3,
                  "skill-name-not-dir": 2, "toml-wrong-type": 3, "toml-unknown-field": 3,
                  "lab-yaml-bad-direction": 2, "unknown-hypothesis": 2}


def write_case(root, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.fixture
def base_lab(make_lab, tmp_path, write_doc):
    """A valid lab with one hypothesis h-ok (no skills, so every problem comes from the case)."""
    lab = make_lab(tmp_path)
    write_doc(lab.hypotheses / "h-ok.yaml", hyp("h-ok"))
    assert validate(lab.root).ok, validate(lab.root).problems
    return lab


def matches(problem: Problem, path: str, field: str, fragment: str) -> bool:
    return problem.path == path and (problem.field or "-") == field and fragment in problem.message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_through_the_api(base_lab, case, tree_hashes):
    files, expected = CASES[case]
    write_case(base_lab.root, files)
    before = tree_hashes(base_lab.root)
    report = validate(base_lab.root)
    assert tree_hashes(base_lab.root) == before, "validate modified a file"
    assert not report.ok
    for path, field, fragment in expected:
        assert any(matches(p, path, field, fragment) for p in report.problems), (
            f"expected {path}: {field}: ...{fragment}...; got:\n" + "\n".join(map(str, report.problems)))
    unexpected = [p for p in report.problems if not any(matches(p, *e) for e in expected)]
    assert not unexpected, "\n".join(map(str, unexpected))
    for problem in report.problems:
        assert "\n" not in str(problem) and LINE.match(str(problem)), str(problem)
    if case in EXPECTED_LINES:
        first = next(p for p in report.problems if matches(p, *expected[0]))
        assert first.line == EXPECTED_LINES[case], str(first)


def test_python_tag_runs_nothing(base_lab):
    write_case(base_lab.root, CASES["python-tag"][0])
    validate(base_lab.root)
    assert not (base_lab.root / "pwned").exists()


@pytest.fixture
def all_bad_lab(base_lab):
    """One lab holding every case at once (cases touching the same path are skipped)."""
    seen: set[str] = set()
    expected = []
    for case in sorted(CASES):
        files, problems = CASES[case]
        if seen & set(files) or case in ("lab-yaml-bad-direction", "huge-file"):
            continue  # a broken lab.yaml stops the CLI before validating; the huge file has its own test
        seen |= set(files)
        write_case(base_lab.root, files)
        expected += problems
    return base_lab, expected


def test_cli_reports_every_problem_as_one_line_and_exits_1(all_bad_lab, run_lab, tree_hashes):
    lab, expected = all_bad_lab
    before = tree_hashes(lab.root)
    result = run_lab("validate", cwd=lab.root)
    assert tree_hashes(lab.root) == before, "lab validate modified a file"
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = result.stdout.strip().splitlines()
    *problem_lines, summary = lines
    for line in problem_lines:
        assert LINE.match(line), line
    for path, field, fragment in expected:
        assert any(line.startswith(path + ":") and f": {field}: " in line and fragment in line
                   for line in problem_lines), f"{path}: {field}: {fragment} missing from:\n{result.stdout}"
    assert re.match(rf"^{len(problem_lines)} problems in \d+ files \(\d+ files checked\) in [\d.]+s$", summary)


def test_cli_json_shape(all_bad_lab, run_lab):
    lab, expected = all_bad_lab
    result = run_lab("validate", "--json", cwd=lab.root)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "files", "counts", "problems", "warnings", "seconds"}
    assert data["ok"] is False and data["files"] == sum(data["counts"].values())
    assert {"hypothesis", "queue", "experiment", "parquet", "skill", "build-toml", "stray"} <= set(data["counts"])
    for problem in data["problems"]:
        assert set(problem) == {"path", "line", "field", "message"}
        assert isinstance(problem["line"], (int, type(None))) and problem["message"]
    assert len(data["problems"]) >= len(expected)


def test_cli_huge_file_and_bomb_alone(base_lab, run_lab, tree_hashes):
    write_case(base_lab.root, {**CASES["huge-file"][0], **CASES["yaml-bomb"][0]})
    before = tree_hashes(base_lab.root)
    result = run_lab("validate", "hypotheses", cwd=base_lab.root)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "hypotheses/h-huge.yaml: -: file is 52.4 MB, over the 1024 KiB limit for lab files" in result.stdout
    assert "hypotheses/h-bomb.yaml:3: b[0]: YAML anchors/aliases are not allowed in lab files" in result.stdout
    assert tree_hashes(base_lab.root) == before


def test_cli_broken_lab_yaml_is_one_line(base_lab, run_lab):
    write_case(base_lab.root, CASES["lab-yaml-bad-direction"][0])
    result = run_lab("validate", cwd=base_lab.root)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("lab.yaml:2: objective.direction: 'down' is not one of")
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_names_one_file(base_lab, run_lab):
    """pre-commit passes file names: only those are checked (cross-references still see the lab)."""
    write_case(base_lab.root, {"hypotheses/h-bad.yaml": y(hyp("h-bad", title=5)),
                               "queue/e-ok.yaml": y(exp("e-ok", "h-ok"))})
    result = run_lab("validate", "queue/e-ok.yaml", cwd=base_lab.root)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().startswith("ok: 1 file valid (queue 1)")
    result = run_lab("validate", "hypotheses/h-bad.yaml", "queue/e-ok.yaml", cwd=base_lab.root)
    assert result.returncode == 1
    assert "hypotheses/h-bad.yaml:2: title: 5 is not of type 'string'" in result.stdout
    result = run_lab("validate", "queue/e-gone.yaml", cwd=base_lab.root)
    assert result.returncode == 1 and "queue/e-gone.yaml: -: cannot read" in result.stdout
