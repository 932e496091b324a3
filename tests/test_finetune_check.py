"""`lab finetune check`: the preflight through the real CLI, and the sizing rules it relies on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.finetune import data, sizing, template
from runner.state.params import apply_params

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "runner" / "templates" / "finetune" / "finetune.py"
CHAT = [{"role": "user", "content": "reverse abc"}, {"role": "assistant", "content": "cba"}]


def check(cwd: Path, run_lab, *args: str):
    done = run_lab("finetune", "check", *args, cwd=cwd, env={"HF_HUB_OFFLINE": "1"})
    return done, (json.loads(done.stdout) if "--json" in args and done.stdout.strip() else None)


def plan_with(tmp_path: Path, **params) -> Path:
    script = tmp_path / "finetune.py"
    script.write_text(apply_params(SCRIPT.read_text(), params, "finetune.py"))
    return script


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# -- through the CLI ---------------------------------------------------------------------------------
def test_good_local_data_is_described_and_fits_a_cpu(tmp_path, run_lab):
    rows = write_jsonl(tmp_path / "chats.jsonl", [{"messages": CHAT, "id": i} for i in range(50)])
    plan_with(tmp_path, DATASET=str(rows))
    done, report = check(tmp_path, run_lab, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["ok"] and report["problems"] == []
    assert report["data"]["format"] == "messages" and report["data"]["mapping"] == {"messages": "messages"}
    assert report["data"]["rows"] == 50 and report["data"]["columns"] == ["messages", "id"]
    assert report["template"]["has_markers"] is True
    assert report["template"]["rendered"] == "<|user|>reverse abc<|end|><|assistant|>cba<|end|>"
    assert report["model"]["params"] == 1_017_856  # the built-in model's real count (test_finetune checks it)
    assert report["choice"]["flavor"] == "cpu-basic" and report["choice"]["fits"]
    human, _ = check(tmp_path, run_lab)
    assert human.returncode == 0 and "format messages (messages -> messages)" in human.stdout
    assert "ok: the plan can run" in human.stdout


def test_wrong_columns_are_refused_with_the_constants_to_set(tmp_path, run_lab):
    rows = write_jsonl(tmp_path / "qa.jsonl", [{"question": "reverse abc", "answer": "cba"}] * 5)
    plan_with(tmp_path, DATASET=str(rows))
    done, report = check(tmp_path, run_lab, "--json")
    assert done.returncode == 1
    assert not report["ok"] and report["data"]["status"] == "error"
    assert "PROMPT_COLUMN = 'question' and COMPLETION_COLUMN = 'answer'" in report["problems"][0]
    fixed, report = check(tmp_path, run_lab, "--json", "--set", "PROMPT_COLUMN=question",
                          "--set", "COMPLETION_COLUMN=answer")
    assert fixed.returncode == 0 and report["data"]["format"] == "prompt-completion"
    assert report["template"]["status"] == "unused"


def test_malformed_messages_are_refused(tmp_path, run_lab):
    rows = write_jsonl(tmp_path / "bad.jsonl", [{"messages": CHAT}, {"messages": [{"role": "human", "content": "x"}]}])
    done, _ = check(tmp_path, run_lab, "--dataset", str(rows))
    assert done.returncode == 1
    assert "row 1: column 'messages' (messages): unknown role 'human'" in done.stderr


def test_a_plan_too_big_for_its_flavor_is_refused(tmp_path, run_lab):
    done, report = check(tmp_path, run_lab, "--json", "--model", "Qwen/Qwen3-8B", "--method", "full",
                         "--flavor", "a10g-large")
    assert done.returncode == 1
    assert report["model"]["params"] == pytest.approx(8.19e9, rel=0.01)
    problem = report["problems"][0]
    assert problem.startswith("full fine-tune of Qwen/Qwen3-8B needs ~") and "a10g-large offers 21.6 GB" in problem
    assert 'METHOD = "lora" needs' in problem
    lora, report = check(tmp_path, run_lab, "--json", "--model", "Qwen/Qwen3-8B", "--method", "lora",
                         "--flavor", "l40sx1")
    assert lora.returncode == 0 and report["choice"]["memory_gb"] < 43.2


def test_hub_data_offline_is_not_checked_but_says_so(tmp_path, run_lab):
    done, report = check(tmp_path, run_lab, "--json", "--model", "Qwen/Qwen3-0.6B", "--dataset",
                         "open-r1/codeforces-cots", "--config", "solutions_py")
    assert done.returncode == 0
    assert report["data"]["status"] == "unknown"
    assert any(n.startswith("data: offline (HF_HUB_OFFLINE is set)") for n in report["notes"])
    assert report["choice"]["flavor"] == "l40sx1"  # the cheapest compute that fits, as the run's length is unknown


def test_a_template_without_markers_is_refused_for_assistant_only_loss(tmp_path, run_lab):
    model = tmp_path / "model"
    model.mkdir()
    config = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}
    (model / "config.json").write_text(json.dumps(config))
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"}))
    done, report = check(tmp_path, run_lab, "--json", "--model", str(model))
    assert done.returncode == 1
    assert report["template"]["has_markers"] is False and report["template"]["rendered"].startswith("user: ")
    assert "no {% generation %} markers" in report["problems"][0]
    relaxed, _ = check(tmp_path, run_lab, "--json", "--model", str(model), "--set", "ASSISTANT_ONLY_LOSS=False")
    assert relaxed.returncode == 0


def test_a_broken_plan_or_flavor_table_is_one_line_naming_the_file(tmp_path, run_lab):
    (tmp_path / "finetune.py").write_text("MODEL = 'x'\nMETHOD = (\n")
    broken = run_lab("finetune", "check", cwd=tmp_path)
    assert broken.returncode == 2 and broken.stderr.startswith("error: finetune.py:2: -: not valid Python")
    plan_with(tmp_path, METHOD="qlora")
    method = run_lab("finetune", "check", cwd=tmp_path)
    assert method.returncode == 2 and "finetune.py: METHOD: METHOD = 'qlora': choose full or lora" in method.stderr
    plan_with(tmp_path)
    table = tmp_path / "flavors.yaml"
    table.write_text("flavors:\n  - {name: tiny, gpus: 1}\n")
    bad = run_lab("finetune", "check", "--flavors", str(table), cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert f"{table}:2: flavors[0]: flavor is missing bf16, ram_gb, tflops, usd_per_hour, vram_gb" in bad.stderr
    unknown = run_lab("finetune", "check", "--flavor", "h100-imaginary", cwd=tmp_path)
    assert unknown.returncode == 2 and "flavor: unknown flavor 'h100-imaginary' (have: cpu-basic" in unknown.stderr


def test_printed_submit_line_is_accepted_by_hf_jobs(tmp_path, run_lab):
    """The `hf jobs uv run` line the check prints is valid for the hf CLI (its --dry-run is offline)."""
    hf = Path(sys.executable).parent / "hf"
    if not hf.exists():
        pytest.skip("the hf CLI (huggingface_hub) is not installed beside this Python")
    plan_with(tmp_path)
    done, _ = check(tmp_path, run_lab)
    line = next(x for x in done.stdout.splitlines() if x.startswith("flavor: "))
    argv = line.split("; ", 1)[1].split()
    assert argv[:3] == ["hf", "jobs", "uv"]
    dry = subprocess.run([str(hf), *argv[1:4], "--dry-run", *argv[4:]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "flavor   cpu-basic" in dry.stdout and "Job not submitted" in dry.stdout


# -- the rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, published", [("Qwen/Qwen3-0.6B", 0.596e9), ("Qwen/Qwen3-8B", 8.19e9),
                                             ("meta-llama/Llama-3.1-8B", 8.03e9),
                                             ("HuggingFaceTB/SmolLM2-135M", 134.5e6)])
def test_parameter_counts_match_the_published_sizes(name, published):
    shape = sizing.Shape.from_config(sizing.known_models()[name])
    assert shape.params() == pytest.approx(published, rel=0.005)


def test_memory_rules():
    shape = sizing.Shape.from_config(sizing.known_models()["Qwen/Qwen3-8B"])
    plan = {"BATCH_SIZE": 1, "MAX_LENGTH": 1024, "LORA_R": 16, "LORA_TARGETS": "all-linear"}
    full = sizing.memory(shape.params(), shape, plan, "full", bf16=True, gpu=True)
    assert full.weights_gb == pytest.approx(2 * 8.19, rel=0.01) and full.optimizer_gb == 2 * full.grads_gb
    fp32 = sizing.memory(shape.params(), shape, plan, "full", bf16=False, gpu=True)
    assert fp32.weights_gb == pytest.approx(2 * full.weights_gb)
    lora = sizing.memory(shape.params(), shape, plan, "lora", bf16=True, gpu=True)
    adapter = shape.lora_params(16, "all-linear")
    assert adapter == 36 * 16 * (2 * 4096 + 2 * (4096 + 1024) + 2 * 4096 + 3 * (4096 + 12288))
    assert lora.grads_gb == pytest.approx(adapter * 4 / 1e9) and lora.total_gb < full.total_gb / 3
    longer = sizing.memory(shape.params(), shape, {**plan, "MAX_LENGTH": 4096}, "full", bf16=True, gpu=True)
    assert longer.activations_gb == pytest.approx(4 * full.activations_gb)


def test_flavor_table_matches_the_hf_cli():
    table = sizing.load_flavors()
    names = [f["name"] for f in table["flavors"]]
    assert {"cpu-basic", "t4-small", "l4x1", "a10g-large", "a100-large", "h200", "h200x8"} <= set(names)
    assert table["source"].startswith("https://huggingface.co/docs/hub/jobs-pricing") and table["read"]
    try:
        from huggingface_hub import JobHardware
    except ImportError:
        pytest.skip("this huggingface_hub does not list Jobs hardware")
    known = {h.value for h in JobHardware}
    assert set(names) <= known, set(names) - known


def test_format_detection_follows_the_script_s_precedence():
    plan = {"MESSAGES_COLUMN": "messages", "PROMPT_COLUMN": "prompt", "COMPLETION_COLUMN": "completion",
            "TEXT_COLUMN": "text"}
    assert data.detect_format(["text", "messages"], plan)[0] == "messages"
    assert data.detect_format(["prompt", "completion", "text"], plan)[0] == "prompt-completion"
    assert data.detect_format(["prompt", "text"], plan)[0] == "text"
    assert data.detect_format(["prompt"], plan) == (None, {})


def test_trl_knows_the_qwen3_template():
    trl = pytest.importorskip("trl")
    qwen3 = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    assert template.trl_training_template(qwen3) == "qwen3_training.jinja"
    assert template.trl_training_template("{{ messages }}") is None


def test_local_parquet_and_csv_files_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    plan = {**check_defaults(), "DATASET": str(tmp_path / "chats.parquet")}
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT, "source": "x"}] * 7), plan["DATASET"])
    info = data.inspect(plan)
    assert (info.status, info.format, info.rows, info.columns) == ("ok", "messages", 7, ["messages", "source"])
    (tmp_path / "qa.csv").write_text("prompt,completion\nadd 2+3,5\nsort 321,123\n")
    info = data.inspect({**plan, "DATASET": str(tmp_path / "qa.csv")})
    assert (info.status, info.format, info.rows) == ("ok", "prompt-completion", 2)
    assert info.sample == {"prompt": "add 2+3", "completion": "5"}


def test_a_hub_card_gives_columns_rows_and_config_errors():
    card = [{"config_name": "solutions", "features": [{"name": "id", "dtype": "string"}],
             "splits": [{"name": "train", "num_examples": 47800, "num_bytes": 4.8e9}]},
            {"config_name": "solutions_py", "features": [{"name": "id", "dtype": "string"},
                                                         {"name": "messages", "list": [{"name": "role"}]}],
             "splits": [{"name": "train", "num_examples": 9556, "num_bytes": 4.1e8}]}]
    plan = {**check_defaults(), "DATASET_CONFIG": "solutions_py"}
    info = data._from_card("open-r1/codeforces-cots", card, plan)
    assert (info.status, info.format, info.rows) == ("ok", "messages", 9556)
    assert info.chars_per_example == pytest.approx(4.1e8 / 9556)
    missing = data._from_card("open-r1/codeforces-cots", card, {**plan, "DATASET_CONFIG": None})
    assert missing.status == "error" and "has configs solutions, solutions_py" in missing.message
    wrong = data._from_card("open-r1/codeforces-cots", card, {**plan, "DATASET_CONFIG": "solutions"})
    assert wrong.status == "error" and "columns ['id'] match none" in wrong.message


def check_defaults() -> dict:
    from runner.finetune.check import DEFAULTS
    return dict(DEFAULTS)
