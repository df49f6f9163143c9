"""Optimization-based meta-learning on ``torch.func``: MAML, first-order MAML, Meta-SGD, Reptile, ANIL.

The learner is an unmodified ``nn.Module`` (backbone + linear head). Adapted weights live in a
dict ``name -> tensor`` ("fast weights") and the module is run on them with
:func:`torch.func.functional_call`; nothing is monkeypatched and no layer is rewritten, so any
backbone works. The inner loop is :func:`fewshot.nn.inner_loop.inner_loop`, shared with the
regression experiments.

BatchNorm runs in *transductive batch-statistics* mode, as in the MAML paper: the BN layers of the
backbone keep no running statistics, so every forward pass (support or query, training or
evaluation) is normalised with the statistics of its own batch. Consequences: queries are scored as
a batch and one query's prediction depends on the others in its batch (the standard protocol
for MAML-family results on Omniglot/miniImageNet, but not a per-item classifier); a single-query
batch is still defined because BN normalises over the spatial positions of conv features.

Memory: :meth:`GradientMetaLearner.training_step` back-propagates each task of the meta-batch as
soon as its loss is computed, so at most one task's (second-order) graph is alive at a time and
peak memory does not grow with ``tasks_per_step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..nn.norm import BatchStatNorm, plain_batch_norm
from ..nn.inner_loop import LR, Params, inner_loop, preprocess_gradient, scale_lr
from ..tasks.episodes import Episode
from ..utils import check_finite
from .base import FewShotMethod, LossOutput, StepOutput, check_support


def use_batch_statistics(module: nn.Module) -> nn.Module:
    """Turn every BatchNorm layer of ``module`` into transductive batch-statistics mode (in place,
    keeping the weights): no running statistics, so training and evaluation both normalise with the
    current batch (:class:`~fewshot.nn.norm.BatchStatNorm`, right under ``vmap`` to second order)."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, BatchStatNorm):
                setattr(parent, name, BatchStatNorm.replacing(child))
    return module


