"""What a newcomer and a hostile agent found: each finding as a regression test on a real lab,
through the real `lab` CLI where a person would use it, with real agent processes for the attacks.

The attacks run unconfined (`sandbox: none`, the runner's second line) and, where bwrap works,
sandboxed (the first line: the operating system refuses them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from runner.lab import Lab
from runner.loop.run import run
from runner.repo import gitops
from runner.roles import sandbox
from runner.scaffold import init_lab
from runner.state.events import read_events
from runner.state.scores import scores, write_scores

# A foreign target of a user's own: `fit.py` prints val_loss; X near 3 is best; BROKEN makes it fail.
FIT = textwrap.dedent('''\
    import os, sys
    X = 1.0
    BROKEN = False
    if BROKEN:
        print("val_loss: nan")
        sys.exit(0)
    print("env:", dict(os.environ))   # a target that prints its whole environment
    print(f"val_loss: {(X - 3.0) ** 2 + 1.0:.6f}")
''')


def fit_lab(root: Path, worker: dict | None = None, planner: str = "off", **target) -> Lab:
    """A blank lab around fit.py, roles off unless given, 2 CPU slots, committed."""
    init_lab(root, template="blank", commit=False)
    (root / "fit.py").write_text(FIT)
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["objective"] = {"metric": "val_loss", "direction": "minimize", "noise_margin": 0.01}
    config["target"].update(command=["python", "fit.py"], editable=["fit.py"], params=["X", "BROKEN"],
                            time_limit_s=30, stall_timeout_s=20, **target)
    config["backends"]["local"].update(slots=2, threads_per_slot=1)
    config["roles"] = {"researcher": {"kind": "off"}, "planner": {"kind": planner},
                       "worker": worker or {"kind": "builtin"}, "reporter": {"kind": "builtin"}}
    config["limits"] = {"max_running": 2, "max_queue": 2, "retries": 1}
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git_init(root)
    gitops.run_git(root, "add", "-A")
    gitops.run_git(root, "commit", "-q", "-m", "a lab around fit.py")
    return Lab(root)


def lab_cli(lab: Lab, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    from conftest import _run_lab
    return _run_lab(*args, cwd=lab.root, env=env, timeout=timeout)


def records(lab: Lab) -> dict[str, dict]:
    return {p.parent.name: yaml.safe_load(p.read_text()) for p in lab.experiments.glob("*/experiment.yaml")}


def events(lab: Lab) -> list[dict]:
    return read_events(lab).to_pylist()


# -- a newcomer's first hour ----------------------------------------------------------------------
def test_a_users_first_experiment_waits_for_the_baseline_and_is_judged_against_it(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    hyp = lab_cli(lab, "hypothesis", "new", "--title", "X near its optimum", "--param", "X=2.9")
    assert hyp.returncode == 0, hyp.stderr
    added = lab_cli(lab, "queue", "add", "--hypothesis", hyp.stdout.split()[0])
    assert added.returncode == 0, added.stderr
    done = lab_cli(lab, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    exp_id = added.stdout.split()[0]
    recorded = records(lab)
    [baseline] = [r for r in recorded.values() if r["kind"] == "baseline"]
    assert baseline["result"]["value"] == pytest.approx(5.0)
    result = recorded[exp_id]["result"]
    assert result["base_value"] == pytest.approx(5.0) and result["promoted"] is True, result
    assert "X = 2.9" in (lab.root / "fit.py").read_text()


def test_a_failing_main_target_is_measured_once_and_reported_not_flooded(tmp_path):
    lab = fit_lab(tmp_path / "lab", planner="builtin")
    (lab.root / "fit.py").write_text(FIT.replace("BROKEN = False", "BROKEN = True"))
    gitops.commit_paths(lab.root, ["fit.py"], "main's target breaks")
    commits_before = int(gitops.run_git(lab.root, "rev-list", "--count", "HEAD"))
    done = lab_cli(lab, "run", "--until-idle")
    assert done.returncode == 0, done.stderr
    baselines = [r for r in records(lab).values() if r["kind"] == "baseline"]
    assert len(baselines) == 1 and baselines[0]["status"] == "failed"
    assert [e["kind"] for e in events(lab)].count("base-fails") <= 1
    assert int(gitops.run_git(lab.root, "rev-list", "--count", "HEAD")) - commits_before < 10
    status = lab_cli(lab, "status")
    assert f"main's target fails: see experiments/{baselines[0]['id']}/log.txt" in status.stdout
    assert json.loads(lab_cli(lab, "status", "--json").stdout)["main_fails"] == \
        f"experiments/{baselines[0]['id']}/log.txt"
    # main changes: it is measured again and work resumes
    (lab.root / "fit.py").write_text(FIT)
    gitops.commit_paths(lab.root, ["fit.py"], "main's target fixed")
    assert lab_cli(lab, "run", "--until-idle", "--max-experiments", "2").returncode == 0
    assert any(r["kind"] == "baseline" and r["status"] == "finished" for r in records(lab).values())
    assert "main's target fails" not in lab_cli(lab, "status").stdout


def test_best_seen_counts_only_finished_runs(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    rows = [dict(id="e-ok", kind="experiment", status="finished", value=3.0, promoted=False),
            dict(id="e-crash", kind="experiment", status="failed", value=0.5, promoted=False,
                 reason="exit code 3")]
    write_scores(lab, rows)
    info = json.loads(lab_cli(lab, "status", "--json").stdout)
    assert info["best_seen"]["id"] == "e-ok"


def test_a_duplicate_key_in_lab_yaml_is_refused_with_both_lines(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    text = lab.config_path.read_text()
    first = text.splitlines().index("objective:") + 1
    lab.config_path.write_text(text + "objective:\n  metric: other\n  direction: maximize\n")
    second = len(text.splitlines()) + 1
    result = lab_cli(lab, "validate")
    assert result.returncode == 1
    assert f"lab.yaml:{second}: objective: duplicate key (first at line {first})" in result.stdout


def test_a_missing_optional_package_names_the_extra_to_install(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    blocker = tmp_path / "blocked"
    (blocker / "plotly").mkdir(parents=True)
    (blocker / "plotly" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'plotly'\", name='plotly')\n")
    result = lab_cli(lab, "report", env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 2
    assert "pip install 'benchlab[report]'" in result.stderr and "Traceback" not in result.stderr


def test_an_unquoted_off_role_means_off(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    lab.config_path.write_text(lab.config_path.read_text().replace("kind: 'off'", "kind: off"))
    assert "kind: off" in lab.config_path.read_text()
    assert lab_cli(lab, "validate").returncode == 0
    assert Lab(lab.root).config["roles"]["planner"]["kind"] == "off"


def test_hidden_files_in_state_directories_are_refused_as_stray(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    (lab.hypotheses / ".sneaky.yaml").write_text("id: x\n")
    result = lab_cli(lab, "validate")
    assert result.returncode == 1 and "hypotheses/.sneaky.yaml: -: not a lab file" in result.stdout


def test_status_counts_an_invalid_queue_file_as_invalid(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    (lab.queue / "e-bad.yaml").write_text("id: e-bad\nstatus: queued\n")   # required fields missing
    info = json.loads(lab_cli(lab, "status", "--json").stdout)
    assert info["queue"] == {"invalid": 1}


def test_an_unexpected_git_failure_is_one_line_and_a_log(tmp_path):
    lab = fit_lab(tmp_path / "lab")
    (lab.root / ".git" / "index").write_bytes(b"not an index")
    result = lab_cli(lab, "run", "--once")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "git" in line and "traceback in" in line
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()


def test_ctrl_c_to_the_runners_group_lets_the_pass_finish(tmp_path):
    """A terminal sends SIGINT to the whole process group: a git child of the runner must not die
    halfway through a commit (the runner then exits cleanly, state committed)."""
    lab = fit_lab(tmp_path / "lab")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    marker = tmp_path / "in-commit"
    (bin_dir / "git").write_text(f'#!/bin/sh\nif [ "$1" = commit-tree ]; then touch {marker}; sleep 2; fi\n'
                                 f'exec {real_git} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    from conftest import _env, lab_executable
    env = _env({"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    queue_cmd = lab_cli(lab, "hypothesis", "new", "--title", "t", "--param", "X=2.5")
    lab_cli(lab, "queue", "add", "--hypothesis", queue_cmd.stdout.split()[0])
    proc = subprocess.Popen([lab_executable(), "run", "--until-idle"], cwd=lab.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the runner never committed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)                       # what Ctrl-C in a terminal does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "finishing this pass" in err
    assert gitops.run_git(lab.root, "status", "--porcelain", "--", "queue", "experiments", "hypotheses") == ""


# -- a hostile worker ------------------------------------------------------------------------------
ATTACKS = {
    # forge the job records of its own experiment: a dead pid, exit 0, a log with a perfect score
    "forge-job": '''
        d = Path(root, ".lab", "jobs", task, "attempt-1")
        d.mkdir(parents=True, exist_ok=True)
        (d / "pid").write_text(json.dumps({"pid": 999999, "pgid": 999999, "start_ticks": 1, "started": 0.0}))
        (d / "log").write_text("val_loss: 0.0001\\n")
        (d / "exit.json").write_text(json.dumps({"returncode": 0, "exit_code": 0, "finished": 1.0}))
    ''',
    # rewrite the other experiments' score files (main's baseline among them) with perfect results,
    # and add one for an experiment that never ran
    "forge-scores": '''
        import pyarrow as pa, pyarrow.parquet as pq
        for path in Path(root, "experiments", "scores").glob("*.parquet"):
            table = pq.read_table(path)
            pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                            pa.array([0.0001] * table.num_rows)), path)
        pq.write_table(table.set_column(0, "id", pa.array(["e-forged"])),
                       Path(root, "experiments", "scores", "e-forged.parquet"))
    ''',
    # commit a change to lab.yaml on main, dressed as the runner
    "spoof-commit": '''
        Path(root, "lab.yaml").write_text(Path(root, "lab.yaml").read_text() + "# the margin is mine now\\n")
        env = {**os.environ, "GIT_COMMITTER_EMAIL": "lab@benchlab.invalid", "GIT_AUTHOR_EMAIL": "lab@benchlab.invalid",
               "GIT_COMMITTER_NAME": "benchlab", "GIT_AUTHOR_NAME": "benchlab"}
        subprocess.run(["git", "-C", root, "commit", "-q", "--no-verify", "-m", "lab: record state files",
                        "--", "lab.yaml"], env=env)
    ''',
    # leave a detached process that rewrites main's target after the worker has gone
    "detach": '''
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1.5)
                Path(root, "fit.py").write_text("print('val_loss: 0.0001')\\n")
            os._exit(0)
    ''',
}
WORKER = '''
import json, os, subprocess, sys, time
from pathlib import Path
from runner.files.yamlio import load_yaml, write_yaml
root, task, entry = os.environ["LAB_ROOT"], os.environ["LAB_TASK"], Path(os.environ["LAB_ENTRY"])
try:
{attack}
except OSError as exc:
    print("attack refused:", exc, flush=True)
fit = Path("fit.py")                                  # the honest part: its one change, then ready
fit.write_text(fit.read_text().replace("X = 1.0", "X = 2.5"))
data = load_yaml(entry)[0]
data["status"] = "ready"
write_yaml(entry, data)
'''


def hostile_lab(root: Path, attack: str, mode: str) -> Lab:
    script = root / ".lab" / f"worker-{attack}.py"    # inside the lab: a sandbox's /tmp is its own
    lab = fit_lab(root, worker={"kind": "agent", "command": [sys.executable, str(script)], "time_limit_s": 30,
                                "sandbox": mode})
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(WORKER.format(attack=textwrap.indent(textwrap.dedent(ATTACKS[attack]), "    ")))
    return lab


def run_one_change(lab: Lab) -> dict:
    """Main measured first (so the tables exist to attack), then the worker's one change."""
    assert lab_cli(lab, "baseline", "--repeats", "1").returncode == 0
    hyp = lab_cli(lab, "hypothesis", "new", "--title", "X to 2.5", "--param", "X=2.5").stdout.split()[0]
    exp_id = lab_cli(lab, "queue", "add", "--hypothesis", hyp).stdout.split()[0]
    run(lab, until_idle=True, plan=False, tick=0.1)
    return records(lab)[exp_id]


