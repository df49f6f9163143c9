"""Out-of-scope rejection: answer "unknown" when a query's confidence is below a threshold.

Works on any confidence (text or image): a method's top probability, exactly what
``FewShotMethod.predict(query_x, threshold)`` compares, or a similarity. The threshold is
chosen on validation data as the largest one that keeps in-scope accuracy within ``max_drop`` of
the accuracy without rejection (a rejected in-scope query counts as an error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..utils import subplots


@dataclass
class OpenSetResult:
    """In-scope accuracy (rejections count as errors), out-of-scope recall (share rejected), at ``threshold``."""

    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    in_scope_accuracy_no_rejection: float
    auroc: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def tradeoff_curve(conf_in: np.ndarray, correct_in: np.ndarray, conf_oos: np.ndarray,
                   thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """In-scope accuracy and OOS recall for each threshold (a query is kept when ``conf >= t``).

    Default thresholds: every distinct confidence observed, plus 0 (no rejection).
    """
    conf_in, correct_in, conf_oos = np.asarray(conf_in), np.asarray(correct_in, bool), np.asarray(conf_oos)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([[0.0], conf_in, conf_oos]))
    thresholds = np.sort(np.asarray(thresholds, dtype=np.float64))
    # Counting with sorted arrays: O((N + T) log N) rather than O(N * T).
    kept_correct = np.sort(conf_in[correct_in])
    acc = (len(kept_correct) - np.searchsorted(kept_correct, thresholds, side="left")) / max(len(conf_in), 1)
    oos = np.sort(conf_oos)
    recall = np.searchsorted(oos, thresholds, side="left") / max(len(oos), 1)
    return {"threshold": thresholds, "in_scope_accuracy": acc, "oos_recall": recall}


def choose_threshold(conf_in: np.ndarray, correct_in: np.ndarray, max_drop: float = 0.02) -> float:
    """The largest threshold whose in-scope accuracy is at least ``accuracy(no rejection) - max_drop``."""
    curve = tradeoff_curve(conf_in, correct_in, np.empty(0))
    ok = curve["in_scope_accuracy"] >= curve["in_scope_accuracy"][0] - max_drop - 1e-12
    return float(curve["threshold"][ok].max())


def auroc(conf_in: np.ndarray, conf_oos: np.ndarray) -> float:
    """Area under the ROC curve of telling in-scope (positive) from out-of-scope queries by
    confidence: the chance a random in-scope query scores above a random OOS one (ties count half)."""
    conf_in, conf_oos = np.asarray(conf_in, np.float64), np.asarray(conf_oos, np.float64)
    if not len(conf_in) or not len(conf_oos):
        return float("nan")
    from sklearn.metrics import roc_auc_score

    target = np.concatenate([np.ones(len(conf_in)), np.zeros(len(conf_oos))])
    return float(roc_auc_score(target, np.concatenate([conf_in, conf_oos])))


def open_set_metrics(conf_in: np.ndarray, correct_in: np.ndarray, conf_oos: np.ndarray, threshold: float) -> OpenSetResult:
    conf_in, correct_in, conf_oos = np.asarray(conf_in), np.asarray(correct_in, bool), np.asarray(conf_oos)
    return OpenSetResult(
        float(threshold),
        float(np.mean(correct_in & (conf_in >= threshold))),
        float(np.mean(conf_oos < threshold)) if len(conf_oos) else float("nan"),
        float(np.mean(correct_in)),
        auroc(conf_in, conf_oos),
    )


def plot_tradeoff(curves: dict[str, dict[str, np.ndarray]], path: str, title: str = "Out-of-scope rejection",
                  marks: dict[str, OpenSetResult] | None = None) -> str:
    """In-scope accuracy vs OOS recall as the threshold grows, one line per method; PNG at ``path``."""

    fig, ax = subplots(figsize=(6, 4.5))
    for i, (name, c) in enumerate(curves.items()):
        line, = ax.plot(100 * np.asarray(c["oos_recall"]), 100 * np.asarray(c["in_scope_accuracy"]), label=name)
        if marks and name in marks:
            m = marks[name]
            ax.plot(100 * m.oos_recall, 100 * m.in_scope_accuracy, "o", color=line.get_color())
    ax.set_xlabel("out-of-scope recall (%)")
    ax.set_ylabel("in-scope accuracy (%, rejections are errors)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