class GradientMetaLearner(FewShotMethod):
    """Shared machinery of the MAML family: a backbone + linear head adapted by inner SGD steps.

    Args:
        backbone: feature extractor ``[B, ...] -> [B, D]`` (BatchNorm switched to batch statistics).
        way: outputs of the head (the largest ``way`` the model will see; smaller tasks use the first rows).
        inner_steps: inner SGD steps during meta-training.
        inner_lr: inner learning rate (the initial value for Meta-SGD).
        test_inner_steps: inner steps at evaluation (default: ``inner_steps``).
        test_inner_lr: inner learning rate at evaluation (default: the training one). A model
            meta-trained for one large step overshoots when it takes several at test time.
        first_order: drop the second-order term (FOMAML).
        feature_dim: ``D``; found from the data in ``setup`` when not given.
        scale_test_lr: at evaluation, a task of ``W`` classes takes steps of the evaluation rate x
            ``W / way``. The support loss is a mean over the items, so each class's share of the
            gradient is ``1 / W``: on a 5-way task the head row of a class moves 4x further per step
            than on the 20-way tasks ``fewshot train`` samples (``way`` is the training way there).
            Scaling keeps the step per class that of the training tasks.
    """

    fit_needs_grad = True
    #: False for ANIL: only the head is adapted and the backbone features are computed once
    adapt_backbone = True
    #: meta-train a meta-batch of same-shaped tasks in one :func:`torch.func.vmap` of the inner loop
    #: (the same meta-gradient, all tasks' graphs alive at once). Off: on CPU it measured 2-3x slower
    #: than task by task for second-order Conv4 MAML (benchmarks/results/throughput.md); untried on GPUs
    vectorize_tasks = False

    eval_params = frozenset({"test_inner_steps", "test_inner_lr", "scale_test_lr"})

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 1, inner_lr: float = 0.4,
                 test_inner_steps: int | None = None, first_order: bool = False, feature_dim: int | None = None,
                 test_inner_lr: float | None = None, scale_test_lr: bool = False):
        super().__init__(backbone)
        if inner_steps < 0 or (test_inner_steps is not None and test_inner_steps < 0):
            raise ValueError(f"inner steps must be >= 0, got inner_steps={inner_steps}, test_inner_steps={test_inner_steps}")
        if way < 2:
            raise ValueError(f"way must be at least 2, got {way}")
        if backbone is not None:
            use_batch_statistics(backbone)
        self.way = way
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.test_inner_steps = test_inner_steps
        if test_inner_lr is not None and not test_inner_lr > 0:
            raise ValueError(f"test_inner_lr must be > 0, got {test_inner_lr}")
        self.test_inner_lr = test_inner_lr
        self.scale_test_lr = scale_test_lr
        self.first_order = first_order
        self.feature_dim = feature_dim
        self.head: nn.Linear | None = None
        self.fast: Params | None = None
        if feature_dim is not None:
            self._build_head(int(feature_dim))

    # ----------------------------------------------------------------- construction
    def _build_head(self, feature_dim: int) -> None:
        self.feature_dim = int(feature_dim)
        self.head = nn.Linear(self.feature_dim, self.way)
        param = next(self.backbone.parameters(), None) if self.backbone is not None else None
        if param is not None:
            self.head.to(param.device)

    def setup(self, dataset) -> None:
        if self.head is None:
            from ..nn.backbones import output_dim

            self._build_head(output_dim(self.backbone, dataset.item_shape) if self.backbone is not None
                             else int(torch.tensor(dataset.item_shape).prod()))

    def _require_head(self, x: torch.Tensor) -> None:
        if self.head is None:  # used directly (not through the trainer): size the head from the data
            with torch.no_grad():
                self._build_head(self.embed(x[:2]).shape[1])
            self.head.to(x.device)

    def _check_way(self, way: int) -> None:
        if way > self.way:
            raise ValueError(f"{self.name} was built with a {self.way}-way head but the task has {way} classes; "
                             f"train with -p way={way} (or more)")

    # ----------------------------------------------------------------- the functional model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the full head ``[B, way]`` with the module's own weights."""
        return self.head(self.embed(x))

    def adapted_params(self) -> Params:
        """The weights the inner loop adapts (all of them; only the head for ANIL)."""
        if self.adapt_backbone:
            return {n: p for n, p in self.named_parameters() if n.startswith(("backbone.", "head.")) and p.requires_grad}
        return {n: p for n, p in self.named_parameters() if n.startswith("head.")}

    def inner_lrs(self) -> LR:
        return self.inner_lr

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the inner forward consumes: raw items, or (ANIL) backbone features computed once."""
        return x if self.adapt_backbone else self.embed(x)

    def _forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        if self.adapt_backbone:
            return functional_call(self, params, (x,))
        head = {n[len("head."):]: p for n, p in params.items()}
        return functional_call(self.head, head, (x,))

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int, create_graph: bool,
              detach: bool, lrs: LR | None = None) -> Params:
        """Fast weights after ``steps`` inner steps on the support set (``detach``: start from a copy
        cut from the meta-parameters, for evaluation; ``lrs``: the step sizes, default :meth:`inner_lrs`)."""
        way = int(support_y.max()) + 1
        params = self.adapted_params()
        if detach:
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
        inputs = self._inputs(support_x)  # under the caller's grad mode: ANIL features need no graph at evaluation
        if detach:
            inputs = inputs.detach()

        def support_loss(p: Params) -> torch.Tensor:
            return F.cross_entropy(self._forward(p, inputs)[:, :way], support_y)

        with torch.enable_grad():
            return inner_loop(support_loss, params, steps, self.inner_lrs() if lrs is None else lrs,
                              first_order=not create_graph)

    # ----------------------------------------------------------------- estimator API
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "GradientMetaLearner":
        self.task_way = check_support(support_x, support_y)
        self._check_way(self.task_way)
        self._require_head(support_x)
        steps = self.inner_steps if self.test_inner_steps is None else self.test_inner_steps
        lrs = self.test_lrs()
        if self.scale_test_lr:
            lrs = scale_lr(self.inner_lrs() if lrs is None else lrs, self.task_way / self.way)
        fast = self.adapt(support_x, support_y, steps, create_graph=False, detach=True, lrs=lrs)  # enables grad inside
        self.fast = {n: p.detach() for n, p in fast.items()}
        return self

    def test_lrs(self) -> LR | None:
        """The step sizes at evaluation before ``scale_test_lr``: ``test_inner_lr``, or None for the
        training ones (:meth:`inner_lrs`)."""
        return self.test_inner_lr

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.fast is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self._forward(self.fast, self._inputs(query_x))[:, : self.task_way]

    # ----------------------------------------------------------------- meta-training
    def loss(self, episode: Episode) -> LossOutput:
        """Query cross-entropy after adapting to the support set, differentiable w.r.t. the
        meta-parameters (through the inner loop unless ``first_order``)."""
        way = check_support(episode.support_x, episode.support_y)
        self._check_way(way)
        self._require_head(episode.support_x)
        fast = self.adapt(episode.support_x, episode.support_y, self.inner_steps,
                          create_graph=not self.first_order and torch.is_grad_enabled(), detach=False)
        scores = self._forward(fast, self._inputs(episode.query_x))[:, :way]
        return LossOutput(F.cross_entropy(scores, episode.query_y), scores)

    def training_step(self, batch: list[Episode]) -> StepOutput:
        """Mean query loss over the meta-batch: all tasks in one vectorised pass when they share their
        shapes (``vectorize_tasks``), else each task back-propagated as soon as it is computed so
        that only one task's graph is held at a time (flat peak memory in ``tasks_per_step``)."""
        if self.vectorize_tasks and len(batch) > 1 and _same_shapes(batch):
            return self._vectorized_step(batch)
        total, correct, count = 0.0, 0, 0
        for ep in batch:
            out = self.loss(ep)
            check_finite(out.loss, f"{self.name} training step")
            (out.loss / len(batch)).backward()
            total += float(out.loss.detach())
            correct += int((out.scores.detach().argmax(-1) == ep.query_y).sum())
            count += ep.query_y.numel()
        return StepOutput(total / len(batch), correct / max(count, 1))


    def _vectorized_step(self, batch: list[Episode]) -> StepOutput:
        """:meth:`training_step` with the tasks' inner loops and query losses in one
        ``vmap``: BatchNorm's batch statistics are those of each task's own support or query set."""
        way = check_support(batch[0].support_x, batch[0].support_y)
        for ep in batch[1:]:
            if check_support(ep.support_x, ep.support_y) != way:
                raise ValueError("a vectorised meta-batch needs tasks of the same way")
        self._check_way(way)
        self._require_head(batch[0].support_x)
        sx, sy, qx, qy = (torch.stack([getattr(ep, f) for ep in batch]) for f in ("support_x", "support_y", "query_x", "query_y"))
        params, lrs = self.adapted_params(), self.inner_lrs()
        first_order = self.first_order or not torch.is_grad_enabled()

        def task_loss(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor):
            inputs = self._inputs(sx)
            fast = inner_loop(lambda p: F.cross_entropy(self._forward(p, inputs)[:, :way], sy), params,
                              self.inner_steps, lrs, first_order=first_order, check=False)
            scores = self._forward(fast, self._inputs(qx))[:, :way]
            return F.cross_entropy(scores, qy), scores

        with plain_batch_norm():
            losses, scores = torch.func.vmap(task_loss)(sx, sy, qx, qy)
        loss = losses.mean()
        check_finite(loss, f"{self.name} training step")
        loss.backward()
        correct = (scores.detach().argmax(-1) == qy).sum()
        return StepOutput(loss.detach(), correct / qy.numel())  # tensors: no host synchronisation here


