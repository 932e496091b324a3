# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "torch>=2.4",
#     "transformers>=5.24",
#     "trl>=1.16",
#     "datasets>=5.2",
#     "peft>=0.21",
#     "accelerate>=1.15",
#     "trackio>=0.43",
# ]
# ///
"""Supervised fine-tuning with TRL's SFTTrainer: benchlab's `finetune` target.

Prints `eval_loss: <x>` (completion-only loss on held-out data, lower is better) and
`eval_score: <x>` (exact-match accuracy of greedy answers, higher is better) as its last
lines. Recipe knobs are the top-level constants, one per line. Env: LAB_SEED, LAB_MAX_STEPS
(smoke runs; 0 evaluates the model as loaded), LAB_METRICS (JSON lines per logged step),
LAB_EXPERIMENT (named in the model card).
Data: a Hub id or a local path (.jsonl/.json/.parquet/.csv or a folder of them) in one of
three formats: `messages` (conversations; loss on assistant turns only), prompt/completion
(loss on the completion only) or plain `text` (loss everywhere).
Built-in default (no download): MODEL = "tiny-qwen3" is a 4-layer Qwen3 (1M parameters) with
random weights and a byte-level tokenizer made here; DATASET = "tiny-tasks" is a generated set
of short tasks with checkable answers (reverse, sort, add, uppercase). Its recipe: a full
fine-tune, AdamW at 5e-4 (a model trained from scratch takes more than the ~2e-5 of a
pretrained one), 10% warmup then cosine, 16 examples per step, 2 epochs (500 steps): ~50 s of
CPU on one thread, eval_score 0.35 +- 0.03 over 3 seeds. The real thing is the same code:
MODEL = "Qwen/Qwen3-0.6B", DATASET = "open-r1/codeforces-cots", DATASET_CONFIG = "solutions_py".
Output: OUTPUT_DIR holds the model (or LoRA adapter), tokenizer and a README.md model card;
with HUB_MODEL_ID set, the folder is pushed to the Hub.
"""
import json
import math
import os
import random
import sys
import time

import torch

MODEL = "tiny-qwen3"  # a Hub id, a local folder, or "tiny-qwen3" (built in)
DATASET = "tiny-tasks"  # a Hub id, a local file or folder, or "tiny-tasks" (built in)
DATASET_CONFIG = None  # the Hub dataset's config (subset), e.g. "solutions_py"
TRAIN_SPLIT = "train"
EVAL_SPLIT = None  # None: hold out EVAL_HOLDOUT examples of TRAIN_SPLIT (fixed, independent of SEED)
EVAL_HOLDOUT = 200
MESSAGES_COLUMN = "messages"  # column mapping: the data set's names for each field
PROMPT_COLUMN = "prompt"
COMPLETION_COLUMN = "completion"
TEXT_COLUMN = "text"
TRAIN_SAMPLES = 0  # use the first N training examples after shuffling; 0 = all
METHOD = "full"  # full | lora
LEARNING_RATE = 5e-4
LR_SCHEDULER = "cosine"  # linear | cosine | constant_with_warmup | ...
WARMUP_RATIO = 0.1  # fraction of the steps spent warming up, in [0, 1)
WEIGHT_DECAY = 0.0
EPOCHS = 2.0
MAX_STEPS = -1  # > 0 overrides EPOCHS; 0 only evaluates the model as loaded
BATCH_SIZE = 16  # per device
GRAD_ACCUM = 1
MAX_LENGTH = 128  # tokens per sequence (and per packed block)
PACKING = False
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.05
LORA_TARGETS = "all-linear"  # or module names, e.g. "q_proj,v_proj"
ASSISTANT_ONLY_LOSS = True  # messages data: loss on assistant turns only (template needs {% generation %})
GRADIENT_CHECKPOINTING = True  # on a GPU only
SEED = 42
EVAL_SAMPLES = 200  # held-out examples answered greedily for eval_score; 0 skips it
MAX_NEW_TOKENS = 32  # longest generated answer for eval_score
LOGGING_STEPS = 10
REPORT_TO = "none"  # none | trackio
OUTPUT_DIR = "finetune-output"
HUB_MODEL_ID = None  # e.g. "me/qwen3-0.6b-codeforces": push the output folder when set
TINY_LAYERS = 4  # the built-in model (MODEL = "tiny-qwen3")
TINY_HIDDEN = 128
TINY_HEADS = 4
TINY_TRAIN_EXAMPLES = 4000  # the built-in data set
DATA_VERSION = 1  # bump when the built-in data recipe changes

BUILTIN_MODEL, BUILTIN_DATA = "tiny-qwen3", "tiny-tasks"
SPECIALS = ["<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{%- else -%}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}")


