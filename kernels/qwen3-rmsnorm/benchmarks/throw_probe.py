"""Does an error raised inside the C++ op reach Python, or crash the process?

Each probe runs in a child process; prints one line per probe with its exit status.
"""
import os
import subprocess
import sys

PROBES = {
    "torch_own_error_after_import": "import torch, qwen3_rmsnorm\n"
        "try:\n torch.ones(2, 3, device='cuda') @ torch.ones(2, 3, device='cuda')\nexcept RuntimeError: print('raised')",
    "op_direct_cpu_tensor": "import torch, qwen3_rmsnorm\nx = torch.ones(2, 8)\n"
        "try:\n qwen3_rmsnorm.ops.rms_norm(x, x, x[0], 1e-6)\nexcept RuntimeError as e: print('raised', str(e)[:60])",
}

for name, code in PROBES.items():
    for env_extra in ({}, {"TORCH_SHOW_CPP_STACKTRACES": "0"}, {"TORCH_DISABLE_ADDR2LINE": "1"}):
        proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env_extra), capture_output=True,
                              text=True, timeout=120)
        print(f"{name} {env_extra or ''}: rc={proc.returncode} {proc.stdout.strip()[:80]} "
              f"{proc.stderr.strip().splitlines()[0][:100] if proc.stderr.strip() else ''}")