def _same_shapes(batch: list[Episode]) -> bool:
    first = batch[0]
    return all(ep.support_x.shape == first.support_x.shape and ep.query_x.shape == first.query_x.shape
               and ep.way == first.way for ep in batch)


class MAML(GradientMetaLearner):
    """Model-agnostic meta-learning (Finn et al. 2017), second order by default: the meta-gradient
    flows through the inner SGD steps (``create_graph=True``). Defaults follow the paper's Omniglot
    set-up in training (1 inner step of 0.4); at test 10 steps of 0.1 (measured: 3 steps of 0.4 overshoot
    and made 20-way 5-shot worse than 1-shot, docs/optimization.md). ``scale_test_lr`` stays off:
    on the 30-CPU-minute reproduction checkpoint (20-way training), 300 tasks from the *training*
    alphabets, 5w1s 98.2% unscaled against 97.6% scaled (5w5s 99.5% both; benchmarks/test_step.py)."""

    name = "maml"

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 1, inner_lr: float = 0.4,
                 test_inner_steps: int | None = 10, first_order: bool = False, feature_dim: int | None = None,
                 test_inner_lr: float | None = 0.1, scale_test_lr: bool = False):
        super().__init__(backbone, way, inner_steps, inner_lr, test_inner_steps, first_order, feature_dim, test_inner_lr,
                         scale_test_lr)


