"""`lab schema tables`: the Arrow schemas of the Parquet tables as Markdown."""
from __future__ import annotations

import click


@click.group("schema")
def schema_group() -> None:
    """Show the lab's schemas."""


@schema_group.command("tables")
def schema_tables() -> None:
    """Print the Arrow schemas of the Parquet tables as Markdown (schemas/tables.md)."""
    from ..files.tables import tables_markdown
    click.echo(tables_markdown(), nl=False)
