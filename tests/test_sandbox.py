"""The bubblewrap sandbox of agent roles, against real processes in real labs.

Each attack is a scripted hostile agent (tests/hostile_agent.py) run twice: through the
sandbox, where the operating system refuses it (EROFS seen by the agent, files unchanged),
and without, where it succeeds, which shows the attack is real. The lab lives inside a
fake home, so the home's writable bind covers it and only the lab's read-only re-bind
protects it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import GIT_IDENTITY, lab_executable  # noqa: E402

from runner.errors import LabError
from runner.files.yamlio import load_yaml
from runner.lab import Lab
from runner.roles import sandbox

HOSTILE = Path(__file__).with_name("hostile_agent.py")
MARK = Path(__file__).resolve().parents[1] / "skills" / "autolab-worker" / "scripts" / "mark.py"
pytestmark = pytest.mark.skipif(not sandbox.available(),
                                reason=f"no bubblewrap sandbox here: {sandbox.unavailable()}")


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def wlab(make_lab, home, git, write_doc, experiment_doc, hypothesis_doc) -> Lab:
    """A lab in the home: target train.py, hypothesis h-1, entries e-1 and e-2 assigned, each in its worktree."""
    lab = make_lab(home)
    (lab.root / "train.py").write_text("LR = 0.001\n")
    write_doc(lab.hypotheses / "h-1.yaml", hypothesis_doc("h-1"))
    git(lab.root, "add", "-A")
    git(lab.root, "commit", "-qm", "target")
    base = git(lab.root, "rev-parse", "HEAD").strip()
    for exp in ("e-1", "e-2"):
        write_doc(lab.queue / f"{exp}.yaml", experiment_doc(exp, "h-1", status="assigned", base=base,
                                                             change={"params": {"LR": 0.002}}))
    git(lab.root, "add", "-A")
    git(lab.root, "commit", "-qm", "entries")
    for exp in ("e-1", "e-2"):  # at the entry's base, as the runner makes them
        git(lab.root, "worktree", "add", "-q", "-b", f"exp/{exp}", str(lab.worktrees / exp), base)
    return lab


@pytest.fixture
def token():
    """A unique word in the command line of the processes a test starts; leftovers are killed after."""
    word = f"sbx-{uuid.uuid4().hex}"
    yield word
    for pid in leftovers(word):
        os.kill(pid, signal.SIGKILL)


def leftovers(word: str) -> list[int]:
    """Live agent processes whose command line holds `word` (a zombie's is empty; bwrap's own don't count)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if word.encode() in Path(f"/proc/{name}/cmdline").read_bytes() \
                    and Path(f"/proc/{name}/comm").read_text().strip() != "bwrap":
                found.append(int(name))
        except OSError:
            continue
    return found


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def agent_argv(lab: Lab, role: str, task: str, argv: list[str], sandboxed: bool, cwd: Path,
               entry: Path | None = None) -> list[str]:
    if not sandboxed:
        return argv
    wrapped = sandbox.command(lab, role, task, argv, cwd, entry)
    assert wrapped[0] == "bwrap"
    return wrapped


def agent_env(lab: Lab, task: str, entry: Path | None) -> dict:
    return {**os.environ, **GIT_IDENTITY, "PYTHONDONTWRITEBYTECODE": "1", "LAB_ROOT": str(lab.root),
            "LAB_TASK": task, "LAB_ENTRY": str(entry or "")}


def run(lab: Lab, role: str, task: str, argv: list[str], *, sandboxed: bool, cwd: Path | None = None,
        entry: Path | None = None) -> subprocess.CompletedProcess:
    cwd = cwd or lab.root
    return subprocess.run(agent_argv(lab, role, task, argv, sandboxed, cwd, entry), cwd=cwd,
                          env=agent_env(lab, task, entry), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def hostile(lab: Lab, role: str, task: str, *args: str, sandboxed: bool, cwd: Path | None = None,
            entry: Path | None = None) -> dict[str, dict]:
    """Run the hostile agent; {what: its report line}."""
    done = run(lab, role, task, [sys.executable, str(HOSTILE), *args], sandboxed=sandboxed, cwd=cwd, entry=entry)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line["what"]: line for line in map(json.loads, done.stdout.splitlines())}


def worker(lab: Lab, exp: str, *args: str, sandboxed: bool) -> dict[str, dict]:
    return hostile(lab, "worker", exp, *args, sandboxed=sandboxed, cwd=lab.worktrees / exp,
                   entry=lab.queue / f"{exp}.yaml")


def refused(report: dict) -> bool:
    return not report["ok"] and report["errno"] == "EROFS"


# -- the attacks ----------------------------------------------------------------------------------
def test_forged_job_records_are_refused(wlab):
    jobs = wlab.runtime / "jobs" / "e-1"
    inside = worker(wlab, "e-1", "forge-job", "e-1", sandboxed=True)
    assert refused(inside["forge job records"]) and not jobs.exists()
    outside = worker(wlab, "e-1", "forge-job", "e-1", sandboxed=False)
    assert outside["forge job records"]["ok"] and (jobs / "attempt-1" / "exit.json").is_file()


def test_overwriting_scores_is_refused(wlab):
    scores = wlab.experiments / "scores" / "e-0.parquet"       # another experiment's score file
    scores.parent.mkdir(parents=True, exist_ok=True)
    scores.write_bytes(b"PAR1 the real scores PAR1")
    inside = worker(wlab, "e-1", "write", str(scores), "forged", sandboxed=True)
    assert refused(inside[f"write {scores}"]) and scores.read_bytes() == b"PAR1 the real scores PAR1"
    outside = worker(wlab, "e-1", "write", str(scores), "forged", sandboxed=False)
    assert outside[f"write {scores}"]["ok"] and scores.read_text() == "forged"


def test_committing_on_main_with_a_spoofed_committer_is_refused(wlab, git):
    main = git(wlab.root, "rev-parse", "main").strip()
    spoof = "lab@benchlab.invalid"
    inside = worker(wlab, "e-1", "commit-main", spoof, sandboxed=True)
    for what in ("commit on main", "update refs/heads/main"):
        assert not inside[what]["ok"] and "Read-only file system" in inside[what]["error"], inside[what]
    assert git(wlab.root, "rev-parse", "main").strip() == main
    outside = worker(wlab, "e-1", "commit-main", spoof, sandboxed=False)
    assert outside["commit on main"]["ok"] and outside["update refs/heads/main"]["ok"]
    assert git(wlab.root, "rev-parse", "main").strip() != main
    assert spoof in git(wlab.root, "log", "--format=%ce", "-3", "main")


def test_a_detached_process_dies_with_the_agent(wlab, token):
    target = wlab.root / "train.py"
    go = wlab.runtime / f"go-{token}"
    for _ in range(8):  # had bwrap exit before its namespace is empty, one try would often pass anyway
        inside = worker(wlab, "e-1", "detach", token, str(go), str(target), sandboxed=True)
        assert inside["left a detached process"]["ok"]
        assert leftovers(token) == []       # gone as soon as the agent has exited
    outside = worker(wlab, "e-1", "detach", token, str(go), str(target), sandboxed=False)
    assert outside["left a detached process"]["ok"]
    wait_for(lambda: len(leftovers(token)) == 1, "only the detached grandchild to remain")
    go.touch()
    wait_for(lambda: target.read_text() != "LR = 0.001\n", "the unconfined leftover to rewrite train.py")
    wait_for(lambda: not leftovers(token), "the leftover to exit")
    assert target.read_text() == "rewritten by a detached process\n"


def test_root_cannot_remount_the_lab_writable(wlab):
    config = wlab.root / "lab.yaml"
    before = config.read_text()
    inside = worker(wlab, "e-1", "remount", str(wlab.root), str(config), "lab: pwned\n", sandboxed=True)
    assert not inside["remount"]["ok"] and refused(inside[f"write {config}"]) and config.read_text() == before
    outside = worker(wlab, "e-1", "remount", str(wlab.root), str(config), "lab: pwned\n", sandboxed=False)
    assert outside[f"write {config}"]["ok"] and config.read_text() == "lab: pwned\n"


def test_a_worker_cannot_write_another_experiments_entry_or_worktree(wlab):
    other, code = wlab.queue / "e-2.yaml", wlab.worktrees / "e-2" / "train.py"
    before = other.read_text()
    inside = worker(wlab, "e-1", "write", str(other), "status: ready\n", sandboxed=True)
    assert refused(inside[f"write {other}"]) and other.read_text() == before
    inside = worker(wlab, "e-1", "write", str(code), "LR = 9\n", sandboxed=True)
    assert refused(inside[f"write {code}"]) and code.read_text() == "LR = 0.001\n"
    outside = worker(wlab, "e-1", "write", str(other), "status: ready\n", sandboxed=False)
    assert outside[f"write {other}"]["ok"] and other.read_text() == "status: ready\n"


def test_a_worker_cannot_redirect_its_worktree_or_write_main(wlab):
    admin = wlab.root / ".git" / "worktrees" / "e-1"
    targets = [wlab.worktrees / "e-1" / ".git", admin / "HEAD", admin / "commondir", wlab.root / "train.py",
               wlab.root / "lab.yaml", wlab.root / ".git" / "HEAD", wlab.root / ".git" / "index",
               wlab.root / ".git" / "refs" / "heads" / "main", wlab.root / ".git" / "packed-refs",
               wlab.root / ".git" / "objects" / "info" / "alternates"]
    before = {p: p.read_bytes() if p.exists() else None for p in targets}
    for path in targets:
        inside = worker(wlab, "e-1", "write", str(path), "ref: refs/heads/main\n", sandboxed=True)
        assert refused(inside[f"write {path}"]), path
    assert {p: p.read_bytes() if p.exists() else None for p in targets} == before
    outside = worker(wlab, "e-1", "write", str(admin / "HEAD"), "ref: refs/heads/main\n", sandboxed=False)
    assert outside[f"write {admin / 'HEAD'}"]["ok"] and (admin / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_the_lab_own_writer_falls_back_only_where_the_file_is_writable(wlab):
    entry, config = wlab.queue / "e-1.yaml", wlab.root / "lab.yaml"
    text, config_text = entry.read_text(), config.read_text()
    inside = worker(wlab, "e-1", "atomic", str(entry), text + "# in place\n", sandboxed=True)
    assert inside[f"atomic_write {entry}"]["ok"] and entry.read_text().endswith("# in place\n")
    inside = worker(wlab, "e-1", "atomic", str(config), "lab: pwned\n", sandboxed=True)
    assert refused(inside[f"atomic_write {config}"]) and config.read_text() == config_text
    assert not list(wlab.queue.glob(".*.tmp"))


def test_a_researcher_writes_hypotheses_and_queue_not_lab_yaml(wlab):
    made = run(wlab, "researcher", "r-1", [lab_executable(), "hypothesis", "new", "--title", "lr up",
                                            "--param", "LR=0.01"], sandboxed=True)
    assert made.returncode == 0, made.stderr
    hyp_id, path = made.stdout.split()
    assert path == f"hypotheses/{hyp_id}.yaml" and load_yaml(wlab.root / path)[0]["status"] == "proposed"
    queued = wlab.queue / "e-9.yaml"
    inside = hostile(wlab, "researcher", "r-1", "write", str(queued), "id: e-9\n", sandboxed=True)
    assert inside[f"write {queued}"]["ok"] and queued.read_text() == "id: e-9\n"
    config = wlab.root / "lab.yaml"
    before = config.read_text()
    inside = hostile(wlab, "researcher", "r-1", "write", str(config), "lab: pwned\n", sandboxed=True)
    assert refused(inside[f"write {config}"]) and config.read_text() == before
    outside = hostile(wlab, "researcher", "r-1", "write", str(config), "lab: pwned\n", sandboxed=False)
    assert outside[f"write {config}"]["ok"] and config.read_text() == "lab: pwned\n"


def test_a_planner_runs_lab_commands_but_cannot_write_experiments(wlab):
    for command in (["validate"], ["status", "--json"]):
        done = run(wlab, "planner", "p-1", [lab_executable(), *command], sandboxed=True)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert json.loads(done.stdout)["queue"] == {"assigned": 2}
    record = wlab.experiments / "e-1" / "record.yaml"
    inside = hostile(wlab, "planner", "p-1", "write", str(record), "status: done\n", sandboxed=True)
    assert refused(inside[f"write {record}"]) and not record.exists()
    outside = hostile(wlab, "planner", "p-1", "write", str(record), "status: done\n", sandboxed=False)
    assert outside[f"write {record}"]["ok"] and record.is_file()


def test_a_reporter_writes_reports_only(wlab):
    report, events = wlab.root / "reports" / "REPORT.md", wlab.experiments / "events" / "forged.parquet"
    events.parent.mkdir(parents=True, exist_ok=True)
    inside = hostile(wlab, "reporter", "rep-1", "write", str(report), "# report\n", sandboxed=True)
    assert inside[f"write {report}"]["ok"] and report.read_text() == "# report\n"
    inside = hostile(wlab, "reporter", "rep-1", "write", str(events), "forged", sandboxed=True)
    assert refused(inside[f"write {events}"]) and not events.exists()


def test_the_home_is_writable_but_not_the_lab_in_it_nor_gits_config(wlab, home):
    state, gitconfig, config = home / ".claude" / "state.json", home / ".gitconfig", wlab.root / "lab.yaml"
    inside = hostile(wlab, "planner", "p-1", "write", str(state), "{}", sandboxed=True)
    assert inside[f"write {state}"]["ok"] and state.read_text() == "{}"
    for path in (gitconfig, config):
        inside = hostile(wlab, "planner", "p-1", "write", str(path), "[core]\n\tfsmonitor = sh -c pwn\n",
                         sandboxed=True)
        assert refused(inside[f"write {path}"]), path
    assert gitconfig.read_text() == "" and "fsmonitor" not in config.read_text()


def test_tmp_is_private(wlab, token):
    scratch = Path("/tmp") / token
    inside = hostile(wlab, "planner", "p-1", "write", str(scratch), "x", sandboxed=True)
    assert inside[f"write {scratch}"]["ok"] and not scratch.exists()
    try:
        outside = hostile(wlab, "planner", "p-1", "write", str(scratch), "x", sandboxed=False)
        assert outside[f"write {scratch}"]["ok"] and scratch.read_text() == "x"
    finally:
        scratch.unlink(missing_ok=True)


def test_a_hard_link_or_symlink_as_entry_is_not_bound(wlab):
    entry = wlab.queue / "e-1.yaml"
    entry.unlink()
    os.link(wlab.root / "lab.yaml", entry)
    with pytest.raises(LabError, match="single name"):
        sandbox.role_binds(wlab, "worker", "e-1", wlab.worktrees / "e-1", entry)
    entry.unlink()
    entry.symlink_to(wlab.root / "lab.yaml")
    with pytest.raises(LabError, match="outside"):
        sandbox.role_binds(wlab, "worker", "e-1", wlab.worktrees / "e-1", entry)


# -- the worker's own work still succeeds ----------------------------------------------------------
def test_a_worker_commits_in_its_worktree_and_sets_its_entry_ready(wlab, git):
    main = git(wlab.root, "rev-parse", "main").strip()
    inside = worker(wlab, "e-1", "work", "train.py", sandboxed=True)
    assert all(line["ok"] for line in inside.values()), inside
    assert git(wlab.root, "log", "-1", "--format=%s", "exp/e-1").strip() == "e-1: LR = 0.002"
    assert git(wlab.root, "show", "exp/e-1:train.py").endswith("LR = 0.002\n")
    assert load_yaml(wlab.queue / "e-1.yaml")[0]["status"] == "ready"
    assert git(wlab.root, "rev-parse", "main").strip() == main
    assert git(wlab.worktrees / "e-1", "status", "--porcelain") == ""


def test_a_worker_marks_ready_with_the_skill_script_or_python(wlab):
    wt = wlab.worktrees / "e-1"
    edit = "from pathlib import Path; p = Path('train.py'); p.write_text(p.read_text().replace('0.001', '0.002'))"
    assert run(wlab, "worker", "e-1", [sys.executable, "-c", edit], sandboxed=True, cwd=wt).returncode == 0
    marked = run(wlab, "worker", "e-1", [sys.executable, str(MARK), "ready", "e-1"], sandboxed=True, cwd=wt,
                 entry=wlab.queue / "e-1.yaml")
    assert marked.returncode == 0, marked.stdout + marked.stderr
    assert load_yaml(wlab.queue / "e-1.yaml")[0]["status"] == "ready"
    entry = wlab.queue / "e-2.yaml"
    ready = ("import os, re; p = os.environ['LAB_ENTRY']; t = open(p).read(); "
             "open(p, 'w').write(re.sub(r'(?m)^status: assigned$', 'status: ready', t))")
    done = run(wlab, "worker", "e-2", [sys.executable, "-c", ready], sandboxed=True, cwd=wlab.worktrees / "e-2",
               entry=entry)
    assert done.returncode == 0, done.stderr
    assert load_yaml(entry)[0]["status"] == "ready"


# -- what a worker can still do, and how the runner sees it -----------------------------------------
def test_moving_another_exp_ref_is_possible_but_detected(wlab, git):
    before = sandbox.exp_refs(wlab)
    refs = wlab.root / ".git" / "refs" / "heads" / "exp"
    main = git(wlab.root, "rev-parse", "main").strip()
    assert before["refs/heads/exp/e-2"] != main
    inside = worker(wlab, "e-1", "write", str(refs / "e-2"), main + "\n", sandboxed=True)
    assert inside[f"write {refs / 'e-2'}"]["ok"]           # the exp/ ref directory is writable
    inside = worker(wlab, "e-1", "write", str(refs / "e-1"), "ref: refs/heads/main\n", sandboxed=True)
    assert inside[f"write {refs / 'e-1'}"]["ok"]
    problems = sandbox.ref_tampering(wlab, before, may_move={"e-1"})
    assert any("refs/heads/exp/e-2 moved" in p for p in problems), problems
    assert any("refs/heads/exp/e-1 is a symbolic ref (-> refs/heads/main)" in p for p in problems), problems
    assert sandbox.ref_tampering(wlab, sandbox.exp_refs(wlab), may_move={"e-1"}) == [
        "refs/heads/exp/e-1 is a symbolic ref (-> refs/heads/main)"]


# -- stopping ----------------------------------------------------------------------------------------
def start_hanging(lab: Lab, token: str, sandboxed: bool) -> subprocess.Popen:
    wt, entry = lab.worktrees / "e-1", lab.queue / "e-1.yaml"
    argv = agent_argv(lab, "worker", "e-1", [sys.executable, str(HOSTILE), "hang", token], sandboxed, wt, entry)
    process = subprocess.Popen(argv, cwd=wt, env=agent_env(lab, "e-1", entry), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, start_new_session=True)  # as AgentRunner.start does
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready and b"left a detached process" in process.stdout.readline()
    wait_for(lambda: len(leftovers(token)) == 2, "only the agent and its detached grandchild")
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signalling_the_group_of_bwrap_kills_everything_inside(wlab, token, sig):
    process = start_hanging(wlab, token, sandboxed=True)
    os.killpg(process.pid, sig)
    assert process.wait(timeout=30) == -sig
    wait_for(lambda: not leftovers(token), "the sandbox to empty")
    process.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stop_returns_once_the_sandbox_is_empty(wlab, token, sig):
    process = start_hanging(wlab, token, sandboxed=True)
    assert sandbox.stop(process.pid, sig)
    assert leftovers(token) == []
    assert process.wait(timeout=30) == -sig
    process.stdout.close()


def test_without_the_sandbox_a_setsid_child_outlives_the_group_kill(wlab, token):
    process = start_hanging(wlab, token, sandboxed=False)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert leftovers(token)
    wait_for(lambda: len(leftovers(token)) == 1, "only the detached grandchild to remain")
    process.stdout.close()


# -- policy, options, schema ------------------------------------------------------------------------
def test_network_is_kept_unless_unshared(wlab):
    names = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    here = subprocess.run([sys.executable, "-c", names], capture_output=True, text=True, check=True).stdout
    binds = sandbox.role_binds(wlab, "planner", "p-1")
    for network, expect in ((False, "['lo']\n"), (True, here)):
        argv = sandbox.wrap([sys.executable, "-c", names], binds, wlab.root, network=network)
        assert subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout == expect


def set_role(lab: Lab, role: str, extra: str) -> Lab:
    config = lab.root / "lab.yaml"
    config.write_text(config.read_text().replace(f"  {role}: {{kind: builtin}}",
                                                 f"  {role}: {{kind: agent, command: [x]{extra}}}"))
    return Lab(lab.root)


def test_policy_none_or_no_bwrap_runs_unconfined_with_one_warning(wlab, monkeypatch, capsys, run_lab):
    monkeypatch.setattr(sandbox, "_warned", set())
    lab = set_role(wlab, "worker", ", sandbox: none")
    assert run_lab("validate", cwd=lab.root).returncode == 0
    argv = ["agent", "--go"]
    wt = lab.worktrees / "e-1"
    assert sandbox.command(lab, "worker", "e-1", argv, wt) == argv
    assert sandbox.command(lab, "worker", "e-2", argv, wt) == argv
    assert capsys.readouterr().err.count("roles.worker.sandbox is none") == 1
    assert sandbox.command(lab, "planner", "p-1", argv, lab.root)[0] == "bwrap"
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    assert sandbox.command(lab, "planner", "p-1", argv, lab.root) == argv
    sandbox.command(lab, "planner", "p-2", argv, lab.root)
    err = capsys.readouterr().err
    assert err.count("the planner agent runs unconfined") == 1 and "not installed" in err


def test_the_schema_refuses_an_unknown_sandbox(wlab, run_lab):
    lab = set_role(wlab, "worker", ", sandbox: docker")
    done = run_lab("validate", cwd=lab.root)
    assert done.returncode != 0 and "sandbox" in done.stdout + done.stderr


def test_the_runners_own_code_under_tmp_stays_visible_read_only(tmp_path, monkeypatch):
    """An editable install's checkout (a clone under /tmp, as CI's may be) must stay readable to
    an agent that runs `lab` or a script beside it, but not writable."""
    code = tmp_path / "checkout"
    (code / "runner").mkdir(parents=True)
    (code / "runner" / "marker.txt").write_text("runner code")
    monkeypatch.setattr(sandbox, "RUNNER_CODE", code)
    argv = sandbox.wrap(["sh", "-c", f"cat {code}/runner/marker.txt; echo x > {code}/runner/new.txt"],
                        sandbox.Binds(), tmp_path)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("runner code"), done.stderr
    assert done.returncode != 0 and not (code / "runner" / "new.txt").exists()
