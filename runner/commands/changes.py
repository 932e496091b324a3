"""A change from command-line options: --param NAME=VALUE, --instructions, --file."""
from __future__ import annotations


def change_from_options(params: tuple[str, ...], instructions: str | None, file: str | None) -> dict:
    change = {}
    if params:
        from ..state.create import parse_params
        change["params"] = parse_params(params)
    if instructions:
        change["instructions"] = instructions
    if file:
        change["file"] = file
    return change
