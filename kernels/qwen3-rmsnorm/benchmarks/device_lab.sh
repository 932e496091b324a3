#!/usr/bin/env bash
# One device call: the kernel lab (`lab demo --template kernel`) tunes qwen3-rmsnorm on this
# machine's GPUs with the builtin roles; the lab (git history, tables, logs) comes back in $OUT.
# Usage (repo root, wheels in .whl/): bash kernels/qwen3-rmsnorm/benchmarks/device_lab.sh [MINUTES]
set -o pipefail
minutes=${1:-6}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/lab-log.txt") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
lab() { python3 -m runner.cli "$@"; }
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())"
rm -rf /tmp/klab
time lab demo /tmp/klab --template kernel --minutes "$minutes" --experiments 60
(cd /tmp/klab && lab status)
tar -czf "$OUT/klab.tgz" -C /tmp --exclude=klab/.lab/worktrees --exclude=klab/.lab/cache --exclude=klab/.lab/jobs klab
python3 kernels/qwen3-rmsnorm/benchmarks/lab_noise.py /tmp/klab
