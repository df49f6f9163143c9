"""Labelled text in memory: loaders for BANKING77, CLINC150 and generic CSV/JSONL, K-shot sampling.

Texts stay strings in a :class:`TextDataset`; :meth:`TextDataset.embed` turns them into a
:class:`~fewshot.data.LabeledDataset` of embeddings so episodes, methods and evaluation are the
same code as for images.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import LabeledDataset

#: label of out-of-scope examples (CLINC150 ``oos``) in a :class:`TextDataset`
OOS = -1


@dataclass
class TextDataset:
    """Texts with class ids ``y [N]`` in ``0..num_classes-1``, or :data:`OOS` (-1) for out-of-scope."""

    texts: list[str]
    y: torch.Tensor
    class_names: list[str]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = torch.as_tensor(self.y, dtype=torch.long)
        if len(self.texts) != self.y.shape[0]:
            raise ValueError(f"{len(self.texts)} texts but {self.y.shape[0]} labels")
        if self.y.numel() and (self.y.min() < OOS or self.y.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1} (or -1 = out-of-scope)")

    @classmethod
    def from_labels(cls, texts: Sequence[str], labels: Sequence[str], class_names: Sequence[str] | None = None,
                    oos_label: str | None = None, info: dict | None = None) -> "TextDataset":
        """Map string labels to ids (sorted names unless ``class_names`` fixes the order);
        ``oos_label`` (e.g. ``"oos"``) becomes -1."""
        labels = [str(lab) for lab in labels]
        names = list(class_names) if class_names is not None else sorted({lab for lab in labels if lab != oos_label})
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({lab for lab in labels if lab not in index and lab != oos_label})
        if unknown:
            raise ValueError(f"labels not among the class names: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        y = [OOS if lab == oos_label else index[lab] for lab in labels]
        return cls([str(t) for t in texts], torch.tensor(y, dtype=torch.long), names, dict(info or {}))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "TextDataset":
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TextDataset([self.texts[i] for i in idx.tolist()], self.y[idx], self.class_names, dict(self.info))

    def in_scope(self) -> "TextDataset":
        return self.subset(torch.nonzero(self.y != OOS).flatten())

    def k_shot(self, shot: int, seed: int = 0) -> "TextDataset":
        """``shot`` examples of every class (the full label space), drawn without replacement."""
        return self.subset(k_shot_indices(self.y, shot, seed, self.num_classes))

    def embed(self, encoder) -> LabeledDataset:
        """The embedded dataset ``x [N, D]`` (in-scope items only) for episodes and methods."""
        ds = self.in_scope()
        return LabeledDataset(encoder.encode(ds.texts), ds.y, list(self.class_names), info={**self.info, "text": True})


def k_shot_indices(y: torch.Tensor | np.ndarray, shot: int, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Indices of ``shot`` random items per class ``0..num_classes-1`` (sorted by class), deterministic in ``seed``."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    n = int(y.max()) + 1 if num_classes is None else num_classes
    if shot < 1:
        raise ValueError(f"shot must be >= 1, got {shot}")
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        members = np.flatnonzero(y == c)
        if len(members) < shot:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than shot={shot}")
        out.append(np.sort(rng.choice(members, shot, replace=False)))
    return np.concatenate(out)


def _find(name: str, data_dir: str | Path | None, *candidates: str) -> Path:
    from ..data.sources import search_dirs

    tried = []
    for d in search_dirs(data_dir):
        for c in candidates:
            p = d / c
            tried.append(str(p))
            if p.exists():
                return p
    raise FileNotFoundError(
        f"{name} not found; tried {', '.join(tried)}. Pass --data-dir / data_dir (or set FEWSHOT_DATA) "
        f"to the folder holding it (download it from the official source first)"
    )


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from None


def read_seq_folder(path: str | Path) -> tuple[list[str], list[str]]:
    """Texts and labels from an intent-dataset folder: ``seq.in`` (one utterance a line) and
    ``label`` (one intent a line, same order), the layout of the few-shot intent benchmarks."""
    path = Path(path)
    seq, lab = path / "seq.in", path / "label"
    missing = [p.name for p in (seq, lab) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is a folder but has no {' / '.join(missing)}; a data folder holds seq.in "
                                f"(one text a line) and label (one label a line), or pass a CSV/JSONL file")
    texts, labels = _read_lines(seq), _read_lines(lab)
    while texts and not texts[-1].strip() and len(texts) > len(labels):
        texts.pop()
    while labels and not labels[-1].strip() and len(labels) > len(texts):
        labels.pop()
    if len(texts) != len(labels):
        raise ValueError(f"{path}: seq.in has {len(texts)} lines but label has {len(labels)}; they must pair up line by line")
    if not texts:
        raise ValueError(f"{path} has no rows")
    blank = [i + 1 for i, lab in enumerate(labels) if not lab.strip()]
    if blank:
        raise ValueError(f"{path}/label: empty label on line(s) {blank[:5]}")
    return texts, [lab.strip() for lab in labels]


def read_table(path: str | Path, text_col: str | None = None, label_col: str | None = None) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV (header row) or JSONL file; columns default to ``text`` and the
    first of ``label``/``category``/``intent``, or a ``seq.in`` + ``label`` folder (:func:`read_seq_folder`).
    A UTF-8 byte-order mark is ignored. Every row must have a text and a label that are strings or
    numbers (numbers become strings): a missing, empty, null, list or object value is an error
    naming the file and line."""
    path = Path(path)
    if path.is_dir():
        return read_seq_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    rows: list[tuple[int, dict]] = []  # (line number, row)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            with open(path, encoding="utf-8-sig") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except ValueError as exc:
                            raise ValueError(f"{path}, line {n}: not valid JSON ({exc}); expected one JSON object per line") from None
                        if not isinstance(row, dict):
                            raise ValueError(f"{path}, line {n}: a JSON {type(row).__name__}, expected an object "
                                             "such as {\"text\": ..., \"label\": ...}")
                        rows.append((n, row))
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = [(reader.line_num, r) for r in reader]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise ValueError(f"{path} has no rows")
    cols = list(rows[0][1])
    text_col = text_col or "text"
    label_col = label_col or next((c for c in ("label", "category", "intent") if c in cols), None)
    for what, col in (("text", text_col), ("label", label_col)):
        if col is None or col not in cols:
            raise ValueError(f"{path}: no {what} column {col!r}; columns are {cols} (choose with text_col=/label_col=)")
    texts, labels = [], []
    for n, row in rows:
        for what, col, out in (("text", text_col, texts), ("label", label_col, labels)):
            value = row.get(col)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
                got = "missing" if col not in row else "empty" if value in ("", None) else f"a {type(value).__name__} ({value!r})"
                raise ValueError(f"{path}, line {n}: the {what} ({col!r}) is {got}; every row needs a {what} "
                                 "(a string or number): fix or remove the row")
            out.append(str(value))
    return texts, labels


