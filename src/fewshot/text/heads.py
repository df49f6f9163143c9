"""Classifier heads on fixed embeddings ``[N, D]`` (text or image features alike), and the
text-level estimator that puts an encoder in front of one.

A head is a :class:`~fewshot.methods.FewShotMethod` without a backbone (items are embeddings),
so ``fit``/``scores``/``predict(threshold=)`` and :func:`fewshot.engine.evaluate.evaluate` work
unchanged. ``prototype`` *is* the library's ProtoNet with the ``identity`` backbone and cosine
distance; any other registered method that only needs embeddings can be named too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.backbones import Identity
from ..nn.distances import class_means, pairwise_logits
from ..nn.propagation import label_propagation
from ..methods.base import FewShotMethod, check_support, inference_context


#: ``TextClassifier(knn_vote=)``'s default ``knn_scale``: votes weighted by ``exp(20 * cosine)``, a
#: softmax at temperature 0.05 over the k nearest (10 / 40 / 80 measured level or worse on
#: validation data, docs/text.md)
KNN_VOTE_SCALE = 20.0


class KNNHead(FewShotMethod):
    """k-nearest neighbours by cosine similarity, votes weighted by ``exp(scale * similarity)``.

    ``scores [Q, way]`` are the log of each class's share of the weighted vote (so
    ``predict_proba`` is that share and ``predict(threshold=)`` rejects split votes).
    """

    def __init__(self, backbone: nn.Module | None = None, k: int = 5, scale: float = 10.0):
        super().__init__(backbone)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.scale = k, scale
        self.support: torch.Tensor | None = None
        self.support_y: torch.Tensor | None = None

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "KNNHead":
        self.task_way = check_support(support_x, support_y)
        self.support, self.support_y = self.embed(support_x), support_y.long()
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.support is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        q = self.embed(query_x)
        # in chunks of queries: the [chunk, N] similarities stay small however large the support
        # (after self-training it holds the pseudo-labelled pool, ~10^4 items)
        return torch.cat([self._log_votes(c) for c in q.split(1024)]) if len(q) else q.new_zeros(0, self.task_way)

    def _log_votes(self, q: torch.Tensor) -> torch.Tensor:
        sim = pairwise_logits(q, self.support, "cosine")  # [Q, N]
        k = min(self.k, sim.shape[1])
        top, idx = sim.topk(k, dim=1)
        w = (self.scale * (top - top[:, :1])).exp()  # relative to the nearest: no overflow
        votes = torch.zeros(sim.shape[0], self.task_way, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, self.support_y[idx], w)
        return (votes / votes.sum(1, keepdim=True)).clamp_min(1e-12).log()


class LogisticHead(FewShotMethod):
    """Multinomial logistic regression (scikit-learn, L-BFGS) on L2-normalised embeddings.

    ``C`` is the inverse L2 strength; the fit is deterministic. ``scores`` are log-probabilities.
    """

    def __init__(self, backbone: nn.Module | None = None, C: float = 10.0, max_iter: int = 500, normalize: bool = True):
        super().__init__(backbone)
        self.C, self.max_iter, self.normalize = C, max_iter, normalize
        self.clf = None

    def _features(self, x: torch.Tensor) -> np.ndarray:
        z = self.embed(x).float()
        if self.normalize:
            z = F.normalize(z, dim=1)
        return z.detach().cpu().numpy()

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "LogisticHead":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self.task_way = check_support(support_x, support_y)
        self.clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit(self._features(support_x), support_y.cpu().numpy())
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.clf is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        logp = self.clf.predict_log_proba(self._features(query_x))
        return torch.from_numpy(logp.astype(np.float32)).to(query_x.device)


HEADS = ("prototype", "knn", "logreg")


def build_head(name: str = "prototype", **params) -> FewShotMethod:
    """``prototype`` (ProtoNet, identity backbone, cosine), ``knn``, ``logreg``, or the name of any
    registered method that works on embeddings (built with the identity backbone).

    ``params`` may be strings (``-p KEY=VALUE``): they are coerced by the head's annotations."""
    from ..methods.params import coerce_params

    if name == "prototype":
        from ..methods.metric import ProtoNet

        params.setdefault("distance", "cosine")
        return ProtoNet(Identity(), **coerce_params(ProtoNet, params))
    if name == "knn":
        return KNNHead(**coerce_params(KNNHead, params))
    if name == "logreg":
        return LogisticHead(**coerce_params(LogisticHead, params))
    from ..methods.registry import build_method

    try:
        return build_method(name, backbone=Identity(), **params)
    except ValueError as exc:
        raise ValueError(f"{exc} (text heads: {', '.join(HEADS)}, setfit)") from exc


