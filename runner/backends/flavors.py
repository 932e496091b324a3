"""Hugging Face Jobs flavors: hardware and hourly price, from runner/data/hf-jobs-flavors.yaml
with lab.yaml's `backends.hf_jobs.prices` over it. The one reader of that table."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..files.yamlio import load_yaml

FLAVORS_PATH = Path(__file__).resolve().parents[1] / "data" / "hf-jobs-flavors.yaml"


@dataclass(frozen=True)
class Flavor:
    name: str
    usd_per_hour: float | None
    gpus: int
    gpu_model: str | None
    vram_gb: float | None = None
    cpus: int | None = None
    ram_gb: float | None = None
    tflops: float | None = None     # dense peak per GPU, for `lab finetune check`'s estimates
    bf16: bool | None = None


@lru_cache(maxsize=4)
def _table(path: Path = FLAVORS_PATH) -> dict[str, Flavor]:
    data = load_yaml(path)[0]
    return {row["name"]: Flavor(**row) for row in data["flavors"]}


def flavor(config: dict, name: str) -> Flavor | None:
    """The flavor `name` with its price as lab.yaml sets it, or None when nothing is known of it
    (a price given only in lab.yaml still counts: hardware unknown, GPUs 0)."""
    known = _table().get(name)
    price = ((config.get("backends") or {}).get("hf_jobs") or {}).get("prices", {}).get(name)
    if price is None:
        return known
    if known is None:
        return Flavor(name, float(price), 0, None)
    return Flavor(**{**known.__dict__, "usd_per_hour": float(price)})


def names() -> list[str]:
    return list(_table())
