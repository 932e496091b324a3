"""Size a fine-tune: parameters, memory per GPU, tokens, run time and cost per HF Jobs flavor.

Memory per device (what finetune.py does): weights in bf16 where the device has it, else
float32. Full: weights + grads + AdamW's two moments, all in the weights' dtype. LoRA: frozen
weights, plus the adapter in float32 with its grads and moments (16 bytes per parameter).
Activations: bf16, per token and layer 2 x (10 h + 4 i) bytes (attention in/out, norms, the
gated MLP); with gradient checkpointing only each layer's input is kept, plus one layer at a
time. TRL computes the loss without materialising all logits, so they are left out. A fixed
1 GB covers the CUDA context and allocator slack; a plan fits when it uses <= 90% of a GPU.
Time: 6 x params FLOPs per trained token (full; 4 x for LoRA, which skips the frozen weights'
gradients; +2 x with checkpointing's recomputation) at the flavor's peak x mfu; cost adds the
table's startup minutes (image, install, model download) to every run.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LabError
from ..files.yamlio import parse_yaml, read_text

DATA = Path(__file__).resolve().parent.parent / "data"
FLAVORS_PATH = DATA / "hf-jobs-flavors.yaml"
MODELS_PATH = DATA / "model-configs.yaml"
BUILTIN_MODEL = "tiny-qwen3"
BUILTIN_VOCAB = 261  # 256 bytes + 5 chat tokens
OVERHEAD_GB = 1.0
USABLE = 0.9
CPU_MAX_HOURS = 1.0  # a CPU flavor is proposed only for runs known to be shorter than this


@dataclass
class Shape:
    """The parts of a decoder's config.json that its size depends on."""
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    experts: int = 1

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        cfg = cfg.get("text_config") or cfg
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 1)
        inter = cfg.get("moe_intermediate_size") if experts > 1 else None
        return cls(vocab=int(cfg["vocab_size"]), hidden=hidden,
                   intermediate=int(inter or cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]),
                   heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads),
                   head_dim=int(cfg.get("head_dim") or hidden // heads),
                   tied=bool(cfg.get("tie_word_embeddings", True)), experts=experts)

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block, by module name."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> int:
        mlp = {"gate_proj", "up_proj", "down_proj"}
        block = sum(a * b * (self.experts if name in mlp else 1) for name, (a, b) in self.linears().items())
        block += 2 * self.hidden + 2 * self.head_dim + (self.hidden * self.experts if self.experts > 1 else 0)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * block + self.hidden

    def lora_params(self, rank: int, targets: str) -> int:
        names = set(self.linears()) if targets == "all-linear" else {t.strip() for t in targets.split(",")}
        per_block = sum(rank * (a + b) for name, (a, b) in self.linears().items() if name in names)
        return self.layers * per_block


# -- where a model's shape comes from ----------------------------------------------------------------
def known_models() -> dict[str, dict]:
    data, _ = parse_yaml(read_text(MODELS_PATH), str(MODELS_PATH))
    return data["models"]


