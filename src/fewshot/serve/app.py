"""The HTTP API of ``fewshot serve`` (FastAPI): collections, classes, examples, recognise, export.

Every error is ``{"detail": message}`` with the status that fits (400 bad input, 401 missing API
key, 404 unknown name, 409 conflict or empty collection, 413 too large, 415 not an image).
The OpenAPI document is at ``/openapi.json``, interactive docs at ``/docs``, the page at ``/``.
"""

from __future__ import annotations

import hmac
import io
import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from .. import __version__
from .embedders import EmbedderPool
from .recognizer import BackgroundCalibrator, CollectionIndex
from .storage import Change, Collection, NewExample, NotFound, SQLStorage, StorageError
from .uploads import MAX_PIXELS, MAX_TEXT_CHARS, MAX_UPLOAD_BYTES, UploadError, check_size, check_text, decode_image

EXPORT_FORMAT = "fewshot-collection/1"


@dataclass
class ServeSettings:
    """Limits and safety switches of one service."""

    api_key: str | None = None  # required (X-API-Key or Authorization: Bearer) on every write when set
    max_upload_bytes: int = MAX_UPLOAD_BYTES  # one file
    max_request_bytes: int = 100 * 1024 * 1024  # one request body
    max_pixels: int = MAX_PIXELS
    max_queries: int = 64  # queries per recognise request
    max_text_chars: int = MAX_TEXT_CHARS
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off


class ServeError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Service:
    """Storage + embedders + the in-memory index of each collection.

    This process's own writes update the index in place (the storage announces each committed
    :class:`~fewshot.serve.storage.Change`); a version that moved otherwise (another process wrote)
    makes the next request reload the collection from the database. Large collections are
    recalibrated in the background after a change (:class:`~fewshot.serve.recognizer.BackgroundCalibrator`).
    """

    def __init__(self, storage: SQLStorage, embedders: EmbedderPool, settings: ServeSettings):
        self.storage, self.embedders, self.settings = storage, embedders, settings
        self._indexes: dict[int, CollectionIndex] = {}
        self._lock = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}
        self.calibrator = BackgroundCalibrator()
        storage.listeners.append(self._on_change)

    def embedder(self, collection: Collection):
        try:
            emb = self.embedders.get(collection.embedder)
        except KeyError as exc:
            raise ServeError(str(exc.args[0]), 409) from None
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise ServeError(f"embedder {collection.embedder!r} cannot be loaded: {exc}", 503) from None
        if emb.dim != collection.dim:
            raise ServeError(f"embedder {emb.name} gives {emb.dim}-d embeddings but collection {collection.name!r} holds {collection.dim}-d", 409)
        return emb

    def _collection_lock(self, collection_id: int) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(collection_id, threading.Lock())

    def _install(self, collection_id: int, idx: CollectionIndex) -> CollectionIndex:
        self._indexes[collection_id] = idx
        if not idx.calibration_current:
            self.calibrator.submit(collection_id, idx)
        return idx

    def index(self, collection: Collection) -> CollectionIndex:
        with self._collection_lock(collection.id):
            version = self.storage.collection_version(collection.id)
            if version is None:
                raise NotFound(f"collection {collection.name!r} was deleted")
            idx = self._indexes.get(collection.id)
            if idx is None or idx.version != version:  # first use, or written by another process
                idx = self._install(collection.id, CollectionIndex.from_snapshot(self.storage.load_matrix(collection), previous=idx))
            return idx

    def _on_change(self, change: Change) -> None:
        """A write committed through this process's storage: update the index in place when it follows it."""
        with self._collection_lock(change.collection_id):
            idx = self._indexes.get(change.collection_id)
            if change.kind == "drop":
                self._indexes.pop(change.collection_id, None)
            elif idx is None or idx.version >= change.version:
                return  # not loaded, or already reloaded with this write in it
            elif idx.version + 1 == change.version:
                self._install(change.collection_id, idx.apply(change))
            else:  # another process wrote in between: the next request reloads
                self._indexes.pop(change.collection_id, None)

    def embed(self, collection: Collection, items: list) -> np.ndarray:
        return self.embedder(collection).embed(items).float().numpy()

    def recognize(self, collection: Collection, items: list, k: int, threshold: float | None) -> dict:
        if not items:
            raise ServeError("no queries: send at least one", 400)
        if len(items) > self.settings.max_queries:
            raise ServeError(f"{len(items)} queries is over the limit of {self.settings.max_queries} per request; split them", 400)
        idx = self.index(collection)
        if len(idx) == 0:
            raise ServeError(f"collection {collection.name!r} has no examples yet: enrol some before recognising", 409)
        q = torch.from_numpy(self.embed(collection, items))
        if threshold is not None:
            t, source = threshold, "request"
        elif collection.threshold is not None:
            t, source = collection.threshold, "collection"
        else:
            t, source = idx.calibration.threshold, idx.calibration.source
        return {"threshold": t, "threshold_source": source, "results": idx.recognize(q, k, t)}