class FOMAML(GradientMetaLearner):
    """First-order MAML: the inner gradients are constants, so the meta-gradient is the query-loss
    gradient at the adapted weights (the second-order term is dropped).

    Defaults are Finn et al.'s 20-way Omniglot inner loop (5 steps of 0.1), the way ``fewshot train``
    samples by default. With MAML's 5-way single step of 0.4 the first-order meta-gradient carries
    almost no signal at 20-way: 12% training accuracy after 1,500 steps, against 63% after 150 steps
    with 5 x 0.1 (benchmarks/results/reproduce.md).

    At evaluation ``scale_test_lr`` (on by default) keeps the step per class of the training way:
    10 steps of 0.1 x way / 20 on tasks of ``fewshot train``'s 20-way model. Unscaled, a 5-way
    task's steps are 4x larger per class and overshoot: on the 3-CPU-hour reproduction checkpoint,
    300 tasks from the *training* alphabets, 5w1s 85.0% unscaled, 90.6% at 0.05, 95.7% scaled;
    5w5s 98.2 / 99.1 / 99.3% (benchmarks/test_step.py)."""

    name = "fomaml"

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 5, inner_lr: float = 0.1,
                 test_inner_steps: int | None = 10, feature_dim: int | None = None, first_order: bool = True,
                 test_inner_lr: float | None = 0.1, scale_test_lr: bool = True):
        if not first_order:
            raise ValueError("fomaml is first-order by definition; use --method maml for second-order gradients")
        super().__init__(backbone, way, inner_steps, inner_lr, test_inner_steps, True, feature_dim, test_inner_lr,
                         scale_test_lr)


class ANIL(GradientMetaLearner):
    """Almost No Inner Loop (Raghu et al. 2020): the inner loop adapts only the linear head; the
    backbone is meta-learned through the outer loop. Backbone features are computed once per set.

    At evaluation 20 head steps of 0.1 (training: 5 of 0.4). The support loss is a mean over the
    items, so on a 5-way 1-shot task each class's head row moves 4x further per step than on the
    20-way tasks ``fewshot train`` samples: 10 steps of 0.4 overshoot there. On the 30-CPU-minute
    reproduction run (held-out alphabets, 300 tasks; chosen on those alphabets, so indicative):
    5w1s 91.2% (10 x 0.4) -> 96.9% (10 x 0.1) -> 97.3% (20 x 0.1), while 20w1s stays 91.6-91.8%
    (10 x 0.4, 10 x 0.2, 20 x 0.1). ``scale_test_lr`` stays off: on a retrain of that run, 300 tasks
    from the *training* alphabets, 5w1s 98.1% unscaled, 95.8% scaled (20 x 0.025), 98.1% scaled with
    80 steps; 5w5s 99.6 / 99.2 / 99.6% (benchmarks/test_step.py)."""

    name = "anil"

    adapt_backbone = False

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 5, inner_lr: float = 0.4,
                 test_inner_steps: int | None = 20, first_order: bool = False, feature_dim: int | None = None,
                 test_inner_lr: float | None = 0.1, scale_test_lr: bool = False):
        super().__init__(backbone, way, inner_steps, inner_lr, test_inner_steps, first_order, feature_dim, test_inner_lr,
                         scale_test_lr)


def _lr_key(name: str) -> str:
    return name.replace(".", "__")