#: out-of-scope confidences (see :class:`TextClassifier`)
REJECT_BY = ("probability", "similarity", "neighbours")
#: where self-training's pseudo-labels come from: the fitted head, label propagation over the pool, or their mean
SELF_TRAIN_BY = ("head", "propagation", "both")


def label_text(name: str) -> str:
    """A class name as a sentence for the encoder: ``Card_arrival`` / ``card-arrival`` -> ``card arrival``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


class TextClassifier:
    """Encoder + head over raw texts with string labels.

    Out-of-scope rejection (``threshold``) compares one of three confidences (``reject_by``):
    the head's top probability (``"probability"``, the rule of ``FewShotMethod.predict``); the
    query's highest cosine similarity to a class prototype, the mean support embedding
    (``"similarity"``: does not depend on how many classes share the probability mass); or the
    mean of that similarity and the cosine to the query's ``neighbours``-th nearest text seen by
    ``fit`` (support and unlabelled texts: ``"neighbours"``; deep nearest-neighbour OOD
    detection, Sun et al. 2022, in front of the prototypes: a query far from every in-scope
    utterance is out of scope even when it lies near one prototype).

    ``knn_vote`` > 0 mixes a k-nearest-neighbour vote into the head's probabilities:
    ``(1 - knn_vote) * head + knn_vote * vote``, the vote being the similarity-weighted labels of
    the query's ``knn_k`` nearest labelled embeddings (support, and after self-training the
    pseudo-labelled pool; weights ``exp(knn_scale * cosine)``, Khandelwal et al. 2020's kNN-LM
    interpolation). A local correction of the linear head where a dense pool knows the region.

    >>> clf = TextClassifier(encoder, "logreg").fit(["hi", "bye"], ["greet", "leave"])
    >>> clf.predict(["hello"], threshold=0.5)   # a label, or None (unknown) below the threshold
    """

    def __init__(self, encoder, head: FewShotMethod | str = "prototype", label_names: bool = False, augment: int = 0,
                 augment_seed: int = 0, self_train: float = 0.0, self_train_rounds: int = 2, center: bool = False,
                 neighbours: int = 5, self_train_by: str = "head", knn_vote: float = 0.0, knn_k: int = 10,
                 knn_scale: float = KNN_VOTE_SCALE, **head_params):
        if augment < 0:
            raise ValueError(f"augment must be >= 0 (augmented copies per support text), got {augment}")
        if not 0.0 <= self_train <= 1.0 or self_train_rounds < 1:
            raise ValueError(f"self_train must lie in [0, 1] (share of the unlabelled texts) and self_train_rounds >= 1, "
                             f"got {self_train}, {self_train_rounds}")
        if self_train_by not in SELF_TRAIN_BY:
            raise ValueError(f"self_train_by must be one of {SELF_TRAIN_BY}, got {self_train_by!r}")
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1 (the k of the k-th nearest seen text), got {neighbours}")
        if not 0.0 <= knn_vote <= 1.0 or knn_k < 1 or not knn_scale > 0:
            raise ValueError(f"knn_vote must lie in [0, 1] (the vote's share of the probabilities), knn_k >= 1 and "
                             f"knn_scale > 0 (votes weigh exp(knn_scale * cosine)), got {knn_vote}, {knn_k}, {knn_scale}")
        self.encoder = encoder
        self.head = build_head(head, **head_params) if isinstance(head, str) else head
        self.label_names, self.augment, self.augment_seed = label_names, augment, augment_seed
        self.self_train, self.self_train_rounds, self.center = self_train, self_train_rounds, center
        self.neighbours, self.self_train_by = neighbours, self_train_by
        self.knn_vote, self.knn_k, self.knn_scale = knn_vote, knn_k, knn_scale
        #: with ``knn_vote``: the k-NN head over the labelled embeddings (support + pseudo-labelled items)
        self.vote_: KNNHead | None = None
        self.classes_: list[str] = []
        self.prototypes_: torch.Tensor | None = None
        #: the L2-normalised embeddings of every text seen by fit (support + unlabelled) ``[N, D]``
        self.seen_: torch.Tensor | None = None
        self.unlabelled_seen_ = False
        self.mean_: torch.Tensor | None = None
        #: after self-training: the unlabelled items of the last round (indices) and their pseudo-labels
        self.pseudo_: tuple[torch.Tensor, torch.Tensor] | None = None

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings ``[N, D]``; with ``center``, L2-normalised and minus the mean fitted by :meth:`fit`."""
        return self._centered(self.encoder.encode(list(texts)))

    def _centered(self, x: torch.Tensor) -> torch.Tensor:
        # Centering on the data's own mean (SimpleShot's CL2N) spreads embeddings that all share one
        # dominant direction, so cosines and the head's normalised features separate classes better.
        return x if self.mean_ is None else F.normalize(x.float(), dim=1) - self.mean_

    def support_texts(self, texts: Sequence[str], labels: Sequence) -> tuple[list[str], list[str]]:
        """The texts the head is fitted on: the support set, plus ``augment`` EDA copies of each
        text (:mod:`fewshot.text.augment`), plus each class's name as one more example when
        ``label_names`` (``card_arrival`` -> ``card arrival``)."""
        texts, labels = [str(t) for t in texts], [str(lab) for lab in labels]
        if self.augment:
            from .augment import augment_texts

            texts, labels = augment_texts(texts, labels, self.augment, seed=self.augment_seed)
        if self.label_names:
            names = sorted(set(labels))
            texts, labels = texts + [label_text(n) for n in names], labels + names
        return texts, labels

    def fit(self, texts: Sequence[str], labels: Sequence, unlabelled: Sequence[str] | None = None) -> "TextClassifier":
        """Fit on labelled ``texts``; with ``self_train`` > 0, also self-train on ``unlabelled`` texts."""
        return self._fit_head(*self.support_texts(texts, labels), unlabelled)

    def _fit_head(self, texts: list[str], labels: list[str], unlabelled: Sequence[str] | None = None) -> "TextClassifier":
        """Prototypes and head on the embedded ``texts`` (already expanded by :meth:`support_texts`),
        then the self-training rounds."""
        self.classes_ = sorted({str(lab) for lab in labels})
        index = {c: i for i, c in enumerate(self.classes_)}
        y = torch.tensor([index[str(lab)] for lab in labels], dtype=torch.long)
        self.mean_, self.pseudo_ = None, None
        x = self.embed(texts)
        u = self.embed(unlabelled) if unlabelled else None
        if self.center:  # the mean of all the texts seen: the unlabelled pool when there is one
            seen = x if u is None else torch.cat([x, u])
            self.mean_ = F.normalize(seen.float(), dim=1).mean(0)
            x, u = self._centered(x), None if u is None else self._centered(u)
        self.seen_ = F.normalize((x if u is None else torch.cat([x, u])).float(), dim=1)
        self.unlabelled_seen_ = u is not None
        self.prototypes_ = F.normalize(class_means(F.normalize(x, dim=1), y, len(self.classes_)), dim=1)
        with inference_context(self.head):
            self.head.eval().fit(x, y)
            if u is not None and self.self_train > 0:
                x, y = self._self_train(x, y, u)
        self.vote_ = KNNHead(k=self.knn_k, scale=self.knn_scale).fit(x, y) if self.knn_vote > 0 else None
        return self

    def _self_train(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-training (pseudo-labelling, Yarowsky 1995; Lee 2013) on unlabelled embeddings ``u [U, D]``:
        each round labels the pool with the current head, keeps each predicted class's
        ``self_train * U / way`` most confident items, and refits the head on support + those.
        ``self_train_by`` says whose probabilities label the pool: the current head's, label
        propagation's over the k-NN graph of support + pool (:func:`~fewshot.nn.propagation.label_propagation`,
        which does not depend on the head: one round), or their mean.
        The class prototypes (similarity rejection) become the means of support + the last round's items,
        which are returned: ``x_all [S + P, D]``, ``y_all [S + P]``."""
        way = len(self.classes_)
        per_class = max(1, int(round(self.self_train * len(u) / way)))
        spread = None
        if self.self_train_by != "head":
            spread = label_propagation(torch.cat([x, u]), y, way)
        # propagation alone labels the pool the same way every round and the heads' fits are
        # deterministic, so further rounds would refit the head on the same items
        rounds = 1 if self.self_train_by == "propagation" else self.self_train_rounds
        for _ in range(rounds):
            proba = spread if self.self_train_by == "propagation" else self.head.predict_proba(u)
            if self.self_train_by == "both":
                proba = (proba + spread) / 2
            conf, pseudo = proba.max(1)
            keep = []
            for c in range(way):
                members = torch.nonzero(pseudo == c).flatten()
                keep.append(members[conf[members].argsort(descending=True)[:per_class]])
            keep = torch.cat(keep)
            x_all, y_all = torch.cat([x, u[keep]]), torch.cat([y, pseudo[keep]])
            self.head.fit(x_all, y_all)
        self.pseudo_ = (keep, pseudo[keep])
        self.prototypes_ = F.normalize(class_means(F.normalize(x_all, dim=1), y_all, way), dim=1)
        return x_all, y_all

    def _proba(self, x: torch.Tensor) -> torch.Tensor:
        """The head's class probabilities ``[Q, way]`` for embeddings ``x``, mixed with the k-NN vote."""
        with inference_context(self.head):
            proba = self.head.predict_proba(x)
        if self.vote_ is None:
            return proba
        return (1 - self.knn_vote) * proba + self.knn_vote * self.vote_.predict_proba(x).to(proba.dtype)

    def confidences(self, texts: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Class probabilities ``[Q, way]`` (order of ``classes_``) and, per rule of
        :data:`REJECT_BY`, each query's confidence ``[Q]``, from one encoding pass."""
        if self.prototypes_ is None:
            raise RuntimeError("call fit(texts, labels) before predicting")
        x = self.embed(texts)
        proba = self._proba(x)
        q = F.normalize(x.float(), dim=1)
        sim = (q @ self.prototypes_.T).max(1).values
        k = min(self.neighbours, len(self.seen_))
        # in chunks: [chunk, N] similarities to every seen text stay small however large the pool
        knn = torch.cat([(c @ self.seen_.T).topk(k, dim=1).values[:, -1] for c in q.split(1024)]) if len(q) else sim
        return proba, {"probability": proba.max(1).values, "similarity": sim, "neighbours": (sim + knn) / 2}

    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities ``[Q, way]`` in the order of ``classes_``."""
        return self._proba(self.embed(texts))

    def reject_rule(self, reject_by: str = "auto") -> str:
        """The rule ``reject_by`` names; ``"auto"``: the best measured for how the classifier was fitted
        (CLINC150, benchmarks/results/text.md): ``"neighbours"`` when ``fit`` saw unlabelled texts
        (they are the neighbours; +4 to +7 points of OOS recall over similarity), else ``"similarity"``
        (with the support alone the k-th nearest text is often another class's: below similarity)."""
        if reject_by == "auto":
            return "neighbours" if self.unlabelled_seen_ else "similarity"
        if reject_by not in REJECT_BY:
            raise ValueError(f"reject_by must be 'auto' or one of {REJECT_BY}, got {reject_by!r}")
        return reject_by

    def predict(self, texts: Sequence[str], threshold: float | None = None, reject_by: str = "auto") -> list[str | None]:
        """Labels, with ``None`` (unknown) where the confidence (:meth:`reject_rule`) is below ``threshold``."""
        rule = self.reject_rule(reject_by)
        if threshold is None:  # no rejection: the confidences (a pass over every seen text) are not needed
            return [self.classes_[p] for p in self.predict_proba(texts).argmax(-1).tolist()]
        proba, conf = self.confidences(texts)
        keep = conf[rule] >= threshold
        pred = torch.where(keep, proba.argmax(-1), torch.full_like(keep, -1, dtype=torch.long))
        return [self.classes_[p] if p >= 0 else None for p in pred.tolist()]
