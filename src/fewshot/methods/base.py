"""The interface every few-shot method shares, and the registry that builds them by name.

A method is an ``nn.Module`` with an estimator-style API:

* ``fit(support_x, support_y)`` adapts to a support set (prototypes, an adapted copy of the
  weights, a memory, a fine-tuned head...) and returns ``self``;
* ``scores(query_x)`` returns logits ``[Q, way]`` (log-probabilities are valid logits);
  ``predict_proba`` and ``predict`` derive from it;
* ``loss(episode)`` is the training objective on one episode; ``training_step(batch)``
  turns a batch (a list of episodes, or ``(x, y)`` for mini-batch pre-training) into gradients.

The trainer, evaluator, checkpoints and CLI only use this interface. Inputs of every ``fit`` and
``scores`` are checked and converted in one place (:func:`as_items`, :func:`as_labels`): arrays and
lists are accepted, ``uint8`` images are scaled from 0..255, ``float64`` becomes ``float32``;
string, float or negative labels, a query without its batch dimension and (outside training)
NaN or infinite values are clear errors.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..tasks.episodes import Episode
from .params import config_of


@dataclass
class LossOutput:
    """``loss`` (scalar, differentiable) and the query ``scores [Q, way]`` it came from."""

    loss: torch.Tensor
    scores: torch.Tensor


@dataclass
class StepOutput:
    """What one training step reports: mean loss and query accuracy, as floats or 0-dim tensors
    (tensors spare a host synchronisation per step; the trainer reads them when it logs)."""

    loss: float | torch.Tensor
    accuracy: float | torch.Tensor


def check_support(support_x: torch.Tensor, support_y: torch.Tensor) -> int:
    """Validate a support set and return its number of classes (``way``)."""
    if support_y.ndim != 1:
        raise ValueError(f"support_y must be 1-D [N]; got shape {tuple(support_y.shape)}")
    if support_x.shape[0] != support_y.shape[0]:
        raise ValueError(f"support_x has {support_x.shape[0]} items but support_y has {support_y.shape[0]} labels")
    if support_y.numel() == 0:
        raise ValueError("the support set is empty: give at least one example per class")
    if support_y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"support_y must hold integer class indices 0..way-1, got dtype {support_y.dtype}")
    way = int(support_y.max()) + 1
    present = torch.bincount(support_y.long(), minlength=way)
    if int(support_y.min()) < 0 or (present == 0).any():
        raise ValueError(
            f"support labels must cover 0..{way - 1} with at least one example each; classes without examples: "
            f"{torch.nonzero(present == 0).flatten().tolist()}"
        )
    return way


def as_items(x: Any, name: str = "x") -> torch.Tensor:
    """Items as a float tensor: NumPy arrays and lists are accepted; ``float64`` becomes
    ``float32``; ``uint8`` images are read as 0..255 and scaled to ``[0, 1]`` (as
    :meth:`fewshot.data.LabeledDataset.items` does). Other integer or boolean items are refused."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a tensor or array of numbers; got {type(x).__name__} ({exc})") from exc
    if x.dtype == torch.uint8:
        return x.float().div(255.0)
    if x.dtype == torch.float64:
        return x.float()
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}; give float items (uint8 images are scaled from 0..255)")
    return x


def as_labels(y: Any, name: str = "support_y") -> torch.Tensor:
    """Class indices ``0..way-1`` as an int64 tensor from a tensor, NumPy array or list of ints.
    Strings, floats and negative numbers are refused: map names to indices first, e.g.
    ``classes, y = np.unique(names, return_inverse=True)``."""
    if not isinstance(y, torch.Tensor):
        arr = np.asarray(y)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class indices 0..way-1, got {arr.dtype} values such as "
                             f"{arr.ravel()[:3].tolist()}; map class names to indices first, e.g. "
                             "`classes, y = np.unique(names, return_inverse=True)`")
        y = torch.from_numpy(arr.astype(np.int64))
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices 0..way-1, got dtype {y.dtype}")
    y = y.long()
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} holds negative labels ({int(y.min())}); class indices run 0..way-1 "
                         "(an 'unknown' class is not a support class)")
    return y


