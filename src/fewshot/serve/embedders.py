"""Embedders behind one small protocol: a batch of photos or sentences -> L2-normalised ``[N, D]``.

A collection names its embedder once (``image:efficientnet_lite0``, ``text:all-MiniLM-L6-v2``, ...)
and keeps it: its stored embeddings are only comparable with that model's. The service loads each
named embedder once, on first use.

* ``image:<backbone>`` — a pretrained backbone, or several joined by ``+``
  (:func:`fewshot.engine.features.image_embedder`);
* ``image:pixels`` — the photo itself, grey, 32x32, centred: no model, instant and deterministic
  (tests; a floor to compare against);
* ``text:<encoder>`` — :func:`fewshot.text.encoder.load_encoder` (``all-MiniLM-L6-v2`` packaged
  offline, or ``hashing``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import configure_worker_thread

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """``name`` (``kind:model``), ``kind`` (image | text), ``dim``, and ``embed(items) -> [N, dim]``."""

    name: str
    kind: str
    dim: int

    def embed(self, items: Sequence) -> torch.Tensor: ...


class PixelEmbedder:
    """Grey ``size x size`` pixels, mean-centred and L2-normalised: a model-free image embedding."""

    kind = "image"

    def __init__(self, size: int = 32):
        self.size = size
        self.dim = size * size
        self.name = "image:pixels" if size == 32 else f"image:pixels{size}"

    def embed(self, items: Sequence[Image.Image]) -> torch.Tensor:
        rows = [np.asarray(im.convert("L").resize((self.size, self.size), Image.BILINEAR), dtype=np.float32).ravel() / 255
                for im in items]
        x = torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, self.dim)
        return F.normalize(x - x.mean(1, keepdim=True), dim=1)


class BackboneEmbedder:
    """A pretrained image backbone from :mod:`fewshot.engine.features` (loaded offline)."""

    kind = "image"

    def __init__(self, backbone: str = DEFAULT_BACKBONE):
        try:
            from ..engine.features import image_embedder
        except ImportError as exc:
            raise ImportError(f"image backbone {backbone!r} needs fewshot.engine.features and the vision extra: "
                              "pip install 'fewshot[vision]' (or use --backbone pixels)") from exc
        self.model = image_embedder(backbone)
        self.name = f"image:{backbone}"
        self.dim = int(self.model.dim)

    def embed(self, items: Sequence[Image.Image]) -> torch.Tensor:
        if not items:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            return F.normalize(self.model.embed_images(list(items)).float(), dim=1)


class TextEmbedder:
    """A :class:`fewshot.text.encoder.TextEncoder` (its disk cache off: every text is embedded anew).

    On CPUs with native bf16 instructions the encoder runs under bfloat16 autocast, as the photo
    model does: a batch of 4 sentences in 19 ms instead of 26 (1 thread), embeddings equal to
    float32's to cosine > 0.9999; sentence latency is the service's tightest target."""

    kind = "text"

    def __init__(self, encoder: str = DEFAULT_ENCODER):
        from ..engine.precision import cpu_has_native_bf16
        from ..text.encoder import load_encoder

        self.model = load_encoder(encoder, cache=False)
        self.name = f"text:{encoder}"
        self.dim = int(self.model.dim)
        self.autocast = cpu_has_native_bf16()

    def embed(self, items: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return F.normalize(self.model.encode(list(items)).float(), dim=1)


def build_embedder(name: str) -> Embedder:
    """The embedder called ``name`` (``kind:model``)."""
    kind, _, model = name.partition(":")
    if kind == "image" and model == "pixels":
        return PixelEmbedder()
    if kind == "image" and model:
        return BackboneEmbedder(model)
    if kind == "text" and model:
        return TextEmbedder(model)
    raise ValueError(f"embedder {name!r} is not 'image:<backbone>' or 'text:<encoder>'")


@dataclass
class WorkerSettings:
    """How the models of one kind run in a service: ``workers`` threads pulling requests from one
    queue, each merging up to ``max_batch`` waiting items into one pass with ``threads`` torch
    threads, at CPU priority lowered by ``nice`` (see :class:`MicroBatcher`)."""

    max_batch: int = 32
    workers: int = 1
    threads: int | None = 1
    nice: int = 0


class EmbedderPool:
    """The embedders this service may use (fixed at start), each built once on first use.

    ``defaults`` maps a kind to the embedder new collections of that kind get. Only names in
    ``allowed`` are ever built: a request never chooses a model path. With ``workers`` each
    embedder of a kind listed there runs through a :class:`MicroBatcher` with those settings;
    otherwise in the requesting thread.
    """

    def __init__(self, defaults: dict[str, str], allowed: Sequence[str] = (), prebuilt: Sequence[Embedder] = (),
                 workers: dict[str, WorkerSettings] | None = None):
        self.defaults = dict(defaults)
        self.workers = dict(workers or {})
        self._built: dict[str, Embedder] = {e.name: e for e in prebuilt}
        self.allowed = set(allowed) | set(self.defaults.values()) | set(self._built)
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        if name not in self.allowed:
            raise KeyError(f"embedder {name!r} is not enabled on this server (enabled: {', '.join(sorted(self.allowed))}); "
                           "start it with --backbone/--encoder naming it")
        with self._lock:
            if name not in self._built:
                emb = build_embedder(name)
                w = self.workers.get(emb.kind)
                self._built[name] = MicroBatcher(emb, w.max_batch, w.threads, w.nice, w.workers) if w else emb
            return self._built[name]

    def default(self, kind: str) -> str:
        if kind not in self.defaults:
            raise KeyError(f"no {kind} embedder is enabled on this server")
        return self.defaults[kind]


class MicroBatcher:
    """Run an embedder on ``workers`` threads, each merging the requests that wait into one batch.

    Concurrent requests then share one forward pass (fewer, larger matrix products) instead of
    competing for the cores with one small pass each; each embedder has its own workers, so cheap
    sentence queries never queue behind photos. ``threads`` sets each worker's own torch
    (intra-op) thread count, leaving other workers' alone. ``nice > 0`` lowers the workers' CPU
    priority (Linux; elsewhere ignored): photo workers that would otherwise take every core then
    yield them to short sentence work and request handling, and use what they leave.
    """

    def __init__(self, embedder: Embedder, max_batch: int = 32, threads: int | None = None, nice: int = 0, workers: int = 1):
        import queue

        self.inner, self.max_batch, self.threads, self.nice = embedder, max_batch, threads, nice
        self.name, self.kind, self.dim = embedder.name, embedder.kind, embedder.dim
        self._queue: queue.Queue = queue.Queue()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"embed-{self.name}-{i}", daemon=True).start()

    def embed(self, items: Sequence) -> torch.Tensor:
        from concurrent.futures import Future

        done: Future = Future()
        self._queue.put((list(items), done))
        return done.result()

    def _work(self) -> None:
        import queue

        configure_worker_thread(self.threads, self.nice)
        while True:
            jobs = [self._queue.get()]
            size = len(jobs[0][0])
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                size += len(job[0])
            try:
                out = self.inner.embed([x for items, _ in jobs for x in items])
            except Exception as exc:  # noqa: BLE001  (handed to every waiting request)
                for _, done in jobs:
                    done.set_exception(exc)
                continue
            start = 0
            for items, done in jobs:
                done.set_result(out[start:start + len(items)])
                start += len(items)
