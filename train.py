"""A tiny byte-level GPT: benchlab's embedded default target (prints `val_bpb: <x>`, lower is better,
and `test_bpb: <x>`, the same figure on a third split that selection never sees: the holdout).

Hyper-parameters are top-level constants, one per line, so a change is a one-line edit.
`name: value` summary lines come last; a NaN loss prints `val_bpb: nan` and exits 1. Env:
LAB_MAX_STEPS (overrides the budget's step count, for tests), LAB_TIME_BUDGET (s), LAB_SEED,
LAB_METRICS (JSON lines per step), LAB_CACHE.
Data: docstrings of this machine's Python stdlib (sorted walk; a module is held out for
validation when CRC-32(path) % 10 == 0, for the test split when it is 5), cached atomically
under $LAB_CACHE (the runner sets it to the lab's .lab/cache for jobs and agents) or
~/.cache/benchlab by a hash of the file list. Evaluation: fixed windows, independent of SEED.
Budget: a fixed number of training FLOPs (FLOP_BUDGET, CUDA_FLOP_BUDGET on a GPU), so a change
that makes a step dearer (a bigger batch, a wider or deeper model) gets fewer steps and wins only
if it wins at equal compute. FLOPs per token = 6 x the weights of every matrix multiply plus
6 x layers x context x width for attention (Kaplan et al. 2020; embedding look-ups are free);
printed as `train_flops:`. TIME_BUDGET_S is a safety cap far above the normal run time: if a
loaded machine makes it bind, the schedule follows max(step / steps, elapsed / cap) and still
anneals, and `flop_budget_used:` (steps trained / steps budgeted) prints below 1, which the lab's
constraint `flop_budget_used >= 0.99` keeps from being promoted or used as a base.
Baseline = the usual first picks for a small GPT (GPT-2/nanoGPT style): AdamW (decay 0.1 on
matrices, betas 0.9/0.99), peak LR 3e-3 (small models take more than GPT-2's 6e-4), 5%
linear warmup then cosine to 10%, clip 1.0, GELU MLP 4x, pre-LayerNorm, learned positions,
tied embeddings, no dropout (under one epoch). 2 layers x 64 wide, 8 x 64 bytes per step,
~1500 steps within the budget: here many small steps beat fewer large ones. On a 2-core CPU box,
one thread per run (`python bench/train_noise.py --seeds 2 --jobs 2 --threads 1`): 46 s a run, two
at once, at load 2-3; at load 17-24 (other work on the box) this script printed train_seconds of
191 (alone) and 217-218 (two at once), where the 180 s cap bound at 390-421 of 1500 steps.
"""
import ast
import hashlib
import json
import math
import os
import resource
import sys
import sysconfig
import tempfile
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

LEARNING_RATE = 0.003
LR_SCHEDULE = "cosine"  # cosine | linear | constant (after warmup)
WARMUP_STEPS = 75
MIN_LR_RATIO = 0.1  # final LR as a fraction of the peak
WEIGHT_DECAY = 0.1
BETA1 = 0.9
BETA2 = 0.99
GRAD_CLIP = 1.0  # max global grad norm; 0 disables
BATCH_SIZE = 8
BLOCK_SIZE = 64
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
MLP_RATIO = 4
DROPOUT = 0.0
ACTIVATION = "gelu"  # gelu | relu | silu | relu2 | swiglu
NORM = "layernorm"  # layernorm | rmsnorm
POS_ENCODING = "learned"  # learned | rope
TIE_EMBEDDINGS = True
LABEL_SMOOTHING = 0.0
SEED = 1337
FLOP_BUDGET = 5.7e11  # training FLOPs on CPU (~1500 steps of the baseline)
CUDA_FLOP_BUDGET = 2.3e12  # training FLOPs on a GPU (~6000 steps of the baseline)
TIME_BUDGET_S = 180.0  # wall-clock safety cap on training; the FLOP budget should bind
EVAL_TOKENS = 65536  # validation bytes scored (fixed windows)
CORPUS_VERSION = 2  # bump when the corpus recipe changes