# --- request bodies -------------------------------------------------------------------------------
class CollectionCreate(BaseModel):
    name: str = Field(description="1-64 letters, digits, '_', '.', '-'")
    kind: str = Field(description="image | text")
    embedder: str | None = Field(None, description="kind:model, one enabled on this server (default: the server's)")


class CollectionUpdate(BaseModel):
    name: str | None = None
    threshold: float | None = Field(None, description="fixed decision threshold; null returns to the calibrated one")


class ClassCreate(BaseModel):
    name: str


class ExampleMove(BaseModel):
    class_name: str = Field(alias="class")


class TextEnroll(BaseModel):
    class_name: str = Field(alias="class")
    texts: list[Any]


class TextQuery(BaseModel):
    texts: list[Any]
    k: int = Field(5, ge=1, le=100)
    threshold: float | None = None


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, declared or streamed (chunked).

    A streamed body that crosses the limit is answered 413 at once; the application then sees the
    client disconnect and whatever it tries to send is dropped.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send, int(declared))
        seen = 0
        state = {"started": False, "rejected": False}

        async def counted():
            nonlocal seen
            if state["rejected"]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit and not state["started"]:
                    state["rejected"] = True
                    await self._reject(send, seen)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded(msg):
            if state["rejected"]:
                return
            state["started"] = state["started"] or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not state["rejected"]:
                raise

    async def _reject(self, send, size: int):
        body = json.dumps({"detail": f"request body of {size:,}+ bytes is over the limit of {self.limit:,} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"),
                                                                              (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(storage: SQLStorage, embedders: EmbedderPool, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    svc = Service(storage, embedders, settings)
    app = FastAPI(title="fewshot serve", version=__version__,
                  description="Enrol a few examples per class; recognise new photos or sentences, or answer unknown.")
    app.state.service = svc
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    @app.exception_handler(StorageError)
    async def _storage_error(request: Request, exc: StorageError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def write_access(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ServeError("this server needs an API key for writes: send it as the X-API-Key header", 401)

    writes = [Depends(write_access)]

    def collection(name: str) -> Collection:
        return storage.get_collection(name)

    def describe(col: Collection) -> dict:
        idx = svc.index(col)
        cal = idx.calibration
        return {**col.to_dict(), "examples": len(idx), "classes": [c.to_dict() for c in storage.list_classes(col.id)],
                "calibration": {**cal.to_dict(), "current": idx.calibration_current},
                "effective_threshold": col.threshold if col.threshold is not None else cal.threshold}

    async def read_files(files: list[UploadFile], kind: str) -> list[tuple[bytes, str]]:
        if kind != "image":
            raise ServeError("this is a text collection: send JSON {\"texts\": [...]} to the text endpoint", 400)
        out = []
        for f in files:
            data = await f.read(settings.max_upload_bytes + 1)
            name = f.filename or "upload"
            check_size(data, name, settings.max_upload_bytes)
            out.append((data, name))
        if not out:
            raise ServeError("no files: attach at least one image as 'files'", 400)
        return out

    def decode_all(blobs: list[tuple[bytes, str]]):
        return [decode_image(d, n, settings.max_pixels) for d, n in blobs]

    def texts_of(col: Collection, texts: list) -> list[str]:
        if col.kind != "text":
            raise ServeError("this is an image collection: upload images (multipart 'files') to the upload endpoint", 400)
        if not texts:
            raise ServeError("no texts: give at least one", 400)
        return [check_text(t, settings.max_text_chars) for t in texts]

    # --- page, health -------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "storage": repr(storage), "schema_version": storage.schema_version(),
                "embedders": embedders.defaults, "writes_need_key": settings.api_key is not None}

    # --- collections --------------------------------------------------------------------------
    @app.get("/api/collections")
    def list_collections() -> list[dict]:
        return [c.to_dict() for c in storage.list_collections()]

    @app.post("/api/collections", status_code=201, dependencies=writes)
    def create_collection(body: CollectionCreate) -> dict:
        if body.kind not in ("image", "text"):
            raise ServeError(f"kind {body.kind!r} is not image or text", 400)
        try:
            name = body.embedder or embedders.default(body.kind)
        except KeyError as exc:
            raise ServeError(str(exc.args[0]), 400) from None
        if not name.startswith(body.kind + ":"):
            raise ServeError(f"embedder {name!r} is not a {body.kind} embedder", 400)
        try:
            emb = embedders.get(name)
        except KeyError as exc:
            raise ServeError(str(exc.args[0]), 400) from None
        return describe(storage.create_collection(body.name, body.kind, emb.name, emb.dim))

    @app.get("/api/collections/{name}")
    def get_collection(col: Collection = Depends(collection)) -> dict:
        return describe(col)

    @app.patch("/api/collections/{name}", dependencies=writes)
    def update_collection(body: CollectionUpdate, col: Collection = Depends(collection)) -> dict:
        clear = "threshold" in body.model_fields_set and body.threshold is None
        return describe(storage.update_collection(col.name, body.name, body.threshold, clear_threshold=clear))

    @app.delete("/api/collections/{name}", status_code=204, dependencies=writes)
    def delete_collection(col: Collection = Depends(collection)) -> Response:
        storage.delete_collection(col.name)
        return Response(status_code=204)

    # --- classes ------------------------------------------------------------------------------
    @app.get("/api/collections/{name}/classes")
    def list_classes(col: Collection = Depends(collection)) -> list[dict]:
        return [c.to_dict() for c in storage.list_classes(col.id)]

    @app.post("/api/collections/{name}/classes", status_code=201, dependencies=writes)
    def create_class(body: ClassCreate, col: Collection = Depends(collection)) -> dict:
        return storage.create_class(col.id, body.name).to_dict()

    @app.patch("/api/collections/{name}/classes/{class_id}", dependencies=writes)
    def rename_class(class_id: int, body: ClassCreate, col: Collection = Depends(collection)) -> dict:
        return storage.rename_class(col.id, class_id, body.name).to_dict()

    @app.delete("/api/collections/{name}/classes/{class_id}", status_code=204, dependencies=writes)
    def delete_class(class_id: int, col: Collection = Depends(collection)) -> Response:
        storage.delete_class(col.id, class_id)
        return Response(status_code=204)

    # --- examples -----------------------------------------------------------------------------
    @app.get("/api/collections/{name}/examples")
    def list_examples(class_id: int | None = None, col: Collection = Depends(collection)) -> list[dict]:
        return [e.to_dict() for e in storage.list_examples(col.id, class_id)]

    @app.post("/api/collections/{name}/examples", status_code=201, dependencies=writes)
    def enroll_texts(body: TextEnroll, col: Collection = Depends(collection)) -> dict:
        """Enrol sentences into a class of a text collection (the class is created if absent)."""
        texts = texts_of(col, body.texts)
        emb = svc.embed(col, texts)
        added = storage.add_examples(col.id, body.class_name, [NewExample(e, text=t) for e, t in zip(emb, texts)])
        return {"class": body.class_name.strip(), "added": [e.to_dict() for e in added]}

    @app.post("/api/collections/{name}/examples/upload", status_code=201, dependencies=writes)
    async def enroll_images(class_name: str = Form(..., alias="class"), files: list[UploadFile] = File(...),
                            col: Collection = Depends(collection)) -> dict:
        """Enrol uploaded photos (multipart ``files``) into ``class`` of an image collection; all or nothing."""
        blobs = await read_files(files, col.kind)

        def work():
            images = decode_all(blobs)
            emb = svc.embed(col, images)
            return storage.add_examples(col.id, class_name, [NewExample(e, data=d, filename=n) for e, (d, n) in zip(emb, blobs)])

        added = await run_in_threadpool(work)
        return {"class": class_name.strip(), "added": [e.to_dict() for e in added]}

    @app.get("/api/collections/{name}/examples/{example_id}/original")
    def original(example_id: int, col: Collection = Depends(collection)) -> Response:
        ex = storage.get_example(col.id, example_id)
        if ex.blob is None:
            raise ServeError(f"example {example_id} has no stored original (a text, or imported)", 404)
        data = storage.blobs.get(ex.blob)
        from PIL import Image

        fmt = (Image.open(io.BytesIO(data)).format or "octet-stream").lower()
        return Response(data, media_type=f"image/{fmt}", headers={"X-Content-Type-Options": "nosniff",
                                                                 "Cache-Control": "max-age=86400, immutable"})

    @app.patch("/api/collections/{name}/examples/{example_id}", dependencies=writes)
    def move_example(example_id: int, body: ExampleMove, col: Collection = Depends(collection)) -> dict:
        return storage.move_example(col.id, example_id, body.class_name).to_dict()

    @app.delete("/api/collections/{name}/examples/{example_id}", status_code=204, dependencies=writes)
    def delete_example(example_id: int, col: Collection = Depends(collection)) -> Response:
        storage.delete_example(col.id, example_id)
        return Response(status_code=204)

    # --- recognise ----------------------------------------------------------------------------
    @app.post("/api/collections/{name}/recognize")
    def recognize_texts(body: TextQuery, col: Collection = Depends(collection)) -> dict:
        """Top-k classes and a decision (class or unknown) for each sentence."""
        return svc.recognize(col, texts_of(col, body.texts), body.k, body.threshold)

    @app.post("/api/collections/{name}/recognize/upload")
    async def recognize_images(files: list[UploadFile] = File(...), k: int = Query(5, ge=1, le=100),
                               threshold: float | None = Query(None), col: Collection = Depends(collection)) -> dict:
        """Top-k classes and a decision (class or unknown) for each uploaded photo."""
        blobs = await read_files(files, col.kind)
        out = await run_in_threadpool(lambda: svc.recognize(col, decode_all(blobs), k, threshold))
        for r, (_, n) in zip(out["results"], blobs):
            r["file"] = n
        return out

    # --- export / import ----------------------------------------------------------------------
    @app.get("/api/collections/{name}/export")
    def export(col: Collection = Depends(collection)) -> Response:
        """The collection as one safetensors file: ``embeddings [N, D]``, ``labels [N]``, JSON metadata."""
        from safetensors.numpy import save

        for _ in range(5):  # the matrix and the example list must come from the same version
            idx = svc.index(col)
            examples = storage.list_examples(col.id)
            if len(examples) == len(idx) and storage.collection_version(col.id) == idx.version:
                break
        else:
            raise ServeError("the collection kept changing during the export; try again", 503)
        class_of = dict(zip(idx.class_ids, range(len(idx.class_ids))))
        meta = {"format": EXPORT_FORMAT, "name": col.name, "kind": col.kind, "embedder": col.embedder, "dim": col.dim,
                "threshold": col.threshold, "classes": idx.class_names,
                "examples": [{"class": class_of[e.class_id], "text": e.text, "filename": e.filename, "sha256": e.blob}
                             for e in examples]}
        data = save({"embeddings": idx.emb.numpy(), "labels": idx.labels.numpy()}, metadata={"fewshot": json.dumps(meta)})
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{col.name}.safetensors"'})

    @app.post("/api/collections/import", status_code=201, dependencies=writes)
    async def import_collection(file: UploadFile = File(...), name: str | None = Query(None)) -> dict:
        """Create a collection from an export (originals are not part of it)."""
        data = await file.read(settings.max_request_bytes + 1)
        meta, emb, labels = parse_export(data)
        col_name = name or meta["name"]
        if meta["embedder"] not in embedders.allowed:
            raise ServeError(f"the export was made with {meta['embedder']!r}, which is not enabled on this server", 409)
        classes = meta["classes"]
        pairs = [(classes[int(lab)], NewExample(e, text=x.get("text"), filename=x.get("filename")))
                 for e, lab, x in zip(emb, labels, meta["examples"])]
        col = await run_in_threadpool(storage.import_collection, col_name, meta["kind"], meta["embedder"], meta["dim"],
                                      meta.get("threshold"), classes, pairs)
        return describe(col)

    return app


def parse_export(data: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    """Validate an export file: ``(metadata, embeddings [N, D] float32, labels [N])``."""
    from safetensors.numpy import load

    bad = "the file is not a fewshot collection export (a .safetensors from GET /api/collections/NAME/export)"
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        meta = json.loads(header["__metadata__"]["fewshot"])
        tensors = load(data)
        emb, labels = tensors["embeddings"].astype(np.float32), tensors["labels"].astype(np.int64)
    except Exception:
        raise ServeError(bad, 400) from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ServeError(f"{bad}; format {meta.get('format')!r} is not {EXPORT_FORMAT!r}", 400)
    n_ex, n_cls = len(meta.get("examples", [])), len(meta.get("classes", []))
    if emb.ndim != 2 or emb.shape != (n_ex, meta.get("dim")) or labels.shape != (n_ex,) or \
            (n_ex and (labels.min() < 0 or labels.max() >= n_cls)) or not np.isfinite(emb).all():
        raise ServeError(f"{bad}: its tensors do not match its metadata", 400)
    return meta, emb, labels
