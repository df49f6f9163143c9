"""Bayesian Program Learning (Lake, Salakhutdinov & Tenenbaum 2015) as a few-shot method.

Nothing is trained by gradient: the generative model (:mod:`fewshot.bpl`) is learned from pen
strokes (``strokes_<set>``, default background_small1) the first time it is needed, read from a
model JSON (``fewshot bpl fit --out``), or hand-set (``strokes=generic``: no data needed).
``fit`` parses each support image; ``scores`` parses the queries and refits parses across images
in both directions (Lake's two-way score), ``[Q, way]``. The model lives in the 105×105 frame of
Omniglot: other sizes are resampled to it (bilinear, ink where above half the maximum), so pass
``--image-size 105`` to keep the originals.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..bpl.classify import BPLClassifier, FitOptions
from ..bpl.model import BPLModel
from .base import FewShotMethod, check_support


class BPL(FewShotMethod):
    """Parse-and-refit one-shot classification with a simplified BPL model.

    Args:
        backbone: not used (BPL reads the pixels); accepted so every method builds the same way.
        parses: parses kept per image (``K``).
        walks: random walks through the skeleton proposed per image.
        steps: Adam steps when refitting a token to another image.
        affine: refit a global affine map (ablation: off).
        relations: use stroke relations in the prior and the start jitter (ablation: off).
        two_way: Lake's symmetric score (off: ``log P(query | support)`` only).
        workers: processes for the parses and pairwise refits.
        strokes: the stroke set the model is learned from when ``model_path`` is empty
            (``background_small1`` ...), or ``generic`` for the hand-set model.
        model_path: a model JSON written by ``fewshot bpl fit``.
        data_dir: where the stroke archive is (default: ``$FEWSHOT_DATA``, then the cache).
    """

    name = "bpl"
    training_regime = "episodic"
    fit_needs_grad = True  # the refits descend on token variables
    test_options = {"parses": 2, "walks": 3, "steps": 2, "workers": 1, "strokes": "generic"}

    def __init__(self, backbone: nn.Module | None = None, parses: int = 5, walks: int = 100, steps: int = 25,
                 affine: bool = True, relations: bool = True, two_way: bool = True, workers: int = 2,
                 strokes: str = "background_small1", model_path: str = "", data_dir: str = "", seed: int = 0):
        super().__init__(backbone)
        for opt, v, low in (("parses", parses, 1), ("walks", walks, 1), ("workers", workers, 1), ("steps", steps, 0)):
            if v < low:
                raise ValueError(f"{opt} must be at least {low}, got {v}")
        self.parses, self.walks, self.steps = parses, walks, steps
        self.affine, self.relations, self.two_way = affine, relations, two_way
        self.workers, self.strokes, self.model_path, self.data_dir, self.seed = workers, strokes, model_path, data_dir, seed
        self._model: BPLModel | None = None
        self._support: np.ndarray | None = None
        self._support_y: torch.Tensor | None = None

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        return None

    def model(self) -> BPLModel:
        if self._model is None:
            if self.model_path:
                self._model = BPLModel.load(self.model_path)
            elif self.strokes == "generic":
                self._model = BPLModel.generic()
            else:
                from ..data.strokes import load_strokes

                self._model = BPLModel.fit(load_strokes(self.strokes, self.data_dir or None))
        return self._model

    @staticmethod
    def _binary(x: torch.Tensor) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"bpl needs 1-channel images [N, 1, H, W] with ink > 0; got shape {tuple(x.shape)}")
        x = x.float()
        if x.shape[-2:] != (105, 105):
            x = torch.nn.functional.interpolate(x, size=(105, 105), mode="bilinear", align_corners=False)
        return (x > 0.5 * x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)).squeeze(1).cpu().numpy()

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "BPL":
        self.task_way = check_support(support_x, support_y)
        self._support = self._binary(support_x)
        self._support_y = support_y.long().cpu()
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        """Log scores ``[Q, way]``: per class, the best two-way score over its support images."""
        if self._support is None:
            raise RuntimeError("call fit(support_x, support_y) before scores()")
        opts = FitOptions(k=self.parses, walks=self.walks, steps=self.steps, affine=self.affine, relations=self.relations)
        clf = BPLClassifier(self.model(), opts, workers=self.workers, seed=self.seed)
        fits = clf.pair_fits(self._support, self._binary(query_x))
        s = torch.as_tensor(fits.two_way(one_way=not self.two_way), dtype=torch.float32)  # [Q, N]
        out = torch.full((s.shape[0], self.task_way), -float("inf"))
        for c in range(self.task_way):
            out[:, c] = s[:, self._support_y == c].amax(1)
        # scores are log-probabilities up to a per-query constant; centre them so softmax is finite
        return (out - out.amax(1, keepdim=True)).to(query_x.device)

    def training_step(self, batch):
        raise RuntimeError("bpl has nothing to train by gradient: evaluate it directly (a zero-step run)")
