#!/usr/bin/env bash
# One device call: check, build, GPU tests, benchmark (and optionally e2e), logs under $OUT.
# Usage (repo root, wheels in .whl/): bash kernels/qwen3-rmsnorm/benchmarks/device_run.sh [bench|e2e|all] [bench args...]
#   bench: check, build, throw probes, kernel tests, tooling GPU tests, flush probe, benchmark
#   e2e:   the Qwen3-8B-shaped end-to-end timing;  all: both
set -o pipefail
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
lab() { python3 -c 'from runner.cli import main; main()' "$@"; }
K=kernels/qwen3-rmsnorm
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
if [ "$what" = all ] || [ "$what" = bench ]; then
  echo "== lab kernel check"; time lab kernel check qwen3-rmsnorm
  echo "== lab kernel build"; time lab kernel build qwen3-rmsnorm
  V=$(ls -d .lab/build/qwen3-rmsnorm/*/ | head -1)
  echo "== throw probes (inline extensions build in the background)"; g++ --version | head -1
  PYTHONPATH=$V:.:$PYTHONPATH python3 $K/benchmarks/throw_probe.py
  PYTHONPATH=$V:.:$PYTHONPATH python3 $K/benchmarks/throw_probe.py --gdb --inline > "$OUT/throw.txt" 2>&1 &
  probe=$!
  echo "== lab kernel test"; time lab kernel test qwen3-rmsnorm -x -q
  echo "== pytest tests/test_kernel_gpu.py"; time python3 -m pytest -q -p no:cacheprovider tests/test_kernel_gpu.py
  wait $probe; echo "== inline throw probes"; cat "$OUT/throw.txt"
  echo "== flush probe"; PYTHONPATH=$V:.:$PYTHONPATH python3 $K/benchmarks/flush_probe.py
  echo "== lab kernel bench"; time lab kernel bench qwen3-rmsnorm "$@" && cp $K/results/*.parquet $K/CARD.md "$OUT"/
  # torch.compile's generated Triton kernels (the baseline to read against ours)
  grep -rl "rsqrt" /tmp/torchinductor_*/ --include='*.py' 2>/dev/null | tar -czf "$OUT/inductor_kernels.tgz" -T - 2>/dev/null
fi
if [ "$what" = all ] || [ "$what" = e2e ]; then
  [ -d .lab/build/qwen3-rmsnorm ] || lab kernel build qwen3-rmsnorm
  V=$(ls -d .lab/build/qwen3-rmsnorm/*/ | head -1)
  echo "== e2e"; time PYTHONPATH=$V:.:$PYTHONPATH python3 $K/benchmarks/e2e.py --out "$OUT/e2e.json"
fi
