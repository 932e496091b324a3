"""Does an error raised inside a C++ op reach Python, or crash the process?

Probes, each in a child process (one line each, with its exit status):
- our op's own TORCH_CHECK (CUDA tensors with a wrong weight shape, called through `ops`
  directly, past the Python checks), and an unbuilt tuning config (the launcher's error);
- with --gdb: the first probe again under cuda-gdb (batch mode), printing the crash's backtrace;
- with --inline: a one-op extension whose op always fails TORCH_CHECK, built twice with torch's
  JIT loader, once with torch's own flags and once with -std=c++17 forced, as an earlier
  build of this kernel did (the suspected cause of the segfault seen then).
"""
import os
import shutil
import subprocess
import sys
import tempfile

OUR_PROBES = {
    "our_torch_check_bad_weight_shape": "import torch, qwen3_rmsnorm\n"
        "x = torch.randn(4, 64, device='cuda', dtype=torch.bfloat16)\n"
        "try:\n qwen3_rmsnorm.ops.rms_norm(torch.empty_like(x), x, x[0, :32].contiguous(), 1e-6)\n"
        "except RuntimeError as e: print('raised', str(e).splitlines()[0][:70])",
    "our_launcher_error_unbuilt_config": "import torch, qwen3_rmsnorm\n"
        "x = torch.randn(4, 4096, device='cuda', dtype=torch.bfloat16)\n"
        "try:\n qwen3_rmsnorm.ops.rms_norm_config(torch.empty_like(x), x, x[0].contiguous(), 1e-6, 9999)\n"
        "except RuntimeError as e: print('raised', str(e).splitlines()[0][:70])",
}

INLINE_SOURCE = r'''
#include <torch/library.h>
#include <ATen/ATen.h>
void always_fails(const at::Tensor& x) { TORCH_CHECK(false, "probe: this check always fails, got ", x.sizes()); }
TORCH_LIBRARY(throw_probe_NAME, m) { m.def("fails(Tensor x) -> ()"); m.impl("fails", c10::DispatchKey::CPU, &always_fails); }
'''

INLINE_CALL = ("import torch\nfrom torch.utils.cpp_extension import load\n"
               "load(name='throw_probe_NAME', sources=['SRC'], extra_cflags=FLAGS, is_python_module=False,"
               " build_directory='DIR')\n"
               "try:\n torch.ops.throw_probe_NAME.fails(torch.ones(2))\n"
               "except RuntimeError as e: print('raised', str(e).splitlines()[0][:60])")


def run(name: str, code: str, env_extra=None) -> None:
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **(env_extra or {})),
                          capture_output=True, text=True, timeout=600)
    err = proc.stderr.strip().splitlines()
    print(f"{name}: rc={proc.returncode} {proc.stdout.strip()[:90]} {err[-1][:100] if err and proc.returncode else ''}",
          flush=True)


def inline_probes() -> None:
    for name, flags in (("torch_flags", []), ("forced_cxx17", ["-std=c++17"])):
        tmp = tempfile.mkdtemp(prefix=f"throw_{name}_")
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(INLINE_SOURCE.replace("NAME", name))
        code = (INLINE_CALL.replace("NAME", name).replace("SRC", src).replace("DIR", tmp)
                .replace("FLAGS", repr(flags)))
        run(f"inline_extension_{name}", code)


def gdb_backtrace() -> None:
    gdb = shutil.which("cuda-gdb") or "/usr/local/cuda/bin/cuda-gdb"
    if not os.path.exists(gdb):
        print("cuda-gdb not found")
        return
    code = next(iter(OUR_PROBES.values()))
    proc = subprocess.run([gdb, "-q", "-batch", "-ex", "set pagination off", "-ex", "run", "-ex", "bt 30",
                           "--args", sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    lines = (proc.stdout + proc.stderr).splitlines()
    keep = [ln for ln in lines if ln.startswith("#") or "SIGSEGV" in ln or "signal" in ln.lower()]
    print("\n".join(keep[:45]) or "\n".join(lines[-30:]))


if __name__ == "__main__":
    for probe, source in OUR_PROBES.items():
        run(probe, source)
    if "--gdb" in sys.argv:
        gdb_backtrace()
    if "--inline" in sys.argv:
        inline_probes()
