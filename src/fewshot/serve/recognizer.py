"""Recognition over one collection: nearest-example cosine scores per class, a threshold, top-k.

A collection's examples are held in memory as one L2-normalised matrix ``[N, D]``; a query's score
for a class is its highest cosine similarity to that class's examples (1-nearest neighbour per
class, which suits one or two examples per class). The answer is the top class when its score
reaches the threshold, ``unknown`` otherwise.

The threshold is calibrated leave-one-out from the collection's own examples (:func:`calibrate`):
every example, left out, should still be recognised as its class (its score against the rest of
its class must pass), and should be rejected as unknown when its whole class is left out (its best
score against the other classes must not pass). The threshold minimising those two error counts
is taken, halfway between the neighbouring scores.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..utils import configure_worker_thread

#: Used until a collection has the examples to calibrate from (two classes, one with 2 examples).
DEFAULT_THRESHOLD = 0.5
#: Leave-one-out scores at most this many examples (a fixed, seeded sample) against the whole collection,
#: and at most CALIBRATION_BUDGET similarities in all: 2,000 up to 25k examples, 500 at 100k.
CALIBRATION_SAMPLE = 2000
CALIBRATION_BUDGET = 50_000_000


@dataclass
class Calibration:
    threshold: float
    source: str  # calibrated | default
    genuine: int  # left-out examples with another example of their class
    impostor: int  # left-out examples scored against the other classes only
    false_rejects: int
    false_accepts: int

    def to_dict(self) -> dict:
        return asdict(self)


def class_scores(emb: torch.Tensor, labels: torch.Tensor, num_classes: int, queries: torch.Tensor) -> torch.Tensor:
    """Per-class max cosine ``[Q, C]`` of unit ``queries [Q, D]`` vs unit ``emb [N, D]`` with ``labels [N]``.

    Classes without examples score ``-inf``.
    """
    sims = queries @ emb.T  # [Q, N]
    out = torch.full((queries.shape[0], num_classes), float("-inf"), dtype=sims.dtype)
    return out.scatter_reduce(1, labels.expand_as(sims), sims, reduce="amax", include_self=True)


def calibrate(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> Calibration:
    """Leave-one-out threshold from ``emb [N, D]`` (unit rows) and ``labels [N]``."""
    n = len(labels)
    if n < 2:
        return Calibration(DEFAULT_THRESHOLD, "default", 0, 0, 0, 0)
    idx = np.arange(n)
    sample = min(CALIBRATION_SAMPLE, max(256, CALIBRATION_BUDGET // n))
    if n > sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    e, lab = torch.from_numpy(emb), torch.from_numpy(labels)
    genuine, impostor = torch.empty(len(idx)), torch.empty(len(idx))
    step = max(1, 2**22 // n)  # rows per chunk: the similarity block stays near 16 MB
    for s in range(0, len(idx), step):
        rows = torch.from_numpy(idx[s:s + step])
        sims = e[rows] @ e.T  # [r, N]
        sims[torch.arange(len(rows)), rows] = float("-inf")  # leave each one out
        same = lab[rows][:, None] == lab[None, :]
        genuine[s:s + step] = sims.masked_fill(~same, float("-inf")).amax(1)
        impostor[s:s + step] = sims.masked_fill(same, float("-inf")).amax(1)
    g = genuine[torch.isfinite(genuine)].double().numpy()
    u = impostor[torch.isfinite(impostor)].double().numpy()
    if len(g) == 0 or len(u) == 0:
        return Calibration(DEFAULT_THRESHOLD, "default", len(g), len(u), 0, 0)
    # Candidate thresholds: halfway between neighbouring distinct scores, and past both ends.
    s = np.unique(np.concatenate([g, u]))
    cands = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    gs, us = np.sort(g), np.sort(u)
    false_rejects = np.searchsorted(gs, cands, side="left")  # genuine < t
    false_accepts = len(us) - np.searchsorted(us, cands, side="left")  # impostor >= t
    errors = false_rejects / len(g) + false_accepts / len(u)  # balanced: classes are few, impostors many
    best = np.flatnonzero(errors == errors.min())
    i = best[len(best) // 2]  # the middle of a tie: the widest margin
    return Calibration(float(cands[i]), "calibrated", len(g), len(u), int(false_rejects[i]), int(false_accepts[i]))


#: Collections of at most this many examples are recalibrated at once after a change; larger ones
#: in the background (:class:`BackgroundCalibrator`), answering with the previous threshold meanwhile.
SYNC_CALIBRATION_MAX = 2000


def _row_buffers(capacity: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised row storage of a :class:`CollectionIndex`: embeddings ``[capacity, dim]``,
    labels and example ids ``[capacity]``."""
    return (torch.empty(capacity, dim), torch.empty(capacity, dtype=torch.int64),
            torch.empty(capacity, dtype=torch.int64))


