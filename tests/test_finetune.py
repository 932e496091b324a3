"""The finetune template: its lab, its ideas, and finetune.py (masking, the local-model path, a real run).

Everything runs offline (HF_HUB_OFFLINE=1): the built-in tiny Qwen3 and its data are made in code,
and the local-model test saves one to a temporary folder first.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from runner.files.metrics import parse_summary, read_stream
from runner.files.yamlio import parse_yaml
from runner.roles.ideas import applicable, load_ideas
from runner.scaffold import init_lab
from runner.state.params import apply_params, read_params
from runner.validation.validate import validate

pytest.importorskip("trl", reason="needs the finetune extra (transformers, trl, datasets, peft, accelerate)")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "runner" / "templates" / "finetune" / "finetune.py"
IDEAS = ROOT / "runner" / "data" / "ideas-finetune.yaml"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def ft():
    """finetune.py imported as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location("finetune_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path: Path, params: dict | None = None, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "finetune.py"
    script.write_text(apply_params(SCRIPT.read_text(), params or {}, "finetune.py"))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    full_env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=600)


def trainer_for(ft, rows: list[dict], fmt: str, tmp_path: Path):
    from datasets import Dataset
    from trl import SFTTrainer
    ft.OUTPUT_DIR = str(tmp_path / "out")
    tokenizer = ft.tiny_tokenizer()
    return SFTTrainer(model=ft.tiny_model(tokenizer), args=ft.sft_config("cpu", 0, fmt, 1),
                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer), tokenizer


# -- the template's lab ---------------------------------------------------------------------------
def test_lab_init_finetune_makes_a_valid_lab_that_declares_every_constant(tmp_path):
    root = init_lab(tmp_path / "lab", template="finetune")
    assert (root / "finetune.py").read_bytes() == SCRIPT.read_bytes()
    assert (root / "ideas.yaml").read_bytes() == IDEAS.read_bytes()
    assert (root / "skills" / "finetune" / "SKILL.md").is_file()
    assert "finetune-output/" in (root / ".gitignore").read_text().splitlines()
    report = validate(root)
    assert report.ok and not report.warnings, [str(p) for p in report.problems + report.warnings]
    config, _ = parse_yaml((root / "lab.yaml").read_text(), "lab.yaml")
    assert config["roles"]["researcher"]["ideas"] == "ideas.yaml" and "ideas.yaml" in config["target"]["protected"]


def test_finetune_ideas_each_change_one_declared_recipe_constant():
    ideas = load_ideas(IDEAS)
    current = read_params(SCRIPT.read_text(), "finetune.py")
    lab, _ = parse_yaml((ROOT / "runner" / "templates" / "lab-finetune.yaml").read_text().format(name="x"), "lab")
    assert len(ideas) >= 6 and applicable(ideas, current) == ideas
    for idea in ideas:
        [(name, value)] = idea.params.items()
        assert name in lab["target"]["params"] and name not in lab["target"]["frozen"], idea.id
        assert read_params(apply_params(SCRIPT.read_text(), idea.params, "finetune.py"))[name] == value


def test_the_script_s_constants_are_editable_by_the_lab():
    params = read_params(SCRIPT.read_text(), "finetune.py")
    for name in ("MODEL", "DATASET", "DATASET_CONFIG", "TRAIN_SPLIT", "EVAL_SPLIT", "METHOD", "LEARNING_RATE",
                 "EPOCHS", "MAX_STEPS", "MAX_LENGTH", "PACKING", "LORA_R", "LORA_ALPHA", "LORA_DROPOUT",
                 "BATCH_SIZE", "GRAD_ACCUM", "WARMUP_RATIO", "WEIGHT_DECAY", "LR_SCHEDULER", "SEED",
                 "HUB_MODEL_ID", "EVAL_SAMPLES", "MESSAGES_COLUMN", "PROMPT_COLUMN", "COMPLETION_COLUMN"):
        assert name in params, name
    header = SCRIPT.read_text().split("# ///")[1]
    for package in ("transformers", "trl", "datasets", "peft", "accelerate", "torch"):
        assert f'"{package}>=' in header, package


# -- masking -----------------------------------------------------------------------------------------
def test_messages_train_on_the_assistant_turn_only(ft, tmp_path):
    chat = [{"role": "user", "content": "reverse abc"}, {"role": "assistant", "content": "cba"}]
    trainer, tokenizer = trainer_for(ft, [{"messages": chat}], "messages", tmp_path)
    row = trainer.train_dataset[0]
    prompt = tokenizer(tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]
    ids, labels = row["input_ids"], row["labels"]
    assert ids[:len(prompt)] == prompt
    assert labels[:len(prompt)] == [-100] * len(prompt)          # no loss on the prompt
    assert labels[len(prompt):] == ids[len(prompt):]               # loss on the answer and its end token
    assert tokenizer.decode(ids[len(prompt):]) == "cba<|end|>"


def test_prompt_completion_masks_the_prompt_and_text_masks_nothing(ft, tmp_path):
    trainer, tokenizer = trainer_for(ft, [{"prompt": "add 2+3", "completion": "5"}], "prompt-completion", tmp_path)
    row = trainer.train_dataset[0]
    n = len(tokenizer("add 2+3", add_special_tokens=False)["input_ids"])
    assert row["labels"][:n] == [-100] * n and row["labels"][n:] == row["input_ids"][n:]
    assert tokenizer.decode(row["input_ids"][n:]) == "5<|end|>"
    trainer, _ = trainer_for(ft, [{"text": "plain text"}], "text", tmp_path / "text")
    row = trainer.train_dataset[0]
    assert row["labels"] == row["input_ids"]


