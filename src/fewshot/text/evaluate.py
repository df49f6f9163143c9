"""The few-shot intent protocol: K examples of every intent (full label space), a classifier fitted
on them, accuracy on the whole test split; mean ± 95% CI over seeds of the K-shot sample.

With out-of-scope data (CLINC150 ``oos_test``) the rejection threshold is chosen per seed on the
validation split (in-scope accuracy within ``max_drop``) and applied to the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..utils import mean_ci95
from .data import TextDataset, k_shot_indices
from .heads import TextClassifier
from .report import confused_pairs, macro_f1, per_class_report
from .openset import choose_threshold, open_set_metrics, tradeoff_curve

#: thresholds on which per-seed trade-off curves are averaged, per rejection rule
CURVE_GRID = {"probability": np.linspace(0.0, 1.0, 201), "similarity": np.linspace(-1.0, 1.0, 401),
              "neighbours": np.linspace(-1.0, 1.0, 401)}


@dataclass
class TextEvalResult:
    """Accuracy (in [0, 1]) ± CI over ``seeds``; seconds per seed for fit (wall and process CPU) and
    prediction; macro F1, the per-class report and the most confused pairs (pooled over seeds); with
    out-of-scope data, per rejection rule (:data:`~fewshot.text.heads.REJECT_BY`), the open-set numbers
    (means ± CI) and the mean trade-off curve."""

    accuracy: float
    ci95: float
    shot: int
    seeds: int
    per_seed: list[float]
    fit_seconds: float
    predict_seconds: float
    test_items: int
    oos: dict | None = None
    curve: dict | None = field(default=None, repr=False)
    report: list[dict] | None = field(default=None, repr=False)
    confusions: list[dict] | None = field(default=None, repr=False)
    macro_f1: float | None = None
    fit_cpu_seconds: float | None = None

    def to_dict(self, curve: bool = False) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "curve"}
        if curve and self.curve is not None:
            d["curve"] = {rule: {k: np.asarray(v).tolist() for k, v in c.items()} for rule, c in self.curve.items()}
        return d


def _labels(ds: TextDataset) -> list[str]:
    return [ds.class_names[i] for i in ds.y.tolist()]


def _stratified(ds: TextDataset, per_class: int | None, seed: int) -> TextDataset:
    """``per_class`` items of every class (all when None or when a class has fewer)."""
    if per_class is None:
        return ds
    y = ds.y.numpy()
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.choice(m, min(per_class, len(m)), replace=False)) for m in
            (np.flatnonzero(y == c) for c in range(ds.num_classes)) if len(m)]
    return ds.subset(np.concatenate(keep))


def _confidences(clf: TextClassifier, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per rejection rule the confidence ``[N]``, and the predicted class ``[N]``."""
    proba, conf = clf.confidences(texts)
    return {rule: c.float().cpu().numpy() for rule, c in conf.items()}, proba.argmax(-1).cpu().numpy()


