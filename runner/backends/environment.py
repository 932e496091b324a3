"""The environment a job gets: an allow-list of the runner's variables, never all of them.

A target that prints its environment must not leak the tokens of whoever runs the
lab; what a job needs beyond the allow-list is given by name in lab.yaml
(`target.env` for values, `target.secrets` for variables passed through by name).
"""
from __future__ import annotations

from typing import Iterable, Mapping

ALLOWED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
           "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONHASHSEED",
           "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES",
           "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "HF_HOME", "HF_HUB_CACHE",
           "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "TORCH_HOME",
           "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
           "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "LAB_CACHE")
ALLOWED_PREFIXES = ("LC_",)


def job_environment(source: Mapping[str, str], *layers: Mapping[str, str],
                    secrets: Iterable[str] = ()) -> dict[str, str]:
    """Allow-listed variables of `source`, then each layer in order, then the named secrets."""
    env = {k: v for k, v in source.items() if k in ALLOWED or k.startswith(ALLOWED_PREFIXES)}
    for layer in layers:
        env.update(layer)
    env.update({name: source[name] for name in secrets if name in source})
    return env