def build_corpus():
    """(train, val, test) byte tensors from stdlib docstrings; cached by a hash of the file list."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3", "turtledemo"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    listing = "\n".join(f"{os.path.relpath(f, root)} {os.path.getsize(f)}" for f in files)
    key = hashlib.sha256(f"{CORPUS_VERSION}\n{sys.version}\n{listing}".encode()).hexdigest()[:16]
    cache = os.path.expanduser(os.environ.get("LAB_CACHE") or "~/.cache/benchlab")
    paths = [os.path.join(cache, f"corpus-{key}.{split}") for split in ("train", "val", "test")]
    if not all(os.path.exists(p) for p in paths):
        splits = ([], [], [])
        for f in files:
            try:
                tree = ast.parse(open(f, "rb").read())
            except (SyntaxError, ValueError):
                continue
            docs = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(
                n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            text = "".join(d + "\n\n" for d in docs if d).encode("utf-8", "replace")
            bucket = zlib.crc32(os.path.relpath(f, root).encode()) % 10
            splits[{0: 1, 5: 2}.get(bucket, 0)].append(text)
        data = [b"".join(parts) for parts in splits]
        try:
            os.makedirs(cache, exist_ok=True)
            for path, blob in zip(paths, data):
                fd, tmp = tempfile.mkstemp(dir=cache, prefix=".corpus-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(blob)
                os.replace(tmp, path)
        except OSError:  # a read-only cache (a sandboxed agent's smoke run): use the corpus uncached
            return [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in data]
    return [torch.frombuffer(bytearray(open(p, "rb").read()), dtype=torch.uint8) for p in paths]


def check_config():
    choices = {"ACTIVATION": "gelu relu silu relu2 swiglu", "NORM": "layernorm rmsnorm",
               "POS_ENCODING": "learned rope", "LR_SCHEDULE": "cosine linear constant"}
    for name, options in choices.items():
        if globals()[name] not in options.split():
            sys.exit(f"error: {name} = {globals()[name]!r}: choose one of {options}")
    if N_EMBD % (2 * N_HEAD):
        sys.exit(f"error: N_EMBD ({N_EMBD}) must be a multiple of 2 * N_HEAD ({N_HEAD})")


def make_norm():
    return nn.RMSNorm(N_EMBD, eps=1e-6) if NORM == "rmsnorm" else nn.LayerNorm(N_EMBD)


def rotate(x, cos, sin):  # rotary position embedding on (B, H, T, D)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        hidden = MLP_RATIO * N_EMBD * (2 if ACTIVATION == "swiglu" else 3) // 3  # swiglu: same parameter count
        self.norm1, self.norm2 = make_norm(), make_norm()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.proj = nn.Linear(N_EMBD, N_EMBD)
        self.fc = nn.Linear(N_EMBD, hidden * (2 if ACTIVATION == "swiglu" else 1))
        self.out = nn.Linear(hidden, N_EMBD)
        self.drop = nn.Dropout(DROPOUT)

    def mlp(self, x):
        if ACTIVATION == "swiglu":
            gate, value = self.fc(x).chunk(2, dim=-1)
            return self.out(F.silu(gate) * value)
        acts = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "relu2": lambda t: F.relu(t).square()}
        return self.out(acts[ACTIVATION](self.fc(x)))

    def forward(self, x, rope):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, N_HEAD, C // N_HEAD).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=DROPOUT if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(256, N_EMBD)
        self.pos = nn.Embedding(BLOCK_SIZE, N_EMBD) if POS_ENCODING == "learned" else None
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.norm = make_norm()
        self.head = nn.Linear(N_EMBD, 256, bias=False)
        if TIE_EMBEDDINGS:
            self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual projections scaled by depth
                std = 0.02 / math.sqrt(2 * N_LAYER) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
        half = N_EMBD // N_HEAD // 2
        freqs = torch.outer(torch.arange(BLOCK_SIZE).float(), 10000.0 ** (-torch.arange(half).float() / half))
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(self, idx):
        T = idx.size(1)
        x = self.tok(idx)
        if self.pos is not None:
            x = x + self.pos.weight[:T]
        rope = (self.cos[:T], self.sin[:T]) if POS_ENCODING == "rope" else None
        for block in self.blocks:
            x = block(x, rope)
        return self.head(self.norm(x))


def flops_per_token(model):
    """Training FLOPs per token: forward 2 + backward 4 per matmul weight, plus attention."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6 * matmul + 6 * N_LAYER * BLOCK_SIZE * N_EMBD