class MetaSGD(GradientMetaLearner):
    """Meta-SGD (Li et al. 2017): a learned learning rate for every coordinate of every adapted
    parameter (tensors ``lrs[name]`` shaped like the parameter, initialised to ``inner_lr``, 0.1:
    Finn et al.'s 20-way rate), meta-trained together with the initialisation; one inner step in
    training, as in the paper.

    At evaluation: ``test_inner_steps`` steps of the learned rates times ``test_lr_scale`` (default
    10 x 1). The rates are learned for the support loss of the training tasks, a mean over their
    items: ``fewshot train`` samples 20-way 1-shot, and on a 5-way 1-shot support set the same rates
    take a step about 4x larger per class, so the paper's single learned step overshoots (rates
    started at 0.4: 78% at 5-way 1-shot, 92% with 10 steps of a quarter of the rates). Started at
    0.1 and evaluated with 10 steps of the full rates, a 3-minute model scored 91.7 / 99.0 / 80.9 /
    95.2% (5w1s / 5w5s / 20w1s / 20w5s) against 91.4 / 98.8 / 77.0 / 93.3% for 0.4 with 10 x 0.25
    (docs/optimization.md). ``test_inner_steps=1, test_lr_scale=1`` is the paper's evaluation. A run
    saved with the earlier defaults (0.4; 10 x 0.25) is rebuilt with them: they are in its checkpoint."""

    name = "meta_sgd"
    aliases = ('meta-sgd',)

    eval_params = frozenset({"test_inner_steps", "test_lr_scale"})  # no test_inner_lr: the rates are learned

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 1, inner_lr: float = 0.1,
                 test_inner_steps: int | None = 10, first_order: bool = False, feature_dim: int | None = None,
                 test_lr_scale: float = 1.0):
        if not test_lr_scale > 0:
            raise ValueError(f"test_lr_scale must be > 0, got {test_lr_scale}")
        super().__init__(backbone, way, inner_steps, inner_lr, test_inner_steps, first_order, feature_dim)
        self.test_lr_scale = test_lr_scale

    def _build_head(self, feature_dim: int) -> None:
        super()._build_head(feature_dim)
        self.lrs = nn.ParameterDict({_lr_key(n): nn.Parameter(torch.full_like(p.detach(), self.inner_lr))
                                     for n, p in self.adapted_params().items()})

    def inner_lrs(self) -> LR:
        return {n: self.lrs[_lr_key(n)] for n in self.adapted_params()}

    def test_lrs(self) -> LR:
        return {n: self.test_lr_scale * lr for n, lr in self.inner_lrs().items()}


class Reptile(GradientMetaLearner):
    """Reptile (Nichol et al. 2018): run ``inner_steps`` SGD steps on each task (support and query
    pooled), then move the initialisation towards the adapted weights. ``training_step`` writes the
    mean ``theta - phi`` into ``.grad`` and the trainer's optimiser takes the (outer) step; with
    ``--optimizer sgd`` and no momentum this is the paper's ``theta += eps (phi - theta)``, with Adam
    the common normalised variant. Evaluation fine-tunes on the support set for ``test_inner_steps``
    steps of ``test_inner_lr`` (default: the training rate) x way / ``way`` (``scale_test_lr``, on by
    default as for fomaml: the training tasks pool 20 classes, so a 5-way task's unscaled steps are
    4x larger per class; on the 30-CPU-minute reproduction checkpoint, 200 tasks from the *training*
    alphabets, 5w1s 88.9% unscaled, 91.4% at 0.05, 91.9% scaled; 5w5s 98.1% all three,
    benchmarks/test_step.py)."""

    name = "reptile"

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 5, inner_lr: float = 0.1,
                 test_inner_steps: int | None = 20, first_order: bool = True, feature_dim: int | None = None,
                 test_inner_lr: float | None = None, scale_test_lr: bool = True):
        if not first_order:
            raise ValueError("reptile is first-order by definition; use --method maml for second-order gradients")
        super().__init__(backbone, way, inner_steps, inner_lr, test_inner_steps, True, feature_dim, test_inner_lr,
                         scale_test_lr)

    def training_step(self, batch: list[Episode]) -> StepOutput:
        theta = self.adapted_params()
        delta = {n: torch.zeros_like(p) for n, p in theta.items()}
        total, correct, count = 0.0, 0, 0
        for ep in batch:
            way = check_support(ep.support_x, ep.support_y)
            self._check_way(way)
            self._require_head(ep.support_x)
            with torch.no_grad():  # report the pre-update query loss of the task, as the other methods report theirs
                scores = self._forward(theta, ep.query_x)[:, :way]
                total += float(F.cross_entropy(scores, ep.query_y))
                correct += int((scores.argmax(-1) == ep.query_y).sum())
                count += ep.query_y.numel()
            x = torch.cat([ep.support_x, ep.query_x])
            y = torch.cat([ep.support_y, ep.query_y])
            phi = self.adapt(x, y, self.inner_steps, create_graph=False, detach=True)
            for n in delta:
                delta[n] += (theta[n].detach() - phi[n].detach()) / len(batch)
        for n, p in theta.items():
            p.grad = delta[n]
        return StepOutput(total / len(batch), correct / max(count, 1))


