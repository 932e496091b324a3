"""One shape for every user-facing error: file, line, field, message."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    field: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        field = self.field or "-"
        return f"{where}: {field}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class LabError(Exception):
    """An error the user caused and can fix; printed as one line, never a traceback."""

    def __init__(self, message: str, path: str = "", field: str = "", line: int | None = None):
        super().__init__(message)
        self.problem = Problem(path=path or "-", message=message, field=field, line=line)

    def __str__(self) -> str:
        return str(self.problem)
