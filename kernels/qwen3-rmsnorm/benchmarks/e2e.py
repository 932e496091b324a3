"""End to end: a Qwen3-8B-shaped model (random weights from the config, no download),
prefill and decode latency with and without qwen3-rmsnorm swapped in.

Every Qwen3RMSNorm (input/post-attention norms, q/k per-head norms, final norm) is
swapped by swap.py beside this script. Times: CUDA events, medians.
Run with the kernel on PYTHONPATH (see `lab kernel bench`'s environment), e.g.
  PYTHONPATH=.lab/build/qwen3-rmsnorm/<variant> python kernels/qwen3-rmsnorm/benchmarks/e2e.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import qwen3_rmsnorm
from swap import swap_rmsnorm, unswap_rmsnorm  # this directory's own module (the script's dir is on sys.path)


def qwen3_8b_config(layers: int):
    from transformers import Qwen3Config
    return Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False)


def make_model(layers: int):
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(qwen3_8b_config(layers))
    torch.set_default_dtype(previous)
    for module in model.modules():  # random norm weights: all-ones would hide a wrong weight
        if type(module).__name__ == "Qwen3RMSNorm":
            module.weight.data.normal_(1.0, 0.1)
    return model.eval()


def timed(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def prefill_ms(model, ids, repeats: int) -> float:
    for _ in range(2):
        model(ids, use_cache=True)
    return statistics.median(timed(lambda: model(ids, use_cache=True)) for _ in range(repeats))


def decode_ms(model, ids, steps: int, repeats: int) -> float:
    samples = []
    for rep in range(repeats + 1):
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(steps):
            holder = {}
            ms = timed(lambda: holder.update(out=model(token, past_key_values=cache, use_cache=True)))
            cache, token = holder["out"].past_key_values, holder["out"].logits[:, -1:].argmax(-1)
            if rep:  # the first pass warms up
                samples.append(ms)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=36, help="decoder layers (Qwen3-8B has 36)")
    parser.add_argument("--prefill", type=int, default=2048, help="prompt tokens for the prefill timing")
    parser.add_argument("--context", type=int, default=512, help="prompt tokens before the decode steps")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    model = make_model(args.layers)
    gen = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, 151936, (1, args.prefill), device="cuda", generator=gen)
    context = prompt[:, : args.context]
    result = {"gpu": torch.cuda.get_device_name(), "layers": args.layers, "prefill_tokens": args.prefill,
              "decode_context": args.context, "torch": torch.__version__}
    with torch.no_grad():
        check_ids = prompt[:, :64]
        base_logits = model(check_ids).logits.float()
        for label in ("pytorch", "qwen3_rmsnorm"):
            if label == "qwen3_rmsnorm":
                result["swapped_modules"] = swap_rmsnorm(model, qwen3_rmsnorm)
                logits = model(check_ids).logits.float()
                result["logits_max_abs_diff"] = (logits - base_logits).abs().max().item()
                result["top1_agreement"] = (logits.argmax(-1) == base_logits.argmax(-1)).float().mean().item()
            result[f"{label}_prefill_ms"] = prefill_ms(model, prompt, args.repeats)
            result[f"{label}_decode_ms"] = decode_ms(model, context, args.steps, args.repeats)
        unswap_rmsnorm(model)
    result["prefill_speedup"] = result["pytorch_prefill_ms"] / result["qwen3_rmsnorm_prefill_ms"]
    result["decode_speedup"] = result["pytorch_decode_ms"] / result["qwen3_rmsnorm_decode_ms"]
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"e2e {result['gpu']}, {args.layers} layers, bf16: swapped {result['swapped_modules']} norms; "
          f"logits max|diff| {result['logits_max_abs_diff']:.3g}, top-1 agreement {result['top1_agreement']:.3f}")
    print(f"{'':<14} {'prefill ms':>11} {'decode ms/token':>16}")
    for label in ("pytorch", "qwen3_rmsnorm"):
        print(f"{label:<14} {result[f'{label}_prefill_ms']:11.2f} {result[f'{label}_decode_ms']:16.3f}")
    print(f"{'speedup':<14} {result['prefill_speedup']:10.3f}x {result['decode_speedup']:15.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
