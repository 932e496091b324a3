"""`lab query SQL`: read-only SQL over scores, events, metrics, hypotheses, queue, experiments."""
from __future__ import annotations

import click

from .context import Context, emit_json, pass_ctx


@click.command("query")
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="Rows as a JSON list of objects (for agents).")
@click.option("--max-width", type=int, default=60, show_default=True,
              help="Cut table cells at this width, marked with '…' (0: never cut).")
@pass_ctx
def query_command(ctx: Context, sql: str, as_json: bool, max_width: int) -> None:
    """Run one read-only SQL statement (DuckDB) over the lab's state.

    \b
    Views: scores, events, metrics (with an experiment column), hypotheses,
    queue, experiments, skill_evals (`lab skills eval` results).
    change/params/job/history are JSON text.
    Example: which learning rates were tried on base abc1234, and their scores?
      lab query "SELECT change->>'$.params.LEARNING_RATE' AS lr, value
                 FROM scores WHERE base LIKE 'abc1234%' AND lr IS NOT NULL"
    """
    from ..report.query import (  # pyarrow/duckdb only when querying
        render_table,
        run_query,
    )

    result = run_query(ctx.viewed_lab, sql)
    for note in result.skipped:
        click.echo(f"warning: skipped {note}", err=True)
    if as_json:
        emit_json(result.records())
    else:
        click.echo(render_table(result, max_width=max_width))
