"""``fewshot methods``: list the registered methods."""

from __future__ import annotations

import click

from . import main


@main.command("methods")
def methods_cmd():
    """List every method usable with --method, with its family and one-line summary."""
    from ..methods import METHODS

    width = max(len(n) for n in METHODS) + 2
    for name in sorted(METHODS):
        cls = METHODS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        family = cls.__module__.rsplit(".", 1)[-1]
        click.echo(f"{name:{width}s}{family:15s}{doc}")