class CollectionIndex:
    """One collection's embeddings in memory at one ``version``, with its calibration.

    An index never changes once built, so a request works on one consistent view: a write makes a
    new index (:meth:`apply`). Enrolments append in place to a row buffer shared with the previous
    index (grown by doubling; the previous index only ever reads rows below its own length); other
    changes copy the rows they keep.

    ``calibration`` is computed on first use. An index derived from another one (a write, or a
    reload after another process's write) over :data:`SYNC_CALIBRATION_MAX` examples starts with
    its predecessor's calibration, marked not ``calibration_current``, until :meth:`set_calibration`
    gives it its own (see :class:`BackgroundCalibrator`).
    """

    def __init__(self, version: int, emb: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                 example_ids: np.ndarray | torch.Tensor, class_ids: list[int], class_names: list[str],
                 previous: "CollectionIndex | None" = None, _buffers: tuple | None = None, same_examples: bool = False):
        self.version = version
        self.class_ids, self.class_names = list(class_ids), list(class_names)
        if _buffers is None:
            n = len(labels)
            emb_buf, lab_buf, id_buf = _row_buffers(n + n // 8 + 16, torch.as_tensor(emb).shape[1])
            emb_buf[:n] = torch.as_tensor(emb, dtype=torch.float32)
            lab_buf[:n], id_buf[:n] = torch.as_tensor(labels), torch.as_tensor(example_ids)
            _buffers = (emb_buf, lab_buf, id_buf, [n], n)
        self._emb_buf, self._lab_buf, self._id_buf, self._used, n = _buffers
        self.emb, self.labels, self.example_ids = self._emb_buf[:n], self._lab_buf[:n], self._id_buf[:n]
        self._calibration: Calibration | None = None
        self.calibration_current = True
        if same_examples and previous is not None:  # nothing the calibration depends on changed
            self._calibration, self.calibration_current = previous._calibration, previous.calibration_current
        elif previous is not None and n > SYNC_CALIBRATION_MAX and previous._calibration is not None:
            self._calibration, self.calibration_current = previous._calibration, False

    @classmethod
    def from_snapshot(cls, snap, previous: "CollectionIndex | None" = None) -> "CollectionIndex":
        """From :meth:`~fewshot.serve.storage.SQLStorage.load_matrix`'s snapshot."""
        return cls(snap.version, snap.embeddings, snap.labels, snap.example_ids, snap.class_ids, snap.class_names, previous)

    def __len__(self) -> int:
        return self.emb.shape[0]

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            self._calibration = calibrate(self.emb.numpy(), self.labels.numpy())
        return self._calibration

    def set_calibration(self, calibration: Calibration) -> None:
        self._calibration, self.calibration_current = calibration, True

    def apply(self, change) -> "CollectionIndex":
        """The index after ``change`` (a :class:`~fewshot.serve.storage.Change` made at ``self.version + 1``)."""
        if change.version != self.version + 1:
            raise ValueError(f"change to version {change.version} does not follow version {self.version}")
        kind, ids, names = change.kind, self.class_ids, self.class_names
        if kind == "settings":
            return self._derive(change.version, ids, names, self._shared(), same_examples=True)
        if kind == "class":  # a new class has no examples yet
            return self._derive(change.version, ids + [change.class_id], names + [change.class_name], self._shared(), same_examples=True)
        if kind == "rename":
            i = ids.index(change.class_id)
            return self._derive(change.version, ids, names[:i] + [change.class_name] + names[i + 1:], self._shared(), same_examples=True)
        if kind == "add":
            if change.class_id not in ids:
                ids, names = ids + [change.class_id], names + [change.class_name]
            return self._derive(change.version, ids, names, self._appended(torch.from_numpy(change.embeddings),
                                                                          ids.index(change.class_id), change.example_ids))
        keep = torch.ones(len(self), dtype=torch.bool)
        labels = self.labels.clone()
        if kind == "delete":
            keep &= ~torch.isin(self.example_ids, torch.tensor(change.example_ids, dtype=torch.int64))
        elif kind == "move":
            if change.class_id not in ids:
                ids, names = ids + [change.class_id], names + [change.class_name]
            labels[self.example_ids == change.example_ids[0]] = ids.index(change.class_id)
        elif kind == "delete_class":
            gone = ids.index(change.class_id)
            keep &= labels != gone
            labels -= (labels > gone).long()
            ids, names = ids[:gone] + ids[gone + 1:], names[:gone] + names[gone + 1:]
        else:
            raise ValueError(f"unknown change {kind!r}")
        rows = keep.nonzero().squeeze(1)
        m = len(rows)
        emb_buf, lab_buf, id_buf = _row_buffers(m + m // 8 + 16, self.emb.shape[1])
        torch.index_select(self.emb, 0, rows, out=emb_buf[:m])  # one copy, straight into the new buffer
        lab_buf[:m], id_buf[:m] = labels[rows], self.example_ids[rows]
        return self._derive(change.version, ids, names, (emb_buf, lab_buf, id_buf, [m], m))

    def _shared(self) -> tuple:
        return self._emb_buf, self._lab_buf, self._id_buf, self._used, len(self)

    def _appended(self, rows: torch.Tensor, label: int, example_ids: list[int]) -> tuple:
        n, k = len(self), len(rows)
        emb_buf, lab_buf, id_buf, used = self._emb_buf, self._lab_buf, self._id_buf, self._used
        if used[0] != n or n + k > len(emb_buf):  # the buffer is full, or rows past n belong to another index
            emb_buf, lab_buf, id_buf = _row_buffers(max(2 * (n + k), 16), emb_buf.shape[1])
            emb_buf[:n], lab_buf[:n], id_buf[:n] = self.emb, self.labels, self.example_ids
            used = [n]
        emb_buf[n:n + k], lab_buf[n:n + k] = rows, label
        id_buf[n:n + k] = torch.tensor(example_ids, dtype=torch.int64)
        used[0] = n + k
        return emb_buf, lab_buf, id_buf, used, n + k

    def _derive(self, version: int, class_ids: list[int], class_names: list[str], buffers: tuple,
                same_examples: bool = False) -> "CollectionIndex":
        return CollectionIndex(version, None, None, None, class_ids, class_names, previous=self, _buffers=buffers,
                               same_examples=same_examples)

    def recognize(self, queries: torch.Tensor, k: int, threshold: float) -> list[dict]:
        """For each query ``[Q, D]``: ``{"decision", "class", "score", "top": [{"class", "class_id", "score"}]}``."""
        scores = class_scores(self.emb, self.labels, len(self.class_ids), queries.float())
        present = torch.isfinite(scores[0]).sum().item() if len(scores) else 0
        k = max(1, min(k, present))
        top_s, top_i = scores.topk(k, dim=1)
        out = []
        for s_row, i_row in zip(top_s.tolist(), top_i.tolist()):
            top = [{"class": self.class_names[i], "class_id": self.class_ids[i], "score": round(s, 6)} for s, i in zip(s_row, i_row)]
            known = s_row[0] >= threshold
            out.append({"decision": "class" if known else "unknown", "class": top[0]["class"] if known else None,
                        "score": round(s_row[0], 6), "top": top})
        return out


class BackgroundCalibrator:
    """Calibrates indexes on one low-priority worker thread, the newest index of each collection first.

    :meth:`submit` replaces a collection's waiting index, so a burst of writes costs one calibration,
    of the latest state; requests meanwhile keep the previous threshold.
    """

    def __init__(self, nice: int = 10):
        import threading

        self.nice = nice
        self._waiting: dict[int, CollectionIndex] = {}
        self._cond = threading.Condition()
        self._busy = False
        threading.Thread(target=self._work, name="calibrate", daemon=True).start()

    def submit(self, collection_id: int, index: CollectionIndex) -> None:
        with self._cond:
            self._waiting[collection_id] = index
            self._cond.notify()

    def idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is waiting or running (tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout)

    def _work(self) -> None:
        configure_worker_thread(1, self.nice)  # one thread at low priority: requests keep the cores
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting)
                _, index = self._waiting.popitem()
                self._busy = True
            try:
                index.set_calibration(calibrate(index.emb.numpy(), index.labels.numpy()))
            except Exception:  # noqa: BLE001  (the index keeps its previous threshold; the worker lives on)
                logging.getLogger(__name__).exception("calibration of a collection at version %d failed", index.version)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