def load_text_table(path: str | Path, text_col: str | None = None, label_col: str | None = None,
                    class_names: Sequence[str] | None = None, oos_label: str | None = None) -> TextDataset:
    """A generic CSV/JSONL file as a :class:`TextDataset`."""
    texts, labels = read_table(path, text_col, label_col)
    return TextDataset.from_labels(texts, labels, class_names, oos_label, {"source": str(path)})


def load_text_files(train: str | Path, test: str | Path, val: str | Path | None = None, text_col: str | None = None,
                    label_col: str | None = None, oos_label: str | None = None) -> dict[str, TextDataset]:
    """The user's own splits: ``{"train", "test"[, "val"]}`` from CSV/JSONL files or ``seq.in`` +
    ``label`` folders, over the label space of ``train`` (sorted).

    With ``oos_label`` (e.g. ``oos``), test/val items carrying it become out-of-scope: they are
    returned apart as ``oos_test``/``oos_val`` (label -1), and ``train`` items with it are dropped
    from the label space (kept as -1). A test/val label absent from ``train`` is an error.
    """
    paths = {"train": train, "test": test, **({"val": val} if val is not None else {})}
    raw = {split: read_table(p, text_col, label_col) for split, p in paths.items()}
    names = sorted({lab for lab in raw["train"][1] if lab != oos_label})
    known = set(names)
    out = {}
    for split, (texts, labels) in raw.items():
        unseen = sorted({lab for lab in labels if lab not in known and lab != oos_label})
        if unseen:
            more = f" ... ({len(unseen)} in all)" if len(unseen) > 5 else ""
            hint = "" if oos_label else "; if they mark out-of-scope queries, name that label with --oos-label"
            raise ValueError(f"{split} labels absent from the training file: {unseen[:5]}{more}{hint}")
        ds = TextDataset.from_labels(texts, labels, names, oos_label, {"source": str(paths[split]), "split": split})
        if split == "train":
            out[split] = ds
        else:
            out[split] = ds.in_scope()
            oos = ds.subset(torch.nonzero(ds.y == OOS).flatten())
            if len(oos):
                out[f"oos_{split}"] = oos
    return out


