"""``fewshot data info|fetch``."""

from __future__ import annotations

import click

from . import main


@main.group("data")
def data_group() -> None:
    """Find or download datasets.

    \b
    Examples:
      fewshot data info --data-dir ../shared/data
      fewshot data fetch omniglot --split background,evaluation
      fewshot data fetch lake-runs
    """


@data_group.command("info")
@click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder to look in (also $FEWSHOT_DATA, the cache)")
def info_cmd(data_dir):
    """Show where each known archive was found (or how to get it)."""
    from ..data.idx import MNIST_TEST
    from ..data.lake import ALL_RUNS
    from ..data.omniglot import SPLITS
    from ..data.sources import find_file, search_dirs

    click.echo("searched: " + ", ".join(str(d) for d in search_dirs(data_dir)))
    for key, remote in [*(("omniglot/" + k, v) for k, v in SPLITS.items()), ("omniglot/lake-runs", ALL_RUNS), ("mnist/t10k", MNIST_TEST)]:
        path = find_file(remote, data_dir, extracted=remote.name.split(".")[0])
        click.echo(f"{key:30s} {'found: ' + str(path) if path else 'missing (' + remote.url + ')'}")


@data_group.command("fetch")
@click.argument("dataset", type=click.Choice(["omniglot", "lake-runs"]))
@click.option("--split", default="background,evaluation", show_default=True, help="Omniglot splits (comma list)")
@click.option("--dest", default=None, help="folder to download into (default: the cache)")
def fetch_cmd(dataset, split, dest):
    """Download official archives (MD5-verified where a checksum is published)."""
    from pathlib import Path

    from ..data.lake import ALL_RUNS, load_lake_runs
    from ..data.omniglot import SPLITS, parse_splits
    from ..data.sources import download

    remotes = [ALL_RUNS] if dataset == "lake-runs" else [SPLITS[s] for s in parse_splits(split)]
    for r in remotes:
        try:
            path = download(r, Path(dest) if dest else None)
            if r is ALL_RUNS:
                load_lake_runs(path)  # no published checksum: validate the structure instead
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{r.name}: {path}")
