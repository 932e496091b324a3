"""`lab kernel ...`: kernel projects in the Hugging Face kernel-builder layout."""
import click


@click.group()
def kernel() -> None:
    """Check, build, test, benchmark and package kernels under kernels/."""
