"""One shape for every user-facing error (file, line, field, message), and one line for
every failure the CLI did not expect, with the traceback kept in a log file."""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path


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


def crash_log_dir(start: Path | None = None) -> Path:
    """Where a crash's traceback goes: the lab's .lab/logs when inside a lab, else a temp dir."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "lab.yaml").is_file():
            return candidate / ".lab" / "logs"
    return Path(tempfile.gettempdir()) / "benchlab-logs"


def describe(exc: BaseException) -> str:
    """What failed, in one line: the failing tool and its own last words, not a traceback."""
    stderr = getattr(exc, "stderr", None)
    command = getattr(exc, "command", None)
    if command is not None and stderr is not None:  # a failed external command (git)
        words = command if isinstance(command, str) else " ".join(map(str, command[:3]))
        last = [line for line in str(stderr).strip().splitlines() if line.strip()]
        return f"`{words}` failed: {last[-1].strip(chr(39)) if last else 'no output'}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def write_crash_log(exc: BaseException, argv: list[str], start: Path | None = None) -> Path:
    """Keep the whole traceback for a bug report; the user sees one line naming this file."""
    directory = crash_log_dir(start)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    from .secrets import mask
    text = "".join(traceback.format_exception(exc))
    path.write_text(mask(f"lab {' '.join(argv)}\n\n{text}"))
    return path
