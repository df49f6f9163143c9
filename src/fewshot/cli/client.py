"""``fewshot client``: enrol a folder into a running ``fewshot serve`` and recognise files or sentences."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import echo_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
BATCH = 16  # files per upload request


class _Api:
    def __init__(self, url: str, api_key: str | None):
        try:
            import httpx
        except ImportError as exc:
            raise click.ClickException("the client needs httpx: pip install 'fewshot[serve]'") from exc
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120)
        self.httpx = httpx

    def __call__(self, method: str, path: str, ok=(200, 201), **kw):
        try:
            r = self.client.request(method, path, **kw)
        except self.httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the service at {self.client.base_url}: {exc}; is `fewshot serve` running?") from exc
        if r.status_code not in ok:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise click.ClickException(f"{method} {path}: {r.status_code} {detail}")
        return r.json() if r.content else None


def _options(f):
    f = click.option("--url", default="http://127.0.0.1:8000", show_default=True, envvar="FEWSHOT_URL", help="the service [env FEWSHOT_URL]")(f)
    f = click.option("--api-key", envvar="FEWSHOT_API_KEY", default=None, help="for writes, when the service needs one [env FEWSHOT_API_KEY]")(f)
    return click.option("-c", "--collection", required=True, help="collection name")(f)


@main.group("client")
def client() -> None:
    """Talk to a running `fewshot serve`: enrol a folder, recognise photos or sentences."""


@client.command("enroll")
@_options
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="kind of the collection if it has to be created")
def enroll(url, api_key, collection, folder, kind) -> None:
    """Enrol FOLDER: one sub-folder of photos per class (image), or one CLASS.txt per class with one sentence a line (text).

    The collection is created if absent.
    """
    api = _Api(url, api_key)
    existing = {c["name"]: c for c in api("GET", "/api/collections")}
    if collection not in existing:
        api("POST", "/api/collections", json={"name": collection, "kind": kind})
    else:
        kind = existing[collection]["kind"]
    total = 0
    if kind == "image":
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise click.ClickException(f"{folder} has no sub-folders: put each class's photos in a folder named after it")
        for cls in classes:
            files = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for i in range(0, len(files), BATCH):
                chunk = files[i:i + BATCH]
                api("POST", f"/api/collections/{collection}/examples/upload", data={"class": cls.name},
                    files=[("files", (p.name, p.read_bytes())) for p in chunk])
                total += len(chunk)
            click.echo(f"{cls.name}: {len(files)} photo(s)")
    else:
        texts = sorted(folder.glob("*.txt"))
        if not texts:
            raise click.ClickException(f"{folder} has no .txt files: write one CLASS.txt per class, one sentence a line")
        for path in texts:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            api("POST", f"/api/collections/{collection}/examples", json={"class": path.stem, "texts": lines})
            total += len(lines)
            click.echo(f"{path.stem}: {len(lines)} sentence(s)")
    info = api("GET", f"/api/collections/{collection}")
    click.echo(f"enrolled {total} example(s); {collection} now holds {info['examples']} in {len(info['classes'])} classes; "
               f"threshold {info['effective_threshold']:.3f} ({info['calibration']['source']})")


@client.command("recognize")
@_options
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-t", "--text", "texts", multiple=True, help="a sentence to recognise (repeatable; text collections)")
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="classes listed per query")
@click.option("--threshold", type=float, default=None, help="override the collection's threshold")
@click.option("--json", "as_json", is_flag=True, help="print the service's JSON")
def recognize(url, api_key, collection, files, texts, k, threshold, as_json) -> None:
    """Recognise photo FILES (or --text sentences): the class, or unknown, with the top scores."""
    if bool(files) == bool(texts):
        raise click.UsageError("give photo FILES or --text sentences (one of the two)")
    api = _Api(url, api_key)
    labels, results = [], {"results": []}
    if texts:
        results = api("POST", f"/api/collections/{collection}/recognize", json={"texts": list(texts), "k": k, "threshold": threshold})
        labels = list(texts)
    else:
        params = {"k": k} if threshold is None else {"k": k, "threshold": threshold}
        for i in range(0, len(files), BATCH):
            chunk = files[i:i + BATCH]
            r = api("POST", f"/api/collections/{collection}/recognize/upload", params=params,
                    files=[("files", (p.name, p.read_bytes())) for p in chunk])
            results["threshold"] = r["threshold"]
            results["results"] += r["results"]
            labels += [str(p) for p in chunk]
    if as_json:
        echo_json(results)
        return
    for label, res in zip(labels, results["results"]):
        top = ", ".join(f"{t['class']} {t['score']:.3f}" for t in res["top"])
        click.echo(f"{label}\t{res['class'] if res['decision'] == 'class' else 'unknown'}\t({top})")
