"""Compile CUDA sources with nvcc (no GPU needed), caching object files by content."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_DIAG = re.compile(r"^(?P<file>[^\s(][^(]*)\((?P<line>\d+)\): (?P<kind>error|catastrophic error|fatal error)"
                   r"[^:]*: (?P<msg>.*)$")
_GCC_DIAG = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error): (?P<msg>.*)$")


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int | None
    message: str


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.is_file() else None


@lru_cache(maxsize=None)
def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else "unknown"


def gencode(capability: str) -> list[str]:
    """'9.0' -> compute_90/sm_90; '9.0a' -> compute_90a/sm_90a."""
    digits = capability.replace(".", "")
    return [f"-gencode=arch=compute_{digits},code=sm_{digits}"]


def content_key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def compile_object(nvcc: str, cwd: Path, source: str, capability: str, flags: list[str], includes: list[str],
                   headers_key: str, cache: Path) -> list[Diagnostic]:
    """nvcc -c SOURCE for one capability; cached by source, headers, flags and nvcc version."""
    args = ["-std=c++17", *flags, *[f"-I{inc}" for inc in includes], *gencode(capability)]
    key = content_key((cwd / source).read_bytes(), headers_key, " ".join(args), nvcc_version(nvcc))
    target = cache / f"{Path(source).stem}-{key}.o"
    if target.is_file():
        return []
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp.o")
    proc = subprocess.run([nvcc, *args, "-c", source, "-o", str(partial)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode == 0:
        os.replace(partial, target)
        return []
    partial.unlink(missing_ok=True)
    return parse_diagnostics(proc.stdout + proc.stderr, source)


def parse_diagnostics(output: str, source: str) -> list[Diagnostic]:
    found = []
    for raw in output.splitlines():
        match = _DIAG.match(raw.strip()) or _GCC_DIAG.match(raw.strip())
        if match:
            found.append(Diagnostic(match.group("file"), int(match.group("line")), match.group("msg").strip()))
    if not found:
        tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
        found.append(Diagnostic(source, None, "nvcc failed: " + " | ".join(tail)[:300]))
    return found