def _is_batched(x: torch.Tensor) -> bool:  # inside torch.func.vmap: values cannot be inspected
    try:
        return torch._C._functorch.is_batchedtensor(x)
    except AttributeError:
        return False


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not _is_batched(x) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x.flatten(1) if x.ndim > 1 else x[:, None])).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{name} holds NaN or infinite values (items {bad[:5]}); clean the inputs first")


def _checked_fit(fit):
    @functools.wraps(fit)
    def checked(self, support_x, support_y, *args, **kwargs):
        support_x, support_y = as_items(support_x, "support_x"), as_labels(support_y)
        if not self.training:  # in training, the loss check reports NaNs with its advice
            _check_finite(support_x, "support_x")
        self._item_ndim = support_x.ndim - 1
        return fit(self, support_x, support_y, *args, **kwargs)

    checked._checks_inputs = True
    return checked


def _checked_scores(scores):
    @functools.wraps(scores)
    def checked(self, query_x, *args, **kwargs):
        query_x = as_items(query_x, "query_x")
        item_ndim = getattr(self, "_item_ndim", None)
        if item_ndim is not None and query_x.ndim == item_ndim:
            raise ValueError(f"query_x has shape {list(query_x.shape)}: one item without the batch dimension; "
                             "pass query_x[None] (or query_x.unsqueeze(0))")
        if not self.training:
            _check_finite(query_x, "query_x")
        return scores(self, query_x, *args, **kwargs)

    checked._checks_inputs = True
    return checked


def inference_context(method: "FewShotMethod") -> contextlib.AbstractContextManager:
    """``inference_mode`` for methods whose ``fit`` is gradient-free, else ``no_grad`` (they re-enable it)."""
    return torch.no_grad() if method.fit_needs_grad else torch.inference_mode()


