"""``fewshot methods``: list the registered methods and their options."""

from __future__ import annotations

import click

from . import main
from .method_table import METHOD_ROWS


@main.command("methods")
@click.option("--options/--no-options", "show_options", default=True, show_default=True,
              help="list each method's -p options with their types and defaults")
def methods_cmd(show_options):
    """List every method usable with --method: family, summary, earlier names, options."""
    width = max(len(row[0]) for row in METHOD_ROWS) + 2
    for name, family, summary, aliases, options in METHOD_ROWS:
        also = f"  (also: {', '.join(aliases)})" if aliases else ""
        click.echo(f"{name:{width}s}{family:15s}{summary}{also}")
        if show_options:
            for opt, kind, default in options:
                click.echo(f"{'':{width}s}  -p {opt}: {kind} = {default}")
