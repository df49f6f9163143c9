"""SetFit-style few-shot text classification (Tunstall et al. 2022): contrastively fine-tune the
sentence encoder on pairs drawn from the K-shot data, then fit a head on the tuned embeddings.

Pairs are sampled, never enumerated: ``max_pairs`` bounds the work (and memory) whatever the
number of examples, half positive (same class, target cosine 1) and half negative (target 0),
trained with SetFit's cosine-similarity loss ``(cos(u, v) - target)^2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..methods.base import FewShotMethod
from ..utils import check_finite
from .heads import TextClassifier, build_head


def sample_pairs(y: Sequence[int] | np.ndarray | torch.Tensor, max_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``max_pairs`` index pairs ``(a, b)`` and targets (1 = same class, 0 = different), half each.

    Anchors cycle through the items in a shuffled order so every example is used; O(max_pairs)
    time and memory. Classes with a single example give no positives (their anchors get negatives).
    """
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be >= 2, got {max_pairs}")
    if len(np.unique(y)) < 2:
        raise ValueError("contrastive pairs need at least two classes in the support set")
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    anchors = np.concatenate([rng.permutation(len(y)) for _ in range(-(-max_pairs // len(y)))])[:max_pairs]
    a, b, t = np.empty(max_pairs, np.int64), np.empty(max_pairs, np.int64), np.empty(max_pairs, np.float32)
    for i, anc in enumerate(anchors):
        same = by_class[y[anc]]
        positive = i % 2 == 0 and len(same) > 1
        if positive:
            other = anc
            while other == anc:
                other = same[rng.integers(len(same))]
        else:
            other = rng.integers(len(y))
            while y[other] == y[anc]:
                other = rng.integers(len(y))
        a[i], b[i], t[i] = anc, other, float(positive)
    return a, b, t


def contrastive_finetune(encoder, texts: Sequence[str], y, max_pairs: int = 1000, batch_size: int = 16,
                         lr: float = 2e-5, epochs: int = 1, seed: int = 0) -> list[float]:
    """Fine-tune ``encoder`` (a :class:`~fewshot.text.encoder.TextEncoder`, in place) on sampled
    pairs with the cosine-similarity loss; returns the loss of each step."""
    torch.manual_seed(seed)
    a, b, t = sample_pairs(y, max_pairs, seed)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    dev = params[0].device
    losses = []
    encoder.train()
    rng = np.random.default_rng(seed + 1)
    with torch.enable_grad():
        for _ in range(epochs):
            order = rng.permutation(len(a))
            for s in range(0, len(order), batch_size):
                j = order[s:s + batch_size]
                z = encoder([texts[i] for i in np.concatenate([a[j], b[j]])])
                cos = F.cosine_similarity(z[:len(j)], z[len(j):], dim=1)
                loss = F.mse_loss(cos, torch.as_tensor(t[j], device=dev))
                check_finite(loss, "SetFit contrastive fine-tuning")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    encoder.eval()
    return losses


LOSSES = ("pairs", "supcon")


class SetFitClassifier(TextClassifier):
    """Contrastive fine-tuning of a copy of ``encoder`` on the support texts, then a head.

    Args:
        encoder: the base :class:`~fewshot.text.encoder.TextEncoder` (left untouched; each ``fit``
            tunes a fresh copy, whose embeddings bypass the cache).
        head: ``logreg`` (SetFit's default), ``prototype``, ``knn`` or a head instance.
        loss: ``pairs`` (SetFit: cosine-similarity loss on ``max_pairs`` sampled pairs) or
            ``supcon`` (CPFT's supervised stage: ``steps`` batches of ``batch_size`` texts,
            every same-class pair in a batch a positive; see :mod:`fewshot.text.contrastive`).
        max_pairs: the pair budget per ``fit`` of ``pairs`` (SetFit's ``num_iterations * 2 * N`` grows with N).
        steps: batches of ``supcon``.
        batch_size, lr, epochs: of the contrastive phase (``epochs`` over the pairs).
        seed: pair / batch sampling and shuffling.
        tune_layers: 0 tunes the whole encoder; N > 0 only its top N transformer layers, the
            lower ones run once per text (:meth:`~fewshot.text.encoder.TextEncoder.partial`).
        pseudo_label: with ``self_train`` and unlabelled texts, first self-train on the frozen
            encoder and tune on the support plus the items it pseudo-labelled (their labels as classes).
    """

    def __init__(self, encoder, head: FewShotMethod | str = "logreg", loss: str = "pairs", max_pairs: int = 1000,
                 steps: int = 50, batch_size: int = 16, lr: float = 2e-5, epochs: int = 1, seed: int = 0,
                 label_names: bool = False, augment: int = 0, self_train: float = 0.0, self_train_rounds: int = 2,
                 tune_layers: int = 0, pseudo_label: bool = False, self_train_by: str = "head", **head_params):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if tune_layers < 0:
            raise ValueError(f"tune_layers must be >= 0 (0: the whole encoder), got {tune_layers}")
        if pseudo_label and self_train <= 0:
            raise ValueError("pseudo_label tunes on the items self-training pseudo-labels: also pass self_train > 0 (e.g. 0.75)")
        super().__init__(encoder, head, label_names, augment, seed, self_train, self_train_rounds,
                         self_train_by=self_train_by, **head_params)
        self.base_encoder = encoder.partial(tune_layers) if tune_layers else encoder
        self.loss, self.max_pairs, self.steps = loss, max_pairs, steps
        self.batch_size, self.lr, self.epochs, self.seed = batch_size, lr, epochs, seed
        self.tune_layers, self.pseudo_label = tune_layers, pseudo_label
        self.losses: list[float] = []

    def fit(self, texts: Sequence[str], labels: Sequence, unlabelled: Sequence[str] | None = None) -> "SetFitClassifier":
        texts, labels = self.support_texts(texts, labels)
        classes = sorted({str(lab) for lab in labels})
        index = {c: i for i, c in enumerate(classes)}
        tune_texts, y = list(texts), np.array([index[str(lab)] for lab in labels])
        if self.pseudo_label and self.self_train > 0 and unlabelled:
            self.encoder = self.base_encoder
            self._fit_head(texts, labels, unlabelled)
            keep, pseudo = self.pseudo_
            tune_texts += [str(unlabelled[i]) for i in keep.tolist()]
            y = np.concatenate([y, pseudo.numpy()])  # classes_ is the same sorted label list
        self.encoder = self.base_encoder.tuned_copy()
        if self.loss == "pairs":
            self.losses = contrastive_finetune(self.encoder, tune_texts, y, self.max_pairs, self.batch_size,
                                               self.lr, self.epochs, self.seed)
        else:
            from .contrastive import finetune_supcon

            self.losses = finetune_supcon(self.encoder, tune_texts, y, self.steps, self.batch_size, lr=self.lr,
                                          seed=self.seed)
        return self._fit_head(texts, labels, unlabelled)


#: text methods that are a head plus settings: name -> (head, default params); ``-p`` overrides them
PRESETS = {
    # the most accurate measured within the CPU budget (benchmarks/results/text.md), chosen on
    # validation data (docs/text.md): C=30 equal to C=10 with MiniLM, better with concatenations;
    # the k-NN vote raised every MiniLM setting (+0.1 to +0.8)
    "self_training": ("logreg", {"label_names": True, "self_train": 0.75, "C": 30.0, "knn_vote": 0.3}),
}


def build_text_classifier(encoder, method: str = "prototype", **params) -> TextClassifier:
    """``setfit`` (params: head, max_pairs, loss, ...), a preset of :data:`PRESETS` (``self_training``:
    logreg with C=30 + label names + self-training on the unlabelled texts given to ``fit``), or any head name
    of :func:`build_head`; ``label_names``, ``augment``, ``self_train`` work with all of them."""
    if method in PRESETS:
        method, defaults = PRESETS[method]
        params = {**defaults, **params}
    if method == "setfit":
        return SetFitClassifier(encoder, **_coerce(SetFitClassifier, params, exclude=("head",)))
    extras = {k: params.pop(k) for k in _classifier_options() if k in params}  # the rest are the head's
    return TextClassifier(encoder, build_head(method, **params), **_coerce(TextClassifier, extras, exclude=("head",)))


def _classifier_options() -> list[str]:
    """The options of :class:`TextClassifier` itself (from its signature: a hand-kept list fell out of step)."""
    import inspect

    params = inspect.signature(TextClassifier.__init__).parameters.values()
    return [p.name for p in params if p.name not in ("self", "encoder", "head") and p.kind is not p.VAR_KEYWORD]


def _coerce(cls, params: dict, exclude: tuple[str, ...] = ()) -> dict:
    """``params`` (maybe strings from ``-p KEY=VALUE``) as the types of the annotations of ``cls.__init__``
    and its bases' (a subclass passes options such as ``center`` on to its base through ``**kwargs``);
    keys none of them annotates pass through (head options)."""
    import typing

    from ..methods.params import coerce_value

    hints: dict = {}
    for klass in reversed(cls.__mro__):  # the subclass's own annotation wins
        if "__init__" in vars(klass) and klass is not object:
            hints.update(typing.get_type_hints(klass.__init__))
    own = {k: v for k, v in hints.items() if k not in (*exclude, "return")}
    return {k: coerce_value(k, own[k], v) if k in own else v for k, v in params.items()}
