"""A fine-tune lab on the hf_jobs backend: finetune.py, unchanged but for a shorter budget committed on
main, runs as a Job of the loopback stand-in (tests/hf_jobs_standin.py, through the real huggingface_hub
client), and its eval_score, eval_loss and step losses come back into the lab's records."""
from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest
import yaml
from hf_jobs_standin import hf_jobs  # noqa: F401 (fixture)
from test_backend_hf_jobs import SECRET, assert_no_secret, jobs_of, lab_env

from runner.files.metrics import parse_summary
from runner.lab import Lab
from runner.state.params import apply_params

pytest.importorskip("trl", reason="needs the finetune extra (transformers, trl, datasets, peft, accelerate)")

SHORT = {"TINY_TRAIN_EXAMPLES": 400, "EVAL_HOLDOUT": 40, "EVAL_SAMPLES": 40, "MAX_STEPS": 30}


@pytest.mark.slow
@pytest.mark.timeout(1200)   # one 30-step CPU job: well under a minute alone, minutes on a shared machine
def test_a_finetune_baseline_runs_as_an_hf_job_and_is_recorded(tmp_path, hf_jobs, run_lab, git):  # noqa: F811
    root = tmp_path / "lab"
    assert run_lab("init", root, "--template", "finetune", cwd=tmp_path).returncode == 0
    script = root / "finetune.py"
    script.write_text(apply_params(script.read_text(), SHORT, "finetune.py"))
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["target"]["stall_timeout_s"] = 600   # the job is silent while torch and TRL import on a loaded machine
    config["backends"].update(default="hf_jobs", hf_jobs={
        "namespace": hf_jobs.user, "flavor": "cpu-basic", "image": "python:3.12", "slots": 1,
        "secrets": ["HF_TOKEN"], "remote": "origin"})
    (root / "lab.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git(root, "commit", "-qam", "test: a short budget, run on HF Jobs")
    subprocess.run(["git", "clone", "-q", "--bare", str(root), str(tmp_path / "remote.git")], check=True)
    git(root, "remote", "add", "origin", f"file://{tmp_path / 'remote.git'}")
    assert run_lab("validate", cwd=root).returncode == 0

    out = run_lab("-C", root, "baseline", "--repeats", "1", cwd=root, env=lab_env(hf_jobs), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    lab = Lab(root)
    [record_path] = lab.experiments.glob("*/experiment.yaml")
    record = yaml.safe_load(record_path.read_text())
    exp_id = record_path.parent.name
    [job] = jobs_of(hf_jobs, exp_id)
    assert record["status"] == "finished", record
    assert record["job"]["backend"] == "hf_jobs" and record["job"]["id"] == job.id
    assert job.secrets == {"HF_TOKEN": SECRET} and job.spec["flavor"] == "cpu-basic"
    assert (job.command + job.arguments)[-2:] == ["python", "finetune.py"]   # lab.yaml's target.command
    log = (lab.experiments / exp_id / "log.txt").read_text()
    summary = parse_summary(log)
    assert summary["steps"] == 30 and "40 eval examples, messages format" in log
    [row] = pq.read_table(lab.experiments / "scores").to_pylist()
    assert row["value"] == pytest.approx(summary["eval_score"]) and row["cost"] == pytest.approx(summary["train_seconds"])
    assert record["result"]["metrics"]["eval_loss"] == pytest.approx(summary["eval_loss"])
    losses = [r["value"] for r in pq.read_table(lab.experiments / exp_id / "metrics.parquet").to_pylist()
              if r["name"] == "loss" and not r["summary"]]
    assert len(losses) == 3   # LOGGING_STEPS = 10: steps 10, 20 and 30, streamed back from the job
    assert_no_secret(lab)
