"""`lab kernel ...`: kernel projects in the Hugging Face kernel-builder layout."""
from __future__ import annotations

import sys

import click

from .context import Context, emit_json, pass_ctx


@click.group()
def kernel() -> None:
    """Check, build, test, benchmark and package kernels under kernels/."""


def _project(ctx: Context, name: str):
    from ..kernels.project import load_project
    return load_project(ctx.lab.root, name)


def _build(ctx: Context, name: str, verbose: bool = False):
    from ..kernels.build import build
    project = _project(ctx, name)
    click.echo(f"building {name} for this GPU ...", err=True)
    result = build(project, ctx.lab.runtime / "build", verbose=verbose)
    click.echo(f"built {result.extension} (sm_{result.capability.replace('.', '')}, {result.variant}) -> "
               f"{ctx.lab.rel(result.package)}", err=True)
    return result


@kernel.command("check")
@click.argument("name")
@click.option("--no-compile", is_flag=True, help="Skip the nvcc compile (schema, files and ops only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output for agents.")
@pass_ctx
def check_command(ctx: Context, name: str, no_compile: bool, as_json: bool) -> None:
    """Validate kernels/NAME: build.toml, sources, ops, and an nvcc compile per capability. No GPU needed."""
    from ..kernels.check import check_project
    from ..kernels.project import KERNELS_DIR, project_dir
    root = project_dir(ctx.lab.root, name)
    report = check_project(root, f"{KERNELS_DIR}/{name}", ctx.lab.runtime / "build" / "check",
                           compile_cuda=not no_compile)
    if as_json:
        emit_json(report.to_dict())
    else:
        for problem in report.problems:
            click.echo(str(problem))
        for note in report.skipped:
            click.echo(f"skipped: {note}", err=True)
        compiled = f"; nvcc compiled {', '.join(report.compiled)}" if report.compiled else ""
        click.echo(f"{'ok' if report.ok else f'{len(report.problems)} problem(s)'}: kernels/{name}{compiled}",
                   err=not report.ok)
    sys.exit(0 if report.ok else 1)


@kernel.command("build")
@click.argument("name")
@click.option("-v", "--verbose", is_flag=True, help="Show the ninja/nvcc commands.")
@pass_ctx
def build_command(ctx: Context, name: str, verbose: bool) -> None:
    """JIT-build kernels/NAME for this GPU's capability into .lab/build/ (ninja, torch's extension loader)."""
    _build(ctx, name, verbose)


@kernel.command("test", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def test_command(ctx: Context, name: str, pytest_args: tuple[str, ...]) -> None:
    """Build, then run kernels/NAME/tests with pytest (extra arguments go to pytest)."""
    from ..kernels.runs import run_tests
    sys.exit(run_tests(_build(ctx, name), ctx.lab.root, pytest_args))


@kernel.command("bench", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def bench_command(ctx: Context, name: str, bench_args: tuple[str, ...]) -> None:
    """Build, then run kernels/NAME/benchmarks/benchmark.py (results/<gpu>.parquet, CARD.md's table)."""
    from ..kernels.runs import run_benchmark
    sys.exit(run_benchmark(_build(ctx, name), ctx.lab.root, bench_args))


@kernel.command("package")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def package_command(ctx: Context, name: str, as_json: bool) -> None:
    """Build, then lay it out as a Hub kernel repo: kernels/NAME/build/<variant>/ with metadata.json."""
    from ..kernels.package import metadata, package
    result = _build(ctx, name)
    target = package(result)
    if as_json:
        emit_json({"variant": result.variant, "path": ctx.lab.rel(target), "metadata": metadata(result)})
    else:
        click.echo(f"packaged {ctx.lab.rel(target)}")
