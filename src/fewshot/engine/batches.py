"""Batch sources: the data of optimiser step ``step``, a pure function of ``(seed, step)``.

:class:`EpisodeBatches` (episodic meta-training: ``tasks_per_step`` episodes per step) and
:class:`MiniBatches` (pre-training: ``batch_size`` labelled items). Both apply the optional
augmentation preset ``cfg.augment`` with a generator seeded by ``(seed, step)`` (mini-batches) or
``(seed, episode index)`` (episodes), so a resumed run sees exactly the batches of an uninterrupted
one, and episodes split over processes (:mod:`.distributed`) those of a single process.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ..data.augment import Augmenter
from ..data.dataset import LabeledDataset
from ..methods.base import FewShotMethod
from ..tasks.episodes import Episode, EpisodeSampler, augment_episode
from .config import TrainConfig
from .distributed import Distributed

Batch = Union[list[Episode], tuple[torch.Tensor, torch.Tensor]]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for the augmentation of step (or episode) ``step``, independent of the sampling RNG."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0]))


def _augmenter(cfg: TrainConfig, data: LabeledDataset) -> Augmenter | None:
    if cfg.augment is None:
        return None
    if len(data.item_shape) != 3:
        raise ValueError(f"augment={cfg.augment!r} needs image items [C, H, W]; this data has items of shape "
                         f"{tuple(data.item_shape)} (drop the augmentation)")
    return Augmenter.preset(cfg.augment)


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


class EpisodeBatches:
    """``cfg.tasks_per_step`` N-way K-shot episodes per step (episode ``step * tasks_per_step + j``)."""

    def __init__(self, data: LabeledDataset, cfg: TrainConfig, device: torch.device | str = "cpu",
                 dist: Distributed = Distributed()):
        self.data, self.cfg, self.device = data, cfg, torch.device(device)
        self.sampler = EpisodeSampler(data, cfg.way, cfg.shot, cfg.query, within=cfg.within, seed=cfg.seed)
        self.augmenter = _augmenter(cfg, data)
        self.share = dist.share(cfg.tasks_per_step)  # under torch.distributed: this process's episodes of a step

    def __call__(self, step: int) -> list[Episode]:
        cfg = self.cfg
        index = [step * cfg.tasks_per_step + j for j in self.share]
        eps = [self.sampler.episode(i) for i in index]
        if self.augmenter is not None:  # episode i's augmentation depends on (seed, i) alone
            eps = [augment_episode(e, self.augmenter, step_generator(cfg.seed, i), per=cfg.augment_per)
                   for e, i in zip(eps, index)]
        return [e.to(self.device, channels_last=cfg.channels_last) for e in eps]

    @staticmethod
    def items(batch: list[Episode]) -> int:
        return sum(e.support_x.shape[0] + e.query_x.shape[0] for e in batch)


class MiniBatches:
    """``cfg.batch_size`` items drawn without replacement per step: ``(x [B, ...], y [B])``."""

    def __init__(self, data: LabeledDataset, cfg: TrainConfig, device: torch.device | str = "cpu",
                 dist: Distributed = Distributed()):
        if cfg.augment_per == "class":
            raise ValueError("augment_per='class' draws one transform per class of an episode; mini-batch "
                             "(pre-training) methods have no episodes: use augment_per='image'")
        self.data, self.cfg, self.device = data, cfg, torch.device(device)
        self.augmenter = _augmenter(cfg, data)
        self.share = dist.share(min(cfg.batch_size, len(data)), "batch_size")  # this process's part of each batch

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, n = self.cfg, len(self.data)
        rng = np.random.default_rng([cfg.seed, step])
        idx = torch.from_numpy(rng.choice(n, size=min(cfg.batch_size, n), replace=False))
        idx = idx[self.share.start:self.share.stop]
        x = self.data.items(idx)
        if self.augmenter is not None:
            x = self.augmenter(x, step_generator(cfg.seed, step))
        return _to(x, self.device, cfg.channels_last), self.data.y[idx].to(self.device)

    @staticmethod
    def items(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int(batch[0].shape[0])


BatchSource = Union[EpisodeBatches, MiniBatches]


def batch_source(method: FewShotMethod, data: LabeledDataset, cfg: TrainConfig,
                 device: torch.device | str = "cpu", dist: Distributed = Distributed()) -> BatchSource:
    """The batch source of the method's ``training_regime`` (``episodic`` or ``batch``); under
    ``torch.distributed``, this process's share of each step's batch."""
    sources = {"episodic": EpisodeBatches, "batch": MiniBatches}
    if method.training_regime not in sources:
        raise ValueError(f"{method.name} has training_regime={method.training_regime!r}; expected one of {', '.join(sources)}")
    return sources[method.training_regime](data, cfg, device, dist)