class FewShotMethod(nn.Module):
    """Base class. Subclasses implement ``fit`` and ``scores``; most inherit ``loss``.

    Options are the annotated parameters of ``__init__`` (every one but ``backbone``), each stored
    unchanged as the attribute of the same name: ``config()`` reads them back, and
    :func:`~fewshot.methods.params.coerce_params` turns ``-p KEY=VALUE`` strings and checkpoint JSON
    into them. ``way`` is the size of a fixed head and ``feature_dim`` the backbone's feature size,
    in every method that has one. ``task_way`` is the number of classes of the support set fitted last.
    """

    #: canonical (snake_case) name in :data:`fewshot.methods.registry.METHODS`
    name: ClassVar[str] = "base"
    #: earlier names, still accepted wherever a method name is (CLI, checkpoints)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: earlier option names -> current ones (so checkpoints of earlier versions load)
    renamed_params: ClassVar[dict[str, str]] = {}
    #: options of earlier versions that no longer exist -> where that setting went; a checkpoint that
    #: still has one loads without it, a ``-p`` that names one is refused with this hint
    removed_params: ClassVar[dict[str, str]] = {}
    #: weights/buffers of earlier versions that no longer exist (ignored when an old checkpoint loads)
    removed_state: ClassVar[tuple[str, ...]] = ()
    #: float options that may be NaN or infinite (others refuse them)
    nonfinite_params: ClassVar[frozenset[str]] = frozenset()
    #: options that act only when a support set is fitted (evaluation, validation), never in a training
    #: step: a trained model may be evaluated with other values (``load_checkpoint(overrides=...)``)
    eval_params: ClassVar[frozenset[str]] = frozenset()
    #: small options that make the method quick on tiny data (the contract test builds it with them)
    test_options: ClassVar[dict[str, Any]] = {}
    #: ``"episodic"``: trained on episodes; ``"batch"``: pre-trained on mini-batches of base classes
    training_regime: ClassVar[str] = "episodic"
    #: True when ``fit`` needs autograd (MAML, fine-tuning): evaluation then keeps autograd available
    fit_needs_grad: ClassVar[bool] = False
    #: True when ``fit`` and ``scores`` see the items only through :meth:`embed`, one item at a time
    #: (they are ``fit_embeddings(embed(support_x), ...)`` and ``scores_embeddings(embed(query_x))``):
    #: evaluation over a task set then embeds each distinct item once and scores every task from
    #: those embeddings. Methods that adapt per task (fine-tuning, MAML) or normalise with batch
    #: statistics keep False.
    embedding_only: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every fit/scores takes the same inputs: check and convert them in one place (see as_items, as_labels).
        super().__init_subclass__(**kwargs)
        for name, wrap in (("fit", _checked_fit), ("scores", _checked_scores)):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_checks_inputs", False):
                setattr(cls, name, wrap(fn))

    def __init__(self, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.task_way: int | None = None

    # ----------------------------------------------------------------- configuration
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without the backbone), saved in checkpoints."""
        return config_of(self)

    def setup(self, dataset) -> None:
        """Hook called by the trainer with the training data before the optimiser is built."""

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        """The backbone spec this method wants for items of ``item_shape`` (None: no backbone)."""
        from ..nn.backbones import default_backbone_for

        return default_backbone_for(item_shape)

    # ----------------------------------------------------------------- estimator API
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, D]``."""
        if self.backbone is None:
            return x.flatten(1)
        return self.backbone(x)

    @_checked_fit  # the subclasses' own fit/scores are wrapped by __init_subclass__
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "FewShotMethod":
        if self.embedding_only:
            return self.fit_embeddings(self.embed(support_x), support_y)
        raise NotImplementedError

    @_checked_scores
    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.embedding_only:
            return self.scores_embeddings(self.embed(query_x))
        raise NotImplementedError

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "FewShotMethod":
        """``fit`` from the support embeddings ``[N, D]`` (methods with ``embedding_only``)."""
        raise NotImplementedError(f"{self.name} does not fit from embeddings (embedding_only is False)")

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        """``scores`` ``[Q, way]`` from the query embeddings ``[Q, D]`` (methods with ``embedding_only``)."""
        raise NotImplementedError(f"{self.name} does not score embeddings (embedding_only is False)")

    def predict_proba(self, query_x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[Q, way]``."""
        return self.scores(query_x).softmax(-1)

    def predict(self, query_x: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Predicted class ``[Q]``; with ``threshold``, ``-1`` ("unknown") where the top probability is below it."""
        return self.decide(self.scores(query_x), threshold)

    def decide(self, scores: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """:meth:`predict` from the scores ``[Q, way]``."""
        proba = scores.softmax(-1)
        conf, pred = proba.max(-1)
        if threshold is not None:
            pred = torch.where(conf >= threshold, pred, torch.full_like(pred, -1))
        return pred

    # ----------------------------------------------------------------- training
    def loss(self, episode: Episode) -> LossOutput:
        """Cross-entropy of the query scores after fitting the support set."""
        self.fit(episode.support_x, episode.support_y)
        scores = self.scores(episode.query_x)
        return LossOutput(F.cross_entropy(scores, episode.query_y), scores)

    def training_step(self, batch: list[Episode]) -> StepOutput:
        """Back-propagate the mean episode loss; the trainer then clips and steps the optimiser."""
        losses, correct, total = [], 0, 0
        for ep in batch:
            out = self.loss(ep)
            losses.append(out.loss)
            correct += int((out.scores.argmax(-1) == ep.query_y).sum())
            total += ep.query_y.numel()
        loss = torch.stack(losses).mean()
        from ..utils import check_finite

        check_finite(loss, f"{self.name} training step")
        loss.backward()
        return StepOutput(float(loss.detach()), correct / max(total, 1))