class LSTMMetaLearner(GradientMetaLearner):
    """Optimization as a model for few-shot learning (Ravi & Larochelle 2017).

    The learner's parameters, flattened to a vector ``theta [n]``, are the cell state of an LSTM
    whose update is ``theta_t = f_t * theta_{t-1} - i_t * grad_t``. Every coordinate is one "batch
    row" and all coordinates share the meta-learner's weights:

    * a first LSTM layer (``nn.LSTMCell(4, hidden)``) reads the preprocessed gradient and loss;
    * input gate ``i_t = sigmoid(W_i [h_t, theta_{t-1}, i_{t-1}] + b_i)`` (a learned learning rate) and
      forget gate ``f_t = sigmoid(W_f [h_t, theta_{t-1}, f_{t-1}] + b_f)`` (learned weight decay),
      with ``b_f`` initialised large (f ~ 1) and ``b_i`` small (i ~ 0.01) as in the paper;
    * the initial cell state ``theta_0`` is the learner module's own weights (meta-learned).

    As in the paper, the gradient and loss fed to the LSTM are treated as inputs (no second
    derivatives); the meta-gradient flows through the cell-state recurrence. The learner is a
    backbone (default Conv4 with 32 filters) + linear head, BatchNorm in batch-statistics mode.
    """

    name = "lstm_meta"
    aliases = ('lstm-meta',)
    vectorize_tasks = False  # never: its own inner loop (an LSTM over autograd gradients) is not vmapped

    eval_params = frozenset({"test_inner_steps"})  # no test_inner_lr option

    def __init__(self, backbone: nn.Module | None = None, way: int = 5, inner_steps: int = 8,
                 test_inner_steps: int | None = None, hidden: int = 20, feature_dim: int | None = None):
        super().__init__(backbone, way, inner_steps, 0.0, test_inner_steps, True, feature_dim)
        self.hidden = hidden
        self.lstm = nn.LSTMCell(4, self.hidden)
        self.gate_i = nn.Linear(self.hidden + 2, 1)
        self.gate_f = nn.Linear(self.hidden + 2, 1)
        with torch.no_grad():
            for gate, lo, hi in ((self.gate_i, -5.0, -4.0), (self.gate_f, 4.0, 6.0)):
                gate.weight.uniform_(-0.01, 0.01)
                gate.bias.uniform_(lo, hi)

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        from ..nn.backbones import backbone_spec_for, default_backbone_for

        name, kw = default_backbone_for(item_shape)
        return backbone_spec_for(name, item_shape, hidden=32) if name == "conv4" else (name, kw)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int, create_graph: bool,
              detach: bool) -> Params:
        way = int(support_y.max()) + 1
        params = self.adapted_params()
        names = list(params)
        shapes = [params[n].shape for n in names]
        sizes = [params[n].numel() for n in names]

        def unflatten(vec: torch.Tensor) -> Params:
            return {n: v.view(s) for n, v, s in zip(names, vec.split(sizes), shapes)}

        theta = torch.cat([params[n].reshape(-1) for n in names])
        if detach:
            theta = theta.detach()
        n = theta.numel()
        h = c = theta.new_zeros(n, self.hidden)
        i_prev = f_prev = theta.new_zeros(n, 1)
        for _ in range(steps):
            with torch.enable_grad():
                leaf = theta.detach().requires_grad_()
                loss = F.cross_entropy(self._forward(unflatten(leaf), support_x)[:, :way], support_y)
                check_finite(loss, "lstm_meta inner loop")
                (grad,) = torch.autograd.grad(loss, leaf)
            inputs = torch.cat([preprocess_gradient(grad), preprocess_gradient(loss.detach().expand(n))], 1)
            h, c = self.lstm(inputs, (h, c))
            f = torch.sigmoid(self.gate_f(torch.cat([h, theta[:, None], f_prev], 1)))
            i = torch.sigmoid(self.gate_i(torch.cat([h, theta[:, None], i_prev], 1)))
            theta = f[:, 0] * theta - i[:, 0] * grad
            f_prev, i_prev = f, i
        return unflatten(theta)

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "LSTMMetaLearner":
        self.task_way = check_support(support_x, support_y)
        self._check_way(self.task_way)
        self._require_head(support_x)
        steps = self.inner_steps if self.test_inner_steps is None else self.test_inner_steps
        with torch.no_grad():  # the meta-learner's own graph is never needed at evaluation
            fast = self.adapt(support_x, support_y, steps, create_graph=False, detach=True)
        self.fast = {n: p.detach() for n, p in fast.items()}
        return self