def budget_steps(model, device):
    """Optimiser steps that fit in the FLOP budget: a dearer step gets fewer of them."""
    budget = CUDA_FLOP_BUDGET if device == "cuda" else FLOP_BUDGET
    return max(1, int(budget // (flops_per_token(model) * BATCH_SIZE * BLOCK_SIZE)))


def lr_at(progress, steps):
    """LR at training progress in [0, 1]: linear warmup, then the chosen decay."""
    warm = min(WARMUP_STEPS / steps, 1.0)
    if progress < warm:
        return LEARNING_RATE * (progress + 1 / steps) / (warm + 1 / steps)
    t = (progress - warm) / max(1e-9, 1 - warm)
    decay = {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t, "constant": 1.0}[LR_SCHEDULE]
    return LEARNING_RATE * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * decay)


@torch.no_grad()
def evaluate(model, val, device):
    """Mean bits per byte over EVAL_TOKENS bytes of a split in fixed, evenly spaced windows."""
    model.eval()
    n = max(1, EVAL_TOKENS // BLOCK_SIZE)
    starts = torch.linspace(0, len(val) - BLOCK_SIZE - 1, n).long()
    total = 0.0
    for chunk in starts.split(64):
        idx = chunk[:, None] + torch.arange(BLOCK_SIZE + 1)
        batch = val[idx].long().to(device)
        logits = model(batch[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
    model.train()
    return total / (n * BLOCK_SIZE) / math.log(2)


def fail(reason):
    print(f"error: {reason}\nval_bpb: nan", flush=True)
    sys.exit(1)


def train(model, data, device, steps, seconds, seed):
    """Optimise for `steps` steps or `seconds` seconds, whichever ends first; return (steps, losses)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": other, "weight_decay": 0.0}],
                            lr=LEARNING_RATE, betas=(BETA1, BETA2))
    metrics = open(os.environ["LAB_METRICS"], "a") if os.environ.get("LAB_METRICS") else None
    gen = torch.Generator().manual_seed(seed)
    t0, step, losses = time.time(), 0, []
    while (progress := max(step / steps, (time.time() - t0) / seconds)) < 1:
        lr = lr_at(progress, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(data) - BLOCK_SIZE - 1, (BATCH_SIZE, 1), generator=gen) + torch.arange(BLOCK_SIZE + 1)
        batch = data[idx].long().to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step, value = step + 1, loss.item()
        if not math.isfinite(value):
            fail(f"non-finite training loss at step {step}")
        losses.append(value)
        if metrics:
            metrics.write(json.dumps({"step": step, "time_s": round(time.time() - t0, 3),
                                      "train_loss": round(value, 5), "lr": lr}) + "\n")
            metrics.flush()
        if step % max(1, steps // 10) == 0:
            print(f"step {step}/{steps} loss {value:.4f} lr {lr:.2e} {time.time() - t0:.1f}s", flush=True)
    return step, losses


def main():
    started = time.time()
    check_config()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # the thread limit of a CPU slot
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seconds = float(os.environ.get("LAB_TIME_BUDGET") or TIME_BUDGET_S)
    seed = int(os.environ.get("LAB_SEED") or SEED)
    torch.manual_seed(seed)
    train_data, val_data, test_data = build_corpus()
    model = GPT().to(device)
    steps = int(os.environ.get("LAB_MAX_STEPS") or budget_steps(model, device))
    t0 = time.time()
    done, losses = train(model, train_data, device, steps, seconds, seed)
    train_seconds = time.time() - t0
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        val_bpb = evaluate(model, val_data, device)
        test_bpb = evaluate(model, test_data, device)
    if not math.isfinite(val_bpb):
        fail("non-finite validation loss")
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    summary = {"val_bpb": f"{val_bpb:.6f}", "test_bpb": f"{test_bpb:.6f}",
               "train_loss": f"{sum(losses[-20:]) / len(losses[-20:]):.6f}",
               "steps": done, "tokens_per_s": f"{done * BATCH_SIZE * BLOCK_SIZE / train_seconds:.0f}",
               "params": sum(p.numel() for p in model.parameters()), "train_flops": done * flops_per_token(model) * BATCH_SIZE * BLOCK_SIZE,
               "flop_budget_used": f"{done / steps:.4f}",
               "train_seconds": f"{train_seconds:.2f}",
               "seconds": f"{time.time() - started:.2f}", "peak_mem_mb": f"{peak:.1f}"}
    print("\n".join(f"{name}: {value}" for name, value in summary.items()), flush=True)


if __name__ == "__main__":
    main()
