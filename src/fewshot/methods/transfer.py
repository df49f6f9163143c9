"""Transfer learning: pre-train a classifier on all base classes with mini-batches, then adapt
per task (Chen et al. 2019 Baseline/Baseline++; Dhillon et al. 2020 fine-tuning; SimpleShot).

All methods here share one pre-training (``training_regime = "batch"``): backbone + a linear or
cosine head over the ``way`` base classes, cross-entropy. Their state dicts have the same
layout (backbone, ``head``, ``feature_mean``), so a backbone pre-trained as one method can be loaded
into any other (``load_state_dict``) to compare the adaptation rules on identical features.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.backbones import output_dim
from ..nn.distances import class_means, pairwise_logits
from ..utils import check_finite
from .base import FewShotMethod, StepOutput, check_support

HEADS = ("linear", "cosine")


class CosineHead(nn.Module):
    """Cosine classifier (Baseline++): ``scale * cos(z, w_c)``; ``[B, D] -> [B, C]``."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * pairwise_logits(z, self.weight, "cosine")


def make_head(kind: str, in_features: int, num_classes: int, scale: float) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineHead(in_features, num_classes, scale)
    raise ValueError(f"unknown head {kind!r}; choose from {', '.join(HEADS)}")


def head_logits(kind: str, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Logits ``[B, C]`` of a task head given as plain tensors (``weight [C, D]``, ``bias [C]``)."""
    if kind == "linear":
        return F.linear(z, weight, bias)
    return scale * pairwise_logits(z, weight, "cosine")


class TransferMethod(FewShotMethod):
    """Supervised pre-training on the base classes; subclasses define the per-task ``fit``.

    Args:
        backbone: embedding network ``[B, ...] -> [B, D]``.
        way, feature_dim: size of the base-class head (``setup`` fills them in from the training
            data: ``way`` is its number of classes; they are saved in ``config()`` so checkpoints rebuild the head).
        head_type: ``linear`` (Baseline) or ``cosine`` (Baseline++) pre-training head (None: the method's default).
        scale: logit scale of cosine heads.
        seed: seeds the per-task head initialisation.

    Augmentation of the pre-training batches is the trainer's (``TrainConfig.augment``,
    ``fewshot train --augment``), as for every method.
    """

    training_regime = "batch"
    default_head = "linear"

    renamed_params = {"num_classes": "way", "head": "head_type"}
    removed_params = {"augment": "augmentation is a training setting now: fewshot train --augment PRESET "
                                 "(TrainConfig.augment)"}
    removed_state = ("steps_done",)

    def __init__(self, backbone: nn.Module | None = None, way: int | None = None, feature_dim: int | None = None,
                 head_type: Literal["linear", "cosine"] | None = None, scale: float = 10.0, seed: int = 0):
        super().__init__(backbone)
        self.head_type = head_type or self.default_head
        if self.head_type not in HEADS:
            raise ValueError(f"unknown head_type {self.head_type!r}; choose from {', '.join(HEADS)}")
        self.scale = scale
        self.seed = seed
        self.way, self.feature_dim = way, feature_dim
        self.head: nn.Module | None = None
        if way is not None and feature_dim is not None:
            self._build_head()

    def _build_head(self) -> None:
        device = next(self.parameters(), torch.empty(0)).device
        self.head = make_head(self.head_type, self.feature_dim, self.way, self.scale).to(device)
        # Running mean of base-class features (SimpleShot centring), updated during pre-training.
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim, device=device))

    def setup(self, dataset) -> None:
        feature_dim = output_dim(self.backbone, tuple(dataset.item_shape)) if self.backbone is not None \
            else int(torch.tensor(dataset.item_shape).prod())
        if self.head is not None and (self.way, self.feature_dim) == (dataset.num_classes, feature_dim):
            return
        self.way, self.feature_dim = int(dataset.num_classes), int(feature_dim)
        self._build_head()

    # ----------------------------------------------------------------- pre-training
    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, way]`` over the base classes."""
        if self.head is None:
            raise RuntimeError("the base-class head is not built: train the method (setup sizes it) or pass "
                               "way and feature_dim")
        return self.head(self.embed(x))

    def training_step(self, batch) -> StepOutput:
        """One mini-batch ``(x [B, ...], y [B])`` of base-class cross-entropy."""
        if isinstance(batch, list):
            raise TypeError(f"{self.name} pre-trains on (x, y) mini-batches (training_regime='batch'), not episodes")
        x, y = batch
        z = self.embed(x)
        logits = self.head(z)
        loss = F.cross_entropy(logits, y)
        check_finite(loss, f"{self.name} pre-training step")
        loss.backward()
        with torch.no_grad():
            self.feature_mean.lerp_(z.detach().mean(0), 0.01)
        return StepOutput(float(loss.detach()), float((logits.argmax(-1) == y).float().mean()))

    # ----------------------------------------------------------------- per task
    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)

    def _support_features(self, support_x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.embed(support_x).detach()


def train_head(kind: str, z: torch.Tensor, y: torch.Tensor, way: int, steps: int, lr: float, scale: float,
               weight_decay: float = 0.0, weight: torch.Tensor | None = None, generator: torch.Generator | None = None,
               query_z: torch.Tensor | None = None, entropy_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fit a task head on fixed features ``z [N, D]`` by full-batch Adam; returns ``(weight [way, D], bias [way] | None)``.

    With ``query_z`` and ``entropy_weight`` the loss adds the mean entropy of the query predictions
    (transductive fine-tuning). ``weight`` initialises the weights (else random, from ``generator``).
    """
    d = z.shape[1]
    if weight is None:
        bound = 1.0 / d ** 0.5
        weight = (torch.rand(way, d, generator=generator, device=z.device) * 2 - 1) * bound
    w = weight.clone().requires_grad_(True)
    params = [w]
    b = None
    if kind == "linear":
        b = torch.zeros(way, device=z.device, requires_grad=True)
        params.append(b)
    with torch.enable_grad():
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head_logits(kind, z, w, b, scale), y)
            if query_z is not None and entropy_weight > 0:
                logp = head_logits(kind, query_z, w, b, scale).log_softmax(-1)
                loss = loss + entropy_weight * -(logp.exp() * logp).sum(-1).mean()
            check_finite(loss, "task head fitting")
            loss.backward()
            opt.step()
    return w.detach(), (b.detach() if b is not None else None)


class Baseline(TransferMethod):
    """Baseline (Chen et al. 2019): freeze the pre-trained backbone, train a new head on the support set.

    Args (besides :class:`TransferMethod`'s):
        adapt_steps: full-batch Adam steps on the support features (default 100, as Chen's 100 epochs).
        adapt_lr: their learning rate (default 0.01).
        adapt_weight_decay: L2 penalty on the task head (default 1e-3, as Chen).
        task_head: ``linear`` or ``cosine``; defaults to the pre-training head.
    """

    name = "baseline"

    fit_needs_grad = True

    eval_params = frozenset({"adapt_steps", "adapt_lr", "adapt_weight_decay", "task_head"})  # the per-task head only

    def __init__(self, backbone: nn.Module | None = None, way: int | None = None, feature_dim: int | None = None,
                 head_type: Literal["linear", "cosine"] | None = None, scale: float = 10.0,
                 seed: int = 0, adapt_steps: int = 100,
                 adapt_lr: float = 0.01, adapt_weight_decay: float = 1e-3,
                 task_head: Literal["linear", "cosine"] | None = None):
        super().__init__(backbone, way, feature_dim, head_type, scale, seed)
        self.adapt_steps, self.adapt_lr, self.adapt_weight_decay = adapt_steps, adapt_lr, adapt_weight_decay
        # Stored as given (None = the pre-training head), so a checkpoint keeps "None" and evaluating it
        # with the default is not reported as an override.
        self.task_head = task_head
        if self.task_head not in (None, *HEADS):
            raise ValueError(f"unknown task_head {self.task_head!r}; choose from {', '.join(HEADS)}")
        self.task_weight: torch.Tensor | None = None
        self.task_bias: torch.Tensor | None = None

    @property
    def _task_head(self) -> str:
        return self.task_head or self.head_type

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "Baseline":
        self.task_way = check_support(support_x, support_y)
        z = self._support_features(support_x)
        self.task_weight, self.task_bias = train_head(
            self._task_head, z, support_y.long(), self.task_way, self.adapt_steps, self.adapt_lr, self.scale,
            self.adapt_weight_decay, generator=self._generator(z.device))
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.task_weight is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return head_logits(self._task_head, self.embed(query_x), self.task_weight, self.task_bias, self.scale)


class BaselinePlusPlus(Baseline):
    """Baseline++ (Chen et al. 2019): cosine head in pre-training and for the new classes."""

    name = "baseline_pp"
    aliases = ('baseline++',)

    default_head = "cosine"


class FineTune(TransferMethod):
    """Transductive fine-tuning (Dhillon et al. 2020) on a supervised pre-trained backbone.

    Support features are L2-normalised and a cosine classifier is initialised with the class
    prototypes (so before any step it predicts the nearest prototype in cosine similarity); it is
    then fine-tuned with cross-entropy on the support set plus ``entropy_weight`` × the mean entropy
    of the query predictions. Transductive adaptation needs the queries: it runs on the first
    ``scores(query_x)`` after ``fit`` (or pass ``query_x`` to ``fit``). ``transductive=False`` gives
    the inductive version (support cross-entropy only, done in ``fit``).

    Transductive adaptation first centres the features on the task's mean (support and queries).
    Without it, ReLU features all lie in the positive orthant, every cosine is high, and the
    entropy term wins by sending all queries to one class: measured 8.1% on Omniglot 20-way 1-shot,
    and reproduced on a toy task in ``tests/test_transfer.py``. Dhillon et al. avoid the collapse
    with a 100x smaller learning rate (5e-5), at which 50 steps barely move the prototype
    initialisation.

    Args (besides :class:`TransferMethod`'s):
        adapt_steps: Adam steps (default 50; 0 = the prototype classifier itself).
        adapt_lr: head learning rate (default 5e-3; weights live on the unit sphere's scale).
        entropy_weight: weight of the query entropy term (default 1, as Dhillon).
        transductive: use the query entropy term (default True).
        finetune_backbone: also fine-tune a per-task copy of the backbone (BatchNorm statistics
            frozen) with learning rate ``backbone_lr`` (default False: head only, much cheaper).
    """

    name = "finetune"

    fit_needs_grad = True

    #: the per-task fine-tuning; pre-training never reads them
    eval_params = frozenset({"adapt_steps", "adapt_lr", "entropy_weight", "transductive", "finetune_backbone",
                             "backbone_lr"})

    def __init__(self, backbone: nn.Module | None = None, way: int | None = None, feature_dim: int | None = None,
                 head_type: Literal["linear", "cosine"] | None = None, scale: float = 10.0,
                 seed: int = 0, adapt_steps: int = 50,
                 adapt_lr: float = 5e-3, entropy_weight: float = 1.0, transductive: bool = True,
                 finetune_backbone: bool = False, backbone_lr: float = 5e-5):
        super().__init__(backbone, way, feature_dim, head_type, scale, seed)
        self.adapt_steps, self.adapt_lr, self.entropy_weight = adapt_steps, adapt_lr, entropy_weight
        self.transductive, self.finetune_backbone, self.backbone_lr = transductive, finetune_backbone, backbone_lr
        self.task_weight: torch.Tensor | None = None
        self._support: tuple[torch.Tensor, torch.Tensor] | None = None
        self._adapted_for: tuple | None = None
        self._task_backbone: nn.Module | None = None  # not a registered submodule: never checkpointed
        self.center: torch.Tensor | None = None  # transductive: the task's mean feature

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_task_backbone":  # keep the per-task copy out of the module tree
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _embed_task(self, x: torch.Tensor) -> torch.Tensor:
        if self._task_backbone is not None:
            return self._task_backbone(x)
        return self.embed(x)

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor | None = None) -> "FineTune":
        self.task_way = check_support(support_x, support_y)
        self._support = (support_x, support_y.long())
        self._task_backbone = None
        with torch.no_grad():
            z = F.normalize(self.embed(support_x), dim=1)
            self.task_weight = F.normalize(class_means(z, self._support[1], self.task_way), dim=1)
        self._adapted_for = None
        if not self.transductive or self.entropy_weight == 0:
            self._adapt(None)
        elif query_x is not None:
            self._adapt(query_x)
        return self

    def _adapt(self, query_x: torch.Tensor | None) -> None:
        support_x, support_y = self._support
        # The query tensor itself (not its address, which a later tensor may reuse) and its version.
        self._adapted_for = None if query_x is None else (query_x, query_x._version)
        self.center = None
        if self.adapt_steps == 0:
            return
        if not self.finetune_backbone:
            with torch.no_grad():
                z = self.embed(support_x)
                qz = self.embed(query_x) if query_x is not None else None
                if qz is not None:
                    self.center = torch.cat([z, qz]).mean(0)
                    z, qz = z - self.center, qz - self.center
                    self.task_weight = F.normalize(class_means(F.normalize(z, dim=1), support_y, self.task_way), dim=1)
            self.task_weight, _ = train_head("cosine", z, support_y, self.task_way, self.adapt_steps, self.adapt_lr,
                                             self.scale, weight=self.task_weight, query_z=qz,
                                             entropy_weight=self.entropy_weight if query_x is not None else 0.0)
            return
        backbone = copy.deepcopy(self.backbone)
        backbone.eval()  # BatchNorm running statistics stay those of pre-training
        if query_x is not None:
            with torch.no_grad():
                zs, zq = backbone(support_x), backbone(query_x)
                c = torch.cat([zs, zq]).mean(0)
                self.task_weight = F.normalize(class_means(F.normalize(zs - c, dim=1), support_y, self.task_way), dim=1)
        w = self.task_weight.clone().requires_grad_(True)
        with torch.enable_grad():
            for p in backbone.parameters():
                p.requires_grad_(True)
            opt = torch.optim.Adam([{"params": [w], "lr": self.adapt_lr},
                                    {"params": list(backbone.parameters()), "lr": self.backbone_lr}])
            for _ in range(self.adapt_steps):
                opt.zero_grad(set_to_none=True)
                zs = backbone(support_x)
                if query_x is not None and self.entropy_weight > 0:
                    zq = backbone(query_x)
                    c = torch.cat([zs, zq]).mean(0)
                    logp = head_logits("cosine", zq - c, w, None, self.scale).log_softmax(-1)
                    loss = F.cross_entropy(head_logits("cosine", zs - c, w, None, self.scale), support_y) \
                        + self.entropy_weight * -(logp.exp() * logp).sum(-1).mean()
                else:
                    loss = F.cross_entropy(head_logits("cosine", zs, w, None, self.scale), support_y)
                check_finite(loss, "finetune adaptation")
                loss.backward()
                opt.step()
        for p in backbone.parameters():
            p.requires_grad_(False)
        if query_x is not None and self.entropy_weight > 0:
            with torch.no_grad():
                self.center = torch.cat([backbone(support_x), backbone(query_x)]).mean(0)
        self.task_weight, self._task_backbone = w.detach(), backbone

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self._support is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        if self.transductive and self.entropy_weight > 0:
            done = self._adapted_for
            if done is None or done[0] is not query_x or done[1] != query_x._version:
                self._task_backbone = None
                with torch.no_grad():
                    z = F.normalize(self.embed(self._support[0]), dim=1)
                    self.task_weight = F.normalize(class_means(z, self._support[1], self.task_way), dim=1)
                self._adapt(query_x)
        z = self._embed_task(query_x)
        return head_logits("cosine", z if self.center is None else z - self.center, self.task_weight, None, self.scale)


class SimpleShot(TransferMethod):
    """SimpleShot (Wang et al. 2019): nearest class centroid on centred, L2-normalised features.

    Args (besides :class:`TransferMethod`'s):
        centering: ``base`` (subtract the mean base-class feature tracked during pre-training),
            ``support`` (the support set's mean) or ``none``.
        temperature: logits are ``-squared distance / temperature`` (only probabilities depend on it).
    """

    name = "simpleshot"
    embedding_only = True

    eval_params = frozenset({"centering", "temperature"})  # the per-task classifier only

    def __init__(self, backbone: nn.Module | None = None, way: int | None = None, feature_dim: int | None = None,
                 head_type: Literal["linear", "cosine"] | None = None, scale: float = 10.0,
                 seed: int = 0,
                 centering: Literal["base", "support", "none"] = "base", temperature: float = 0.1):
        super().__init__(backbone, way, feature_dim, head_type, scale, seed)
        if centering not in ("base", "support", "none"):
            raise ValueError(f"unknown centering {centering!r}; choose base, support or none")
        self.centering, self.temperature = centering, temperature
        self.prototypes: torch.Tensor | None = None
        self._center: torch.Tensor | None = None

    def _transform(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z - self._center, dim=1) if self._center is not None else F.normalize(z, dim=1)

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "SimpleShot":
        self.task_way = check_support(support_emb, support_y)
        z = support_emb
        if self.centering == "base":
            if self.head is None:
                raise RuntimeError("centering='base' needs the pre-trained feature mean; pre-train the method or "
                                   "use centering='support'")
            self._center = self.feature_mean
        elif self.centering == "support":
            self._center = z.mean(0)
        else:
            self._center = None
        self.prototypes = class_means(self._transform(z), support_y.long(), self.task_way)
        return self

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        if self.prototypes is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return pairwise_logits(self._transform(query_emb), self.prototypes, "euclidean") / self.temperature
