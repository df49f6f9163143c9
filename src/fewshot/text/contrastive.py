"""Contrastive adaptation of a sentence encoder, after CPFT (Zhang et al. 2021, "Few-Shot Intent
Detection via Contrastive Pre-Training and Fine-Tuning"):

* :func:`pretrain_simcse`, the self-supervised stage: each unlabelled utterance is encoded twice
  with dropout on, and the two views must find each other among the batch (InfoNCE, SimCSE,
  Gao et al. 2021). No labels, so it runs once per domain on the training utterances.
* :func:`finetune_supcon`, the supervised stage: a batch holds ``per_class`` examples of several
  classes and every same-class pair is a positive (SupCon, Khosla et al. 2020).

Both train the encoder in place and return the loss of each step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import check_finite


def supcon_loss(z: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss of embeddings ``z [B, D]`` with labels ``y [B]``: mean over
    anchors with a positive of ``-mean log softmax`` of their positives among all other items."""
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(dim=1)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    has = pos.any(1)
    if not has.any():
        raise ValueError("a SupCon batch needs at least two items of one class")
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has])
    return per_anchor.mean()


def _step(opt, loss: torch.Tensor, what: str) -> float:
    check_finite(loss, what)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def pretrain_simcse(encoder, texts: Sequence[str], steps: int = 100, batch_size: int = 32, lr: float = 5e-6,
                    temperature: float = 0.05, seed: int = 0) -> list[float]:
    """SimCSE on unlabelled ``texts`` (Gao et al. 2021; CPFT's self-supervised stage): ``steps``
    batches of ``batch_size`` distinct texts, each encoded twice (dropout makes the views differ),
    cross-entropy of finding the twin. ``lr`` 5e-6: 2e-5 cost MiniLM 3-5 points on BANKING77
    (benchmarks/text_simcse.py, docs/text.md)."""
    texts = list(dict.fromkeys(str(t) for t in texts))
    if len(texts) < 2:
        raise ValueError("contrastive pre-training needs at least two distinct texts")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=lr)
    order = np.concatenate([rng.permutation(len(texts)) for _ in range(-(-steps * batch_size // len(texts)))])
    losses = []
    encoder.train()
    with torch.enable_grad():
        for s in range(steps):
            batch = [texts[i] for i in order[s * batch_size:(s + 1) * batch_size]]
            batch = list(dict.fromkeys(batch))
            z1, z2 = F.normalize(encoder(batch), dim=1), F.normalize(encoder(batch), dim=1)
            logits = z1 @ z2.T / temperature
            target = torch.arange(len(batch), device=logits.device)
            losses.append(_step(opt, F.cross_entropy(logits, target), "SimCSE pre-training"))
    encoder.eval()
    return losses


def class_batches(y: np.ndarray, batch_size: int, per_class: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``steps`` index batches of ``batch_size // per_class`` classes x ``per_class`` examples
    (classes cycle in shuffled order; a class with fewer examples gives all it has)."""
    classes = np.unique(y)
    members = {c: np.flatnonzero(y == c) for c in classes}
    ways = max(2, min(len(classes), batch_size // per_class))
    cycle = np.concatenate([rng.permutation(classes) for _ in range(-(-steps * ways // len(classes)))])
    out = []
    for s in range(steps):
        idx = [rng.choice(members[c], min(per_class, len(members[c])), replace=False) for c in cycle[s * ways:(s + 1) * ways]]
        out.append(np.concatenate(idx))
    return out


def finetune_supcon(encoder, texts: Sequence[str], y, steps: int = 50, batch_size: int = 32, per_class: int = 2,
                    lr: float = 2e-5, temperature: float = 0.1, seed: int = 0) -> list[float]:
    """Supervised contrastive fine-tuning on labelled ``texts`` (class ids ``y``)."""
    y = np.asarray(y)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=lr)
    losses = []
    encoder.train()
    with torch.enable_grad():
        for idx in class_batches(y, batch_size, per_class, steps, rng):
            z = encoder([texts[i] for i in idx])
            losses.append(_step(opt, supcon_loss(z, torch.as_tensor(y[idx], device=z.device), temperature),
                                "SupCon fine-tuning"))
    encoder.eval()
    return losses