# -- the built-in tiny model, tokenizer and data set ---------------------------------------------
def tiny_tokenizer():
    """Byte-level: one token per UTF-8 byte, plus the chat's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|end|>", pad_token="<|pad|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[2:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(tokenizer):
    """A small Qwen3 with random weights (the seed decides them)."""
    from transformers import AutoModelForCausalLM, Qwen3Config
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS, num_attention_heads=TINY_HEADS, num_key_value_heads=TINY_HEADS // 2,
        head_dim=TINY_HIDDEN // TINY_HEADS, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config)


def tiny_example(rng):
    """One (prompt, answer) pair of a task whose answer can be checked exactly."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    task = rng.choice(["reverse", "sort", "add", "upper"])
    if task == "reverse":
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 6)))
        return f"reverse {word}", word[::-1]
    if task == "sort":
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 6)))
        return f"sort {digits}", "".join(sorted(digits))
    if task == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return f"add {a}+{b}", str(a + b)
    word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 6)))
    return f"upper {word}", word.upper()


def tiny_tasks():
    """(train, eval) lists of {"messages": [...]}: deterministic, no prompt in both splits."""
    rng = random.Random(f"tiny-tasks-{DATA_VERSION}")
    pairs = {}
    while len(pairs) < TINY_TRAIN_EXAMPLES + EVAL_HOLDOUT:
        prompt, answer = tiny_example(rng)
        pairs.setdefault(prompt, answer)
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
            for p, a in pairs.items()]
    return rows[EVAL_HOLDOUT:], rows[:EVAL_HOLDOUT]


# -- data ------------------------------------------------------------------------------------------
def load_any(name, split):
    """A split of a Hub data set or of local files (jsonl/json/parquet/csv, or a folder of them)."""
    from datasets import load_dataset
    if os.path.isfile(name):
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(
            os.path.splitext(name)[1].lower())
        if kind is None:
            sys.exit(f"error: {name}: use a .jsonl, .json, .parquet or .csv file")
        return load_dataset(kind, data_files={split: name}, split=split)
    return load_dataset(name, DATASET_CONFIG, split=split)


def to_format(dataset):
    """Rename the mapped columns to TRL's names and drop the rest; return (dataset, format)."""
    columns = dataset.column_names
    if MESSAGES_COLUMN in columns:
        wanted, fmt = {MESSAGES_COLUMN: "messages"}, "messages"
    elif PROMPT_COLUMN in columns and COMPLETION_COLUMN in columns:
        wanted, fmt = {PROMPT_COLUMN: "prompt", COMPLETION_COLUMN: "completion"}, "prompt-completion"
    elif TEXT_COLUMN in columns:
        wanted, fmt = {TEXT_COLUMN: "text"}, "text"
    else:
        sys.exit(f"error: {DATASET} has columns {columns}; none matches MESSAGES_COLUMN={MESSAGES_COLUMN!r}, "
                 f"PROMPT_COLUMN/COMPLETION_COLUMN={PROMPT_COLUMN!r}/{COMPLETION_COLUMN!r} or "
                 f"TEXT_COLUMN={TEXT_COLUMN!r}")
    dataset = dataset.select_columns(list(wanted))
    for old, new in wanted.items():
        if old != new:
            dataset = dataset.rename_column(old, new)
    return dataset, fmt


def load_data():
    """(train, eval, format): the eval split is fixed whatever the SEED."""
    from datasets import Dataset
    if DATASET == BUILTIN_DATA:
        train, held = tiny_tasks()
        return Dataset.from_list(train), Dataset.from_list(held), "messages"
    train = load_any(DATASET, TRAIN_SPLIT)
    if EVAL_SPLIT:
        held = load_any(DATASET, EVAL_SPLIT)
        held = held.select(range(min(EVAL_HOLDOUT, len(held))))
    else:
        parts = train.train_test_split(test_size=EVAL_HOLDOUT, seed=0)
        train, held = parts["train"], parts["test"]
    if TRAIN_SAMPLES:
        train = train.shuffle(seed=0).select(range(min(TRAIN_SAMPLES, len(train))))
    (train, fmt), (held, _) = to_format(train), to_format(held)
    return train, held, fmt


# -- model -----------------------------------------------------------------------------------------
def native_bf16(device):
    """bf16 in hardware (Ampere and newer); a T4 only emulates it, slowly, so it trains in float32."""
    return device == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def load_model(device):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if MODEL == BUILTIN_MODEL:
        tokenizer = tiny_tokenizer()
        return tiny_model(tokenizer), tokenizer
    dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    return AutoModelForCausalLM.from_pretrained(MODEL, dtype=dtype), tokenizer