def test_packed_examples_do_not_attend_to_each_other(ft, tmp_path):
    """PACKING = True on CPU: a packed row gives each example the logits it gets alone."""
    import torch
    chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
             for p, a in (("reverse abc", "cba"), ("upper xyz", "XYZ"), ("add 1+2", "3"))]
    ft.PACKING, ft.BATCH_SIZE = True, 1
    try:
        trainer, _ = trainer_for(ft, [{"messages": c} for c in chats], "messages", tmp_path)
    finally:
        ft.PACKING, ft.BATCH_SIZE = False, 16
    batch = next(iter(trainer.get_train_dataloader()))
    lengths = trainer.train_dataset[0]["seq_lengths"]
    assert batch["input_ids"].shape == (1, sum(lengths)) and len(lengths) == 3
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        start = 0
        for n in lengths:
            alone = model(input_ids=batch["input_ids"][:, start:start + n]).logits[0]
            assert torch.allclose(packed[start:start + n], alone, atol=1e-4)
            start += n


def test_builtin_data_is_deterministic_and_the_splits_are_disjoint(ft):
    train, held = ft.tiny_tasks()
    again_train, again_held = ft.tiny_tasks()
    assert (train, held) == (again_train, again_held)
    assert len(train) == ft.TINY_TRAIN_EXAMPLES and len(held) == ft.EVAL_HOLDOUT
    prompts = {row["messages"][0]["content"] for row in train}
    assert not prompts & {row["messages"][0]["content"] for row in held}
    solve = {"reverse": lambda arg: arg[::-1], "sort": lambda arg: "".join(sorted(arg)),
             "upper": str.upper, "add": lambda arg: str(sum(int(x) for x in arg.split("+")))}
    for row in held[:40]:  # every answer is the task's checkable result
        task, arg = row["messages"][0]["content"].split(" ", 1)
        assert row["messages"][1]["content"] == solve[task](arg)


def test_the_check_sizes_the_built_in_model_and_its_adapter_exactly(ft):
    """lab finetune check counts parameters from a config; here they meet the real model and PEFT's adapter."""
    from peft import LoraConfig, get_peft_model
    from runner.finetune.check import DEFAULTS
    from runner.finetune.sizing import model_shape
    plan = {**DEFAULTS, **read_params(SCRIPT.read_text(), "finetune.py")}
    shape, _ = model_shape(plan, offline=True)
    model = ft.tiny_model(ft.tiny_tokenizer())
    assert shape.params() == sum(p.numel() for p in model.parameters()) == 1_017_856
    adapted = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_params(16, "all-linear") == sum(p.numel() for p in adapted.parameters() if p.requires_grad)


# -- the Hub code path, with a local model folder and a local data file -------------------------------
def test_a_local_model_and_local_prompt_completion_data_train_with_lora(ft, tmp_path):
    import torch
    torch.manual_seed(0)
    tokenizer = ft.tiny_tokenizer()
    base = tmp_path / "base-model"
    ft.tiny_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    rng = random.Random(0)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(dict(zip(("question", "answer"), ft.tiny_example(rng)))) + "\n"
                            for _ in range(120)))
    params = {"MODEL": str(base), "DATASET": str(data), "PROMPT_COLUMN": "question", "COMPLETION_COLUMN": "answer",
              "METHOD": "lora", "EVAL_HOLDOUT": 16, "EVAL_SAMPLES": 8, "MAX_NEW_TOKENS": 8}
    proc = run_script(tmp_path, params, LAB_MAX_STEPS="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "104 train / 16 eval examples, prompt-completion format" in proc.stdout
    summary = parse_summary(proc.stdout)
    assert summary["steps"] == 2 and 0 <= summary["eval_score"] <= 1
    out = tmp_path / "finetune-output"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert f"LoRA adapter of `{base}`" in card and "library_name: peft" in card
    assert "base_model:" not in card and "datasets:" not in card  # local paths are no Hub ids
    assert "AutoPeftModelForCausalLM" in card


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_beats_the_untrained_model_and_reports_like_a_lab_target(tmp_path):
    """A short run of the built-in default: better than untrained on the held-out split, summary last,
    a metric stream, a model card. 300 steps at a constant rate: ~30 s of CPU."""
    recipe = {"LR_SCHEDULER": "constant_with_warmup", "WARMUP_RATIO": 0.1, "EVAL_SAMPLES": 100, "LOGGING_STEPS": 25}
    base, work = tmp_path / "untrained", tmp_path / "trained"
    base.mkdir()
    work.mkdir()
    untrained = run_script(base, recipe, LAB_MAX_STEPS="0")
    assert untrained.returncode == 0, untrained.stderr[-2000:]
    stream = work / "metrics.jsonl"
    trained = run_script(work, recipe, LAB_MAX_STEPS="300", LAB_SEED="3", LAB_METRICS=str(stream),
                         LAB_EXPERIMENT="e-20261130-000000-test")
    assert trained.returncode == 0, trained.stderr[-2000:]
    before, after = parse_summary(untrained.stdout), parse_summary(trained.stdout)
    assert list(after)[-2:] == ["eval_loss", "eval_score"]      # the lab's objective lines come last
    assert before["steps"] == 0 and after["steps"] == 300
    assert after["eval_loss"] < before["eval_loss"] - 2.0
    assert after["eval_score"] >= before["eval_score"] + 0.03  # 3 more exact answers of 100 (0.09 measured)
    rows = read_stream(stream)
    assert [r["step"] for r in rows] == list(range(25, 301, 25))
    assert all({"loss", "lr", "grad_norm", "epoch"} <= set(r) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    card = (work / "finetune-output" / "README.md").read_text()
    assert "e-20261130-000000-test" in card and f"| eval_score | {after['eval_score']:.4f} |" in card
    assert "| LR_SCHEDULER | constant_with_warmup |" in card and "| SEED | 3 |" in card
