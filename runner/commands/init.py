"""`lab init DIR`: a new lab in a new git repo."""
from __future__ import annotations

from pathlib import Path

import click

from ..scaffold import init_lab, template_names


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--template", type=click.Choice(template_names()), default="tiny-gpt", show_default=True,
              help="tiny-gpt: the embedded GPT (CPU); kernel: tune qwen3-rmsnorm on GPUs; finetune: tune a TRL "
                   "fine-tuning recipe (a built-in tiny Qwen3 on CPU); blank: your own script.")
@click.option("--name", help="The lab's name (default: the directory's name).")
@click.option("--force", is_flag=True, help="Scaffold into a non-empty directory.")
def init_command(directory: str, template: str, name: str | None, force: bool) -> None:
    """Scaffold a new lab in DIRECTORY as a new git repo with a first commit."""
    kept: list[str] = []
    root = init_lab(Path(directory), template=template, name=name, force=force, kept=kept)
    click.echo(f"initialised lab in {root} (template {template})")
    if kept:
        tops = dict.fromkeys(k.split("/")[0] + ("/" if "/" in k else "") for k in kept)
        click.echo(f"kept {len(kept)} existing file(s) unchanged in: {', '.join(tops)}")
    click.echo(f"next: cd {directory} && lab status")
