"""The ``fewshot`` command line. Each sub-command lives in its own module and is added here."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="fewshot")
def main() -> None:
    """fewshot: few-shot and one-shot learning from the command line.

    \b
    Examples:
      fewshot demo
      fewshot train --method protonet --dataset omniglot --split background --way 20 --shot 1 --episodes 3000 --out runs/proto
      fewshot eval runs/proto --split background --alphabets heldout --way 20 --shot 1 --within alphabet --tasks 1000 --json
      fewshot predict runs/proto --support faces/ --query new.png
      fewshot serve --db staff.sqlite
      fewshot verify runs/siamese a.png b.png --calibrate-on known_writers/
    """


def _register() -> None:
    from . import bpl, client, data, demo, evaluate, methods, playground, predict, serve, text, train, verify  # noqa: F401  (each adds its commands to main)


_register()
