"""Which values are secrets, and masking them before anything is written.

A secret is the value of an environment variable named like one (`*_TOKEN`,
`*_KEY`, `*SECRET*`, `*PASSWORD*`), of a variable lab.yaml names in
`target.secrets`, or the Hugging Face token of the Hub's token store. Every
writer of lab files masks them (YAML documents, Parquet rows, logs kept in the
lab, commit messages, events), so a value never reaches git, the report or a
table, whatever printed it.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache

MASK = "***"
MIN_LENGTH = 8               # shorter values (a flag set to 1, say) are not secrets worth masking
_SECRET_NAME = re.compile(r"(_TOKEN|_KEY|_API_KEY)$|SECRET|PASSWORD|PASSWD", re.IGNORECASE)
_named: set[str] = set()


def declare(names) -> None:
    """Variables lab.yaml passes to jobs as secrets (target.secrets, backends' secrets)."""
    _named.update(names)


def is_secret_name(name: str) -> bool:
    return name in _named or bool(_SECRET_NAME.search(name))


def values() -> list[str]:
    """The secret values known now, longest first (a value containing another is masked whole)."""
    found = {value for name, value in os.environ.items() if is_secret_name(name) and len(value) >= MIN_LENGTH}
    hub = _hub_token()
    if hub and len(hub) >= MIN_LENGTH:
        found.add(hub)
    return sorted(found, key=len, reverse=True)


@lru_cache(maxsize=1)
def _hub_token() -> str | None:
    """The token huggingface_hub would use, from its token store (read once per process)."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    try:
        return get_token()
    except Exception:  # noqa: BLE001 - a broken token file must not stop the lab from writing
        return None


def mask(text: str, secrets: list[str] | None = None) -> str:
    for value in values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_data(data, secrets: list[str] | None = None):
    """`data` (YAML/JSON-like) with every secret inside its strings masked."""
    secrets = values() if secrets is None else secrets
    if not secrets:
        return data
    if isinstance(data, str):
        return mask(data, secrets)
    if isinstance(data, dict):
        return {mask_data(k, secrets): mask_data(v, secrets) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_data(v, secrets) for v in data]
    return data
