"""What every command shares: the lab it runs in (found lazily), JSON output."""
from __future__ import annotations

import json

import click

from ..lab import Lab


class Context:
    def __init__(self, directory: str | None):
        self.directory = directory
        self._lab: Lab | None = None

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            self._lab = Lab.find(self.directory)
        return self._lab

    @property
    def viewed_lab(self) -> Lab:
        """The lab, for a command that only shows its tables (status, query, report): such a process
        keeps snapshots of them for the next one (files/tabledir.py); the runner never reads those."""
        from ..files.tabledir import keep_snapshots
        keep_snapshots(self.lab.root)
        return self.lab


pass_ctx = click.make_pass_decorator(Context)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