def peft_config():
    if METHOD == "full":
        return None
    from peft import LoraConfig
    targets = LORA_TARGETS if LORA_TARGETS == "all-linear" else [t.strip() for t in LORA_TARGETS.split(",")]
    return LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=targets,
                      task_type="CAUSAL_LM")


# -- training --------------------------------------------------------------------------------------
def metric_stream():
    """A TrainerCallback appending each log (loss, lr, grad_norm, epoch) to $LAB_METRICS as a JSON line."""
    from transformers import TrainerCallback
    path, started = os.environ.get("LAB_METRICS"), time.time()

    class Stream(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not path or not logs or "loss" not in logs:
                return
            record = {"step": state.global_step, "time_s": round(time.time() - started, 3),
                      "loss": logs["loss"], "lr": logs.get("learning_rate"),
                      "grad_norm": logs.get("grad_norm"), "epoch": logs.get("epoch")}
            with open(path, "a") as handle:
                handle.write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")

    return Stream()


def sft_config(device, seed, fmt, steps):
    from trl import SFTConfig
    gpu = device == "cuda"
    return SFTConfig(
        output_dir=OUTPUT_DIR, learning_rate=LEARNING_RATE, lr_scheduler_type=LR_SCHEDULER,
        warmup_steps=WARMUP_RATIO, weight_decay=WEIGHT_DECAY, num_train_epochs=EPOCHS, max_steps=steps or -1,
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=GRAD_ACCUM, max_length=MAX_LENGTH, packing=PACKING, eval_packing=False,
        assistant_only_loss=ASSISTANT_ONLY_LOSS and fmt == "messages",
        completion_only_loss=fmt == "prompt-completion" or None,
        bf16=native_bf16(device), activation_checkpointing=gpu and GRADIENT_CHECKPOINTING,
        use_cpu=not gpu, seed=seed, data_seed=seed, logging_steps=LOGGING_STEPS,
        report_to="trackio" if REPORT_TO == "trackio" else "none", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0)


# -- evaluation ------------------------------------------------------------------------------------
def prompt_and_answer(example, fmt):
    """(chat or text prompt, reference answer) for exact-match scoring; None for plain text."""
    if fmt == "messages":
        messages = example["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            return None
        return messages[:-1], messages[-1]["content"]
    if fmt == "prompt-completion":
        completion = example["completion"]
        answer = completion[-1]["content"] if isinstance(completion, list) else completion
        return example["prompt"], answer
    return None


@torch.no_grad()
def exact_match(model, tokenizer, held, fmt, device):
    """Share of EVAL_SAMPLES held-out prompts whose greedy answer equals the reference (stripped)."""
    pairs = [p for p in (prompt_and_answer(e, fmt) for e in held.select(range(min(EVAL_SAMPLES, len(held)))))
             if p is not None]
    if not pairs:
        return float("nan")
    model.eval()
    tokenizer.padding_side = "left"
    hits = 0
    for start in range(0, len(pairs), 32):
        chunk = pairs[start:start + 32]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 if isinstance(p, list) else p for p, _ in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += sum(got.strip() == want.strip() for got, (_, want) in zip(answers, chunk))
    return hits / len(pairs)


# -- the model card --------------------------------------------------------------------------------
RECIPE = ["METHOD", "LEARNING_RATE", "LR_SCHEDULER", "WARMUP_RATIO", "WEIGHT_DECAY", "EPOCHS", "MAX_STEPS",
          "BATCH_SIZE", "GRAD_ACCUM", "MAX_LENGTH", "PACKING", "LORA_R", "LORA_ALPHA", "LORA_DROPOUT",
          "LORA_TARGETS", "ASSISTANT_ONLY_LOSS", "TRAIN_SAMPLES", "SEED"]


def hub_id(name):
    """The name if it can be a Hub repo id (not built in, not a local path), else None."""
    return None if name in (BUILTIN_MODEL, BUILTIN_DATA) or os.path.exists(name) else name


def card_header(fmt):
    base, data = hub_id(MODEL), hub_id(DATASET)
    meta = ([f"base_model: {base}"] if base else []) + ([f"datasets: [{data}]"] if data else [])
    meta += [f"library_name: {'peft' if METHOD == 'lora' else 'transformers'}", "pipeline_tag: text-generation",
             "tags: [trl, sft, benchlab]"]
    title = HUB_MODEL_ID or os.path.basename(os.path.abspath(OUTPUT_DIR))
    what = (f"A {'LoRA adapter' if METHOD == 'lora' else 'full fine-tune'} of `{MODEL}` on `{DATASET}`"
            + (f" (config `{DATASET_CONFIG}`)" if DATASET_CONFIG else "")
            + f", {fmt} format, trained with TRL's SFTTrainer by benchlab's finetune.py.")
    return ["---", *meta, "---", "", f"# {title}", "", what, ""]


def card_usage():
    loader = "peft import AutoPeftModelForCausalLM as Model" if METHOD == "lora" else \
        "transformers import AutoModelForCausalLM as Model"
    return ["## Use", "", "```python", f"from {loader}", "from transformers import AutoTokenizer", "",
            f'model = Model.from_pretrained("{HUB_MODEL_ID or OUTPUT_DIR}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{HUB_MODEL_ID or OUTPUT_DIR}")', "```", ""]


def model_card(summary, fmt, hardware, seed):
    """README.md of the output folder: what was trained on what, the recipe, the scores, how to load it."""
    lines = card_header(fmt)
    if os.environ.get("LAB_EXPERIMENT"):
        lines += [f"benchlab experiment: `{os.environ['LAB_EXPERIMENT']}`", ""]
    lines += ["## Recipe", "", "| constant | value |", "| --- | --- |"]
    lines += [f"| {name} | {seed if name == 'SEED' else globals()[name]} |" for name in RECIPE]
    lines += ["", "## Results", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in summary.items()]
    lines += ["", f"Hardware: {hardware}.", "",
              "eval_loss is the completion-only loss on the held-out split; eval_score the exact-match "
              "accuracy of greedy answers on its first EVAL_SAMPLES examples.", ""]
    return "\n".join(lines + card_usage())


def push(folder):
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(HUB_MODEL_ID, exist_ok=True)
    api.upload_folder(repo_id=HUB_MODEL_ID, folder_path=folder, commit_message="benchlab finetune.py")
    print(f"pushed to https://huggingface.co/{HUB_MODEL_ID}", flush=True)


# -- main ------------------------------------------------------------------------------------------
def check_config():
    if METHOD not in ("full", "lora"):
        sys.exit(f"error: METHOD = {METHOD!r}: choose full or lora")
    if not 0 <= WARMUP_RATIO < 1:
        sys.exit(f"error: WARMUP_RATIO = {WARMUP_RATIO}: use a fraction in [0, 1)")


def fail(reason):
    print(f"error: {reason}\neval_loss: nan\neval_score: nan", flush=True)
    sys.exit(1)


def train_and_evaluate(trainer, steps):
    """(train_loss, eval_loss, train_seconds); steps == 0 evaluates the model as loaded."""
    t0, train_loss = time.time(), float("nan")
    if steps != 0:
        train_loss = trainer.train().training_loss
        if not math.isfinite(train_loss):
            fail("non-finite training loss")
    train_seconds = time.time() - t0
    eval_loss = trainer.evaluate()["eval_loss"]
    if not math.isfinite(eval_loss):
        fail("non-finite eval loss")
    return train_loss, eval_loss, train_seconds


def save(trainer, summary, fmt, hardware, seed):
    """The model (or adapter), tokenizer and model card in OUTPUT_DIR; pushed when HUB_MODEL_ID is set."""
    trainer.save_model(OUTPUT_DIR)
    with open(os.path.join(OUTPUT_DIR, "README.md"), "w") as handle:  # after save_model: replaces PEFT's stub
        handle.write(model_card(summary, fmt, hardware, seed))
    if HUB_MODEL_ID:
        push(OUTPUT_DIR)


def main():
    started = time.time()
    check_config()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # the thread limit of a CPU slot
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    import datasets
    from transformers import set_seed
    from trl import SFTTrainer
    datasets.disable_progress_bars()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seed = int(os.environ.get("LAB_SEED") or SEED)
    steps = int(os.environ.get("LAB_MAX_STEPS") or MAX_STEPS)
    set_seed(seed)
    train, held, fmt = load_data()
    model, tokenizer = load_model(device)
    print(f"data: {len(train)} train / {len(held)} eval examples, {fmt} format; model: {MODEL} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), method {METHOD}", flush=True)
    trainer = SFTTrainer(model=model, args=sft_config(device, seed, fmt, steps), train_dataset=train,
                         eval_dataset=held, processing_class=tokenizer, peft_config=peft_config(),
                         callbacks=[metric_stream()])
    train_loss, eval_loss, train_seconds = train_and_evaluate(trainer, steps)
    score = exact_match(trainer.model, tokenizer, held, fmt, device)
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    summary = {"train_loss": f"{train_loss:.6f}", "steps": trainer.state.global_step,
               "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
               "train_seconds": f"{train_seconds:.2f}", "seconds": f"{time.time() - started:.2f}",
               "cpu_seconds": f"{time.process_time():.2f}", "eval_loss": f"{eval_loss:.6f}",
               "eval_score": f"{score:.4f}"}
    save(trainer, summary, fmt, hardware, seed)
    print("\n".join(f"{name}: {value}" for name, value in summary.items()), flush=True)


if __name__ == "__main__":
    main()
