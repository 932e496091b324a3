"""History.load and review_change on a large history.

Builds a throwaway lab with N rows in the scores table (one compacted part), H hypothesis
files and Q queue files, then times History.load (the first load, then the median of 4 more, which hit the
caches of parsed files and changes) and the median
cost of one review_change. Usage: python bench/bench_gates.py [N] [H] [Q]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import yaml

from runner.roles import gates
from runner.lab import Lab
from runner.scaffold import init_lab
from runner.files.tables import SCORES, write_part
from runner.files.yamlio import dump_yaml

PARAMS = ["LEARNING_RATE", "WARMUP_STEPS", "WEIGHT_DECAY", "BATCH_SIZE", "DROPOUT", "BETA2"]


def build(root: Path, rows: int, hyps: int, queued: int) -> Lab:
    init_lab(root, template="blank")
    config = yaml.safe_load((root / "lab.yaml").read_text())
    config["target"]["params"] = PARAMS
    (root / "lab.yaml").write_text(yaml.safe_dump(config))
    base = "0123456789abcdef0123456789abcdef01234567"
    data = []
    for i in range(rows):
        change = {"params": {PARAMS[i % len(PARAMS)]: 0.001 * (1 + i)}}
        row = {"id": f"e-{i:06d}", "hypothesis": None, "kind": "experiment", "status": "finished",
               "title": "t", "change": json.dumps(change), "fingerprint": "", "base": base, "commit": base,
               "metric": "val_loss", "value": 1.0 + i * 1e-4, "base_value": 1.0, "delta": 0.0,
               "promoted": False, "slot": "cpu0", "worker": "builtin", "wave": 0, "started": None,
               "finished": None, "duration_s": 1.0, "reason": None}
        data.append(row)
    write_part(root / "experiments" / "scores", pa.Table.from_pylist(data, schema=SCORES))
    for i in range(hyps):
        doc = {"id": f"h-{i:06d}", "title": f"idea {i}", "status": ["accepted", "rejected", "proposed"][i % 3],
               "created": "2026-11-21T08:30:00Z", "change": {"params": {PARAMS[i % len(PARAMS)]: 0.5 + i}}}
        (root / "hypotheses" / f"h-{i:06d}.yaml").write_text(dump_yaml(doc))
    for i in range(queued):
        doc = {"id": f"q-{i:04d}", "hypothesis": "h-000000", "status": "queued", "base": base,
               "created": "2026-11-21T08:30:00Z", "change": {"params": {"DROPOUT": 0.01 * i}}}
        (root / "queue" / f"q-{i:04d}.yaml").write_text(dump_yaml(doc))
    return Lab(root)


def main() -> None:
    rows, hyps, queued = (int(a) for a in (sys.argv[1:] + ["10000", "1000", "8"][len(sys.argv) - 1:])[:3])
    with tempfile.TemporaryDirectory() as tmp:
        lab = build(Path(tmp) / "lab", rows, hyps, queued)
        loads = []
        for _ in range(5):
            started = time.perf_counter()
            history = gates.History.load(lab)
            loads.append(time.perf_counter() - started)
        base = "0123456789abcdef0123456789abcdef01234567"
        checks = []
        for i in range(1000):
            change = {"params": {PARAMS[i % len(PARAMS)]: 0.0013 * (1 + i)}}
            started = time.perf_counter()
            gates.review_change(lab, history, change, base=base)
            checks.append(time.perf_counter() - started)
    print("| scores rows | hypotheses | queue | History.load first (s) | History.load again, median (s) "
          "| review_change median (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {rows} | {hyps} | {queued} | {loads[0]:.3f} | {statistics.median(loads[1:]):.3f} | "
          f"{1000 * statistics.median(checks):.3f} |")


if __name__ == "__main__":
    main()
