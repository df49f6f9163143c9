"""The interface every few-shot method shares, and the registry that builds them by name.

A method is an ``nn.Module`` with an estimator-style API:

* ``fit(support_x, support_y)`` adapts to a support set (prototypes, an adapted copy of the
  weights, a memory, a fine-tuned head...) and returns ``self``;
* ``scores(query_x)`` returns logits ``[Q, way]`` (log-probabilities are valid logits);
  ``predict_proba`` and ``predict`` derive from it;
* ``loss(episode)`` is the training objective on one episode; ``training_step(batch)``
  turns a batch (a list of episodes, or ``(x, y)`` for mini-batch pre-training) into gradients.

The trainer, evaluator, checkpoints and CLI only use this interface.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

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
    """What one training step reports: mean loss and query accuracy (plain floats)."""

    loss: float
    accuracy: float


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
    #: small options that make the method quick on tiny data (the contract test builds it with them)
    test_options: ClassVar[dict[str, Any]] = {}
    #: ``"episodic"``: trained on episodes; ``"batch"``: pre-trained on mini-batches of base classes
    training_regime: ClassVar[str] = "episodic"
    #: True when ``fit`` needs autograd (MAML, fine-tuning): evaluation then keeps autograd available
    fit_needs_grad: ClassVar[bool] = False

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

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "FewShotMethod":
        raise NotImplementedError

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_proba(self, query_x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[Q, way]``."""
        return self.scores(query_x).softmax(-1)

    def predict(self, query_x: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Predicted class ``[Q]``; with ``threshold``, ``-1`` ("unknown") where the top probability is below it."""
        proba = self.predict_proba(query_x)
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

