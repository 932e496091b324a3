"""Fingerprints of changes, for duplicate detection across the whole history."""
from __future__ import annotations

import hashlib
import json
import re


def normalise_value(value):
    """1e-3, 0.001 and 0.0010 are one value; True stays a bool."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(f"{float(value):.6g}")
    if isinstance(value, str):
        return value.strip()
    return value


def normalise_change(change: dict) -> dict:
    out = {}
    params = change.get("params") or {}
    if params:
        out["params"] = {k: normalise_value(params[k]) for k in sorted(params)}
    if change.get("file"):
        out["file"] = change["file"]
    instructions = change.get("instructions")
    if instructions:
        out["instructions"] = re.sub(r"\s+", " ", instructions.strip().lower())
    return out


def fingerprint(change: dict) -> str:
    canonical = json.dumps(normalise_change(change), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
