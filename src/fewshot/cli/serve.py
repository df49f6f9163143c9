"""``fewshot serve``: the enrol-and-recognise HTTP service (needs: pip install 'fewshot[serve]')."""

from __future__ import annotations

import click

from . import main


@main.command("serve")
@click.option("--db", default="fewshot-serve/fewshot.sqlite", show_default=True,
              help="SQLite file (created if absent) or postgresql://USER@HOST:PORT/DB for several instances")
@click.option("--data-dir", default=None, help="folder for uploaded originals (default: beside the SQLite file; required with PostgreSQL)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (0.0.0.0 exposes the service to the network)")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="image model of new photo collections: efficientnet_lite0|1|2, several joined by + "
                   "(efficientnet_lite0+efficientnet_lite1), or pixels (no model)")
@click.option("--encoder", default="all-MiniLM-L6-v2", show_default=True,
              help="text model of new sentence collections: all-MiniLM-L6-v2 (packaged), a local sentence-transformers folder, or hashing")
@click.option("--api-key", envvar="FEWSHOT_API_KEY", default=None, help="require this key (X-API-Key header) on every write [env FEWSHOT_API_KEY]")
@click.option("--max-upload-mb", type=float, default=10.0, show_default=True, help="largest accepted file")
@click.option("--max-pixels", type=int, default=40_000_000, show_default=True, help="largest accepted image (width x height)")
@click.option("--cors-origin", "cors_origins", multiple=True, help="allow browser pages from this origin (repeatable; default: CORS off)")
@click.option("--micro-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="concurrent sentence requests share one model pass of up to this many sentences (1: each alone)")
@click.option("--image-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="photos per model pass, merged from concurrent requests (1: each request alone)")
@click.option("--image-workers", type=click.IntRange(min=1), default=None, help="photo model workers running at once (default: one per core but one, at least 1)")
@click.option("--image-nice", type=click.IntRange(min=0, max=19), default=10, show_default=True,
              help="photo workers' CPU priority below the server's, so sentence requests go first (0: equal; Linux)")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per model worker")
@click.option("--preload/--no-preload", default=True, show_default=True, help="load the models at start, not on the first request")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db, data_dir, host, port, backbone, encoder, api_key, max_upload_mb, max_pixels, cors_origins, micro_batch, image_batch, image_workers, image_nice, threads, preload, log_level) -> None:
    """Serve collections of photos or sentences over HTTP: enrol examples, recognise new ones or say unknown.

    \b
    The page is at http://HOST:PORT/, the API under /api (OpenAPI document: /openapi.json).
    Example:
      fewshot serve --db staff.sqlite
    """
    try:
        from ..serve.server import build_app, run
    except ImportError as exc:
        raise click.ClickException(f"{exc}; install the service extra: pip install 'fewshot[serve]'") from exc
    from ..serve.storage import StorageError

    try:
        app = build_app(db, data_dir, backbone=backbone, encoder=encoder, preload=preload, micro_batch=micro_batch,
                        image_batch=image_batch, image_workers=image_workers, image_nice=image_nice, threads=threads, api_key=api_key or None,
                        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels, cors_origins=list(cors_origins))
    except (StorageError, ImportError, FileNotFoundError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"fewshot serve: http://{host}:{port}/ (database {db}; writes {'need the API key' if api_key else 'open'})", err=True)
    run(app, host, port, log_level)