def load_banking77(data_dir: str | Path | None = None) -> dict[str, TextDataset]:
    """BANKING77 (Casanueva et al. 2020): ``{"train": 10,003, "test": 3,080}`` over 77 intents."""
    root = _find("BANKING77 (train.csv, test.csv)", data_dir, "text/banking77", "banking77")
    raw = {s: read_table(root / f"{s}.csv", "text", "category") for s in ("train", "test")}
    names = sorted(set(raw["train"][1]))
    return {s: TextDataset.from_labels(t, lab, names, info={"source": "banking77", "split": s}) for s, (t, lab) in raw.items()}


def load_clinc150(data_dir: str | Path | None = None) -> dict[str, TextDataset]:
    """CLINC150 (Larson et al. 2019) ``data_full.json``: ``train/val/test`` (150 intents) and
    ``oos_train/oos_val/oos_test`` (label -1), all over the same 150 class names."""
    path = _find("CLINC150 data_full.json", data_dir, "text/clinc150/data_full.json", "clinc150/data_full.json", "data_full.json")
    try:
        with open(path, encoding="utf-8-sig") as f:
            raw = json.load(f)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); expected CLINC150's data_full.json") from None
    shape = "an object of splits (train, val, test, oos_*), each a list of [text, intent] pairs"
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list):
        raise ValueError(f"{path} is not CLINC150's data_full.json: expected {shape}")
    for split, rows in raw.items():
        bad = next((i for i, r in enumerate(rows) if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r)))
                   if isinstance(rows, list) else 0, None)
        if bad is not None:
            raise ValueError(f"{path}: split {split!r}, item {bad} is {rows[bad] if isinstance(rows, list) else rows!r:.80}; expected {shape}")
    names = sorted({lab for _, lab in raw["train"]})
    out = {}
    for split, rows in raw.items():
        texts, labels = [r[0] for r in rows], [r[1] for r in rows]
        out[split] = TextDataset.from_labels(texts, labels, names, oos_label="oos", info={"source": "clinc150", "split": split})
    return out


def load_text_dataset(name: str, data_dir: str | Path | None = None, text_col: str | None = None,
                      label_col: str | None = None, test_fraction: float = 0.3, seed: int = 0) -> dict[str, TextDataset]:
    """``banking77`` | ``clinc150`` | ``csv:PATH`` / ``jsonl:PATH`` (or a bare path) as splits.

    A single file is split per class into ``train``/``test`` (``test_fraction`` of each class).
    """
    if name == "banking77":
        return load_banking77(data_dir)
    if name == "clinc150":
        return load_clinc150(data_dir)
    path = name.split(":", 1)[1] if name.split(":", 1)[0] in ("csv", "jsonl") else name
    ds = load_text_table(path, text_col, label_col)
    rng = np.random.default_rng(seed)
    test = []
    for c in range(ds.num_classes):
        members = np.flatnonzero(ds.y.numpy() == c)
        test.extend(rng.choice(members, int(round(test_fraction * len(members))), replace=False).tolist())
    mask = np.zeros(len(ds), bool)
    mask[test] = True
    return {"train": ds.subset(np.flatnonzero(~mask)), "test": ds.subset(np.flatnonzero(mask))}