MODES = ["none", pytest.param("bwrap", marks=pytest.mark.skipif(
    bool(sandbox.unavailable()), reason=f"no sandbox here: {sandbox.unavailable()}"))]


@pytest.mark.parametrize("mode", MODES)
def test_forged_job_records_are_never_adopted(tmp_path, mode):
    lab = hostile_lab(tmp_path / "lab", "forge-job", mode)
    record = run_one_change(lab)
    assert record["result"]["value"] == pytest.approx(1.25)            # the real run, not 0.0001
    assert record["result"]["promoted"] is True and "X = 2.5" in (lab.root / "fit.py").read_text()


@pytest.mark.parametrize("mode", MODES)
def test_forged_scores_are_never_committed_nor_judged_against(tmp_path, mode):
    lab = hostile_lab(tmp_path / "lab", "forge-scores", mode)
    record = run_one_change(lab)
    assert record["result"]["base_value"] == pytest.approx(5.0)
    files = gitops.run_git(lab.root, "ls-tree", "--name-only", "HEAD", "experiments/scores/").split()
    assert len(files) == 2 and "experiments/scores/e-forged.parquet" not in files   # the baseline, the change
    for path in files:
        committed = pq.read_table(pa.BufferReader(gitops.git_bytes(lab.root, "show", f"HEAD:{path}")))
        assert 0.0001 not in committed.column("value").to_pylist()
    assert 0.0001 not in scores(lab).column("value").to_pylist() and "e-forged" not in scores(lab)["id"].to_pylist()
    assert not (lab.experiments / "scores" / "e-forged.parquet").exists()
    if mode == "none":
        refused = {e["path"] for e in events(lab) if e["kind"] == "refused"}
        baseline = next(r["id"] for r in records(lab).values() if r["kind"] == "baseline")
        assert {f"experiments/scores/{baseline}.parquet", "experiments/scores/e-forged.parquet"} <= refused


