"""``fewshot methods``: list the registered methods and their options."""

from __future__ import annotations

import click

from . import main


@main.command("methods")
@click.option("--options/--no-options", "show_options", default=True, show_default=True,
              help="list each method's -p options with their types and defaults")
def methods_cmd(show_options):
    """List every method usable with --method: family, summary, earlier names, options."""
    from ..methods import METHODS
    from ..methods.params import options_of

    width = max(len(n) for n in METHODS) + 2
    for name in sorted(METHODS):
        cls = METHODS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        family = cls.__module__.rsplit(".", 1)[-1]
        aliases = f"  (also: {', '.join(cls.aliases)})" if cls.aliases else ""
        click.echo(f"{name:{width}s}{family:15s}{doc}{aliases}")
        if show_options:
            for opt, kind, default in options_of(cls):
                click.echo(f"{'':{width}s}  -p {opt}: {kind} = {default!r}")