def _predict(clf: TextClassifier, ds: TextDataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Confidences (per rule) and predicted class ids of ``ds`` (in ``ds.class_names``) ``[N]``."""
    conf, pred = _confidences(clf, ds.texts)
    index = {c: i for i, c in enumerate(ds.class_names)}
    return conf, np.array([index[clf.classes_[p]] for p in pred.tolist()], dtype=np.int64)


def _correct(clf: TextClassifier, ds: TextDataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Confidences (per rule) and correctness ``[N]`` of ``clf`` on the in-scope items of ``ds``."""
    conf, pred = _predict(clf, ds)
    return conf, pred == ds.y.numpy()


def evaluate_kshot(make_classifier: Callable[[int], TextClassifier], train: TextDataset, test: TextDataset,
                   shot: int, seeds: Sequence[int] = range(5), val: TextDataset | None = None,
                   oos_test: TextDataset | None = None, max_drop: float = 0.02,
                   val_per_class: int | None = None, test_per_class: int | None = None,
                   top_confusions: int = 10) -> TextEvalResult:
    """Fit ``make_classifier(seed)`` on ``shot`` examples per class of ``train`` for each seed and
    score the in-scope ``test`` items (optionally ``test_per_class`` of each, fixed across seeds).

    With ``val`` and ``oos_test``: per seed, the threshold keeping validation in-scope accuracy
    within ``max_drop`` (``val_per_class`` items per class), then test in-scope accuracy with
    rejection and OOS recall at it, for every rejection rule (top probability, top prototype similarity, neighbours).

    The per-class report (precision / recall / F1) and the ``top_confusions`` most confused
    (true, predicted) pairs pool the test predictions of all seeds.
    """
    test = _stratified(test.in_scope(), test_per_class, seed=12345)
    accs, fit_s, fit_cpu, pred_s, preds = [], [], [], [], []
    oos_rows: dict[str, list] = {r: [] for r in CURVE_GRID}
    curves: dict[str, list] = {r: [] for r in CURVE_GRID}
    for seed in seeds:
        chosen = k_shot_indices(train.y, shot, seed, train.num_classes)
        support = train.subset(chosen)
        clf = make_classifier(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        if getattr(clf, "self_train", 0):
            # Self-training reads the rest of the training split without its labels (as CPFT's pre-training does).
            rest = np.setdiff1d(np.arange(len(train)), chosen)
            clf.fit(support.texts, _labels(support), unlabelled=[train.texts[i] for i in rest])
        else:
            clf.fit(support.texts, _labels(support))
        t1 = time.perf_counter()
        fit_cpu.append(time.process_time() - c0)
        conf, pred = _predict(clf, test)
        pred_s.append(time.perf_counter() - t1)
        correct = pred == test.y.numpy()
        preds.append(pred)
        fit_s.append(t1 - t0)
        accs.append(float(correct.mean()))
        if val is not None and oos_test is not None:
            v = _stratified(val.in_scope(), val_per_class, seed)
            v_conf, v_correct = _correct(clf, v)
            o_conf, _ = _confidences(clf, oos_test.texts)
            for rule, grid in CURVE_GRID.items():
                thr = choose_threshold(v_conf[rule], v_correct, max_drop)
                oos_rows[rule].append(open_set_metrics(conf[rule], correct, o_conf[rule], thr))
                curves[rule].append(tradeoff_curve(conf[rule], correct, o_conf[rule], grid))
    mean, ci = mean_ci95(accs)
    oos = curve = None
    if oos_rows["probability"]:
        oos, curve = {}, {}
        for rule, rows in oos_rows.items():
            o = oos[rule] = {"max_drop": max_drop}
            for key in ("threshold", "in_scope_accuracy", "oos_recall", "in_scope_accuracy_no_rejection", "auroc"):
                o[key], o[key + "_ci95"] = mean_ci95([getattr(r, key) for r in rows])
            curve[rule] = {k: np.mean([c[k] for c in curves[rule]], axis=0) for k in ("threshold", "in_scope_accuracy", "oos_recall")}
    y_true, y_pred = np.tile(test.y.numpy(), len(preds)), np.concatenate(preds)
    report = per_class_report(y_true, y_pred, test.class_names)
    return TextEvalResult(mean, ci, shot, len(accs), accs, float(np.mean(fit_s)), float(np.mean(pred_s)),
                          len(test), oos, curve, report, confused_pairs(y_true, y_pred, test.class_names, top_confusions),
                          macro_f1(report), float(np.mean(fit_cpu)))


def evaluate_episodes(head, train: TextDataset, encoder, way: int, shot: int, query: int = 5,
                      tasks: int = 600, seed: int = 0):
    """N-way K-shot episodes on the embedded texts with :func:`fewshot.engine.evaluate.evaluate`
    (the image code path): ``head`` is any :class:`~fewshot.methods.FewShotMethod` on embeddings."""
    from ..tasks.episodes import TaskSet
    from ..engine.evaluate import evaluate

    ds = train.embed(encoder)
    ts = TaskSet.generate(ds, way, shot, query, tasks, seed=seed)
    return evaluate(head, ts.episodes(ds), device="cpu", channels_last=False)
