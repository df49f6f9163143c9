"""Assemble and run a service: storage + embedders + settings -> a FastAPI app on uvicorn."""

from __future__ import annotations

from pathlib import Path

from .embedders import DEFAULT_BACKBONE, DEFAULT_ENCODER, EmbedderPool
from .storage import SQLStorage, open_storage

#: Model-free embedders every server offers besides the configured ones (tests, quick trials).
ALWAYS_ENABLED = ("image:pixels", "text:hashing")
#: Photo model workers' niceness above the server's (measured: sentence p95 under mixed load; docs/serve.md).
IMAGE_NICE = 10


def build_app(db: str | Path, data_dir: str | Path | None = None, backbone: str = DEFAULT_BACKBONE,
              encoder: str = DEFAULT_ENCODER, preload: bool = False, micro_batch: int = 32,
              image_threads: int | None = None, text_threads: int | None = 1, **settings):
    """The app for database ``db`` (SQLite path or ``postgresql://`` URL); ``settings`` go to
    :class:`~fewshot.serve.app.ServeSettings`. New image collections use ``backbone``, new text
    collections ``encoder``; collections already in the database keep the embedder they were made with.
    ``micro_batch``: concurrent requests share one forward pass of up to this many items (0: off).
    ``image_threads``/``text_threads``: torch threads of each photo / sentence model's worker
    (``None``: torch's setting, one per core). Photo workers run at a lower CPU priority
    (:data:`IMAGE_NICE`) so that sentence requests are not held up behind photo batches."""
    from .app import ServeSettings, create_app

    storage: SQLStorage = open_storage(db, data_dir)
    storage.collect_garbage()
    defaults = {"image": f"image:{backbone}", "text": f"text:{encoder}"}
    existing = {c.embedder for c in storage.list_collections()}
    pool = EmbedderPool(defaults, allowed=[*ALWAYS_ENABLED, *existing], micro_batch=micro_batch,
                        threads={"image": image_threads, "text": text_threads}, nice={"image": IMAGE_NICE})
    if preload:
        for name in defaults.values():
            pool.get(name)
    return create_app(storage, pool, ServeSettings(**settings))


def run(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