def model_shape(plan: dict, offline: bool) -> tuple[Shape | None, str]:
    """(shape, where it came from); (None, why) when it cannot be known here."""
    name = str(plan.get("MODEL"))
    if name == BUILTIN_MODEL:
        hidden, heads = int(plan.get("TINY_HIDDEN") or 128), int(plan.get("TINY_HEADS") or 4)
        return Shape(BUILTIN_VOCAB, hidden, 4 * hidden, int(plan.get("TINY_LAYERS") or 4), heads, heads // 2,
                     hidden // heads, True), "built-in tiny Qwen3"
    local = Path(name) / "config.json"
    config = str(local) if local.is_file() else _hub_config(name, offline)
    if config:
        return Shape.from_config(json.loads(read_text(Path(config)))), config
    if name in known_models():
        return Shape.from_config(known_models()[name]), "runner/data/model-configs.yaml"
    why = "offline and not cached" if offline else "not found on the Hub"
    return None, (f"the size of {name} is unknown ({why}, not in runner/data/model-configs.yaml): "
                  "pass --params N (e.g. --params 8e9)")


def _hub_config(name: str, offline: bool) -> str | None:
    if "/" not in name or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return cached
        return None if offline else hf_hub_download(name, "config.json", etag_timeout=10)
    except Exception:  # no network, a gated or missing repo: fall back to the table
        return None


# -- memory, tokens, time ---------------------------------------------------------------------------------
@dataclass
class Memory:
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    total_gb: float

    def to_dict(self) -> dict:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def memory(params: int, shape: Shape | None, plan: dict, method: str, bf16: bool, gpu: bool) -> Memory:
    """Memory per device for one micro-batch of BATCH_SIZE x MAX_LENGTH tokens."""
    width = 2 if bf16 else 4
    if method == "lora":
        adapter = _adapter_params(params, shape, plan)
        weights = params * width + adapter * 4
        grads, optimizer = adapter * 4, adapter * 8
    else:
        weights, grads, optimizer = params * width, params * width, 2 * params * width
    activations = _activations(shape, params, plan, width, gpu)
    overhead = OVERHEAD_GB * 1e9 if gpu else 0.0
    gb = [x / 1e9 for x in (weights, grads, optimizer, activations, overhead)]
    return Memory(*gb, total_gb=sum(gb))


def _adapter_params(params: int, shape: Shape | None, plan: dict) -> int:
    rank = int(plan.get("LORA_R") or 16)
    if shape is not None:
        return shape.lora_params(rank, str(plan.get("LORA_TARGETS") or "all-linear"))
    return int(params * rank * 0.00033)  # all-linear adapters of Llama-like models: ~0.53% at rank 16


def _activations(shape: Shape | None, params: int, plan: dict, width: int, gpu: bool) -> float:
    tokens = int(plan.get("BATCH_SIZE") or 1) * int(plan.get("MAX_LENGTH") or 1024)
    if shape is None:  # a Llama-like guess: h ~ sqrt(params / 150), i ~ 3.5 h, layers ~ params / (12 h^2)
        hidden = math.sqrt(params / 150)
        shape = Shape(0, int(hidden), int(3.5 * hidden), max(1, int(params / (12 * hidden ** 2))), 1, 1, 1, True)
    per_layer = width * (10 * shape.hidden + 4 * shape.intermediate)
    if gpu and plan.get("GRADIENT_CHECKPOINTING", True):
        return tokens * (shape.layers * width * shape.hidden + per_layer)
    return tokens * shape.layers * per_layer


def trained_tokens(plan: dict, rows: int | None, chars: float | None, chars_per_token: float) -> float | None:
    """Tokens the run trains on (all epochs), or None when the data set's size is unknown."""
    max_length = int(plan.get("MAX_LENGTH") or 1024)
    per_example = min(max_length, (chars or 4 * max_length) / chars_per_token)
    steps = int(plan.get("MAX_STEPS") or -1)
    if steps > 0:
        per_row = max_length if plan.get("PACKING") else per_example
        return steps * int(plan.get("BATCH_SIZE") or 1) * int(plan.get("GRAD_ACCUM") or 1) * per_row
    if not rows:
        return None
    used = min(rows, int(plan.get("TRAIN_SAMPLES") or 0) or rows)
    return used * per_example * float(plan.get("EPOCHS") or 1)


def flops_per_token(params: int, method: str, checkpointing: bool) -> float:
    return (4 if method == "lora" else 6) * params + (2 * params if checkpointing else 0)


# -- flavors ----------------------------------------------------------------------------------------------
def load_flavors(path: Path | None = None) -> dict:
    path = Path(path) if path else FLAVORS_PATH
    data, lines = parse_yaml(read_text(path), str(path))
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), list):
        raise LabError("expected a mapping with a list under 'flavors'", str(path), "flavors")
    needed = {"name", "gpus", "vram_gb", "ram_gb", "usd_per_hour", "tflops", "bf16"}
    for index, flavor in enumerate(data["flavors"]):
        missing = sorted(needed - set(flavor)) if isinstance(flavor, dict) else sorted(needed)
        if missing:
            raise LabError(f"flavor is missing {', '.join(missing)}", str(path), f"flavors[{index}]",
                           lines.get(f"flavors[{index}]"))
    return data


@dataclass
class Fit:
    flavor: str
    fits: bool
    memory_gb: float         # needed per device
    capacity_gb: float       # usable per device
    hours: float | None
    cost: float | None

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("memory_gb", "capacity_gb", "hours", "cost"):
            out[key] = None if out[key] is None else round(out[key], 4 if key == "hours" else 2)
        return out


def fit(flavor: dict, mfu: float, params: int, shape: Shape | None, plan: dict, tokens: float | None,
        startup_minutes: float = 0.0) -> Fit:
    """Does the plan fit this flavor, and how long and how much would it take there."""
    gpu = flavor["gpus"] > 0
    bf16 = bool(flavor["bf16"]) and gpu
    need = memory(params, shape, plan, str(plan.get("METHOD")), bf16, gpu).total_gb
    capacity = (flavor["vram_gb"] if gpu else flavor["ram_gb"]) * USABLE
    hours = cost = None
    if tokens is not None:
        checkpointing = gpu and bool(plan.get("GRADIENT_CHECKPOINTING", True))
        flops = tokens * flops_per_token(params, str(plan.get("METHOD")), checkpointing)
        hours = flops / (flavor["tflops"] * 1e12 * mfu * max(1, flavor["gpus"])) / 3600
        cost = (hours + startup_minutes / 60) * flavor["usd_per_hour"]
    fits = need <= capacity and (gpu or (hours is not None and hours <= CPU_MAX_HOURS))
    return Fit(flavor["name"], fits, need, capacity, hours, cost)


def chars_per_token(model: str) -> float:
    return 1.0 if model == BUILTIN_MODEL else 4.0  # bytes for the built-in tokenizer; ~4 for BPE on English/code
