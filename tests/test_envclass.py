"""Environment classes: a lab with a CPU slot here and a GPU flavor on HF Jobs (the stand-in, a T4 class)
judges every result only against base scores of its own class, records the class and what each job cost,
and `lab query` groups by class; `lab reproduce` elsewhere says the score moved with the class."""
from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from hf_jobs_standin import hf_jobs, keep_client_on_loopback  # noqa: F401 (fixtures)
from test_backend_hf_jobs import lab_env, lab_run, remote_lab
from test_loop import finished, queue, scores_by_id

from runner.backends import envclass
from runner.lab import Lab
from runner.loop.scoring import noise, runs_of
from runner.repo import gitops
from runner.state.accounting import spend
from runner.state.create import new_experiment, new_hypothesis

ON_GPU = "score = (X - 3.0) ** 2 + 1.0 + (10.0 if os.environ.get('LAB_SLOT', '').startswith('hf') else 0.0)"


def two_class_lab(tmp_path, hub, score_line: str = ON_GPU, **objective) -> Lab:
    """Experiments run here by default; HF Jobs runs the T4 flavor, where the target scores 10 worse."""
    lab = remote_lab(tmp_path, hub, slots=1)
    score = lab.root / "score.py"
    score.write_text(score.read_text().replace("score = (X - 3.0) ** 2 + 1.0", score_line))
    config = yaml.safe_load(lab.config_path.read_text())
    config["objective"].update(objective)
    config["backends"]["default"] = "local"
    config["backends"]["hf_jobs"]["flavor"] = "t4-small"
    lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    gitops.run_git(lab.root, "commit", "-qam", "a CPU slot here, a T4 on HF Jobs")
    gitops.run_git(lab.root, "push", "-q", "origin", "HEAD:main")
    return Lab(lab.root)


def on(lab: Lab, backend: str, params: dict) -> str:
    hyp, _ = new_hypothesis(lab, f"{params} on {backend}", {"params": params}, status="accepted")
    exp_id, _ = new_experiment(lab, hyp, {"params": params}, gitops.head(lab.root), backend=backend)
    return exp_id


def test_two_environment_classes_in_one_lab_never_compare_across_classes(tmp_path, hf_jobs, run_lab):
    lab = two_class_lab(tmp_path, hf_jobs)
    base = queue(lab, None, baseline=True)            # here: 5.0
    gpu = on(lab, "hf_jobs", {"X": 2.5})              # on the T4: 11.25, worse than 5.0 but better than 15.0 there
    cpu = on(lab, "local", {"X": 0.0})                # here: 10.0, better than the T4's 15.0 but worse than 5.0
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab, hf_jobs)

    rows = scores_by_id(lab)
    local_class, gpu_class = envclass.describe(lab.config, "local")["class"], rows[gpu]["env_class"]
    assert gpu_class.startswith("hf_jobs/1xT4/") and local_class.startswith("local/cpu-")
    assert rows[base]["env_class"] == rows[cpu]["env_class"] == local_class
    (gpu_base,) = [r for r in rows.values() if r["kind"] == "baseline" and r["env_class"] == gpu_class]
    assert gpu_base["value"] == pytest.approx(15.0)                   # measured first, where the change ran
    assert rows[gpu]["base_value"] == pytest.approx(15.0) and rows[gpu]["promoted"]
    assert rows[cpu]["base_value"] in (pytest.approx(5.0), pytest.approx(1.25)) and not rows[cpu]["promoted"]
    for row in rows.values():                                         # every base value from the row's own class
        if row["kind"] == "experiment" and row["base_value"] is not None:
            same = [r["value"] for r in rows.values() if r["env_class"] == row["env_class"]
                    and (r["kind"] == "baseline" or r["promoted"]) and r["id"] != row["id"]]
            assert any(v == pytest.approx(row["base_value"]) for v in same), row["id"]
    record = finished(lab, gpu)
    assert record["environment"]["class"] == gpu_class and record["environment"]["gpus"] == 1
    assert record["environment"]["gpu_model"] == "T4" and "seed" not in record
    assert finished(lab, base)["environment"]["torch"] == envclass.software()["torch"]

    jobs = {r["experiment"]: r for r in pq.read_table(lab.experiments / "jobs").to_pylist()}
    assert (jobs[gpu]["gpus"], jobs[gpu]["gpu_model"], jobs[gpu]["flavor"]) == (1, "T4", "t4-small")
    assert jobs[gpu]["usd"] == pytest.approx(jobs[gpu]["seconds"] * 0.40 / 3600)
    assert (jobs[cpu]["gpus"], jobs[cpu]["usd"]) == (0, None)
    hf_seconds = sum(r["seconds"] for r in jobs.values() if r["backend"] == "hf_jobs")
    assert spend(lab).gpu_hours == pytest.approx(hf_seconds / 3600)

    out = run_lab("-C", lab.root, "query", "--json", "SELECT env_class, count(*) AS n, min(value) AS best "
                  "FROM scores GROUP BY env_class ORDER BY env_class", cwd=lab.root)
    assert out.returncode == 0, out.stderr
    assert {r["env_class"] for r in json.loads(out.stdout)} == {local_class, gpu_class}

    # the same commit on the other class scores differently: outside the margin, and it says why
    out = run_lab("-C", lab.root, "reproduce", cpu, "--backend", "hf_jobs", cwd=lab.root, env=lab_env(hf_jobs),
                  timeout=240)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "not reproduced: val_bpb 20 vs recorded 10" in out.stdout
    assert f"in {gpu_class} (the original ran in {local_class})" in out.stdout


# here the seed moves the score by 1 (a noisy class); on the T4 the target is deterministic
NOISY_HERE = ON_GPU.replace("else 0.0)", "else float(os.environ.get('LAB_SEED') == '1'))")


def test_the_noise_and_the_margin_come_from_the_class_judged(tmp_path, hf_jobs, run_lab):
    lab = two_class_lab(tmp_path, hf_jobs, NOISY_HERE, margin_from_baseline=2.0)
    here = [queue(lab, None, baseline=True, seed=seed) for seed in (0, 1)]   # 5.0 and 6.0: stdev 0.71 here
    gpu = on(lab, "hf_jobs", {"X": 1.2})   # 14.24 on the T4 against 15.0: a gain of 0.76
    gitops.commit_paths(lab.root, ["queue", "hypotheses"], "queue")
    lab_run(run_lab, lab, hf_jobs)

    rows = scores_by_id(lab)
    local_class, gpu_class = rows[here[0]]["env_class"], rows[gpu]["env_class"]
    assert [rows[i]["value"] for i in here] == [pytest.approx(5.0), pytest.approx(6.0)]
    # the seed noise here would make the margin 1.41 and keep the change; the T4 has not measured its
    # own noise, so the change is judged with the configured margin and one T4 run of its base
    assert rows[gpu]["base_value"] == pytest.approx(15.0) and rows[gpu]["margin"] == pytest.approx(0.01)
    assert rows[gpu]["promoted"] and rows[gpu]["z"] is None
    table = pq.read_table(lab.experiments / "scores")          # the measurements of the old base (main has moved on)
    table = table.filter(pc.equal(table["target"], rows[here[0]]["target"]))
    assert noise(lab, table, env_class=local_class).margin == pytest.approx(2.0 * 0.5 ** 0.5)
    assert noise(lab, table, env_class=local_class).sigma_runs == 2
    assert noise(lab, table, env_class=gpu_class).sigma is None
    base = rows[here[0]]["commit"]
    assert runs_of(lab, base, local_class, table) == 2 and runs_of(lab, base, gpu_class, table) == 1
