"""Where the shared assets (schemas/, skills/, train.py) live for this install."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_BUNDLED = _PACKAGE / "_assets"       # a wheel install (see setup.py)
_CHECKOUT = _PACKAGE.parent           # an editable install or a checkout


def asset_path(name: str) -> Path:
    """Path of a top-level asset such as 'schemas', 'skills' or 'train.py'."""
    for base in (_BUNDLED, _CHECKOUT):
        candidate = base / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"benchlab asset {name!r} is missing from this install")
