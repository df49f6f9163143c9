"""Assemble and run a service: storage + embedders + settings -> a FastAPI app on uvicorn."""

from __future__ import annotations

from pathlib import Path

from ..utils import default_threads
from .embedders import DEFAULT_BACKBONE, DEFAULT_ENCODER, EmbedderPool, WorkerSettings
from .storage import SQLStorage, open_storage

#: Model-free embedders every server offers besides the configured ones (tests, quick trials).
ALWAYS_ENABLED = ("image:pixels", "text:hashing")


def build_app(db: str | Path, data_dir: str | Path | None = None, backbone: str = DEFAULT_BACKBONE,
              encoder: str = DEFAULT_ENCODER, preload: bool = False, micro_batch: int = 32, image_batch: int = 1,
              image_workers: int | None = None, threads: int = 1, image_nice: int = 10, **settings):
    """The app for database ``db`` (SQLite path or ``postgresql://`` URL); ``settings`` go to
    :class:`~fewshot.serve.app.ServeSettings`. New image collections use ``backbone``, new text
    collections ``encoder``; collections already in the database keep the embedder they were made with.

    How the models run (:class:`~fewshot.serve.embedders.WorkerSettings`; defaults measured in
    docs/serve.md): sentences on one worker merging up to ``micro_batch`` waiting ones per pass;
    photos on ``image_workers`` workers (default: one per CPU this process may use, but one, which
    is left to sentences and HTTP), ``image_batch`` per pass, at CPU priority lowered by
    ``image_nice`` so that sentence requests go first; ``threads`` torch threads per worker."""
    from .app import ServeSettings, create_app

    storage: SQLStorage = open_storage(db, data_dir)
    storage.collect_garbage()
    defaults = {"image": f"image:{backbone}", "text": f"text:{encoder}"}
    existing = {c.embedder for c in storage.list_collections()}
    workers = {"text": WorkerSettings(micro_batch, 1, threads),
               "image": WorkerSettings(image_batch, image_workers or max(1, default_threads() - 1), threads, image_nice)}
    pool = EmbedderPool(defaults, allowed=[*ALWAYS_ENABLED, *existing], workers=workers)
    if preload:
        for name in defaults.values():
            pool.get(name)
    return create_app(storage, pool, ServeSettings(**settings))


def run(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
