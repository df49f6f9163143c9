"""Per-class precision / recall / F1 and the class pairs most often confused, from predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One row per class: ``precision``, ``recall``, ``f1`` (0 where undefined) and ``support``
    (true items); ``y_true``/``y_pred`` are class ids ``[N]``, a prediction of -1 (rejected) counts
    against recall only."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rows = []
    for c, name in enumerate(class_names):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        support, predicted = int(np.sum(y_true == c)), int(np.sum(y_pred == c))
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        rows.append({"class": name, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                     "support": support})
    return rows


def macro_f1(report: list[dict]) -> float:
    """Mean F1 over the classes that have test items."""
    scored = [r["f1"] for r in report if r["support"]]
    return float(np.mean(scored)) if scored else float("nan")


def confused_pairs(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], top: int = 10) -> list[dict]:
    """The ``top`` (true, predicted) class pairs with the most errors: ``count`` and ``share`` of
    the true class's items sent to the predicted one; ties broken by class names."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = (y_true != y_pred) & (y_pred >= 0)
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([y_true[wrong], y_pred[wrong]], 1), axis=0, return_counts=True)
    support = np.bincount(y_true[y_true >= 0], minlength=len(class_names))
    order = sorted(range(len(pairs)), key=lambda i: (-counts[i], class_names[pairs[i][0]], class_names[pairs[i][1]]))
    return [{"true": class_names[pairs[i][0]], "predicted": class_names[pairs[i][1]], "count": int(counts[i]),
             "share": float(counts[i] / support[pairs[i][0]])} for i in order[:top]]
