"""``fewshot serve``: enrol a few photos or sentences per class over HTTP, recognise new ones or say unknown.

Layers: :mod:`.storage` (SQLite / PostgreSQL), :mod:`.embedders` (photos and sentences -> unit
vectors), :mod:`.recognizer` (in-memory search and leave-one-out threshold), :mod:`.uploads`
(input checks), :mod:`.app` (the FastAPI application and the page). Needs ``pip install 'fewshot[serve]'``.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """See :func:`fewshot.serve.app.create_app` (imported lazily: FastAPI is an optional extra)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
