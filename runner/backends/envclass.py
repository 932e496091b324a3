"""The environment class of a job: the backend, the hardware (GPU model and count, or CPU) and the
software (torch and CUDA versions, a hash of the installed packages). Scores are compared only
within one class (loop/scoring.py), so a number measured on a T4 never judges one from a CPU.

The class is known before the job starts, from lab.yaml and this machine: a local or Slurm job
runs the runner's own interpreter (Slurm over the shared filesystem), so its software is probed
here, without importing torch; an HF Jobs job runs its image, which stands for its software.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from . import flavors

IMAGE_VERSIONS = re.compile(r":(\d+\.\d+(?:\.\d+)?)-cuda(\d+\.\d+)")   # pytorch/pytorch:2.11.0-cuda13.0-...
GRES_GPUS = re.compile(r"^--(?:gres=gpu(?::([A-Za-z][\w.-]*))?:(\d+)|gpus(?:-per-node)?=(?:([A-Za-z][\w.-]*):)?(\d+))$")


@lru_cache(maxsize=1)
def software() -> dict:
    """This interpreter's Python, torch and CUDA versions and a hash of its installed packages."""
    packages = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions()
                       if d.metadata["Name"]})
    return {"python": platform.python_version(), "torch": _dist_version("torch"), "cuda": _torch_cuda(),
            "packages": hashlib.sha256("\n".join(packages).encode()).hexdigest()[:12]}


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda() -> str | None:
    """torch.version.cuda, read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return None
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return found.group(1) if found else None


@lru_cache(maxsize=1)
def local_gpu_model() -> str | None:
    """The name of this machine's first GPU (nvidia-smi), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    return names[0] if names else None


def describe(config: dict, backend: str, flavor: str = "") -> dict:
    """The environment a job of `backend` (with `flavor`, "" for the backend's default) runs in,
    with its class: one string that names it all, e.g. local/cpu-x86_64/torch-2.13.0+cpu/pk-3f2a..."""
    conf = (config.get("backends") or {}).get(backend) or {}
    if backend == "hf_jobs":
        env = _hf_jobs(config, conf, flavor or conf.get("flavor", "cpu-basic"))
    elif backend == "slurm":
        env = {**_slurm(conf, flavor or conf.get("partition") or "default"), **software()}
    else:
        gpu = conf.get("kind") == "gpu"
        model = (local_gpu_model() or "gpu") if gpu else None
        env = {"hardware": f"1x{_word(model)}" if gpu else f"cpu-{platform.machine()}", "gpus": int(gpu),
               "gpu_model": model, **software()}
    env = {"backend": backend, **env}
    parts = [backend, env["hardware"], f"torch-{env['torch'] or 'none'}"]
    parts += [f"cuda-{env['cuda']}"] if env.get("cuda") else []
    parts.append(f"image-{_word(env['image'])}" if env.get("image") else f"pk-{env['packages']}")
    return {"class": "/".join(parts), **env}


def _hf_jobs(config: dict, conf: dict, name: str) -> dict:
    known = flavors.flavor(config, name)
    gpus = known.gpus if known else None
    hardware = f"{gpus}x{_word(known.gpu_model)}" if known and gpus else name
    image = conf.get("image", "pytorch/pytorch:latest")
    versions = IMAGE_VERSIONS.search(image)
    return {"hardware": hardware, "gpus": gpus, "gpu_model": known.gpu_model if known else None,
            "flavor": name, "image": image, "python": None, "torch": versions.group(1) if versions else None,
            "cuda": versions.group(2) if versions else None, "packages": None}


def _slurm(conf: dict, partition: str) -> dict:
    gpus, model = 0, None
    for option in conf.get("sbatch") or ():
        found = GRES_GPUS.match(str(option))
        if found:
            model = found.group(1) or found.group(3)
            gpus = int(found.group(2) or found.group(4))
    hardware = f"{partition}-{gpus}x{_word(model or 'gpu')}" if gpus else f"{partition}-cpu"
    return {"hardware": hardware, "gpus": gpus, "gpu_model": model, "flavor": partition}


def _word(text: str) -> str:
    """A name as one path-safe word of a class string."""
    return re.sub(r"[^A-Za-z0-9.+_-]+", "-", str(text)).strip("-")
