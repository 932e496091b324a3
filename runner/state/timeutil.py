"""UTC timestamps as the lab writes them: ISO 8601, seconds, `Z`."""
from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None = None) -> str:
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def parse_iso_or_none(text) -> datetime | None:
    """A timestamp read from a file someone else wrote: None when it is missing or malformed."""
    try:
        return parse_iso(text) if isinstance(text, str) else None
    except ValueError:
        return None