@pytest.mark.parametrize("mode", MODES)
def test_a_commit_dressed_as_the_runners_is_verified_by_its_content(tmp_path, mode):
    lab = hostile_lab(tmp_path / "lab", "spoof-commit", mode)
    run_one_change(lab)
    assert "the margin is mine now" not in (lab.root / "lab.yaml").read_text()
    assert "the margin is mine now" not in gitops.run_git(lab.root, "show", "HEAD:lab.yaml")
    if mode == "none":
        assert any(e["kind"] == "refused" and e["path"] == "lab.yaml" for e in events(lab))


@pytest.mark.parametrize("mode", MODES)
def test_nothing_a_worker_started_outlives_it(tmp_path, mode):
    lab = hostile_lab(tmp_path / "lab", "detach", mode)
    run_one_change(lab)
    time.sleep(3)                                          # the detached process would have written by now
    assert "X = 2.5" in (lab.root / "fit.py").read_text()
    assert "0.0001" not in (lab.root / "fit.py").read_text()


# -- secrets ---------------------------------------------------------------------------------------
def test_secret_values_never_reach_the_lab_its_runtime_files_or_git(tmp_path, monkeypatch):
    values = {"HF_TOKEN": "hf_SECRETvalue0123456789abcdef", "OPENAI_API_KEY": "sk-SECRETvalue0123456789",
              "MY_SERVICE_SECRET": "svc-SECRETvalue0123456789"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    lab = fit_lab(tmp_path / "lab", secrets=["HF_TOKEN"])     # passed to the job by name
    (lab.root / "fit.py").write_text(FIT.replace('print("env:", dict(os.environ))',
                                                 'print("env:", dict(os.environ)); print("token", os.environ["HF_TOKEN"])'))
    gitops.commit_paths(lab.root, ["fit.py"], "a target that prints its secrets")
    hyp = lab_cli(lab, "hypothesis", "new", "--title", "t", "--param", "X=2.0").stdout.split()[0]
    lab_cli(lab, "queue", "add", "--hypothesis", hyp)
    result = lab_cli(lab, "run", "--until-idle")
    assert result.returncode == 0, result.stderr
    assert any("token ***" in (p.parent / "log.txt").read_text() for p in lab.experiments.glob("*/experiment.yaml"))
    history = subprocess.run(["git", "log", "-p", "--all"], cwd=lab.root, capture_output=True).stdout
    for value in values.values():
        assert value.encode() not in history
        for path in lab.root.rglob("*"):
            if path.is_file() and ".git" not in path.parts:
                assert value.encode() not in path.read_bytes(), path
